"""The real schema registry (scripts/registry.sh): registration, BACKWARD_TRANSITIVE, drift, the codec's ids, and a
downstream consumer with confluent-kafka's AvroDeserializer (examples/consumer.py) decoding every record type."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from kafka import KafkaProducer

from schemas import catalog, codec
from schemas.registry import COMPATIBILITY, SchemaNotRegistered, file_text, register_catalog, subject_of
from schemas.samples import sample_records
from schemas.topics import LEDGER_POSTINGS, LIQUIDATION_EVENTS, TOPICS_BY_NAME
from services.kafka_security import ADMIN, kafka_python_auth, password_for
from services.settings import get_settings
from services.topics_admin import ensure_topics

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "consumer.py"
STOCKLEDGER_PACKAGES = {"ledger", "schemas", "streams", "services", "bench", "tests"}
TYPES_ON = {LEDGER_POSTINGS: {"PostingBatch"},
            LIQUIDATION_EVENTS: {"LiquidationTriggered", "LiquidationExecuted", "BadDebtCovered"}}


@pytest.fixture
def prefix() -> str:
    """Subjects of their own for one test (the real ones are registered once per session by the fixture)."""
    return f"it-{uuid.uuid4().hex[:10]}."


@pytest.fixture
def codec_ids() -> Iterator[None]:
    """Restore the codec's id source after a test that switches it."""
    saved = (codec._Ids.source, codec._Ids.resolved, dict(codec._Ids.headers))
    yield
    codec._Ids.source, codec._Ids.resolved, codec._Ids.headers = saved


def test_catalog_registers_under_record_names_with_catalog_ids_and_backward_transitive(schema_registry_url, prefix):
    first = register_catalog(schema_registry_url, subject_prefix=prefix)
    assert first.ok, first.summary()
    assert first.count("registered") == len(catalog.ENTRIES)
    assert {s.registry_id for s in first.statuses} == set(catalog.BY_ID)
    assert all(s.registry_id == s.entry.schema_id and s.registry_version == s.entry.version for s in first.statuses)
    client = SchemaRegistryClient({"url": schema_registry_url})
    rejection = f"{prefix}stockledger.v1.Rejection"
    assert client.get_versions(rejection) == [e.version for e in catalog.ENTRIES if e.subject == "Rejection"]  # 1..4
    assert {client.get_compatibility(s) for s in first.compatibility} == {COMPATIBILITY}
    again = register_catalog(schema_registry_url, subject_prefix=prefix)
    assert again.ok and again.count("present") == len(catalog.ENTRIES) and again.count("registered") == 0


def test_an_incompatible_schema_change_is_refused_and_reported(schema_registry_url, prefix):
    assert register_catalog(schema_registry_url, subject_prefix=prefix).ok
    v1 = catalog.LATEST["PostingBatch"]
    changed = json.loads(file_text(v1))
    changed["fields"].append({"name": "approved_by", "type": "string"})  # no default: v2 could not read v1 records
    v2 = dataclasses.replace(v1, version=2)
    texts = {1: file_text(v1), 2: json.dumps(changed)}
    report = register_catalog(schema_registry_url, subject_prefix=prefix, entries=[v1, v2],
                              schema_text=lambda e: texts[e.version])
    assert not report.ok
    refused = [s for s in report.statuses if s.state == "incompatible"]
    assert [s.entry.version for s in refused] == [2]
    assert any("PostingBatch" in line and "INCOMPATIBLE" in line for line in report.drift), report.drift
    subject = subject_of(v1, prefix)
    assert SchemaRegistryClient({"url": schema_registry_url}).get_versions(subject) == [1]


def test_backward_transitive_refuses_a_version_that_reads_only_the_latest(schema_registry_url, prefix):
    """v3 reads v2 (the field is there) but not v1 (no field, no default): BACKWARD would accept it, the set rule not."""
    client = SchemaRegistryClient({"url": schema_registry_url})
    subject = f"{prefix}stockledger.v1.Probe"

    def schema(*fields: dict[str, Any]) -> Schema:
        return Schema(json.dumps({"type": "record", "name": "Probe", "namespace": "stockledger.v1",
                                  "fields": [{"name": "event_id", "type": "string"}, *fields]}), "AVRO")

    client.register_schema(subject, schema())
    client.set_compatibility(subject_name=subject, level=COMPATIBILITY)
    client.register_schema(subject, schema({"name": "note", "type": "string", "default": ""}))
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, schema({"name": "note", "type": "string"}))
    assert refused.value.http_status_code == 409
    assert client.get_versions(subject) == [1, 2]


