"""Liquidation rules: when the sweep after a price mark liquidates, what it leaves, and who never pays."""

from __future__ import annotations

from ledger_builders import (
    MINUTE_US,
    NANO,
    PPM,
    T0,
    USD,
    WEEK_S,
    Ledger,
    burn,
    crypto_mark,
    desk,
    fresh_state,
    posting_balances,
    price_mark,
    short_margins,
    state_balances,
    trade,
)

from ledger import options
from ledger.engine import apply
from ledger.state_hash import state_hash

SERIES = "BTC-P-50000"
K = 50_000 * USD


def mm_atm() -> int:
    """A short ATM put's MM (with the stress floor, DESIGN section 5): about 6_723.28 USD."""
    return short_margins("PUT", K, K, PPM, WEEK_S)[0]


def weekend_desk() -> Ledger:
    """Alice: 39 AAPL (10 % haircut) and one short ATM put; IM = MM; equity 6_970 USD (see the golden test)."""
    lg = desk(haircut_ppm=100_000, initial_margin_ratio_ppm=100_000, trade_fee_ppm=1_000, pool_alpha_ppm=0)
    lg.fund("alice", "AAPL", 39 * NANO)
    lg.ok("TradeRequest", trade("alice", SERIES, -NANO))
    return lg


def test_healthy_account_is_not_liquidated_by_marks():
    lg = weekend_desk()
    for n, price in enumerate((200, 199, 201, 196), start=1):
        out = lg.mark("AAPL", price * USD, at=T0 + n)
        assert lg.emitted(out, "LiquidationTriggered") == []
    # 196 USD: 39 x 196 x 0.9 = 6_879.6 USD collateral, equity 6_829.6 USD >= MM (about 6_723.28)
    assert mm_atm() <= 39 * 196 * USD * 9 // 10 - 50 * USD
    assert lg.state.accounts["alice"].positions


def test_stock_price_fall_liquidates_and_only_the_collateral_holder():
    lg = weekend_desk()
    lg.fund("carol", "AAPL", 5 * NANO)  # collateral, no position, no debt
    # AAPL to 160 USD: 39 x 160 x 0.9 = 5_616 USD, equity 5_566 USD < MM
    assert mm_atm() > 39 * 160 * USD * 9 // 10 - 50 * USD
    out = lg.mark("AAPL", 160 * USD, at=T0 + 1)
    assert [e["account"] for e in lg.emitted(out, "LiquidationTriggered")] == ["alice"]
    carol = lg.state.accounts["carol"]
    assert carol.margin_nano == {"AAPL": 5 * NANO} and carol.cash_micro_usd == 0


def test_stale_stock_price_addon_is_applied_at_the_next_mark():
    lg = weekend_desk()
    # 16 minutes without an AAPL mark: the price is stale, add-on 20 % on top of the 10 % haircut.
    at = T0 + 16 * MINUTE_US
    assert at - T0 > lg.state.params.price_staleness_limit_us
    collateral = 39 * 200 * USD * (PPM - 100_000 - 200_000) // PPM  # 5_460 USD
    # the short put also receives 16 minutes of funding (theo x 960 s / 604_800 s, about 3.88 USD)
    assert collateral - 50 * USD + 4 * USD < mm_atm()
    out = lg.ok("PriceMark", crypto_mark("BTC", K, at=at))
    (trigger,) = lg.emitted(out, "LiquidationTriggered")
    assert trigger["inputs"]["collateral_value_micro_usd"] == collateral


