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
    # Series are repriced (theo, delta, MM, IM, mark) when the underlying moved this much since the
    # last reprice or this long has passed: marks are a venue's quote, refreshed on a schedule, and
    # every decision records the mark it used, so the rule is explainable and replays identically.
    series_reprice_move_ppm: int = 2_500
    series_reprice_interval_us: int = 300 * SECOND_US

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
