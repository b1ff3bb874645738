"""Golden liquidations: covered by the account's collateral, by the insurance pool, socialised to LPs.

Setup shared by all three (hand-checked): AAPL at 200 USD with a 10 % haircut; an LP put 10_000 AAPL
(2_000_000 USD, so 2_000_000 pool shares = 2e15 nano-shares) in the main pool; BTC at 50_000 USD,
100 % volatility; a weekly 50_000 put.  The pool's alpha is 0, so it quotes theo exactly.  Alice puts
35 AAPL in margin (35 x 200 x 0.9 = 6_300 USD of collateral) and sells one put, receiving theo and
paying a 0.1 % fee of 1 x 50_000 = 50 USD.  Then BTC crashes, in the same microsecond (no funding).

Theo and MM per contract come from ledger.options; the rest is worked out here.
"""

from __future__ import annotations

from ledger_builders import (
    NANO,
    PPM,
    USD,
    WEEK_S,
    crypto_mark,
    desk,
    posting_balances,
    short_margins,
    state_balances,
    trade,
)

from ledger import options
from ledger.pool import pnl_per_share_micro_usd
from ledger.risk import pool_nav_micro_usd

SERIES = "BTC-P-50000"
K = 50_000 * USD
SIGMA = PPM
FEE = 50 * USD  # 1 contract x 50_000 USD x 1_000 ppm
PRICE = 200 * USD  # AAPL, multiplier 1.0: 1 USD of AAPL = 5_000_000 nano-tokens (1e9 / 200)
LP_SHARES = 2_000_000 * NANO
BONUS_PPM = 50_000
PENALTY_PPM = 100_000


def theo(spot: int) -> int:
    return options.theoretical_price_micro_usd("PUT", spot, K, SIGMA, WEEK_S)


def mm(spot: int) -> int:
    """A short put's MM with the stress floor (DESIGN section 5), worked from ledger.options."""
    return short_margins("PUT", spot, K, SIGMA, WEEK_S)[0]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def short_put_desk(insurance_fee_share_ppm: int, with_bob: bool = False):
    lg = desk(haircut_ppm=100_000, trade_fee_ppm=1_000, pool_alpha_ppm=0,
              insurance_fee_share_ppm=insurance_fee_share_ppm)
    lg.fund("alice", "AAPL", 60 * NANO)  # 10_800 USD after the haircut: a short ATM put needs about 10_085 of IM
    lg.ok("TradeRequest", trade("alice", SERIES, -1 * NANO))
    if with_bob:
        lg.fund("bob", "AAPL", 2_000 * NANO)
        lg.ok("TradeRequest", trade("bob", SERIES, 40 * NANO))  # bob buys 40 puts: fee 40 x 50 USD
    return lg


def assert_books_balance(lg) -> None:
    """Every applied event's postings net to zero per asset and rebuild the state's balances."""
    for out in lg.outcomes:
        per_asset: dict[str, int] = {}
        for (_, asset), amount in posting_balances(out.postings).items():
            per_asset[asset] = per_asset.get(asset, 0) + amount
        assert set(per_asset.values()) <= {0}, per_asset
        assert all(p.amount_minor > 0 for p in out.postings)
    assert posting_balances(lg.postings) == state_balances(lg.state)


