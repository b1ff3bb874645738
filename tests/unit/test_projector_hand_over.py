"""The hand-over of undecoded PostingBatch records to the projector's writer process (services.projector.HandOver):
whatever share goes over, the file holds what an in-process writer that decodes everything stores, with the same
duplicate and error counts; the share follows the writer's backlog; the store checkpoints between commits."""

from __future__ import annotations

import duckdb
import pytest

import services.projector as projector
from services.projector import BatchWriter, HandOver, LedgerStore, PreparedBatch, WriteOutcome, merge_handed
from services.projector_process import WriterProcess
from tests.unit.test_projector_legs import posting_batch, records
from tests.unit.test_projector_process import RemoteState, contents

BROKEN = posting_batch(90)[:-3]  # a PostingBatch header with a truncated body: an error row, never a crash


def batches() -> list[list]:
    """Three batches: new records, re-emissions of stored ones and repeats inside one batch, a broken record."""
    return [records([posting_batch(1), posting_batch(2, ("carol",)), posting_batch(3, ("dave", "erin"))], 0),
            records([posting_batch(4), posting_batch(1), posting_batch(5, ("frank",)), posting_batch(4),
                     BROKEN, posting_batch(6, ("alice", "carol"), amount=9)], 3),
            records([posting_batch(7, ("gina",)), posting_batch(2, ("carol",)), posting_batch(7, ("gina",))], 9)]


def counts(result) -> tuple[int, int, int, dict[str, int]]:
    return result.records, result.duplicates, result.errors, result.inserted


@pytest.mark.parametrize("hand_over", [1, 2, 3, 6])
def test_what_the_writer_decodes_is_stored_as_if_the_consumer_had(tmp_path, hand_over):
    con = duckdb.connect(str(tmp_path / "local.duckdb"))
    local = BatchWriter(con)
    expected = [counts(local.write(batch)) for batch in batches()]
    con.close()
    store = WriterProcess(tmp_path / "remote.duckdb")
    try:
        remote = BatchWriter(store=store)
        got = []
        for batch in batches():
            prepared = remote.prepare(batch, hand_over)
            assert prepared.handed == min(hand_over, len(batch))  # every record here has the PostingBatch header
            remote.send(prepared)
            got.append(counts(remote.commit(prepared)))
            assert remote.last_outcome.handed == prepared.handed
    finally:
        store.close()
    assert got == expected
    assert expected[1][1:3] == (2, 1) and expected[2][1] == 2  # the batches do hold repeats and an error
    assert contents(tmp_path / "remote.duckdb") == contents(tmp_path / "local.duckdb")


def test_an_in_process_store_never_hands_over():
    writer = BatchWriter(duckdb.connect())
    prepared = writer.prepare(batches()[0], hand_over=3)
    assert prepared.handed == 0 and "posting_raw" not in prepared.tables


def test_a_batch_repeated_across_the_two_parts_keeps_its_first_row_and_its_own_legs():
    buffer_local, buffer_handed = projector.RowBuffer(), projector.RowBuffer()
    # handed over: offsets 0-2; decoded by the consumer: offsets 3-5, where post:1 and post:3 come again
    for buf, ids, first in ((buffer_handed, (1, 2, 3), 0), (buffer_local, (1, 4, 3), 3)):
        for k, i in enumerate(ids):
            buf.add_posting_values(projector.read_posting_batch(posting_batch(i, ("a",) * i)), 0, "t", 0, first + k)
    merged, dropped = merge_handed(buffer_local.tables(assembled=False), buffer_handed.tables(assembled=False))
    assert dropped == 2
    postings = projector.assemble_postings(merged["posting_batches"], merged["posting_legs"])
    assert merged["posting_batches"].column("event_id").to_pylist() == ["post:1", "post:2", "post:3", "post:4"]
    assert merged["posting_batches"].column("offset").to_pylist() == [0, 1, 2, 4]
    # each batch keeps exactly its own postings (post:i has i legs), in order
    assert postings.column("event_id").to_pylist() == ["post:1"] + ["post:2"] * 2 + ["post:3"] * 3 + ["post:4"] * 4
    assert postings.column("leg").to_pylist() == [0, 0, 1, 0, 1, 2, 0, 1, 2, 3]
    assert postings.column("offset").to_pylist() == [0, 1, 1, 2, 2, 2, 4, 4, 4, 4]


def outcome(handed: int, decode_s: float) -> WriteOutcome:
    return WriteOutcome({}, {}, 0, 0, handed, decode_s, 0.0)


