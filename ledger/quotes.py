"""Series quotes at the underlying's latest oracle mark (theo, delta, margins per contract): a pure function, memoised."""

from __future__ import annotations

from typing import NamedTuple

from ledger import options
from ledger.state import LedgerState, SeriesState

# Trigger levels for option positions are set at most this far (ppm of spot) from the spot they were
# armed at; within it, the quote's local slope bounds hold (ledger.options.local_slope_parts_ppm).
SLOPE_WINDOW_PPM = 20_000


class Quote(NamedTuple):
    """One series' figures per contract at one (spot, volatility): what a trader's position is worth and needs."""

    spot_micro_usd: int
    volatility_ppm: int
    intrinsic_micro_usd: int
    theo_micro_usd: int
    delta_wad: int
    mm_micro_usd: int
    im_micro_usd: int
    # bounds per contract within SLOPE_WINDOW_PPM of this spot: on |delta| (theo moves a position one way
    # only) and on |dMM/dS| (either way); ledger.options.local_slope_parts_ppm
    delta_slope_ppm: int
    mm_slope_ppm: int


def quote(state: LedgerState, series: SeriesState) -> Quote:
    """The series at its underlying's latest oracle spot and volatility (DESIGN section 5: traders at theo).

    A quote depends only on the oracle's latest (spot, volatility) and the series' terms, so it is
    computed when first needed and kept in a memo that is not ledger state: whether or not a quote was
    computed never changes a decision or the state hash. Callers ensure the underlying has a price.
    """
    price = state.prices[series.underlying]
    spot, sigma = price.price_micro_usd, price.volatility_ppm
    memo = state.surveillance.quotes
    cached = memo.get(series.series_id)
    if cached is not None and cached[0] == spot and cached[1] == sigma:
        return cached
    p = state.params
    figures = options.series_figures(
        series.option_kind, spot, series.strike_micro_usd, sigma, series.funding_period_s,
        p.maintenance_margin_ratio_ppm, p.initial_margin_ratio_ppm, p.min_initial_margin_ratio_ppm,
    )
    intrinsic, theo, delta = figures[0], figures[1], figures[2]
    slopes = options.local_slope_parts_ppm(spot, sigma, series.funding_period_s, p.maintenance_margin_ratio_ppm,
                                           theo - intrinsic, delta, SLOPE_WINDOW_PPM)
    fresh = Quote(spot, sigma, *figures, *slopes)
    memo[series.series_id] = fresh
    return fresh
