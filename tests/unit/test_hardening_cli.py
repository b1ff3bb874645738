"""Hostile input at the CLI (issue 13): data files are never destroyed, errors are one line with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from services.archive import write_archive
from services.atomic import write_text_atomic
from services.cli import app
from services.errors import EXIT_ERROR, run
from services.scenario import ScenarioConfig, generate


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("a") / "a.avro"
    write_archive(path, generate(ScenarioConfig(accounts=10, events=300, seed=3)), seed_label="t")
    return path


def truncated(archive: Path, tmp_path: Path) -> Path:
    cut = tmp_path / "cut.avro"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    return cut


def events_in(db: Path) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.sql("SELECT count(*) FROM events").fetchall()[0][0]
    finally:
        con.close()


def test_a_failed_replay_leaves_the_duckdb_target_as_it_was(archive, tmp_path, capsys):
    db = tmp_path / "ledger.duckdb"
    assert run(app, ["replay", str(archive), "--quiet", "--duckdb", str(db)]) == 0
    good = events_in(db)
    assert good > 0
    assert run(app, ["replay", str(truncated(archive, tmp_path)), "--quiet", "--duckdb", str(db)]) == EXIT_ERROR
    assert events_in(db) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.avro", "ledger.duckdb"]  # no temporary file left


def test_replay_refuses_a_duckdb_target_another_process_holds(archive, tmp_path, capsys):
    db = tmp_path / "live.duckdb"
    assert run(app, ["replay", str(archive), "--quiet", "--duckdb", str(db)]) == 0
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(db)!r}); print('held', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert run(app, ["replay", str(archive), "--quiet", "--duckdb", str(db)]) == EXIT_ERROR
        err = capsys.readouterr()
        assert "in use" in err.out + err.err
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert events_in(db) > 0


@pytest.mark.parametrize("content", [b"hello", b"Obj\x01" + b"\x00" * 40])
def test_a_foreign_or_corrupt_file_is_one_line_and_a_non_zero_exit(tmp_path, capsys, content):
    bad = tmp_path / "bad.avro"
    bad.write_bytes(content)
    assert run(app, ["replay", str(bad), "--quiet"]) == EXIT_ERROR
    out = capsys.readouterr()
    text = (out.out + out.err).strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1 and text.startswith("error:")


def test_a_truncated_archive_is_an_error_not_aborted_and_debug_shows_the_traceback(archive, tmp_path, capsys):
    cut = truncated(archive, tmp_path)
    assert run(app, ["replay", str(cut), "--quiet"]) == EXIT_ERROR
    out = capsys.readouterr()
    assert "Aborted" not in out.out + out.err and "error:" in out.out + out.err
    assert run(app, ["replay", str(cut), "--quiet", "--debug"]) == EXIT_ERROR
    assert "Traceback" in capsys.readouterr().err


def test_an_atomic_write_that_fails_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "root.json"
    write_text_atomic(target, "old\n")
    monkeypatch.setattr("services.atomic.commit", lambda tmp, t: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError):
        write_text_atomic(target, "new\n")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["root.json"]


HEADER = "statement_ref,statement_number,function,as_of,completeness,safekeeping_account,isin,symbol,aggr,avai,navl\n"


@pytest.mark.parametrize("name,content,expect", [
    ("deep.json", "[" + "[" * 50_000 + "]" * 50_000 + "]", "nested too deeply"),
    ("digits.csv", HEADER + "R-1,1,NEW,2026-03-10T14:00:00Z,COMPLETE,SAFE-1,US0378331005,AAPL," + "1" * 5_000 + ",12,0\n", "digits"),
    ("year.csv", HEADER + "R-1,1,NEW,9999-12-31T23:00:00-14:00,COMPLETE,SAFE-1,US0378331005,AAPL,12,12,0\n", "time window"),
    ("long.csv", HEADER + "R" * 100_000 + ",1,NEW,2026-03-10T14:00:00Z,COMPLETE,SAFE-1,US0378331005,AAPL,12,12,0\n", "longer than"),
])
def test_recon_import_reports_hostile_files_briefly_and_imports_nothing(tmp_path, capsys, name, content, expect):
    path = tmp_path / name
    path.write_text(content)
    started = time.perf_counter()
    code = run(app, ["recon", "import", str(path), "--to-archive", str(tmp_path / "x.avro")])
    out = capsys.readouterr()
    assert code == 1 and expect in out.out and "Traceback" not in out.out + out.err
    assert len(out.out) < 2_000 and time.perf_counter() - started < 5
    assert not (tmp_path / "x.avro").exists()


def test_an_archive_cut_at_a_block_boundary_fails_instead_of_replaying_part_of_it(tmp_path, capsys):
    import fastavro

    from services.archive import ArchiveError, read_archive

    path = tmp_path / "big.avro"
    rows = list(generate(ScenarioConfig(accounts=10, events=2_000, seed=5)))
    write_archive(path, rows, seed_label="cut", block_records=100)
    data = path.read_bytes()
    with open(path, "rb") as fo:
        marker = fastavro.reader(fo)._header["sync"]
    first_block_end = data.index(marker, data.index(marker) + 16) + 16  # after the header's marker, the first block's
    cut = tmp_path / "cut.avro"
    cut.write_bytes(data[:first_block_end])  # a well-formed container holding fewer records
    with open(cut, "rb") as fo:
        assert 0 < sum(1 for _ in fastavro.reader(fo)) < len(rows)
    with pytest.raises(ArchiveError, match="short or was cut"):
        list(read_archive(cut))
    assert run(app, ["replay", str(cut), "--quiet"]) == EXIT_ERROR
    out = capsys.readouterr()
    assert "short or was cut" in out.out + out.err
    assert list(read_archive(path)) == rows


def test_an_archive_whose_rows_do_not_match_its_digest_fails(archive, tmp_path):
    from services.archive import ArchiveError, read_archive

    data = bytearray(archive.read_bytes())
    at = data.index(b"stockledger.digest") + len("stockledger.digest") + 2  # key, then the value's length byte
    data[at] = ord("0") if data[at] != ord("0") else ord("1")
    altered = tmp_path / "altered.avro"
    altered.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="altered"):
        list(read_archive(altered))
