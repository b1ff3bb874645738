"""The legs, books and running totals the projector stores with each batch must equal a rebuild from the postings
whatever the batch held (re-emissions mixed with new records, a commit that failed and was retried); legs name
their posting by integers only, so the last event and the key hash are checked against the postings too."""

from __future__ import annotations

import duckdb
import pytest

import services.projector as projector
from schemas import codec
from services.projection_schema import rebuild_ledger_tables
from services.projector import BatchWriter, InRecord

PER_BOOK = """SELECT b.account, b.asset, t.debits_minor, t.credits_minor, t.debit_legs, t.credit_legs,
                     (SELECT count(*) FROM account_legs l WHERE l.book = b.book),
                     (SELECT coalesce(sum(amount_minor), 0) FROM account_legs l WHERE l.book = b.book AND l.is_debit)
              FROM account_balances t JOIN account_books b USING (book) ORDER BY 1, 2"""


def posting_batch(i: int, accounts: tuple[str, ...] = ("alice", "bob"), amount: int = 100) -> bytes:
    legs = [{"debit_account": f"user:{a}:margin:USD", "credit_account": "pool:main:USD", "asset": "USD",
             "amount_minor": amount + k} for k, a in enumerate(accounts)]
    return codec.encode("PostingBatch", {"event_id": f"post:{i}", "occurred_at": 1_735_689_600_000_000 + i,
                                         "source": "test", "cause_event_id": str(i), "cause_kind": "TradeRequest",
                                         "postings": legs})


def records(values: list[bytes], first_offset: int) -> list[InRecord]:
    return [InRecord("ledger.postings", 0, first_offset + i, 1_700_000_000_000, None, v) for i, v in enumerate(values)]


