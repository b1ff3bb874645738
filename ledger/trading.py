"""Trade rules: everlasting option trades against the main pool, priced by the DPMM at the live quote, checked for IM and pool capacity."""

from __future__ import annotations

from typing import Any

from ledger import chart, limits, options, reasons
from ledger.collateral import known_account, watch
from ledger.market import accrue_funding, refresh_series, series_state_record
from ledger.outcome import Outcome
from ledger.quotes import quote
from ledger.reasons import Rejected
from ledger.reserve import request_outcome
from ledger.risk import (
    SeriesView,
    account_health,
    accrued_index_micro_usd_wad,
    haircut_gap_micro_usd,
    lean_liquidity_now,
    pool_exposures,
    pool_figures,
)
from ledger.state import AccountState, LedgerState, Position, SeriesState
from ledger.units import NANO, PPM, apply_ppm_floor, div_ceil
from ledger.watch_index import hold, recheck


def trade_fee_micro_usd(fee_ppm: int, otm_premium_fee_ppm: int, spot_micro_usd: int, intrinsic_micro_usd: int,
                        volume_nano: int, cost_micro_usd: int) -> int:
    """Deri v3's fee: in the money, fee_ppm of the notional (spot x |volume|); out of (or at) the money, the
    smaller of that and otm_premium_fee_ppm of the premium paid or received, so a deep out-of-the-money
    option never pays a fee many times its price. Rounded up (a fee is paid)."""
    notional_fee = div_ceil(abs(volume_nano) * spot_micro_usd * fee_ppm, NANO * PPM)
    if intrinsic_micro_usd > 0:
        return notional_fee
    return min(notional_fee, div_ceil(abs(cost_micro_usd) * otm_premium_fee_ppm, PPM))


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
        out.post(chart.margin(acct.account, chart.USD), chart.pool_main(chart.USD), chart.USD, owed)
    return owed


def close_against_pool(state: LedgerState, series: SeriesState, acct: AccountState, part_nano: int,
                       value_micro_usd: int, at_us: int, cause_id: str, out: Outcome) -> None:
    """Close part_nano of a position with the pool for value (what the account receives; negative: it pays).

    The position and the series' net volume, both cash balances, the posting, and the series refreshed and
    published: a liquidation (along the curve) and a deleveraging step (at the mark) differ only in the value.
    """
    change_position(state, series, acct, -part_nano)
    acct.cash_micro_usd += value_micro_usd
    state.pool.cash_micro_usd -= value_micro_usd
    out.post(chart.pool_main(chart.USD), chart.margin(acct.account, chart.USD), chart.USD, value_micro_usd)
    refresh_series(state, series, at_us)
    out.emit("SeriesState", series_state_record(series, {"event_id": cause_id, "occurred_at": at_us}))


def change_position(state: LedgerState, series: SeriesState, acct: AccountState, volume_delta_nano: int) -> None:
    """Move an account's position and the series' net volume together (entry index already settled)."""
    pos = acct.positions.get(series.series_id)
    old = pos.volume_nano if pos else 0
    new = old + volume_delta_nano
    hold(state, series.series_id, acct.account)
    series.net_volume_nano += volume_delta_nano
    series.entry_index_sum += volume_delta_nano * series.cum_funding_micro_usd_wad
    if new == 0:
        acct.positions.pop(series.series_id, None)
    elif pos is None:
        acct.positions[series.series_id] = Position(new, series.cum_funding_micro_usd_wad)
    else:
        pos.volume_nano = new


# Which limit refused a trade (pool_capacity's input pool_limit_breached): IM capacity, net-delta cap, stress limit.
POOL_LIMIT_IM, POOL_LIMIT_DELTA, POOL_LIMIT_STRESS = 1, 2, 3
POOL_LIMIT_NAMES = {POOL_LIMIT_IM: "capacity_im", POOL_LIMIT_DELTA: "capacity_delta", POOL_LIMIT_STRESS: "capacity_stress"}


def _check_pool_limits(state: LedgerState, series: SeriesState, n_before: int, dv: int, nav_after: int, at_us: int,
                       inputs: dict[str, int]) -> None:
    """Pool capacity, net-delta cap and stress limit (DESIGN section 5), each on the pool as the trade would leave it.

    All are measured against the pool's capacity value: NAV with its tokens at the same haircut as trader
    collateral. A trade is refused only when it breaches a limit *and* makes that figure worse, so a
    trade that reduces the pool's risk always goes through.
    """
    p = state.params
    capacity = nav_after - haircut_gap_micro_usd(state, state.pool.tokens_nano, at_us)
    required = inputs["pool_required_micro_usd"]
    before, after = pool_exposures(state, series.underlying, (series.series_id, quote(state, series), n_before + dv))
    delta_cap = max(capacity, 0) * p.pool_delta_cap_ppm // PPM
    stress_limit = max(capacity, 0) * p.pool_stress_limit_ppm // PPM
    inputs |= {"pool_capacity_micro_usd": capacity, "pool_delta_before_micro_usd": before.dollar_delta_micro_usd,
               "pool_delta_after_micro_usd": after.dollar_delta_micro_usd, "pool_delta_cap_micro_usd": delta_cap,
               "pool_stress_loss_before_micro_usd": before.stress_loss_micro_usd,
               "pool_stress_loss_after_micro_usd": after.stress_loss_micro_usd, "pool_stress_limit_micro_usd": stress_limit}
    limits.require_fits(inputs)
    if abs(n_before + dv) > abs(n_before) and capacity < required:
        raise Rejected(reasons.POOL_CAPACITY, f"pool capacity {capacity} < required {required} micro-USD after the trade",
                       inputs | {"pool_limit_breached": POOL_LIMIT_IM})
    if abs(after.dollar_delta_micro_usd) > delta_cap and abs(after.dollar_delta_micro_usd) > abs(before.dollar_delta_micro_usd):
        raise Rejected(reasons.POOL_CAPACITY, f"pool net delta on {series.underlying} {after.dollar_delta_micro_usd} micro-USD "
                       f"beyond its cap {delta_cap}", inputs | {"pool_limit_breached": POOL_LIMIT_DELTA})
    if after.stress_loss_micro_usd > stress_limit and after.stress_loss_micro_usd > before.stress_loss_micro_usd:
        raise Rejected(reasons.POOL_CAPACITY, f"pool loss under a {p.pool_stress_move_ppm // 10_000} % move of {series.underlying} "
                       f"{after.stress_loss_micro_usd} micro-USD beyond its limit {stress_limit}",
                       inputs | {"pool_limit_breached": POOL_LIMIT_STRESS})


