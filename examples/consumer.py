"""A downstream consumer of stockledger's topics with standard tools only: confluent-kafka + the schema registry.

No stockledger code is imported: every record carries its schema id (Confluent wire format), and
confluent-kafka's AvroDeserializer fetches the writer's schema from the registry by that id. So one
deserializer reads every record type of a topic (ledger.postings: PostingBatch; liquidation.events:
LiquidationTriggered, LiquidationExecuted, BadDebtCovered), and new schema versions need no code change.

    python examples/consumer.py --bootstrap 127.0.0.1:9092 --registry http://127.0.0.1:8081/apis/ccompat/v6 \
        --topics ledger.postings,liquidation.events --max-records 100

prints one JSON line per record: topic, partition, offset, schema id, record type (the writer schema's full
name) and the record (timestamps as ISO-8601 UTC, bytes as hex). It reads from the beginning and commits
nothing (a fresh group id per run), so it can be pointed at a live system without disturbing anything.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def record_type(registry: SchemaRegistryClient, value: bytes) -> tuple[int, str]:
    """(schema id, full record name) of a Confluent-framed value: magic byte 0, then a 4-byte big-endian id."""
    schema_id = int.from_bytes(value[1:5], "big")
    schema = json.loads(registry.get_schema(schema_id).schema_str)  # cached by the client
    name = schema["name"]
    return schema_id, f"{schema['namespace']}.{name}" if schema.get("namespace") else name


def sasl_ssl(username: str, password: str, ca_file: str) -> dict[str, str]:
    """librdkafka settings for the broker's client listener: SCRAM-SHA-512 over TLS with the local CA."""
    return {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": username,
            "sasl.password": password, "ssl.ca.location": ca_file}


def consume(bootstrap: str, registry_url: str, topics: list[str], max_records: int | None = None,
            idle_timeout_s: float = 10.0, security: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Every record of the topics from the beginning, decoded; stops after max_records or idle_timeout_s of silence.

    security: librdkafka settings to log in (sasl_ssl(...)); none for a development broker in plaintext mode.
    """
    registry = SchemaRegistryClient({"url": registry_url})
    deserialize = AvroDeserializer(registry)  # no reader schema: each record is read with its writer's schema
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"example-consumer-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        **(security or {}),
    })
    consumer.subscribe(topics)
    seen = 0
    last_record = time.monotonic()
    try:
        while max_records is None or seen < max_records:
            msg = consumer.poll(0.5)
            if msg is None:
                if time.monotonic() - last_record > idle_timeout_s:
                    return
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"consume failed: {msg.error()}")
            last_record = time.monotonic()
            schema_id, name = record_type(registry, msg.value())
            record = deserialize(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
            seen += 1
            yield {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(), "schema_id": schema_id,
                   "type": name, "record": record}
    finally:
        consumer.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    ap.add_argument("--registry", default="http://127.0.0.1:8081/apis/ccompat/v6", help="schema registry (Confluent API)")
    ap.add_argument("--topics", default="ledger.postings,liquidation.events", help="comma-separated topics")
    ap.add_argument("--max-records", type=int, help="stop after this many records")
    ap.add_argument("--idle-timeout", type=float, default=10.0, help="stop after this many seconds without a record")
    ap.add_argument("--username", help="SASL/SCRAM principal (e.g. auditor); with --password-file and --ca-file")
    ap.add_argument("--password-file", help="file holding the principal's password")
    ap.add_argument("--ca-file", help="the broker's CA certificate (scripts/kafka.sh: ~/.cache/stockledger/tls/ca.pem)")
    args = ap.parse_args(argv)
    topics = [t.strip() for t in args.topics.split(",") if t.strip()]
    security = None
    if args.username:
        with open(args.password_file, encoding="utf-8") as f:
            security = sasl_ssl(args.username, f.read().strip(), args.ca_file)
    for item in consume(args.bootstrap, args.registry, topics, args.max_records, args.idle_timeout, security):
        print(json.dumps(item, default=_json_default, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
