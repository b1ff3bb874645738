"""Venue economics (issue 11): each exploit class of the review as a concrete scenario that fails on the
old rules, and the golden figures of the new ones, worked by hand in the comments."""

from __future__ import annotations

from ledger_builders import (
    MINUTE_US,
    NANO,
    PPM,
    T0,
    USD,
    WEEK_S,
    crypto_mark,
    desk,
    lp_deposit,
    lp_redeem,
    posting_balances,
    price_mark,
    series_listed,
    state_balances,
    trade,
)

from dataclasses import fields

from ledger import options, reasons
from ledger.params import RiskParams
from ledger.risk import pool_nav_micro_usd, share_value_micro_usd_per_share

SERIES = "BTC-P-50000"


def _known(**overrides: int) -> dict[str, int]:
    """Only the parameters this version of the rules has (so each scenario also runs on the old rules)."""
    names = {f.name for f in fields(RiskParams)}
    return {k: v for k, v in overrides.items() if k in names}


def _share_value(lg) -> int:
    return share_value_micro_usd_per_share(lg.state.pool, pool_nav_micro_usd(lg.state))


def _wallet_value(lg, account: str, price_micro_usd: int) -> int:
    acct = lg.state.accounts[account]
    return acct.wallet_nano.get("AAPL", 0) * price_micro_usd // NANO + max(acct.cash_micro_usd, 0)


# ----------------------------------------------------------------------------- 1. LP shares


def _book_with_exposure():
    """LP 'lp' put 10,000 AAPL (2,000,000 USD) in; 'alice' bought 20 puts: the pool is short 20 puts and
    NAV depends on the lean (the curve it would close along); 'eve' holds 50,000 AAPL (10,000,000 USD)."""
    lg = desk(lp_tokens_nano=10_000 * NANO, pool_lean_liquidity_floor_micro_usd=USD)
    lg.fund("alice", "AAPL", 2_000 * NANO)
    lg.ok("TradeRequest", trade("alice", SERIES, 20 * NANO))
    lg.fund("eve", "AAPL", 50_000 * NANO, margin=False)
    return lg


def test_deposit_wait_redeem_does_not_profit_and_the_stayers_do_not_pay():
    lg = _book_with_exposure()
    value_in = 50_000 * 200 * USD
    before = _share_value(lg)
    lg.ok("LpDeposit", lp_deposit("eve", "AAPL", 50_000 * NANO, at=T0 + 1))
    # The deposit flattens the curve (lean liquidity 2M -> 12M USD): closing the pool's short costs less,
    # NAV jumps for every share. A reprice at the unchanged price, then eve redeems all her shares.
    lg.ok("PriceMark", crypto_mark("BTC", 50_000 * USD, at=T0 + 2))
    lg.ok("PriceMark", price_mark("AAPL", 200 * USD, at=T0 + 2))
    out = lg.ok("LpRedeemRequest", lp_redeem("eve", lg.state.accounts["eve"].lp_shares_nano, "AAPL", at=T0 + 3))
    value_out = _wallet_value(lg, "eve", 200 * USD)
    assert value_out <= value_in, f"deposit-wait-redeem gained {value_out - value_in} micro-USD"
    assert _share_value(lg) >= before  # the LP who stayed lost nothing to her round trip
    answer = lg.emitted(out, "RequestOutcome")[0]["inputs"]
    assert answer["penalty_micro_usd"] > 0  # the thinner curve the withdrawal leaves is charged to her
    assert posting_balances(lg.postings) == state_balances(lg.state)


