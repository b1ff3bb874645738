"""Main pool rules: LP deposits and redemptions at NAV, the PnL-per-share index, pool capacity."""

from __future__ import annotations

from typing import Any

from ledger import chart, limits, reasons
from ledger.collateral import known_account, listed_symbol, positive, take_from_wallet
from ledger.outcome import Outcome
from ledger.reasons import Rejected
from ledger.reserve import request_outcome
from ledger.risk import pool_figures, pool_nav_micro_usd, token_unit
from ledger.state import LedgerState
from ledger.units import NANO, token_value_micro_usd_floor, tokens_for_value_nano_floor

INDEX_SCALE = NANO  # pnl_per_share_index is micro-USD per whole pool share, scaled by 1e9


def _open_price(state: LedgerState, symbol: str, at_us: int) -> tuple[int, int]:
    """Pool shares are priced only on a fresh, open-market mark: a frozen price would misprice NAV."""
    price = state.prices.get(symbol)
    # Both ways: a request dated before the mark's publication is no fresher than one long after it.
    if price is None or abs(at_us - price.published_at_us) > state.params.price_staleness_limit_us:
        raise Rejected(reasons.STALE_PRICE, f"no fresh price for {symbol}")
    if price.market_status != "OPEN":
        raise Rejected(reasons.MARKET_CLOSED, f"{symbol} market is {price.market_status}")
    return token_unit(state, symbol, at_us)


def credit_pool_pnl(state: LedgerState, amount_micro_usd: int) -> None:
    """Premiums, fees and funding (positive) or socialised losses (negative) reach LPs per share."""
    pool = state.pool
    if pool.shares_nano > 0 and amount_micro_usd:
        pool.pnl_per_share_index += amount_micro_usd * NANO * INDEX_SCALE // pool.shares_nano


def apply_lp_deposit(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    account, symbol, qty = ev["account"], ev["symbol"], ev["qty_nano"]
    listed_symbol(state, symbol)
    positive(qty)
    acct = known_account(state, account)
    at = ev["occurred_at"]
    price, mult = _open_price(state, symbol, at)
    value = token_value_micro_usd_floor(qty, price, mult)
    pool = state.pool
    nav = pool_nav_micro_usd(state)
    if pool.shares_nano == 0 or nav <= 0:
        shares = value * state.params.initial_pool_share_nano_per_micro_usd
    else:
        shares = value * pool.shares_nano // nav  # floor: the depositor gets no more than paid for
    if shares <= 0:
        raise Rejected(reasons.NON_POSITIVE_AMOUNT, f"deposit worth {value} micro-USD buys no pool share")
    take_from_wallet(acct, symbol, qty)
    pool.tokens_nano[symbol] = pool.tokens_nano.get(symbol, 0) + qty
    pool.shares_nano += shares
    acct.lp_shares_nano += shares
    out.post(chart.wallet(account, symbol), chart.pool_main(symbol), symbol, qty)
    out.post(chart.pool_shares_issued(), chart.lp_shares(account), chart.POOL_SHARE, shares)


def apply_lp_redeem(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    account, shares, symbol = ev["account"], ev["shares_nano"], ev["payout_symbol"]
    listed_symbol(state, symbol)
    positive(shares, "shares_nano")
    acct = known_account(state, account)
    if acct.lp_shares_nano < shares:
        raise Rejected(reasons.INSUFFICIENT_BALANCE, f"holds {acct.lp_shares_nano} pool shares, redeem needs {shares}")
    at = ev["occurred_at"]
    price, mult = _open_price(state, symbol, at)
    pool = state.pool
    _, nav, required = pool_figures(state)
    value = max(nav, 0) * shares // pool.shares_nano
    qty = tokens_for_value_nano_floor(value, price, mult)
    inputs = {"nav_micro_usd": nav, "pool_shares_nano": pool.shares_nano, "value_micro_usd": value,
              "price_micro_usd": price, "multiplier_nano": mult, "pool_required_micro_usd": required, "qty_nano": qty}
    limits.require_fits(inputs)
    if qty <= 0:
        raise Rejected(reasons.NON_POSITIVE_AMOUNT, "redemption is worth less than one nano-token", inputs)
    if pool.tokens_nano.get(symbol, 0) < qty:
        raise Rejected(reasons.POOL_CAPACITY, f"pool holds {pool.tokens_nano.get(symbol, 0)} nano {symbol}, payout needs {qty}", inputs)
    if nav - value < required:
        raise Rejected(reasons.POOL_CAPACITY, f"NAV after redemption {nav - value} < required {required} micro-USD", inputs)
    pool.tokens_nano[symbol] -= qty
    pool.shares_nano -= shares
    acct.lp_shares_nano -= shares
    acct.wallet_nano[symbol] = acct.wallet_nano.get(symbol, 0) + qty
    out.post(chart.pool_main(symbol), chart.wallet(account, symbol), symbol, qty)
    out.post(chart.lp_shares(account), chart.pool_shares_issued(), chart.POOL_SHARE, shares)
    out.emit("RequestOutcome", request_outcome(ev, "LP_REDEEM", account, None, inputs))
