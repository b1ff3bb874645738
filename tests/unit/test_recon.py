"""Three-way reconciliation (services/recon.py, `recon report`): one golden case per break class, worked
out by hand, on states folded by the real core; a timing break that clears once the movement settles."""

from __future__ import annotations

from pathlib import Path

from ledger_builders import (
    T0,
    Ledger,
    custody_movement,
    holding_statement,
    mint,
    stock_listed,
    supply_observation,
)
from typer.testing import CliRunner

from ledger.engine import apply
from schemas.codec import encode
from schemas.topics import SUBJECT_ROUTES
from services import recon
from services.archive import write_archive
from services.cli_recon import recon_app
from services.por import format_time
from services.statements import StatementRow, SupplyRow

NANO = 1_000_000_000
HOUR = 3_600_000_000
AAPL_ISIN, TSLA_ISIN = "US0378331005", "US88160R1014"


def ledger() -> Ledger:
    lg = Ledger()
    lg.ok("StockListed", stock_listed("AAPL", isin=AAPL_ISIN, at=T0))
    lg.ok("StockListed", stock_listed("TSLA", isin=TSLA_ISIN, at=T0))
    return lg


def funded(aggr_nano: int | None = 100 * NANO, supply_nano: int | None = 100 * NANO) -> Ledger:
    """100 AAPL shares at the custodian, 100 tokens minted to alice, a statement and a chain observation."""
    lg = ledger()
    lg.ok("CustodyMovement", custody_movement("AAPL", 100 * NANO, isin=AAPL_ISIN, movement_ref="MV-1", at=T0))
    lg.ok("MintRequest", mint("AAPL", "alice", 100 * NANO, at=T0))
    if aggr_nano is not None:
        lg.ok("HoldingStatement", holding_statement("AAPL", aggr_nano, aggr_nano, 0, isin=AAPL_ISIN, statement_ref="ST-1",
                                                    safekeeping_account="SAFE-1", at=T0))
    if supply_nano is not None:
        lg.ok("SupplyObservation", supply_observation("AAPL", supply_nano, 10, at=T0))
    return lg


def row(aggr: int, avai: int | None = None, navl: int = 0, *, symbol: str = "AAPL", isin: str = AAPL_ISIN,
        ref: str = "F-1", number: int = 2, function: str = "NEW", account: str = "SAFE-1", as_of: int = T0,
        line: int = 2) -> StatementRow:
    return StatementRow("f.csv", line, ref, number, function, as_of, "COMPLETE", account, isin, symbol, aggr,
                        aggr - navl if avai is None else avai, navl)


def classes(result: recon.ReconResult) -> list[str]:
    return [b.klass for b in result.breaks]


# --------------------------------------------------------------------------- no breaks


def test_clean_books_have_no_breaks():
    result = recon.reconcile(funded().state, T0 + HOUR)
    assert result.breaks == [] and result.ok()
    aapl = next(s for s in result.symbols if s.symbol == "AAPL")
    assert (aapl.ledger_shares_nano, aapl.custody_book_nano, aapl.chain_shares_nano, aapl.custodian_nano) == (
        100 * NANO, 100 * NANO, 100 * NANO, 100 * NANO)


# --------------------------------------------------------------------------- timing and clearing


def in_transit_ledger() -> Ledger:
    """100 settled + 20 in transit (MV-T) at T0; the custodian's statement already shows 120 (20 NAVL)."""
    lg = funded(aggr_nano=None)
    lg.ok("CustodyMovement", custody_movement("AAPL", 20 * NANO, status="IN_TRANSIT", isin=AAPL_ISIN,
                                              movement_ref="MV-T", at=T0))
    lg.ok("HoldingStatement", holding_statement("AAPL", 120 * NANO, 100 * NANO, 20 * NANO, isin=AAPL_ISIN,
                                                statement_ref="ST-1", safekeeping_account="SAFE-1", at=T0))
    return lg


