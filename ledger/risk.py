"""Valuation: collateral value with haircuts, position value at mark, funding, equity and margin."""

from __future__ import annotations

from dataclasses import dataclass

from ledger import options
from ledger.state import AccountState, LedgerState, PoolState
from ledger.units import NANO, PPM

FUNDING_SCALE = NANO * options.WAD  # volume_nano x index (micro-USD x 1e18 per contract) -> micro-USD
NANO_SQUARED = NANO * NANO  # qty_nano x multiplier_nano x price_micro_usd -> micro-USD


@dataclass(slots=True)
class Health:
    """An account's risk figures at one instant, all micro-USD."""

    collateral_micro_usd: int
    positions_micro_usd: int
    funding_owed_micro_usd: int
    equity_micro_usd: int
    maintenance_micro_usd: int
    initial_micro_usd: int

    def as_inputs(self) -> dict[str, int]:
        return {
            "collateral_value_micro_usd": self.collateral_micro_usd,
            "positions_value_micro_usd": self.positions_micro_usd,
            "funding_owed_micro_usd": self.funding_owed_micro_usd,
            "equity_micro_usd": self.equity_micro_usd,
            "maintenance_margin_micro_usd": self.maintenance_micro_usd,
            "initial_margin_micro_usd": self.initial_micro_usd,
        }


def haircut_ppm(state: LedgerState, symbol: str, at_us: int) -> int:
    """Symbol haircut plus add-ons when its market is not open or its price is stale (capped at 100 %)."""
    reserve = state.reserves[symbol]
    price = state.prices.get(symbol)
    total = reserve.haircut_ppm
    if price is None:
        return PPM
    if price.market_status != "OPEN":
        total += state.params.closed_market_addon_ppm
    if at_us - price.published_at_us > state.params.price_staleness_limit_us:
        total += state.params.stale_price_addon_ppm
    return min(total, PPM)


def token_unit(state: LedgerState, symbol: str, at_us: int) -> tuple[int, int]:
    """(price_micro_usd per share, multiplier_nano shares per token) from one oracle report; (0, 1e9) if none.

    Price and multiplier come from the same report (Chainlink's tokenized-asset model), so a split
    never shows a new multiplier against an old price; the ledger's own multiplier history serves
    secure mint and proof of reserves, and reconciliation compares the two.
    """
    price = state.prices.get(symbol)
    if price is None:
        return 0, 1_000_000_000
    return price.price_micro_usd, price.multiplier_nano


def collateral_units(state: LedgerState, at_us: int) -> dict[str, tuple[int, int]]:
    """(price x multiplier_nano, PPM - haircut_ppm) per listed, priced symbol at one instant.

    The risk sweep values every account it re-checks at the same instant: working out each symbol's
    price and haircut once per sweep, not once per account and symbol, is most of its valuation cost.
    """
    units = {}
    for symbol, price in state.prices.items():
        if symbol in state.reserves and price.price_micro_usd:
            units[symbol] = (price.price_micro_usd * price.multiplier_nano, PPM - haircut_ppm(state, symbol, at_us))
    return units


def collateral_value_micro_usd(state: LedgerState, balances_nano: dict[str, int], at_us: int,
                               units: dict[str, tuple[int, int]] | None = None) -> int:
    """Haircut value of token balances, rounded down (the user's side); units: collateral_units(state, at_us), if at hand."""
    total = 0
    for symbol, qty in balances_nano.items():
        if qty <= 0:
            continue
        unit = None if units is None else units.get(symbol)
        if unit is None:
            price, mult = token_unit(state, symbol, at_us)
            if price == 0:
                continue
            unit = (price * mult, PPM - haircut_ppm(state, symbol, at_us))
        # token_value_micro_usd_floor, then the haircut, each rounded down
        total += (qty * unit[0]) // NANO_SQUARED * unit[1] // PPM
    return total


def account_health(state: LedgerState, acct: AccountState, at_us: int,
                   units: dict[str, tuple[int, int]] | None = None) -> Health:
    """Equity = collateral + cash + positions at mark - funding owed; MM and IM summed per position."""
    collateral = collateral_value_micro_usd(state, acct.margin_nano, at_us, units)
    positions = funding = mm = im = 0
    all_series = state.series
    # Inlined options.mul_nano_floor / mul_nano_ceil / funding_owed_micro_usd (same rounding): this is
    # the hottest loop of the fold, and the argument checks there cost more than the arithmetic.
    for series_id, pos in acct.positions.items():
        series = all_series[series_id]
        volume = pos.volume_nano
        positions += (series.mark_micro_usd * volume) // NANO
        funding -= (-volume * (series.cum_funding_micro_usd_wad - pos.entry_funding_micro_usd_wad)) // FUNDING_SCALE
        volume = abs(volume)
        mm -= (-series.mm_micro_usd * volume) // NANO
        im -= (-series.im_micro_usd * volume) // NANO
    equity = collateral + acct.cash_micro_usd + positions - funding
    return Health(collateral, positions, funding, equity, mm, im)


def is_liquidatable(health: Health, has_positions: bool) -> bool:
    """Below maintenance margin with positions open, or negative equity (a debt collateral no longer covers)."""
    if has_positions:
        return health.equity_micro_usd < health.maintenance_micro_usd
    return health.equity_micro_usd < 0


def pool_liquidity_micro_usd(state: LedgerState, at_us: int) -> int:
    """Pool token value at oracle prices (no haircut) plus its cash: what backs the pool's quotes."""
    pool = state.pool
    total = pool.cash_micro_usd
    prices = state.prices
    for symbol, qty in pool.tokens_nano.items():
        price = prices.get(symbol)  # inlined token_unit / token_value_micro_usd_floor; no mark: worth 0
        if price is not None:
            total += (qty * price.multiplier_nano * price.price_micro_usd) // NANO_SQUARED
    return total


def pool_nav_micro_usd(state: LedgerState, at_us: int) -> int:
    """NAV = liquidity - value of the pool's short of traders' net positions + funding receivable."""
    nav = pool_liquidity_micro_usd(state, at_us)
    for series in state.series.values():
        net = series.net_volume_nano
        if net:
            nav += (-series.mark_micro_usd * net) // NANO  # minus options.mul_nano_ceil(mark, net)
            nav += (net * series.cum_funding_micro_usd_wad - series.entry_index_sum) // FUNDING_SCALE
    return nav


def pool_required_micro_usd(state: LedgerState) -> int:
    """What the pool must hold: IM on its net exposure per series, times the pool margin multiplier."""
    required = 0
    for series in state.series.values():
        net = series.net_volume_nano
        if net:
            required -= (-series.im_micro_usd * abs(net)) // NANO  # plus options.mul_nano_ceil(im, |net|)
    return required * state.params.pool_margin_multiplier_ppm // PPM


def share_value_micro_usd_per_share(pool: PoolState, nav_micro_usd: int) -> int:
    """NAV per whole pool share (1e9 nano-shares), rounded down."""
    if pool.shares_nano == 0:
        return 0
    return nav_micro_usd * 1_000_000_000 // pool.shares_nano
