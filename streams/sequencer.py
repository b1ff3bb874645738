"""The sequencer: merges every input partition by record timestamp into ledger.sequenced, the ledger's total order.

Kafka orders records only within a partition. The ledger's decisions depend on order across keys (a
mark before or after a trade), so one process, the holder of the fold's partition, merges the input
partitions by (timestamp, topic, partition, offset), as Kafka Streams does for a task's partitions.
A partition with nothing buffered blocks the merge until it is caught up (at its end offset) and has
been idle for `idle_ms` (Kafka Streams' max.task.idle.ms), unless the head is already older than the
watermark (wall clock - idle_ms) or no producer has written for idle_ms: a record that arrives later
than that is sequenced where it lands. Input offsets are committed only after the sequenced copies are acknowledged
(at most every commit_every_ms, and on a clean stop); after a crash the re-sent copies carry the same source
offsets and the fold skips them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from schemas.codec import encode
from schemas.topics import INPUT_TOPICS, LEDGER_SEQUENCED
from streams.consumers import stop_soon

log = logging.getLogger("stockledger.sequencer")
BATCH_KEY = b"batch"  # one partition: the key only documents what the record is


def ledger_producer(bootstrap: str, auth: Mapping[str, Any]) -> AIOKafkaProducer:
    """The producer the fold and the sequencer write with: idempotent, acks=all, small linger, 512 KiB batches."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5,
                            max_batch_size=512 * 1024, **auth)


class Sequencer:
    """Merge loop; run() until stop is set. Counts what it sequenced."""

    def __init__(self, bootstrap: str, group_id: str, producer: AIOKafkaProducer, idle_ms: int = 200,
                 input_topics: tuple[str, ...] = INPUT_TOPICS, sequenced_topic: str = LEDGER_SEQUENCED,
                 max_batch: int = 5_000, *, auth: Mapping[str, Any], batch_max_records: int = 500,
                 cycle_ms: int = 10, commit_every_ms: int = 500):
        self.bootstrap = bootstrap
        self.auth = auth  # the ledger principal's client security settings
        self.group_id = group_id
        self.producer = producer
        self.idle_s = idle_ms / 1000
        self.input_topics = input_topics
        self.sequenced_topic = sequenced_topic
        self.max_batch = max_batch
        # Entries per ledger.sequenced record: Faust-era measurements put a Kafka record's cost near 200 us
        # against ~1 us per entry inside a batch, so batching is what lets the transport keep up.
        self.batch_max_records = batch_max_records
        # A merge pass at most every cycle_ms, input offsets committed at most every commit_every_ms (and when
        # stopping): a loop that ran free (its own process, records always arriving) spent ~175 us of CPU per
        # record on passes of a few records each, and its commits and offset queries loaded the broker.
        # Committing less often costs nothing but re-sent copies after a crash, which the fold skips.
        self.cycle_s = cycle_ms / 1000
        self.commit_every_s = commit_every_ms / 1000
        self.sequenced = 0

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", max_partition_fetch_bytes=1 << 20, **self.auth,
        )
        await consumer.start()
        try:
            tps = await self._input_partitions(consumer)
            consumer.assign(tps)
            await self._loop(consumer, tps, stop)
        finally:
            await stop_soon(consumer)  # every batch was acknowledged and the offsets committed in the loop

    async def _input_partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        tps = []
        for topic in self.input_topics:
            for _ in range(100):
                parts = consumer.partitions_for_topic(topic)
                if parts:
                    break
                await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public call
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"topic {topic} does not exist; run `stockledger topics create`")
            tps.extend(TopicPartition(topic, p) for p in sorted(parts))
        return tps

    async def _loop(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], stop: asyncio.Event) -> None:
        buffers: dict[TopicPartition, deque[ConsumerRecord]] = {tp: deque() for tp in tps}
        # Next offset to fetch per partition (committed offset or earliest at start): "caught up" is
        # fetched_to >= end offset, without peeking into the consumer's internals.
        fetched_to = {tp: await consumer.position(tp) for tp in tps}
        empty_since: dict[TopicPartition, float] = {}
        end_offsets: dict[TopicPartition, int] = {}
        ends_checked = 0.0
        quiet_since = time.monotonic()  # last time any input end offset moved
        to_commit: dict[TopicPartition, int] = {}
        committed_at = 0.0
        cycle_at = 0.0
        while not stop.is_set():
            wait_s = cycle_at + self.cycle_s - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            cycle_at = time.monotonic()
            fetched = await consumer.getmany(timeout_ms=20, max_records=self.max_batch)
            now = time.monotonic()
            for tp, records in fetched.items():
                buffers[tp].extend(records)
                if records:
                    fetched_to[tp] = records[-1].offset + 1
            for tp in tps:
                if buffers[tp]:
                    empty_since.pop(tp, None)
                else:
                    empty_since.setdefault(tp, now)
            if now - ends_checked > 0.05 and any(not buffers[tp] for tp in tps):
                latest = await consumer.end_offsets(tps)
                if latest != end_offsets:
                    quiet_since = now
                end_offsets, ends_checked = latest, now
            # No producer has written for idle_ms: nothing can still arrive ahead of what is buffered.
            quiet = now - quiet_since >= self.idle_s
            released: list[tuple[TopicPartition, ConsumerRecord]] = []
            # Watermark: a record stamped at least idle_ms ago (producer's CreateTime, wall clock) cannot
            # be overtaken by one still in flight, so it goes without waiting on idle partitions.
            watermark_ms = int(time.time() * 1000) - int(self.idle_s * 1000)
            while len(released) < self.max_batch:
                heads = [(buf[0].timestamp, tp.topic, tp.partition, buf[0].offset, tp) for tp, buf in buffers.items() if buf]
                if not heads:
                    break
                head = min(heads)
                settled = quiet or head[0] <= watermark_ms
                if not self._can_merge(tps, buffers, empty_since, end_offsets, fetched_to, now, settled):
                    break
                tp = head[4]
                released.append((tp, buffers[tp].popleft()))
            if released:
                await self._append(released)
                for tp, rec in released:
                    to_commit[tp] = rec.offset + 1
                self.sequenced += len(released)
            if to_commit and now - committed_at >= self.commit_every_s:
                await consumer.commit(to_commit)
                to_commit, committed_at = {}, now
        if to_commit:  # a clean stop hands over with nothing to re-send
            await consumer.commit(to_commit)

    def _can_merge(self, tps, buffers, empty_since, end_offsets, fetched_to, now, settled) -> bool:
        """Every partition has a head, or is caught up and either idle long enough or the head is settled.

        Settled: no producer has written for idle_ms, or the head's timestamp is older than the watermark.
        A partition with records not yet fetched always blocks: they may be older than the head.
        """
        for tp in tps:
            if buffers[tp]:
                continue
            caught_up = tp in end_offsets and fetched_to[tp] >= end_offsets[tp]
            if not caught_up or (not settled and now - empty_since.get(tp, now) < self.idle_s):
                return False
        return True

    async def _append(self, released: list[tuple[TopicPartition, ConsumerRecord]]) -> None:
        """Write the released records as SequencedBatch records of at most batch_max_records entries."""
        futures = []
        for start in range(0, len(released), self.batch_max_records):
            chunk = released[start:start + self.batch_max_records]
            value = encode("SequencedBatch", {"records": [{
                "topic": tp.topic, "partition": tp.partition, "offset": rec.offset, "timestamp_ms": rec.timestamp,
                "key": rec.key, "value": rec.value} for tp, rec in chunk]})
            futures.append(await self.producer.send(self.sequenced_topic, value=value, key=BATCH_KEY))
        await asyncio.gather(*futures)