def test_timing_break_clears_once_the_movement_settles():
    lg = in_transit_ledger()
    since = {("AAPL", "MV-T"): T0}
    result = recon.reconcile(lg.state, T0 + HOUR, in_transit_since=since)
    (b,) = result.breaks
    assert b.klass == recon.TIMING and b.symbol == "AAPL" and b.isin == AAPL_ISIN
    assert (b.ledger_nano, b.custodian_nano, b.difference_nano) == (100 * NANO, 120 * NANO, 20 * NANO)
    assert "MV-T" in b.explanation and "clears when it settles" in b.explanation
    (item,) = result.in_transit
    assert (item.movement_ref, item.qty_nano, item.age_us, item.overdue) == ("MV-T", 20 * NANO, HOUR, False)
    assert not result.ok() and result.ok(allow_timing=True)

    lg.ok("CustodyMovement", custody_movement("AAPL", 20 * NANO, status="SETTLED", isin=AAPL_ISIN,
                                              movement_ref="MV-T", at=T0 + 2 * HOUR))
    settled = recon.reconcile(lg.state, T0 + 2 * HOUR, in_transit_since=since)
    assert settled.breaks == [] and settled.in_transit == []


def test_withdrawal_in_transit_is_timing_too():
    lg = funded()
    lg.ok("CustodyMovement", custody_movement("AAPL", 30 * NANO, "WITHDRAWAL", "IN_TRANSIT", isin=AAPL_ISIN,
                                              movement_ref="WD-1", at=T0))
    lg.ok("Burn", {"event_id": "burn-1", "occurred_at": T0, "source": "issuer", "symbol": "AAPL", "account": "alice",
                   "qty_nano": 30 * NANO})
    lg.ok("SupplyObservation", supply_observation("AAPL", 70 * NANO, 11, at=T0))
    # The ledger's book dropped to 70 at once; the custodian still states 100 until delivery.
    result = recon.reconcile(lg.state, T0 + HOUR, in_transit_since={("AAPL", "WD-1"): T0})
    assert classes(result) == [recon.TIMING]
    assert result.breaks[0].difference_nano == 30 * NANO and "withdrawal 30" in result.breaks[0].explanation


def test_in_transit_beyond_the_window_is_a_clearing_break_not_timing():
    lg = in_transit_ledger()
    later = T0 + 72 * HOUR
    lg.ok("HoldingStatement", holding_statement("AAPL", 120 * NANO, 100 * NANO, 20 * NANO, isin=AAPL_ISIN,
                                                statement_ref="ST-2", statement_number=2, safekeeping_account="SAFE-1",
                                                at=later - HOUR))
    result = recon.reconcile(lg.state, later, in_transit_since={("AAPL", "MV-T"): T0})
    assert classes(result) == [recon.QUANTITY_MISMATCH, recon.CLEARING]
    mismatch, clearing = result.breaks
    assert "beyond the 2 d 0 h window" in mismatch.explanation and "MV-T" in mismatch.explanation
    assert "custodian:AAPL:in_transit has not returned to zero" in clearing.explanation
    assert result.in_transit[0].overdue
    # A wider window makes it timing again.
    wide = recon.reconcile(lg.state, later, in_transit_since={("AAPL", "MV-T"): T0}, timing_window_us=96 * HOUR)
    assert classes(wide) == [recon.TIMING]


def test_in_transit_of_unknown_age_counts_as_inside_the_window():
    result = recon.reconcile(in_transit_ledger().state, T0 + HOUR)
    assert classes(result) == [recon.TIMING] and "age unknown" in result.breaks[0].explanation


# --------------------------------------------------------------------------- missing / quantity


def test_missing_internal_chain_and_custodian_show_what_the_ledger_lacks():
    lg = ledger()
    lg.ok("SupplyObservation", supply_observation("TSLA", 50 * NANO, 3, at=T0))
    lg.ok("HoldingStatement", holding_statement("TSLA", 10 * NANO, 10 * NANO, 0, isin=TSLA_ISIN, at=T0))
    unlisted = row(25 * NANO, symbol="IBM", isin="US4592001014")
    result = recon.reconcile(lg.state, T0 + HOUR, [unlisted])
    assert classes(result) == [recon.MISSING_INTERNAL] * 3
    ibm, chain, custodian = result.breaks
    assert ibm.symbol == "IBM" and "does not list this instrument" in ibm.explanation
    assert (chain.ledger_nano, chain.chain_nano, chain.difference_nano) == (0, 50 * NANO, 50 * NANO)
    assert (custodian.ledger_nano, custodian.custodian_nano) == (0, 10 * NANO)


