"""Audit queries and the projector's batch writer on a DuckDB file built from hand-made records.

Every expected figure below is worked out by hand from the records in ``hand_made_records``; the records
go through the real codec and the projector's BatchWriter (decode, Arrow append, offsets in the same
transaction), only Kafka is left out (the integration tests add it).

Times: T(k) is k seconds after T0. A posting batch moves ``amount`` from the debit to the credit account;
a balance is credits - debits.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from schemas import codec
from services import audit
from services.cli_audit import audit_app
from services.projection_schema import TABLES, column_names
from services.projector import BatchWriter, InRecord

T0 = 1_741_000_000_000_000  # us
NANO = 1_000_000_000
USD = 1_000_000
POSTINGS, OUTCOMES, LIQ, REJ, SERIES = "ledger.postings", "request.outcomes", "liquidation.events", "ledger.rejections", "series.state"


def T(seconds: int) -> int:
    return T0 + seconds * 1_000_000


def batch(cause: str, occurred_s: int, legs: list[tuple[str, str, str, int]], kind: str = "CollateralDeposit") -> dict:
    return {"event_id": f"post:{cause}", "occurred_at": T(occurred_s), "source": "stockledger", "cause_event_id": cause,
            "cause_kind": kind, "postings": [{"debit_account": d, "credit_account": c, "asset": a, "amount_minor": n}
                                             for d, c, a, n in legs]}


ALICE_WALLET, ALICE_MARGIN = "user:alice:wallet:AAPL", "user:alice:margin:AAPL"

# (topic, subject, record, recorded_s): recorded_s becomes the Kafka record timestamp.
RECORDS: list[tuple[str, str, dict, int]] = [
    (POSTINGS, "PostingBatch", batch("dep-1", 1000, [(ALICE_WALLET, ALICE_MARGIN, "AAPL", 5 * NANO)]), 1000),
    (POSTINGS, "PostingBatch", batch("cust-4", 1200, [("external:custody:AAPL", "custodian:AAPL:in_transit", "SH:AAPL", 10 * NANO)],
                                     "CustodyMovement"), 1200),
    (POSTINGS, "PostingBatch", batch("cust-5", 1300, [("custodian:AAPL:in_transit", "custodian:AAPL", "SH:AAPL", 10 * NANO)],
                                     "CustodyMovement"), 1300),
    (POSTINGS, "PostingBatch", batch("dep-2", 2000, [(ALICE_MARGIN, "pool:main:AAPL", "AAPL", 1_500_000_000),
                                                     ("user:alice:margin:USD", "pool:main:USD", "USD", 250 * USD)], "TradeRequest"), 2000),
    (POSTINGS, "PostingBatch", batch("cust-6", 2500, [("external:custody:MSFT", "custodian:MSFT:in_transit", "SH:MSFT", 3 * NANO)],
                                     "CustodyMovement"), 2500),
    # back-dated: effective at 1500, recorded at 3000
    (POSTINGS, "PostingBatch", batch("late-3", 1500, [(ALICE_WALLET, ALICE_MARGIN, "AAPL", 2 * NANO)]), 3000),
    (POSTINGS, "PostingBatch", batch("lp-7", 3500, [("user:alice:wallet:MSFT", "pool:main:MSFT", "MSFT", 1 * NANO),
                                                    ("pool:main:shares_issued", "user:alice:lp", "LP:main", 1000 * NANO)],
                                     "LpDeposit"), 3500),
    (POSTINGS, "PostingBatch", batch("mark-9", 4000, [("user:bob:margin:AAPL", "pool:main:AAPL", "AAPL", 2 * NANO),
                                                      ("pool:main:USD", "user:bob:margin:USD", "USD", 380 * USD),
                                                      ("pool:insurance:USD", "pool:main:USD", "USD", 70 * USD)], "PriceMark"), 4000),
    (OUTCOMES, "RequestOutcome", {
        "event_id": "outcome:trade-8", "occurred_at": T(3600), "source": "stockledger", "request_event_id": "trade-8",
        "request_kind": "TRADE", "key": "alice", "decision": "APPROVED", "reason": None,
        "inputs": {"pool_nav_micro_usd": 1_200 * USD, "equity_micro_usd": 5_000 * USD}}, 3600),
    (OUTCOMES, "RequestOutcome", {
        "event_id": "outcome:redeem-8", "occurred_at": T(3700), "source": "stockledger", "request_event_id": "redeem-8",
        "request_kind": "LP_REDEEM", "key": "alice", "decision": "REJECTED", "reason": "pool_capacity",
        "inputs": {"nav_micro_usd": 1_100 * USD, "pool_shares_nano": 1_100 * NANO}}, 3700),
    (LIQ, "LiquidationTriggered", {
        "event_id": "liq-trigger:mark-9:bob", "occurred_at": T(4000), "source": "stockledger", "account": "bob",
        "cause_event_id": "mark-9", "equity_micro_usd": 900 * USD, "maintenance_margin_micro_usd": 1_200 * USD,
        "inputs": {"collateral_value_micro_usd": 1_500 * USD, "cash_micro_usd": -400 * USD,
                   "positions_value_micro_usd": -200 * USD, "funding_owed_micro_usd": 0,
                   "equity_micro_usd": 900 * USD, "maintenance_margin_micro_usd": 1_200 * USD,
                   "margin_nano:AAPL": 10 * NANO, "price_micro_usd:AAPL": 190 * USD, "multiplier_nano:AAPL": NANO,
                   "volume_nano:BTC-C-60000-7D": -2 * NANO, "mark_micro_usd:BTC-C-60000-7D": 100 * USD}}, 4000),
    (LIQ, "LiquidationExecuted", {
        "event_id": "liq-exec:mark-9:bob", "occurred_at": T(4000), "source": "stockledger", "account": "bob",
        "trigger_event_id": "liq-trigger:mark-9:bob",
        "closed_positions": [{"series_id": "BTC-C-60000-7D", "volume_nano": -2 * NANO, "mark_micro_usd": 100 * USD,
                              "value_micro_usd": -200 * USD}],
        "seized": [{"symbol": "AAPL", "qty_nano": 2 * NANO, "value_micro_usd": 380 * USD}],
        "debt_micro_usd": 600 * USD, "penalty_micro_usd": 60 * USD, "bonus_micro_usd": 30 * USD,
        "shortfall_micro_usd": 100 * USD}, 4000),
    *[(LIQ, "BadDebtCovered", {
        "event_id": f"bad-debt:liq-trigger:mark-9:bob:{n}", "occurred_at": T(4000), "source": "stockledger",
        "account": "bob", "trigger_event_id": "liq-trigger:mark-9:bob", "step": step, "amount_micro_usd": amount}, 4000)
      for n, (step, amount) in enumerate([("LP_SOCIALISED", 30 * USD), ("ACCOUNT_MARGIN", 500 * USD), ("PENALTY", 0),
                                          ("INSURANCE", 70 * USD)], 1)],
    (REJ, "Rejection", {
        "event_id": "reject:margin.events:0:77", "occurred_at": T(4100), "source": "stockledger", "cause_event_id": "wd-77",
        "reason": "insufficient_balance", "detail": "holds 0", "source_topic": "margin.events", "source_partition": 0,
        "source_offset": 77, "schema_id": None, "original": b"\x00\x01raw"}, 4100),
    (SERIES, "SeriesState", {
        "event_id": "series:mark-9:BTC-C-60000-7D", "occurred_at": T(4000), "source": "stockledger",
        "series_id": "BTC-C-60000-7D", "underlying": "BTC", "spot_micro_usd": 60_000 * USD, "theo_micro_usd": 95 * USD,
        "mark_micro_usd": 100 * USD, "net_volume_nano": -2 * NANO, "cum_funding_pico_usd": -5, "volatility_ppm": 600_000}, 4000),
]


def hand_made_records() -> list[InRecord]:
    offsets: dict[str, int] = {}
    out = []
    for topic, subject, record, recorded_s in RECORDS:
        offset = offsets.get(topic, 0)
        offsets[topic] = offset + 1
        out.append(InRecord(topic, 0, offset, T(recorded_s) // 1000, b"k", codec.encode(subject, record)))
    return out


def build_ledger_db(path: Path) -> Path:
    """The hand-made ledger in a DuckDB file, written in two batches like the projector does."""
    con = duckdb.connect(str(path))
    writer = BatchWriter(con)
    records = hand_made_records()
    writer.write(records[:7])
    writer.write(records[7:])
    con.close()
    return path


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return build_ledger_db(tmp_path / "ledger.duckdb")


@pytest.fixture
def con(db: Path):
    c = duckdb.connect(str(db), read_only=True)
    yield c
    c.close()


# -------------------------------------------------------------------------------------------- balances


def test_as_of_balance_before_and_after_an_event(con):
    assert audit.balance(con, ALICE_MARGIN, "AAPL", as_of_us=T(999)).balance_minor == 0
    assert audit.balance(con, ALICE_MARGIN, "AAPL", as_of_us=T(1000)).balance_minor == 5 * NANO
    # the back-dated +2 is effective at 1500; dep-2 takes 1.5 at 2000
    assert audit.balance(con, ALICE_MARGIN, "AAPL", as_of_us=T(1500)).balance_minor == 7 * NANO
    assert audit.balance(con, ALICE_MARGIN, "AAPL", as_of_us=T(1999)).balance_minor == 7 * NANO
    assert audit.balance(con, ALICE_MARGIN, "AAPL", as_of_us=T(2000)).balance_minor == 5_500_000_000
    now = audit.balance(con, ALICE_MARGIN, "AAPL")
    assert (now.balance_minor, now.legs) == (5_500_000_000, 3)
    assert audit.balance(con, ALICE_WALLET, "AAPL").balance_minor == -7 * NANO  # debited twice


def test_recorded_time_differs_from_effective_time(con):
    # By the recorded time 2000 the back-dated batch (recorded at 3000) was not known yet.
    assert audit.balance(con, ALICE_MARGIN, "AAPL", recorded_as_of_us=T(2000)).balance_minor == 3_500_000_000
    assert audit.balance(con, ALICE_MARGIN, "AAPL", recorded_as_of_us=T(3000)).balance_minor == 5_500_000_000
    # What was effective at 1500, as known at 2000 vs as known now:
    assert audit.balance(con, ALICE_MARGIN, "AAPL", as_of_us=T(1500), recorded_as_of_us=T(2000)).balance_minor == 5 * NANO
    assert audit.balance(con, ALICE_MARGIN, "AAPL", as_of_us=T(1500)).balance_minor == 7 * NANO


def test_history_has_running_balance_and_lineage(con):
    rows = audit.history(con, ALICE_MARGIN, "AAPL")
    assert [(r.event_id, r.amount_minor, r.balance_minor) for r in rows] == [
        ("post:dep-1", 5 * NANO, 5 * NANO),
        ("post:late-3", 2 * NANO, 7 * NANO),  # effective-time order, although recorded last
        ("post:dep-2", -1_500_000_000, 5_500_000_000),
    ]
    late = rows[1]
    assert (late.topic, late.partition, late.offset, late.side, late.counterparty) == (POSTINGS, 0, 5, "credit", ALICE_WALLET)
    assert (late.occurred_at_us, late.recorded_at_us) == (T(1500), T(3000))
    assert late.cause_event_id == "late-3" and late.cause_kind == "CollateralDeposit"
    assert [r.event_id for r in audit.history(con, ALICE_MARGIN, "AAPL", recorded_as_of_us=T(2000))] == ["post:dep-1", "post:dep-2"]


def test_account_known(con):
    assert audit.account_known(con, ALICE_MARGIN, "AAPL")
    assert not audit.account_known(con, ALICE_MARGIN, "MSFT")
    assert not audit.account_known(con, "user:nobody:wallet:AAPL")


# ---------------------------------------------------------------------------------------- trial balance


def test_trial_balance_debits_equal_credits_and_open_clearing_account_is_flagged(con):
    tb = audit.trial_balance(con)
    by_asset = {a.asset: a for a in tb.assets}
    assert set(by_asset) == {"AAPL", "USD", "SH:AAPL", "SH:MSFT", "MSFT", "LP:main"}
    aapl = by_asset["AAPL"]
    # legs 5 + 1.5 + 2 + 2; balances: alice wallet -7, alice margin +5.5, pool +3.5, bob margin -2
    assert (aapl.total_debits_minor, aapl.total_credits_minor) == (10_500_000_000, 10_500_000_000)
    assert (aapl.debit_balances_minor, aapl.credit_balances_minor, aapl.accounts) == (9 * NANO, 9 * NANO, 4)
    usd = by_asset["USD"]
    # legs 250 + 380 + 70; balances: alice margin -250, pool +250 -380 +70 = -60, bob +380, insurance -70
    assert (usd.total_debits_minor, usd.total_credits_minor) == (700 * USD, 700 * USD)
    assert (usd.debit_balances_minor, usd.credit_balances_minor) == (380 * USD, 380 * USD)
    assert tb.balanced
    clearing = {c.account: c.balance_minor for c in tb.clearing}
    assert clearing == {"custodian:AAPL:in_transit": 0, "custodian:MSFT:in_transit": 3 * NANO}
    assert not tb.clearing_at_zero and not tb.ok
    assert tb.as_dict()["flagged_clearing"] == ["custodian:MSFT:in_transit"]
    # before the MSFT deposit went in transit, every clearing account was at zero
    early = audit.trial_balance(con, as_of_us=T(2000))
    assert early.ok and {c.account for c in early.clearing} == {"custodian:AAPL:in_transit"}


def test_the_last_event_is_the_newest_leg(con):
    # dep-1 (1000), late-3 (effective 1500), dep-2 (2000): the newest is dep-2; as of 1500 it is late-3.
    now = audit.balance(con, ALICE_MARGIN, "AAPL")
    assert (now.last_event_id, now.last_occurred_at_us) == ("post:dep-2", T(2000))
    assert audit.balance(con, ALICE_MARGIN, "AAPL", as_of_us=T(1500)).last_event_id == "post:late-3"
    assert audit.balance(con, ALICE_MARGIN, "USD").last_event_id is None  # never touched: no leg, no last event


def _legs_of(con, account: str, asset: str) -> str:
    from services.projection_schema import leg_table

    return leg_table(audit.book_of(con, account, asset))


def _leg_of(event_id: str) -> str:
    """The legs of an event's postings (legs hold no event id: they name their posting by time, place and leg)."""
    return (f"""(occurred_at_us, recorded_at_us, "offset", leg) IN (SELECT occurred_at_us, recorded_at_us, "offset", leg """
            f"""FROM postings WHERE event_id = '{event_id}')""")


