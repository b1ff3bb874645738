"""Fold snapshots: a restored ledger folds on to the same state; a bad snapshot is never trusted and falls back."""

from __future__ import annotations

import hashlib

import pytest

from ledger.state_hash import state_hash
from services.scenario import ScenarioConfig, generate
from streams import snapshots
from streams.step import Entry, Ledger

GROUP = "test.fold"


def _fold(rows) -> Ledger:
    ledger = Ledger()
    for row in rows:
        ledger.step(Entry(*row), with_outputs=False)
    return ledger


def _stored(*snaps: tuple[int, Ledger]) -> snapshots.Stored:
    stored = snapshots.Stored({}, {})
    for offset, ledger in snaps:
        data = snapshots.dump(ledger)
        manifest = snapshots.manifest_for(GROUP, offset, ledger, data)
        stored.manifests[offset] = manifest
        stored.chunks[offset] = {i: data[i * snapshots.CHUNK_BYTES:(i + 1) * snapshots.CHUNK_BYTES]
                                 for i in range(manifest["chunks"])}
    return stored


@pytest.fixture(scope="module")
def rows():
    return list(generate(ScenarioConfig(accounts=60, events=2_000, seed=8)))


def test_a_restored_snapshot_folds_on_to_the_state_of_a_fold_from_the_start(rows):
    half = len(rows) // 2
    stored = _stored((half, _fold(rows[:half])))
    restored, manifest = snapshots.newest_valid(stored, max_offset=half)
    assert manifest["next_sequenced_offset"] == half
    for row in rows[half:]:
        restored.step(Entry(*row), with_outputs=False)
    whole = _fold(rows)
    assert state_hash(restored.state) == state_hash(whole.state)
    assert restored.state.log.root() == whole.state.log.root()
    assert restored.counts.as_dict() == whole.counts.as_dict() and restored.clock_us == whole.clock_us


def test_a_corrupt_or_incomplete_snapshot_falls_back_to_the_previous_one_then_to_none(rows):
    stored = _stored((300, _fold(rows[:300])), (900, _fold(rows[:900])))
    first_chunk = stored.chunks[900][0]
    stored.chunks[900][0] = first_chunk[:100] + bytes([first_chunk[100] ^ 1]) + first_chunk[101:]
    _, manifest = snapshots.newest_valid(stored, max_offset=10_000)
    assert manifest["next_sequenced_offset"] == 300  # the altered newest one is skipped
    stored.chunks[300].pop(0)
    assert snapshots.newest_valid(stored, max_offset=10_000) is None  # a missing chunk: not trusted either
    stored = _stored((300, _fold(rows[:300])))
    assert snapshots.newest_valid(stored, max_offset=299) is None  # never ahead of the committed offset


def test_a_manifest_whose_state_hash_lies_is_refused(rows):
    stored = _stored((400, _fold(rows[:400])))
    stored.manifests[400] = dict(stored.manifests[400], state_hash="0" * 64)
    with pytest.raises(snapshots.SnapshotError, match="does not hash"):
        snapshots.load(stored.assemble(400), stored.manifests[400])


