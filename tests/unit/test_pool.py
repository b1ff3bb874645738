"""Main pool rules: LP deposits and redemptions at NAV, price freshness, pool capacity."""

from __future__ import annotations

import pytest
from ledger_builders import (
    MINUTE_US,
    NANO,
    PPM,
    T0,
    USD,
    WEEK_S,
    desk,
    long_margins,
    lp_deposit,
    lp_redeem,
    posting_balances,
    state_balances,
    trade,
)

from ledger import options, reasons

SERIES = "BTC-P-50000"


def empty_pool(**params):
    """AAPL at 200 USD, no LP yet; 'lp' and 'lp2' hold AAPL in their wallets."""
    lg = desk(lp_tokens_nano=0, series=(), **params)
    lg.fund("lp", "AAPL", 1_000 * NANO, margin=False)
    lg.fund("lp2", "AAPL", 1_000 * NANO, margin=False)
    return lg


def test_first_deposit_gets_one_share_per_usd():
    lg = empty_pool()
    out = lg.ok("LpDeposit", lp_deposit("lp", "AAPL", 100 * NANO))
    # 100 AAPL x 200 USD = 20_000 USD = 2e10 micro-USD; x 1_000 nano-shares per micro-USD
    shares = 100 * 200 * USD * 1_000
    assert shares == 20_000 * NANO  # 20_000 whole shares
    assert [(p.debit_account, p.credit_account, p.asset, p.amount_minor) for p in out.postings] == [
        ("user:lp:wallet:AAPL", "pool:main:AAPL", "AAPL", 100 * NANO),
        ("pool:main:shares_issued", "user:lp:lp", "LP:main", shares),
    ]
    assert lg.state.pool.shares_nano == shares
    assert lg.state.accounts["lp"].lp_shares_nano == shares
    assert lg.state.accounts["lp"].wallet_nano["AAPL"] == 900 * NANO


def test_first_deposit_rate_is_a_parameter():
    lg = empty_pool(initial_pool_share_nano_per_micro_usd=2_000)
    lg.ok("LpDeposit", lp_deposit("lp", "AAPL", 1 * NANO))
    assert lg.state.pool.shares_nano == 200 * USD * 2_000  # 200 USD -> 400 shares


def test_later_deposits_and_redemptions_are_priced_at_nav():
    lg = empty_pool()
    lg.ok("LpDeposit", lp_deposit("lp", "AAPL", 100 * NANO))  # 20_000 shares for 20_000 USD
    lg.mark("AAPL", 250 * USD, at=T0 + 1)  # NAV: 100 AAPL x 250 = 25_000 USD, 1.25 USD per share

    lg.ok("LpDeposit", lp_deposit("lp2", "AAPL", 10 * NANO, at=T0 + 2))
    # 10 x 250 = 2_500 USD buys 2_500 / 1.25 = 2_000 shares: 2_500e6 x 20_000e9 // 25_000e6
    lp2_shares = 2_500 * USD * (20_000 * NANO) // (25_000 * USD)
    assert lp2_shares == 2_000 * NANO
    assert lg.state.accounts["lp2"].lp_shares_nano == lp2_shares

    lg.mark("AAPL", 260 * USD, at=T0 + 3)  # NAV: 110 x 260 = 28_600 USD over 22_000 shares
    out = lg.ok("LpRedeemRequest", lp_redeem("lp", 3_000 * NANO, "AAPL", at=T0 + 4))
    value = 28_600 * USD * (3_000 * NANO) // (22_000 * NANO)  # 3_900 USD
    assert value == 3_900 * USD
    qty = value * NANO // (260 * USD)  # 3_900 / 260 = 15 AAPL (floor: paid out to the user)
    assert qty == 15 * NANO
    (answer,) = lg.emitted(out, "RequestOutcome")
    assert answer["decision"] == "APPROVED"
    assert answer["inputs"]["nav_micro_usd"] == 28_600 * USD
    assert answer["inputs"]["value_micro_usd"] == value and answer["inputs"]["qty_nano:AAPL"] == qty
    assert [(p.debit_account, p.credit_account, p.asset, p.amount_minor) for p in out.postings] == [
        ("pool:main:AAPL", "user:lp:wallet:AAPL", "AAPL", qty),
        ("user:lp:lp", "pool:main:shares_issued", "LP:main", 3_000 * NANO),
    ]
    assert lg.state.pool.tokens_nano["AAPL"] == 110 * NANO - qty
    assert lg.state.pool.shares_nano == 19_000 * NANO
    assert lg.state.accounts["lp"].lp_shares_nano == 17_000 * NANO
    # the remaining LPs keep 1.30 USD per share: 95 x 260 = 24_700 USD for 19_000 shares
    assert 95 * 260 * USD * NANO // (19_000 * NANO) == 1_300_000


