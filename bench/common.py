"""Shared bench helpers: machine facts, merging metrics into bench/results.json, a long-lived admin client for polls."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path

import psutil
from kafka import KafkaAdminClient

from services.kafka_security import ADMIN, kafka_python_auth

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": mem_gib, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


def merge_results(section: str, metrics: dict[str, object]) -> dict:
    """Merge metrics (never clobbering other keys) and record the machine they ran on."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data.update(metrics)
    data.setdefault("runs", {}).setdefault(section, {}).update({"machine": machine(), **metrics})
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


def broker_pid() -> int | None:
    """The local broker's pid (scripts/kafka.sh's pid file), to count its CPU during a measurement."""
    pid_file = Path(os.environ.get("STOCKLEDGER_KAFKA_RUN_DIR", ROOT / "var" / "kafka"))
    pid_file = (pid_file if pid_file.is_absolute() else ROOT / pid_file) / "kafka.pid"
    with contextlib.suppress(OSError, ValueError):
        return int(pid_file.read_text().strip())
    return None


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process so far and of its live children (the worker's sequencer process and
    forked hash/snapshot children; a child that exited meanwhile is counted only in cpu_times' children fields)."""
    if pid is None:
        return 0.0
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
        return total
    return 0.0


def broker_jit(pid: int | None) -> str | None:
    """The broker's JIT: "quick" (C1 only, scripts/kafka.sh's default for tests and demos), "full" (C1 + C2), or None
    (no broker found)."""
    if pid is None:
        return None
    with contextlib.suppress(psutil.Error):
        return "quick" if "-XX:TieredStopAtLevel=1" in psutil.Process(pid).cmdline() else "full"
    return None


@contextlib.contextmanager
def poller(bootstrap: str):
    """One admin client for a polling loop: a new one per poll costs ~90 ms of CPU (TLS + SCRAM login) and
    0.7 s wall, which the measured worker would share the machine with and the clock would include."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **kafka_python_auth(ADMIN))
    try:
        yield admin
    finally:
        admin.close()
