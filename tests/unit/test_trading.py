"""Market and trade rules: price marks, series listings, option trades against the pool, funding."""

from __future__ import annotations

import pytest
from ledger_builders import (
    MINUTE_US,
    NANO,
    PPM,
    T0,
    USD,
    WEEK_S,
    crypto_mark,
    desk,
    posting_balances,
    price_mark,
    series_listed,
    short_margins,
    state_balances,
    trade,
)

from ledger import options, reasons
from ledger.pool import pnl_per_share_micro_usd
from ledger.risk import pool_nav_micro_usd

SERIES = "BTC-P-50000"
CALL = "BTC-C-50000"
SPOT = 50_000 * USD
LIQUIDITY = 10_000 * 200 * USD  # the desk's LP put 10_000 AAPL at 200 USD in the pool: 2_000_000 USD
LP_SHARES = 2_000_000 * NANO


def theo_atm() -> int:
    return options.theoretical_price_micro_usd("PUT", SPOT, SPOT, PPM, WEEK_S)


def postings_of(out):
    return [(p.debit_account, p.credit_account, p.asset, p.amount_minor) for p in out.postings]


# ----------------------------------------------------------------------------- price marks


def test_price_mark_for_an_unknown_instrument_is_rejected():
    lg = desk()
    lg.rejected("PriceMark", price_mark("DOGE", 1 * USD), reasons.UNKNOWN_INSTRUMENT)
    # a crypto underlying is anything with a volatility: it is accepted and kept
    lg.ok("PriceMark", crypto_mark("ETH", 3_000 * USD, 800_000))
    assert lg.state.prices["ETH"].volatility_ppm == 800_000


@pytest.mark.parametrize("instrument,vol", [("AAPL", 0), ("BTC", PPM)])
@pytest.mark.parametrize("price", [0, -1])
def test_non_positive_price_is_rejected(instrument, vol, price):
    lg = desk()
    lg.rejected("PriceMark", price_mark(instrument, price, volatility_ppm=vol, at=T0 + 1), reasons.NON_POSITIVE_AMOUNT)


def test_out_of_order_mark_is_stale_and_equal_publication_time_is_accepted():
    lg = desk()
    late = price_mark("AAPL", 150 * USD, published_at=T0 - 1, at=T0 + MINUTE_US)
    lg.rejected("PriceMark", late, reasons.STALE_PRICE)
    assert lg.state.prices["AAPL"].price_micro_usd == 200 * USD
    lg.ok("PriceMark", price_mark("AAPL", 201 * USD, published_at=T0, at=T0 + MINUTE_US))
    assert lg.state.prices["AAPL"].price_micro_usd == 201 * USD
    lg.rejected("PriceMark", crypto_mark("BTC", 1 * USD, published_at=T0 - 1), reasons.STALE_PRICE)


def test_mark_with_zero_multiplier_is_malformed():
    lg = desk()
    lg.rejected("PriceMark", price_mark("AAPL", 200 * USD, multiplier_nano=0), reasons.MALFORMED)


def test_crypto_mark_refreshes_every_series_of_its_underlying_and_publishes_series_state():
    lg = desk(series=(series_listed(SERIES), series_listed(CALL, option_kind="CALL")))
    out = lg.crypto("BTC", 45_000 * USD, at=T0 + 1)
    states = lg.emitted(out, "SeriesState")
    assert [s["series_id"] for s in states] == [SERIES, CALL]
    put = lg.state.series[SERIES]
    assert put.spot_micro_usd == 45_000 * USD
    assert put.intrinsic_micro_usd == 5_000 * USD  # put: max(K - S, 0)
    assert lg.state.series[CALL].intrinsic_micro_usd == 0
    assert put.theo_micro_usd == options.theoretical_price_micro_usd("PUT", 45_000 * USD, SPOT, PPM, WEEK_S)
    assert states[0]["theo_micro_usd"] == put.theo_micro_usd
    assert states[0]["event_id"] == f"series:{out.event_id}:{SERIES}"


# ----------------------------------------------------------------------------- series listings


