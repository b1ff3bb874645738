"""Risk and venue parameters, integers with units in their names; part of the fold's input."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ledger.units import SECOND_US


@dataclass(frozen=True)
class RiskParams:
    """Parameters the rules use; changing any of them changes decisions, so they enter the state hash."""

    price_staleness_limit_us: int = 15 * 60 * SECOND_US
    closed_market_addon_ppm: int = 100_000  # extra haircut while a stock's market is not open
    stale_price_addon_ppm: int = 200_000  # extra haircut while a price is older than the limit
    maintenance_margin_ratio_ppm: int = 100_000  # mmr
    initial_margin_ratio_ppm: int = 150_000  # imr
    min_initial_margin_ratio_ppm: int = 20_000
    pool_alpha_ppm: int = 100_000  # DPMM price sensitivity to net volume
    trade_fee_ppm: int = 300  # of notional (spot x |volume|)
    insurance_fee_share_ppm: int = 200_000  # share of trade fees routed to the insurance pool
    liquidation_bonus_ppm: int = 50_000  # Aave-style bonus on seized collateral, to the pool
    liquidation_penalty_ppm: int = 100_000  # of maintenance margin, to the insurance pool
    pool_margin_multiplier_ppm: int = 1_000_000  # pool value must cover net exposure IM x this
    initial_pool_share_nano_per_micro_usd: int = 1_000  # first LP deposit: 1 pool share per USD
    # The lean's liquidity (pool liquidity + LP PnL, DESIGN section 5) never counts below this floor,
    # so the DPMM's k stays finite and continuous however far the pool's value falls.
    pool_lean_liquidity_floor_micro_usd: int = 100_000 * 1_000_000
    # The pool's side of a series (its mark and so the funding premium, the figures behind its NAV and
    # capacity) is refreshed at every trade or liquidation on the series, and on the first mark of its
    # underlying after this much time or this large a move; traders are always valued at the live quote.
    series_refresh_move_ppm: int = 20_000
    series_refresh_interval_us: int = 300 * SECOND_US
    # Surveillance (ledger.surveillance): the share of an account's margin buffer kept for funding
    # accrual (the rest is spread over price moves), and the volatility assumed for a stock when the
    # buffer is spread (crypto marks carry their own). Both only tune how often accounts are re-valued.
    funding_buffer_share_ppm: int = 125_000
    # Applied event ids are remembered (to tell a redelivery from a reuse) for this long behind the
    # latest event time; an older event is refused as beyond_redelivery_horizon (ledger.idempotency).
    redelivery_horizon_us: int = 7 * 86_400 * SECOND_US
    stock_trigger_volatility_ppm: int = 300_000
    # --- Venue economics (DESIGN section 5; each with its range) ---------------------------------
    # Short-option margin floor (Deribit-style): MM of a short is at least its loss under an adverse move
    # of short_stress_move_ppm at a volatility raised by short_vol_shock_ppm, plus short_floor_ppm of spot.
    # Ranges: move [0, 500_000], vol shock [0, 2_000_000], floor [0, 100_000]. A long's MM and IM never
    # exceed its value (its premium at theo: the most it can lose).
    short_stress_move_ppm: int = 100_000
    short_vol_shock_ppm: int = 250_000
    short_floor_ppm: int = 10_000
    # Fees (Deri v3's feeRatioITM / feeRatioOTM): in the money, trade_fee_ppm of the notional (spot x |volume|);
    # out of the money, the smaller of that and otm_premium_fee_ppm of the premium paid or received.
    # Range [0, 1_000_000] (a fee never exceeds the premium).
    otm_premium_fee_ppm: int = 100_000
    # Pool limits (risk-increasing trades beyond any of them are rejected pool_capacity):
    # |the pool's net dollar delta per underlying| <= pool_delta_cap_ppm x the pool's capacity value
    # (NAV with its tokens at the collateral haircut), range [0, 10_000_000]; the pool's loss at theo under
    # a +/- pool_stress_move_ppm move of the underlying <= pool_stress_limit_ppm x capacity value, ranges
    # [0, 900_000] and [0, 10_000_000].
    pool_delta_cap_ppm: int = 1_000_000
    pool_stress_move_ppm: int = 400_000
    pool_stress_limit_ppm: int = 1_000_000
    # Liquidation (Aave v3.3 close factor, Deri v3 priceShiftLimit): an account whose equity is at least
    # liquidation_partial_min_health_ppm of its MM is first closed by liquidation_close_factor_ppm of every
    # position; only if that does not restore equity >= MM is the rest closed. Ranges [0, 1_000_000] and
    # (0, 1_000_000]. One liquidation moves a series' mark by at most liquidation_price_shift_limit_ppm of its
    # theo (range (0, 1_000_000]); the rest of a position waits for the next event.
    liquidation_partial_min_health_ppm: int = 950_000
    liquidation_close_factor_ppm: int = 500_000
    liquidation_price_shift_limit_ppm: int = 200_000
    # USD settlement (ledger.settlement; Deri v3 keeps reserveRatioB0 of B0 in the pool and swaps other tokens
    # into B0 when a trader withdraws): after a USD withdrawal the venue's USD on hand must be at least
    # usd_min_cash_ratio_ppm of the pool's USD debt (its negative cash: what it owes winners), range
    # [0, 1_000_000]; when it would not be, pool tokens are sold for USD first, each at its oracle price less
    # usd_settlement_haircut_ppm (what a sale is assumed to give up), range [0, 500_000].
    usd_min_cash_ratio_ppm: int = 100_000
    usd_settlement_haircut_ppm: int = 20_000

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