def test_redeem_of_a_dust_share_is_rejected():
    lg = empty_pool()
    lg.ok("LpDeposit", lp_deposit("lp", "AAPL", 3 * NANO))
    # 999 nano-shares are worth 999 x 600e6 / 600e9 = 0.999 micro-USD -> 0 (floor): nothing to pay
    lg.rejected("LpRedeemRequest", lp_redeem("lp", 999, "AAPL"), reasons.NON_POSITIVE_AMOUNT)


def test_dust_deposit_buys_no_share():
    lg = empty_pool()
    # 4 nano-AAPL at 200 USD = 0.0000008 USD -> 0 micro-USD (floor)
    lg.rejected("LpDeposit", lp_deposit("lp", "AAPL", 4), reasons.NON_POSITIVE_AMOUNT)


@pytest.mark.parametrize("build", [
    lambda: lp_deposit("lp", "AAPL", 10 * NANO, at=T0 + 2),
    lambda: lp_redeem("lp", 10 * NANO, "AAPL", at=T0 + 2),
], ids=["deposit", "redeem"])
def test_pool_needs_an_open_market(build):
    lg = empty_pool()
    lg.ok("LpDeposit", lp_deposit("lp", "AAPL", 100 * NANO))
    lg.mark("AAPL", 200 * USD, "CLOSED", at=T0 + 1)
    subject = "LpDeposit" if "qty_nano" in build() else "LpRedeemRequest"
    lg.rejected(subject, build(), reasons.MARKET_CLOSED)


@pytest.mark.parametrize("subject,build", [
    ("LpDeposit", lambda at: lp_deposit("lp", "AAPL", 10 * NANO, at=at)),
    ("LpRedeemRequest", lambda at: lp_redeem("lp", 10 * NANO, "AAPL", at=at)),
], ids=["deposit", "redeem"])
def test_pool_needs_a_fresh_price(subject, build):
    lg = empty_pool()
    lg.ok("LpDeposit", lp_deposit("lp", "AAPL", 100 * NANO))
    limit = lg.state.params.price_staleness_limit_us
    lg.rejected(subject, build(T0 + limit + 1), reasons.STALE_PRICE)
    lg.ok(subject, build(T0 + limit))


def test_pool_rejections_for_unknowns_and_balances():
    lg = empty_pool()
    lg.ok("LpDeposit", lp_deposit("lp", "AAPL", 100 * NANO))
    lg.rejected("LpDeposit", lp_deposit("nobody", "AAPL", NANO), reasons.UNKNOWN_ACCOUNT)
    lg.rejected("LpDeposit", lp_deposit("lp", "MSFT", NANO), reasons.UNKNOWN_SYMBOL)
    lg.rejected("LpDeposit", lp_deposit("lp", "AAPL", 0), reasons.NON_POSITIVE_AMOUNT)
    lg.rejected("LpDeposit", lp_deposit("lp", "AAPL", 901 * NANO), reasons.INSUFFICIENT_BALANCE)
    lg.rejected("LpRedeemRequest", lp_redeem("lp", 20_000 * NANO + 1, "AAPL"), reasons.INSUFFICIENT_BALANCE)
    lg.rejected("LpRedeemRequest", lp_redeem("lp", 0, "AAPL"), reasons.NON_POSITIVE_AMOUNT)
    lg.rejected("LpRedeemRequest", lp_redeem("nobody", NANO, "AAPL"), reasons.UNKNOWN_ACCOUNT)
    lg.rejected("LpRedeemRequest", lp_redeem("lp", NANO, "MSFT"), reasons.UNKNOWN_SYMBOL)
    lg.rejected("LpRedeemRequest", lp_redeem("lp2", NANO, "AAPL"), reasons.INSUFFICIENT_BALANCE)  # holds none


