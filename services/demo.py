"""The main job on the real broker: scenario -> Kafka -> stream worker -> projector + API, watched live, then the report."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ledger.state import LedgerState
from ledger.state_hash import state_hash
from schemas.topics import INPUT_TOPICS, LEDGER_SEQUENCED, PROJECTED_TOPICS
from services.auth import AUDITOR as AUDITOR_ROLE
from services.auth import TokenStore
from services.kafka_security import AUDITOR, aiokafka_auth, kafka_python_auth
from services.ports import PortInUse, check_port_free, free_port
from services.producer import produce_rows
from services.settings import get_settings
from services.stream_status import committed_fold_offset, committed_offsets, latest_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT_TOPICS = PROJECTED_TOPICS  # what the demo's projector must have caught up with


@dataclass
class Progress:
    inputs: int
    sequenced: int
    folded: int
    sequenced_end: int
    projected: int
    outputs_end: int

    @property
    def caught_up(self) -> bool:
        return (
            self.sequenced >= self.inputs
            and self.folded >= self.sequenced_end > 0
            and self.projected >= self.outputs_end
        )


def _ends(consumer: KafkaConsumer, topics) -> dict[TopicPartition, int]:
    tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
    return consumer.end_offsets(tps) if tps else {}


class ProgressReader:
    """Lag of every stage, read again and again with one consumer and one admin client: each new client
    costs a TLS handshake and a SCRAM login (~90 ms of this process's CPU and the broker's, 0.7 s wall)."""

    def __init__(self, bootstrap: str, app_id: str, projector_group: str, expected_inputs: int):
        self.bootstrap, self.app_id, self.projector_group, self.expected_inputs = bootstrap, app_id, projector_group, expected_inputs
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, **kafka_python_auth(AUDITOR))
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, **kafka_python_auth(AUDITOR))

    def read(self) -> Progress:
        out_ends = _ends(self.consumer, OUTPUT_TOPICS)
        seq_end = sum(_ends(self.consumer, (LEDGER_SEQUENCED,)).values())
        seq = committed_offsets(self.bootstrap, f"{self.app_id}.sequencer", self.admin)
        proj = committed_offsets(self.bootstrap, self.projector_group, self.admin)
        return Progress(
            inputs=self.expected_inputs,
            sequenced=sum(o for tp, o in seq.items() if tp.topic in INPUT_TOPICS),
            folded=committed_fold_offset(self.bootstrap, self.app_id, self.admin),
            sequenced_end=seq_end,
            projected=sum(min(proj.get(tp, 0), end) for tp, end in out_ends.items()),
            outputs_end=sum(out_ends.values()),
        )

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


def _progress_table(p: Progress, rate: float, elapsed: float) -> Table:
    t = Table(title=f"Catching up ({elapsed:.0f} s, {rate:,.1f} sequenced records/s folded, up to 500 events each)")
    for col in ("stage", "done", "of", "lag"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    t.add_row(
        "sequencer (inputs -> ledger.sequenced)",
        f"{p.sequenced:,}",
        f"{p.inputs:,}",
        f"{p.inputs - p.sequenced:,}",
    )
    t.add_row(
        "fold (ledger.sequenced -> outputs)",
        f"{p.folded:,}",
        f"{p.sequenced_end:,}",
        f"{p.sequenced_end - p.folded:,}",
    )
    t.add_row(
        "projector (outputs -> DuckDB)",
        f"{p.projected:,}",
        f"{p.outputs_end:,}",
        f"{p.outputs_end - p.projected:,}",
    )
    return t


class DemoProcesses:
    """The worker and the projector+API as child processes, stopped on exit unless kept running."""

    def __init__(self, app_id: str, db: Path, api_port: int, log_dir: Path):
        self.app_id, self.db, self.api_port, self.log_dir = app_id, db, api_port, log_dir
        self.procs: list[subprocess.Popen] = []
        self.tokens_file = log_dir / "api-tokens.json"
        self.web_port = 0  # the Faust worker's web views, chosen at start

    def make_auditor_token(self) -> Path:
        """A fresh token file with one auditor token, written to auditor.token (0600) for the user's curl."""
        self.tokens_file.unlink(missing_ok=True)
        _, token = TokenStore(self.tokens_file).create(AUDITOR_ROLE, label="make demo")
        path = self.log_dir / "auditor.token"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        return path

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        # The worker snapshots its state when it goes idle (at most every 2 s: --keep-running with a trickle of
        # input must not snapshot every burst): the report reads the final state from that snapshot instead
        # of folding the whole log a second time.
        env = os.environ | {"STOCKLEDGER_APP_ID": self.app_id, "STOCKLEDGER_SNAPSHOT_IDLE_EVERY_MS": "2000",
                            "STOCKLEDGER_LOG_KEY_FILE": str(log_key_file().resolve())}
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 - the child writes it until it exits
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        settings = get_settings()
        # The configured port when it is free, else any free one (a second demo, a worker already running).
        try:
            check_port_free(settings.worker_web_host, settings.worker_web_port)
            self.web_port = settings.worker_web_port
        except PortInUse:
            self.web_port = free_port(settings.worker_web_host)
        self._spawn("worker", ["worker", "--web-port", str(self.web_port)])
        self._spawn(
            "serve",
            [
                "serve",
                "--db",
                str(self.db),
                "--port",
                str(self.api_port),
                "--group",
                f"{self.app_id}-projector",
                "--tokens-file",
                str(self.tokens_file),
            ],
        )

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                name = proc.args[3] if len(proc.args) > 3 else proc.args
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.log_dir}")

    def terminate(self) -> None:
        """SIGTERM to every child, not waiting: they shut down while the report prints (stop() waits)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()

    def stop(self) -> None:
        self.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_caught_up(
    console: Console,
    bootstrap: str,
    app_id: str,
    projector_group: str,
    expected_inputs: int,
    procs: DemoProcesses,
    timeout_s: float = 3_600,
) -> Progress:
    start = time.monotonic()
    last_folded, last_t, rate = 0, start, 0.0
    reader = ProgressReader(bootstrap, app_id, projector_group, expected_inputs)
    try:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while True:
                procs.check_alive()
                try:
                    p = reader.read()
                except Exception:  # noqa: BLE001 - a metadata hiccup; try again
                    time.sleep(0.5)
                    continue
                now = time.monotonic()
                if now - last_t >= 1:
                    rate, last_folded, last_t = (p.folded - last_folded) / (now - last_t), p.folded, now
                live.update(_progress_table(p, rate, now - start))
                if p.caught_up:
                    break
                if now - start > timeout_s:
                    raise TimeoutError(f"not caught up after {timeout_s:g} s")
                time.sleep(0.25)
    finally:
        reader.close()
    console.print()
    return p


def final_checkpoint(bootstrap: str, app_id: str, until: int, timeout_s: float = 60) -> dict:
    """The worker's own checkpoint at the end of the log (it hashes its state once idle)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, **kafka_python_auth(AUDITOR))
        try:
            cp = latest_checkpoint(consumer, f"{app_id}.fold")
        finally:
            consumer.close()
        if cp and cp["next_sequenced_offset"] == until and cp["state_hash"]:
            return cp
        time.sleep(0.5)
    raise TimeoutError("the worker published no final checkpoint")


