"""Delivery semantics and the rejection catalogue: duplicates, conflicting duplicates, malformed
envelopes, and one scenario per reason code in ledger/reasons.py (each leaving the state hash as it was).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from ledger_builders import (
    DAY_US,
    NANO,
    T0,
    USD,
    Ledger,
    burn,
    collateral_deposit,
    collateral_withdrawal,
    crypto_mark,
    custody_movement,
    desk,
    holding_statement,
    lp_deposit,
    lp_redeem,
    mint,
    price_mark,
    series_listed,
    stock_listed,
    trade,
)

from ledger import reasons
from ledger.engine import REQUEST_KINDS

SERIES = "BTC-P-50000"
Scenario = Callable[[], tuple[Ledger, str, dict]]


def _listed() -> Ledger:
    lg = Ledger()
    lg.list_stock("AAPL")
    return lg


def _malformed():
    lg = _listed()
    lg.ok("CustodyMovement", custody_movement("AAPL", 5 * NANO, status="IN_TRANSIT", movement_ref="M1"))
    return lg, "CustodyMovement", custody_movement("AAPL", 4 * NANO, movement_ref="M1")  # settles 4 of 5


def _unknown_schema():
    return _listed(), "LiquidationExecuted", {"event_id": "x", "occurred_at": T0, "source": "venue"}


def _unknown_symbol():
    return _listed(), "MintRequest", mint("MSFT", "alice", NANO)


def _unknown_account():
    return _listed(), "CollateralDeposit", collateral_deposit("nobody", "AAPL", NANO)


def _unknown_series():
    lg = desk()
    lg.fund("alice", "AAPL", 100 * NANO)
    return lg, "TradeRequest", trade("alice", "ETH-C-3000", NANO)


def _unknown_instrument():
    return _listed(), "PriceMark", price_mark("DOGE", 1 * USD)  # no volatility: not a crypto underlying


def _non_positive_amount():
    lg = _listed()
    lg.fund("alice", "AAPL", NANO, margin=False)
    return lg, "Burn", burn("AAPL", "alice", 0)


def _insufficient_reserve():
    lg = _listed()
    lg.fund("alice", "AAPL", NANO, margin=False)
    return lg, "MintRequest", mint("AAPL", "alice", 1)


def _insufficient_balance():
    lg = _listed()
    lg.fund("alice", "AAPL", NANO, margin=False)
    return lg, "CollateralDeposit", collateral_deposit("alice", "AAPL", NANO + 1)


def _insufficient_margin():
    lg = desk()
    lg.fund("alice", "AAPL", 1 * NANO)  # 180 USD of collateral cannot carry a 50_000 USD put
    return lg, "TradeRequest", trade("alice", SERIES, -NANO)


def _pool_capacity():
    lg = desk(lp_tokens_nano=0)  # an empty main pool cannot take the other side
    lg.fund("alice", "AAPL", 1_000 * NANO)
    return lg, "TradeRequest", trade("alice", SERIES, -NANO)


def _pool_insolvent():
    """A crash leaves the pool owing more than it holds (limits off, so a trade could get it there): a
    share of a NAV <= 0 is worthless, so a deposit is refused rather than paying the pool's debts."""
    lg = desk(lp_tokens_nano=100 * NANO, pool_stress_limit_ppm=10**9, pool_delta_cap_ppm=10**9, pool_margin_multiplier_ppm=0)
    lg.fund("alice", "AAPL", 10_000 * NANO)
    lg.ok("TradeRequest", trade("alice", SERIES, 3 * NANO))
    lg.ok("PriceMark", crypto_mark("BTC", 20_000 * USD, at=T0 + 1))
    lg.fund("bob", "AAPL", 10 * NANO, margin=False, at=T0 + 1)
    return lg, "LpDeposit", lp_deposit("bob", "AAPL", 10 * NANO, at=T0 + 2)


def _stale_price():
    lg = _listed()
    lg.mark("AAPL", 200 * USD, published_at=T0 + 10)
    return lg, "PriceMark", price_mark("AAPL", 201 * USD, published_at=T0 + 9, at=T0 + 20)


def _market_closed():
    lg = _listed()
    lg.mark("AAPL", 200 * USD, "CLOSED")
    lg.fund("lp", "AAPL", NANO, margin=False)
    return lg, "LpDeposit", lp_deposit("lp", "AAPL", NANO)


def _conflicting_duplicate():
    lg = _listed()
    first = mint("AAPL", "alice", NANO, event_id="M-1")
    lg.deposit_shares("AAPL", 2 * NANO)
    lg.ok("MintRequest", first)
    return lg, "MintRequest", first | {"qty_nano": 2 * NANO}


