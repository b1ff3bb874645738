"""Publish archive rows to Kafka in log order, keyed, batched, with delivery confirmed before returning."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from confluent_kafka import KafkaError, KafkaException, Producer

from services.archive import ArchiveRow
from services.kafka_security import librdkafka_auth, writer_of

DELIVERY_TIMEOUT_MS = 60_000  # a record not acknowledged within this fails the publish (broker down, no leader)
QUEUE_MAX_RECORDS = 200_000  # records waiting in one producer's queue before send() waits for acknowledgements


# Client-level errors that no retry can cure: fail the publish at once instead of after the delivery timeout.
# (A broker that is down is not one: a restart must not fail a publish that would land after it.)
FATAL_CODES = frozenset({KafkaError._AUTHENTICATION, KafkaError.TOPIC_AUTHORIZATION_FAILED,
                         KafkaError.CLUSTER_AUTHORIZATION_FAILED})


def make_producer(bootstrap: str, principal: str, on_error=None) -> Producer:
    """An idempotent librdkafka producer (acks=all): a retry never duplicates or reorders records in a partition.

    librdkafka, not kafka-python: it encodes and batches in C, about ten times less CPU per record, and the
    publisher shares the machine with the worker it feeds. murmur2 is the Java client's partitioner (and
    kafka-python's), so a key lands on the partition every other client of the project expects.
    """
    return Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
        "batch.size": 1 << 20, "compression.type": "none", "partitioner": "murmur2_random",
        "message.timeout.ms": DELIVERY_TIMEOUT_MS, "queue.buffering.max.messages": QUEUE_MAX_RECORDS,
        "log_level": 3,  # errors only: a retried "coordinator load in progress" is not news on a terminal
        **({"error_cb": on_error} if on_error is not None else {}),
        **librdkafka_auth(principal),
    })


def produce_rows(bootstrap: str, rows: Iterable[ArchiveRow], progress: Callable[[int], None] | None = None,
                 progress_every: int = 5_000) -> dict[str, int]:
    """Send every row to its topic with its key; returns counts per topic once all are acknowledged.

    Record timestamps rise by one millisecond per row from the wall clock at the start: the sequencer
    merges partitions by timestamp, so the ledger folds the rows in exactly the archive's order. Each
    topic is written as its source principal (custodian, issuer, oracle, venue), one producer each.
    """
    counts: dict[str, int] = {}
    producers: dict[str, Producer] = {}
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg) -> None:
        if err is not None:
            failures.append(err)

    def client_error(err: KafkaError) -> None:
        if err.fatal() or err.code() in FATAL_CODES:
            failures.append(err)

    n = 0
    base_ms = int(time.time() * 1000)
    for n, (topic, key, value) in enumerate(rows, 1):
        principal = writer_of(topic)
        producer = producers.get(principal)
        if producer is None:
            producer = producers[principal] = make_producer(bootstrap, principal, client_error)
        _send(producer, topic, key.encode(), value, base_ms + n, delivered)
        counts[topic] = counts.get(topic, 0) + 1
        if n % progress_every == 0:
            for p in producers.values():
                p.poll(0)  # serve delivery reports
            if failures:
                break
            if progress is not None:
                progress(n)
    deadline = time.monotonic() + DELIVERY_TIMEOUT_MS / 1000 + 5
    for producer in producers.values():
        while producer.flush(1.0) and time.monotonic() < deadline and not failures:
            pass
        if len(producer):
            failures.append(KafkaError(KafkaError._MSG_TIMED_OUT, f"{len(producer)} records still queued"))
    if failures:
        raise RuntimeError(f"publishing failed ({len(failures)} errors), first: {failures[0].str()}")
    if progress is not None:
        progress(n)
    return counts


def _send(producer: Producer, topic: str, key: bytes, value: bytes, timestamp_ms: int, on_delivery) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, timestamp=timestamp_ms, on_delivery=on_delivery)
            return
        except BufferError:  # the queue is full: wait for acknowledgements to make room
            producer.poll(0.05)
        except KafkaException as exc:
            raise RuntimeError(f"cannot send to {topic}: {exc.args[0].str()}") from None
