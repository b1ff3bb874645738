"""Main pool rules: LP deposits and redemptions at the pool's model value (band edges for frozen prices), the PnL-per-share index."""

from __future__ import annotations

from typing import Any

from ledger import chart, limits, reasons
from ledger.collateral import known_account, listed_symbol, positive, take_from_wallet
from ledger.outcome import Outcome
from ledger.reasons import Rejected
from ledger.reserve import request_outcome
from ledger.risk import (
    haircut_gap_micro_usd,
    pool_figures,
    pool_model_value_micro_usd,
    pool_nav_micro_usd,
    token_unit,
    token_values,
)
from ledger.state import LedgerState
from ledger.units import NANO, token_value_micro_usd_floor

INDEX_SCALE = NANO  # pnl_per_share_index is micro-USD per whole pool share, scaled by 1e9


def _open_price(state: LedgerState, symbol: str, at_us: int) -> tuple[int, int]:
    """The deposited token is priced only on a fresh, open-market mark outside a corporate action's pause window:
    a frozen price, or one whose multiplier may be about to flip, would misprice it."""
    price = state.prices.get(symbol)
    # Both ways: a request dated before the mark's publication is no fresher than one long after it.
    if price is None or abs(at_us - price.published_at_us) > state.params.price_staleness_limit_us:
        raise Rejected(reasons.STALE_PRICE, f"no fresh price for {symbol}")
    if price.market_status != "OPEN":
        raise Rejected(reasons.MARKET_CLOSED, f"{symbol} market is {price.market_status}")
    activation = state.reserves[symbol].paused_for_activation_us
    if activation is not None:  # price and multiplier may disagree until the market opens at the new multiplier
        raise Rejected(reasons.MARKET_CLOSED, f"{symbol} is paused for a corporate action activating at {activation}",
                       {"activation_time_us": activation})
    return token_unit(state, symbol, at_us)


def close_pnl_interval(state: LedgerState, nav_micro_usd: int) -> None:
    """Fold the pool's PnL since the last LP flow into the per-share index; nav_micro_usd: its NAV (oracle) now.

    Between two LP flows the number of shares is fixed, so the change of NAV over the interval, per
    share, is the PnL of one share: premiums, fees, funding, mark-to-market, liquidation bonuses and
    penalties, socialised losses, every flow at once (Deri's LP PnL is likewise the pool's value, not
    a sum of selected cash flows). Called just before shares change.
    """
    pool = state.pool
    if pool.shares_nano > 0:
        pool.pnl_per_share_index += (nav_micro_usd - pool.nav_after_flow_micro_usd) * NANO * INDEX_SCALE // pool.shares_nano


def pnl_per_share_micro_usd(state: LedgerState, nav_micro_usd: int) -> int:
    """Cumulative PnL of one whole pool share from the first deposit to now (index + the open interval)."""
    pool = state.pool
    open_interval = 0
    if pool.shares_nano > 0:
        open_interval = (nav_micro_usd - pool.nav_after_flow_micro_usd) * NANO * INDEX_SCALE // pool.shares_nano
    return (pool.pnl_per_share_index + open_interval) // INDEX_SCALE