CORRUPTIONS = {
    "a credit leg's amount": lambda con: (
        f"UPDATE {_legs_of(con, ALICE_MARGIN, 'AAPL')} SET amount_minor = amount_minor + 1 "
        f"WHERE {_leg_of('post:dep-1')} AND NOT is_debit"),
    "a debit leg deleted": lambda con: (
        f"DELETE FROM {_legs_of(con, ALICE_WALLET, 'AAPL')} WHERE {_leg_of('post:late-3')} AND is_debit"),
    "a journal row's amount": lambda con: "UPDATE postings SET amount_minor = amount_minor * 2 WHERE event_id = 'post:dep-1'",
    "an account's running total": lambda con: (
        f"UPDATE account_balances SET credits_minor = credits_minor + 1 WHERE book = {audit.book_of(con, ALICE_MARGIN, 'AAPL')}"),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_trial_balance_of_a_corrupted_file_reports_unbalanced(db, corruption):
    con = duckdb.connect(str(db))
    assert audit.trial_balance(con).balanced
    con.execute(CORRUPTIONS[corruption](con)).fetchall()
    tb = audit.trial_balance(con)
    assert not tb.balanced and not tb.ok
    assert [a.asset for a in tb.assets if not a.balanced] == ["AAPL"]
    con.close()


def test_legs_and_running_totals_equal_a_rebuild_from_the_postings(db, tmp_path):
    from services.projection_schema import rebuild_ledger_tables

    per_account = """SELECT b.account, b.asset, t.debits_minor, t.credits_minor, t.debit_legs, t.credit_legs,
                            (SELECT count(*) FROM account_legs l WHERE l.book = b.book)
                     FROM account_balances t JOIN account_books b USING (book) ORDER BY 1, 2"""
    con = duckdb.connect(str(db))
    incremental = con.execute(per_account).fetchall()
    rebuild_ledger_tables(con)
    assert con.execute(per_account).fetchall() == incremental
    assert len(incremental) == 17 and sum(r[-1] for r in incremental) == 2 * 12  # 12 postings, two legs each
    con.close()


def test_resent_postings_add_no_legs(db):
    con = duckdb.connect(str(db))
    legs = con.execute("SELECT count(*) FROM account_legs").fetchall()
    totals = con.execute("SELECT sum(debits_minor), sum(credits_minor) FROM account_balances").fetchall()
    writer = BatchWriter(con)
    first = hand_made_records()[3]
    writer.write([first._replace(offset=200), hand_made_records()[0]._replace(offset=201)])
    assert con.execute("SELECT count(*) FROM account_legs").fetchall() == legs
    assert con.execute("SELECT sum(debits_minor), sum(credits_minor) FROM account_balances").fetchall() == totals
    con.close()


# ----------------------------------------------------------------------------------------- liquidation


def test_liquidation_explained_from_recorded_inputs(con):
    [e] = audit.explain_liquidations(con, "bob")
    assert e.trigger_event_id == "liq-trigger:mark-9:bob"
    assert e.trigger["cause_event_id"] == "mark-9"
    assert e.health_ppm == 750_000  # 900 / 1200
    assert e.below_maintenance is True
    assert e.instruments["AAPL"] == {"margin_nano": 10 * NANO, "price_micro_usd": 190 * USD, "multiplier_nano": NANO}
    assert e.instruments["BTC-C-60000-7D"] == {"volume_nano": -2 * NANO, "mark_micro_usd": 100 * USD}
    assert e.recomputed == {
        "health_ppm": 750_000,
        "positions_value_micro_usd": -200 * USD,  # 100 USD x -2 contracts
        "equity_micro_usd": 900 * USD,  # 1500 - 400 - 200 - 0
        "collateral_gross_value_micro_usd": 1_900 * USD,  # 10 AAPL x 190 USD x 1, before haircut
    }
    assert e.checks and all(e.checks.values()), e.checks
    assert e.executed["shortfall_micro_usd"] == 100 * USD and e.executed["seized"][0]["qty_nano"] == 2 * NANO
    assert [(s["step"], s["amount_micro_usd"]) for s in e.waterfall] == [
        ("ACCOUNT_MARGIN", 500 * USD), ("PENALTY", 0), ("INSURANCE", 70 * USD), ("LP_SOCIALISED", 30 * USD)]
    assert e.waterfall[0]["lineage"]["topic"] == LIQ
    # the cause's postings that touch bob, not the insurance leg
    assert [(p["debit_account"], p["credit_account"], p["amount_minor"]) for p in e.postings] == [
        ("user:bob:margin:AAPL", "pool:main:AAPL", 2 * NANO), ("pool:main:USD", "user:bob:margin:USD", 380 * USD)]
    assert audit.explain_liquidations(con, "alice") == []


def test_health_ppm_floors_and_handles_zero_margin():
    assert audit.health_ppm(1, 3) == 333_333
    assert audit.health_ppm(-1, 3) == -333_334
    assert audit.health_ppm(5, 0) is None


def test_split_inputs_reads_both_spellings():
    plain, per = audit.split_inputs({"equity_micro_usd": 1, "price_micro_usd:AAPL": 2, "TSLA.price_micro_usd": 3})
    assert plain == {"equity_micro_usd": 1}
    assert per == {"AAPL": {"price_micro_usd": 2}, "TSLA": {"price_micro_usd": 3}}


# ------------------------------------------------------------------------------------------------ pool


def test_pool_book_from_postings_and_value_at_given_prices(con):
    points = audit.pool_history(con, prices={"AAPL": (190 * USD, NANO), "MSFT": (400 * USD, NANO)})
    assert [(p.event_id, p.cash_micro_usd, p.tokens_nano, p.shares_outstanding_nano) for p in points] == [
        ("post:dep-2", 250 * USD, {"AAPL": 1_500_000_000}, 0),
        ("post:lp-7", 250 * USD, {"AAPL": 1_500_000_000, "MSFT": NANO}, 1000 * NANO),
        ("post:mark-9", -60 * USD, {"AAPL": 3_500_000_000, "MSFT": NANO}, 1000 * NANO),
    ]
    last = points[-1]
    assert last.book_value_micro_usd == -60 * USD + 665 * USD + 400 * USD  # 3.5 x 190 + 1 x 400
    assert last.share_value_micro_usd == 1_005_000  # per whole share: 1,005 USD / 1,000 shares
    assert points[0].share_value_micro_usd is None  # no shares yet
    assert audit.pool_history(con)[-1].book_value_micro_usd is None  # no prices: no value
    assert [p.event_id for p in audit.pool_history(con, limit=1)] == ["post:mark-9"]


def test_recorded_pool_nav_and_share_value(con):
    nav = audit.recorded_pool_nav(con)
    assert [(p["event_id"], p["nav_micro_usd"], p["shares_outstanding_nano"], p["share_value_micro_usd"]) for p in nav] == [
        ("outcome:trade-8", 1_200 * USD, 1000 * NANO, 1_200_000),  # shares from postings as of 3600
        ("outcome:redeem-8", 1_100 * USD, 1_100 * NANO, 1_000_000),  # shares as the outcome recorded them
    ]


# ---------------------------------------------------------------------------------------------- export


def test_parquet_export_of_a_table_and_a_query_is_exact(con, tmp_path):
    out = tmp_path / "postings.parquet"
    assert audit.export_parquet(con, "postings", out) == 12
    back = duckdb.connect()
    rows = back.execute(f"SELECT event_id, leg, amount_minor::HUGEINT FROM '{out}' ORDER BY event_id, leg").fetchall()
    assert ("post:dep-1", 0, 5 * NANO) in rows
    types = dict(back.execute(f"SELECT name, type FROM parquet_schema('{out}')").fetchall())
    assert types["amount_minor"] == "FIXED_LEN_BYTE_ARRAY"  # DECIMAL(38,0), never DOUBLE
    q = tmp_path / "sums.parquet"
    big = "SELECT asset, SUM(amount_minor) * 1000000000000 AS total FROM postings GROUP BY asset"
    assert audit.export_parquet(con, big, q) == 6
    total = back.execute(f"SELECT total::HUGEINT FROM '{q}' WHERE asset = 'AAPL'").fetchone()[0]
    assert total == 10_500_000_000 * 10**12  # beyond int64 and beyond a double's precision, still exact
    with pytest.raises(audit.AuditError):
        audit.export_parquet(con, "no_such_table", tmp_path / "x.parquet")


def test_rejections_listed_with_original_bytes(con):
    [r] = audit.rejections(con, "insufficient_balance")
    assert (r["source_topic"], r["source_offset"], r["original"]) == ("margin.events", 77, b"\x00\x01raw".hex())
    assert audit.rejections(con, "stale_price") == []
    assert audit.rejection_counts(con) == {"insufficient_balance": 1}


# ------------------------------------------------------------------------------- the projector's writer


def test_resent_event_ids_and_replayed_offsets_are_not_doubled(db):
    con = duckdb.connect(str(db))
    writer = BatchWriter(con)
    first = hand_made_records()[0]
    resent = [first._replace(offset=100), first._replace(offset=101)]  # re-emitted twice, new offsets
    r = writer.write(resent)
    assert r.records == 2 and r.duplicates == 2 and r.inserted.get("postings", 0) == 0
    r = writer.write([first])  # the same offset again (below the stored next offset): skipped
    assert (r.records, r.skipped) == (0, 1)
    assert con.execute("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM posting_batches").fetchone() == (8, 8)
    assert con.execute("SELECT next_offset FROM projector_offsets WHERE topic = ?", [POSTINGS]).fetchone() == (102,)
    con.close()


def test_bad_bytes_on_an_output_topic_are_kept_not_fatal(tmp_path):
    con = duckdb.connect(str(tmp_path / "e.duckdb"))
    writer = BatchWriter(con)
    price = codec.encode("PriceMark", {"event_id": "p1", "occurred_at": T(1), "source": "oracle", "instrument": "AAPL",
                                       "price_micro_usd": 1, "market_status": "OPEN", "multiplier_nano": NANO,
                                       "volatility_ppm": 0, "published_at": T(1)})
    good = hand_made_records()[0]
    r = writer.write([
        InRecord(POSTINGS, 1, 0, 5, b"k", b"\x00\x00"),
        InRecord(POSTINGS, 1, 1, 5, b"k", price),
        InRecord(POSTINGS, 1, 2, 5, None, None),
        good._replace(partition=1, offset=3),
    ])
    assert r.errors == 3 and r.inserted["posting_batches"] == 1
    errors = con.execute('SELECT "offset", reason, subject FROM projector_errors ORDER BY "offset"').fetchall()
    assert errors == [(0, "malformed", None), (1, "unexpected_subject", "PriceMark"), (2, "tombstone", None)]
    assert con.execute("SELECT value FROM projector_errors WHERE \"offset\" = 0").fetchone() == (b"\x00\x00",)
    assert con.execute("SELECT next_offset FROM projector_offsets").fetchall() == [(4,)]
    con.close()


def test_a_failed_transaction_leaves_neither_rows_nor_offsets(tmp_path, monkeypatch):
    con = duckdb.connect(str(tmp_path / "f.duckdb"))
    writer = BatchWriter(con)
    import services.projector as projector

    def boom(*_a, **_k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(projector, "insert_tables", boom)
    with pytest.raises(RuntimeError):
        writer.write(hand_made_records()[:3])
    assert con.execute("SELECT COUNT(*) FROM projector_offsets").fetchone() == (0,)
    assert writer.offsets == {}
    monkeypatch.undo()
    writer.write(hand_made_records()[:3])
    assert con.execute("SELECT COUNT(*) FROM posting_batches").fetchone() == (3,)
    con.close()


def test_replay_sink_writes_the_projector_schema(tmp_path):
    from services.duckdb_sink import DuckDBSink

    sink = DuckDBSink(tmp_path / "replay.duckdb")
    sink.close({})
    con = duckdb.connect(str(tmp_path / "replay.duckdb"), read_only=True)
    for table in TABLES:
        cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        assert cols == column_names(table), table
    con.close()


def test_parse_time_us():
    assert audit.parse_time_us("1741000000000000") == 1_741_000_000_000_000
    assert audit.parse_time_us("1970-01-01T00:00:01Z") == 1_000_000
    assert audit.parse_time_us("1970-01-01T00:00:00.000001") == 1
    assert audit.parse_time_us("1970-01-01T01:00:00+01:00") == 0
    assert audit.iso(1_000_000) == "1970-01-01T00:00:01Z"
    with pytest.raises(audit.AuditError):
        audit.parse_time_us("yesterday")


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_audit_commands(db, tmp_path):
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(audit_app, [*args, "--db", str(db)], env={"COLUMNS": "250"})

    r = run("balance", ALICE_MARGIN, "AAPL", "--as-of", str(T(1500)), "--json")
    assert r.exit_code == 0, r.output
    assert '"balance_minor": 7000000000' in r.output
    r = run("balance", ALICE_MARGIN, "AAPL", "--recorded-as-of", audit.iso(T(2000)), "--json")
    assert '"balance_minor": 3500000000' in r.output, r.output
    assert run("balance", "user:nobody:wallet:X", "X").exit_code == 2
    assert run("balance", ALICE_MARGIN, "AAPL", "--as-of", "soon").exit_code == 2
    r = run("history", ALICE_MARGIN, "AAPL", "--json")
    assert r.exit_code == 0 and '"event_id": "post:late-3"' in r.output
    r = runner.invoke(audit_app, ["history", ALICE_MARGIN, "AAPL", "--db", str(db)], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "5,500,000,000" in r.output, r.output
    r = run("trial-balance")
    assert r.exit_code == 1 and "custodian:MSFT:in_transit" in r.output  # open clearing account: not OK
    assert run("trial-balance", "--as-of", str(T(2000))).exit_code == 0
    r = run("liquidation", "bob")
    assert r.exit_code == 0 and "750,000 ppm" in r.output, r.output
    assert run("liquidation", "nobody").exit_code == 2
    r = run("pool", "--price", "AAPL=190000000", "--price", "MSFT=400000000@1000000000")
    assert r.exit_code == 0 and "1,005,000" in r.output, r.output
    out = tmp_path / "tb.parquet"
    r = runner.invoke(audit_app, ["export", "SELECT * FROM balances", "--out", str(out), "--db", str(db)])
    assert r.exit_code == 0 and out.exists(), r.output
    assert duckdb.connect().execute(f"SELECT COUNT(*) FROM '{out}'").fetchone()[0] > 0


def test_liquidation_explained_from_risk_engine_v2_inputs(tmp_path: Path, monkeypatch):
    """Since risk engine v2 a trigger records theo and MM per contract per series: positions are
    recomputed at theo and MM summed per position, and a mismatch in either is caught."""
    def with_trigger_inputs(extra: dict, mm_total: int) -> list:
        records = []
        for topic, subject, record, recorded_s in RECORDS:
            if subject == "LiquidationTriggered":
                inputs = {k: v for k, v in record["inputs"].items() if not k.startswith("mark_micro_usd:")}
                record = record | {"maintenance_margin_micro_usd": mm_total,
                                   "inputs": inputs | extra | {"maintenance_margin_micro_usd": mm_total}}
            records.append((topic, subject, record, recorded_s))
        return records

    series = "BTC-C-60000-7D"
    good = {f"theo_micro_usd:{series}": 100 * USD, f"maintenance_margin_micro_usd:{series}": 600 * USD}
    for name, extra, mm_total, ok in (("good", good, 1_200 * USD, True), ("bad-mm", good, 1_300 * USD, False)):
        monkeypatch.setitem(globals(), "RECORDS", with_trigger_inputs(extra, mm_total))
        c = duckdb.connect(str(build_ledger_db(tmp_path / f"{name}.duckdb")), read_only=True)
        [e] = audit.explain_liquidations(c, "bob")
        c.close()
        assert e.recomputed["positions_value_micro_usd"] == -200 * USD  # 100 USD theo x -2 contracts
        assert e.recomputed["maintenance_margin_micro_usd"] == 1_200 * USD  # 600 USD x |-2|
        assert e.checks["maintenance margin = sum(|volume| x MM per contract)"] is ok
        assert e.checks["positions value = sum(volume x theo)"] is True


def test_audit_export_cannot_read_a_local_file(tmp_path: Path):
    db = build_ledger_db(tmp_path / "ledger.duckdb")
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2-do-not-leak\n")
    runner = CliRunner()
    for i, query in enumerate((f"SELECT * FROM read_csv('{secret}')", f"SELECT * FROM read_text('{secret}')",
                               f"FROM '{secret}'", f"SELECT * FROM postings, read_blob('{secret}')",
                               "SELECT * FROM read_text('/etc/hostname')")):
        out = tmp_path / f"leak-{i}.parquet"
        r = runner.invoke(audit_app, ["export", query, "--out", str(out), "--db", str(db)])
        assert r.exit_code == 2, (query, r.output)
        assert "disabled" in r.output and "hunter2" not in r.output, r.output
        assert not out.exists() or "hunter2" not in out.read_bytes().decode(errors="replace")
    # ...and a query over the ledger's own tables still works on the same sandboxed connection.
    ok = tmp_path / "ok.parquet"
    r = runner.invoke(audit_app, ["export", "SELECT asset, SUM(amount_minor) AS total FROM postings GROUP BY asset",
                                  "--out", str(ok), "--db", str(db)])
    assert r.exit_code == 0 and duckdb.connect().execute(f"SELECT COUNT(*) FROM '{ok}'").fetchone()[0] > 0, r.output


def test_a_sandboxed_connection_cannot_turn_external_access_back_on(tmp_path: Path):
    con = audit.connect_sandboxed(build_ledger_db(tmp_path / "ledger.duckdb"))
    for statement in ("SET enable_external_access = true", "SET lock_configuration = false",
                      f"ATTACH '{tmp_path / 'other.duckdb'}' AS other", f"COPY postings TO '{tmp_path / 'x.csv'}'"):
        with pytest.raises(duckdb.Error):
            con.execute(statement)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "other.duckdb").exists()


def test_a_file_from_before_the_balance_tables_gets_them_from_its_postings(db, tmp_path):
    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    expected = audit.balance(con, ALICE_MARGIN, "AAPL")
    con.execute(f"ATTACH '{old}' AS old")
    for table in TABLES:  # the projection as it was before: no books, legs or running totals
        con.execute(f"CREATE TABLE old.{table} AS SELECT * FROM {table}")
    con.close()
    ro = duckdb.connect(str(old), read_only=True)
    with pytest.raises(audit.AuditError, match="open it once read-write"):
        audit.balance(ro, ALICE_MARGIN, "AAPL")
    with pytest.raises(audit.AuditError, match="open it once read-write"):
        audit.trial_balance(ro)
    ro.close()
    rw = duckdb.connect(str(old))
    BatchWriter(rw)  # a projector opening the file builds them
    assert audit.balance(rw, ALICE_MARGIN, "AAPL") == expected
    assert audit.trial_balance(rw).balanced
    rw.close()