def test_missing_external_ledger_has_it_and_nobody_else_does():
    result = recon.reconcile(funded(aggr_nano=None, supply_nano=None).state, T0 + HOUR)
    assert classes(result) == [recon.MISSING_EXTERNAL, recon.MISSING_EXTERNAL]
    chain, custodian = result.breaks
    assert "no on-chain supply observation" in chain.explanation and chain.ledger_nano == 100 * NANO
    assert "no custodian statement" in custodian.explanation and custodian.ledger_nano == 100 * NANO


def test_quantity_mismatch_on_every_leg():
    result = recon.reconcile(funded(aggr_nano=90 * NANO, supply_nano=101 * NANO).state, T0 + HOUR)
    assert classes(result) == [recon.QUANTITY_MISMATCH] * 3
    chain, book, shortfall = result.breaks
    assert (chain.ledger_nano, chain.chain_nano, chain.difference_nano) == (100 * NANO, 101 * NANO, NANO)
    assert (book.ledger_nano, book.custodian_nano, book.difference_nano) == (100 * NANO, 90 * NANO, -10 * NANO)
    assert "reserve shortfall" in shortfall.explanation and shortfall.difference_nano == -10 * NANO


def test_statement_from_a_file_is_overlaid_before_import():
    lg = funded(aggr_nano=90 * NANO)
    assert recon.reconcile(lg.state, T0 + HOUR).breaks  # the ledger's statement says 90
    fixed = row(100 * NANO, ref="ST-2", number=2)
    assert recon.reconcile(lg.state, T0 + HOUR, [fixed]).breaks == []


def test_shares_are_compared_after_the_multiplier():
    lg = funded(aggr_nano=None)
    lg.ok("CorporateAction", {"event_id": "ca-1", "occurred_at": T0, "source": "custodian", "symbol": "AAPL",
                              "action_ref": "SPLIT-1", "kind": "SPLIT", "ratio_num": 3, "ratio_den": 1,
                              "dividend_micro_usd_per_share": 0, "withholding_ppm": 0, "reference_price_micro_usd": 0,
                              "activation_time": T0})
    # The split books 300 shares at the custodian; 100 tokens x 3 = 300 shares owed.
    result = recon.reconcile(lg.state, T0 + HOUR, [row(300 * NANO, ref="ST-9", number=9)])
    assert result.breaks == []
    aapl = next(s for s in result.symbols if s.symbol == "AAPL")
    assert (aapl.multiplier_nano, aapl.ledger_shares_nano, aapl.chain_shares_nano) == (3 * NANO, 300 * NANO, 300 * NANO)
    short = recon.reconcile(lg.state, T0 + HOUR, [row(299 * NANO, ref="ST-9", number=9)])
    assert classes(short) == [recon.QUANTITY_MISMATCH, recon.QUANTITY_MISMATCH]


# --------------------------------------------------------------------------- file-row classes


def test_instrument_mismatch_is_caught_before_the_core_rejects_it():
    lg = funded()
    wrong = row(100 * NANO, isin=TSLA_ISIN, ref="ST-2", number=2)
    result = recon.reconcile(lg.state, T0 + HOUR, [wrong])
    (b,) = result.breaks
    assert b.klass == recon.INSTRUMENT_MISMATCH and b.isin == TSLA_ISIN
    assert f"listed with {AAPL_ISIN}" in b.explanation and "TSLA's ISIN" in b.explanation
    # ...which is what the core would do with it:
    out = apply(lg.state, "HoldingStatement", wrong.record())
    assert out.rejection is not None and out.rejection[0] == "invalid_statement"
    unlisted_symbol = row(1, symbol="AAPLX", isin=AAPL_ISIN)
    assert classes(recon.reconcile(lg.state, T0 + HOUR, [unlisted_symbol])) == [recon.INSTRUMENT_MISMATCH]


def test_duplicates():
    lg = funded()
    again = row(100 * NANO, ref="ST-1", number=5)  # ST-1 is the current statement of SAFE-1
    twice = [row(100 * NANO, ref="ST-2", number=2, line=2), row(100 * NANO, ref="ST-2", number=2, line=3)]
    result = recon.reconcile(lg.state, T0 + HOUR, [again, *twice])
    assert classes(result) == [recon.DUPLICATE, recon.DUPLICATE]
    assert "already the current statement" in result.breaks[0].explanation
    assert "first at f.csv line 2" in result.breaks[1].explanation
    # Imported before (its event id is in the ledger), though no longer current:
    imported = row(100 * NANO, ref="ST-3", number=3)
    assert apply(lg.state, "HoldingStatement", imported.record()).rejection is None
    lg.ok("HoldingStatement", holding_statement("AAPL", 100 * NANO, 100 * NANO, 0, isin=AAPL_ISIN, statement_ref="ST-4",
                                                statement_number=4, safekeeping_account="SAFE-1", at=T0))
    result = recon.reconcile(lg.state, T0 + HOUR, [imported])
    assert classes(result) == [recon.DUPLICATE] and "already imported" in result.breaks[0].explanation
    sup = SupplyRow("s.csv", 2, "AAPL", "ethereum", 20, 100 * NANO, T0)
    assert classes(recon.reconcile(lg.state, T0 + HOUR, supplies=[sup, sup])) == [recon.DUPLICATE]


