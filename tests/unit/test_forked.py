"""The checkpoint's state hash and the snapshots from forked children: the state as of the fork, whatever the fold does after."""

from __future__ import annotations

import asyncio
import os
import signal

from ledger.state_hash import state_hash
from schemas.codec import decode
from services.scenario import ScenarioConfig, generate
from streams import forked, snapshots
from streams.step import Entry, Ledger


def _ledger(rows) -> Ledger:
    ledger = Ledger()
    for topic, key, value in rows:
        ledger.step(Entry(topic, key, value), with_outputs=False)
    return ledger


def test_the_child_hashes_the_state_as_of_the_fork_while_the_parent_moves_on():
    rows = list(generate(ScenarioConfig(accounts=60, events=1_500, seed=4)))
    ledger = _ledger(rows[:1_000])
    before = state_hash(ledger.state)
    child = forked.fork_hash(ledger.state)
    for topic, key, value in rows[1_000:]:  # the parent folds on before the child is read
        ledger.step(Entry(topic, key, value), with_outputs=False)
    assert state_hash(ledger.state) != before
    assert forked.collect_hash(child) == before


def test_a_child_that_dies_or_hangs_gives_no_hash_and_is_reaped(monkeypatch):
    ledger = _ledger(list(generate(ScenarioConfig(accounts=20, events=300, seed=4))))
    child = forked.fork_hash(ledger.state)
    os.kill(child.pid, signal.SIGKILL)
    assert forked.collect_hash(child) is None
    hung = forked.fork_hash(ledger.state)
    monkeypatch.setattr(forked.select, "select", lambda *a: ([], [], []))  # never readable: the timeout
    assert forked.collect(hung, timeout_s=0.01) is None
    try:
        os.kill(hung.pid, 0)
        raise AssertionError("the timed-out child is still there")
    except ProcessLookupError:
        pass  # killed and reaped


def test_the_fold_publishes_the_forked_hash_of_its_offset_and_no_checkpoint_overtakes_it():
    from bench.streams.recovery import sourced_entries
    from schemas.codec import encode
    from streams.fold import Cadence, FoldHost
    from tests.unit.test_send_in_batches import _Producer

    entries = sourced_entries(generate(ScenarioConfig(accounts=30, events=600, seed=9)))
    records = [(i, encode("SequencedBatch", {"records": entries[i * 200:(i + 1) * 200]})) for i in range(3)]
    producer = _Producer(capacity=10_000)
    checkpoints: list[dict] = []

    async def send_and_wait(topic, *, value, key):
        checkpoints.append(decode(value)[1])

    producer.send_and_wait = send_and_wait
    host = FoldHost("127.0.0.1:1", "g.fold", "w", producer, auth={}, cadence=Cadence(hash_every_s=3_600))
    host.ledger = Ledger()
    expected = {}

    async def run():
        for record in records:
            landed = await host.fold([record])
            expected.setdefault(host.next_offset, state_hash(host.state))
            await landed
            host.counted_at = 0.0  # a count-only checkpoint would be due at once
        while host.hashing is not None and not host.hashing.done():
            await asyncio.sleep(0.01)

    asyncio.run(run())
    hashed = [c for c in checkpoints if c["state_hash"]]
    assert [c["next_sequenced_offset"] for c in hashed] == [1]  # the first run's duties; busy after that
    assert hashed[0]["state_hash"] == expected[1]
    offsets = [c["next_sequenced_offset"] for c in checkpoints]
    assert offsets == sorted(offsets)  # nothing went out while the child hashed, so no checkpoint goes back


def test_a_failed_child_falls_back_to_hashing_in_the_fold(monkeypatch):
    from bench.streams.recovery import sourced_entries
    from schemas.codec import encode
    from streams.fold import Cadence, FoldHost
    from tests.unit.test_send_in_batches import _Producer

    entries = sourced_entries(generate(ScenarioConfig(accounts=20, events=300, seed=9)))
    producer = _Producer(capacity=10_000)
    checkpoints: list[dict] = []

    async def send_and_wait(topic, *, value, key):
        checkpoints.append(decode(value)[1])

    producer.send_and_wait = send_and_wait
    monkeypatch.setattr(forked, "collect_hash", lambda child: (os.waitpid(child.pid, 0), None)[1])
    host = FoldHost("127.0.0.1:1", "g.fold", "w", producer, auth={}, cadence=Cadence(hash_every_s=3_600))
    host.ledger = Ledger()

    async def run():
        await (await host.fold([(0, encode("SequencedBatch", {"records": entries}))]))
        while not host.hashing.done():
            await asyncio.sleep(0.01)
        assert not host.work_in_child and not [c for c in checkpoints if c["state_hash"]]
        await host._duties(idle=True)  # the next duties hash in-process

    asyncio.run(run())
    hashed = [c for c in checkpoints if c["state_hash"]]
    assert len(hashed) == 1 and hashed[0]["state_hash"] == state_hash(host.state)


def test_a_snapshot_made_in_a_child_loads_to_the_state_as_of_the_fork():
    rows = list(generate(ScenarioConfig(accounts=60, events=1_500, seed=4)))
    ledger = _ledger(rows[:1_000])
    before = state_hash(ledger.state)
    child = forked.fork_call(forked.snapshot_work, ledger, "g.fold", 17)
    for topic, key, value in rows[1_000:]:
        ledger.step(Entry(topic, key, value), with_outputs=False)
    data, manifest = forked.collect_snapshot(child)
    assert manifest["next_sequenced_offset"] == 17 and manifest["state_hash"] == before
    assert state_hash(snapshots.load(data, manifest).state) == before  # digest, log root and state hash verified


def test_the_fold_sends_a_snapshot_made_in_a_child_and_keeps_the_newest():
    from bench.streams.recovery import sourced_entries
    from schemas.codec import encode
    from streams.fold import Cadence, FoldHost
    from tests.unit.test_send_in_batches import _Producer

    entries = sourced_entries(generate(ScenarioConfig(accounts=30, events=600, seed=9)))
    records = [(i, encode("SequencedBatch", {"records": entries[i * 200:(i + 1) * 200]})) for i in range(3)]
    producer = _Producer(capacity=10_000)
    sent: list[tuple[bytes, bytes | None]] = []

    async def send(topic, *, value, key):
        sent.append((key, value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def send_and_wait(topic, *, value, key):
        sent.append((key, value))

    producer.send, producer.send_and_wait = send, send_and_wait
    host = FoldHost("127.0.0.1:1", "g.fold", "w", producer, auth={},
                    cadence=Cadence(hash_every_s=3_600, snapshot_every_records=200, snapshot_keep=2))
    host.ledger = Ledger()
    states = {}

    async def run():
        for record in records:
            await (await host.fold([record]))
            states[host.next_offset] = state_hash(host.state)
            while host.snapshotting is not None and not host.snapshotting.done():
                await asyncio.sleep(0.01)

    asyncio.run(run())
    manifests = {decode(v)[1]["next_sequenced_offset"]: decode(v)[1] for k, v in sent
                 if v is not None and k.endswith(b"/manifest")}
    assert sorted(manifests) == [1, 2, 3]
    assert all(manifests[o]["state_hash"] == states[o] for o in manifests)
    assert [m["next_sequenced_offset"] for m in host.snapshots_known] == [2, 3]  # the oldest was deleted
    assert (b"g.fold/00000000000000000001/manifest", None) in sent  # its tombstone
