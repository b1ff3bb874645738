"""Surveillance is an invariant: after every applied event no account is left under maintenance margin.

The indexed sweep (ledger.surveillance) re-values only the accounts an event can have moved; the
reference mode of the same core re-values every account after every event. Both must take the same
decisions and end in the same state hash, on random scenarios and on the generated week, and the
invariant is checked directly after every event as well. Then one test per way an account's health
can move (DESIGN section 5), each against the reference.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings, target
from hypothesis import strategies as st
from ledger_builders import (
    MINUTE_US,
    NANO,
    PPM,
    SECOND_US,
    T0,
    USD,
    WEEK_S,
    crypto_mark,
    desk,
    fresh_state,
    long_margins,
    price_mark,
    short_margins,
    split,
    trade,
)
from test_ledger_properties import OPS, PARAMS, materialize

from ledger import options
from ledger.engine import apply
from ledger.outcome import Outcome
from ledger.params import RiskParams
from ledger.quotes import quote
from ledger.risk import account_health, is_liquidatable, lean_liquidity_now
from ledger.state import LedgerState
from ledger.state_hash import state_hash
from ledger.watch_index import Surveillance, bound_funding_premium
from services.replay import replay
from services.scenario import ScenarioConfig, generate

Event = tuple[str, dict[str, Any]]
SERIES = "BTC-P-50000"
K = 50_000 * USD


def reference_state(**params: int) -> LedgerState:
    return LedgerState(params=RiskParams(**params), surveillance=Surveillance(reference=True))


def assert_invariant(state: LedgerState, at_us: int, where: object) -> int:
    """No account with positions under MM, none with a debt under zero equity; returns the smallest buffer seen."""
    smallest = 10**18
    for name, acct in state.accounts.items():
        if not acct.positions and acct.cash_micro_usd >= 0:
            continue
        health = account_health(state, acct, at_us)
        assert not is_liquidatable(health, bool(acct.positions)), (where, name, health)
        if acct.positions:
            smallest = min(smallest, health.equity_micro_usd - health.maintenance_micro_usd)
    return smallest


def decisions(out: Outcome) -> tuple:
    return out.rejection, out.duplicate, out.postings, out.emitted


def run_both(events: list[Event], **params: int) -> tuple[LedgerState, LedgerState, int]:
    """Fold the events in the indexed and the reference mode, comparing every outcome and the invariant."""
    fast, ref = fresh_state(**params), reference_state(**params)
    closest = 10**18
    for n, (subject, record) in enumerate(events):
        out_fast, out_ref = apply(fast, subject, record), apply(ref, subject, record)
        assert decisions(out_fast) == decisions(out_ref), (n, subject, record)
        if out_fast.rejection is None and not out_fast.duplicate:
            closest = min(closest, assert_invariant(fast, record["occurred_at"], (n, subject)))
    assert state_hash(fast) == state_hash(ref)
    return fast, ref, closest


# ----------------------------------------------------------------------------- random scenarios

VOL_CHANGE = st.tuples(st.just("vol"), st.sampled_from((400_000, 1_000_000, 1_500_000, 3_000_000)))
REVERSE_SPLIT = st.tuples(st.just("rsplit"), st.sampled_from(("AAPL", "MSFT")))
SURVEILLANCE_OPS = st.one_of(OPS, VOL_CHANGE, REVERSE_SPLIT)


def with_steps(ops: list[tuple]) -> list[Event]:
    """The property tests' scenarios, plus volatility changes and 1-for-10 reverse splits marked by the oracle."""
    plain = [op for op in ops if op[0] not in ("vol", "rsplit")]
    events = materialize(plain)
    extra: list[Event] = []
    t = max(r["occurred_at"] for _, r in events)
    for n, op in enumerate(ops):
        if op[0] == "vol":
            t += SECOND_US
            extra.append(("PriceMark", crypto_mark("BTC", 50_000 * USD, volatility_ppm=op[1], at=t, event_id=f"vol-{n}")))
        elif op[0] == "rsplit":
            t += SECOND_US
            symbol = op[1]
            extra.append(("CorporateAction", split(symbol, 1, 10, at=t, event_id=f"rs-{n}", action_ref=f"rs-{n}")))
            price = state_price_after(events, symbol) * 10
            extra.append(("PriceMark", price_mark(symbol, price, multiplier_nano=NANO // 10, at=t, event_id=f"rsp-{n}")))
            t += SECOND_US
            extra.append(("PriceMark", price_mark(symbol, price * 7 // 10, multiplier_nano=NANO // 10, at=t, event_id=f"rsf-{n}")))
    # Interleave: the extra steps land between the ordinary operations, in order of drawing.
    merged, step = [], max(1, len(events) // max(1, len(extra)))
    for i, ev in enumerate(events):
        merged.append(ev)
        if extra and i % step == step - 1:
            merged.append(extra.pop(0))
    return merged + extra


def state_price_after(events: list[Event], symbol: str) -> int:
    price = 0
    for subject, record in events:
        if subject == "PriceMark" and record["instrument"] == symbol and record["price_micro_usd"] > 0:
            price = record["price_micro_usd"]
    return price or 200 * USD


# Found by hypothesis against the price-shift limit without a backstop: the BTC mark at 50,000 liquidates
# 'a' (short 3 calls), the limit stops the close after 1.86 of them and 'a' was left under MM. Kept as an
# explicit example so it runs every time (the backstop now finishes the close in the same event).
SHIFT_LIMIT_LEFT_UNDER_MM = [("btc", 40_000_000_000, False), ("settle", 0, False),
                             *[("trade", "a", "BTC-P-50000", 0)] * 20,
                             ("nudge", -60_000_000), ("trade", "a", "BTC-C-50000", -3_000_000_000), ("dup", 0),
                             ("btc", 50_000_000_000, False)]


# Found by hypothesis (third session, 600 examples; fails on main 6dc76d1 too): the reverse split's marks are
# dated after the trades they are interleaved with, so time goes back and forth. A mark dated later found
# MSFT stale; 'c' then traded at an earlier time (MSFT fresh there: armed with its stale step unbudgeted);
# at the next later-dated mark MSFT was still in the stale set, so its step never re-valued 'c', and the
# indexed sweep left 'c' under MM where the reference liquidated it.
STALE_SET_AFTER_TIME_WENT_BACK = [("trade", "a", "BTC-P-50000", 0), ("nudge", -60_000_000), ("dup", 0), ("rsplit", "AAPL"),
                                  ("trade", "a", "BTC-P-50000", 0), ("settle", 0, False),
                                  *[("trade", "a", "BTC-P-50000", 0)] * 15,
                                  ("trade", "c", "BTC-P-50000", 1_000_000_000), ("nudge", -60_000_000),
                                  ("advance", 1_200_000_000), ("trade", "a", "BTC-P-50000", 0)]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(SURVEILLANCE_OPS, min_size=25, max_size=70).map(with_steps))
@example(with_steps(SHIFT_LIMIT_LEFT_UNDER_MM))
@example(with_steps(STALE_SET_AFTER_TIME_WENT_BACK))
def test_indexed_and_reference_surveillance_take_the_same_decisions(events):
    _, _, closest = run_both(events, **PARAMS)
    target(-min(closest, 10**15) / USD, label="smallest margin buffer (USD)")


def test_generated_week_same_decisions_same_hash_and_no_account_left_under_margin():
    """The scenario generator's week (crash, weekend, split, dividend) at a size the reference can afford."""
    rows = list(generate(ScenarioConfig(accounts=120, events=6_000, seed=11)))
    fast_outs: list = []
    ref_outs: list = []
    applied_at: list[int] = []

    def fast_sink(n, entry, res) -> None:
        out, record = res.outcome, res.record
        fast_outs.append(decisions(out))
        if out.rejection is None and not out.duplicate and record is not None:
            assert_invariant(live, record["occurred_at"], record["event_id"])
            applied_at.append(n)

    live = LedgerState()  # the sink checks the invariant on the state being folded
    fast_result = replay(rows, sink=fast_sink, state=live)
    ref = replay(rows, reference=True, sink=lambda n, entry, res: ref_outs.append(decisions(res.outcome)))
    assert fast_outs == ref_outs
    assert fast_result.hash() == ref.hash()
    liquidations = sum(1 for d in fast_outs for subject, _ in d[3] if subject == "LiquidationExecuted")
    assert liquidations > 0  # the crash must bite, or the comparison proves little
    assert len(applied_at) > 5_000


# ----------------------------------------------------------------------------- each cause, by hand


def edge_desk(volume_nano: int = -NANO, **params: int):
    """Alice: one ATM put (short by default) with collateral about 200 USD above MM; pool lean on (alpha 10 %), no fee."""
    lg = desk(haircut_ppm=0, trade_fee_ppm=0, initial_margin_ratio_ppm=100_000, **params)
    margins = short_margins if volume_nano < 0 else long_margins
    mm = margins("PUT", K, K, PPM, WEEK_S, lg.state.params)[0]
    lg.fund("alice", "AAPL", -(-(mm + 200 * USD) * NANO // (200 * USD)))
    lg.ok("TradeRequest", trade("alice", SERIES, volume_nano))
    return lg


def equity_of(lg, account: str, at_us: int):
    return account_health(lg.state, lg.state.accounts[account], at_us)


def test_a_large_buy_does_not_raise_the_buyers_equity():
    """Valued at theo, the slippage a buyer pays is a cost: equity falls by at least the fee (was: rose)."""
    lg = desk(haircut_ppm=0, trade_fee_ppm=300)
    lg.fund("bob", "AAPL", 5_000 * NANO)
    before = equity_of(lg, "bob", T0).equity_micro_usd
    out = lg.ok("TradeRequest", trade("bob", SERIES, 20 * NANO))
    inputs = lg.emitted(out, "RequestOutcome")[0]["inputs"]
    theo = inputs["theo_micro_usd"]
    assert inputs["cost_micro_usd"] > 20 * theo  # the lean made the block dearer than theo
    after = equity_of(lg, "bob", T0).equity_micro_usd
    assert after == before + 20 * theo - inputs["cost_micro_usd"] - inputs["fee_micro_usd"]
    assert after < before - inputs["fee_micro_usd"]


def test_liquidation_never_pays_more_than_closing():
    """Two identical desks but for extra collateral: the move liquidates alice in one; in the other she
    closes by herself at the same instant. The liquidation's close is never better for her than that."""
    liquidated, closing = edge_desk(), edge_desk()
    closing.fund("alice", "AAPL", 1_000 * NANO, at=T0 + 1)  # margin collateral is not pool liquidity
    for lg in (liquidated, closing):
        lg.fund("bob", "AAPL", 2_000 * NANO, at=T0 + 1)
        lg.ok("TradeRequest", trade("bob", SERIES, -5 * NANO, at=T0 + 1, event_id="bob"))  # traders net short
    at = T0 + 2 * SECOND_US
    out = liquidated.ok("PriceMark", crypto_mark("BTC", 48_800 * USD, at=at, event_id="move"))
    (executed,) = liquidated.emitted(out, "LiquidationExecuted")
    (closed,) = executed["closed_positions"]
    assert closing.emitted(closing.ok("PriceMark", crypto_mark("BTC", 48_800 * USD, at=at, event_id="move")),
                           "LiquidationExecuted") == []
    # the close factor bought back half (health was above 0.95); alice closes the same half herself
    assert closed["volume_nano"] == -NANO // 2
    own = closing.ok("TradeRequest", trade("alice", SERIES, -closed["volume_nano"], at=at, event_id="own-close"))
    own_value = -closing.emitted(own, "RequestOutcome")[0]["inputs"]["cost_micro_usd"]
    assert closed["value_micro_usd"] == own_value  # the same curve, the same instant: not a cent better


def first_liquidation(lg, events: list[Event]) -> int | None:
    """Index of the event whose outcome liquidates alice, checked against the reference mode."""
    ref = reference_state(**{k: v for k, v in lg.state.params.as_dict().items()})
    for subject, record in lg.inputs:
        apply(ref, subject, record)
    found = None
    for n, (subject, record) in enumerate(events):
        out = lg.apply(subject, record)
        out_ref = apply(ref, subject, record)
        assert decisions(out) == decisions(out_ref), (n, subject)
        if found is None and any(e["account"] == "alice" for e in lg.emitted(out, "LiquidationTriggered")):
            found = n
    return found


def test_flow_and_liquidity_that_speed_up_funding_get_the_account_checked():
    """Another trader's flow and an LP's exit move no one's equity (theo), but they lean the mark up and
    so the funding a long pays: once the premium outgrows the bound alice (long) was armed with, she must
    be re-armed at once, and she is liquidated at the first minute mark whose accrual leaves her under
    MM, in the same event as the reference that re-values everyone every time."""
    lg = desk(haircut_ppm=0, trade_fee_ppm=0, initial_margin_ratio_ppm=100_000, pool_margin_multiplier_ppm=0)
    series = lg.state.series[SERIES]
    q = quote(lg.state, series)
    cost = options.trade_cost_micro_usd(q.theo_micro_usd, K, q.delta_wad, 100_000, lean_liquidity_now(lg.state), 0, NANO)
    collateral = q.long_mm_micro_usd + 200 * USD + cost - q.theo_micro_usd  # 200 USD above MM after the slippage
    lg.fund("alice", "AAPL", -(-collateral * NANO // (200 * USD)))
    lg.ok("TradeRequest", trade("alice", SERIES, NANO))
    premium_armed = series.mark_micro_usd - series.intrinsic_micro_usd
    lg.fund("whale", "AAPL", 50_000 * NANO)
    before = equity_of(lg, "alice", T0 + 1).equity_micro_usd
    lg.ok("TradeRequest", trade("whale", SERIES, 60 * NANO, at=T0 + 1, event_id="whale"))
    lg.ok("LpRedeemRequest", {"event_id": "lp-exit", "occurred_at": T0 + 2, "source": "venue", "account": "lp",
                              "shares_nano": lg.state.accounts["lp"].lp_shares_nano * 95 // 100, "payout_symbol": "AAPL"})
    assert equity_of(lg, "alice", T0 + 2).equity_micro_usd == before  # neither moved her equity
    minutes = []  # BTC at the same spot every minute, AAPL kept fresh: only funding moves
    for m in range(1, 360):
        minutes.append(("PriceMark", crypto_mark("BTC", K, at=T0 + m * 60 * SECOND_US, event_id=f"m{m}")))
        minutes.append(("PriceMark", price_mark("AAPL", 200 * USD, at=T0 + m * 60 * SECOND_US, event_id=f"a{m}")))
    n = first_liquidation(lg, minutes)
    # Past the bound alice was armed with (twice the larger of the premium and K/u, ledger.watch_index):
    # the LP's exit thins the pool's liquidity, so the lean grows past it.
    armed_bound = 2 * max(premium_armed, options.time_value_cap_micro_usd(K, PPM, WEEK_S))
    assert series.mark_micro_usd - series.intrinsic_micro_usd > armed_bound
    # The LP's exit (95 % of the pool, paid at the model value with no remove-liquidity penalty since the
    # third session) leaves a thin curve: the faster funding (about 39,900 USD a week by the liquidation,
    # 238 USD an hour; 8,566 USD a week when the penalty kept part of the exit in the pool) eats the 200 USD
    # buffer in well under an hour.
    assert series.mark_micro_usd - series.intrinsic_micro_usd > 30_000 * USD
    assert n is not None and 2 * 20 < n < 2 * 60


def test_a_volatility_rise_liquidates_at_once():
    lg = edge_desk()
    n = first_liquidation(lg, [("PriceMark", crypto_mark("BTC", K, volatility_ppm=2 * PPM, at=T0 + SECOND_US))])
    assert n == 0


def test_a_pool_liquidity_change_moves_no_equity():
    """An LP's withdrawal moves the lean and so the funding premium; equity at theo is untouched."""
    lg = edge_desk()
    before = equity_of(lg, "alice", T0 + 1)
    out = lg.ok("LpRedeemRequest", {"event_id": "redeem", "occurred_at": T0 + 1, "source": "venue", "account": "lp",
                                    "shares_nano": 1_000 * NANO, "payout_symbol": "AAPL"})
    assert out.rejection is None
    assert equity_of(lg, "alice", T0 + 1) == before


def test_a_reverse_split_followed_by_a_fall_liquidates_at_once():
    """Triggers are in price x multiplier: a 1-for-10 reverse split (price x10, multiplier /10) is no move,
    and the fall after it is seen at once (triggers in price units alone missed it for hours). alice's buffer
    (1,000 USD) outlasts the pause window's closed-market add-on (10 % of about 7,700 USD), which ends with
    the open-market mark at the new multiplier; the 15 % fall then takes about 1,150 USD."""
    lg = desk(haircut_ppm=0, trade_fee_ppm=0, initial_margin_ratio_ppm=100_000)
    mm, _ = short_margins("PUT", K, K, PPM, WEEK_S, lg.state.params)
    lg.fund("alice", "AAPL", -(-(mm + 1_000 * USD) * NANO // (200 * USD)))
    lg.ok("TradeRequest", trade("alice", SERIES, -NANO))
    events = [
        ("CorporateAction", split("AAPL", 1, 10, at=T0 + 1, action_ref="rs")),
        ("PriceMark", price_mark("AAPL", 2_000 * USD, multiplier_nano=NANO // 10, at=T0 + 2)),
        ("PriceMark", price_mark("AAPL", 1_700 * USD, multiplier_nano=NANO // 10, at=T0 + 3)),
    ]
    assert first_liquidation(lg, events) == 2


def test_a_trade_one_tick_after_a_move_pays_the_current_price():
    lg = desk(haircut_ppm=0, trade_fee_ppm=0, pool_alpha_ppm=0)
    lg.fund("bob", "AAPL", 500 * NANO)
    lg.ok("PriceMark", crypto_mark("BTC", K + USD, at=T0 + 1))  # one dollar: far below any reprice threshold
    out = lg.ok("TradeRequest", trade("bob", SERIES, NANO, at=T0 + 2))
    inputs = lg.emitted(out, "RequestOutcome")[0]["inputs"]
    current = options.theoretical_price_micro_usd("PUT", K + USD, K, PPM, WEEK_S)
    assert inputs["spot_micro_usd"] == K + USD
    assert inputs["cost_micro_usd"] == current  # alpha 0: exactly theo at the live spot
    assert current != options.theoretical_price_micro_usd("PUT", K, K, PPM, WEEK_S)


def test_funding_is_accrued_to_the_trade_before_the_position_changes():
    lg = desk(haircut_ppm=0, trade_fee_ppm=0, pool_alpha_ppm=0)
    lg.fund("bob", "AAPL", 500 * NANO)
    lg.ok("TradeRequest", trade("bob", SERIES, NANO))
    theo = quote(lg.state, lg.state.series[SERIES]).theo_micro_usd
    assert lg.state.series[SERIES].mark_micro_usd == theo  # alpha 0: no lean
    lg.ok("PriceMark", crypto_mark("BTC", K, at=T0 + 60 * MINUTE_US))
    out = lg.ok("TradeRequest", trade("bob", SERIES, NANO, at=T0 + 70 * MINUTE_US))  # ten minutes after the last mark
    inputs = lg.emitted(out, "RequestOutcome")[0]["inputs"]
    # mark = theo (alpha 0), intrinsic 0: the long owes theo x 70 min / 7 d, rounded up
    assert inputs["funding_settled_micro_usd"] == -(-theo * 70 * 60 // WEEK_S)


def test_a_premium_past_the_armed_bound_queues_the_series_holders():
    """Time triggers assume a bound on the premium each side pays; a refresh that outgrows it raises the
    bound to four times the premium and queues the series' holders (they were armed with the old one)."""
    lg = edge_desk(volume_nano=NANO)
    series = lg.state.series[SERIES]
    surv = lg.state.surveillance
    bound = surv.funding_bound_micro_usd[(SERIES, 1)]  # longs pay: mark above intrinsic
    assert bound >= series.mark_micro_usd - series.intrinsic_micro_usd > 0
    series.mark_micro_usd = series.intrinsic_micro_usd + bound + 1  # as a refresh after heavy flow would set it
    bound_funding_premium(lg.state, series)
    assert surv.funding_bound_micro_usd[(SERIES, 1)] == 4 * (bound + 1)
    assert "alice" in surv.pending
    surv.pending.clear()
    bound_funding_premium(lg.state, series)  # within the new bound: nothing to do
    assert surv.pending == {}
    series.mark_micro_usd = series.intrinsic_micro_usd - 1  # now the shorts pay: their bound was 0
    bound_funding_premium(lg.state, series)
    # a side's first bound starts above the time value's largest value, K/u, so V alone never raises it
    cap = options.time_value_cap_micro_usd(K, PPM, WEEK_S)
    assert 0 <= cap - options.time_value_micro_usd(K, K, PPM, WEEK_S) < 1_000  # K/u, rounded up from an upper bound on u
    assert surv.funding_bound_micro_usd[(SERIES, -1)] == 2 * cap and "alice" in surv.pending


@settings(max_examples=300, deadline=None)
@given(st.integers(-10**12, 10**12), st.integers(0, 10**12), st.integers(0, 10**13), st.integers(1, 10**8), st.integers(0, 10**30))
def test_inlined_funding_accrual_equals_the_options_formula(mark, intrinsic, dt_us, period_s, cum):
    from ledger.risk import accrued_index_micro_usd_wad
    from ledger.state import SeriesState

    series = SeriesState("S", "BTC", "CALL", 1, period_s, cum_funding_micro_usd_wad=cum, last_funding_us=10**15,
                         spot_micro_usd=1, mark_micro_usd=mark, intrinsic_micro_usd=intrinsic)
    expected = cum + options.funding_index_delta_micro_usd_wad(mark, intrinsic, dt_us, period_s)
    assert accrued_index_micro_usd_wad(series, 10**15 + dt_us) == expected


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10**11), st.integers(1, 10**12), st.integers(-10**18, 10**18), st.integers(0, 10**6),
       st.integers(-10**12, 10**15), st.integers(-10**13, 10**13))
def test_inlined_close_cost_equals_the_options_formula(theo, spot, delta, alpha, lean, net):
    from ledger.risk import SeriesView, close_cost_micro_usd

    view = SeriesView(net, 0, 0, theo, spot, delta, 0)
    assert close_cost_micro_usd(view, alpha, lean) == options.trade_cost_micro_usd(theo, spot, delta, alpha, lean, 0, net)


def test_a_fall_then_a_market_close_liquidates_at_the_close():
    """Haircut steps are budgeted when an account is armed, or the account is watched for them: a fall
    that leaves too little room for the closed-market add-on must not hide the close that follows.
    Alice has a cash debt and no position (a round trip lost money), so AAPL is her only leg."""
    lg = desk(haircut_ppm=100_000, closed_market_addon_ppm=300_000, trade_fee_ppm=0, pool_alpha_ppm=0,
              initial_margin_ratio_ppm=100_000)
    lg.fund("alice", "AAPL", 60 * NANO)  # 12_000 USD gross, 10_800 after the haircut
    lg.ok("TradeRequest", trade("alice", SERIES, 5 * NANO // 2))  # long 2.5 ATM puts at theo
    lg.ok("PriceMark", crypto_mark("BTC", 55_000 * USD, at=T0 + 1))
    lg.ok("TradeRequest", trade("alice", SERIES, -5 * NANO // 2, at=T0 + 2))  # sold back cheaper: a debt
    alice = lg.state.accounts["alice"]
    assert alice.positions == {} and -4_000 * USD < alice.cash_micro_usd < -3_000 * USD
    debt = -alice.cash_micro_usd
    assert 10_800 * USD - debt > 12_000 * USD // 2  # room for both add-ons (50 % of the gross): armed with them budgeted
    events = [
        ("PriceMark", price_mark("AAPL", 100 * USD, at=T0 + SECOND_US)),  # 5_400 after the haircut: equity still > 0
        ("PriceMark", price_mark("AAPL", 100 * USD, "CLOSED", at=T0 + 2 * SECOND_US)),  # add-on 30 %: 3_600 < the debt
    ]
    assert 5_400 * USD > debt > 3_600 * USD
    assert first_liquidation(lg, events) == 1


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(("CALL", "PUT")), st.integers(20_000, 200_000), st.integers(20_000, 200_000),
       st.integers(300_000, 2_000_000), st.sampled_from((86_400, 7 * 86_400, 30 * 86_400)),
       st.integers(-20_000, 20_000))
def test_option_slope_bounds_hold_within_their_window(kind, spot_usd, strike_usd, sigma, period, move_ppm):
    """|d(theo - MM)| over a move within the window never exceeds the local bound x the move (nor the
    global one), checked against ledger.options at both ends (plus a micro-USD per rounded figure)."""
    from ledger.quotes import SLOPE_WINDOW_PPM

    spot, strike, mmr = spot_usd * USD, strike_usd * USD, 100_000
    moved = spot + spot * move_ppm // PPM
    theo = options.theoretical_price_micro_usd(kind, spot, strike, sigma, period)
    intrinsic = options.intrinsic_micro_usd(kind, spot, strike)
    delta = options.delta_wad(kind, spot, strike, sigma, period)
    local = options.local_slope_bound_ppm(spot, sigma, period, mmr, theo - intrinsic, delta, SLOPE_WINDOW_PPM)
    assert local <= options.slope_bound_ppm(sigma, period, mmr)
    def buffer(s: int) -> int:
        return options.theoretical_price_micro_usd(kind, s, strike, sigma, period) - options.maintenance_margin_micro_usd(kind, s, strike, sigma, period, mmr)
    change = abs(buffer(moved) - buffer(spot))
    assert change <= local * abs(moved - spot) // PPM + 4, (change, local)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(("CALL", "PUT")), st.sampled_from((1, -1)), st.integers(20_000, 200_000), st.integers(20_000, 200_000),
       st.integers(300_000, 2_000_000), st.sampled_from((86_400, 7 * 86_400, 30 * 86_400)), st.integers(-20_000, 20_000))
def test_option_slopes_by_direction(kind, side, spot_usd, strike_usd, sigma, period, move_ppm):
    """A position loses through theo on one side only (long calls and short puts on a fall, the others on a
    rise); on the other side only its MM can rise: that side's loss stays within the MM part of the bound."""
    from ledger.quotes import SLOPE_WINDOW_PPM

    spot, strike, mmr = spot_usd * USD, strike_usd * USD, 100_000
    moved = spot + spot * move_ppm // PPM
    theo = options.theoretical_price_micro_usd(kind, spot, strike, sigma, period)
    intrinsic = options.intrinsic_micro_usd(kind, spot, strike)
    delta = options.delta_wad(kind, spot, strike, sigma, period)
    delta_part, mm_part = options.local_slope_parts_ppm(spot, sigma, period, mmr, theo - intrinsic, delta, SLOPE_WINDOW_PPM)

    def buffer(s: int) -> int:  # one contract, long (side 1) or short (side -1)
        return side * options.theoretical_price_micro_usd(kind, s, strike, sigma, period) - options.maintenance_margin_micro_usd(
            kind, s, strike, sigma, period, mmr)

    loss = buffer(spot) - buffer(moved)
    loses_on_fall = (side > 0) == (kind == "CALL")
    theo_side = (moved < spot) == loses_on_fall
    bound = (delta_part + mm_part) if theo_side else mm_part
    assert loss <= bound * abs(moved - spot) // PPM + 4, (loss, bound, theo_side)