def test_payout_symbol_does_not_choose_the_payout():
    """The pool pays every redemption pro rata in what it holds (DESIGN section 5): asking for MSFT, which
    the pool does not hold, still pays AAPL; the redeemer cannot pick the asset and leave the rest."""
    lg = empty_pool()
    lg.list_stock("MSFT")
    lg.mark("MSFT", 400 * USD)
    lg.ok("LpDeposit", lp_deposit("lp", "AAPL", 100 * NANO))
    out = lg.ok("LpRedeemRequest", lp_redeem("lp", 1_000 * NANO, "MSFT"))
    # 1,000 of 20,000 shares of a 20,000 USD pool: 1,000 USD, 1/20 of its 100 AAPL
    assert lg.emitted(out, "RequestOutcome")[0]["inputs"]["qty_nano:AAPL"] == 5 * NANO
    assert lg.state.accounts["lp"].wallet_nano == {"AAPL": 905 * NANO}


def test_redeem_rejected_when_the_pool_would_fall_below_its_margin():
    # pool: 100 AAPL = 20_000 USD; its delta cap raised (2 puts are ~47,000 USD of delta) to test IM capacity alone
    lg = desk(lp_tokens_nano=100 * NANO, pool_alpha_ppm=0, trade_fee_ppm=0, pool_delta_cap_ppm=5 * PPM)
    lg.fund("alice", "AAPL", 1_000 * NANO)
    lg.ok("TradeRequest", trade("alice", SERIES, -2 * NANO))
    # The pool is long 2 puts: a long's IM is capped at its value (theo, DESIGN section 5), so it needs
    # 2 x theo (about 4_890 USD). NAV stays 20_000 USD: the pool paid 2 x theo of premium and holds 2 puts
    # worth 2 x theo. Capacity counts the pool's AAPL at the 10 % collateral haircut: 80 % out leaves
    # 4_000 x 0.9 = 3_600 USD < required; 70 % out leaves 6_000 x 0.9 = 5_400 USD >= required.
    _, im = long_margins("PUT", 50_000 * USD, 50_000 * USD, PPM, WEEK_S)
    assert im == options.theoretical_price_micro_usd("PUT", 50_000 * USD, 50_000 * USD, PPM, WEEK_S)
    required = 2 * im
    assert 3_600 * USD < required <= 5_400 * USD
    out = lg.rejected("LpRedeemRequest", lp_redeem("lp", 16_000 * NANO, "AAPL", at=T0 + 1), reasons.POOL_CAPACITY)
    inputs = lg.emitted(out, "RequestOutcome")[0]["inputs"]
    assert inputs["nav_micro_usd"] == 20_000 * USD
    assert inputs["pool_required_micro_usd"] == required
    assert inputs["value_micro_usd"] == 16_000 * USD
    assert inputs["pool_capacity_after_micro_usd"] == 3_600 * USD
    lg.ok("LpRedeemRequest", lp_redeem("lp", 14_000 * NANO, "AAPL", at=T0 + 2))
    assert lg.state.accounts["lp"].wallet_nano["AAPL"] == 14_000 * USD * NANO // (200 * USD)  # 70 AAPL
    assert posting_balances(lg.postings) == state_balances(lg.state)


def test_stale_redeem_is_checked_before_capacity():
    lg = empty_pool()
    lg.ok("LpDeposit", lp_deposit("lp", "AAPL", 100 * NANO))
    lg.rejected("LpRedeemRequest", lp_redeem("lp", NANO, "AAPL", at=T0 + 16 * MINUTE_US), reasons.STALE_PRICE)