def test_deposit_into_a_pool_with_nav_at_or_below_zero_is_rejected():
    # Limits off so that a crash can take the pool's NAV below zero (what they exist to prevent).
    lg = desk(lp_tokens_nano=100 * NANO, **_known(pool_stress_limit_ppm=10**9, pool_delta_cap_ppm=10**9))  # NAV 20,000 USD
    lg.fund("alice", "AAPL", 10_000 * NANO)
    lg.ok("TradeRequest", trade("alice", SERIES, 3 * NANO))
    lg.ok("PriceMark", crypto_mark("BTC", 20_000 * USD, at=T0 + 1))  # each put now worth > 30,000 USD
    lg.ok("PriceMark", price_mark("AAPL", 200 * USD, at=T0 + 1))
    assert pool_nav_micro_usd(lg.state) < 0
    lg.fund("bob", "AAPL", 10 * NANO, margin=False, at=T0 + 1)
    lg.rejected("LpDeposit", lp_deposit("bob", "AAPL", 10 * NANO, at=T0 + 2), reasons.POOL_INSOLVENT)
    assert lg.state.accounts["bob"].lp_shares_nano == 0


def _two_token_pool():
    """'lp' and 'lp2' each put 50 AAPL (200 USD) and 25 MSFT (400 USD) in: 20,000 USD each, 40,000 shares."""
    lg = desk(lp_tokens_nano=0, series=())
    lg.list_stock("MSFT", 100_000)
    lg.mark("MSFT", 400 * USD)
    for lp in ("lp", "lp2"):
        lg.fund(lp, "AAPL", 50 * NANO, margin=False)
        lg.fund(lp, "MSFT", 25 * NANO, margin=False)
        lg.ok("LpDeposit", lp_deposit(lp, "AAPL", 50 * NANO))
        lg.ok("LpDeposit", lp_deposit(lp, "MSFT", 25 * NANO))
    return lg


def test_a_redeemer_cannot_leave_a_frozen_price_to_the_stayers_nor_pick_the_payout_token():
    """MSFT's market closes at 400 USD; lp redeems half the pool while its price is frozen, asking for AAPL;
    MSFT reopens 10 % lower. The stayer (lp2) must be no worse off than had lp not redeemed at all."""
    twin = _two_token_pool()
    lg = _two_token_pool()
    for ledger in (lg, twin):
        ledger.mark("MSFT", 400 * USD, "CLOSED", at=T0 + 1)
    out = lg.ok("LpRedeemRequest", lp_redeem("lp", 20_000 * NANO, "AAPL", at=T0 + 2))
    for ledger in (lg, twin):
        ledger.mark("MSFT", 360 * USD, at=T0 + 3)
        ledger.mark("AAPL", 200 * USD, at=T0 + 3)
    assert _share_value(lg) >= _share_value(twin), "the stayer paid for the redeemer's exit at a frozen price"
    # Paid pro rata: the same fraction of both tokens, whatever payout_symbol asked for. NAV_low counts
    # MSFT at 400 x (1 - 10 %): 100 x 200 + 50 x 360 = 38,000 USD for 40,000 shares; lp's 20,000 shares
    # are worth 19,000 USD, half the pool's (low-valued) tokens: 50 AAPL and 25 MSFT.
    inputs = lg.emitted(out, "RequestOutcome")[0]["inputs"]
    assert inputs["nav_low_micro_usd"] == 38_000 * USD
    assert inputs["value_micro_usd"] == 19_000 * USD
    assert (inputs["qty_nano:AAPL"], inputs["qty_nano:MSFT"]) == (50 * NANO, 25 * NANO)
    assert lg.state.accounts["lp"].wallet_nano["MSFT"] == 25 * NANO


def test_a_depositor_buys_shares_at_the_high_edge_while_a_pool_price_is_frozen():
    """MSFT closed at 400: a deposit buys shares at NAV with MSFT at 400 x 1.1; if MSFT reopens 10 % higher
    the depositor has still not bought the stayers' gain cheaply."""
    twin = _two_token_pool()
    lg = _two_token_pool()
    for ledger in (lg, twin):
        ledger.mark("MSFT", 400 * USD, "CLOSED", at=T0 + 1)
    lg.fund("eve", "AAPL", 100 * NANO, margin=False, at=T0 + 1)
    lg.ok("LpDeposit", lp_deposit("eve", "AAPL", 100 * NANO, at=T0 + 2))
    # NAV_high = 100 x 200 + 50 x 440 = 42,000 USD: 20,000 USD buys 40,000 x 20,000 / 42,000 shares
    assert lg.state.accounts["eve"].lp_shares_nano == 20_000 * USD * (40_000 * NANO) // (42_000 * USD)
    for ledger in (lg, twin):
        ledger.mark("MSFT", 440 * USD, at=T0 + 3)
        ledger.mark("AAPL", 200 * USD, at=T0 + 3)
    assert _share_value(lg) >= _share_value(twin)


