"""The real broker: metadata, declared topics via ensure_topics, drift reports, and a two-client smoke test."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaProducer

from schemas.topics import (
    COMPACTED,
    LEDGER_CHECKPOINTS,
    LEDGER_COLLATERAL,
    LEDGER_POOLS,
    LEDGER_SNAPSHOTS,
    LEDGER_TREE_HEADS,
    RETAIN_FOREVER,
    SERIES_STATE,
    TOPICS,
    TOPICS_BY_NAME,
    TopicSpec,
)
from services.kafka_security import ADMIN, aiokafka_auth, kafka_python_auth
from services.topics_admin import describe_topics, ensure_topics, wait_for_broker

pytestmark = pytest.mark.integration


def _renamed(spec: TopicSpec, name: str, **changes: object) -> TopicSpec:
    return dataclasses.replace(spec, name=name, **changes)


def test_broker_answers_metadata(kafka_bootstrap: str) -> None:
    info = wait_for_broker(kafka_bootstrap, timeout_s=10)
    assert info.broker_ids == (1,)
    assert info.controller_id == 1
    assert info.cluster_id


def test_ensure_topics_creates_declared_topics(kafka_bootstrap: str) -> None:
    report = ensure_topics(kafka_bootstrap, TOPICS)
    assert report.ok, report.summary()
    assert sorted(report.created + report.unchanged) == sorted(t.name for t in TOPICS)

    described = {d.name: d for d in describe_topics(kafka_bootstrap, [t.name for t in TOPICS])}
    assert set(described) == set(TOPICS_BY_NAME)
    for spec in TOPICS:
        actual = described[spec.name]
        assert actual.partitions == spec.partitions, spec.name
        assert actual.replication_factor == 1, spec.name
        for key, value in spec.configs.items():
            assert actual.configs[key] == value, (spec.name, key)
        if spec.name in (SERIES_STATE, LEDGER_CHECKPOINTS, LEDGER_TREE_HEADS, LEDGER_SNAPSHOTS, LEDGER_COLLATERAL, LEDGER_POOLS):  # latest value per key
            assert actual.configs["cleanup.policy"] == "compact"
        else:
            assert actual.configs["retention.ms"] == "-1", spec.name
            assert actual.configs["cleanup.policy"] == "delete", spec.name


def test_ensure_topics_creates_fresh_copies_then_reports_no_drift(
    kafka_bootstrap: str, unique_topic_name, fresh_topics: list[str]
) -> None:
    specs = [_renamed(t, unique_topic_name(t.name)) for t in TOPICS]
    fresh_topics.extend(s.name for s in specs)

    first = ensure_topics(kafka_bootstrap, specs)
    assert first.ok, first.summary()
    assert sorted(first.created) == sorted(s.name for s in specs)
    assert first.unchanged == ()

    second = ensure_topics(kafka_bootstrap, specs)
    assert second.ok, second.summary()
    assert second.created == ()
    assert sorted(second.unchanged) == sorted(s.name for s in specs)


def test_wrong_partition_count_is_reported_as_drift(
    kafka_bootstrap: str, unique_topic_name, fresh_topics: list[str]
) -> None:
    declared = _renamed(TOPICS_BY_NAME[SERIES_STATE], unique_topic_name(SERIES_STATE))
    fresh_topics.append(declared.name)
    wrong = dataclasses.replace(declared, partitions=2)
    assert ensure_topics(kafka_bootstrap, [wrong]).created == (declared.name,)

    report = ensure_topics(kafka_bootstrap, [declared])
    assert not report.ok
    assert report.created == () and report.unchanged == ()
    drift = report.drift_for(declared.name)
    assert drift is not None, report.summary()
    assert (drift.expected_partitions, drift.actual_partitions) == (declared.partitions, 2)
    assert drift.partitions_differ
    assert drift.configs == ()


def test_config_difference_is_reported_as_drift(
    kafka_bootstrap: str, unique_topic_name, fresh_topics: list[str]
) -> None:
    declared = TopicSpec(unique_topic_name("retained"), "key", 3, RETAIN_FOREVER)
    fresh_topics.append(declared.name)
    ensure_topics(kafka_bootstrap, [dataclasses.replace(declared, configs=COMPACTED)])

    drift = ensure_topics(kafka_bootstrap, [declared]).drift_for(declared.name)
    assert drift is not None
    assert not drift.partitions_differ
    by_key = {c.key: (c.expected, c.actual) for c in drift.configs}
    assert by_key["cleanup.policy"] == ("delete", "compact")
    assert by_key["retention.ms"] == ("-1", "604800000")  # the broker default of 7 days


def test_kafka_python_produces_and_aiokafka_consumes_the_same_records(
    kafka_bootstrap: str, unique_topic_name, fresh_topics: list[str]
) -> None:
    topic = unique_topic_name("smoke")
    fresh_topics.append(topic)
    assert ensure_topics(kafka_bootstrap, [TopicSpec(topic, "key", 3, RETAIN_FOREVER)]).created == (topic,)

    sent = [(f"k{i % 7}".encode(), f"value-{i}".encode() + bytes([i % 256, 0, 255])) for i in range(100)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", **kafka_python_auth(ADMIN))
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in sent]
        producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=30)
    finally:
        producer.close()

    async def consume() -> list[tuple[bytes, bytes]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **aiokafka_auth(ADMIN),
        )
        await consumer.start()
        received: list[tuple[bytes, bytes]] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while len(received) < len(sent) and loop.time() < deadline:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    received.extend((r.key, r.value) for r in records)
        finally:
            await consumer.stop()
        return received

    received = asyncio.run(consume())
    assert Counter(received) == Counter(sent)
    for key in {k for k, _ in sent}:  # one key lives on one partition, so its order is kept
        assert [v for k, v in received if k == key] == [v for k, v in sent if k == key]