def test_availability():
    result = recon.reconcile(funded().state, T0 + HOUR, [row(100 * NANO, avai=90 * NANO, navl=5 * NANO, ref="ST-2")])
    (b,) = result.breaks
    assert b.klass == recon.AVAILABILITY and b.difference_nano == -5 * NANO
    assert "AVAI 90 + NAVL 5 = 95 != AGGR 100" in b.explanation


def test_stale_statement():
    state = funded().state  # statement as of T0
    assert recon.reconcile(state, T0 + 23 * HOUR).breaks == []
    result = recon.reconcile(state, T0 + 25 * HOUR)
    (b,) = result.breaks
    assert b.klass == recon.STALE_STATEMENT and "1 d 1 h before the recon time" in b.explanation
    assert recon.reconcile(state, T0 + 25 * HOUR, stale_after_us=48 * HOUR).breaks == []
    older = row(100 * NANO, ref="ST-0", number=1)  # number 1 is not newer than the ledger's ST-1 (number 1)
    assert classes(recon.reconcile(state, T0 + HOUR, [older])) == [recon.STALE_STATEMENT]
    old_block = SupplyRow("s.csv", 2, "AAPL", "ethereum", 9, 100 * NANO, T0)
    assert classes(recon.reconcile(state, T0 + HOUR, supplies=[old_block])) == [recon.STALE_STATEMENT]


def test_cancel_of_a_statement_the_ledger_does_not_hold():
    state = funded().state
    cancel = row(0, ref="NOPE", function="CANCEL")
    result = recon.reconcile(state, T0 + HOUR, [cancel])
    assert classes(result) == [recon.MISSING_INTERNAL] and "the current statement there is ST-1" in result.breaks[0].explanation
    # Cancelling the current one leaves no statement: the custodian leg is then missing.
    result = recon.reconcile(state, T0 + HOUR, [row(0, ref="ST-1", function="CANCEL")])
    assert classes(result) == [recon.MISSING_EXTERNAL]


# --------------------------------------------------------------------------- the CLI on real archives


def write_events(path: Path, events: list[tuple[str, dict]]) -> Path:
    rows = []
    for subject, record in events:
        topic, key_field = SUBJECT_ROUTES[subject]
        rows.append((topic, str(record[key_field]), encode(subject, record)))
    write_archive(path, rows, seed_label=path.name)
    return path