def rebuilt(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """PER_BOOK after rebuilding the books, legs and totals from the postings (rolled back afterwards)."""
    con.execute("BEGIN TRANSACTION")
    try:
        rebuild_ledger_tables(con)
        return con.execute(PER_BOOK).fetchall()
    finally:
        con.execute("ROLLBACK")


def test_a_batch_mixing_re_emissions_and_new_records_stores_the_legs_of_the_new_ones_only():
    con = duckdb.connect()
    writer = BatchWriter(con)
    writer.write(records([posting_batch(1), posting_batch(2, ("carol",))], 0))
    # Offsets 2..4: a re-emission of post:1, a new batch naming a new account, a re-emission of post:2.
    writer.write(records([posting_batch(1), posting_batch(3, ("dave", "alice")), posting_batch(2, ("carol",))], 2))
    stored = con.execute(PER_BOOK).fetchall()
    assert con.execute("SELECT count(*) FROM postings").fetchone()[0] == 5
    assert sum(r[6] for r in stored) == 2 * 5  # two legs per stored posting, none for the re-emissions
    assert stored == rebuilt(con)


def test_a_dropped_re_emission_numbers_no_book_and_later_totals_are_right():
    con = duckdb.connect()
    writer = BatchWriter(con)
    writer.write(records([posting_batch(1)], 0))
    # The same event id with other content (never sent by the ledger): dropped before its legs are made.
    writer.write(records([posting_batch(1, ("erin",))], 1))
    assert con.execute("SELECT count(*) FROM account_books WHERE account = 'user:erin:margin:USD'").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM account_balances").fetchone()[0] == \
        con.execute("SELECT count(*) FROM account_books").fetchone()[0]
    writer.write(records([posting_batch(2, ("erin",), amount=7)], 2))
    erin = [r for r in con.execute(PER_BOOK).fetchall() if r[0] == "user:erin:margin:USD"]
    assert erin == [("user:erin:margin:USD", "USD", 7, 0, 1, 0, 1, 7)]
    assert con.execute(PER_BOOK).fetchall() == rebuilt(con)


def test_a_failed_commit_hands_out_its_books_again_on_the_retry(monkeypatch):
    con = duckdb.connect()
    writer = BatchWriter(con)
    writer.write(records([posting_batch(1)], 0))
    real = projector._insert_all

    def failing(con, table, arrow, **kwargs):
        if table.startswith("account_legs_"):  # after the batch's new books were numbered
            raise duckdb.IOException("disk full (test)")
        return real(con, table, arrow, **kwargs)

    monkeypatch.setattr(projector, "_insert_all", failing)
    batch = records([posting_batch(2, ("frank", "grace"))], 1)
    with pytest.raises(duckdb.IOException):
        writer.write(batch)
    monkeypatch.setattr(projector, "_insert_all", real)
    writer.write(batch)  # read again from the stored offset
    books = [b for (b,) in con.execute("SELECT book FROM account_books ORDER BY book").fetchall()]
    assert books == list(range(5))  # alice, bob, pool, frank, grace: no gap, none missing
    assert con.execute(PER_BOOK).fetchall() == rebuilt(con)


def test_the_last_event_is_picked_from_the_postings_in_lineage_order_when_legs_tie_on_time():
    from services import audit

    con = duckdb.connect()
    writer = BatchWriter(con)
    # Three batches effective and recorded at the same instants: the legs alone cannot tell them apart; lineage
    # order (offset, then leg, then the credit side) must. Bob's newest is post:6's second posting (he pays there);
    # alice's is post:7 (offset 12), not post:5 at a lower offset.
    same = dict(occurred_at=1_735_689_600_000_000, source="test", cause_kind="TradeRequest")

    def batch(i: int, legs: list[tuple[str, str]]) -> bytes:
        return codec.encode("PostingBatch", {"event_id": f"post:{i}", "cause_event_id": str(i), **same, "postings": [
            {"debit_account": d, "credit_account": c, "asset": "USD", "amount_minor": 10} for d, c in legs]})

    writer.write([InRecord("ledger.postings", 0, 10, 1_700_000_000_000, None, batch(5, [("user:alice", "user:bob")])),
                  InRecord("ledger.postings", 0, 11, 1_700_000_000_000, None,
                           batch(6, [("user:carol", "user:bob"), ("user:bob", "user:carol")])),
                  InRecord("ledger.postings", 0, 12, 1_700_000_000_000, None, batch(7, [("user:alice", "user:carol")]))])
    assert audit.balance(con, "user:bob", "USD").last_event_id == "post:6"
    assert audit.balance(con, "user:alice", "USD").last_event_id == "post:7"
    assert audit.balance(con, "user:carol", "USD").last_event_id == "post:7"
    # Against the postings' own lineage order, for every book.
    for account, in con.execute("SELECT DISTINCT account FROM account_books").fetchall():
        newest = con.execute("""SELECT event_id FROM balance_legs WHERE account = $a ORDER BY occurred_at_us DESC,
                                recorded_at_us DESC, topic DESC, "partition" DESC, "offset" DESC, leg DESC, side DESC
                                LIMIT 1""", {"a": account}).fetchall()[0][0]
        assert audit.balance(con, account, "USD").last_event_id == newest


def test_a_file_with_the_earlier_legs_holding_strings_is_rebuilt_on_open(tmp_path):
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    writer = BatchWriter(con)
    writer.write(records([posting_batch(1), posting_batch(2, ("carol",))], 0))
    expected = con.execute(PER_BOOK).fetchall()
    # The layout before: every leg also held its batch's event id and its topic.
    con.execute("DROP VIEW account_legs")
    for k in range(16):
        con.execute(f"ALTER TABLE account_legs_{k:02d} ADD COLUMN event_id VARCHAR DEFAULT 'post:x'")
        con.execute(f"ALTER TABLE account_legs_{k:02d} ADD COLUMN topic VARCHAR DEFAULT 'ledger.postings'")
    con.close()
    con = duckdb.connect(str(db))
    BatchWriter(con)  # ensure_schema
    assert "event_id" not in [r[0] for r in con.execute("DESCRIBE account_legs_00").fetchall()]
    assert con.execute(PER_BOOK).fetchall() == expected
    assert sum(r[6] for r in expected) == 2 * 3


@pytest.mark.parametrize("account, asset", [("user:alice:margin:USD", "USD"), ("", ""), ("pool:main:shares_issued", "LP:main"),
                                            ("user:zoë:wallet:€", "SH:AAPL"), ("user:𝔘:lp", "LP:main"), ("a" * 300, "b")])
def test_the_key_hash_duckdb_stores_is_the_one_python_looks_books_up_by(account, asset):
    from services.projection_schema import BOOK_KEY_HASH_SQL, book_key_hash

    stored = duckdb.sql(f"SELECT {BOOK_KEY_HASH_SQL} FROM (SELECT $account AS account, $asset AS asset)",
                        params={"account": account, "asset": asset}).fetchall()[0][0]
    assert stored == book_key_hash(account, asset)
    assert 0 <= stored < 1 << 60 and stored != book_key_hash(account + "x", asset)


def test_books_are_found_by_their_strings_in_a_file_with_other_key_hashes():
    from services import audit

    con = duckdb.connect()
    BatchWriter(con).write(records([posting_batch(1)], 0))
    before = audit.balance(con, "user:alice:margin:USD", "USD")
    con.execute("UPDATE account_books SET key_hash = key_hash + 1")  # as a file written with an earlier hash function
    assert audit.balance(con, "user:alice:margin:USD", "USD") == before and before.balance_minor == -100