def test_liquidation_covered_by_the_accounts_collateral():
    lg = short_put_desk(insurance_fee_share_ppm=200_000)
    theo0, theo1, mm1 = theo(50_000 * USD), theo(40_000 * USD), mm(40_000 * USD)
    cash = theo0 - FEE
    pool_cash_before = -theo0 + FEE - FEE // 5  # paid the premium, kept the fee less 20 % to insurance
    assert lg.state.pool.cash_micro_usd == pool_cash_before
    assert lg.state.pool.insurance_cash_micro_usd == 10 * USD

    crash = crypto_mark("BTC", 40_000 * USD)
    out = lg.ok("PriceMark", crash)

    equity = 10_800 * USD + cash - theo1  # collateral + cash + short put at the new mark
    assert equity * PPM < mm1 * 950_000  # health below 0.95: no close factor, the whole position goes
    (trigger,) = lg.emitted(out, "LiquidationTriggered")
    assert trigger["event_id"] == f"liq-trigger:{crash['event_id']}:alice"
    assert trigger["equity_micro_usd"] == equity
    assert trigger["maintenance_margin_micro_usd"] == mm1

    # Close at mark: the short put costs theo1, leaving a cash debt.
    debt = theo1 - cash
    # Seize debt x 1.05 of AAPL (ceil), at 200 USD: value -> qty is x 5 (1e9 nano / 200 USD), exact.
    seize_value = ceil_div(debt * (PPM + BONUS_PPM), PPM)
    seize_qty = seize_value * 5
    bonus = seize_value - debt
    # Penalty: 10 % of the MM closed (ceil), paid in AAPL to the insurance pool (no positive cash left).
    penalty = ceil_div(mm1 * PENALTY_PPM, PPM)
    penalty_qty = penalty * 5
    assert seize_qty + penalty_qty < 60 * NANO  # collateral covers it all: no shortfall

    (executed,) = lg.emitted(out, "LiquidationExecuted")
    assert executed["event_id"] == f"liq-exec:{crash['event_id']}:alice"
    assert executed["trigger_event_id"] == trigger["event_id"]
    assert executed["closed_positions"] == [
        {"series_id": SERIES, "volume_nano": -NANO, "mark_micro_usd": theo1, "value_micro_usd": -theo1}
    ]
    assert executed["debt_micro_usd"] == debt
    assert executed["bonus_micro_usd"] == bonus
    assert executed["penalty_micro_usd"] == penalty
    assert executed["shortfall_micro_usd"] == 0
    assert executed["seized"] == [
        {"symbol": "AAPL", "qty_nano": seize_qty, "value_micro_usd": seize_value},
        {"symbol": "AAPL", "qty_nano": penalty_qty, "value_micro_usd": penalty},
    ]
    assert lg.emitted(out, "BadDebtCovered") == []

    usd = "USD"
    assert [(p.debit_account, p.credit_account, p.asset, p.amount_minor) for p in out.postings] == [
        ("user:alice:margin:USD", "pool:main:USD", usd, theo1),  # close the short at mark
        ("user:alice:margin:AAPL", "pool:main:AAPL", "AAPL", seize_qty),  # seized, bonus included
        ("pool:main:USD", "user:alice:margin:USD", usd, debt),  # the pool pays the debt for them
        ("user:alice:margin:AAPL", "pool:insurance:AAPL", "AAPL", penalty_qty),  # penalty
    ]

    alice = lg.state.accounts["alice"]
    assert alice.positions == {}
    assert alice.cash_micro_usd == 0
    assert alice.margin_nano == {"AAPL": 60 * NANO - seize_qty - penalty_qty}
    assert lg.state.series[SERIES].net_volume_nano == 0
    pool = lg.state.pool
    assert pool.tokens_nano == {"AAPL": 10_000 * NANO + seize_qty}
    assert pool.insurance_tokens_nano == {"AAPL": penalty_qty}
    # pool cash: -theo0 + 40 USD, + theo1 from the close, - debt paid = -10 USD (the insurance fee)
    assert pool.cash_micro_usd == pool_cash_before + theo1 - debt == -10 * USD
    assert lg.state.counters.liquidations == 1
    assert_books_balance(lg)


CRASH = 36_000 * USD  # the put is then worth about 14_250 USD: more than alice's 12_000 USD of AAPL and her cash


def _shortfall_figures():
    theo0, theo2, mm2 = theo(50_000 * USD), theo(CRASH), mm(CRASH)
    debt = theo2 - (theo0 - FEE)
    # All 60 AAPL are seized (worth 12_000 USD at 200 USD, less than debt x 1.05); with the bonus
    # they pay 12_000 / 1.05 = 11_428.571428 USD (floor) of the debt.
    assert ceil_div(debt * (PPM + BONUS_PPM), PPM) > 12_000 * USD
    paid_by_margin = 12_000 * USD * PPM // (PPM + BONUS_PPM)
    assert paid_by_margin == 11_428_571_428
    shortfall = debt - paid_by_margin
    penalty = ceil_div(mm2 * PENALTY_PPM, PPM)
    return debt, paid_by_margin, shortfall, penalty


def _bad_debt_steps(lg, out):
    return [(e["step"], e["amount_micro_usd"]) for e in lg.emitted(out, "BadDebtCovered")]