def test_account_with_a_cash_debt_and_no_position_is_liquidated_when_equity_turns_negative():
    # 1 % fee: 500 USD per contract (the premium cap on out-of-the-money fees lifted to 100 % of the premium,
    # about 2_445 USD, so the notional fee applies at the money)
    lg = desk(haircut_ppm=0, pool_alpha_ppm=0, trade_fee_ppm=10_000, otm_premium_fee_ppm=PPM)
    lg.fund("dave", "AAPL", 60 * NANO)  # 12_000 USD
    lg.ok("TradeRequest", trade("dave", SERIES, -NANO))
    lg.ok("TradeRequest", trade("dave", SERIES, NANO))  # round trip at theo: 2 x 500 USD of fees
    dave = lg.state.accounts["dave"]
    assert dave.positions == {} and dave.cash_micro_usd == -1_000 * USD
    # AAPL to 15 USD: 60 x 15 = 900 USD of collateral < 1_000 USD of debt
    out = lg.mark("AAPL", 15 * USD, at=T0 + 1)
    (executed,) = lg.emitted(out, "LiquidationExecuted")
    assert executed["closed_positions"] == []
    assert executed["debt_micro_usd"] == 1_000 * USD
    assert executed["penalty_micro_usd"] == 0  # no position, no maintenance margin, no penalty
    assert executed["seized"] == [{"symbol": "AAPL", "qty_nano": 60 * NANO, "value_micro_usd": 900 * USD}]
    # 900 USD of AAPL pays 900 / 1.05 = 857.142857 USD of the debt, the rest is bad debt
    paid = 900 * USD * PPM // (PPM + 50_000)
    assert paid == 857_142_857
    assert executed["shortfall_micro_usd"] == 1_000 * USD - paid
    assert dave.cash_micro_usd == 0 and dave.margin_nano == {}
    assert posting_balances(lg.postings) == state_balances(lg.state)


def test_penalty_is_capped_by_what_is_left():
    lg = weekend_desk()
    # AAPL to 8 USD: 39 AAPL = 312 USD gross (health far below 0.95: the whole position is closed); the
    # 50 USD debt takes 52.5 USD of it, the penalty (10 % of the MM closed, about 672 USD) gets the
    # remaining 259.5 USD only (there is no positive cash to take it from first).
    out = lg.mark("AAPL", 8 * USD, at=T0 + 1)
    (executed,) = lg.emitted(out, "LiquidationExecuted")
    assert executed["debt_micro_usd"] == 50 * USD
    debt_qty = 52_500_000 * NANO // (8 * USD)  # 52.5 / 8 = 6.5625 AAPL
    assert executed["seized"][0] == {"symbol": "AAPL", "qty_nano": debt_qty, "value_micro_usd": 52_500_000}
    assert executed["seized"][1] == {"symbol": "AAPL", "qty_nano": 39 * NANO - debt_qty, "value_micro_usd": 259_500_000}
    assert executed["penalty_micro_usd"] == 259_500_000
    assert executed["shortfall_micro_usd"] == 0
    assert lg.emitted(out, "BadDebtCovered") == []
    assert lg.state.accounts["alice"].margin_nano == {}
    assert lg.state.pool.insurance_tokens_nano == {"AAPL": 39 * NANO - debt_qty}


def test_several_accounts_in_one_sweep_are_liquidated_in_account_order_with_derived_ids():
    lg = desk(haircut_ppm=100_000, initial_margin_ratio_ppm=100_000, trade_fee_ppm=1_000, pool_alpha_ppm=0)
    for name in ("zoe", "bea", "max"):
        lg.fund(name, "AAPL", 39 * NANO)
        lg.ok("TradeRequest", trade(name, SERIES, -NANO))
    mark = price_mark("AAPL", 150 * USD, at=T0 + 1)
    out = lg.ok("PriceMark", mark)
    triggers = lg.emitted(out, "LiquidationTriggered")
    assert [t["account"] for t in triggers] == ["bea", "max", "zoe"]
    assert [t["event_id"] for t in triggers] == [f"liq-trigger:{mark['event_id']}:{n}" for n in ("bea", "max", "zoe")]
    ids = [r["event_id"] for _, r in out.emitted]
    assert len(ids) == len(set(ids))


