"""scripts/lib.sh's class-data archive helpers: a dump goes into place only after a clean stop, never half a file."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "scripts" / "lib.sh"


def sh(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run bash with lib.sh sourced; JAVA is a stand-in binary (the helpers only name the archive after it).

    Written once per test: the archive's key includes the binary's mtime (a new java, a new archive), so
    rewriting it on every call made the key change whenever a second boundary fell between two calls.
    """
    java = tmp_path / "java"
    if not java.exists():
        java.write_text("#!/bin/sh\nexit 0\n")
        java.chmod(0o755)
    prelude = (f'set -euo pipefail; say() {{ echo "$*"; }}; die() {{ echo "error: $*" >&2; exit 1; }}; '
               f'JAVA={java}; source "{LIB}"\n')
    return subprocess.run(["bash", "-c", prelude + script], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env})


def test_first_start_dumps_to_a_temporary_file_that_a_clean_stop_moves_into_place(tmp_path):
    first = sh('cds_flag cds ctx pending', tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("-XX:ArchiveClassesAtExit=cds/") and first.stdout.strip().endswith(".tmp")
    dump = Path(tmp_path, first.stdout.strip().split("=", 1)[1])
    assert Path(tmp_path, Path(tmp_path, "pending").read_text().strip()) == dump
    dump.write_bytes(b"archive")  # what the JVM writes when it exits
    assert sh('cds_settle pending 1', tmp_path).returncode == 0
    archives = list(Path(tmp_path, "cds").glob("*.jsa"))
    assert [a.read_bytes() for a in archives] == [b"archive"] and not Path(tmp_path, "pending").exists()
    time.sleep(1.1)  # a second boundary between the two starts: the key reads the binary's mtime in seconds
    later = sh("cds_flag cds ctx pending", tmp_path)
    assert later.stdout.strip() == f"-XX:SharedArchiveFile=cds/{archives[0].name}"
    other = sh('cds_flag cds other-jars pending', tmp_path)  # other jars: another archive
    assert other.stdout.startswith("-XX:ArchiveClassesAtExit=")


def test_a_dump_cut_short_is_deleted_and_a_crashed_one_is_cleared_at_the_next_start(tmp_path):
    dump = Path(tmp_path, sh('cds_flag cds ctx pending', tmp_path).stdout.strip().split("=", 1)[1])
    dump.write_bytes(b"half")
    assert sh('cds_settle pending 0', tmp_path).returncode == 0  # SIGKILL: the dump may be incomplete
    assert not dump.exists() and not list(Path(tmp_path, "cds").glob("*.jsa"))
    crashed = Path(tmp_path, sh('cds_flag cds ctx pending', tmp_path).stdout.strip().split("=", 1)[1])
    crashed.write_bytes(b"half")  # the JVM died on its own: no stop ever settled it
    again = sh('cds_flag cds ctx pending', tmp_path)
    assert not crashed.exists() and again.stdout.startswith("-XX:ArchiveClassesAtExit=")


def test_off_adds_no_flag_and_a_bad_value_is_refused(tmp_path):
    off = sh('cds_flag cds ctx pending', tmp_path, STOCKLEDGER_CDS="off")
    assert off.returncode == 0 and off.stdout == "" and not Path(tmp_path, "cds").exists()
    bad = sh('cds_flag cds ctx pending', tmp_path, STOCKLEDGER_CDS="yes")
    assert bad.returncode != 0 and "STOCKLEDGER_CDS must be on or off" in bad.stderr

