"""The fold: applies ledger.sequenced in order with the core and publishes postings, decisions and dead letters.

`FoldHost` is what the Faust agent (streams/app.py) calls with each run of sequenced records. State is the
fold of the sequenced log, so recovery is replay: when the first record delivered is not the one the
state expects (a new assignment, a failover), the host loads the newest snapshot at or below that offset
whose hash verifies and folds the tail with the same step. Outputs of a run are acknowledged by the
broker before the agent acks its records (so before Faust commits them); a crash in between re-emits
them with the same ids and the same content (the state they came from is rebuilt exactly), which
downstream consumers recognise.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner, murmur2

from ledger.params import RiskParams
from ledger.state import LedgerState
from ledger.state_hash import state_hash
from schemas.codec import decode, encode
from schemas.topics import LEDGER_CHECKPOINTS, LEDGER_SEQUENCED, LEDGER_TREE_HEADS
from services.checkpoint_note import Checkpoint, Signer
from streams import forked, snapshots
from streams.consumers import stop_soon
from streams.step import Entry, Ledger, StepResult
from streams.tables import account_row, pool_row, touched

log = logging.getLogger("stockledger.fold")


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
                                max_partition_fetch_bytes=SEQUENCED_FETCH_BYTES, **auth)
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
        await stop_soon(consumer)
    return ledger


# A clean stop writes the state as of its last folded record to a snapshot when it can do so within this; else the
# next owner folds the tail from the newest snapshot (as after a kill -9: at most the snapshot cadence's worth).
SNAPSHOT_ON_STOP_TIMEOUT_S = 5.0
COMMITTED_LOOKUP_TIMEOUT_S = 10.0  # aiokafka retries a lookup for as long as the coordinator is away
# Bytes of ledger.sequenced one fetch may carry (its consumers' max_partition_fetch_bytes): a SequencedBatch of 500
# entries is ~150 KB, so the clients' 1 MiB default brought ~6 records per round trip; a recovery's tail and a
# worker catching up read ~100 per fetch instead.
SEQUENCED_FETCH_BYTES = 16 << 20


async def committed_offset(bootstrap: str, group_id: str, topic: str, auth: Mapping[str, Any]) -> int:
    """The group's committed offset on the topic's one partition (0 when none is committed).

    A consumer with the group's id that never subscribes only sends OffsetFetch: it does not join the group.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False, **auth)
    try:
        await asyncio.wait_for(consumer.start(), COMMITTED_LOOKUP_TIMEOUT_S)
        return await asyncio.wait_for(consumer.committed(TopicPartition(topic, 0)), COMMITTED_LOOKUP_TIMEOUT_S) or 0
    finally:
        await stop_soon(consumer)


def sequenced_entries(value: bytes) -> list[Entry]:
    """The entries one ledger.sequenced record carries, in order: a SequencedBatch, or (logs written
    before batching) one SequencedRecord."""
    subject, sr = decode(value)
    records = sr["records"] if subject == "SequencedBatch" else [sr]
    return [Entry(r["topic"], r["key"], r["value"], r["partition"], r["offset"], r["timestamp_ms"]) for r in records]


YIELD_EVERY_ENTRIES = 32  # ~5-10 ms of the step at the generated week's mix


def check_follows(offset: int, expected_offset: int) -> None:
    """A gap in ledger.sequenced stops the fold."""
    if offset != expected_offset:
        # The Merkle log numbers entries in topic order; a gap (a transactional marker, a deleted segment)
        # would make a proof name the wrong record: stop rather than sign such a log.
        raise RuntimeError(f"{LEDGER_SEQUENCED} offset {offset} follows {expected_offset - 1}: the topic has a gap; "
                           "the fold stops")


def fold_sequenced(ledger: Ledger, offset: int, expected_offset: int, value: bytes,
                   with_outputs: bool = True) -> list[StepResult]:
    """Step every entry of one ledger.sequenced record; a gap in the topic stops the fold."""
    check_follows(offset, expected_offset)
    return [ledger.step(entry, with_outputs=with_outputs) for entry in sequenced_entries(value)]