def test_a_position_free_holder_and_the_lp_never_absorb_a_loss():
    lg = desk(haircut_ppm=0, pool_alpha_ppm=0, trade_fee_ppm=0, insurance_fee_share_ppm=0)
    lg.fund("carol", "AAPL", 10 * NANO)  # collateral only
    lg.fund("erin", "AAPL", 4 * NANO, margin=False)  # wallet only
    lg.fund("alice", "AAPL", 55 * NANO)
    lg.ok("TradeRequest", trade("alice", SERIES, -NANO))
    before = {n: (a.wallet_nano.copy(), a.margin_nano.copy(), a.cash_micro_usd, a.lp_shares_nano)
              for n, a in lg.state.accounts.items() if n != "alice"}
    out = lg.ok("PriceMark", crypto_mark("BTC", 30_000 * USD))  # alice's short put is deep underwater
    steps = {e["step"]: e["amount_micro_usd"] for e in lg.emitted(out, "BadDebtCovered")}
    assert steps["LP_SOCIALISED"] > 0
    after = {n: (a.wallet_nano, a.margin_nano, a.cash_micro_usd, a.lp_shares_nano)
             for n, a in lg.state.accounts.items() if n != "alice"}
    assert after == before  # the loss reaches LPs through the pool index only, never a balance
    lg.ok("Burn", burn("AAPL", "erin", 4 * NANO, at=T0 + 1))


def test_liquidation_replays_to_the_same_state_and_events():
    lg = weekend_desk()
    lg.ok("PriceMark", price_mark("AAPL", 150 * USD, at=T0 + 1))
    assert lg.state.counters.liquidations == 1
    state = fresh_state(initial_margin_ratio_ppm=100_000, trade_fee_ppm=1_000, pool_alpha_ppm=0)
    outs = [apply(state, subject, record) for subject, record in lg.inputs]
    assert state_hash(state) == lg.hash()
    assert [o.emitted for o in outs] == [o.emitted for o in lg.outcomes]
    assert [o.postings for o in outs] == [o.postings for o in lg.outcomes]


def test_small_moves_are_valued_at_the_live_spot_and_liquidate_on_the_mark_that_exhausts_the_buffer():
    """Positions are valued at the latest oracle spot, however small the move: no reprice threshold hides
    a loss. The expectation is worked from ledger.options directly, not through the ledger's quotes."""
    lg = desk(haircut_ppm=0, pool_alpha_ppm=0, trade_fee_ppm=0, initial_margin_ratio_ppm=100_000)
    mm = mm_atm()
    qty = -(-(mm + 15 * USD) * NANO // (200 * USD))  # collateral worth MM + 15 USD (rounded up)
    collateral = qty * 200 * USD // NANO
    lg.fund("alice", "AAPL", qty)
    theo_k = options.theoretical_price_micro_usd("PUT", K, K, PPM, WEEK_S)
    lg.ok("TradeRequest", trade("alice", SERIES, -NANO))  # short put at theo (alpha 0): cash = theo_k
    at, expected_step = T0, None
    for k in range(1, 30):  # 11-USD steps down, each far below any old reprice threshold (0.25 % = 125 USD)
        at += 1_000_000
        spot = K - 11 * USD * k
        out = lg.ok("PriceMark", crypto_mark("BTC", spot, at=at))
        # funding accrued meanwhile is tiny against the steps but counted: the short receives it
        series = lg.state.series[SERIES]
        funding_received = (series.cum_funding_micro_usd_wad - 0) // 10**18
        equity = collateral + theo_k - options.theoretical_price_micro_usd("PUT", spot, K, PPM, WEEK_S) + funding_received
        under = equity < short_margins("PUT", spot, K, PPM, WEEK_S)[0]
        liquidated = [e["account"] for e in lg.emitted(out, "LiquidationTriggered")]
        assert liquidated == (["alice"] if under else []), f"step {k}: equity {equity}"
        if under:
            expected_step = k
            break
    assert expected_step is not None and expected_step < 12  # within 121 USD: the old threshold hid it
