"""The projector's writer process (services.projector_process) stores what an in-process BatchWriter stores, raises a
failed commit in the consumer's process and takes the batch again from the stored offsets, and answers reads."""

from __future__ import annotations

import duckdb
import pytest

from services.projection_schema import column_names
from services.projector import BatchWriter
from services.projector_process import WriterProcess
from tests.unit.test_projector_legs import PER_BOOK, posting_batch, records

TABLES = ("posting_batches", "postings", "account_books", "account_balances", "account_legs", "projector_offsets")


def contents(db) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for table in TABLES:
            cols = [c for c in (column_names(table) if table != "account_legs" else ["book", "is_debit", "amount_minor",
                                                                                       "occurred_at_us", "offset", "leg"])
                    if c != "updated_at_us"]
            quoted = ", ".join(f'"{c}"' for c in cols)
            out[table] = con.execute(f"SELECT {quoted} FROM {table} ORDER BY ALL").fetchall()
        out["per_book"] = con.execute(PER_BOOK).fetchall()
        return out
    finally:
        con.close()


def batches() -> list[list]:
    return [records([posting_batch(1), posting_batch(2, ("carol",))], 0),
            records([posting_batch(1), posting_batch(3, ("dave", "alice"))], 2),  # a re-emission of post:1
            records([posting_batch(4, ("erin",), amount=7)], 4)]


def test_the_writer_process_stores_what_an_in_process_writer_stores(tmp_path):
    con = duckdb.connect(str(tmp_path / "local.duckdb"))
    local = BatchWriter(con)
    for batch in batches():
        local.write(batch)
    con.close()
    store = WriterProcess(tmp_path / "remote.duckdb")
    try:
        remote = BatchWriter(store=store)
        assert remote.remote and not local.remote
        results = [remote.write(batch) for batch in batches()]
        assert [r.inserted.get("postings") for r in results] == [3, 2, 1]
        assert results[1].duplicates == 1
        assert store.execute("SELECT count(*) FROM postings").fetchone() == (6,)
        assert remote.offsets == {("ledger.postings", 0): 5}
    finally:
        store.close()
    assert contents(tmp_path / "remote.duckdb") == contents(tmp_path / "local.duckdb")
    assert contents(tmp_path / "remote.duckdb")["postings"]


def test_a_failed_commit_in_the_writer_process_raises_here_and_the_batch_is_taken_again(tmp_path):
    store = WriterProcess(tmp_path / "remote.duckdb")
    try:
        writer = BatchWriter(store=store)
        writer.write(batches()[0])
        # The writer's own transaction fails (a table it inserts into is gone), in the other process.
        store.execute("ALTER TABLE posting_batches RENAME TO posting_batches_away")
        with pytest.raises(duckdb.Error):
            writer.write(batches()[1])
        assert writer.claimed == writer.offsets == {("ledger.postings", 0): 2}
        store.execute("ALTER TABLE posting_batches_away RENAME TO posting_batches")
        writer.write(batches()[1])
        assert store.execute("SELECT count(*) FROM postings").fetchone() == (5,)
        local = BatchWriter(duckdb.connect())
        for batch in batches()[:2]:
            local.write(batch)
        assert store.execute(PER_BOOK).fetchall() == local.store.execute(PER_BOOK).fetchall()
    finally:
        store.close()
    with pytest.raises(Exception, match="closed"):
        store.state()


def test_a_file_another_process_holds_fails_to_open_clearly(tmp_path):
    db = tmp_path / "held.duckdb"
    first = WriterProcess(db)
    try:
        with pytest.raises(duckdb.IOException):
            WriterProcess(db)
    finally:
        first.close()
