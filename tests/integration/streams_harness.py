"""Helpers for the stream tests: fresh topics, worker subprocesses, waiting for the fold to catch up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from schemas.codec import decode
from schemas.topics import INPUT_TOPICS, LEDGER_SEQUENCED
from services.archive import read_archive, write_archive
from services.kafka_security import AUDITOR, kafka_python_auth
from services.ports import free_port
from services.scenario import ScenarioConfig, generate
from services.stream_status import committed_fold_offset, committed_offsets, latest_checkpoint
from services.topics_admin import reset_for_run

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class StreamEnv:
    bootstrap: str
    app_id: str
    tmp: Path

    def env(self) -> dict[str, str]:
        host, port = self.bootstrap.split(":")
        # Each worker gets its own web port: two workers of one test must not fight over the default.
        return os.environ | {"STOCKLEDGER_KAFKA_HOST": host, "STOCKLEDGER_KAFKA_PORT": port, "STOCKLEDGER_APP_ID": self.app_id,
                             "STOCKLEDGER_WORKER_WEB_PORT": str(free_port())}

    def start_worker(self, name: str = "w") -> subprocess.Popen:
        """A `stockledger worker` child; its web views' port is on the returned process as .web_port."""
        log = open(self.tmp / f"worker-{name}-{time.monotonic_ns()}.log", "w")  # noqa: SIM115 - kept open for the child
        env = self.env()
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "worker", "--idle-ms", "200"], cwd=REPO_ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        proc.web_port = int(env["STOCKLEDGER_WORKER_WEB_PORT"])  # type: ignore[attr-defined]
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.tmp.glob("worker-*.log")))

    def log_of(self, name: str) -> str:
        """Every log line of the worker(s) started under this name."""
        return "\n".join(p.read_text() for p in sorted(self.tmp.glob(f"worker-{name}-*.log")))


def fresh_stream_env(bootstrap: str, tmp: Path) -> StreamEnv:
    """Empty declared topics and a new app id (new consumer groups) for one test."""
    app_id = f"it-{uuid.uuid4().hex[:8]}"
    reset_for_run(bootstrap)
    return StreamEnv(bootstrap, app_id, tmp)


def make_archive(tmp: Path, accounts: int = 120, events: int = 3_000, seed: int = 5) -> Path:
    path = tmp / f"scenario-{accounts}-{events}-{seed}.avro"
    write_archive(path, generate(ScenarioConfig(accounts=accounts, events=events, seed=seed)), f"{accounts}:{events}:{seed}")
    return path


def archive_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for topic, _, _ in read_archive(path):
        counts[topic] = counts.get(topic, 0) + 1
    return counts


def input_end_offsets(bootstrap: str, topics=INPUT_TOPICS + (LEDGER_SEQUENCED,)) -> dict[str, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, **kafka_python_auth(AUDITOR))
    try:
        totals = {}
        for topic in topics:
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            totals[topic] = sum(consumer.end_offsets(parts).values()) if parts else 0
        return totals
    finally:
        consumer.close()


def wait_caught_up(env: StreamEnv, expected_inputs: int, timeout_s: float = 240.0, workers=()) -> dict:
    """Until the sequencer took every input, the fold committed the whole sequenced log and hashed it."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        for w in workers:
            if w.poll() is not None and w.returncode not in (0, -9, -15):
                raise AssertionError(f"worker exited with {w.returncode}:\n{env.logs()}")
        try:
            ends = input_end_offsets(env.bootstrap)
            seq = committed_offsets(env.bootstrap, f"{env.app_id}.sequencer")
            sequenced_inputs = sum(o for tp, o in seq.items() if tp.topic in INPUT_TOPICS)
            fold_at = committed_fold_offset(env.bootstrap, env.app_id)
            if sequenced_inputs >= expected_inputs and fold_at == ends[LEDGER_SEQUENCED] and fold_at > 0:
                consumer = KafkaConsumer(bootstrap_servers=env.bootstrap, **kafka_python_auth(AUDITOR))
                try:
                    cp = latest_checkpoint(consumer, f"{env.app_id}.fold")
                finally:
                    consumer.close()
                last = cp
                if cp and cp["next_sequenced_offset"] == fold_at and cp["state_hash"]:
                    return cp
        except Exception as exc:  # broker restarting: keep waiting
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"fold did not catch up in {timeout_s:g}s (last: {last}):\n{env.logs()}")


def worker_view(proc: subprocess.Popen, path: str = "/ledger/status/", timeout_s: float = 5.0) -> dict | None:
    """A worker's web view as JSON, or None when it does not answer (yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.web_port}{path}", timeout=timeout_s) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def settled_roles(procs: list[subprocess.Popen], timeout_s: float = 60.0) -> dict[subprocess.Popen, str | None]:
    """The workers' roles once one is active and the others standby, or as they stand at the deadline.

    A worker that joins the group late (a slow start on a loaded machine) triggers a rebalance after the first
    one has caught up; while it runs, the active worker has given up its partition and every worker reports
    standby for a second or two. Reading the roles once, right after the catch-up, raced with that.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        roles = {p: (worker_view(p) or {}).get("role") for p in procs}
        if sorted(roles.values()) == ["active"] + ["standby"] * (len(procs) - 1) or time.monotonic() > deadline:
            return roles
        time.sleep(0.2)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_topic(bootstrap: str, topic: str) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **kafka_python_auth(AUDITOR))
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=500, max_records=10_000).values():
                out.extend(records)
        return out
    finally:
        consumer.close()


def decoded(records) -> list[tuple[str, dict]]:
    return [decode(r.value) for r in records]