# ----------------------------------------------------------------------------- 2. pool capacity

CALL = "BTC-C-50000"


def _two_series_desk():
    return desk(lp_tokens_nano=10_000 * NANO, series=(series_listed(CALL, option_kind="CALL"), series_listed()))


def _pool_dollar_delta(lg) -> int:
    """The pool's net dollar delta on BTC from the series as last refreshed (the pool holds -net)."""
    total = 0
    for s in lg.state.series.values():
        total -= s.net_volume_nano * s.delta_wad * s.spot_micro_usd // (NANO * 10**18)
    return total


def test_the_pool_cannot_be_made_short_more_delta_than_its_capacity():
    """alice buys calls 5 at a time: before the cap the pool (2,000,000 USD of AAPL, 1,800,000 at the 10 %
    haircut) ended up short 5,000,000 USD of BTC delta, 2.5x its NAV; now the trade that would take
    it past its capacity is refused pool_capacity and the pool stays within it."""
    lg = _two_series_desk()
    lg.fund("alice", "AAPL", 20_000 * NANO)
    refused = None
    for i in range(40):
        out = lg.apply("TradeRequest", trade("alice", CALL, 5 * NANO, at=T0 + i))
        if out.rejection is not None:
            refused = out
            break
    capacity = pool_nav_micro_usd(lg.state) * 9 // 10  # NAV is all AAPL (and cash): 10 % haircut
    assert abs(_pool_dollar_delta(lg)) <= capacity + 5 * 50_000 * USD // 100, "pool short delta beyond its capacity"
    assert refused is not None and refused.rejection[0] == reasons.POOL_CAPACITY
    inputs = lg.emitted(refused, "RequestOutcome")[0]["inputs"]
    assert -inputs["pool_delta_after_micro_usd"] > inputs["pool_delta_cap_micro_usd"] >= -inputs["pool_delta_before_micro_usd"]


def test_the_pool_survives_the_stress_move_it_is_limited_to():
    """alice buys straddles (calls and puts: little net delta, much convexity) 50 at a time from a deep pool
    with a light curve (alpha 1 %, 20,000,000 USD of AAPL) until refused; BTC then rises 40 %. Before the
    stress limit only IM capacity bound the book and the pool was left 5.7 million USD short at theo;
    now its value at theo stays positive. (The limit is on the loss at theo; NAV, which closes the whole
    book along the curve at once, is lower still.)"""
    lg = desk(lp_tokens_nano=100_000 * NANO, pool_alpha_ppm=10_000,
              series=(series_listed(CALL, option_kind="CALL"), series_listed()))
    lg.fund("alice", "AAPL", 400_000 * NANO)
    refused = None
    for i in range(100):
        out = lg.apply("TradeRequest", trade("alice", CALL if i % 2 == 0 else SERIES, 50 * NANO, at=T0 + i))
        if out.rejection is not None and refused is None:
            refused = out
    lg.ok("PriceMark", crypto_mark("BTC", 70_000 * USD, at=T0 + 100))
    lg.ok("PriceMark", price_mark("AAPL", 200 * USD, at=T0 + 100))
    pool = lg.state.pool
    value_at_theo = pool.cash_micro_usd + pool.tokens_nano["AAPL"] * 200 * USD // NANO
    for s in lg.state.series.values():
        value_at_theo -= s.net_volume_nano * s.theo_micro_usd // NANO
    assert value_at_theo > 0, "a 40 % move left the pool insolvent"
    assert refused is not None and "move of BTC" in refused.rejection[1]
