"""`stockledger demo` on the real broker: topics created, every generated record published and counted."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, TopicPartition
from typer.testing import CliRunner

from schemas.topics import INPUT_TOPICS
from services.archive import read_archive
from services.cli import app

pytestmark = pytest.mark.integration


def _end_offsets(bootstrap: str) -> dict[str, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        totals = {}
        for topic in INPUT_TOPICS:
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            totals[topic] = sum(consumer.end_offsets(parts).values())
        return totals
    finally:
        consumer.close()


def test_demo_publishes_every_record_and_reports(kafka_bootstrap, tmp_path, monkeypatch):
    host, port = kafka_bootstrap.split(":")
    monkeypatch.setenv("STOCKLEDGER_KAFKA_HOST", host)
    monkeypatch.setenv("STOCKLEDGER_KAFKA_PORT", port)
    from services.settings import get_settings

    get_settings.cache_clear()
    runner = CliRunner()
    topics = runner.invoke(app, ["topics", "create"])
    assert topics.exit_code == 0, topics.output
    before = _end_offsets(kafka_bootstrap)
    result = runner.invoke(app, ["demo", "--accounts", "40", "--events", "1500", "--seed", "3", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    after = _end_offsets(kafka_bootstrap)
    archive = next(tmp_path.glob("scenario-*.avro"))
    expected: dict[str, int] = {}
    for topic, _, _ in read_archive(archive):
        expected[topic] = expected.get(topic, 0) + 1
    for topic in INPUT_TOPICS:
        assert after[topic] - before[topic] == expected.get(topic, 0), topic
    assert "Published records per topic" in result.output
    assert "state hash" in result.output
    get_settings.cache_clear()
