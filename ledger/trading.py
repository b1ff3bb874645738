"""Trade rules: everlasting option trades against the main pool, priced by the DPMM, checked for IM and pool capacity."""

from __future__ import annotations

from typing import Any

from ledger import chart, options, reasons
from ledger.collateral import known_account, watch
from ledger.market import update_mark
from ledger.outcome import Outcome
from ledger.pool import credit_pool_pnl
from ledger.reasons import Rejected
from ledger.reserve import request_outcome
from ledger.risk import account_health, pool_liquidity_micro_usd, pool_nav_micro_usd, pool_required_micro_usd
from ledger.state import AccountState, LedgerState, Position, SeriesState
from ledger.units import NANO, PPM, apply_ppm_floor, div_ceil


def settle_funding(state: LedgerState, acct: AccountState, series: SeriesState, out: Outcome) -> int:
    """Settle a position's accrued funding into cash (longs pay the pool when mark > intrinsic)."""
    pos = acct.positions.get(series.series_id)
    if pos is None:
        return 0
    owed = options.funding_owed_micro_usd(pos.volume_nano, series.cum_funding_micro_usd_wad, pos.entry_funding_micro_usd_wad)
    series.entry_index_sum += pos.volume_nano * (series.cum_funding_micro_usd_wad - pos.entry_funding_micro_usd_wad)
    pos.entry_funding_micro_usd_wad = series.cum_funding_micro_usd_wad
    if owed:
        acct.cash_micro_usd -= owed
        state.pool.cash_micro_usd += owed
        credit_pool_pnl(state, owed)
        out.post(chart.margin(acct.account, chart.USD), chart.pool_main(chart.USD), chart.USD, owed)
    return owed


def change_position(series: SeriesState, acct: AccountState, volume_delta_nano: int) -> None:
    """Move an account's position and the series' net volume together (entry index already settled)."""
    pos = acct.positions.get(series.series_id)
    old = pos.volume_nano if pos else 0
    new = old + volume_delta_nano
    series.net_volume_nano += volume_delta_nano
    series.entry_index_sum += volume_delta_nano * series.cum_funding_micro_usd_wad
    if new == 0:
        acct.positions.pop(series.series_id, None)
    elif pos is None:
        acct.positions[series.series_id] = Position(new, series.cum_funding_micro_usd_wad)
    else:
        pos.volume_nano = new


def _snapshot(state: LedgerState, acct: AccountState, series: SeriesState) -> tuple:
    pos = acct.positions.get(series.series_id)
    pool = state.pool
    return (acct.cash_micro_usd, None if pos is None else (pos.volume_nano, pos.entry_funding_micro_usd_wad),
            series.net_volume_nano, series.entry_index_sum, series.mark_micro_usd,
            pool.cash_micro_usd, pool.insurance_cash_micro_usd, pool.pnl_per_share_index)


def _restore(state: LedgerState, acct: AccountState, series: SeriesState, snap: tuple) -> None:
    acct.cash_micro_usd, pos, series.net_volume_nano, series.entry_index_sum, series.mark_micro_usd, \
        state.pool.cash_micro_usd, state.pool.insurance_cash_micro_usd, state.pool.pnl_per_share_index = snap
    if pos is None:
        acct.positions.pop(series.series_id, None)
    else:
        acct.positions[series.series_id] = Position(*pos)


def apply_trade_request(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    account, series_id, dv = ev["account"], ev["series_id"], ev["volume_nano"]
    acct = known_account(state, account)
    series = state.series.get(series_id)
    if series is None:
        raise Rejected(reasons.UNKNOWN_SERIES, f"series {series_id!r} is not listed")
    if dv == 0:
        raise Rejected(reasons.NON_POSITIVE_AMOUNT, "volume_nano must not be 0")
    at = ev["occurred_at"]
    price = state.prices.get(series.underlying)
    if price is None or not series.spot_micro_usd or at - price.published_at_us > state.params.price_staleness_limit_us:
        raise Rejected(reasons.STALE_PRICE, f"no fresh {series.underlying} price to trade {series_id}")
    if price.market_status == "HALTED":
        raise Rejected(reasons.MARKET_CLOSED, f"{series.underlying} is halted")
    p = state.params
    liquidity = pool_liquidity_micro_usd(state, at)
    n_before = series.net_volume_nano
    cost = options.trade_cost_micro_usd(series.theo_micro_usd, series.spot_micro_usd, series.delta_wad, p.pool_alpha_ppm, liquidity, n_before, dv)
    fee = div_ceil(abs(dv) * series.spot_micro_usd * p.trade_fee_ppm, NANO * PPM)
    insurance_fee = apply_ppm_floor(fee, p.insurance_fee_share_ppm)
    old_volume = acct.positions[series_id].volume_nano if series_id in acct.positions else 0
    snap = _snapshot(state, acct, series)
    mark_before = series.mark_micro_usd
    provisional = Outcome(out.event_id, out.subject)
    settle_funding(state, acct, series, provisional)
    change_position(series, acct, dv)
    acct.cash_micro_usd -= cost + fee
    state.pool.cash_micro_usd += cost + fee - insurance_fee
    state.pool.insurance_cash_micro_usd += insurance_fee
    credit_pool_pnl(state, fee - insurance_fee)
    update_mark(state, series, at)
    health = account_health(state, acct, at)
    nav = pool_nav_micro_usd(state, at)
    required = pool_required_micro_usd(state)
    inputs = health.as_inputs() | {
        "spot_micro_usd": series.spot_micro_usd, "theo_micro_usd": series.theo_micro_usd, "mark_before_micro_usd": mark_before,
        "mark_after_micro_usd": series.mark_micro_usd, "cost_micro_usd": cost, "fee_micro_usd": fee, "volume_nano": dv,
        "pool_nav_micro_usd": nav, "pool_required_micro_usd": required, "net_volume_before_nano": n_before,
    }
    increases_account_risk = abs(old_volume + dv) > abs(old_volume) or (old_volume + dv) * old_volume < 0
    if increases_account_risk and health.equity_micro_usd < health.initial_micro_usd:
        _restore(state, acct, series, snap)
        raise Rejected(reasons.INSUFFICIENT_MARGIN, f"equity {health.equity_micro_usd} < initial margin {health.initial_micro_usd} micro-USD after the trade", inputs)
    if abs(series.net_volume_nano) > abs(n_before) and nav < required:
        _restore(state, acct, series, snap)
        raise Rejected(reasons.POOL_CAPACITY, f"pool NAV {nav} < required {required} micro-USD after the trade", inputs)
    out.postings.extend(provisional.postings)
    usd = chart.USD
    out.post(chart.margin(account, usd), chart.pool_main(usd), usd, cost)
    out.post(chart.margin(account, usd), chart.pool_main(usd), usd, fee - insurance_fee)
    out.post(chart.margin(account, usd), chart.pool_insurance(usd), usd, insurance_fee)
    watch(state, series.underlying, account)
    out.emit("RequestOutcome", request_outcome(ev, "TRADE", account, None, inputs))