def test_series_listing_rules():
    lg = desk()
    lg.rejected("SeriesListed", series_listed(SERIES), reasons.ALREADY_LISTED)
    lg.rejected("SeriesListed", series_listed("X1", strike_micro_usd=0), reasons.NON_POSITIVE_AMOUNT)
    lg.rejected("SeriesListed", series_listed("X2", funding_period_s=0), reasons.NON_POSITIVE_AMOUNT)
    # listed before its underlying has a price: it exists but cannot trade yet
    lg.ok("SeriesListed", series_listed("ETH-C-3000", underlying="ETH", option_kind="CALL", strike_micro_usd=3_000 * USD))
    assert lg.state.series["ETH-C-3000"].spot_micro_usd == 0
    lg.fund("alice", "AAPL", 1_000 * NANO)
    lg.rejected("TradeRequest", trade("alice", "ETH-C-3000", NANO), reasons.STALE_PRICE)
    lg.crypto("ETH", 3_000 * USD)
    assert lg.state.series["ETH-C-3000"].spot_micro_usd == 3_000 * USD
    lg.ok("TradeRequest", trade("alice", "ETH-C-3000", NANO))


def test_series_on_a_stock_underlying_is_rejected_not_a_crash():
    """A stock mark carries no volatility: pricing an option on it must not raise inside the fold."""
    lg = desk()
    lg.rejected("SeriesListed", series_listed("AAPL-C-200", underlying="AAPL", option_kind="CALL",
                                               strike_micro_usd=200 * USD), reasons.UNKNOWN_INSTRUMENT)


# ----------------------------------------------------------------------------- trades


def test_trade_rejections_before_pricing():
    lg = desk()
    lg.fund("alice", "AAPL", 1_000 * NANO)
    lg.rejected("TradeRequest", trade("nobody", SERIES, NANO), reasons.UNKNOWN_ACCOUNT)
    lg.rejected("TradeRequest", trade("alice", "BTC-P-1", NANO), reasons.UNKNOWN_SERIES)
    lg.rejected("TradeRequest", trade("alice", SERIES, 0), reasons.NON_POSITIVE_AMOUNT)


def test_trade_needs_a_fresh_underlying_price():
    lg = desk()
    lg.fund("alice", "AAPL", 1_000 * NANO)
    limit = lg.state.params.price_staleness_limit_us  # 15 minutes
    lg.rejected("TradeRequest", trade("alice", SERIES, NANO, at=T0 + limit + 1), reasons.STALE_PRICE)
    lg.ok("TradeRequest", trade("alice", SERIES, NANO, at=T0 + limit))  # exactly at the limit: still fresh
    lg.crypto("BTC", SPOT, at=T0 + limit + 1)
    lg.ok("TradeRequest", trade("alice", SERIES, NANO, at=T0 + limit + 1))


def test_trade_on_a_halted_underlying_is_rejected():
    lg = desk()
    lg.fund("alice", "AAPL", 1_000 * NANO)
    lg.ok("PriceMark", price_mark("BTC", SPOT, "HALTED", volatility_ppm=PPM, at=T0 + 1))
    lg.rejected("TradeRequest", trade("alice", SERIES, NANO, at=T0 + 2), reasons.MARKET_CLOSED)


def test_trade_rejected_for_insufficient_margin_records_its_inputs():
    lg = desk(haircut_ppm=100_000)
    lg.fund("alice", "AAPL", 10 * NANO)  # 10 x 200 x 0.9 = 1_800 USD of collateral
    request = trade("alice", SERIES, -NANO)
    out = lg.rejected("TradeRequest", request, reasons.INSUFFICIENT_MARGIN)
    (answer,) = lg.emitted(out, "RequestOutcome")
    inputs = answer["inputs"]
    assert inputs["collateral_value_micro_usd"] == 1_800 * USD
    _, im = short_margins("PUT", SPOT, SPOT, PPM, WEEK_S)  # a short's IM, with the stress floor
    assert inputs["initial_margin_micro_usd"] == im
    assert inputs["equity_micro_usd"] == (
        inputs["collateral_value_micro_usd"] - inputs["cost_micro_usd"] - inputs["fee_micro_usd"]
        + inputs["positions_value_micro_usd"])
    assert inputs["equity_micro_usd"] < im
    alice = lg.state.accounts["alice"]
    assert alice.positions == {} and alice.cash_micro_usd == 0
    assert lg.state.series[SERIES].net_volume_nano == 0


