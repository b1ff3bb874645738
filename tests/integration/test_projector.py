"""The exactly-once projector against the real broker: kill -9 mid-stream, restart, no row lost or doubled.

Fresh, uniquely named copies of the five output topics (same partitions and configs) get a few thousand
sample records of every output subject (schemas/samples.py) while the projector runs as a separate
process (``python -m services.projector``). It is killed with SIGKILL twice while records still flow,
restarted, and run to the end of every partition (``--until-caught-up``). Then the DuckDB rows must
equal what was produced, one row per event id; re-sent event ids (the stream worker's re-emission after a
crash) must not double any row; bytes that are not a record land in projector_errors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from kafka import KafkaAdminClient, KafkaProducer

from schemas import codec
from schemas.samples import sample_records
from schemas.topics import LEDGER_POSTINGS, REQUEST_OUTCOMES, TOPICS_BY_NAME
from services.kafka_security import ADMIN, kafka_python_auth
from services.projector import OUTPUT_TOPICS
from services.topics_admin import ensure_topics

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SEED = 20250304
TABLE_OF = {"PostingBatch": "posting_batches", "RequestOutcome": "request_outcomes", "Rejection": "rejections",
            "LiquidationTriggered": "liquidations", "LiquidationExecuted": "liquidations", "BadDebtCovered": "liquidations",
            "SeriesState": "series_marks"}
PROGRESS = re.compile(r"projected (\d+) records")


def _fresh_output_topics(bootstrap: str, unique_topic_name, fresh_topics: list[str]) -> str:
    prefix = unique_topic_name("")
    specs = [dataclasses.replace(TOPICS_BY_NAME[t], name=prefix + t) for t in OUTPUT_TOPICS]
    fresh_topics.extend(s.name for s in specs)
    report = ensure_topics(bootstrap, specs)
    assert report.ok, report.summary()
    return prefix


def _producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                         batch_size=256 * 1024, client_id="stockledger-projector-test", **kafka_python_auth(ADMIN))


class ProjectorProcess:
    """`python -m services.projector` as a real child process, its log lines read by a thread."""

    def __init__(self, db: Path, prefix: str, group: str, bootstrap: str, *extra: str):
        cmd = [sys.executable, "-m", "services.projector", "--db", str(db), "--topic-prefix", prefix, "--group", group,
               "--bootstrap", bootstrap, *extra]
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=os.environ | {"PYTHONUNBUFFERED": "1", "STOCKLEDGER_KAFKA_PRINCIPAL": ADMIN})
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            self.lines.put(line)

    def wait_for_progress(self, at_least: int, timeout_s: float) -> int:
        """Block until a progress line reports at least `at_least` projected records; return that count."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            m = PROGRESS.search(line)
            if m and int(m.group(1)) >= at_least:
                return int(m.group(1))
        raise AssertionError(f"no progress to {at_least} records in {timeout_s}s:\n{''.join(self.log[-30:])}")

    def stop(self) -> None:
        """Kill the process if it still runs (a failed test must not leave projectors behind)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"projector did not finish in {timeout_s}s:\n{''.join(self.log[-30:])}") from None


def _catch_up(db: Path, prefix: str, group: str, bootstrap: str) -> dict:
    p = ProjectorProcess(db, prefix, group, bootstrap, "--until-caught-up", "--timeout", "240")
    try:
        rc = p.wait(300)
    finally:
        p.stop()
    assert rc == 0, "".join(p.log[-40:])
    summary = [line for line in p.log if line.startswith("{")]
    assert summary, "".join(p.log[-40:])
    return json.loads(summary[-1])


def _counts(db: Path) -> dict[str, tuple[int, int]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT COUNT(*), COUNT(DISTINCT event_id) FROM {t}").fetchone()
                for t in sorted(set(TABLE_OF.values()))}
    finally:
        con.close()


@pytest.mark.timeout(900)
def test_kill_9_mid_stream_then_restart_projects_every_record_once(
    kafka_bootstrap: str, unique_topic_name, fresh_topics: list[str], tmp_path: Path
) -> None:
    prefix = _fresh_output_topics(kafka_bootstrap, unique_topic_name, fresh_topics)
    samples = [s for s in sample_records(28_000, SEED) if s[2] in TABLE_OF]  # >= 900 of each of the sampled subjects
    by_subject = Counter(s[2] for s in samples)
    assert min(by_subject.values()) >= 900 and len(samples) >= 6_000, by_subject
    sends = [(prefix + topic, key.encode(), codec.encode(subject, record)) for topic, key, subject, record in samples]
    bad = [(prefix + LEDGER_POSTINGS, b"bad", b"\x00\x00\x00"), (prefix + REQUEST_OUTCOMES, b"bad", b"not avro at all")]
    db, group = tmp_path / "projection.duckdb", f"{prefix}projector"

    # The producer streams while the projector runs; the projector is killed twice mid-stream.
    first_half = len(sends) // 2
    producer = _producer(kafka_bootstrap)
    for topic, key, value in sends[:first_half]:
        producer.send(topic, key=key, value=value)
    producer.flush(60)

    failures: list[BaseException] = []

    def produce_rest() -> None:
        try:
            for i, (topic, key, value) in enumerate(sends[first_half:] + bad):
                producer.send(topic, key=key, value=value)
                if i % 500 == 499:
                    producer.flush(60)
                    time.sleep(0.2)
            producer.flush(60)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    streaming = threading.Thread(target=produce_rest)
    started = time.perf_counter()
    args = ("--max-batch", "200", "--max-batch-ms", "50", "--log-every", "0")
    p = ProjectorProcess(db, prefix, group, kafka_bootstrap, *args)
    try:
        streaming.start()
        at_kill = p.wait_for_progress(1_000, timeout_s=240)
        p.kill9()
        assert at_kill < len(sends), "the projector finished before it could be killed mid-stream"
        p = ProjectorProcess(db, prefix, group, kafka_bootstrap, *args)
        p.wait_for_progress(500, timeout_s=240)  # progress of this run (counts restart at zero)
        p.kill9()
    finally:
        p.stop()
        streaming.join(300)
        producer.close()
    assert not streaming.is_alive() and not failures, failures

    summary = _catch_up(db, prefix, group, kafka_bootstrap)
    elapsed = time.perf_counter() - started
    print(f"\n{len(sends) + len(bad)} records, killed twice; caught up in {elapsed:.1f}s total; last run: {summary}")

    counts = _counts(db)
    expected: Counter[str] = Counter()
    for subject, n in by_subject.items():
        expected[TABLE_OF[subject]] += n
    for table, n in expected.items():
        assert counts[table] == (n, n), f"{table}: {counts[table]} rows/distinct ids, produced {n}"
    con = duckdb.connect(str(db), read_only=True)
    try:
        legs = sum(len(r["postings"]) for _, _, s, r in samples if s == "PostingBatch")
        assert con.execute("SELECT COUNT(*) FROM postings").fetchone()[0] == legs
        assert con.execute("SELECT COUNT(*) FROM (SELECT DISTINCT event_id, leg FROM postings)").fetchone()[0] == legs
        assert con.execute("SELECT SUM(legs) FROM posting_batches").fetchone()[0] == legs
        # every offset of every partition is accounted for, exactly once
        stored = con.execute("SELECT SUM(next_offset) FROM projector_offsets").fetchone()[0]
        assert stored == len(sends) + len(bad)
        errors = con.execute("SELECT topic, reason FROM projector_errors ORDER BY topic").fetchall()
        assert errors == [(prefix + LEDGER_POSTINGS, "malformed"), (prefix + REQUEST_OUTCOMES, "malformed")]
        lineage_ok = con.execute(f"""SELECT COUNT(*) FROM postings WHERE topic = '{prefix + LEDGER_POSTINGS}'
                                     AND "partition" BETWEEN 0 AND 5 AND "offset" >= 0 AND recorded_at_us > 0""").fetchone()[0]
        assert lineage_ok == legs
    finally:
        con.close()


@pytest.mark.timeout(600)
def test_re_sent_event_ids_are_not_doubled(kafka_bootstrap: str, unique_topic_name, fresh_topics: list[str], tmp_path: Path) -> None:
    prefix = _fresh_output_topics(kafka_bootstrap, unique_topic_name, fresh_topics)
    samples = [s for s in sample_records(4_600, SEED + 1) if s[2] in ("PostingBatch", "RequestOutcome", "Rejection")]
    sends = [(prefix + topic, key.encode(), codec.encode(subject, record)) for topic, key, subject, record in samples]
    db, group = tmp_path / "dups.duckdb", f"{prefix}projector"
    producer = _producer(kafka_bootstrap)
    # Every record twice in a row (a duplicate in the same batch), then all of them again later.
    for topic, key, value in sends:
        producer.send(topic, key=key, value=value)
        producer.send(topic, key=key, value=value)
    producer.flush(60)
    _catch_up(db, prefix, group, kafka_bootstrap)
    before = _counts(db)
    for topic, key, value in sends:  # re-emission after a crash: same event ids and content, new offsets
        producer.send(topic, key=key, value=value)
    producer.flush(60)
    producer.close()
    summary = _catch_up(db, prefix, group, kafka_bootstrap)
    assert summary["records"] == len(sends) and summary["duplicates"] == len(sends)
    after = _counts(db)
    assert after == before
    n = Counter(s[2] for s in samples)
    assert after["posting_batches"] == (n["PostingBatch"], n["PostingBatch"])
    assert after["request_outcomes"] == (n["RequestOutcome"], n["RequestOutcome"])
    assert after["rejections"] == (n["Rejection"], n["Rejection"])
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT SUM(next_offset) FROM projector_offsets").fetchone()[0] == 3 * len(sends)
        # the group's committed offsets mirror DuckDB's (for lag tools; the projector never reads them)
        stored = {(t, p): o for t, p, o in con.execute('SELECT topic, "partition", next_offset FROM projector_offsets').fetchall()}
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="stockledger-projector-test", **kafka_python_auth(ADMIN))
        try:
            committed = admin.list_group_offsets(group).get(group, {})
        finally:
            admin.close()
        assert {(tp.topic, tp.partition): m.offset for tp, m in committed.items()} == stored
        legs = sum(len(r["postings"]) for _, _, s, r in samples if s == "PostingBatch")
        assert con.execute("SELECT COUNT(*) FROM postings").fetchone()[0] == legs
    finally:
        con.close()