def _beyond_redelivery_horizon():
    """Ids are remembered a week (the default horizon) behind the latest event time; an event older than
    that could be a redelivery of a forgotten id, so it is refused rather than applied twice."""
    lg = _listed()
    lg.deposit_shares("AAPL", 2 * NANO)
    lg.ok("MintRequest", mint("AAPL", "alice", NANO, at=T0 + 8 * DAY_US))
    return lg, "MintRequest", mint("AAPL", "alice", NANO, at=T0 + DAY_US - 1)


def _beyond_limit():
    """A quantity near 2^63 is valid Avro, but what the ledger derives from it would not fit one (ledger.limits)."""
    lg = _listed()
    lg.deposit_shares("AAPL", 2 * NANO)
    return lg, "MintRequest", mint("AAPL", "alice", 2**63 - 1)


def _invalid_statement():
    return _listed(), "HoldingStatement", holding_statement("AAPL", 10 * NANO, 7 * NANO, 2 * NANO)


def _already_listed():
    return _listed(), "StockListed", stock_listed("AAPL")


SCENARIOS: dict[str, Scenario] = {
    reasons.MALFORMED: _malformed,
    reasons.UNKNOWN_SCHEMA: _unknown_schema,
    reasons.UNKNOWN_SYMBOL: _unknown_symbol,
    reasons.UNKNOWN_ACCOUNT: _unknown_account,
    reasons.UNKNOWN_SERIES: _unknown_series,
    reasons.UNKNOWN_INSTRUMENT: _unknown_instrument,
    reasons.NON_POSITIVE_AMOUNT: _non_positive_amount,
    reasons.INSUFFICIENT_RESERVE: _insufficient_reserve,
    reasons.INSUFFICIENT_BALANCE: _insufficient_balance,
    reasons.INSUFFICIENT_MARGIN: _insufficient_margin,
    reasons.POOL_CAPACITY: _pool_capacity,
    reasons.POOL_INSOLVENT: _pool_insolvent,
    reasons.STALE_PRICE: _stale_price,
    reasons.MARKET_CLOSED: _market_closed,
    reasons.CONFLICTING_DUPLICATE: _conflicting_duplicate,
    reasons.INVALID_STATEMENT: _invalid_statement,
    reasons.ALREADY_LISTED: _already_listed,
    reasons.BEYOND_REDELIVERY_HORIZON: _beyond_redelivery_horizon,
    reasons.BEYOND_LIMIT: _beyond_limit,
}
# Refusals decide nothing (the record alone is at fault, or its id was decided already): their answer's
# id names the reason and the content, so it can never take the id of the decision on that request.
REFUSALS = {reasons.CONFLICTING_DUPLICATE, reasons.BEYOND_REDELIVERY_HORIZON, reasons.BEYOND_LIMIT}


def test_every_reason_code_has_a_scenario_and_matches_the_rejection_schema():
    assert set(SCENARIOS) == set(reasons.ALL_REASONS)
    assert len(reasons.ALL_REASONS) == len(set(reasons.ALL_REASONS))
    schema = json.loads((Path(__file__).parents[2] / "schemas/avsc/rejection.v4.avsc").read_text())
    (reason_field,) = [f for f in schema["fields"] if f["name"] == "reason"]
    assert set(reason_field["type"]["symbols"]) == set(reasons.ALL_REASONS)


@pytest.mark.parametrize("reason", sorted(SCENARIOS))
def test_each_reason_is_produced_and_leaves_the_state_unchanged(reason):
    lg, subject, record = SCENARIOS[reason]()
    applied_before = dict(lg.state.counters.applied)
    out = lg.rejected(subject, record, reason)  # asserts reason, no postings, state hash unchanged
    assert lg.state.counters.rejected[reason] == 1
    assert lg.state.counters.applied == applied_before
    answers = lg.emitted(out, "RequestOutcome")
    if subject in REQUEST_KINDS:
        (answer,) = answers
        assert answer["decision"] == "REJECTED" and answer["reason"] == reason
        assert answer["request_kind"] == REQUEST_KINDS[subject]
        if reason in REFUSALS:
            assert answer["event_id"].startswith(f"outcome:{record['event_id']}:{reason}:")
        else:
            assert answer["event_id"] == f"outcome:{record['event_id']}"
        assert [s for s, _ in out.emitted] == ["RequestOutcome"]
    else:
        assert out.emitted == []


# ----------------------------------------------------------------------------- duplicates


