"""Avro records through a real broker: kafka-python produces, aiokafka consumes, the codec decodes.

10,000 sample records (schemas/samples.py, every input and output subject) go to fresh, uniquely named
copies of the declared topics (same partition counts and configs, created with ensure_topics). The test
asserts every record comes back equal, in send order per key, with the right count per topic; and that
the topics (the declared ones and the fresh copies) carry exactly the declared configs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from schemas import codec
from schemas.samples import SUBJECTS, sample_records
from schemas.topics import TOPICS, TopicSpec
from services.kafka_security import ADMIN, aiokafka_auth, kafka_python_auth
from services.topics_admin import ensure_topics

pytestmark = pytest.mark.integration

PER_FAMILY = 10_000  # the issue asks for 10,000 events of every family (topic)
N_RECORDS = PER_FAMILY * len(SUBJECTS)  # samples.py spreads records evenly over the subjects
SEED = 20250303
CONSUME_TIMEOUT_S = 120


def _assert_topics_match(bootstrap: str, specs: list[TopicSpec]) -> None:
    """Partition counts and DescribeConfigs (non-default values only) equal the declaration."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="stockledger-avro-roundtrip",
                             **kafka_python_auth(ADMIN))
    try:
        metadata = {t["name"]: t for t in admin.describe_topics([s.name for s in specs])}
        modified = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs], config_filter="modified"
        )["topic"]
    finally:
        admin.close()
    for spec in specs:
        assert metadata[spec.name]["error_code"] == 0, spec.name
        assert len(metadata[spec.name]["partitions"]) == spec.partitions, spec.name
        actual = {key: entry["value"] for key, entry in modified[spec.name].items()}
        assert actual == spec.configs, f"{spec.name}: broker has {actual}, declared {spec.configs}"


def _produce(bootstrap: str, sends: list[tuple[str, bytes, bytes]]) -> dict[tuple[str, bytes], set[int]]:
    """Send everything with kafka-python; return the partitions each (topic, key) landed on."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,  # retries can never reorder or duplicate within a partition
        linger_ms=5,
        batch_size=256 * 1024,
        client_id="stockledger-avro-roundtrip",
        **kafka_python_auth(ADMIN),
    )
    try:
        futures = [(topic, key, producer.send(topic, key=key, value=value)) for topic, key, value in sends]
        producer.flush(timeout=60)
        landed: dict[tuple[str, bytes], set[int]] = defaultdict(set)
        for topic, key, future in futures:
            landed[(topic, key)].add(future.get(timeout=60).partition)
    finally:
        producer.close()
    return landed


async def _consume(bootstrap: str, topics: list[str], expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        client_id="stockledger-avro-roundtrip",
        **aiokafka_auth(ADMIN),
    )
    await consumer.start()
    received: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONSUME_TIMEOUT_S
        while len(received) < expected and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                received.extend(records)
        # a short grace read: anything beyond `expected` would be a duplicate
        for records in (await consumer.getmany(timeout_ms=500)).values():
            received.extend(records)
    finally:
        await consumer.stop()
    return received


@pytest.mark.timeout(600)
def test_declared_topics_carry_the_declared_configs(kafka_bootstrap: str) -> None:
    report = ensure_topics(kafka_bootstrap, TOPICS)
    assert report.ok, report.summary()
    _assert_topics_match(kafka_bootstrap, list(TOPICS))


@pytest.mark.timeout(600)
def test_10k_records_of_every_family_round_trip_through_kafka(
    kafka_bootstrap: str, unique_topic_name, fresh_topics: list[str]
) -> None:
    specs = {spec.name: dataclasses.replace(spec, name=unique_topic_name(spec.name)) for spec in TOPICS}
    fresh_topics.extend(s.name for s in specs.values())
    report = ensure_topics(kafka_bootstrap, list(specs.values()))
    assert report.ok, report.summary()
    assert sorted(report.created) == sorted(s.name for s in specs.values())
    _assert_topics_match(kafka_bootstrap, list(specs.values()))

    samples = sample_records(N_RECORDS, seed=SEED)
    assert {subject for _, _, subject, _ in samples} == set(SUBJECTS)
    sent_by_key: dict[tuple[str, bytes], list[tuple[str, dict]]] = defaultdict(list)
    sends: list[tuple[str, bytes, bytes]] = []
    for topic, key, subject, record in samples:
        fresh, key_bytes = specs[topic].name, key.encode()
        sends.append((fresh, key_bytes, codec.encode(subject, record)))
        sent_by_key[(fresh, key_bytes)].append((subject, record))

    started = time.perf_counter()
    landed = _produce(kafka_bootstrap, sends)
    produced = time.perf_counter()
    received = asyncio.run(_consume(kafka_bootstrap, [s.name for s in specs.values()], len(sends)))
    consumed = time.perf_counter()

    got_by_key: dict[tuple[str, bytes], list[tuple[str, dict]]] = defaultdict(list)
    got_partitions: dict[tuple[str, bytes], set[int]] = defaultdict(set)
    for message in received:
        got_by_key[(message.topic, message.key)].append(codec.decode(message.value))
        got_partitions[(message.topic, message.key)].add(message.partition)
    decoded = time.perf_counter()
    print(
        f"\n{len(sends)} records over {len(specs)} topics, {len(sent_by_key)} keys: "
        f"produce {produced - started:.2f}s, consume {consumed - produced:.2f}s, "
        f"decode {decoded - consumed:.2f}s, round trip {decoded - started:.2f}s"
    )

    assert len(received) == len(sends), "records lost or duplicated"
    assert Counter(m.topic for m in received) == Counter(topic for topic, _, _ in sends)
    assert min(Counter(topic for topic, _, _ in sends).values()) >= PER_FAMILY, "a family got fewer than 10,000 records"
    assert set(got_by_key) == set(sent_by_key)
    for topic_key, sent in sent_by_key.items():
        # equal records in the send order: one key lives on one partition, whose order Kafka keeps
        assert got_by_key[topic_key] == sent, f"{topic_key}: records differ or arrived out of order"
        assert len(landed[topic_key]) == 1 and got_partitions[topic_key] == landed[topic_key], topic_key
    assert Counter(subject for pairs in got_by_key.values() for subject, _ in pairs) == Counter(
        subject for _, _, subject, _ in samples
    )
