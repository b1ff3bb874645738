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


class RemoteState:
    """A store in another process, as far as prepare can tell (it only asks for the stored state)."""

    def state(self):
        return {}, 0


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


def test_a_send_interrupted_part_way_ends_the_writer_and_close_returns(tmp_path, monkeypatch):
    store = WriterProcess(tmp_path / "remote.duckdb")
    real = store._conn

    class HalfSent:
        """Writes half of a request, then is interrupted (a Ctrl-C in the sending thread)."""

        def send(self, obj):
            from multiprocessing.reduction import ForkingPickler
            payload = bytes(ForkingPickler.dumps(obj))
            real._send(len(payload).to_bytes(4, "big") + payload[: len(payload) // 2])
            raise KeyboardInterrupt

        def __getattr__(self, name):
            return getattr(real, name)

    writer = BatchWriter(store=store)
    prepared = writer.prepare(batches()[0])
    monkeypatch.setattr(store, "_conn", HalfSent())
    with pytest.raises(KeyboardInterrupt):
        writer.send(prepared)
    assert not store._process.is_alive()  # ended, so it cannot read the next request's bytes as this one's
    store.close()  # returns (it used to wait for an answer that never came)
    with pytest.raises(Exception, match="closed"):
        store.state()
    assert writer.claimed == writer.offsets == {}  # nothing claimed that was not stored


def test_a_failed_checkpoint_refuses_the_next_write_but_not_a_read(tmp_path, monkeypatch):
    import multiprocessing
    import threading

    import services.projector as projector
    import services.projector_process as process

    # The writer's loop on a thread of this process, talking over a pipe as the writer process does.
    monkeypatch.setattr(process, "die_with_parent", lambda pid: None)
    monkeypatch.setattr(process, "keep_freed_memory", lambda: None)

    def full_disk(self):
        raise duckdb.IOException("No space left on device (test)")

    monkeypatch.setattr(projector.LedgerStore, "maintain", full_disk)
    parent, child = multiprocessing.Pipe()
    loop = threading.Thread(target=process._serve, args=(child, str(tmp_path / "w.duckdb"), 0), daemon=True)
    loop.start()
    assert parent.recv() == ("ok", None)

    preparing = BatchWriter(store=RemoteState())
    first, second = (preparing.prepare(batch) for batch in batches()[:2])
    parent.send(("write", (first.tables, first.next_offsets, first.now_us)))
    assert parent.recv()[0] == "ok"  # committed; the checkpoint after it failed
    parent.send(("execute", ("SELECT count(*) FROM postings", None)))
    assert parent.recv() == ("ok", [(3,)])  # a read is answered
    parent.send(("write", (second.tables, second.next_offsets, second.now_us)))
    status, error = parent.recv()
    assert status == "error" and "No space left" in str(error)  # the next write learns it, and is not made
    parent.send(("execute", ("SELECT count(*) FROM postings", None)))
    assert parent.recv() == ("ok", [(3,)])
    parent.send(("close", ()))
    assert parent.recv() == ("ok", None)
    loop.join(10)
