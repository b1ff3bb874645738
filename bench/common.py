"""Shared bench helpers: machine facts, merging metrics into bench/results.json, a long-lived admin client for polls."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path

from kafka import KafkaAdminClient

from services.kafka_security import ADMIN, kafka_python_auth

RESULTS = Path(__file__).resolve().parent / "results.json"


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


class Broker:
    """The local broker's process (scripts/kafka.sh's pid file): its JIT mode and CPU seconds, for a bench to report
    beside its own figures (the broker shares the machine's cores with what is measured). Inert when not found."""

    def __init__(self) -> None:
        import psutil

        root = Path(__file__).resolve().parent.parent
        run_dir = Path(os.environ.get("STOCKLEDGER_KAFKA_RUN_DIR", "var/kafka"))
        self.process = None
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            self.process = psutil.Process(int(((run_dir if run_dir.is_absolute() else root / run_dir) / "kafka.pid")
                                              .read_text().strip()))
        self._psutil_error = psutil.Error

    @property
    def jit(self) -> str | None:
        """"quick" (C1 only, scripts/kafka.sh's default for tests and demos), "full" (C1 + C2), or None."""
        if self.process is None:
            return None
        try:
            return "quick" if "-XX:TieredStopAtLevel=1" in self.process.cmdline() else "full"
        except self._psutil_error:
            return None

    def cpu_s(self) -> float | None:
        if self.process is None:
            return None
        try:
            times = self.process.cpu_times()
        except self._psutil_error:
            return None
        return times.user + times.system


@contextlib.contextmanager
def poller(bootstrap: str):
    """One admin client for a polling loop: a new one per poll costs ~90 ms of CPU (TLS + SCRAM login) and
    0.7 s wall, which the measured worker would share the machine with and the clock would include."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **kafka_python_auth(ADMIN))
    try:
        yield admin
    finally:
        admin.close()