def test_a_snapshot_from_before_a_state_field_existed_is_refused_not_a_crash(rows):
    """A state pickled by an older version of the rules lacks the slots they have since gained (here the pool's
    USD settlement figures): restoring it must fall back (SnapshotError), not stop the worker with AttributeError."""
    ledger = _fold(rows[:400])
    manifest = snapshots.manifest_for(GROUP, 400, ledger, snapshots.dump(ledger))
    del ledger.state.pool.usd_raised_micro_usd  # as the older code would have pickled it
    data = snapshots.dump(ledger)
    manifest = dict(manifest, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    with pytest.raises(snapshots.SnapshotError, match="cannot be restored"):
        snapshots.load(data, manifest)


def test_tombstones_and_foreign_keys_are_read_as_deletions_and_ignored(rows):
    from schemas.codec import encode

    stored = snapshots.Stored({}, {})
    ledger = _fold(rows[:100])
    data = snapshots.dump(ledger)
    manifest = snapshots.manifest_for(GROUP, 100, ledger, data)
    snapshots._take(stored, GROUP, f"{GROUP}/{100:020d}/manifest".encode(), encode("SnapshotManifest", manifest))
    snapshots._take(stored, "other.fold", f"other.fold/{100:020d}/manifest".encode(), encode("SnapshotManifest", manifest))
    snapshots._take(stored, GROUP, b"garbage", b"\x00\x01")
    assert list(stored.manifests) == [100]
    snapshots._take(stored, GROUP, f"{GROUP}/{100:020d}/manifest".encode(), None)
    assert stored.manifests == {}


def test_replay_from_a_snapshot_file_equals_a_full_replay_and_refuses_another_history(rows, tmp_path):
    import json

    from typer.testing import CliRunner

    from services.archive import write_archive
    from services.cli import app

    archive = tmp_path / "a.avro"
    write_archive(archive, rows, "snap-test")
    half = _fold(rows[: len(rows) // 2])
    data = snapshots.dump(half)
    snap = tmp_path / "s.snapshot"
    snap.write_bytes(data)
    (tmp_path / "s.snapshot.json").write_text(json.dumps(snapshots.manifest_for(GROUP, 7, half, data)))
    runner = CliRunner()
    full = runner.invoke(app, ["replay", str(archive), "--quiet"])
    resumed = runner.invoke(app, ["replay", str(archive), "--quiet", "--from-snapshot", str(snap)])
    assert full.exit_code == resumed.exit_code == 0, resumed.output
    assert full.output.strip() == resumed.output.strip() == state_hash(_fold(rows).state)
    other = tmp_path / "b.avro"
    write_archive(other, rows[1:], "snap-test-b")
    refused = runner.invoke(app, ["replay", str(other), "--quiet", "--from-snapshot", str(snap)])
    assert refused.exit_code == 1 and "not the history of the snapshot" in " ".join(refused.output.split())
    snap.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert runner.invoke(app, ["replay", str(archive), "--quiet", "--from-snapshot", str(snap)]).exit_code == 1


class _ConsumerStandIn:
    """What every aiokafka consumer stand-in here shares: constructed by calling it, started, stopped, assigned."""

    def __call__(self, *args, **kwargs):
        return self

    async def start(self):
        pass

    async def stop(self):
        pass

    def assign(self, tps):
        self.tp = tps[0]


class _SlowPositionConsumer(_ConsumerStandIn):
    """An aiokafka consumer stand-in whose position() never answers (the ~30 s stall seen in recovery)."""

    def __init__(self, records: list[tuple[int, bytes, bytes]], end: int):
        self.records, self.end, self.served = records, end, False

    def seek(self, tp, offset):
        pass

    async def beginning_offsets(self, tps):
        return {tps[0]: 0}

    async def end_offsets(self, tps):
        return {tps[0]: self.end}

    async def getmany(self, tp, timeout_ms, max_records):
        import asyncio
        from types import SimpleNamespace

        if self.served:
            await asyncio.sleep(0)
            return {}
        self.served = True
        return {tp: [SimpleNamespace(offset=o, key=k, value=v) for o, k, v in self.records]}

    async def position(self, tp):
        import asyncio

        if not self.served or self.records and self.records[-1][0] + 1 >= self.end:
            await asyncio.Event().wait()  # blocks: reading must not depend on it while records arrive
        return self.end


@pytest.mark.parametrize("case", ["empty topic", "records up to the end", "tail compacted away"])
def test_reading_the_snapshots_never_waits_on_the_consumer_position(case, rows, monkeypatch):
    import asyncio

    from schemas.codec import encode

    ledger = _fold(rows[:50])
    data = snapshots.dump(ledger)
    manifest = snapshots.manifest_for(GROUP, 7, ledger, data)
    chunk = {"group": GROUP, "next_sequenced_offset": 7, "index": 0, "data": data}
    records = [(0, f"{GROUP}/{7:020d}/000000".encode(), encode("SnapshotChunk", chunk)),
               (1, f"{GROUP}/{7:020d}/manifest".encode(), encode("SnapshotManifest", manifest))]
    fake = {"empty topic": _SlowPositionConsumer([], 0), "records up to the end": _SlowPositionConsumer(records, 2),
            "tail compacted away": _SlowPositionConsumer(records, 5)}[case]
    monkeypatch.setattr(snapshots, "AIOKafkaConsumer", fake)
    stored = asyncio.run(asyncio.wait_for(snapshots.read_stored("unused:9092", GROUP, {}), timeout=10))
    assert sorted(stored.manifests) == ([] if case == "empty topic" else [7])


def test_snapshot_cadence_by_count_age_and_idle_age():
    from streams.fold import Cadence, snapshot_due

    c = Cadence(snapshot_every_records=1_000, snapshot_every_s=300.0, snapshot_idle_every_s=60.0)
    assert not snapshot_due(c, 0, 10_000.0, idle=True)  # nothing new: never, however old
    assert snapshot_due(c, 1_000, 0.0, idle=False)  # the count
    assert not snapshot_due(c, 999, 299.0, idle=False)
    assert snapshot_due(c, 1, 300.0, idle=False)  # the age
    assert not snapshot_due(c, 1, 59.0, idle=True)  # idle, but the last one is too recent
    assert snapshot_due(c, 1, 60.0, idle=True)  # idle and old enough: the demo's and a quiet venue's last state
    assert not snapshot_due(c, 1, 60.0, idle=False)
    off = Cadence(snapshot_idle_every_s=0.0)
    assert not snapshot_due(off, 10**6, 10**6, idle=True)  # every rule off: no snapshots


class _Topic(_ConsumerStandIn):
    """An aiokafka consumer stand-in over an in-memory partition (offset -> key, value; compacted offsets absent)
    that counts the records it serves."""

    def __init__(self, records: dict[int, tuple[bytes, bytes | None]], begin: int = 0):
        self.records, self.begin, self.served = records, begin, 0
        self.end = max(records, default=begin - 1) + 1
        self.at = begin

    def seek(self, tp, offset):
        self.at = offset

    async def beginning_offsets(self, tps):
        return {tps[0]: self.begin}

    async def end_offsets(self, tps):
        return {tps[0]: self.end}

    async def position(self, tp):
        return self.at

    async def getmany(self, tp, timeout_ms, max_records):
        from types import SimpleNamespace

        out = []
        while self.at < self.end and len(out) < max_records:
            if self.at in self.records:
                key, value = self.records[self.at]
                out.append(SimpleNamespace(offset=self.at, key=key, value=value))
            self.at += 1
        self.served += len(out)
        return {tp: out} if out else {}


def _topic(rows, at_offsets: list[int], corrupt: set[int] = frozenset(), chunk_bytes: int = 4_096,
           tombstoned: set[int] = frozenset()) -> _Topic:
    """Snapshots of the fold at these offsets written as the fold writes them (chunks, then the manifest), with
    another group's snapshot between each; corrupt: flip a byte in that snapshot's first chunk; tombstoned: delete
    that snapshot's last chunk afterwards (the fold deletes old snapshots this way)."""
    from schemas.codec import encode

    records: dict[int, tuple[bytes, bytes | None]] = {}
    n = 0

    def put(key: str, value: bytes | None) -> None:
        nonlocal n
        records[n] = (key.encode(), value)
        n += 1

    for offset in at_offsets:
        for group in (GROUP, "other.fold"):
            ledger = _fold(rows[:offset])
            data = snapshots.dump(ledger)
            manifest = snapshots.manifest_for(group, offset, ledger, data) | {"chunks": -(-len(data) // chunk_bytes)}
            for i in range(manifest["chunks"]):
                part = data[i * chunk_bytes:(i + 1) * chunk_bytes]
                if group == GROUP and offset in corrupt and i == 0:
                    part = bytes([part[0] ^ 1]) + part[1:]
                put(f"{group}/{offset:020d}/{i:06d}", encode("SnapshotChunk", {"group": group, "next_sequenced_offset": offset,
                                                                               "index": i, "data": part}))
            put(f"{group}/{offset:020d}/manifest", encode("SnapshotManifest", manifest))
    for offset in tombstoned:
        last = max(k for k, (key, _) in records.items() if key.startswith(f"{GROUP}/{offset:020d}/0".encode()))
        put(records[last][0].decode(), None)
    return _Topic(records)


def test_recovery_reads_the_newest_snapshot_from_the_end_of_the_topic_not_the_whole_topic(rows, monkeypatch):
    import asyncio

    topic = _topic(rows, [100 * k for k in range(1, 13)])
    monkeypatch.setattr(snapshots, "AIOKafkaConsumer", topic)
    found, stored = asyncio.run(snapshots.newest_valid_on_topic("unused:9092", GROUP, {}, max_offset=10_000))
    assert found[1]["next_sequenced_offset"] == 1_200
    assert state_hash(found[0].state) == state_hash(_fold(rows[:1_200]).state)
    # The tail, not every snapshot: the windows double from TAIL_WINDOW_RECORDS until the newest one is whole.
    assert topic.served <= 4 * snapshots.TAIL_WINDOW_RECORDS < len(topic.records) // 2
    whole = snapshots.read_stored  # the full read agrees on which snapshot to use
    topic.at = 0
    assert snapshots.newest_valid(asyncio.run(whole("unused:9092", GROUP, {})), 10_000)[1] == found[1]


@pytest.mark.parametrize("window", [1, 3, 64])
def test_the_window_widens_past_bad_incomplete_and_too_new_snapshots(rows, monkeypatch, window):
    """Whatever the window, the choice is newest_valid's over the whole topic: the newest verified snapshot at
    or below max_offset (a corrupt one and one with a deleted chunk are passed over, chunks before the window
    are read before a snapshot is judged)."""
    import asyncio

    monkeypatch.setattr(snapshots, "TAIL_WINDOW_RECORDS", window)
    offsets = [100 * k for k in range(1, 9)]
    for max_offset, corrupt, tombstoned, expected in [(10_000, {800}, {700}, 600), (650, set(), set(), 600),
                                                        (10_000, set(offsets), set(), None), (99, set(), set(), None)]:
        topic = _topic(rows, offsets, corrupt, tombstoned=tombstoned)
        monkeypatch.setattr(snapshots, "AIOKafkaConsumer", topic)
        found, _ = asyncio.run(snapshots.newest_valid_on_topic("unused:9092", GROUP, {}, max_offset=max_offset))
        assert (found[1]["next_sequenced_offset"] if found else None) == expected, (window, max_offset)
        topic.at = 0
        whole = snapshots.newest_valid(asyncio.run(snapshots.read_stored("unused:9092", GROUP, {})), max_offset)
        assert (whole[1]["next_sequenced_offset"] if whole else None) == expected


def test_a_snapshot_leaves_the_quote_memos_out_and_one_with_an_older_quote_still_restores(rows, monkeypatch):
    """The quote and stressed-theo memos are derived and decide nothing: a snapshot leaves them out, and a restored
    state starts with them empty. A snapshot written while Quote had fewer fields (it gained the three global
    slopes) must restore and fold on to the same state, not fall back to offset 0 with 'missing arguments'."""
    from ledger.quotes import Quote
    from ledger.watch_index import Surveillance

    half = len(rows) // 2
    ledger = _fold(rows[:half])
    assert ledger.state.surveillance.quotes  # the fold quoted series: the memo is not empty
    fresh = snapshots.load(snapshots.dump(ledger), snapshots.manifest_for(GROUP, half, ledger, snapshots.dump(ledger)))
    assert fresh.state.surveillance.quotes == {} and fresh.state.surveillance.stress_theos == {}

    # An older version's snapshot: Surveillance pickled by slot values, memo included, each Quote with 14 fields.
    monkeypatch.setattr(Surveillance, "__getstate__", lambda self: (None, {n: getattr(self, n) for n in self.__slots__ if hasattr(self, n)}))
    monkeypatch.setattr(Quote, "__getnewargs__", lambda self: tuple(self)[:14])
    old = snapshots.dump(ledger)
    monkeypatch.undo()
    restored = snapshots.load(old, snapshots.manifest_for(GROUP, half, ledger, old))
    assert restored.state.surveillance.quotes == {}
    for row in rows[half:]:
        restored.step(Entry(*row), with_outputs=False)
    assert state_hash(restored.state) == state_hash(_fold(rows).state)


def test_surveillance_pickled_before_a_slot_existed_restores_it_at_its_default():
    """A snapshot older than a Surveillance slot carries no value for it: the slot gets __init__'s default (reading
    an unset slot would raise AttributeError in the sweep, a crash on recovery)."""
    from ledger.watch_index import Surveillance

    surv = Surveillance.__new__(Surveillance)
    surv.__setstate__((None, {"pushes": 7, "reference": True}))
    assert surv.pushes == 7 and surv.reference is True
    assert surv.stale_as_of_us == 0 and surv.low == {} and surv.quotes == {} and surv.known_health == {}