def test_trade_rejected_for_pool_capacity():
    # 20 AAPL = 4_000 USD of pool liquidity (its delta cap raised: this is about IM capacity alone)
    lg = desk(lp_tokens_nano=20 * NANO, pool_delta_cap_ppm=100 * PPM)
    lg.fund("alice", "AAPL", 1_000 * NANO)
    # alice buys a put: the pool is short one, and a short's IM (about 6_417 USD with the stress floor)
    # exceeds the pool's capacity (NAV with its AAPL at the 10 % haircut)
    _, im = short_margins("PUT", SPOT, SPOT, PPM, WEEK_S)
    assert im > 4_000 * USD
    out = lg.rejected("TradeRequest", trade("alice", SERIES, NANO), reasons.POOL_CAPACITY)
    inputs = lg.emitted(out, "RequestOutcome")[0]["inputs"]
    assert inputs["pool_required_micro_usd"] == im  # IM on a net exposure of 1 contract x multiplier 1.0
    assert inputs["pool_capacity_micro_usd"] < im


def test_fee_and_premium_postings_with_the_dpmm():
    lg = desk(haircut_ppm=100_000)  # alpha 10 %, fee 300 ppm, 20 % of fees to insurance (defaults)
    lg.fund("alice", "AAPL", 100 * NANO)
    series = lg.state.series[SERIES]
    theo, delta = series.theo_micro_usd, series.delta_wad
    assert series.mark_micro_usd == theo  # no net volume, no lean

    out = lg.ok("TradeRequest", trade("alice", SERIES, 2 * NANO))
    cost = options.trade_cost_micro_usd(theo, SPOT, delta, 100_000, LIQUIDITY, 0, 2 * NANO)
    assert cost > 2 * theo  # buying leans the price up
    fee = 2 * 50_000 * USD * 300 // PPM  # 2 contracts x 50_000 USD x 300 ppm = 30 USD (exact)
    assert fee == 30 * USD
    insurance_fee = fee * 200_000 // PPM  # 6 USD
    assert postings_of(out) == [
        ("user:alice:margin:USD", "pool:main:USD", "USD", cost),
        ("user:alice:margin:USD", "pool:main:USD", "USD", fee - insurance_fee),
        ("user:alice:margin:USD", "pool:insurance:USD", "USD", insurance_fee),
    ]
    pool = lg.state.pool
    assert lg.state.accounts["alice"].cash_micro_usd == -(cost + fee)
    assert pool.cash_micro_usd == cost + fee - insurance_fee
    assert pool.insurance_cash_micro_usd == 6 * USD
    liquidity_after = LIQUIDITY + cost + fee - insurance_fee
    # The lean's k uses liquidity + LP PnL (Deri's _calculateK): the pool is now short 2 puts worth
    # 2 x theo, so its lean liquidity is the cash it holds less that; liquidity alone would lean less.
    lean_after = liquidity_after - 2 * theo
    assert series.mark_micro_usd == options.pool_mark_micro_usd(theo, SPOT, delta, 100_000, lean_after, 2 * NANO)
    assert series.mark_micro_usd > options.pool_mark_micro_usd(theo, SPOT, delta, 100_000, liquidity_after, 2 * NANO)
    assert series.mark_micro_usd > theo
    inputs = lg.emitted(out, "RequestOutcome")[0]["inputs"]
    assert (inputs["cost_micro_usd"], inputs["fee_micro_usd"], inputs["mark_before_micro_usd"]) == (cost, fee, theo)
    assert inputs["mark_after_micro_usd"] == series.mark_micro_usd

    # Selling back: the pool pays the (leaned, ceil against the trader) proceeds.
    out = lg.ok("TradeRequest", trade("alice", SERIES, -2 * NANO))
    proceeds = -options.trade_cost_micro_usd(theo, SPOT, delta, 100_000, lean_after, 2 * NANO, -2 * NANO)
    assert postings_of(out)[0] == ("pool:main:USD", "user:alice:margin:USD", "USD", proceeds)
    assert lg.state.accounts["alice"].positions == {}
    assert lg.state.accounts["alice"].cash_micro_usd == -(cost + fee) + proceeds - fee
    assert series.net_volume_nano == 0
    # Flat again: the LPs' PnL is the round trip's lean (cost - proceeds) and two fees net of insurance,
    # 24 USD each; per whole share of 2,000,000 (the PnL index counts every flow, DESIGN section 5).
    pnl = cost - proceeds + 2 * (fee - insurance_fee)
    assert pnl_per_share_micro_usd(lg.state, pool_nav_micro_usd(lg.state)) == pnl * NANO // LP_SHARES
    assert posting_balances(lg.postings) == state_balances(lg.state)