def log_key_file() -> Path:
    """The signing key the demo's worker uses (settings; relative paths are taken from this process's cwd)."""
    return get_settings().log_key_file


def tree_head_at(bootstrap: str, size: int, timeout_s: float = 60.0) -> dict:
    """The signed head of exactly this tree size from ledger.tree_heads (the worker signs one when idle)."""
    from schemas.codec import decode
    from schemas.topics import LEDGER_TREE_HEADS

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                             **kafka_python_auth(AUDITOR))
    tp = TopicPartition(LEDGER_TREE_HEADS, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    _, head = decode(rec.value)
                    if head["tree_size"] == size:
                        return head
    finally:
        consumer.close()
    raise TimeoutError(f"the worker signed no head of size {size} within {timeout_s:.0f} s")


def new_app_id() -> str:
    return f"demo-{uuid.uuid4().hex[:6]}"


def final_snapshot_state(bootstrap: str, app_id: str, until: int, timeout_s: float = 60.0) -> tuple[LedgerState, str]:
    """The worker's own snapshot at exactly `until` and its state hash, which loading verified against the state
    (with the chunks' digest and the Merkle root)."""
    from streams import snapshots

    deadline = time.monotonic() + timeout_s
    while True:
        stored = asyncio.run(snapshots.read_stored(bootstrap, f"{app_id}.fold", aiokafka_auth(AUDITOR)))
        if until in stored.manifests:  # only the one at the end is wanted: older ones are not loaded
            manifest = stored.manifests[until]
            return snapshots.load(stored.assemble(until), manifest).state, manifest["state_hash"]  # SnapshotError if bad
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker wrote no snapshot at offset {until:,} within {timeout_s:.0f} s")
        time.sleep(0.5)


def rebuild_state(bootstrap: str, until: int) -> LedgerState:
    from streams.fold import rebuild

    state = asyncio.run(rebuild(bootstrap, until, auth=aiokafka_auth(AUDITOR))).state
    return state


__all__ = [
    "DemoProcesses",
    "final_checkpoint",
    "final_snapshot_state",
    "new_app_id",
    "produce_rows",
    "rebuild_state",
    "tree_head_at",
    "state_hash",
    "wait_caught_up",
]