def tree_head_record(state: LedgerState, signer: Signer, origin: str, at_us: int) -> dict[str, bytes]:
    """The signed head of the state's log as a ledger.tree_heads record (value and key)."""
    size, root = state.log.size, state.log.root()
    note = signer.sign(Checkpoint(origin, size, root).body())
    event_id = f"tree-head:{origin}:{size}"
    record = {"event_id": event_id, "occurred_at": at_us, "source": "stockledger", "origin": origin, "tree_size": size,
              "root_hash": root.hex(), "key_name": signer.name, "note": note}
    return {"value": encode("TreeHead", record), "key": event_id.encode()}


KEY_HASH_MEMO_MAX = 65_536  # distinct output keys remembered (accounts, symbols, series); cleared when full
_key_hashes: dict[bytes, int] = {}


def _partitioner(producer: AIOKafkaProducer, topic: str) -> Callable[[bytes, bytes], int]:
    """key, value -> the partition producer.send would choose on topic (its metadata already awaited).

    aiokafka's default partitioner hashes every key with a pure-Python murmur2 (~2 % of the fold's time on
    Faust); output keys repeat (accounts, symbols), so with that partitioner the hashes are memoised. Any
    other partitioner is asked per record.
    """
    if type(getattr(producer, "_partitioner", None)) is not DefaultPartitioner:
        return lambda key, value: producer._partition(topic, None, key, value, key, value)  # noqa: SLF001 - send()'s choice
    partitions = list(producer._metadata.partitions_for_topic(topic))  # noqa: SLF001 - as DefaultPartitioner is given them
    count = len(partitions)
    hashes = _key_hashes

    def partition_of(key: bytes, value: bytes) -> int:
        h = hashes.get(key)
        if h is None:
            if key is None:  # no key: the producer picks at random among available partitions
                return producer._partition(topic, None, key, value, key, value)  # noqa: SLF001
            if len(hashes) >= KEY_HASH_MEMO_MAX:
                hashes.clear()
            h = hashes[key] = murmur2(key) & 0x7FFFFFFF
        return partitions[h % count]

    return partition_of


async def send_in_batches(producer: AIOKafkaProducer,
                          outputs: list[tuple[str, bytes, bytes, int | None]]) -> asyncio.Future:
    """Send (topic, key, value, timestamp_ms or None for the send time) records, in order per partition, as
    whole batches: the fold's outputs and the published tables' changelog rows.

    The same partitions as `producer.send` would choose (the producer's own partitioner on the key), but
    one BatchBuilder per topic partition filled in C instead of a Python `send` per record (that was
    ~10 % of the fold's time on Faust). Returns a future for every batch's acknowledgement.
    """
    by_tp: dict[tuple[str, int], list[tuple[bytes, bytes, int | None]]] = {}
    partition_of = {}
    for topic in {o[0] for o in outputs}:
        await producer.client._wait_on_metadata(topic)  # noqa: SLF001 - what send() itself awaits first
        partition_of[topic] = _partitioner(producer, topic)
    for topic, key, value, ts in outputs:
        by_tp.setdefault((topic, partition_of[topic](key, value)), []).append((key, value, ts))
    futures = []
    for (topic, partition), records in by_tp.items():
        batch = producer.create_batch()
        for key, value, ts in records:
            if batch.append(key=key, value=value, timestamp=ts) is None:  # full: send it, start the next
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=ts) is None:
                    raise ValueError(f"an output record of {len(value):,} bytes does not fit a batch on {topic}")
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return asyncio.gather(*futures)