def test_funding_is_settled_when_the_position_changes():
    lg = desk(series=(series_listed(CALL, option_kind="CALL"),), pool_alpha_ppm=0, trade_fee_ppm=0)
    lg.fund("alice", "AAPL", 100 * NANO)
    theo = options.theoretical_price_micro_usd("CALL", SPOT, SPOT, PPM, WEEK_S)
    lg.ok("TradeRequest", trade("alice", CALL, NANO))  # long 1 ATM call at theo (alpha 0, no fee)
    alice = lg.state.accounts["alice"]
    assert alice.cash_micro_usd == -theo

    one_day = 86_400 * 1_000_000
    # a day later without a new BTC mark the price is stale
    lg.rejected("TradeRequest", trade("alice", CALL, -NANO, at=T0 + one_day), reasons.STALE_PRICE)
    lg.crypto("BTC", SPOT, at=T0 + one_day)  # same price: accrues one day of funding
    # mark - intrinsic = theo - 0 for one day of a 7-day period: theo / 7 per contract, the long pays
    series = lg.state.series[CALL]
    assert series.cum_funding_micro_usd_wad == (theo * 10**18 * 2 + 7) // 14  # theo / 7 x 1e18, half-even
    assert theo % 7 != 0
    owed = -(-theo // 7)  # ceil: rounded against the long
    assert alice.cash_micro_usd == -theo  # accrued, not yet settled

    out = lg.ok("TradeRequest", trade("alice", CALL, -NANO, at=T0 + one_day))
    assert postings_of(out) == [
        ("user:alice:margin:USD", "pool:main:USD", "USD", owed),  # funding settled first
        ("pool:main:USD", "user:alice:margin:USD", "USD", theo),  # then the close at theo
    ]
    assert alice.cash_micro_usd == -theo - owed + theo == -owed
    assert alice.positions == {}
    # Flat again with alpha and fees 0: the LPs earned the funding only (per whole share of 2,000,000).
    assert pnl_per_share_micro_usd(lg.state, pool_nav_micro_usd(lg.state)) == owed * NANO // LP_SHARES
    assert series.entry_index_sum == 0 and series.net_volume_nano == 0


def test_risk_reducing_trade_is_allowed_below_initial_margin():
    lg = desk(haircut_ppm=0, pool_alpha_ppm=0, trade_fee_ppm=0)
    mm, im = short_margins("PUT", SPOT, SPOT, PPM, WEEK_S)
    lg.fund("alice", "AAPL", 120 * NANO)  # 24_000 USD
    lg.ok("TradeRequest", trade("alice", SERIES, -2 * NANO))  # equity 24_000 USD >= 2 x IM (about 20_170)
    assert 2 * im <= 24_000 * USD
    # AAPL falls to 140 USD: equity 16_800 USD, below 2 x IM but above 2 x MM (about 13_447)
    lg.mark("AAPL", 140 * USD, at=T0 + 1)
    assert 2 * mm <= 120 * 140 * USD < 2 * im
    assert lg.state.accounts["alice"].positions[SERIES].volume_nano == -2 * NANO  # not liquidated
    lg.rejected("TradeRequest", trade("alice", SERIES, -NANO, at=T0 + 2), reasons.INSUFFICIENT_MARGIN)
    lg.ok("TradeRequest", trade("alice", SERIES, NANO, at=T0 + 3))  # buying one back reduces risk
    assert lg.state.accounts["alice"].positions[SERIES].volume_nano == -NANO