def apply_lp_deposit(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    """Shares at the pool's model value, *high* edge: tokens with a closed or stale mark count up by that band.

    The model value (liquidity + LP PnL at theo + funding receivable) moves by exactly what a flow brings
    or takes, so a share bought at it is worth what was paid whatever other LPs do before it is redeemed
    (NAV, which prices closing the book along a curve that flattens with liquidity, does not: a share
    priced on it gains or loses from the flattening other LPs' flows cause). A depositor never buys
    shares cheaply on a frozen price the stayers carry the risk of; a deposit into a pool whose NAV is
    <= 0 is refused (a share of a negative NAV is worth nothing, the deposit would pay the pool's debts).
    """
    account, symbol, qty = ev["account"], ev["symbol"], ev["qty_nano"]
    listed_symbol(state, symbol)
    positive(qty)
    acct = known_account(state, account)
    at = ev["occurred_at"]
    price, mult = _open_price(state, symbol, at)
    value = token_value_micro_usd_floor(qty, price, mult)
    pool = state.pool
    nav = pool_nav_micro_usd(state)
    tokens = token_values(state, pool.tokens_nano, at)
    band_up = tokens.high_micro_usd - tokens.oracle_micro_usd
    nav_high = nav + band_up
    model_high = pool_model_value_micro_usd(state) + band_up
    inputs = {"nav_micro_usd": nav, "nav_high_micro_usd": nav_high, "model_value_high_micro_usd": model_high,
              "value_micro_usd": value, "pool_shares_nano": pool.shares_nano}
    if nav_high < 0 or (nav_high == 0 and pool.shares_nano > 0) or (model_high <= 0 and pool.shares_nano > 0):
        raise Rejected(reasons.POOL_INSOLVENT, f"pool NAV {nav_high} micro-USD is not positive: a deposit would buy a worthless share", inputs)
    if pool.shares_nano == 0:
        shares = value * state.params.initial_pool_share_nano_per_micro_usd
    else:
        shares = value * pool.shares_nano // model_high  # floor: the depositor gets no more than paid for
    if shares <= 0:
        raise Rejected(reasons.NON_POSITIVE_AMOUNT, f"deposit worth {value} micro-USD buys no pool share")
    take_from_wallet(acct, symbol, qty)
    close_pnl_interval(state, nav)
    pool.tokens_nano[symbol] = pool.tokens_nano.get(symbol, 0) + qty
    pool.shares_nano += shares
    acct.lp_shares_nano += shares
    pool.nav_after_flow_micro_usd = pool_nav_micro_usd(state)
    out.post(chart.wallet(account, symbol), chart.pool_main(symbol), symbol, qty)
    out.post(chart.pool_shares_issued(), chart.lp_shares(account), chart.POOL_SHARE, shares)


def apply_lp_redeem(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    """Redeem at the pool's model value, *low* edge, paid pro rata in every pool asset.

    value = model value_low x shares / all shares (tokens with a closed or stale mark counted down by
    their band). The model value falls by exactly what is paid, so the shares that stay keep their value
    to the micro-USD and no round trip, in any interleaving with other LPs' flows, returns more than it
    brought (Deri v3 marks LP PnL at the leaned mark, which depends on liquidity, and so needs its
    remove-liquidity penalty; this value does not, so there is none: DESIGN section 5). The payout is the
    same fraction of every token the pool holds and of its positive cash (credited as USD to the LP's
    margin account): the redeemer cannot pick the best asset and leave the rest. payout_symbol must name
    a listed symbol; it no longer chooses the payout (kept for the schema).
    """
    account, shares, symbol = ev["account"], ev["shares_nano"], ev["payout_symbol"]
    listed_symbol(state, symbol)
    positive(shares, "shares_nano")
    acct = known_account(state, account)
    if acct.lp_shares_nano < shares:
        raise Rejected(reasons.INSUFFICIENT_BALANCE, f"holds {acct.lp_shares_nano} pool shares, redeem needs {shares}")
    at = ev["occurred_at"]
    _open_price(state, symbol, at)
    pool = state.pool
    lean, nav, required = pool_figures(state)
    tokens = token_values(state, pool.tokens_nano, at)
    band_down = tokens.low_micro_usd - tokens.oracle_micro_usd
    nav_low = nav + band_down
    model_low = pool_model_value_micro_usd(state) + band_down
    value = max(model_low, 0) * shares // pool.shares_nano
    cash = max(pool.cash_micro_usd, 0)
    gross = tokens.low_micro_usd + cash  # assets the payout is a fraction of, valued as value was
    paid_tokens = {s: q * value // gross for s, q in sorted(pool.tokens_nano.items()) if q > 0} if gross > 0 else {}
    paid_cash = cash * value // gross if gross > 0 else 0
    remaining = {s: q - paid_tokens.get(s, 0) for s, q in pool.tokens_nano.items()}
    paid_oracle = tokens.oracle_micro_usd - token_values(state, remaining, at).oracle_micro_usd + paid_cash
    _, nav_after, required_after = pool_figures(state, cash_delta_micro_usd=-paid_oracle)
    capacity_after = nav_after - haircut_gap_micro_usd(state, remaining, at)
    inputs = {"nav_micro_usd": nav, "nav_low_micro_usd": nav_low, "model_value_low_micro_usd": model_low,
              "pool_shares_nano": pool.shares_nano, "value_micro_usd": value,
              "paid_cash_micro_usd": paid_cash, "pool_required_micro_usd": required_after,
              "pool_capacity_after_micro_usd": capacity_after, "lean_liquidity_micro_usd": lean}
    for s, q in paid_tokens.items():
        inputs[f"qty_nano:{s}"] = q
    limits.require_fits(inputs)
    if value > gross:
        raise Rejected(reasons.POOL_CAPACITY, f"redemption worth {value} exceeds the pool's assets {gross} micro-USD", inputs)
    if not any(paid_tokens.values()) and paid_cash <= 0:
        raise Rejected(reasons.NON_POSITIVE_AMOUNT, "redemption is worth less than one nano-token", inputs)
    if required_after and capacity_after < required_after:
        raise Rejected(reasons.POOL_CAPACITY, f"pool capacity after redemption {capacity_after} < required {required_after} micro-USD", inputs)
    close_pnl_interval(state, nav)
    state.counters.count("lp_redemption")
    for s, q in paid_tokens.items():
        if q:
            pool.tokens_nano[s] -= q
            acct.wallet_nano[s] = acct.wallet_nano.get(s, 0) + q
            out.post(chart.pool_main(s), chart.wallet(account, s), s, q)
    if paid_cash:
        pool.cash_micro_usd -= paid_cash
        acct.cash_micro_usd += paid_cash
        out.post(chart.pool_main(chart.USD), chart.margin(account, chart.USD), chart.USD, paid_cash)
    pool.shares_nano -= shares
    acct.lp_shares_nano -= shares
    pool.nav_after_flow_micro_usd = pool_nav_micro_usd(state)
    out.post(chart.lp_shares(account), chart.pool_shares_issued(), chart.POOL_SHARE, shares)
    out.emit("RequestOutcome", request_outcome(ev, "LP_REDEEM", account, None, inputs))