def test_liquidation_shortfall_covered_by_the_insurance_pool():
    lg = short_put_desk(insurance_fee_share_ppm=PPM, with_bob=True)  # every fee goes to insurance
    insurance = FEE + 40 * FEE  # alice's 50 USD + bob's 2_000 USD
    assert lg.state.pool.insurance_cash_micro_usd == insurance == 2_050 * USD
    debt, paid_by_margin, shortfall, penalty = _shortfall_figures()
    assert 0 < shortfall <= insurance  # about 430 USD

    crash = crypto_mark("BTC", CRASH)
    out = lg.ok("PriceMark", crash)
    (trigger,) = lg.emitted(out, "LiquidationTriggered")
    assert trigger["account"] == "alice"  # bob is long puts: the crash only helps him
    (executed,) = lg.emitted(out, "LiquidationExecuted")
    assert executed["debt_micro_usd"] == debt
    assert executed["seized"] == [{"symbol": "AAPL", "qty_nano": 60 * NANO, "value_micro_usd": 12_000 * USD}]
    assert executed["bonus_micro_usd"] == 12_000 * USD - paid_by_margin == 571_428_572
    assert executed["penalty_micro_usd"] == 0  # nothing left to pay it with
    assert executed["shortfall_micro_usd"] == shortfall

    # The steps partition the debt exactly: margin, the penalty (0: it is taken only from what is left
    # after the debt, so it never covers one), insurance, LPs (was: the penalty the account could not
    # pay, 458 USD, counted as if it covered something, so the steps summed to more than the debt).
    assert penalty > 0
    assert _bad_debt_steps(lg, out) == [
        ("ACCOUNT_MARGIN", paid_by_margin), ("PENALTY", 0), ("INSURANCE", shortfall), ("LP_SOCIALISED", 0),
    ]
    assert sum(amount for _, amount in _bad_debt_steps(lg, out)) == executed["debt_micro_usd"]
    ids = [e["event_id"] for e in lg.emitted(out, "BadDebtCovered")]
    assert ids == [f"bad-debt:{trigger['event_id']}:{n}" for n in (1, 2, 3, 4)]
    assert all(e["trigger_event_id"] == trigger["event_id"] for e in lg.emitted(out, "BadDebtCovered"))

    pool = lg.state.pool
    assert pool.insurance_cash_micro_usd == insurance - shortfall
    assert pool.bad_debt_insurance_micro_usd == shortfall
    assert pool.bad_debt_socialised_micro_usd == 0
    alice = lg.state.accounts["alice"]
    assert alice.cash_micro_usd == 0 and alice.margin_nano == {} and alice.positions == {}
    assert "bob" in lg.state.accounts and lg.state.accounts["bob"].positions[SERIES].volume_nano == 40 * NANO
    assert lg.state.counters.bad_debt_micro_usd == shortfall
    assert_books_balance(lg)


def test_liquidation_shortfall_socialised_to_lps_when_insurance_is_empty():
    lg = short_put_desk(insurance_fee_share_ppm=0)
    pool = lg.state.pool
    assert pool.insurance_cash_micro_usd == 0 and pool.insurance_tokens_nano == {}
    # alice's 50 USD fee is the LPs' only PnL so far: 50e6 x 1e9 / 2e15 = 25 micro-USD per whole share
    assert pnl_per_share_micro_usd(lg.state, pool_nav_micro_usd(lg.state)) == 25
    debt, paid_by_margin, shortfall, penalty = _shortfall_figures()

    out = lg.ok("PriceMark", crypto_mark("BTC", CRASH))
    assert _bad_debt_steps(lg, out) == [
        ("ACCOUNT_MARGIN", paid_by_margin), ("PENALTY", 0), ("INSURANCE", 0), ("LP_SOCIALISED", shortfall),
    ]
    assert paid_by_margin + shortfall == debt
    assert pool.bad_debt_socialised_micro_usd == shortfall
    assert pool.bad_debt_insurance_micro_usd == 0
    pnl_after = pnl_per_share_micro_usd(lg.state, pool_nav_micro_usd(lg.state))
    # Pool cash: -theo0 + 50 USD (trade), + theo2 (close), - 11_428.571428 (debt paid for the seized
    # AAPL), - shortfall (socialised) = -theo0 + 50 + theo2 - debt = 0.
    assert pool.cash_micro_usd == 0
    assert pool.tokens_nano == {"AAPL": 10_000 * NANO + 60 * NANO}
    assert lg.state.accounts["alice"].cash_micro_usd == 0
    # The LP, who has no option position, holds the same shares; the loss shows in the PnL per share:
    # with no position left NAV is the 10,060 AAPL at 200 USD, 12,000 USD above the 2,000,000 USD put in,
    # 6,000 micro-USD per whole share of 2,000,000 (the alice round trip gained, its shortfall cost).
    assert lg.state.accounts["lp"].lp_shares_nano == LP_SHARES
    assert pnl_after == 12_000 * USD * NANO // LP_SHARES == 6_000
    assert_books_balance(lg)
