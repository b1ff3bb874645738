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
from schemas.topics import LEDGER_CHECKPOINTS, LEDGER_SEQUENCED, LEDGER_TREE_HEADS
from services.checkpoint_note import Checkpoint, Signer
from streams import snapshots
from streams.step import Entry, Ledger, StepResult

log = logging.getLogger("stockledger.fold")
SEQUENCED_TP = TopicPartition(LEDGER_SEQUENCED, 0)


async def rebuild(bootstrap: str, until_offset: int, params: RiskParams | None = None,
                  topic: str = LEDGER_SEQUENCED, *, auth: Mapping[str, Any], ledger: Ledger | None = None,
                  from_offset: int = 0) -> Ledger:
    """Fold ledger.sequenced[from_offset, until_offset) with the one step, producing nothing.

    ledger: the state at from_offset (a snapshot's), or None for an empty ledger at offset 0.
    auth: the client's security settings (services.kafka_security.aiokafka_auth): the worker recovers as
    the ledger principal, `state dump` and the demo read as the auditor.
    """
    ledger = ledger if ledger is not None else Ledger(params=params)
    if until_offset <= from_offset:
        return ledger
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                **auth)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, from_offset)
        expected = from_offset
        while expected < until_offset:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=5_000)
            for rec in batch.get(tp, []):
                if rec.offset >= until_offset:
                    break
                fold_sequenced(ledger, rec.offset, expected, rec.value, with_outputs=False)
                expected = rec.offset + 1
    finally:
        await consumer.stop()
    return ledger


def sequenced_entries(value: bytes) -> list[Entry]:
    """The entries one ledger.sequenced record carries, in order: a SequencedBatch, or (logs written
    before batching) one SequencedRecord."""
    subject, sr = decode(value)
    records = sr["records"] if subject == "SequencedBatch" else [sr]
    return [Entry(r["topic"], r["key"], r["value"], r["partition"], r["offset"], r["timestamp_ms"]) for r in records]


def fold_sequenced(ledger: Ledger, offset: int, expected_offset: int, value: bytes,
                   with_outputs: bool = True) -> list[StepResult]:
    """Step every entry of one ledger.sequenced record; a gap in the topic stops the fold."""
    if offset != expected_offset:
        # The Merkle log numbers entries in topic order; a gap (a transactional marker, a deleted segment)
        # would make a proof name the wrong record: stop rather than sign such a log.
        raise RuntimeError(f"{LEDGER_SEQUENCED} offset {offset} follows {expected_offset - 1}: the topic has a gap; "
                           "the fold stops")
    return [ledger.step(entry, with_outputs=with_outputs) for entry in sequenced_entries(value)]


