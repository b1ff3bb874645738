"""Valuation: collateral with haircuts, positions at theo (live quotes), funding, equity and margin; the pool's NAV along the curve."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ledger import options
from ledger.quotes import quote
from ledger.state import AccountState, LedgerState, PoolState, Position, SeriesState
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
    if price.market_status != "OPEN" or reserve.paused_for_activation_us is not None:  # closed, or a corporate action's pause
        total += state.params.closed_market_addon_ppm
    if at_us - price.published_at_us > state.params.price_staleness_limit_us:
        total += state.params.stale_price_addon_ppm
    return min(total, PPM)


def price_addon_ppm(state: LedgerState, symbol: str, at_us: int) -> int:
    """The closed-market and stale-price add-ons in force for a symbol (0 when open and fresh; PPM with no mark).

    The band by which a frozen or old price may be wrong: collateral loses it (ledger.risk.haircut_ppm),
    seized tokens are valued below by it, and the pool's NAV is taken at the edge of it that favours the
    LPs who stay (ledger.pool).
    """
    price = state.prices.get(symbol)
    if price is None:
        return PPM
    addon = 0
    reserve = state.reserves.get(symbol)
    if price.market_status != "OPEN" or (reserve is not None and reserve.paused_for_activation_us is not None):
        addon += state.params.closed_market_addon_ppm
    if at_us - price.published_at_us > state.params.price_staleness_limit_us:
        addon += state.params.stale_price_addon_ppm
    return min(addon, PPM)


class TokenValues(NamedTuple):
    """Token holdings valued four ways, micro-USD: at the oracle, at the low and high edge of the
    closed/stale band, and with the full collateral haircut (what a trader's margin would count)."""

    oracle_micro_usd: int
    low_micro_usd: int
    high_micro_usd: int
    haircut_micro_usd: int


def token_values(state: LedgerState, holdings_nano: dict[str, int], at_us: int) -> TokenValues:
    """Value of token holdings (the pool's) at one instant; every part rounded against the holder but high (up)."""
    oracle = low = high = haircut = 0
    for symbol, qty in holdings_nano.items():
        price = state.prices.get(symbol)
        if qty <= 0 or price is None:
            continue
        value = (qty * price.multiplier_nano * price.price_micro_usd) // NANO_SQUARED
        addon = price_addon_ppm(state, symbol, at_us)
        oracle += value
        low += value * (PPM - addon) // PPM
        high -= (-value * (PPM + addon)) // PPM
        haircut += value * (PPM - haircut_ppm(state, symbol, at_us)) // PPM
    return TokenValues(oracle, low, high, haircut)


def haircut_gap_micro_usd(state: LedgerState, holdings_nano: dict[str, int], at_us: int) -> int:
    """How much less the holdings count at the collateral haircut than at the oracle (capacity = NAV - this)."""
    gap = 0  # token_values' oracle - haircut parts, without the band edges it does not need (called at every trade)
    prices = state.prices
    for symbol, qty in holdings_nano.items():
        price = prices.get(symbol)
        if qty <= 0 or price is None:
            continue
        value = (qty * price.multiplier_nano * price.price_micro_usd) // NANO_SQUARED
        gap += value - value * (PPM - haircut_ppm(state, symbol, at_us)) // PPM
    return gap


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


def accrued_index_micro_usd_wad(series: SeriesState, now_us: int) -> int:
    """The cumulative funding index brought up to now at the premium in force (mark - intrinsic as last refreshed).

    options.funding_index_delta_micro_usd_wad inlined (same half-even rounding; a test holds them
    equal): every valuation of a position calls this, and its argument checks cost more than the sum.
    """
    dt_us = now_us - series.last_funding_us
    if dt_us <= 0 or not series.spot_micro_usd:
        return series.cum_funding_micro_usd_wad
    den = series.funding_period_s * 1_000_000
    q, r = divmod((series.mark_micro_usd - series.intrinsic_micro_usd) * dt_us * options.WAD, den)
    twice = 2 * r
    if twice > den or (twice == den and q & 1):
        q += 1
    return series.cum_funding_micro_usd_wad + q


def account_health(state: LedgerState, acct: AccountState, at_us: int,
                   units: dict[str, tuple[int, int]] | None = None,
                   volume_after: tuple[str, int] | None = None, cash_delta_micro_usd: int = 0,
                   margin_after_nano: dict[str, int] | None = None) -> Health:
    """Equity = collateral + cash + sum(volume x theo) - funding owed to at_us, at the live quotes (DESIGN section 5).

    Positions are valued at the model price, never at the pool's leaned mark: slippage paid on entry
    is a cost, not a gain, and a close along the curve can only lower equity. MM and IM are summed
    per position, each at its side's figure (ledger.quotes: shorts with the stress floor, longs at most theo). volume_after = (series_id, volume) values the account as it would be after a
    trade on that series (its funding then settled, its cash moved by cash_delta_micro_usd), and
    margin_after_nano with other collateral balances, without touching the state: rules decide on
    these figures before they change anything.
    """
    margin = acct.margin_nano if margin_after_nano is None else margin_after_nano
    collateral = collateral_value_micro_usd(state, margin, at_us, units)
    positions = funding = mm = im = 0
    all_series = state.series
    positions_after: Iterable[tuple[str, Position]] = acct.positions.items()
    if volume_after is not None:
        series_id, volume = volume_after
        changed = [(s, p) for s, p in acct.positions.items() if s != series_id]
        if volume:
            changed.append((series_id, Position(volume, accrued_index_micro_usd_wad(all_series[series_id], at_us))))
        positions_after = changed
    # Inlined options.mul_nano_floor / mul_nano_ceil / funding_owed_micro_usd (same rounding): this is
    # the hottest loop of the fold, and the argument checks there cost more than the arithmetic.
    memo = state.surveillance.quotes
    prices = state.prices
    for series_id, pos in positions_after:
        series = all_series[series_id]
        q = memo.get(series_id)  # ledger.quotes.quote's memo, checked inline: this loop is the fold's hottest
        price = prices[series.underlying]
        if q is None or q[0] != price.price_micro_usd or q[1] != price.volatility_ppm:
            q = quote(state, series)
        volume = pos.volume_nano
        positions += (q.theo_micro_usd * volume) // NANO
        cum = accrued_index_micro_usd_wad(series, at_us)
        funding -= (-volume * (cum - pos.entry_funding_micro_usd_wad)) // FUNDING_SCALE
        if volume < 0:
            mm -= (q.short_mm_micro_usd * volume) // NANO
            im -= (q.short_im_micro_usd * volume) // NANO
        else:
            mm -= (-q.long_mm_micro_usd * volume) // NANO
            im -= (-q.long_im_micro_usd * volume) // NANO
    equity = collateral + acct.cash_micro_usd + cash_delta_micro_usd + positions - funding
    return Health(collateral, positions, funding, equity, mm, im)


def is_liquidatable(health: Health, has_positions: bool) -> bool:
    """Below maintenance margin with positions open, or negative equity (a debt collateral no longer covers)."""
    if has_positions:
        return health.equity_micro_usd < health.maintenance_micro_usd
    return health.equity_micro_usd < 0


def pool_liquidity_micro_usd(state: LedgerState) -> int:
    """Pool token value at oracle prices (no haircut) plus its cash."""
    pool = state.pool
    total = pool.cash_micro_usd
    prices = state.prices
    for symbol, qty in pool.tokens_nano.items():
        price = prices.get(symbol)  # inlined token_unit / token_value_micro_usd_floor; no mark: worth 0
        if price is not None:
            total += (qty * price.multiplier_nano * price.price_micro_usd) // NANO_SQUARED
    return total


class SeriesView(NamedTuple):
    """The pool's side of one series: traders' net volume, funding bookkeeping and the refreshed figures."""

    net_volume_nano: int
    entry_index_sum: int
    cum_funding_micro_usd_wad: int
    theo_micro_usd: int
    spot_micro_usd: int
    delta_wad: int
    im_micro_usd: int


def pool_views(state: LedgerState, replace: tuple[str, SeriesView] | None = None) -> list[tuple[int, ...]]:
    """Every series the pool has a side in, as refreshed, as plain SeriesView-ordered tuples (the fold builds
    these at every trade); replace = (series_id, view) stands in for one (a trade being decided)."""
    views: list[tuple[int, ...]] = []
    replaced, replacement = (None, None) if replace is None else replace
    for series in state.series.values():
        if series.series_id == replaced and replacement is not None:
            views.append(tuple(replacement))
        elif series.net_volume_nano or series.entry_index_sum:
            views.append((series.net_volume_nano, series.entry_index_sum, series.cum_funding_micro_usd_wad,
                          series.theo_micro_usd, series.spot_micro_usd, series.delta_wad, series.im_micro_usd))
    return views


def lean_liquidity_micro_usd(state: LedgerState, views: list[tuple[int, ...]], liquidity_micro_usd: int) -> int:
    """Liquidity + LP PnL at theo (Deri's _calculateK input), never below the configured floor.

    LP PnL is the pool's side of the book at the model price plus funding receivable. The floor keeps
    k finite and continuous as the pool's value falls towards zero (no jump to another formula).
    """
    receivable, pnl = lp_terms_micro_usd(views)
    return max(liquidity_micro_usd + receivable + pnl, state.params.pool_lean_liquidity_floor_micro_usd)


def lp_terms_micro_usd(views: list[tuple[int, ...]]) -> tuple[int, int]:
    """(funding receivable, PnL at theo) of the pool's side over the views, each term rounded down per series:
    the lean, the model value and NAV are built from these two sums."""
    receivable = pnl = 0
    for net, entry_sum, cum, theo, _, _, _ in views:  # a starred target would build a list per view
        receivable += (net * cum - entry_sum) // FUNDING_SCALE
        pnl += (-net * theo) // NANO
    return receivable, pnl


def pool_model_value_micro_usd(state: LedgerState) -> int:
    """Liquidity + LP PnL at theo + funding receivable, without the floor: the value LP shares are priced on.

    It is what the lean uses (Deri's _calculateK input) and, unlike NAV, it does not depend on the
    liquidity through the curve: a flow of v moves it by exactly v, so every deposit and redemption is
    proportional and no LP flow can move value between share holders (DESIGN section 5, LP shares).
    """
    receivable, pnl = lp_terms_micro_usd(pool_views(state))
    return pool_liquidity_micro_usd(state) + receivable + pnl


def lean_liquidity_now(state: LedgerState) -> int:
    """The lean liquidity of the pool as it stands."""
    return lean_liquidity_micro_usd(state, pool_views(state), pool_liquidity_micro_usd(state))


def close_cost_micro_usd(view: tuple[int, ...], alpha_ppm: int, lean_micro_usd: int) -> int:
    """What the pool pays to get flat in one series along the curve: -(traders' cost to go from N to 0), rounded up.

    options.trade_cost_micro_usd(theo, spot, delta, alpha, lean, 0, N) for the unclamped curve, inlined
    (a test holds them equal): NAV sums this over every series at each trade; clamped curves defer to it.
    """
    n, _, _, theo, spot, delta, _ = view
    p = spot * spot * abs(delta) * alpha_ppm
    q = lean_micro_usd * (options.WAD * PPM * NANO)
    tq = theo * q
    if lean_micro_usd <= 0 or tq + p * n < 0:
        return options.trade_cost_micro_usd(theo, spot, delta, alpha_ppm, lean_micro_usd, 0, n)
    return -((-(2 * tq * n + p * n * n)) // (2 * q * NANO))


def pool_figures(state: LedgerState, replace: tuple[str, SeriesView] | None = None,
                 cash_delta_micro_usd: int = 0) -> tuple[int, int, int]:
    """(lean liquidity, NAV, required) of the pool in one pass; replace and cash_delta as for a trade being decided.

    NAV = liquidity + funding receivable - what the pool would pay to close its net position along the
    curve: the LPs' side is valued at the cost of getting flat through the DPMM (DESIGN section 5), so
    NAV is conservative. Required = IM on the net exposure per series x the pool margin multiplier.
    """
    views = pool_views(state, replace)
    liquidity = pool_liquidity_micro_usd(state) + cash_delta_micro_usd
    receivable, pnl = lp_terms_micro_usd(views)  # one pass for the lean and NAV's funding receivable
    lean = max(liquidity + receivable + pnl, state.params.pool_lean_liquidity_floor_micro_usd)
    nav = liquidity + receivable
    required = 0
    alpha = state.params.pool_alpha_ppm
    for view in views:
        net = view[0]
        if net:
            nav -= close_cost_micro_usd(view, alpha, lean)
            required -= (-view[6] * abs(net)) // NANO  # options.mul_nano_ceil(im, |net|)
    return lean, nav, required * state.params.pool_margin_multiplier_ppm // PPM


def pool_nav_micro_usd(state: LedgerState) -> int:
    """The pool's NAV as it stands (see pool_figures)."""
    return pool_figures(state)[1]


def share_value_micro_usd_per_share(pool: PoolState, nav_micro_usd: int) -> int:
    """NAV per whole pool share (1e9 nano-shares), rounded down."""
    if pool.shares_nano == 0:
        return 0
    return nav_micro_usd * 1_000_000_000 // pool.shares_nano


class Exposure(NamedTuple):
    """The pool's risk on one underlying: its net dollar delta and its loss at theo under the stress move."""

    dollar_delta_micro_usd: int
    stress_loss_micro_usd: int


def _stressed_theos(state: LedgerState, series: SeriesState, spot_micro_usd: int, volatility_ppm: int) -> tuple[int, int, int, int, int]:
    """(spot, volatility, move, theo at spot x (1 + move), theo at spot x (1 - move)), memoised per series."""
    move = state.params.pool_stress_move_ppm
    memo = state.surveillance.stress_theos
    stressed = memo.get(series.series_id)
    if stressed is None or stressed[0] != spot_micro_usd or stressed[1] != volatility_ppm or stressed[2] != move:
        kind, strike, period = series.option_kind, series.strike_micro_usd, series.funding_period_s
        up = options.moved_theo_micro_usd(kind, spot_micro_usd, strike, volatility_ppm, period, move)
        down = options.moved_theo_micro_usd(kind, spot_micro_usd, strike, volatility_ppm, period, -move)
        stressed = memo[series.series_id] = (spot_micro_usd, volatility_ppm, move, up, down)
    return stressed


def pool_exposures(state: LedgerState, underlying: str, traded: tuple[str, Any, int]) -> tuple[Exposure, Exposure]:
    """The pool's exposure on an underlying (its net dollar delta, its worst loss at theo under
    +/- pool_stress_move_ppm) before and after a trade: traded = (series_id, live quote, traders' net after).

    Like NAV and IM capacity, every other series counts at its refreshed figures (SeriesState, refreshed at
    each trade on it and on the refresh schedule), the traded one at its live quote; theo at the two
    stressed spots is memoised per series and refreshed spot. The pool holds -net of every series. Loss is
    rounded up, delta away from zero: both are compared with limits.
    """
    traded_id, q, net_after = traded
    delta = up = down = 0  # sums over the untraded series
    for series_id in state.series_by_underlying.get(underlying, ()):
        if series_id == traded_id:
            continue
        series = state.series[series_id]
        net = series.net_volume_nano
        if not net:
            continue
        stressed = _stressed_theos(state, series, series.spot_micro_usd, series.volatility_ppm)
        up += net * (stressed[3] - series.theo_micro_usd)
        down += net * (stressed[4] - series.theo_micro_usd)
        delta -= net * series.delta_wad * series.spot_micro_usd
    series = state.series[traded_id]
    stressed = _stressed_theos(state, series, q.spot_micro_usd, q.volatility_ppm)
    both = []
    for net in (series.net_volume_nano, net_after):
        d = delta - net * q.delta_wad * q.spot_micro_usd
        worst = max(up + net * (stressed[3] - q.theo_micro_usd), down + net * (stressed[4] - q.theo_micro_usd), 0)
        magnitude = -((-abs(d)) // (NANO * options.WAD))  # away from zero
        both.append(Exposure(magnitude if d >= 0 else -magnitude, -((-worst) // NANO)))
    return both[0], both[1]
