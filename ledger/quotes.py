"""Series quotes at the underlying's latest oracle mark (theo, delta, margins per contract and side): a pure function, memoised."""

from __future__ import annotations

from typing import NamedTuple

from ledger import options
from ledger.state import LedgerState, SeriesState
from ledger.units import PPM

# Trigger levels for option positions are set at most this far (ppm of spot) from the spot they were
# armed at; within it, the quote's local slope bounds hold (ledger.options.local_slope_parts_ppm).
SLOPE_WINDOW_PPM = 20_000


class Quote(NamedTuple):
    """One series' figures per contract at one (spot, volatility): what a position is worth and needs, per side.

    Margins (DESIGN section 5), per contract:
      short: MM = short_floor x spot + theo at (spot moved adversely by short_stress_move, volatility x
             (1 + short_vol_shock)) - intrinsic now (Deribit's "percentage of spot plus the mark", the mark
             taken under stress): it covers that move, and it never falls when volatility rises (theo rises
             with volatility, intrinsic does not move); IM = max(spot x min_imr, MM x imr/mmr).
      long:  Deri's MM and IM (model_*), at most theo (a long can lose no more than its premium at theo).
    """

    spot_micro_usd: int
    volatility_ppm: int
    intrinsic_micro_usd: int
    theo_micro_usd: int
    delta_wad: int
    model_mm_micro_usd: int
    model_im_micro_usd: int
    short_mm_micro_usd: int
    short_im_micro_usd: int
    long_mm_micro_usd: int
    long_im_micro_usd: int
    # bounds per contract within SLOPE_WINDOW_PPM of this spot (ledger.options.local_slope_parts_ppm): a
    # long's on |delta| (theo moves it one way only) and on |dMM/dS| (either way); a short's on
    # |d(theo + MM)/dS| as a whole, either way (its intrinsic cancels: theo + MM = V + floor x S + the
    # stressed theo, so the bound is |dV/dS| + floor + (1 + move) x |the stressed delta|)
    delta_slope_ppm: int
    short_buffer_slope_ppm: int
    long_mm_slope_ppm: int
    # the same three at every spot (global_mm_slopes_ppm at this volatility), kept here so that arming an account
    # reads them with the quote instead of working them out per position. None only in a Quote unpickled from a
    # snapshot written before they existed, which ledger.watch_index.Surveillance drops on load (never used).
    delta_slope_any_ppm: int = None  # type: ignore[assignment]
    short_buffer_slope_any_ppm: int = None  # type: ignore[assignment]
    long_mm_slope_any_ppm: int = None  # type: ignore[assignment]

    def mm_micro_usd(self, volume_nano: int) -> int:
        """MM per contract of a position of this sign."""
        return self.short_mm_micro_usd if volume_nano < 0 else self.long_mm_micro_usd

    def im_micro_usd(self, volume_nano: int) -> int:
        """IM per contract of a position of this sign."""
        return self.short_im_micro_usd if volume_nano < 0 else self.long_im_micro_usd


def global_mm_slopes_ppm(state: LedgerState, sigma_ppm: int, funding_period_s: int) -> tuple[int, int, int]:
    """(long |delta|, short |d(theo + MM)/dS|, long |dMM/dS|) bounds per contract, ppm, valid at every spot.

    A short's theo + MM = V(S) + f S + theo(S(1 +/- m), sigma') has slope at most 1 + f + (1 + m) (|dV/dS|
    <= (u+1)/(2u) <= 1, a delta lies in [-1, 1]); the long's cap at theo has slope |delta| <= 1. A min of
    two terms moves no faster than the faster of them.
    """
    p = state.params
    delta_any, model_any = options.slope_bound_parts_ppm(sigma_ppm, funding_period_s, p.maintenance_margin_ratio_ppm)
    short_any = 2 * PPM + p.short_stress_move_ppm + p.short_floor_ppm
    return delta_any, short_any, max(model_any, PPM)


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
    mmr, imr = p.maintenance_margin_ratio_ppm, p.initial_margin_ratio_ppm
    kind, strike, period = series.option_kind, series.strike_micro_usd, series.funding_period_s
    intrinsic, theo, delta, mm, im = options.series_figures_unchecked(kind, spot, strike, sigma, period, mmr, imr, p.min_initial_margin_ratio_ppm)
    delta_slope, model_slope = options.local_slope_parts_ppm(spot, sigma, period, mmr, theo - intrinsic, delta, SLOPE_WINDOW_PPM)
    # Short: the floor share of spot plus the stressed theo, less what is intrinsic now.
    s_spot, s_sigma, s_theo, s_delta = options.stressed_figures_unchecked(kind, spot, strike, sigma, period,
                                                               p.short_stress_move_ppm, p.short_vol_shock_ppm)
    short_mm = -((-spot * p.short_floor_ppm) // PPM) + s_theo - intrinsic  # s_theo >= intrinsic: the move is adverse
    short_im = max(-((-spot * p.min_initial_margin_ratio_ppm) // PPM), -((-short_mm * imr) // mmr))
    s_intrinsic = max(s_spot - strike, 0) if kind == options.CALL else max(strike - s_spot, 0)
    s_delta_slope, _ = options.local_slope_parts_ppm(s_spot, s_sigma, period, mmr, s_theo - s_intrinsic, s_delta, SLOPE_WINDOW_PPM)
    tv_slope = options.time_value_slope_ppm(spot, sigma, period, theo - intrinsic, SLOPE_WINDOW_PPM)
    short_slope = -((-(PPM + p.short_stress_move_ppm) * s_delta_slope) // PPM) + tv_slope + p.short_floor_ppm
    fresh = Quote(spot, sigma, intrinsic, theo, delta, mm, im, short_mm, short_im, min(mm, theo), min(im, theo),
                  delta_slope, short_slope, max(model_slope, delta_slope), *global_mm_slopes_ppm(state, sigma, period))
    memo[series.series_id] = fresh
    return fresh
