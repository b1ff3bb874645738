"""The fold's outputs go out as whole batches per topic partition, in order, on the partitions send() would pick."""

from __future__ import annotations

import asyncio

import pytest

from streams.fold import send_in_batches


class _Batch:
    def __init__(self, capacity: int):
        self.capacity, self.records = capacity, []

    def append(self, *, key, value, timestamp):
        if len(self.records) == self.capacity:
            return None
        self.records.append((key, value, timestamp))
        return object()


class _Producer:
    """Just what send_in_batches uses of AIOKafkaProducer; partitions by the key's first byte."""

    def __init__(self, capacity: int = 3):
        self.capacity, self.sent, self.metadata_waits = capacity, [], []

        async def wait_on_metadata(topic):
            self.metadata_waits.append(topic)

        self.client = type("Client", (), {"_wait_on_metadata": staticmethod(wait_on_metadata)})()

    def _partition(self, topic, partition, key, value, serialized_key, serialized_value):
        assert partition is None and serialized_key == key
        return key[0] % 2

    def create_batch(self):
        return _Batch(self.capacity)

    async def send_batch(self, batch, topic, *, partition):
        self.sent.append((topic, partition, list(batch.records)))
        future = asyncio.get_running_loop().create_future()
        future.set_result((topic, partition))
        return future


def test_records_keep_their_order_per_partition_and_full_batches_are_split():
    producer = _Producer(capacity=3)
    outputs = [("t", bytes([i % 4]), f"v{i}".encode(), 1_000 + i) for i in range(9)] + [("u", b"\x01", b"w", 7)]

    async def run():
        landed = await send_in_batches(producer, outputs)
        return await landed

    acks = asyncio.run(run())
    assert sorted(set(producer.metadata_waits)) == ["t", "u"]
    # keys 0..3 cycle over nine records: partition 0 gets 5 of them, partition 1 gets 4; "u" one; capacity 3
    sizes = {}
    by_tp: dict[tuple[str, int], list] = {}
    for topic, partition, records in producer.sent:
        sizes.setdefault((topic, partition), []).append(len(records))
        by_tp.setdefault((topic, partition), []).extend(records)
    assert sizes == {("t", 0): [3, 2], ("t", 1): [3, 1], ("u", 1): [1]}
    # every record once, on the partition the producer's partitioner gives its key, in the original order
    for (topic, partition), records in by_tp.items():
        expected = [(k, v, ts) for t, k, v, ts in outputs if t == topic and k[0] % 2 == partition]
        assert records == expected
    assert sum(len(r) for r in by_tp.values()) == len(outputs)
    assert len(acks) == len(producer.sent)


def test_a_record_larger_than_a_batch_is_an_error_not_a_silent_drop():
    producer = _Producer(capacity=0)
    with pytest.raises(ValueError, match="does not fit a batch"):
        asyncio.run(send_in_batches(producer, [("t", b"\x00", b"x" * 10, 1)]))


def test_each_sequenced_record_s_outputs_leave_before_the_next_is_folded(monkeypatch):
    """A run's first outputs must not wait for its last record's fold (a backlog run holds 10,000 entries)."""
    from bench.streams.recovery import sourced_entries
    from schemas.codec import encode
    from services.scenario import ScenarioConfig, generate
    from streams import fold as fold_module
    from streams.fold import Cadence, FoldHost
    from streams.step import Ledger

    entries = sourced_entries(generate(ScenarioConfig(accounts=20, events=300, seed=3)))
    records = [(i, encode("SequencedBatch", {"records": entries[i * 100:(i + 1) * 100]})) for i in range(3)]
    events: list[str] = []
    real_entries = fold_module.sequenced_entries

    def entries_logged(value):
        events.append("fold")
        return real_entries(value)

    producer = _Producer(capacity=10_000)
    real_send = producer.send_batch

    async def send_logged(batch, topic, *, partition):
        events.append("send")
        return await real_send(batch, topic, partition=partition)

    async def send_and_wait(topic, **_):
        events.append(f"checkpoint {topic}")

    producer.send_batch, producer.send_and_wait = send_logged, send_and_wait
    monkeypatch.setattr(fold_module, "sequenced_entries", entries_logged)
    host = FoldHost("127.0.0.1:1", "g.fold", "w", producer, auth={}, cadence=Cadence(hash_every_s=3_600))
    host.ledger = Ledger()
    real_step = host.ledger.step

    def step_logged(entry, **kwargs):
        events.append("step")
        return real_step(entry, **kwargs)

    host.ledger.step = step_logged
    ticks = []

    async def ticker():
        while True:
            ticks.append(host.ledger.state.log.size)
            await asyncio.sleep(0)

    async def run():
        other = asyncio.ensure_future(ticker())
        landed = await host.fold(records)
        other.cancel()
        return await landed

    asyncio.run(run())
    # The fold yielded to the loop within each 100-entry record (every YIELD_EVERY_ENTRIES), not once per record.
    assert len({n for n in ticks if 0 < n < 300}) >= 300 // fold_module.YIELD_EVERY_ENTRIES
    folds = [i for i, e in enumerate(events) if e.startswith("fold")]
    assert len(folds) == 3 and host.next_offset == 3
    bounds = [*folds, len(events)]
    for r in range(1, len(folds)):
        segment = events[bounds[r] + 1:bounds[r + 1]]  # record r's steps, and what ran at its yields
        last_step = max(i for i, e in enumerate(segment) if e == "step")
        # Record r-1's outputs went out while record r was folded (before its last step), not at the end of
        # the run: the sender task ran at one of the fold's yields.
        assert "send" in segment[:last_step], (r, events)
    assert "send" in events[folds[-1] + 1:]


class _Metadata:
    def __init__(self, partitions: int):
        self.partitions = set(range(partitions))

    def partitions_for_topic(self, topic):
        return self.partitions

    def available_partitions_for_topic(self, topic):
        return self.partitions


def test_memoised_partitions_equal_aiokafka_s_own_choice_and_the_memo_stays_bounded(monkeypatch):
    """With the default partitioner the key hashes are memoised: every key must still land where send() puts it."""
    import random

    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    from streams import fold as fold_module

    monkeypatch.setattr(fold_module, "KEY_HASH_MEMO_MAX", 50)
    monkeypatch.setattr(fold_module, "_key_hashes", {})
    rng = random.Random(5)
    keys = [b"", b"acct-000001", b"BTC-C-60000", *(rng.randbytes(rng.randrange(1, 40)) for _ in range(300))]
    for count in (1, 3, 6, 7, 30):
        producer = type("P", (), {})()
        producer._partitioner, producer._metadata = DefaultPartitioner(), _Metadata(count)
        partition_of = fold_module._partitioner(producer, "t")
        for key in keys + keys[:40]:  # the repeats come from the memo
            expected = AIOKafkaProducer._partition(producer, "t", None, key, b"v", key, b"v")
            assert partition_of(key, b"v") == expected
            assert len(fold_module._key_hashes) <= 50


def test_another_partitioner_is_asked_for_every_record():
    producer = _Producer()
    producer._partitioner = lambda key, all_partitions, available: 0  # not aiokafka's default
    from streams.fold import _partitioner

    assert [_partitioner(producer, "t")(bytes([k]), b"v") for k in range(4)] == [0, 1, 0, 1]  # _Producer._partition's
