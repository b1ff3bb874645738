"""Auto-deleveraging (issue 11): a bad debt the insurance and the LPs' equity cannot absorb is taken from the
most profitable, most leveraged traders, at the mark, each step an event; figures worked by hand."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_builders import (
    NANO,
    PPM,
    T0,
    USD,
    crypto_mark,
    desk,
    fresh_state,
    posting_balances,
    state_balances,
    trade,
)

from ledger import adl
from ledger.engine import apply
from ledger.params import RiskParams
from ledger.risk import account_health, is_liquidatable, pool_model_value_micro_usd
from ledger.state import LedgerState
from ledger.state_hash import state_hash
from ledger.units import div_ceil
from ledger.watch_index import Surveillance

SERIES = "BTC-P-50000"
LIMITS_OFF = {"pool_margin_multiplier_ppm": 0, "pool_stress_limit_ppm": 10**9, "pool_delta_cap_ppm": 10**9}


def _crash_book():
    """A 2,000 USD pool (10 AAPL), no insurance, no fee, limits off (so the crash can sink the pool). bob
    (20 AAPL, 4,000 USD) and dave (50 AAPL, 10,000 USD) each buy one 50,000 put; alice (60 AAPL) sells one;
    carol holds 5 AAPL and no position."""
    lg = desk(lp_tokens_nano=10 * NANO, haircut_ppm=0, trade_fee_ppm=0, **LIMITS_OFF)
    lg.fund("alice", "AAPL", 60 * NANO)
    lg.fund("bob", "AAPL", 20 * NANO)
    lg.fund("dave", "AAPL", 50 * NANO)
    lg.fund("carol", "AAPL", 5 * NANO)
    lg.ok("TradeRequest", trade("bob", SERIES, NANO))
    lg.ok("TradeRequest", trade("dave", SERIES, NANO))
    lg.ok("TradeRequest", trade("alice", SERIES, -NANO))
    return lg


def _events(out, subject):
    return [r for s, r in out.emitted if s == subject]


def test_a_debt_the_lps_cannot_absorb_is_taken_from_the_top_ranked_winner_at_the_mark():
    lg = _crash_book()
    state = lg.state
    carol_before = (dict(state.accounts["carol"].margin_nano), state.accounts["carol"].cash_micro_usd)
    dave_before = (dict(state.accounts["dave"].positions), state.accounts["dave"].cash_micro_usd)
    out = lg.ok("PriceMark", crypto_mark("BTC", 30_000 * USD, at=T0 + 1))
    # alice is liquidated: her short put is closed along the curve, her 60 AAPL seized, and what is left of
    # her debt goes through the waterfall: no insurance, so the LPs take it all.
    (executed,) = _events(out, "LiquidationExecuted")
    steps = {r["step"]: r["amount_micro_usd"] for r in _events(out, "BadDebtCovered")}
    assert steps["INSURANCE"] == 0 and steps["LP_SOCIALISED"] == executed["shortfall_micro_usd"] > 0
    socialised = steps["LP_SOCIALISED"]
    (step,) = _events(out, "AutoDeleveraged")  # one step suffices: the first-ranked winner covers it all
    # The LPs' equity (the model value) fell below zero; ADL recovers what it cannot absorb, at most the
    # amount just socialised: deficit = min(socialised, -model value). Here the pool (2,000 USD of AAPL, short
    # the two puts bob and dave hold, worth about 20,010 USD each) was already 18,752 USD under water, so the
    # whole 5,698.244154 USD socialised is recovered; the rest of the hole is the LPs' market loss, not a debt.
    model_before = step["pool_model_value_micro_usd"]
    assert model_before < 0
    deficit = min(socialised, -model_before)
    assert step["deficit_before_micro_usd"] == deficit
    # Ranking: bob (4,000 USD of collateral) is more leveraged than dave (10,000 USD) on the same put, so he
    # comes first: score = claim / equity x notional / equity, claim = equity - collateral (the USD the pool
    # owes him), notional = 1 put x 30,000 USD spot.
    assert step["account"] == "bob" and step["rank"] == 1 and step["bankrupt_account"] == "alice"
    claim, equity = step["claim_micro_usd"], step["equity_micro_usd"]
    assert equity - claim == 20 * 200 * USD  # his collateral
    assert step["notional_micro_usd"] == 30_000 * USD
    assert step["score_ppm"] == claim * 30_000 * USD * PPM // (equity * equity)
    # He gives up deficit / claim of his profit and the same share of his put (rounded up), at the mark:
    # 5,698.244154 / 16,970.615106 USD = 0.33577122 -> 335,772 ppm (rounded up) of his 1 put.
    fraction = div_ceil(deficit * PPM, claim)
    assert (deficit, claim, fraction) == (5_698_244_154, 16_970_615_106, 335_772)
    assert step["fraction_ppm"] == fraction
    (closed,) = step["closed_positions"]
    part = div_ceil(NANO * fraction, PPM)
    theo = closed["mark_micro_usd"]
    assert (closed["series_id"], closed["volume_nano"]) == (SERIES, part) and part == 335_772_000
    assert closed["value_micro_usd"] == theo * part // NANO  # at the mark, rounded against him
    assert step["haircut_micro_usd"] == deficit and step["deficit_after_micro_usd"] == 0
    bob = state.accounts["bob"]
    assert bob.positions[SERIES].volume_nano == NANO - part
    # The close at the mark leaves the LPs' equity where it was (to the micro-USD it rounds to the pool); the
    # haircut adds to it.
    assert 0 <= pool_model_value_micro_usd(state) - (model_before + deficit) <= 1
    # bob stays above maintenance margin; carol (no position) and dave (ranked second) are untouched.
    assert not is_liquidatable(account_health(state, bob, T0 + 1), True)
    assert (state.accounts["carol"].margin_nano, state.accounts["carol"].cash_micro_usd) == carol_before
    assert (state.accounts["dave"].positions, state.accounts["dave"].cash_micro_usd) == dave_before
    assert state.counters.economics["adl_step"] == 1
    assert posting_balances(lg.postings) == state_balances(state)


def test_ranking_is_profit_times_leverage_and_leaves_out_accounts_without_a_position():
    lg = _crash_book()
    lg.ok("PriceMark", crypto_mark("BTC", 30_000 * USD, at=T0 + 1))  # the crash: both long puts in profit
    ranked = adl.ranking(lg.state, T0 + 1, exclude="alice")
    assert [name for _, name, *_ in ranked] == ["bob", "dave"]  # carol (no position) is not in the queue
    for score, name, claim, equity, notional in ranked:
        health = account_health(lg.state, lg.state.accounts[name], T0 + 1)
        assert (claim, equity) == (health.equity_micro_usd - health.collateral_micro_usd, health.equity_micro_usd)
        assert score == claim * notional * PPM // (equity * equity)


def test_no_deficit_while_the_lps_equity_absorbs_the_loss():
    lg = desk(lp_tokens_nano=10_000 * NANO, haircut_ppm=0, trade_fee_ppm=0, **LIMITS_OFF)
    lg.fund("alice", "AAPL", 60 * NANO)
    lg.fund("bob", "AAPL", 20 * NANO)
    lg.ok("TradeRequest", trade("bob", SERIES, NANO))
    lg.ok("TradeRequest", trade("alice", SERIES, -NANO))
    out = lg.ok("PriceMark", crypto_mark("BTC", 30_000 * USD, at=T0 + 1))
    assert [r["step"] for r in _events(out, "BadDebtCovered")][-1] == "LP_SOCIALISED"
    assert _events(out, "AutoDeleveraged") == []  # a 2,000,000 USD pool absorbs it
    assert adl.deficit_micro_usd(lg.state, 10**12) == 0


def test_the_reference_surveillance_takes_the_same_decisions_through_an_adl_and_no_account_is_left_under_margin():
    """The slow reference (every account re-valued after every event) against the indexed sweep, on the ADL
    scenario followed by further marks: same outcomes, same state hash, the invariant after every event."""
    lg = _crash_book()
    events = list(lg.inputs)
    for n, btc in enumerate((30_000, 28_000, 33_000, 25_000), start=1):
        events.append(("PriceMark", crypto_mark("BTC", btc * USD, at=T0 + n, event_id=f"crash-{n}")))
    params = LIMITS_OFF | {"trade_fee_ppm": 0}  # as _crash_book's desk
    fast = fresh_state(**params)
    ref = LedgerState(params=RiskParams(**params), surveillance=Surveillance(reference=True))
    steps = 0
    for n, (subject, record) in enumerate(events):
        out_fast, out_ref = apply(fast, subject, record), apply(ref, subject, record)
        assert (out_fast.rejection, out_fast.postings, out_fast.emitted) == (out_ref.rejection, out_ref.postings, out_ref.emitted), n
        steps += sum(1 for s, _ in out_fast.emitted if s == "AutoDeleveraged")
        for name, acct in fast.accounts.items():
            if acct.positions or acct.cash_micro_usd < 0:
                health = account_health(fast, acct, record["occurred_at"])
                assert not is_liquidatable(health, bool(acct.positions)), (n, name, health)
    assert steps >= 1
    assert state_hash(fast) == state_hash(ref)


WINNER = st.tuples(st.sampled_from((15, 20, 50, 200)), st.sampled_from((NANO // 2, NANO, 2 * NANO)))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from((1, 10, 100)), st.lists(WINNER, min_size=1, max_size=4),
       st.sampled_from((NANO, 2 * NANO, 3 * NANO)), st.sampled_from((60, 100, 150)),
       st.sampled_from((20_000, 25_000, 30_000, 40_000)))
def test_adl_recovers_at_most_the_deficit_from_winners_it_leaves_above_margin(lp_aapl, winners, short_nano, short_aapl, btc):
    """Property: a crash bankrupts a short seller against a small pool. Whatever the sizes: the ADL steps
    recover at most min(socialised, -model value), each haircut at most its claim; every deleveraged account
    ends above maintenance margin with its positions reduced by the step's fraction; a user without a
    position is untouched; the books balance; the slow reference takes the same decisions."""
    lg = desk(lp_tokens_nano=lp_aapl * NANO, haircut_ppm=0, trade_fee_ppm=0, **LIMITS_OFF)
    names = [f"w{i}" for i in range(len(winners))]
    for name, (aapl, _) in zip(names, winners, strict=True):
        lg.fund(name, "AAPL", aapl * NANO)
    lg.fund("alice", "AAPL", short_aapl * NANO)
    lg.fund("carol", "AAPL", 5 * NANO)
    for name, (_, volume) in zip(names, winners, strict=True):
        lg.apply("TradeRequest", trade(name, SERIES, volume))
    lg.apply("TradeRequest", trade("alice", SERIES, -short_nano))
    ref = fresh_state(**(LIMITS_OFF | {"trade_fee_ppm": 0}))
    ref.surveillance = Surveillance(reference=True)
    for subject, record in lg.inputs:
        apply(ref, subject, record)
    carol = (dict(lg.state.accounts["carol"].margin_nano), lg.state.accounts["carol"].cash_micro_usd)
    volumes = {n: {s: p.volume_nano for s, p in lg.state.accounts[n].positions.items()} for n in names}
    mark = crypto_mark("BTC", btc * USD, at=T0 + 1)
    out = lg.apply("PriceMark", mark)
    out_ref = apply(ref, "PriceMark", mark)
    assert (out.rejection, out.postings, out.emitted) == (out_ref.rejection, out_ref.postings, out_ref.emitted)
    socialised = sum(r["amount_micro_usd"] for r in _events(out, "BadDebtCovered") if r["step"] == "LP_SOCIALISED")
    steps = _events(out, "AutoDeleveraged")
    if steps:
        deficit = steps[0]["deficit_before_micro_usd"]
        assert deficit == min(socialised, -steps[0]["pool_model_value_micro_usd"]) > 0
        assert sum(s["haircut_micro_usd"] for s in steps) <= deficit
        assert [s["rank"] for s in steps] == list(range(1, len(steps) + 1))
        assert [s["score_ppm"] for s in steps] == sorted((s["score_ppm"] for s in steps), reverse=True)
    for step in steps:
        assert 0 <= step["haircut_micro_usd"] <= step["claim_micro_usd"]
        assert step["deficit_after_micro_usd"] == step["deficit_before_micro_usd"] - step["haircut_micro_usd"]
        name = step["account"]
        assert name in names  # never the bankrupt account nor a user without a position
        for closed in step["closed_positions"]:
            before = volumes[name][closed["series_id"]]
            assert closed["volume_nano"] == div_ceil(before * step["fraction_ppm"], PPM)
    for name, acct in lg.state.accounts.items():
        if acct.positions or acct.cash_micro_usd < 0:
            assert not is_liquidatable(account_health(lg.state, acct, T0 + 1), bool(acct.positions)), name
    assert (lg.state.accounts["carol"].margin_nano, lg.state.accounts["carol"].cash_micro_usd) == carol
    assert posting_balances(lg.postings) == state_balances(lg.state)
    assert state_hash(lg.state) == state_hash(ref)