def tree_head_record(state: LedgerState, signer: Signer, origin: str, at_us: int) -> dict[str, bytes]:
    """The signed head of the state's log as a ledger.tree_heads record (value and key)."""
    size, root = state.log.size, state.log.root()
    note = signer.sign(Checkpoint(origin, size, root).body())
    event_id = f"tree-head:{origin}:{size}"
    record = {"event_id": event_id, "occurred_at": at_us, "source": "stockledger", "origin": origin, "tree_size": size,
              "root_hash": root.hex(), "key_name": signer.name, "note": note}
    return {"value": encode("TreeHead", record), "key": event_id.encode()}


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
                 topic: str = LEDGER_SEQUENCED, max_batch: int = 20, hash_every_s: float = 2.0, *,
                 auth: Mapping[str, Any], signer: Signer | None = None, origin: str = "",
                 head_every_records: int = 10_000, head_every_s: float = 5.0, snapshot_every_records: int = 0,
                 snapshot_every_s: float = 0.0, snapshot_keep: int = 2):
        self.bootstrap, self.group_id, self.worker_id, self.auth = bootstrap, group_id, worker_id, auth
        self.producer, self.on_active, self.params = producer, on_active, params
        self.topic, self.max_batch, self.hash_every_s = topic, max_batch, hash_every_s
        self.tp = TopicPartition(topic, 0)
        self.ledger: Ledger | None = None  # None while this member does not hold the partition
        self.needs_rebuild = False
        self.next_offset = 0
        self.folded = 0
        # Signed tree heads (ledger.tree_heads): every head_every_records entries, or head_every_s after the
        # last one when there are new entries, and at once when the fold goes idle.
        self.signer, self.origin = signer, origin
        self.head_every_records, self.head_every_s = head_every_records, head_every_s
        self.last_head_size, self.last_head_at = -1, 0.0
        # Snapshots (streams.snapshots): every snapshot_every_records entries or snapshot_every_s seconds with
        # new entries (0 turns the trigger off); the newest snapshot_keep are kept, older ones deleted.
        self.snapshot_every_records, self.snapshot_every_s, self.snapshot_keep = (
            snapshot_every_records, snapshot_every_s, snapshot_keep)
        self.snapshots_known: list[dict[str, Any]] = []
        self.snapshot_entries, self.snapshot_at = 0, time.monotonic()
        self.recovered_from: int | None = None  # the snapshot offset of the last recovery (None: from 0)

    @property
    def state(self) -> LedgerState | None:
        return self.ledger.state if self.ledger is not None else None

    async def lose_partition(self) -> None:
        self.ledger = None
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
                if self.state is not None and self.signer is not None and not self.needs_rebuild:
                    await self._maybe_tree_head(idle=not records)
                if self.state is not None and not self.needs_rebuild:
                    await self._maybe_snapshot()
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

    async def _maybe_tree_head(self, idle: bool) -> None:
        size = self.state.log.size
        if size <= self.last_head_size:
            return
        due = (size - max(self.last_head_size, 0) >= self.head_every_records
               or idle or time.monotonic() - self.last_head_at >= self.head_every_s)
        if due:
            await self.producer.send_and_wait(LEDGER_TREE_HEADS, **tree_head_record(self.state, self.signer, self.origin,
                                                                                   self.ledger.clock_us))
            self.last_head_size, self.last_head_at = size, time.monotonic()

    async def _maybe_snapshot(self) -> None:
        entries = self.state.log.size
        if entries <= self.snapshot_entries or not (self.snapshot_every_records or self.snapshot_every_s):
            return
        due = ((self.snapshot_every_records and entries - self.snapshot_entries >= self.snapshot_every_records)
               or (self.snapshot_every_s and time.monotonic() - self.snapshot_at >= self.snapshot_every_s))
        if not due:
            return
        started = time.monotonic()
        manifest = await snapshots.write(self.producer, self.group_id, self.next_offset, self.ledger)
        self.snapshots_known.append(manifest)
        self.snapshot_entries, self.snapshot_at = entries, time.monotonic()
        while len(self.snapshots_known) > self.snapshot_keep:
            await snapshots.delete(self.producer, self.snapshots_known.pop(0))
        log.info("snapshot at offset %d (%d entries, %d bytes in %d chunks) in %.2f s", self.next_offset, entries,
                 manifest["size_bytes"], manifest["chunks"], time.monotonic() - started)

    async def _recover(self, consumer: AIOKafkaConsumer) -> None:
        committed = await consumer.committed(self.tp) or 0
        started = time.monotonic()
        stored = await snapshots.read_stored(self.bootstrap, self.group_id, self.auth)
        found = snapshots.newest_valid(stored, committed)
        start, ledger = (found[1]["next_sequenced_offset"], found[0]) if found else (0, None)
        self.recovered_from = start if found else None
        self.ledger = await rebuild(self.bootstrap, committed, self.params, self.topic, auth=self.auth,
                                    ledger=ledger, from_offset=start)
        self.snapshots_known = sorted(stored.manifests.values(), key=lambda m: m["next_sequenced_offset"])
        self.snapshot_entries, self.snapshot_at = self.state.log.size, time.monotonic()
        self.next_offset = committed
        consumer.seek(self.tp, committed)
        self.needs_rebuild = False
        log.info("active: recovered %s, folded %d sequenced records up to %d in %.1f s",
                 f"from the snapshot at offset {start}" if found else "from offset 0 (no usable snapshot)",
                 committed - start, committed, time.monotonic() - started)
        await self.on_active(True)

    async def _apply_batch(self, consumer: AIOKafkaConsumer, records) -> None:
        futures = []
        expected = self.next_offset
        for rec in records:  # max_batch sequenced records, each a batch of up to 500 entries
            await asyncio.sleep(0)  # the fold is CPU-bound: let heartbeats and the sequencer run
            if self.ledger is None or self.needs_rebuild:
                return  # the partition moved away mid-batch: nothing is committed, the new owner redoes it
            results = fold_sequenced(self.ledger, rec.offset, expected, rec.value)
            expected = rec.offset + 1
            for res in results:
                # Outputs carry the entry's source timestamp: "recorded at" is when the input arrived, the
                # same live and in a replay of the exported log.
                ts = res.recorded_at_us // 1_000
                for topic, key, value in res.outputs:
                    futures.append(await self.producer.send(topic, value=value, key=key, timestamp_ms=ts))
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
        c = self.ledger.counts
        record = {
            "event_id": f"checkpoint:{self.group_id}:{self.next_offset}", "occurred_at": self.ledger.clock_us,
            "source": "stockledger",
            "worker_id": self.worker_id, "next_sequenced_offset": self.next_offset,
            "state_hash": state_hash(self.state) if with_hash else "",
            "applied": c.applied, "duplicates": c.duplicates, "rejected": c.rejected, "rejected_by_reason": c.rejected_by_reason,
        }
        await self.producer.send_and_wait(LEDGER_CHECKPOINTS, value=encode("FoldCheckpoint", record), key=self.group_id.encode())
