"""Market rules: oracle marks, series listings, funding accrual, and refreshing the pool's side of a series."""

from __future__ import annotations

from typing import Any

from ledger import options, reasons
from ledger.outcome import Outcome, derived_event_id
from ledger.quotes import quote
from ledger.reasons import Rejected
from ledger.risk import accrued_index_micro_usd_wad, lean_liquidity_now
from ledger.state import LedgerState, PriceState, SeriesState
from ledger.units import PPM
from ledger.watch_index import (
    bound_funding_premium,
    fresh_mark,
    note_move,
    recheck_holders,
    recheck_step_exposed,
    stock_level,
)

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
    at, spot = ev["occurred_at"], ev["price_micro_usd"]
    oracle_mult = mult = ev["multiplier_nano"]
    if is_stock:
        mult = _paired_multiplier(state, instrument, ev, previous)
    state.prices[instrument] = PriceState(spot, ev["market_status"], mult, ev["volatility_ppm"], ev["published_at"], at,
                                          0 if mult == oracle_mult else oracle_mult)
    if is_stock:
        note_move(state, instrument, stock_level(spot, mult))
        fresh_mark(state, instrument, ev["published_at"])
        if previous is not None and previous.market_status == "OPEN" and ev["market_status"] != "OPEN":
            recheck_step_exposed(state.surveillance, instrument, state.surveillance.pending)  # the closed-market add-on stepped up
        return
    note_move(state, instrument, spot)
    if previous is not None and previous.volatility_ppm != ev["volatility_ppm"]:
        recheck_holders(state, instrument)  # theo and margins of every series moved with the volatility
    p = state.params
    for series_id in state.series_by_underlying.get(instrument, ()):
        series = state.series[series_id]
        accrue_funding(series, at)
        priced = series.spot_micro_usd
        if (not priced or at - series.priced_at_us >= p.series_refresh_interval_us
                or abs(spot - priced) * PPM >= p.series_refresh_move_ppm * priced
                or series.volatility_ppm != ev["volatility_ppm"]):
            refresh_series(state, series, at)
            out.emit("SeriesState", series_state_record(series, ev))


def _paired_multiplier(state: LedgerState, symbol: str, ev: dict[str, Any], previous: PriceState | None) -> int:
    """The multiplier a stock's price is valued with, and the end of a corporate action's pause window.

    A closed market's price is frozen at its last open value, which was quoted against the multiplier of
    that time: when the oracle flips the multiplier at an activation (a weekend split) before the price
    adjusts, the price keeps its old multiplier until it moves or the market opens (was: price x the new
    multiplier, a 3-for-1 split valued the stock at 3x). The pause ends with the first open-market mark at
    or after the activation whose multiplier is the ledger's own at that time.
    """
    mult = ev["multiplier_nano"]
    if previous is not None and ev["market_status"] != "OPEN" and ev["price_micro_usd"] == previous.price_micro_usd:
        mult = previous.multiplier_nano
    reserve = state.reserves[symbol]
    activation = reserve.paused_for_activation_us
    if (activation is not None and ev["market_status"] == "OPEN" and ev["published_at"] >= activation
            and ev["multiplier_nano"] == reserve.multiplier_at(ev["published_at"])):
        reserve.paused_for_activation_us = None  # the add-on steps down: buffers only grow
    return mult


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
    series.cum_funding_micro_usd_wad = accrued_index_micro_usd_wad(series, now_us)
    series.last_funding_us = max(series.last_funding_us, now_us)


def refresh_series(state: LedgerState, series: SeriesState, at_us: int, lean_micro_usd: int | None = None) -> None:
    """Bring the pool's side of the series to the live quote: funding accrued first, then the leaned mark recomputed.

    lean_micro_usd: the pool's lean liquidity once this refresh is done, if the caller already has it (a
    trade computed it for its capacity check on exactly the committed figures); else worked out here.
    """
    accrue_funding(series, at_us)
    q = quote(state, series)
    series.spot_micro_usd = q.spot_micro_usd
    series.volatility_ppm = q.volatility_ppm
    series.intrinsic_micro_usd = q.intrinsic_micro_usd
    series.theo_micro_usd = q.theo_micro_usd
    series.delta_wad = q.delta_wad
    series.mm_micro_usd = q.mm_micro_usd(-series.net_volume_nano)  # the pool's side: it holds -net
    series.im_micro_usd = q.im_micro_usd(-series.net_volume_nano)
    series.priced_at_us = at_us
    series.mark_micro_usd = options.pool_mark_micro_usd(
        q.theo_micro_usd, q.spot_micro_usd, q.delta_wad, state.params.pool_alpha_ppm,
        lean_liquidity_now(state) if lean_micro_usd is None else lean_micro_usd, series.net_volume_nano,
    )
    bound_funding_premium(state, series)


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