def _busy_ledger() -> tuple[Ledger, list[tuple[str, dict]]]:
    lg = desk(pool_alpha_ppm=0)
    lg.fund("alice", "AAPL", 60 * NANO)
    inputs = [
        ("TradeRequest", trade("alice", SERIES, -NANO, at=T0 + 1)),
        ("CollateralWithdrawalRequest", collateral_withdrawal("alice", "AAPL", NANO, at=T0 + 2)),
        ("PriceMark", crypto_mark("BTC", 40_000 * USD, at=T0 + 3)),  # liquidates alice
        ("Burn", burn("AAPL", "alice", NANO, at=T0 + 4)),
        ("LpRedeemRequest", lp_redeem("lp", 1_000 * NANO, "AAPL", at=T0 + 5)),
    ]
    for subject, record in inputs:
        lg.ok(subject, record)
    return lg, inputs


def test_redelivered_events_change_nothing_and_are_flagged_duplicate():
    lg, _ = _busy_ledger()
    before = lg.hash()
    everything = list(lg.inputs)  # the setup and the busy part, all applied once
    for subject, record in everything:
        out = lg.apply(subject, dict(record))
        assert out.duplicate and out.rejection is None
        assert out.postings == [] and out.emitted == []
    assert lg.hash() == before
    assert lg.state.counters.duplicates == len(everything)
    assert lg.state.counters.liquidations == 1  # the mark's liquidation ran once


def test_duplicate_counter_counts_each_redelivery():
    lg, inputs = _busy_ledger()
    for subject, record in inputs + inputs:
        assert lg.apply(subject, record).duplicate
    assert lg.state.counters.duplicates == 2 * len(inputs)


@pytest.mark.parametrize("field,value", [("qty_nano", 2 * NANO), ("occurred_at", T0 + 99), ("source", "other")])
def test_same_id_with_different_content_is_a_conflicting_duplicate(field, value):
    lg = _listed()
    lg.deposit_shares("AAPL", 10 * NANO)
    first = mint("AAPL", "alice", NANO, event_id="MINT-1")
    lg.ok("MintRequest", first)
    out = lg.rejected("MintRequest", first | {field: value}, reasons.CONFLICTING_DUPLICATE)
    (answer,) = lg.emitted(out, "RequestOutcome")
    assert answer["decision"] == "REJECTED" and answer["reason"] == reasons.CONFLICTING_DUPLICATE
    assert lg.state.reserves["AAPL"].supply_nano == NANO
    # the original is still recognised as a redelivery afterwards
    assert lg.apply("MintRequest", dict(first)).duplicate


def test_same_id_reused_across_subjects_is_a_conflicting_duplicate():
    lg = _listed()
    lg.deposit_shares("AAPL", 10 * NANO, event_id="E-1")
    lg.fund("alice", "AAPL", NANO, margin=False)
    lg.rejected("Burn", burn("AAPL", "alice", NANO, event_id="E-1"), reasons.CONFLICTING_DUPLICATE)


def test_unknown_subject_is_rejected_as_unknown_schema():
    lg = _listed()
    lg.rejected("Transfer", {"event_id": "t-1", "occurred_at": T0, "source": "venue"}, reasons.UNKNOWN_SCHEMA)
    lg.rejected("RequestOutcome", {"event_id": "t-2", "occurred_at": T0, "source": "venue"}, reasons.UNKNOWN_SCHEMA)


# ----------------------------------------------------------------------------- malformed envelopes


def _without(record: dict, field: str) -> dict:
    return {k: v for k, v in record.items() if k != field}


def _trading_ledger() -> Ledger:
    lg = desk(series=(series_listed(),))
    lg.fund("alice", "AAPL", 100 * NANO)
    lg.deposit_shares("AAPL", 10 * NANO)  # room to mint
    return lg


ENVELOPE_CASES = [
    ("MintRequest", lambda: mint("AAPL", "alice", NANO)),
    ("CollateralWithdrawalRequest", lambda: collateral_withdrawal("alice", "AAPL", NANO)),
    ("TradeRequest", lambda: trade("alice", SERIES, -NANO)),
    ("LpRedeemRequest", lambda: lp_redeem("lp", NANO, "AAPL")),
    ("PriceMark", lambda: crypto_mark("BTC", 49_000 * USD)),
    ("CustodyMovement", lambda: custody_movement("AAPL", NANO)),
]


@pytest.mark.parametrize("field", ["event_id", "occurred_at"])
@pytest.mark.parametrize("subject,build", ENVELOPE_CASES, ids=[c[0] for c in ENVELOPE_CASES])
def test_a_record_without_its_envelope_is_malformed_and_changes_nothing(subject, build, field):
    lg = _trading_ledger()
    lg.rejected(subject, _without(build(), field), reasons.MALFORMED)


def test_a_mint_without_an_account_is_malformed_and_changes_nothing():
    lg = _listed()
    lg.deposit_shares("AAPL", 10 * NANO)
    lg.rejected("MintRequest", _without(mint("AAPL", "alice", NANO), "account"), reasons.MALFORMED)
    assert lg.state.reserves["AAPL"].supply_nano == 0
