"""Snapshots on the real broker: kill -9 after a snapshot recovers from it; a corrupt snapshot falls back."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from schemas.codec import decode, encode
from schemas.topics import LEDGER_SNAPSHOTS
from services.archive import read_archive
from services.kafka_security import LEDGER, kafka_python_auth
from services.producer import produce_rows
from services.replay import replay
from tests.integration.streams_harness import REPO_ROOT, fresh_stream_env, make_archive, stop, wait_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _manifests(bootstrap: str, group: str) -> dict[int, dict]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **kafka_python_auth(LEDGER))
    tp = TopicPartition(LEDGER_SNAPSHOTS, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    end = consumer.end_offsets([tp])[tp]
    out: dict[int, dict] = {}
    try:
        while consumer.position(tp) < end:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    if rec.key and rec.key.decode().endswith("/manifest") and rec.key.decode().startswith(group + "/"):
                        if rec.value is None:
                            out.pop(int(rec.key.decode().split("/")[-2]), None)
                        else:
                            m = decode(rec.value)[1]
                            out[m["next_sequenced_offset"]] = m
    finally:
        consumer.close()
    return out


def test_kill_9_after_a_snapshot_recovers_from_it_and_a_corrupt_one_falls_back(kafka_bootstrap, tmp_path):
    env = fresh_stream_env(kafka_bootstrap, tmp_path)
    group = f"{env.app_id}.fold"
    worker_env = env.env() | {"STOCKLEDGER_LOG_KEY_FILE": str(tmp_path / "k.key"),
                              "STOCKLEDGER_SNAPSHOT_EVERY_RECORDS": "1500", "STOCKLEDGER_SNAPSHOT_KEEP": "3"}
    logs: list = []

    def start():
        log = tmp_path / f"worker-{len(logs)}.log"
        logs.append(log)
        return subprocess.Popen([sys.executable, "-m", "services.cli", "worker", "--idle-ms", "200"], cwd=REPO_ROOT,
                                env=worker_env, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115

    archive = make_archive(tmp_path, accounts=100, events=4_000, seed=21)
    rows = list(read_archive(archive))
    thirds = [rows[: len(rows) // 3], rows[len(rows) // 3: 2 * len(rows) // 3], rows[2 * len(rows) // 3:]]
    worker = start()
    try:
        produce_rows(kafka_bootstrap, thirds[0])
        wait_caught_up(env, len(thirds[0]), workers=[worker])
        assert _manifests(kafka_bootstrap, group), "the worker wrote no snapshot"
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        produce_rows(kafka_bootstrap, thirds[1])
        worker = start()
        wait_caught_up(env, len(thirds[0]) + len(thirds[1]), workers=[worker])
        assert "recovered from the snapshot at offset" in logs[-1].read_text()

        # Corrupt the newest snapshot's first chunk (same key, altered bytes): the next recovery must skip it.
        manifests = _manifests(kafka_bootstrap, group)
        newest = max(manifests)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, **kafka_python_auth(LEDGER))
        chunk = {"group": group, "next_sequenced_offset": newest, "index": 0, "data": b"not a snapshot"}
        producer.send(LEDGER_SNAPSHOTS, key=f"{group}/{newest:020d}/000000".encode(), value=encode("SnapshotChunk", chunk))
        producer.flush()
        producer.close()
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        produce_rows(kafka_bootstrap, thirds[2])
        worker = start()
        cp = wait_caught_up(env, len(rows), workers=[worker])
        text = logs[-1].read_text()
        assert f"snapshot at {newest}" in text and "falling back" in text, text[-3000:]
        older = [o for o in manifests if o < newest]
        assert any(f"recovered from the snapshot at offset {o}" in text for o in older) or (
            not older and "from offset 0" in text), text[-3000:]
    finally:
        stop(worker)
    assert cp["state_hash"] == replay(read_archive(archive)).hash()

    # The CLI: list, verify the newest good snapshot against a fold from offset 0, export it, and replay the
    # exported log from it offline: the same hash as the worker's.
    from typer.testing import CliRunner

    from services.archive import write_archive
    from services.cli import app
    from services.stream_status import committed_fold_offset, read_sequenced

    runner = CliRunner()
    good = max(o for o in _manifests(kafka_bootstrap, group) if o != newest)
    listed = runner.invoke(app, ["snapshot", "list", "--group", group])
    assert listed.exit_code == 0 and f"{good:,}" in listed.output, listed.output
    verified = runner.invoke(app, ["snapshot", "verify", "--group", group, "--offset", str(good)])
    assert verified.exit_code == 0 and "OK" in verified.output, verified.output
    assert runner.invoke(app, ["snapshot", "verify", "--group", group, "--offset", str(newest)]).exit_code == 1
    snap = tmp_path / "good.snapshot"
    assert runner.invoke(app, ["snapshot", "export", "--group", group, "--offset", str(good), "--out", str(snap)]).exit_code == 0
    log = tmp_path / "log.avro"
    write_archive(log, read_sequenced(kafka_bootstrap, committed_fold_offset(kafka_bootstrap, env.app_id)), "snap-log")
    resumed = runner.invoke(app, ["replay", str(log), "--quiet", "--from-snapshot", str(snap)])
    assert resumed.exit_code == 0 and resumed.output.strip() == cp["state_hash"], resumed.output
