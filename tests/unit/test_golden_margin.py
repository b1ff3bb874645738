"""Golden margin scenarios: a weekend close that makes an option account liquidatable, and a
collateral withdrawal rejected for insufficient margin.

Per-contract option figures (theo, MM, IM) come from ledger.options (tested in test_options.py);
collateral values, haircuts, equity and the liquidation amounts are worked out by hand.
"""

from __future__ import annotations

from ledger_builders import (
    HOUR_US,
    MINUTE_US,
    NANO,
    PPM,
    T0,
    USD,
    WEEK_S,
    collateral_withdrawal,
    desk,
    short_margins,
    trade,
)

from ledger import options, reasons
from ledger.state_hash import balances_hash

SPOT = 50_000 * USD
STRIKE = 50_000 * USD
SIGMA = PPM  # 100 %/year
SERIES = "BTC-P-50000"


def test_weekend_closed_market_addon_makes_the_account_liquidatable():
    mmr, imr = 100_000, 100_000  # IM = MM per contract here (S x min_imr = 1_000 USD is lower)
    lg = desk(haircut_ppm=100_000, closed_market_addon_ppm=300_000, maintenance_margin_ratio_ppm=mmr,
              initial_margin_ratio_ppm=imr, trade_fee_ppm=1_000, pool_alpha_ppm=0)
    theo = options.theoretical_price_micro_usd("PUT", SPOT, STRIKE, SIGMA, WEEK_S)
    # A short's MM (DESIGN section 5): 1 % of spot + theo after a 10 % fall at 125 % volatility - intrinsic
    # now = 500 + about 6,223.28 - 0 = about 6,723.28 USD (Deri's formula gave 3,652.72 USD).
    mm, im = short_margins("PUT", SPOT, STRIKE, SIGMA, WEEK_S, lg.state.params)
    assert mm > options.maintenance_margin_micro_usd("PUT", SPOT, STRIKE, SIGMA, WEEK_S, mmr)
    assert im == mm

    lg.fund("alice", "AAPL", 39 * NANO)  # 39 AAPL in margin
    # Sell one put. With alpha = 0 the pool quotes theo: alice receives theo, pays a fee of
    # 1 contract x 50_000 USD x 1_000 ppm = 50 USD.
    fee = 50 * USD
    out = lg.ok("TradeRequest", trade("alice", SERIES, -1 * NANO))
    inputs = lg.emitted(out, "RequestOutcome")[0]["inputs"]
    # Market open: 39 x 200 USD = 7_800 USD gross, less the 10 % haircut = 7_020 USD
    collateral_open = 39 * 200 * USD * (PPM - 100_000) // PPM
    assert collateral_open == 7_020 * USD
    equity_open = collateral_open + (theo - fee) - theo  # collateral + cash + short put at mark
    assert equity_open == 6_970 * USD
    assert inputs["collateral_value_micro_usd"] == collateral_open
    assert inputs["equity_micro_usd"] == equity_open
    assert inputs["initial_margin_micro_usd"] == im
    assert equity_open >= im  # so the trade was allowed

    # An open-market mark at the same price changes nothing.
    out = lg.mark("AAPL", 200 * USD, "OPEN", at=T0 + 30 * MINUTE_US)
    assert lg.emitted(out, "LiquidationTriggered") == []

    # Friday close: same price, market CLOSED -> haircut 10 % + add-on 30 % = 40 %.
    collateral_closed = 39 * 200 * USD * (PPM - 100_000 - 300_000) // PPM
    assert collateral_closed == 4_680 * USD
    # Equity counts funding accrued to the event's time: for the hour since the trade the short put
    # receives (mark - intrinsic) x 1 h / 7 d = theo / 168 (mark = theo with alpha 0, intrinsic 0 at the
    # money), rounded down for the account.
    funding_received = theo * 3_600 // WEEK_S
    assert funding_received > 14 * USD
    equity_closed = collateral_closed + (theo - fee) - theo + funding_received
    assert equity_closed < mm  # about 4_644.55 USD < MM (about 6_723.28 USD): liquidatable
    out = lg.mark("AAPL", 200 * USD, "CLOSED", at=T0 + HOUR_US)
    (trigger,) = lg.emitted(out, "LiquidationTriggered")
    assert trigger["account"] == "alice"
    assert trigger["cause_event_id"] == out.event_id
    assert trigger["equity_micro_usd"] == equity_closed
    assert trigger["maintenance_margin_micro_usd"] == mm
    assert trigger["inputs"]["collateral_value_micro_usd"] == collateral_closed
    assert trigger["inputs"]["cash_micro_usd"] == theo - fee
    assert trigger["inputs"]["positions_value_micro_usd"] == -theo
    assert trigger["inputs"]["funding_owed_micro_usd"] == -funding_received

    # The liquidation settles the funding, then buys the put back along the curve (alpha 0: at theo,
    # exactly what alice would pay to close it herself), leaving a debt of the 50 USD fee less the
    # funding. Health is 4_644.55 / 6_723.28 = 0.69 < 0.95, so no close factor: the whole position goes.
    # It seizes debt x 1.05 of AAPL valued at the oracle less the closed-market band (200 x (1 - 30 %)
    # = 140 USD: a frozen weekend price is not what the token would fetch), and charges 10 % of the MM
    # closed to insurance, from cash first (there is none: a debt), then AAPL at the same 140 USD.
    (executed,) = lg.emitted(out, "LiquidationExecuted")
    assert executed["closed_positions"] == [
        {"series_id": SERIES, "volume_nano": -NANO, "mark_micro_usd": theo, "value_micro_usd": -theo}]
    debt = 50 * USD - funding_received
    seized_value = -(-debt * 105 // 100)  # debt x 1.05, rounded up
    seized_qty = -(-seized_value * NANO // (140 * USD))  # rounded up, against the account
    value_of_seized = seized_qty * 140 * USD // NANO
    penalty = -(-mm * 100_000 // PPM)  # ceil(10 % of MM)
    penalty_qty = -(-penalty * NANO // (140 * USD))
    assert executed["debt_micro_usd"] == debt
    assert executed["bonus_micro_usd"] == value_of_seized - debt
    assert executed["penalty_micro_usd"] == penalty
    assert executed["shortfall_micro_usd"] == 0
    assert executed["seized"] == [
        {"symbol": "AAPL", "qty_nano": seized_qty, "value_micro_usd": value_of_seized},
        {"symbol": "AAPL", "qty_nano": penalty_qty, "value_micro_usd": penalty},
    ]
    alice = lg.state.accounts["alice"]
    assert alice.positions == {}
    assert alice.cash_micro_usd == 0
    assert alice.margin_nano == {"AAPL": 39 * NANO - seized_qty - penalty_qty}


def test_collateral_withdrawal_rejected_for_insufficient_margin_leaves_the_hash_unchanged():
    mmr, imr, min_imr = 100_000, 150_000, 20_000  # RiskParams defaults
    lg = desk(haircut_ppm=100_000, trade_fee_ppm=1_000, pool_alpha_ppm=0)
    theo = options.theoretical_price_micro_usd("PUT", SPOT, STRIKE, SIGMA, WEEK_S)
    mm, im = short_margins("PUT", SPOT, STRIKE, SIGMA, WEEK_S, lg.state.params)  # IM = 1.5 x the stressed MM
    assert (mmr, imr, min_imr) == (100_000, 150_000, 20_000)
    fee = 50 * USD  # 1 contract x 50_000 USD x 0.1 %

    lg.fund("alice", "AAPL", 60 * NANO)
    lg.ok("TradeRequest", trade("alice", SERIES, -1 * NANO))
    cash = theo - fee
    # 60 AAPL x 200 USD x 0.9 = 10_800 USD; equity = 10_800 + cash - theo = 10_750 USD >= IM
    assert 60 * 200 * USD * 9 // 10 + cash - theo == 10_750 * USD

    # Withdrawing 5 AAPL leaves 55 x 200 x 0.9 = 9_900 USD, equity 9_850 USD < IM (about 10_084.92 USD).
    equity_after_5 = 55 * 200 * USD * 9 // 10 + cash - theo
    assert equity_after_5 == 9_850 * USD
    assert equity_after_5 < im
    before, balances_hash_before = lg.hash(), balances_hash(lg.state)
    request = collateral_withdrawal("alice", "AAPL", 5 * NANO, at=T0 + 1)
    out = lg.rejected("CollateralWithdrawalRequest", request, reasons.INSUFFICIENT_MARGIN)
    assert lg.hash() != before and balances_hash(lg.state) == balances_hash_before  # only the decided id is new
    (answer,) = lg.emitted(out, "RequestOutcome")
    assert answer["decision"] == "REJECTED" and answer["request_kind"] == "COLLATERAL_WITHDRAWAL"
    assert answer["key"] == "alice" and answer["request_event_id"] == request["event_id"]
    assert answer["inputs"] == {
        "collateral_value_micro_usd": 9_900 * USD,
        "positions_value_micro_usd": -theo,
        "funding_owed_micro_usd": 0,
        "equity_micro_usd": 9_850 * USD,
        "maintenance_margin_micro_usd": mm,
        "initial_margin_micro_usd": im,
        "qty_nano": 5 * NANO,
    }
    assert lg.state.accounts["alice"].margin_nano == {"AAPL": 60 * NANO}

    # 3 AAPL is fine: 57 x 200 x 0.9 = 10_260 USD, equity 10_210 USD >= IM.
    equity_after_3 = 57 * 200 * USD * 9 // 10 + cash - theo
    assert equity_after_3 == 10_210 * USD >= im
    out = lg.ok("CollateralWithdrawalRequest", collateral_withdrawal("alice", "AAPL", 3 * NANO, at=T0 + 2))
    assert lg.emitted(out, "RequestOutcome")[0]["inputs"]["equity_micro_usd"] == 10_210 * USD
    assert [(p.debit_account, p.credit_account, p.amount_minor) for p in out.postings] == [
        ("user:alice:margin:AAPL", "user:alice:wallet:AAPL", 3 * NANO)
    ]
    alice = lg.state.accounts["alice"]
    assert alice.margin_nano["AAPL"] == 57 * NANO and alice.wallet_nano["AAPL"] == 3 * NANO
