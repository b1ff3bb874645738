"""The checkpoint's state hash and the snapshots from forked children: the state as of the fork, whatever the fold does after."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from bench.streams.recovery import sourced_entries
from ledger.state_hash import state_hash
from schemas.codec import decode, encode
from services.scenario import ScenarioConfig, generate
from streams import forked, snapshots
from streams.fold import Cadence, FoldHost
from streams.step import Entry, Ledger
from tests.unit.test_send_in_batches import _Producer


def _ledger(rows) -> Ledger:
    ledger = Ledger()
    for topic, key, value in rows:
        ledger.step(Entry(topic, key, value), with_outputs=False)
    return ledger


def _gone(pid: int) -> bool:
    """Reaped (not a zombie): waitpid has nothing left to wait for."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def _records(n: int, per: int, seed: int = 9) -> list[tuple[int, bytes]]:
    entries = sourced_entries(generate(ScenarioConfig(accounts=30, events=n * per, seed=seed)))
    return [(i, encode("SequencedBatch", {"records": entries[i * per:(i + 1) * per]})) for i in range(n)]


def _host(cadence: Cadence) -> tuple[FoldHost, list[tuple[bytes, bytes | None]], list[dict]]:
    """A host on a fake producer: every record sent (key, value), and the checkpoints decoded."""
    producer = _Producer(capacity=100_000)
    sent: list[tuple[bytes, bytes | None]] = []
    checkpoints: list[dict] = []

    async def send(topic, *, value, key):
        sent.append((key, value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def send_and_wait(topic, *, value, key):
        sent.append((key, value))
        if topic == "ledger.checkpoints":
            checkpoints.append(decode(value)[1])

    producer.send, producer.send_and_wait = send, send_and_wait
    host = FoldHost("127.0.0.1:1", "g.fold", "w", producer, auth={}, cadence=cadence)
    host.ledger = Ledger()
    return host, sent, checkpoints


async def _settled(host: FoldHost) -> None:
    while any(t is not None and not t.done() for t in (host.hashing, host.snapshotting)):
        await asyncio.sleep(0.01)


def test_the_child_hashes_the_state_as_of_the_fork_while_the_parent_moves_on():
    rows = list(generate(ScenarioConfig(accounts=60, events=1_500, seed=4)))
    ledger = _ledger(rows[:1_000])
    before = state_hash(ledger.state)
    child = forked.fork_call(forked.hash_work, ledger.state)
    for topic, key, value in rows[1_000:]:  # the parent folds on before the child is read
        ledger.step(Entry(topic, key, value), with_outputs=False)
    assert state_hash(ledger.state) != before
    assert forked.collect(child) == before.encode()
    assert _gone(child.pid)


def test_a_child_that_dies_or_hangs_gives_no_answer_and_is_reaped(monkeypatch):
    ledger = _ledger(list(generate(ScenarioConfig(accounts=20, events=300, seed=4))))
    child = forked.fork_call(forked.hash_work, ledger.state)
    os.kill(child.pid, signal.SIGKILL)
    assert forked.collect(child) is None and _gone(child.pid)
    hung = forked.fork_call(forked.hash_work, ledger.state)

    class NeverReadable:
        def register(self, fd, events):
            pass

        def poll(self, timeout_ms):
            return []

    monkeypatch.setattr(forked.select, "poll", NeverReadable)  # the timeout path
    assert forked.collect(hung, timeout_s=0.01) is None and _gone(hung.pid)


def test_a_failed_fork_is_no_crash_and_leaks_no_descriptor(monkeypatch):
    def no_fork():
        raise OSError(12, "Cannot allocate memory")

    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(forked.os, "fork", no_fork)
    assert forked.fork_call(forked.hash_work, _ledger([]).state) is None
    assert len(os.listdir("/proc/self/fd")) == before


def test_the_fold_falls_back_in_process_when_the_fork_fails(monkeypatch):
    host, _, checkpoints = _host(Cadence(hash_every_s=3_600))
    monkeypatch.setattr(forked, "fork_call", lambda *a: None)
    asyncio.run(host.fold(_records(1, 100)))
    assert not host.work_in_child
    assert [c["state_hash"] for c in checkpoints if c["state_hash"]] == [state_hash(host.state)]


def test_no_checkpoint_goes_out_while_one_waits_for_its_hash():
    """Count checkpoints are due after every run; the first run's hash is held back until three runs later."""
    host, _, checkpoints = _host(Cadence(hash_every_s=3_600))
    release = threading.Event()
    real_collect = forked.collect

    def slow_collect(child, timeout_s=forked.CHILD_TIMEOUT_S):
        release.wait(30)
        return real_collect(child, timeout_s)

    states: dict[int, str] = {}

    async def run():
        forked_collect, forked.collect = forked.collect, slow_collect
        try:
            for record in _records(3, 100):
                await (await host.fold([record]))
                states[host.next_offset] = state_hash(host.state)
                host.counted_at = 0.0  # a count checkpoint is due at the next duties
            assert not [c for c in checkpoints if c["next_sequenced_offset"] > 1]  # held back
            release.set()
            await _settled(host)
            await host._duties(idle=False)  # now the count checkpoint at offset 3 goes out
        finally:
            forked.collect = forked_collect

    asyncio.run(run())
    offsets = [c["next_sequenced_offset"] for c in checkpoints]
    assert offsets == sorted(offsets) and offsets[-1] == 3
    hashed = [c for c in checkpoints if c["state_hash"]]
    assert [(c["next_sequenced_offset"], c["state_hash"]) for c in hashed] == [(1, states[1])]


def test_a_failed_child_falls_back_to_hashing_in_the_fold(monkeypatch):
    host, _, checkpoints = _host(Cadence(hash_every_s=3_600))

    def broken(state):
        raise MemoryError("in the child")  # it exits 1 with no answer (and its traceback on stderr)

    monkeypatch.setattr(forked, "hash_work", broken)

    async def run():
        await (await host.fold(_records(1, 100)))
        await _settled(host)
        assert not host.work_in_child and not [c for c in checkpoints if c["state_hash"]]
        await host._duties(idle=True)  # the next duties hash in-process

    asyncio.run(run())
    hashed = [c for c in checkpoints if c["state_hash"]]
    assert len(hashed) == 1 and hashed[0]["state_hash"] == state_hash(host.state)


def test_a_revocation_drops_the_children_s_answers_reaps_them_and_redoes_the_work_when_idle():
    cadence = Cadence(hash_every_s=3_600, snapshot_every_records=100, snapshot_idle_every_s=0.001)
    host, sent, checkpoints = _host(cadence)
    release = threading.Event()
    real_collect = forked.collect

    def held_collect(child, timeout_s=forked.CHILD_TIMEOUT_S):
        release.wait(30)  # neither answer is read before the revocation
        return real_collect(child, timeout_s)

    async def run():
        forked.collect = held_collect
        try:
            await (await host.fold(_records(1, 100)))  # forks a snapshot child and a hash child
            children = list(host.children)
            assert len(children) == 2
            host.abandon_children()  # revoked before either answered
            release.set()
            await asyncio.sleep(0.5)
        finally:
            forked.collect = real_collect
        assert all(_gone(c.pid) for c in children)
        assert not checkpoints and not [k for k, _ in sent if k.endswith(b"/manifest")]
        # The partition comes back with every offset committed: no record is redelivered, only idle duties.
        await host._duties(idle=True)
        await _settled(host)

    asyncio.run(run())
    assert [c["next_sequenced_offset"] for c in checkpoints if c["state_hash"]] == [1]
    assert [k for k, _ in sent if k.endswith(b"/manifest")] == [b"g.fold/00000000000000000001/manifest"]


def test_a_snapshot_made_in_a_child_loads_to_the_state_as_of_the_fork():
    rows = list(generate(ScenarioConfig(accounts=60, events=1_500, seed=4)))
    ledger = _ledger(rows[:1_000])
    before, head = state_hash(ledger.state), (ledger.state.log.size, ledger.state.log.root().hex())
    child = forked.fork_call(forked.snapshot_work, ledger, "g.fold", 17, *head)
    for topic, key, value in rows[1_000:]:
        ledger.step(Entry(topic, key, value), with_outputs=False)
    data, manifest = forked.unpickle(forked.collect(child))
    assert manifest["next_sequenced_offset"] == 17 and manifest["state_hash"] == before
    assert state_hash(snapshots.load(data, manifest).state) == before  # digest, log root and state hash verified


@pytest.mark.parametrize("in_child", [True, False])
def test_the_fold_sends_its_snapshots_and_keeps_the_newest(in_child):
    host, sent, _ = _host(Cadence(hash_every_s=3_600, snapshot_every_records=200, snapshot_keep=2,
                                  work_in_child=in_child))
    states = {}

    async def run():
        for record in _records(3, 200):
            await (await host.fold([record]))
            states[host.next_offset] = state_hash(host.state)
            await _settled(host)

    asyncio.run(run())
    manifests = {decode(v)[1]["next_sequenced_offset"]: decode(v)[1] for k, v in sent
                 if v is not None and k.endswith(b"/manifest")}
    assert sorted(manifests) == [1, 2, 3]
    assert all(manifests[o]["state_hash"] == states[o] for o in manifests)
    assert [m["next_sequenced_offset"] for m in host.snapshots_known] == [2, 3]  # the oldest was deleted
    assert (b"g.fold/00000000000000000001/manifest", None) in sent  # its tombstone


def test_after_a_recovery_that_read_the_tail_the_next_snapshot_lists_the_topic_and_deletes_the_rest(monkeypatch):
    """Recovery reads only the end of the snapshots topic: the snapshots before it must still be deleted, or the
    topic would keep every snapshot ever written."""
    import streams.fold as fold_module

    host, sent, _ = _host(Cadence(hash_every_s=3_600, snapshot_every_records=200, snapshot_keep=2, work_in_child=False))
    # older than anything this host folds (it starts at offset 0): the negative offsets keep the order realistic
    unseen = {o: {"group": "g.fold", "next_sequenced_offset": o, "chunks": 2} for o in (-300, -200, -100)}
    listings = []

    async def read_stored(bootstrap, group, auth):
        listings.append(group)
        return snapshots.Stored(dict(unseen), {-400: {0: b"x", 2: b"y"}})  # -400: chunks whose manifest is gone

    monkeypatch.setattr(fold_module.snapshots, "read_stored", read_stored)
    host.snapshots_known, host.snapshots_listed = [unseen[-100]], False  # what a tail-only recovery saw

    async def run():
        for record in _records(2, 200):
            await (await host.fold([record]))
            await _settled(host)

    asyncio.run(run())
    assert listings == ["g.fold"]  # listed once, at the first snapshot after the recovery
    deleted = {k for k, v in sent if v is None}
    for offset in (-300, -200, -100):
        assert f"g.fold/{offset:020d}/manifest".encode() in deleted and f"g.fold/{offset:020d}/000001".encode() in deleted
    assert [m["next_sequenced_offset"] for m in host.snapshots_known] == [1, 2]
    assert {f"g.fold/{-400:020d}/000000".encode(), f"g.fold/{-400:020d}/000002".encode()} <= deleted  # orphans too


def test_a_clean_stop_snapshots_the_state_as_of_the_last_folded_record_once():
    """The next owner then starts folding at once instead of folding the tail since the cadence's last snapshot."""
    host, sent, _ = _host(Cadence(hash_every_s=3_600, snapshot_every_records=1_000_000, work_in_child=False))
    off, off_sent, _ = _host(Cadence(hash_every_s=3_600, work_in_child=False))  # snapshots off: nothing on stop either

    async def run():
        for h in (host, off):
            for record in _records(2, 150):
                await (await h.fold([record]))
            await h.snapshot_on_stop()
        await host.snapshot_on_stop()  # nothing folded since: no second one

    asyncio.run(run())
    manifests = [decode(v)[1] for k, v in sent if v is not None and k.endswith(b"/manifest")]
    assert [(m["next_sequenced_offset"], m["state_hash"]) for m in manifests] == [(2, state_hash(host.state))]
    assert not [k for k, v in off_sent if k.endswith(b"/manifest")]


def test_a_stop_after_a_recovery_with_a_tail_snapshots_and_a_slow_last_snapshot_skips_it():
    host, sent, _ = _host(Cadence(hash_every_s=3_600, snapshot_every_records=1_000_000, work_in_child=False))

    async def run():
        for record in _records(2, 150):
            await (await host.fold([record]))
        host.snapshot_offset = 1  # recovered from a snapshot at 1 and folded the tail: the stop must write one
        await host.snapshot_on_stop()
        slow, slow_sent, _ = _host(Cadence(hash_every_s=3_600, snapshot_every_records=1_000_000, work_in_child=False))
        for record in _records(1, 150):
            await (await slow.fold([record]))
        slow.snapshot_took_s = 60.0  # its last snapshot took a minute: pickling now would hold the stop up
        await slow.snapshot_on_stop(timeout_s=5.0)
        return slow_sent

    slow_sent = asyncio.run(run())
    assert [decode(v)[1]["next_sequenced_offset"] for k, v in sent if v is not None and k.endswith(b"/manifest")] == [2]
    assert not [k for k, _ in slow_sent if k.endswith(b"/manifest")]


def test_a_killed_parent_takes_its_child_along():
    """PR_SET_PDEATHSIG: a child whose parent was killed -9 does not live on (an orphan would hold memory)."""
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:  # a stand-in worker: forks a child that would sleep a minute, reports its pid, waits
        os.close(r)
        child = forked.fork_call(lambda: (time.sleep(60), b"")[1])
        os.write(w, str(child.pid).encode())
        time.sleep(60)
        os._exit(0)
    os.close(w)
    grandchild = int(os.read(r, 32))
    os.close(r)
    os.kill(middle, signal.SIGKILL)
    os.waitpid(middle, 0)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(grandchild, signal.SIGKILL)
    raise AssertionError("the child outlived its killed parent")


def _idle_recovery_setup(monkeypatch, records):
    """A host whose lookups of the committed offset and whose recovery read from `records`, not Kafka."""
    import streams.fold as fold_module

    lookups: list[int] = []
    committed_now = {"offset": 0}

    async def committed(bootstrap, group_id, topic, auth):
        assert group_id == "g.fold"
        lookups.append(committed_now["offset"])
        return committed_now["offset"]

    async def no_snapshots(*args, **kwargs):
        return None, snapshots.Stored({}, {})

    async def rebuild(bootstrap, until_offset, params=None, topic="", *, auth, ledger=None, from_offset=0):
        ledger = Ledger()
        for offset, value in records[:until_offset]:
            fold_module.fold_sequenced(ledger, offset, offset, value, with_outputs=False)
        return ledger

    monkeypatch.setattr(fold_module, "committed_offset", committed)
    monkeypatch.setattr(fold_module.snapshots, "newest_valid_on_topic", no_snapshots)
    monkeypatch.setattr(fold_module, "rebuild", rebuild)
    host, _, checkpoints = _host(Cadence(idle_s=0.0, work_in_child=False))
    host.ledger = None
    return host, checkpoints, lookups, committed_now


def _hash_at(records, n: int) -> str:
    import streams.fold as fold_module

    ledger = Ledger()
    for offset, value in records[:n]:
        fold_module.fold_sequenced(ledger, offset, offset, value, with_outputs=False)
    return state_hash(ledger.state)


def test_an_active_worker_that_was_delivered_nothing_recovers_when_idle_and_hashes(monkeypatch):
    """A failover onto a caught-up log: no record ever comes, yet the checkpoint gets the state's hash."""
    records = _records(3, 100)
    host, checkpoints, lookups, committed_now = _idle_recovery_setup(monkeypatch, records)

    async def run():
        await host.idle(active=False)  # a standby never looks
        assert lookups == [] and host.ledger is None
        host.activated()
        await host.idle(active=True)  # nothing committed yet: no state, and no second look this assignment
        await host.idle(active=True)
        assert lookups == [0] and host.ledger is None
        host.revoked()
        committed_now["offset"] = 3
        host.activated()  # the next assignment looks again
        await host.idle(active=True)

    asyncio.run(run())
    assert lookups == [0, 3]
    assert host.next_offset == 3 and host.recoveries == 1
    assert [(c["next_sequenced_offset"], c["state_hash"]) for c in checkpoints] == [(3, _hash_at(records, 3))]


def test_a_worker_active_again_with_old_state_catches_up_to_the_group_before_it_hashes(monkeypatch):
    """It folded to 1 and lost the partition; another folded to 3; given it back on a caught-up log, it
    must hash the state at 3, not the stale one at 1."""
    records = _records(3, 100)
    host, checkpoints, lookups, committed_now = _idle_recovery_setup(monkeypatch, records)

    before: list[dict] = []

    async def run():
        await (await host.fold([records[0]]))
        host.revoked()
        before.extend(checkpoints)
        committed_now["offset"] = 3
        host.activated()
        await host.idle(active=True)

    asyncio.run(run())
    assert lookups == [3] and host.next_offset == 3
    after = [(c["next_sequenced_offset"], c["state_hash"]) for c in checkpoints[len(before):]]
    assert after == [(3, _hash_at(records, 3))]


def test_a_revocation_during_the_lookup_publishes_nothing(monkeypatch):
    records = _records(3, 100)
    host, checkpoints, lookups, committed_now = _idle_recovery_setup(monkeypatch, records)
    import streams.fold as fold_module

    async def revoked_meanwhile(bootstrap, group_id, topic, auth):
        host.revoked()  # the rebalance lands while the lookup waits on the broker
        return 3

    monkeypatch.setattr(fold_module, "committed_offset", revoked_meanwhile)

    async def run():
        host.activated()
        await host.idle(active=True)

    asyncio.run(run())
    assert host.ledger is None and host.recoveries == 0 and checkpoints == []


def test_a_run_being_folded_is_never_quiet_time_for_the_idle_timers():
    """The idle timer's full collection (and the idle duties) ask host.quiet(): while a long run folds, yielding to
    the loop every few entries, the answer must be no, however long ago the last run ended (it was yes, and the
    worker ran a ~0.2 s full collection every 10 s of a catch-up)."""
    host, _, _ = _host(Cadence(idle_s=0.0))
    records = _records(2, 200)
    seen: list[bool] = []

    async def main() -> None:
        folding = asyncio.ensure_future(host.fold(records))
        await asyncio.sleep(0)  # the fold starts (takes its lock) and yields at its first entries
        while not folding.done():
            seen.append(host.quiet())
            await asyncio.sleep(0)
        await (await folding)
        seen.append(host.quiet())

    asyncio.run(main())
    assert len(seen) > 10 and not any(seen[:-1]) and seen[-1] is True


def test_the_tables_count_as_filled_only_once_a_recovery_has_published_its_rows():
    """The views answer 503 (not 404) for a missing row until the fold has republished every row after its
    recovery: the active worker does not restore the tables from their changelogs."""
    host, _, _ = _host(Cadence(idle_s=0.0))
    host.ledger = None  # a worker that has folded nothing yet: the first run recovers (to offset 0)
    filled_when_published: list[bool] = []

    async def publish(accounts, pool):
        filled_when_published.append(host.tables_filled)

    host.publish = publish

    async def main() -> None:
        await (await host.fold(_records(2, 100)))

    assert host.tables_filled is False
    asyncio.run(main())
    assert filled_when_published == [False] and host.tables_filled is True
    asyncio.run(host._recover(0))  # a later recovery (another assignment): not filled until it has published
    assert host.tables_filled is False


def test_the_childs_answer_pipe_holds_a_mebibyte_so_a_snapshot_is_read_in_a_few_pieces():
    import fcntl

    child = forked.fork_call(lambda: b"answer")
    try:
        assert fcntl.fcntl(child.read_fd, fcntl.F_GETPIPE_SZ) >= forked.PIPE_BYTES
    finally:
        assert forked.collect(child) == b"answer"