@dataclass(frozen=True)
class Cadence:
    """How often the fold publishes what is not an output of a step (all from settings)."""

    head_every_records: int = 10_000  # signed tree heads: every N entries,
    head_every_s: float = 5.0  # or T seconds after the last one with new entries (and at once when idle)
    snapshot_every_records: int = 0  # snapshots: every N entries or T seconds with new entries (0: off)
    snapshot_every_s: float = 0.0
    snapshot_idle_every_s: float = 0.0  # and when idle, if the last is at least this old (0: not when idle)
    snapshot_keep: int = 2  # the newest N are kept, older ones deleted
    # The state hash in the progress checkpoint: always when the fold goes idle, and while busy at most every
    # hash_every_s (and at most ~5 % of the time): hashing a large state blocks the loop, a latency spike.
    hash_every_s: float = 30.0
    work_in_child: bool = True  # hash and snapshot in forked children (streams/forked.py), the fold going on
    publish_every_s: float = 1.0  # the published tables: changed accounts and pools, coalesced
    idle_s: float = 0.2  # no record for this long: sign a head and hash the state now


async def _all_landed(queued: list[asyncio.Future]) -> None:
    """Every queued record's outputs acknowledged (each future gives the future of its batches' acks)."""
    for q in queued:
        await (await q)


def snapshot_due(cadence: Cadence, new_entries: int, age_s: float, idle: bool) -> bool:
    """Whether the fold writes a snapshot now: new entries, and a count, an age or (when idle) an idle age is reached."""
    c = cadence
    return new_entries > 0 and bool(
        (c.snapshot_every_records and new_entries >= c.snapshot_every_records)
        or (c.snapshot_every_s and age_s >= c.snapshot_every_s)
        or (idle and c.snapshot_idle_every_s and age_s >= c.snapshot_idle_every_s))


# Publishes the changed rows: (account rows, pool row or None); the Faust app writes them to its tables.
Publisher = Callable[[list[dict[str, Any]], dict[str, Any] | None], Awaitable[None]]


