"""The bulk publisher (librdkafka) on the real broker: keys land where the Java client puts them, in archive order."""

from __future__ import annotations

import pytest
from kafka.partitioner.default import murmur2

from schemas.topics import INPUT_TOPICS, KEYED_PARTITIONS
from services.archive import read_archive
from services.producer import produce_rows
from tests.integration.streams_harness import archive_counts, fresh_stream_env, make_archive, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_published_records_sit_on_the_java_partition_in_archive_order(kafka_bootstrap, tmp_path):
    env = fresh_stream_env(kafka_bootstrap, tmp_path)
    archive = make_archive(tmp_path, accounts=40, events=800)
    rows = list(read_archive(archive))
    assert produce_rows(env.bootstrap, rows) == archive_counts(archive)
    for topic in INPUT_TOPICS:
        records = read_topic(env.bootstrap, topic)
        expected = [(key.encode(), value) for t, key, value in rows if t == topic]
        assert sorted((r.key, r.value) for r in records) == sorted(expected), topic
        for r in records:
            # The Java client's rule (kafka-python's too): a key's records all sit on the partition it names.
            assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % KEYED_PARTITIONS, (topic, r.key)
        for partition in {r.partition for r in records}:
            part = sorted((r for r in records if r.partition == partition), key=lambda r: r.offset)
            # Within a partition the records follow the archive's order (redeliveries included), and their
            # timestamps rise with it: the sequencer merges partitions by timestamp.
            want = [pair for pair in expected if (murmur2(pair[0]) & 0x7FFFFFFF) % KEYED_PARTITIONS == partition]
            assert [(r.key, r.value) for r in part] == want, (topic, partition)
            assert all(a.timestamp < b.timestamp for a, b in zip(part, part[1:], strict=False))


def test_a_wrong_password_fails_the_publish_at_once_not_after_the_delivery_timeout(kafka_bootstrap, tmp_path, monkeypatch):
    import time

    from services import producer as producer_module

    real_auth = producer_module.librdkafka_auth

    def wrong_password(principal):
        auth = real_auth(principal)
        assert "sasl.password" in auth, "the test broker runs SASL_SSL (scripts/kafka.sh)"
        return auth | {"sasl.password": "not-the-password"}

    monkeypatch.setattr(producer_module, "librdkafka_auth", wrong_password)
    rows = list(read_archive(make_archive(tmp_path, accounts=20, events=200)))
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="publishing failed.*uthentication"):
        produce_rows(kafka_bootstrap, rows)
    assert time.monotonic() - started < 30  # the delivery timeout is 60 s
