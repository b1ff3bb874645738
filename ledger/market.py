"""Market rules: oracle marks, series listings, and the per-series theo price, mark, margin and funding."""

from __future__ import annotations

from typing import Any

from ledger import options, reasons
from ledger.outcome import Outcome, derived_event_id
from ledger.reasons import Rejected
from ledger.risk import pool_liquidity_micro_usd
from ledger.state import LedgerState, PriceState, SeriesState

MARKET_STATUSES = ("UNKNOWN", "CLOSED", "OPEN", "HALTED")


def apply_price_mark(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    instrument = ev["instrument"]
    is_stock = instrument in state.reserves
    if not is_stock and ev["volatility_ppm"] <= 0:
        raise Rejected(reasons.UNKNOWN_INSTRUMENT, f"{instrument!r} is neither a listed stock nor a crypto underlying with volatility")
    if ev["price_micro_usd"] <= 0:
        raise Rejected(reasons.NON_POSITIVE_AMOUNT, f"price must be > 0, got {ev['price_micro_usd']}")
    if ev["multiplier_nano"] <= 0:
        raise Rejected(reasons.MALFORMED, "multiplier_nano must be > 0")
    previous = state.prices.get(instrument)
    if previous is not None and ev["published_at"] < previous.published_at_us:
        raise Rejected(reasons.STALE_PRICE, f"published {ev['published_at']} is older than the mark held ({previous.published_at_us})")
    out.status_changed = previous is not None and previous.market_status != ev["market_status"]
    state.prices[instrument] = PriceState(
        ev["price_micro_usd"], ev["market_status"], ev["multiplier_nano"], ev["volatility_ppm"], ev["published_at"], ev["occurred_at"]
    )
    if not is_stock:
        at, spot, p = ev["occurred_at"], ev["price_micro_usd"], state.params
        for series_id in state.series_by_underlying.get(instrument, ()):
            series = state.series[series_id]
            accrue_funding(series, at)
            moved = abs(spot - series.spot_micro_usd) * 1_000_000 >= p.series_reprice_move_ppm * series.spot_micro_usd
            if moved or not series.spot_micro_usd or at - series.priced_at_us >= p.series_reprice_interval_us:
                refresh_series(state, series, at)
                out.emit("SeriesState", series_state_record(series, ev))


def apply_series_listed(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    series_id = ev["series_id"]
    if series_id in state.series:
        raise Rejected(reasons.ALREADY_LISTED, f"series {series_id} is already listed")
    if ev["strike_micro_usd"] <= 0 or ev["funding_period_s"] <= 0:
        raise Rejected(reasons.NON_POSITIVE_AMOUNT, "strike and funding period must be > 0")
    if ev["underlying"] in state.reserves:  # stock marks carry no volatility: options on them cannot be priced
        raise Rejected(reasons.UNKNOWN_INSTRUMENT, f"underlying {ev['underlying']!r} is a listed stock, not a crypto underlying")
    series = SeriesState(
        series_id, ev["underlying"], ev["option_kind"], ev["strike_micro_usd"], ev["funding_period_s"], last_funding_us=ev["occurred_at"]
    )
    state.series[series_id] = series
    state.series_by_underlying.setdefault(ev["underlying"], []).append(series_id)
    if ev["underlying"] in state.prices:
        refresh_series(state, series, ev["occurred_at"])


def accrue_funding(series: SeriesState, now_us: int) -> None:
    """Longs pay shorts (mark - intrinsic) x dt / T per contract, over the interval just ended."""
    if series.spot_micro_usd and now_us > series.last_funding_us:
        series.cum_funding_micro_usd_wad += options.funding_index_delta_micro_usd_wad(
            series.mark_micro_usd, series.intrinsic_micro_usd, now_us - series.last_funding_us, series.funding_period_s
        )
    series.last_funding_us = max(series.last_funding_us, now_us)


def refresh_series(state: LedgerState, series: SeriesState, at_us: int) -> None:
    """Recompute theo, delta, mark and per-contract margins from the underlying's latest mark."""
    price = state.prices[series.underlying]
    spot, sigma = price.price_micro_usd, price.volatility_ppm
    k, strike, period = series.option_kind, series.strike_micro_usd, series.funding_period_s
    series.spot_micro_usd = spot
    series.volatility_ppm = sigma
    series.priced_at_us = at_us
    series.intrinsic_micro_usd = options.intrinsic_micro_usd(k, spot, strike)
    series.theo_micro_usd = options.theoretical_price_micro_usd(k, spot, strike, sigma, period)
    series.delta_wad = options.delta_wad(k, spot, strike, sigma, period)
    p = state.params
    series.mm_micro_usd = options.maintenance_margin_micro_usd(k, spot, strike, sigma, period, p.maintenance_margin_ratio_ppm)
    series.im_micro_usd = options.initial_margin_micro_usd(
        k, spot, strike, sigma, period, p.maintenance_margin_ratio_ppm, p.initial_margin_ratio_ppm, p.min_initial_margin_ratio_ppm
    )
    update_mark(state, series, at_us)


def update_mark(state: LedgerState, series: SeriesState, at_us: int) -> None:
    """The pool's quote leans against its position: traders net long raises the mark."""
    if not series.spot_micro_usd:
        return
    series.mark_micro_usd = options.pool_mark_micro_usd(
        series.theo_micro_usd, series.spot_micro_usd, series.delta_wad, state.params.pool_alpha_ppm,
        pool_liquidity_micro_usd(state, at_us), series.net_volume_nano,
    )


def series_state_record(series: SeriesState, ev: dict[str, Any]) -> dict[str, Any]:
    """SeriesState event published to the compacted topic; id derived from the causing mark."""
    return {
        "event_id": derived_event_id("series", ev["event_id"], 0) + ":" + series.series_id,
        "occurred_at": ev["occurred_at"],
        "source": "stockledger",
        "series_id": series.series_id,
        "underlying": series.underlying,
        "spot_micro_usd": series.spot_micro_usd,
        "theo_micro_usd": series.theo_micro_usd,
        "mark_micro_usd": series.mark_micro_usd,
        "net_volume_nano": series.net_volume_nano,
        "cum_funding_pico_usd": series.cum_funding_micro_usd_wad // 10**12,
        "volatility_ppm": series.volatility_ppm,
    }