def apply_trade_request(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    """Decide on figures computed from the unchanged state, then commit: a rejection changes nothing."""
    account, series_id, dv = ev["account"], ev["series_id"], ev["volume_nano"]
    acct = known_account(state, account)
    series = state.series.get(series_id)
    if series is None:
        raise Rejected(reasons.UNKNOWN_SERIES, f"series {series_id!r} is not listed")
    if dv == 0:
        raise Rejected(reasons.NON_POSITIVE_AMOUNT, "volume_nano must not be 0")
    at = ev["occurred_at"]
    price = state.prices.get(series.underlying)
    if price is None or not series.spot_micro_usd or abs(at - price.published_at_us) > state.params.price_staleness_limit_us:
        raise Rejected(reasons.STALE_PRICE, f"no fresh {series.underlying} price to trade {series_id}")
    if price.market_status == "HALTED":
        raise Rejected(reasons.MARKET_CLOSED, f"{series.underlying} is halted")
    p = state.params
    # Priced from the live oracle spot and volatility, with funding accrued to the trade's time.
    q = quote(state, series)
    cum_now = accrued_index_micro_usd_wad(series, at)
    pos = acct.positions.get(series_id)
    old_volume = pos.volume_nano if pos else 0
    owed = 0 if pos is None else options.funding_owed_micro_usd(old_volume, cum_now, pos.entry_funding_micro_usd_wad)
    n_before = series.net_volume_nano
    lean = lean_liquidity_now(state)
    cost = options.trade_cost_micro_usd(q.theo_micro_usd, q.spot_micro_usd, q.delta_wad, p.pool_alpha_ppm, lean, n_before, dv)
    fee = trade_fee_micro_usd(p.trade_fee_ppm, p.otm_premium_fee_ppm, q.spot_micro_usd, q.intrinsic_micro_usd, dv, cost)
    insurance_fee = apply_ppm_floor(fee, p.insurance_fee_share_ppm)
    new_volume = old_volume + dv
    health = account_health(state, acct, at, volume_after=(series_id, new_volume), cash_delta_micro_usd=-(owed + cost + fee))
    entry_sum_after = series.entry_index_sum + (0 if pos is None else old_volume * (cum_now - pos.entry_funding_micro_usd_wad)) + dv * cum_now
    view_after = SeriesView(n_before + dv, entry_sum_after, cum_now, q.theo_micro_usd, q.spot_micro_usd, q.delta_wad, q.im_micro_usd(-(n_before + dv)))
    lean_after, nav, required = pool_figures(state, (series_id, view_after), cash_delta_micro_usd=owed + cost + fee - insurance_fee)
    inputs = health.as_inputs() | {
        "spot_micro_usd": q.spot_micro_usd, "theo_micro_usd": q.theo_micro_usd, "mark_before_micro_usd": series.mark_micro_usd,
        "cost_micro_usd": cost, "fee_micro_usd": fee, "volume_nano": dv, "funding_settled_micro_usd": owed,
        "lean_liquidity_micro_usd": lean, "pool_nav_micro_usd": nav, "pool_required_micro_usd": required,
        "net_volume_before_nano": n_before,
    }
    increases_account_risk = abs(new_volume) > abs(old_volume) or new_volume * old_volume < 0
    if increases_account_risk and health.equity_micro_usd < health.initial_micro_usd:
        limits.require_fits(inputs)
        raise Rejected(reasons.INSUFFICIENT_MARGIN, f"equity {health.equity_micro_usd} < initial margin {health.initial_micro_usd} micro-USD after the trade", inputs)
    _check_pool_limits(state, series, n_before, dv, nav, at, inputs)
    limits.require_fits(inputs)
    accrue_funding(series, at)
    settle_funding(state, acct, series, out)
    change_position(state, series, acct, dv)
    acct.cash_micro_usd -= cost + fee
    state.pool.cash_micro_usd += cost + fee - insurance_fee
    state.pool.insurance_cash_micro_usd += insurance_fee
    refresh_series(state, series, at, lean_after)  # pool_figures valued exactly the state committed here
    inputs["mark_after_micro_usd"] = series.mark_micro_usd
    usd = chart.USD
    out.post(chart.margin(account, usd), chart.pool_main(usd), usd, cost)
    out.post(chart.margin(account, usd), chart.pool_main(usd), usd, fee - insurance_fee)
    out.post(chart.margin(account, usd), chart.pool_insurance(usd), usd, insurance_fee)
    watch(state, series.underlying, account)
    recheck(state, account, health)  # the committed trade left the account exactly as valued above
    out.emit("SeriesState", series_state_record(series, ev))
    out.emit("RequestOutcome", request_outcome(ev, "TRADE", account, None, inputs))