def test_cli_timing_break_clears_after_settlement(tmp_path):
    archive = write_events(tmp_path / "a.avro", [
        ("StockListed", stock_listed("AAPL", isin=AAPL_ISIN, at=T0)),
        ("CustodyMovement", custody_movement("AAPL", 100 * NANO, isin=AAPL_ISIN, movement_ref="MV-1", at=T0)),
        ("CustodyMovement", custody_movement("AAPL", 20 * NANO, status="IN_TRANSIT", isin=AAPL_ISIN, movement_ref="MV-T",
                                             at=T0)),
        ("MintRequest", mint("AAPL", "alice", 100 * NANO, at=T0)),
        ("SupplyObservation", supply_observation("AAPL", 100 * NANO, 1, at=T0)),
        ("HoldingStatement", holding_statement("AAPL", 120 * NANO, 100 * NANO, 20 * NANO, isin=AAPL_ISIN, at=T0)),
        ("CustodyMovement", custody_movement("AAPL", 20 * NANO, status="SETTLED", isin=AAPL_ISIN, movement_ref="MV-T",
                                             at=T0 + 2 * HOUR)),
    ])
    runner = CliRunner()
    res = runner.invoke(recon_app, ["report", "--archive", str(archive), "--as-of", format_time(T0 + HOUR)])
    assert res.exit_code == 1, res.output
    assert "timing" in res.output and "MV-T" in res.output and "inside window" in res.output
    res = runner.invoke(recon_app, ["report", "--archive", str(archive), "--as-of", str(T0 + HOUR), "--allow-timing"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(recon_app, ["report", "--archive", str(archive)])  # as of the settlement
    assert res.exit_code == 0, res.output
    assert "no breaks" in res.output


def test_cli_statements_file_breaks_and_unusable_files(tmp_path):
    archive = write_events(tmp_path / "a.avro", [
        ("StockListed", stock_listed("AAPL", isin=AAPL_ISIN, at=T0)),
        ("CustodyMovement", custody_movement("AAPL", 100 * NANO, isin=AAPL_ISIN, at=T0)),
        ("MintRequest", mint("AAPL", "alice", 100 * NANO, at=T0)),
        ("SupplyObservation", supply_observation("AAPL", 100 * NANO, 1, at=T0)),
    ])
    runner = CliRunner()
    res = runner.invoke(recon_app, ["report", "--archive", str(archive)])
    assert res.exit_code == 1 and "missing_external" in res.output and "no custodian statement" in res.output
    header = "statement_ref,statement_number,function,as_of,completeness,safekeeping_account,isin,symbol,aggr,avai,navl\n"
    good = tmp_path / "good.csv"
    good.write_text(header + f"S-1,1,NEW,{format_time(T0)},COMPLETE,SAFE-1,{AAPL_ISIN},AAPL,100,100,0\n")
    res = runner.invoke(recon_app, ["report", "--archive", str(archive), "--statements", str(good)])
    assert res.exit_code == 0, res.output
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(header + f"S-1,1,NEW,{format_time(T0)},COMPLETE,SAFE-1,{TSLA_ISIN},AAPL,100,100,0\n")
    res = runner.invoke(recon_app, ["report", "--archive", str(archive), "--statements", str(good), "--statements", str(wrong)])
    assert res.exit_code == 1 and "instrument_mismatch" in res.output
    broken = tmp_path / "broken.csv"
    broken.write_text(header + f"S-1,1,NEW,{format_time(T0)},COMPLETE,SAFE-1,{AAPL_ISIN},AAPL,1.0000000001,1,0\n")
    res = runner.invoke(recon_app, ["report", "--archive", str(archive), "--statements", str(broken)])
    assert res.exit_code == 2 and "has 10 decimals" in res.output


# --------------------------------------------------------------------------- the oracle's multiplier


def _with_mark(multiplier_nano: int, published_at: int, split_at: int) -> Ledger:
    """alice's 100 AAPL tokens, a 3-for-1 split activating at split_at, and one oracle mark."""
    from ledger_builders import price_mark, split

    lg = funded()
    lg.ok("CorporateAction", split("AAPL", 3, 1, activation_time=split_at, action_ref="SPLIT-3", at=T0))
    lg.ok("PriceMark", price_mark("AAPL", 200_000_000, "CLOSED", multiplier_nano=multiplier_nano,
                                  published_at=published_at, at=published_at))
    return lg


def test_the_oracles_multiplier_is_checked_against_the_ledgers_history():
    """The ledger's history gives 1 share per token before the split's activation (T0 + 10 h) and 3 from it on.
    An oracle mark at 3 after the activation agrees; one at 3 before it (flipped early) and one still at 1
    after it (never applied) are multiplier_mismatch breaks, with reported - recorded as the difference."""
    activation = T0 + 10 * HOUR
    stmt = [row(300 * NANO, ref="ST-9", number=9)]  # the custodian's holding after the split
    agrees = recon.reconcile(_with_mark(3 * NANO, activation + HOUR, activation).state, activation + 2 * HOUR, stmt)
    assert recon.MULTIPLIER_MISMATCH not in classes(agrees)
    early = recon.reconcile(_with_mark(3 * NANO, activation - HOUR, activation).state, activation + 2 * HOUR, stmt)
    (brk,) = [b for b in early.breaks if b.klass == recon.MULTIPLIER_MISMATCH]
    assert brk.difference_nano == 3 * NANO - NANO
    late = recon.reconcile(_with_mark(NANO, activation + HOUR, activation).state, activation + 2 * HOUR, stmt)
    (brk,) = [b for b in late.breaks if b.klass == recon.MULTIPLIER_MISMATCH]
    assert brk.difference_nano == NANO - 3 * NANO