def in_flight(records: int, handed: int, sent_at: float) -> PreparedBatch:
    batch = PreparedBatch({}, {("t", 0): 1}, 0, projector.BatchResult(records=records), 0, handed)
    batch.sent_at = sent_at
    return batch


def test_the_share_handed_over_follows_the_writers_backlog():
    rule = HandOver()
    assert rule.count(1_000, None, 0.0) == 250  # nothing measured yet: a quarter of the first batch
    assert rule.count(1_000, in_flight(1_000, 250, 0.0), 0.0) == 0  # the second is decoded here, to measure it
    rule.prepared(1.0, 1_000)  # the consumer: 1 ms per record
    rule.committed(outcome(1_000, 1.0), commit_s=2.0, records=1_000)  # the writer: decode 1 ms, write 1 ms per record
    # Writer idle: everything would go over; the share moves half-way there from the last one (0).
    assert rule.count(1_000, None, 10.0) == 500
    assert rule.count(1_000, None, 10.0) == 750
    # A writer with 0.9 s of work left: the consumer keeps 900 records (0.9 s), the share moves half-way to 0.1.
    busy = in_flight(records=1_000, handed=0, sent_at=10.0)  # expected to take 1.0 s
    assert abs(rule.count(1_000, busy, now=10.1) - 1_000 * (0.75 + 0.1) / 2) <= 1  # float seconds: +-1 record
    # A writer that will not be done before the consumer has decoded the whole batch: nothing wanted.
    rule.share = 0.0
    assert rule.count(1_000, in_flight(records=3_000, handed=0, sent_at=10.0), now=10.0) == 0


def test_the_store_checkpoints_between_commits_once_the_wal_passes_its_size(tmp_path, monkeypatch):
    con = duckdb.connect(str(tmp_path / "p.duckdb"))
    store = LedgerStore(con)
    writer = BatchWriter(store=store)
    wal = tmp_path / "p.duckdb.wal"
    writer.write(batches()[0])
    assert wal.exists() and wal.stat().st_size > 0  # under CHECKPOINT_WAL_MB: left for later
    monkeypatch.setattr(projector, "CHECKPOINT_WAL_MB", 0)
    writer.write(batches()[1])  # an in-process store checkpoints right after the commit
    assert not wal.exists() or wal.stat().st_size == 0
    assert store.maintain() is False  # nothing left to checkpoint
    assert LedgerStore(duckdb.connect()).maintain() is False  # in memory: no WAL
    con.close()


def test_of_a_batch_in_both_parts_the_row_with_the_lower_offset_is_kept_whichever_part_holds_it():
    # A consumer-decoded record can precede a handed one (a PostingBatch of another schema version is never
    # handed over): the lower offset wins, as when one consumer decodes the whole batch.
    buffer_local, buffer_handed = projector.RowBuffer(), projector.RowBuffer()
    for buf, ids, first in ((buffer_handed, (1, 2), 5), (buffer_local, (2, 3), 0)):
        for k, i in enumerate(ids):
            buf.add_posting_values(projector.read_posting_batch(posting_batch(i, ("a",) * i)), 0, "t", 0, first + k)
    merged, dropped = merge_handed(buffer_local.tables(assembled=False), buffer_handed.tables(assembled=False))
    batches = merged["posting_batches"]
    assert dropped == 1
    assert sorted(zip(batches.column("event_id").to_pylist(), batches.column("offset").to_pylist(), strict=True)) == \
        [("post:1", 5), ("post:2", 0), ("post:3", 1)]
    postings = projector.assemble_postings(batches, merged["posting_legs"])
    assert sorted(zip(postings.column("event_id").to_pylist(), postings.column("offset").to_pylist(), strict=True)) == \
        [("post:1", 5), ("post:2", 0), ("post:2", 0), ("post:3", 1), ("post:3", 1), ("post:3", 1)]


def test_nothing_is_counted_as_handed_over_when_the_reader_knows_no_posting_layout(monkeypatch):
    monkeypatch.setattr(projector, "POSTING_HEADER", b"")  # the catalog's PostingBatch is a version the reader lacks
    prepared = BatchWriter(store=RemoteState()).prepare(batches()[0], hand_over=3)
    assert prepared.handed == 0 and "posting_raw" not in prepared.tables
    assert prepared.tables["posting_batches"].num_rows == 3


def test_a_batch_with_nothing_to_write_leaves_no_timings_for_the_hand_over():
    writer = BatchWriter(duckdb.connect())
    writer.write(batches()[0])
    assert writer.last_outcome is not None
    writer.write(batches()[0])  # the same offsets again: every record skipped, nothing written
    assert writer.last_outcome is None