class FoldHost:
    """The fold's state and duties for whichever transport delivers ledger.sequenced to it (the Faust agent)."""

    def __init__(self, bootstrap: str, group_id: str, worker_id: str, producer: AIOKafkaProducer,
                 params: RiskParams | None = None, topic: str = LEDGER_SEQUENCED, *, auth: Mapping[str, Any],
                 signer: Signer | None = None, origin: str = "", cadence: Cadence | None = None,
                 publish: Publisher | None = None):
        self.bootstrap, self.group_id, self.worker_id, self.auth = bootstrap, group_id, worker_id, auth
        self.producer, self.params, self.topic = producer, params, topic
        self.signer, self.origin = signer, origin
        self.cadence = cadence or Cadence()
        self.publish = publish
        self.ledger: Ledger | None = None  # None until the first run is folded (or recovered)
        self.next_offset = 0
        self.folded = 0  # sequenced records folded by this host
        self.lock = asyncio.Lock()  # a run and the idle duties never interleave
        self.last_run_at = time.monotonic()
        self.last_head_size, self.last_head_at = -1, 0.0
        self.snapshots_known: list[dict[str, Any]] = []
        self.snapshots_listed = True  # False after a recovery that read only the topic's tail
        self.snapshot_offset: int | None = None  # the offset of the newest snapshot known to be stored
        self.snapshot_took_s = 0.0  # how long the last snapshot took, image and send (a stop snapshot's bound)
        self.stopping = False  # a clean stop is under way: no listing or pruning any more (the next owner prunes)
        self.snapshot_entries, self.snapshot_at = 0, time.monotonic()
        self.recovered_from: int | None = None  # the snapshot offset of the last recovery (None: from 0)
        self.recoveries = 0
        self.position_checked = True  # until an assignment makes this worker active (activated())
        self.revocations = 0  # revoked() counts them: work begun before one publishes nothing
        self.next_hash_at, self.last_hashed_offset, self.counted_at = 0.0, -1, 0.0
        # The state hash and snapshots are computed in forked children (streams/forked.py) when possible.
        self.work_in_child = self.cadence.work_in_child and forked.available()
        self.hashing: asyncio.Task | None = None  # a checkpoint waiting for its child's hash
        self.epoch = 0  # counts revocations: a child's answer from before one is dropped
        self.children: set[forked.Child] = set()  # forked children still computing
        self.outbox: asyncio.Queue | None = None  # outputs waiting for the sender task, in fold order
        self.sender: asyncio.Task | None = None
        self.snapshotting: asyncio.Task | None = None  # a snapshot waiting for its child's bytes
        self.dirty_accounts: set[str] = set()
        self.pool_dirty = False
        self.published_at = 0.0
        # False from a recovery until its rows are published: the tables may lack rows meanwhile (the active worker
        # does not restore their changelogs: streams/app.py FoldRecovery), so the views answer 503, not 404.
        self.tables_filled = False

    @property
    def state(self) -> LedgerState | None:
        return self.ledger.state if self.ledger is not None else None

    async def fold(self, records: list[tuple[int, bytes]]) -> asyncio.Future:
        """Fold a run of consecutive ledger.sequenced records (offset, value) and send their outputs.

        Returns a future that resolves once the broker has acknowledged every output of the run (or fails
        with the send's error): only then may the caller ack the records. The caller folds the next run
        meanwhile, so the fold never waits for a round trip to the broker.
        """
        if not records:
            return asyncio.gather()
        async with self.lock:
            self.position_checked = True  # the delivered offset decides where this worker is
            if self.ledger is None or records[0][0] != self.next_offset:
                await self._recover(records[0][0])
            queued: list[asyncio.Future] = []
            expected = self.next_offset
            for offset, value in records:
                check_follows(offset, expected)
                entries = sequenced_entries(value)
                results: list[StepResult] = []
                # The fold is CPU-bound and shares the event loop with the sequencer, the acker and the
                # producer: it yields every few milliseconds of work, not once per record (500 entries,
                # ~0.1 s), or each of the sequencer's round trips would wait that long.
                for start in range(0, len(entries), YIELD_EVERY_ENTRIES):
                    await asyncio.sleep(0)
                    results.extend(self.ledger.step(entry) for entry in entries[start:start + YIELD_EVERY_ENTRIES])
                expected = offset + 1
                state = self.ledger.state
                outputs: list[tuple[str, bytes, bytes, int | None]] = []
                for res in results:
                    if touched(state, res, self.dirty_accounts):
                        self.pool_dirty = True
                    # Outputs carry the entry's source timestamp: "recorded at" is when the input arrived,
                    # the same live and in a replay of the exported log.
                    ts = res.recorded_at_us // 1_000
                    outputs.extend((topic, key, value_bytes, ts) for topic, key, value_bytes in res.outputs)
                # Each sequenced record's outputs leave as soon as it is folded, not after the whole run (a
                # run behind a backlog holds up to 20 x 500 entries: its first outputs would wait seconds for
                # the last). They go to the sender task, so the fold never waits for the producer; the run
                # is still acked only once every one of them has landed.
                queued.append(self._queue_outputs(outputs))
            self.next_offset = expected
            self.folded += len(records)
            self.last_run_at = time.monotonic()
            await self._duties(idle=False)
            return asyncio.ensure_future(_all_landed(queued))

    def _queue_outputs(self, outputs: list[tuple[str, bytes, bytes, int | None]]) -> asyncio.Future:
        """Hand one record's outputs to the sender task; returns a future of the future of their acks."""
        if self.sender is None or self.sender.done():
            self.outbox = asyncio.Queue()
            self.sender = asyncio.ensure_future(self._send_loop(self.outbox))
        queued = asyncio.get_running_loop().create_future()
        self.outbox.put_nowait((outputs, queued))
        return queued

    async def _send_loop(self, outbox: asyncio.Queue) -> None:
        """Send queued outputs in order, whatever has queued up at once as one set of batches.

        aiokafka's send_batch waits until the partition's previous batch has gone to the broker (its linger
        and the request in flight): awaited in the fold, that wait would come once per record.
        """
        while True:
            items = [await outbox.get()]
            while not outbox.empty():
                items.append(outbox.get_nowait())
            try:
                landed = await send_in_batches(self.producer, [o for outputs, _ in items for o in outputs])
            except Exception as exc:  # noqa: BLE001 - the acker sees it and the worker restarts
                for _, queued in items:
                    if not queued.done():
                        queued.set_exception(exc)
                continue
            for _, queued in items:
                if not queued.done():
                    queued.set_result(landed)

    def quiet(self) -> bool:
        """No run came for idle_s, and none is being folded.

        last_run_at is when the last run was done: a run of a backlog (up to 20 x 500 entries) folds for
        seconds, yielding to the loop every few entries, and the timers that run meanwhile must not take it for
        idle time (the worker's idle timer ran a full collection, ~0.2 s of the loop, every 10 s of a catch-up).
        """
        return not self.lock.locked() and time.monotonic() - self.last_run_at >= self.cadence.idle_s

    def activated(self) -> None:
        """This worker was assigned ledger.sequenced: when idle, its position is checked against the group's."""
        self.position_checked = False

    def revoked(self) -> None:
        """The partition is gone (or the worker stops): what started before publishes nothing; children's answers are dropped."""
        self.revocations += 1
        self.position_checked = True
        self.abandon_children()

    async def idle(self, active: bool = False) -> None:
        """Called every idle_s by a timer: when no run came for idle_s, sign a head and hash the state now.

        active: this worker holds ledger.sequenced. A worker that becomes active and is delivered nothing
        (a failover onto a caught-up log) would otherwise hash nothing, or the state it folded before it
        last lost the partition, which the other owner has moved past: so, once per assignment, it reads
        the group's committed offset and recovers to it first unless its state is already there. If the
        agent delivers a record meanwhile, the record's offset decides (fold() recovers to it as always).
        """
        if not self.quiet():
            return
        if active and not self.position_checked:
            await self._check_position()
            return
        if self.ledger is None:
            return
        async with self.lock:
            await self._duties(idle=True)

    async def _check_position(self) -> None:
        revocations = self.revocations
        try:
            committed = await committed_offset(self.bootstrap, self.group_id, self.topic, self.auth)
        except Exception as exc:  # noqa: BLE001 - a broker away: the next idle tick tries again
            log.warning("could not read the fold's committed offset (%r); trying again when idle", exc)
            return
        async with self.lock:
            if self.position_checked or revocations != self.revocations:
                return  # a run was delivered (its offset decided), or the partition was revoked meanwhile
            self.position_checked = True
            if committed <= 0 and self.ledger is None:
                self.tables_filled = True  # nothing folded by anyone yet: no rows to publish, no state to hash
                return
            if self.ledger is None or committed != self.next_offset:
                await self._recover(committed)
                if revocations != self.revocations:
                    return  # revoked while recovering: the state stays (it is the log's at that offset), unpublished
            await self._duties(idle=True)

    async def _duties(self, idle: bool) -> None:
        if self.signer is not None:
            await self._maybe_tree_head(idle)
        await self._maybe_snapshot(idle)
        await self._maybe_publish(idle)
        now = time.monotonic()
        if self.hashing is not None:
            if not self.hashing.done():
                return  # its checkpoint goes out next; none meanwhile, so checkpoints never go back in offset
            hashing, self.hashing = self.hashing, None
            hashing.result()  # a failed checkpoint send raises here, as an in-process one would
        if self.next_offset == self.last_hashed_offset:
            return
        if idle or now >= self.next_hash_at:
            started = time.monotonic()
            record = self._checkpoint_record()
            # The hash of a large state takes a while (0.6 s for the demo's 2,000 accounts): a forked child
            # hashes the state as of now on the other core while the fold goes on.
            self.hashing = self._in_child(forked.hash_work, (self.state,), bytes.decode,
                                          functools.partial(self._send_hashed, record))
            if self.hashing is None:
                record["state_hash"] = state_hash(self.state)
                await self._send_checkpoint(record)
            # What the loop stopped for (the fork, or the whole hash): under ~5 % of the fold's time while busy.
            took = time.monotonic() - started
            self.next_hash_at = time.monotonic() + max(self.cadence.hash_every_s, 20 * took)
            self.last_hashed_offset = self.next_offset
        elif now - self.counted_at >= 1.0:
            await self._send_checkpoint(self._checkpoint_record())  # counts for `stockledger status`, no hash
            self.counted_at = now

    def _in_child(self, work: Callable[..., bytes], args: tuple, decode: Callable[[bytes], Any],
                  finish: Callable[[Any, float], Awaitable[None]]) -> asyncio.Task | None:
        """Fork work(*args); a task that awaits the decoded answer (None: the child failed) and, unless the
        partition was revoked meanwhile, calls finish(answer, fork time).

        None when children are off or the fork failed (then off from now on): the caller works in-process.
        """
        child = forked.fork_call(work, *args) if self.work_in_child else None
        if child is None:
            self.work_in_child = False
            return None
        self.children.add(child)
        answer, epoch = forked.answer_of(child, decode), self.epoch

        async def run() -> None:
            try:
                decoded = await answer
            finally:
                self.children.discard(child)
            if epoch == self.epoch:  # else revoked meanwhile: the next owner does it
                await finish(decoded, child.started)

        return asyncio.ensure_future(run())

    async def _send_hashed(self, record: dict[str, Any], digest: str | None, _started: float) -> None:
        if digest is None:  # logged by the collector; in-process from now on, starting at the next duties
            self.work_in_child, self.last_hashed_offset = False, -1
            return
        record["state_hash"] = digest
        await self._send_checkpoint(record)

    def abandon_children(self) -> None:
        """Revoked (or recovering): what children are still computing is not published; redo it when due.

        The bookkeeping goes back to "not done": Faust redelivers nothing when every offset was committed,
        so an idle worker given the partition back must still hash and snapshot its state.
        """
        self.epoch += 1
        for child in self.children:
            forked.kill(child)  # its collector thread still reaps it
        for task in (self.hashing, self.snapshotting):
            if task is not None:
                task.cancel()
        self.hashing = self.snapshotting = None
        self.last_hashed_offset = -1
        self.snapshot_entries, self.snapshot_at = -1, float("-inf")

    async def _maybe_publish(self, idle: bool) -> None:
        if self.publish is None or not (self.dirty_accounts or self.pool_dirty):
            return
        if not idle and time.monotonic() - self.published_at < self.cadence.publish_every_s:
            return
        state, at = self.ledger.state, self.ledger.clock_us
        rows = [account_row(state.accounts[a], self.next_offset, at) for a in sorted(self.dirty_accounts)
                if a in state.accounts]
        pool = pool_row(state, self.next_offset, at) if self.pool_dirty else None
        self.dirty_accounts, self.pool_dirty = set(), False
        await self.publish(rows, pool)
        self.published_at = time.monotonic()
        self.tables_filled = True

    async def _maybe_tree_head(self, idle: bool) -> None:
        size = self.state.log.size
        if size <= self.last_head_size:
            return
        due = (size - max(self.last_head_size, 0) >= self.cadence.head_every_records
               or idle or time.monotonic() - self.last_head_at >= self.cadence.head_every_s)
        if due:
            await self.producer.send_and_wait(LEDGER_TREE_HEADS, **tree_head_record(self.state, self.signer, self.origin,
                                                                                   self.ledger.clock_us))
            self.last_head_size, self.last_head_at = size, time.monotonic()

    async def _maybe_snapshot(self, idle: bool) -> None:
        c = self.cadence
        entries = self.state.log.size
        if self.snapshotting is not None:
            if not self.snapshotting.done():
                return  # one at a time
            snapshotting, self.snapshotting = self.snapshotting, None
            snapshotting.result()  # a failed send raises here, as an in-process snapshot would
        if not snapshot_due(c, entries - self.snapshot_entries, time.monotonic() - self.snapshot_at, idle):
            return
        self.snapshot_entries, self.snapshot_at = entries, time.monotonic()
        # Pickling, compressing and hashing a large state takes seconds: a forked child does it from the state
        # as of now while the fold goes on; the chunks are sent when its answer is in. The Merkle root is
        # taken here (OpenSSL's SHA-256: not in the child).
        work_args = (self.ledger, self.group_id, self.next_offset, self.state.log.size, self.state.log.root().hex())
        self.snapshotting = self._in_child(forked.snapshot_work, work_args, forked.unpickle,
                                          functools.partial(self._send_snapshot, entries))
        if self.snapshotting is None:
            data, manifest = snapshots.image(self.ledger, self.group_id, self.next_offset)
            await self._store_snapshot(data, manifest, entries, self.snapshot_at, self.epoch)

    async def snapshot_on_stop(self, timeout_s: float = SNAPSHOT_ON_STOP_TIMEOUT_S) -> None:
        """A clean stop (SIGTERM, Ctrl-C) of the active worker: unless a snapshot at exactly the folded offset is
        stored, one more is written, so the next owner (a restart, a standby) starts folding at once instead of
        folding the tail since the last one (in the 10M-entry recovery bench: 500,000 entries, 8 s).

        Only when snapshots are on, and only if the last snapshot took under timeout_s (the image is made in this
        process: pickling cannot be interrupted, so a state too large for the bound is left to the cadence's
        snapshots, as after a kill -9). Never raises: a stop must go on whatever happens to this snapshot.
        """
        c = self.cadence
        self.stopping = True
        if self.ledger is None or not (c.snapshot_every_records or c.snapshot_every_s or c.snapshot_idle_every_s):
            return
        if self.snapshot_took_s > timeout_s:
            log.warning("no snapshot on stop: the last one took %.1f s (bound %.0f s); the next owner folds the tail "
                        "since the newest one", self.snapshot_took_s, timeout_s)
            return
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s), self.lock:
                if self.snapshotting is not None:
                    try:
                        await asyncio.shield(self.snapshotting)  # a snapshot in the making lands first (and counts)
                    except Exception as exc:  # noqa: BLE001 - stopping anyway: the new one below replaces it
                        log.warning("the snapshot in the making failed while stopping: %s", exc)
                if self.snapshot_offset == self.next_offset:
                    return
                entries = self.state.log.size
                self.snapshot_entries, self.snapshot_at = entries, time.monotonic()
                data, manifest = snapshots.image(self.ledger, self.group_id, self.next_offset)
                await self._store_snapshot(data, manifest, entries, started, self.epoch)
        except TimeoutError:
            log.warning("no snapshot on stop: not written within %.0f s; the next owner folds the tail since the "
                        "newest one", timeout_s)
        except Exception as exc:  # noqa: BLE001 - the broker gone first, say: the stop goes on
            log.warning("no snapshot on stop: %s: %s", type(exc).__name__, exc)

    async def _send_snapshot(self, entries: int, image: tuple[bytes, dict[str, Any]] | None, started: float) -> None:
        if image is None:  # logged by the collector; in-process from now on, starting at the next duties
            self.work_in_child = False
            self.snapshot_entries, self.snapshot_at = -1, float("-inf")
            return
        await self._store_snapshot(*image, entries, started, self.epoch)

    async def _store_snapshot(self, data: bytes, manifest: dict[str, Any], entries: int, started: float,
                              epoch: int) -> None:
        await snapshots.send(self.producer, data, manifest)
        offset = manifest["next_sequenced_offset"]
        self.snapshot_took_s = time.monotonic() - started
        if epoch == self.epoch and (self.snapshot_offset is None or offset >= self.snapshot_offset):
            self.snapshot_offset = offset
        log.info("snapshot at offset %d (%d entries, %d bytes in %d chunks) in %.2f s", offset, entries,
                 manifest["size_bytes"], manifest["chunks"], self.snapshot_took_s)
        if epoch != self.epoch or self.stopping:
            return  # revoked while sending, or stopping: a valid snapshot, but the next owner keeps (and prunes) the list
        if not self.snapshots_listed:  # once after a recovery, off its path: every snapshot the topic holds
            stored = await snapshots.read_stored(self.bootstrap, self.group_id, self.auth)
            if epoch != self.epoch or self.stopping:
                return
            known = {m["next_sequenced_offset"]: m for m in self.snapshots_known} | stored.manifests
            known.pop(offset, None)
            self.snapshots_known = sorted(known.values(), key=lambda m: m["next_sequenced_offset"])
            self.snapshots_listed = True
            # Chunks with no manifest below this snapshot: a deletion or a send cut short (a stop's bound, a crash).
            for orphan in sorted(o for o in stored.chunks if o not in stored.manifests and o < offset):
                await snapshots.delete_chunks(self.producer, self.group_id, orphan, stored.chunks[orphan])
        self.snapshots_known.append(manifest)
        self.snapshots_known.sort(key=lambda m: m["next_sequenced_offset"])  # a stop's may be above a later one's
        while len(self.snapshots_known) > self.cadence.snapshot_keep:
            await snapshots.delete(self.producer, self.snapshots_known.pop(0))

    async def _recover(self, first_offset: int) -> None:
        """The state at first_offset: the newest verified snapshot at or below it, then the tail folded."""
        self.abandon_children()
        self.tables_filled = False
        started = time.monotonic()
        # At offset 0 there is nothing to recover: no snapshot can be at or below it but an empty one (and
        # reading the snapshots topic costs a client's start, ~1 s, on a fresh start).
        found, stored = (await snapshots.newest_valid_on_topic(self.bootstrap, self.group_id, self.auth, first_offset)
                         if first_offset > 0 else (None, snapshots.Stored({}, {})))
        loaded_s = time.monotonic() - started
        start, ledger = (found[1]["next_sequenced_offset"], found[0]) if found else (0, None)
        self.recovered_from = start if found else None
        self.ledger = await rebuild(self.bootstrap, first_offset, self.params, self.topic, auth=self.auth,
                                    ledger=ledger, from_offset=start)
        # Only the snapshots near the end of the topic were read: the older ones are listed before the next one
        # is stored (_store_snapshot), so that every snapshot beyond the newest `keep` still gets deleted.
        self.snapshots_known = sorted((m for m in stored.manifests.values()), key=lambda m: m["next_sequenced_offset"])
        self.snapshots_listed = False
        self.snapshot_offset = start if found else None
        self.snapshot_entries, self.snapshot_at = self.state.log.size, time.monotonic()
        self.next_offset = first_offset
        self.last_head_size, self.last_hashed_offset = -1, -1
        # Everything may differ from what this worker last published: publish every account and the pool.
        self.dirty_accounts, self.pool_dirty = set(self.state.accounts), True
        self.recoveries += 1
        took = time.monotonic() - started
        log.info("active: recovered %s, folded %d sequenced records up to %d in %.1f s (snapshot found, read and "
                 "loaded in %.1f s, tail folded in %.1f s)",
                 f"from the snapshot at offset {start}" if found else "from offset 0 (no usable snapshot)",
                 first_offset - start, first_offset, took, loaded_s, took - loaded_s)

    def _checkpoint_record(self) -> dict[str, Any]:
        """The fold's progress at next_offset: counts now, the state hash filled in by the caller (or left empty)."""
        c = self.ledger.counts
        return {
            "event_id": f"checkpoint:{self.group_id}:{self.next_offset}", "occurred_at": self.ledger.clock_us,
            "source": "stockledger",
            "worker_id": self.worker_id, "next_sequenced_offset": self.next_offset, "state_hash": "",
            "applied": dict(c.applied), "duplicates": dict(c.duplicates), "rejected": dict(c.rejected),
            "rejected_by_reason": dict(c.rejected_by_reason),
        }

    async def _send_checkpoint(self, record: dict[str, Any]) -> None:
        await self.producer.send_and_wait(LEDGER_CHECKPOINTS, value=encode("FoldCheckpoint", record), key=self.group_id.encode())
