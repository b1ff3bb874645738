"""Read the stream workers' progress from Kafka: committed offsets, end offsets, the latest fold checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from schemas.codec import decode
from schemas.topics import INPUT_TOPICS, LEDGER_CHECKPOINTS, LEDGER_SEQUENCED
from services.archive import SourcedRow
from services.kafka_security import AUDITOR, kafka_python_auth
from streams.fold import sequenced_entries


@dataclass
class StreamStatus:
    lags: list[tuple[str, str, int, int, int, int]] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None


def _partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    parts = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(parts)]


def committed_offsets(bootstrap: str, group_id: str, admin: KafkaAdminClient | None = None) -> dict[TopicPartition, int]:
    """A group's committed offsets; pass a long-lived admin client when polling (each new one logs in again)."""
    own = admin is None
    admin = admin or KafkaAdminClient(bootstrap_servers=bootstrap, **kafka_python_auth(AUDITOR))
    try:
        return {tp: meta.offset for tp, meta in admin.list_group_offsets(group_id).get(group_id, {}).items()}
    finally:
        if own:
            admin.close()


def committed_fold_offset(bootstrap: str, app_id: str, admin: KafkaAdminClient | None = None) -> int:
    """Next sequenced offset the active fold will apply (0 if it has committed nothing)."""
    return committed_offsets(bootstrap, f"{app_id}.fold", admin).get(TopicPartition(LEDGER_SEQUENCED, 0), 0)


def latest_checkpoint(consumer: KafkaConsumer, group_key: str) -> dict[str, Any] | None:
    tps = _partitions(consumer, LEDGER_CHECKPOINTS)
    if not tps:
        return None
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    latest = None
    while any(consumer.position(tp) < ends[tp] for tp in tps):
        for records in consumer.poll(timeout_ms=500, max_records=10_000).values():
            for rec in records:
                if rec.key == group_key.encode():
                    latest = decode(rec.value)[1]
    return latest


def read_status(bootstrap: str, app_id: str) -> StreamStatus:
    status = StreamStatus()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **kafka_python_auth(AUDITOR))
    try:
        seq_committed = committed_offsets(bootstrap, f"{app_id}.sequencer")
        fold_committed = committed_offsets(bootstrap, f"{app_id}.fold")
        for topic in INPUT_TOPICS:
            tps = _partitions(consumer, topic)
            ends = consumer.end_offsets(tps)
            for tp in tps:
                done = seq_committed.get(tp, 0)
                status.lags.append(("sequencer", topic, tp.partition, ends[tp], done, ends[tp] - done))
        tps = _partitions(consumer, LEDGER_SEQUENCED)
        ends = consumer.end_offsets(tps)
        for tp in tps:
            done = fold_committed.get(tp, 0)
            status.lags.append(("fold", LEDGER_SEQUENCED, tp.partition, ends[tp], done, ends[tp] - done))
        status.checkpoint = latest_checkpoint(consumer, f"{app_id}.fold")
    finally:
        consumer.close()
    return status


def read_sequenced(bootstrap: str, until_offset: int) -> Iterator[SourcedRow]:
    """Every ledger.sequenced record below until_offset, in order, redeliveries included.

    Nothing is dropped: the archive must hold the very entries the fold logged, so that its Merkle log
    (ledger.log_entry) equals the live one and a signed checkpoint can be checked against it; the
    offline replay skips a redelivered copy as a duplicate, as the worker does.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **kafka_python_auth(AUDITOR))
    tp = TopicPartition(LEDGER_SEQUENCED, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    try:
        while consumer.position(tp) < until_offset:
            for records in consumer.poll(timeout_ms=500, max_records=10_000).values():
                for rec in records:
                    if rec.offset >= until_offset:
                        return
                    for e in sequenced_entries(rec.value):
                        # Archive keys are text; the producers' keys are UTF-8 (a key that is not decodes
                        # lossily and its leaf would differ from the live one: `log audit` would say so).
                        key = e.key.decode(errors="replace") if isinstance(e.key, bytes) else (e.key or "")
                        yield e.topic, key, e.value or b"", e.partition, e.offset, e.timestamp_ms
    finally:
        consumer.close()
