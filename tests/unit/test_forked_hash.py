"""The checkpoint's state hash from a forked child: the state as of the fork, whatever the fold does after it."""

from __future__ import annotations

import asyncio
import os
import signal

from ledger.state_hash import state_hash
from schemas.codec import decode
from services.scenario import ScenarioConfig, generate
from streams import forked_hash
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
    child = forked_hash.fork_hash(ledger.state)
    for topic, key, value in rows[1_000:]:  # the parent folds on before the child is read
        ledger.step(Entry(topic, key, value), with_outputs=False)
    assert state_hash(ledger.state) != before
    assert forked_hash.collect(child) == before


def test_a_child_that_dies_or_hangs_gives_no_hash_and_is_reaped(monkeypatch):
    ledger = _ledger(list(generate(ScenarioConfig(accounts=20, events=300, seed=4))))
    child = forked_hash.fork_hash(ledger.state)
    os.kill(child.pid, signal.SIGKILL)
    assert forked_hash.collect(child) is None
    hung = forked_hash.fork_hash(ledger.state)
    monkeypatch.setattr(forked_hash.select, "select", lambda *a: ([], [], []))  # never readable: the timeout
    assert forked_hash.collect(hung, timeout_s=0.01) is None
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
    monkeypatch.setattr(forked_hash, "collect", lambda child: (os.waitpid(child.pid, 0), None)[1])
    host = FoldHost("127.0.0.1:1", "g.fold", "w", producer, auth={}, cadence=Cadence(hash_every_s=3_600))
    host.ledger = Ledger()

    async def run():
        await (await host.fold([(0, encode("SequencedBatch", {"records": entries}))]))
        while not host.hashing.done():
            await asyncio.sleep(0.01)
        assert not host.hash_in_child and not [c for c in checkpoints if c["state_hash"]]
        await host._duties(idle=True)  # the next duties hash in-process

    asyncio.run(run())
    hashed = [c for c in checkpoints if c["state_hash"]]
    assert len(hashed) == 1 and hashed[0]["state_hash"] == state_hash(host.state)
