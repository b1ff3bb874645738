"""The fold: applies ledger.sequenced in order with the core and publishes postings, decisions and dead letters.

State is the fold of the sequenced log, so recovery is replay: when this worker is assigned the
sequenced partition it rebuilds the state from offset 0 up to the group's committed offset with the
same code, then continues. Outputs of a batch are acknowledged before its offset is committed; a crash
in between re-emits them with the same ids and the same content (the state they came from is rebuilt
exactly), which downstream consumers recognise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError

from ledger.params import RiskParams
from ledger.state import LedgerState
from ledger.state_hash import state_hash
from schemas.codec import decode, encode
from schemas.topics import LEDGER_CHECKPOINTS, LEDGER_SEQUENCED
from streams.folding import TopicCounts, fold_one
from streams.outputs import outputs_for

log = logging.getLogger("stockledger.fold")
SEQUENCED_TP = TopicPartition(LEDGER_SEQUENCED, 0)


async def rebuild(bootstrap: str, until_offset: int, params: RiskParams | None = None,
                  topic: str = LEDGER_SEQUENCED, *, auth: Mapping[str, Any]) -> tuple[LedgerState, TopicCounts, int]:
    """Fold ledger.sequenced[0, until_offset) without producing anything: the recovered state.

    auth: the client's security settings (services.kafka_security.aiokafka_auth): the worker recovers as
    the ledger principal, `state dump` and the demo read as the auditor.
    """
    state, counts = LedgerState(params=params or RiskParams()), TopicCounts()
    last_at = 0
    if until_offset <= 0:
        return state, counts, last_at
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                **auth)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        done = False
        while not done:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=5_000)
            for rec in batch.get(tp, []):
                if rec.offset >= until_offset:
                    done = True
                    break
                last_at = _fold_sequenced(state, counts, rec.value)[2] or last_at
                if rec.offset == until_offset - 1:
                    done = True
    finally:
        await consumer.stop()
    return state, counts, last_at


def _fold_sequenced(state: LedgerState, counts: TopicCounts, sequenced_value: bytes):
    _, sr = decode(sequenced_value)
    out, record = fold_one(state, counts, sr["topic"], sr["partition"], sr["offset"], sr["value"])
    at = record["occurred_at"] if record else sr["timestamp_ms"] * 1_000
    return out, record, at, sr


class _Assignment(ConsumerRebalanceListener):
    def __init__(self, fold: Fold):
        self.fold = fold

    async def on_partitions_revoked(self, revoked):
        if SEQUENCED_TP in revoked or any(tp.topic == self.fold.topic for tp in revoked):
            await self.fold.lose_partition()

    async def on_partitions_assigned(self, assigned):
        if any(tp.topic == self.fold.topic for tp in assigned):
            self.fold.needs_rebuild = True


class Fold:
    """Consumer-group member for ledger.sequenced; the member holding it is the active ledger."""

    def __init__(self, bootstrap: str, group_id: str, worker_id: str, producer: AIOKafkaProducer,
                 on_active: Callable[[bool], Awaitable[None]], params: RiskParams | None = None,
                 topic: str = LEDGER_SEQUENCED, max_batch: int = 1_000, hash_every_s: float = 2.0, *,
                 auth: Mapping[str, Any]):
        self.bootstrap, self.group_id, self.worker_id, self.auth = bootstrap, group_id, worker_id, auth
        self.producer, self.on_active, self.params = producer, on_active, params
        self.topic, self.max_batch, self.hash_every_s = topic, max_batch, hash_every_s
        self.tp = TopicPartition(topic, 0)
        self.state: LedgerState | None = None
        self.counts = TopicCounts()
        self.needs_rebuild = False
        self.next_offset = 0
        self.last_at = 0
        self.folded = 0

    async def lose_partition(self) -> None:
        self.state = None
        await self.on_active(False)

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=20_000, heartbeat_interval_ms=2_000,
            max_poll_interval_ms=600_000, **self.auth,
        )
        consumer.subscribe([self.topic], listener=_Assignment(self))
        await consumer.start()
        next_hash_at, last_hashed_offset, counted_at = 0.0, -1, 0.0
        try:
            while not stop.is_set():
                if self.needs_rebuild:
                    await self._recover(consumer)
                batch = await consumer.getmany(self.tp, timeout_ms=100, max_records=self.max_batch)
                records = batch.get(self.tp, [])
                if self.state is None or self.needs_rebuild:
                    continue
                if records:
                    await self._apply_batch(consumer, records)
                now = time.monotonic()
                if self.state is None or self.next_offset == last_hashed_offset:
                    continue
                if not records or now >= next_hash_at:
                    # Hashing a large state takes a while: keep it under ~5 % of the fold's time while busy.
                    started = time.monotonic()
                    await self._checkpoint(with_hash=True)
                    took = time.monotonic() - started
                    next_hash_at = time.monotonic() + max(self.hash_every_s, 20 * took)
                    last_hashed_offset = self.next_offset
                elif now - counted_at >= 1.0:
                    await self._checkpoint(with_hash=False)  # counts for `stockledger status`, no hash
                    counted_at = now
        finally:
            await consumer.stop()

    async def _recover(self, consumer: AIOKafkaConsumer) -> None:
        committed = await consumer.committed(self.tp) or 0
        started = time.monotonic()
        self.state, self.counts, self.last_at = await rebuild(self.bootstrap, committed, self.params, self.topic,
                                                                auth=self.auth)
        self.next_offset = committed
        consumer.seek(self.tp, committed)
        self.needs_rebuild = False
        log.info("active: rebuilt state from %d sequenced records in %.1f s", committed, time.monotonic() - started)
        await self.on_active(True)

    async def _apply_batch(self, consumer: AIOKafkaConsumer, records) -> None:
        futures = []
        for i, rec in enumerate(records):
            if i % 100 == 99:
                await asyncio.sleep(0)  # the fold is CPU-bound: let heartbeats and the sequencer run
            if self.state is None or self.needs_rebuild:
                return  # the partition moved away mid-batch: nothing is committed, the new owner redoes it
            out, record, at, sr = _fold_sequenced(self.state, self.counts, rec.value)
            self.last_at = max(self.last_at, at)
            for topic, key, value in outputs_for(out, record, sr["topic"], sr["partition"], sr["offset"], sr["key"], sr["value"], at):
                futures.append(await self.producer.send(topic, value=value, key=key))
        await asyncio.gather(*futures)
        if self.state is None or self.needs_rebuild:
            return
        self.next_offset = records[-1].offset + 1
        self.folded += len(records)
        try:
            await consumer.commit({self.tp: self.next_offset})
        except CommitFailedError:
            # Lost the partition while producing: the outputs are out, the next owner re-emits them with
            # the same ids and content; our state is dropped with the revocation.
            log.warning("commit at %d failed after a rebalance", self.next_offset)

    async def _checkpoint(self, with_hash: bool) -> None:
        c = self.counts
        record = {
            "event_id": f"checkpoint:{self.group_id}:{self.next_offset}", "occurred_at": self.last_at, "source": "stockledger",
            "worker_id": self.worker_id, "next_sequenced_offset": self.next_offset,
            "state_hash": state_hash(self.state) if with_hash else "",
            "applied": c.applied, "duplicates": c.duplicates, "rejected": c.rejected, "rejected_by_reason": c.rejected_by_reason,
        }
        await self.producer.send_and_wait(LEDGER_CHECKPOINTS, value=encode("FoldCheckpoint", record), key=self.group_id.encode())