def test_drift_between_the_files_and_the_registry_is_reported(schema_registry_url, prefix):
    burn = catalog.LATEST["Burn"]
    edited = json.loads(file_text(burn))
    edited["fields"].append({"name": "memo", "type": "string", "default": ""})
    client = SchemaRegistryClient({"url": schema_registry_url})
    client.register_schema(subject_of(burn, prefix), Schema(json.dumps(edited), "AVRO"))  # v1 is not the file's v1
    report = register_catalog(schema_registry_url, subject_prefix=prefix, entries=[burn], register=False)
    assert [s.state for s in report.statuses] == ["differs"]
    assert any("Burn" in line and "DIFFERS" in line for line in report.drift)


def test_the_codec_takes_its_ids_from_the_registry(schema_registry_url, prefix, codec_ids):
    record = sample_records(60, seed=3)[0]
    subject, value = record[2], record[3]
    codec.use_registry(schema_registry_url, subject_prefix=prefix)
    with pytest.raises(SchemaNotRegistered, match="stockledger topics create"):
        codec.encode(subject, value)
    assert register_catalog(schema_registry_url, subject_prefix=prefix).ok
    framed = codec.encode(subject, value)
    assert codec.peek_schema_id(framed) == catalog.LATEST[subject].schema_id
    assert codec.decode(framed) == (subject, value)


def test_topics_create_registers_the_catalog(kafka_bootstrap, schema_registry_url):
    env = os.environ | {"STOCKLEDGER_REGISTRY_URL": schema_registry_url}
    bootstrap_host, bootstrap_port = kafka_bootstrap.rsplit(":", 1)
    env |= {"STOCKLEDGER_KAFKA_HOST": bootstrap_host, "STOCKLEDGER_KAFKA_PORT": bootstrap_port}
    done = subprocess.run([sys.executable, "-m", "services.cli", "topics", "create"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert f"{len(catalog.ENTRIES)} schema versions under {len(catalog.LATEST)} subjects" in out
    assert "DRIFT" not in out


# ------------------------------------------------------------------------------------------ downstream consumer


def _load_example():
    spec = importlib.util.spec_from_file_location("example_consumer", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _plain(value: Any) -> Any:
    """AvroDeserializer output in the codec's terms: timestamps (logical types) back to integer microseconds."""
    if isinstance(value, datetime):
        return (value - datetime(1970, 1, 1, tzinfo=UTC)) // __import__("datetime").timedelta(microseconds=1)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def test_the_example_consumer_imports_no_stockledger_code():
    tree = ast.parse(EXAMPLE.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert "confluent_kafka" in imported
    assert not imported & STOCKLEDGER_PACKAGES, imported & STOCKLEDGER_PACKAGES


def test_confluent_avro_deserializer_decodes_every_record_type(kafka_bootstrap, schema_registry_url, unique_topic_name,
                                                               fresh_topics, codec_ids):
    codec.use_registry(schema_registry_url)
    names = {t: unique_topic_name(t) for t in TYPES_ON}
    fresh_topics.extend(names.values())
    assert ensure_topics(kafka_bootstrap, [dataclasses.replace(TOPICS_BY_NAME[t], name=n) for t, n in names.items()]).ok
    wanted = set().union(*TYPES_ON.values())
    sent = [(names[topic], subject, record) for topic, _key, subject, record in sample_records(400, seed=11)
            if subject in wanted]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", **kafka_python_auth(ADMIN))  # own topics
    for topic, subject, record in sent:
        producer.send(topic, value=codec.encode(subject, record), key=record["event_id"].encode())
    producer.flush()
    producer.close()

    example = _load_example()
    settings = get_settings()  # the example logs in like any downstream consumer: SCRAM over TLS, the local CA
    security = None if settings.kafka_security == "plaintext" else example.sasl_ssl(
        ADMIN, password_for(ADMIN, settings), str(settings.kafka_ca_file))
    got = list(example.consume(kafka_bootstrap, schema_registry_url, list(names.values()), max_records=len(sent),
                               idle_timeout_s=60, security=security))
    assert len(got) == len(sent)
    by_event = {(item["topic"], item["record"]["event_id"]): item for item in got}
    for topic, subject, record in sent:
        item = by_event[(topic, record["event_id"])]
        assert item["type"] == f"stockledger.v1.{subject}"
        assert item["schema_id"] == catalog.LATEST[subject].schema_id
        assert _plain(item["record"]) == record
    seen = Counter((item["topic"], item["type"].rsplit(".", 1)[1]) for item in got)
    for topic, types in TYPES_ON.items():
        assert {t for (tp, t) in seen if tp == names[topic]} == types, seen
