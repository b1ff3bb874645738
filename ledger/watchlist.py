"""Risk sweep index: re-check an account only when a price moved far enough that its margin buffer may be gone.

For every at-risk account (open positions or a cash debt) we keep, per instrument it is exposed to,
trigger prices derived from a conservative bound: equity - MM can fall by at most
sensitivity_i x |move_i| summed over instruments, with |d(mark)/dS| and |d(MM)/dS| covered by a
safety factor. The buffer is split evenly across the instruments, so no combination of moves can
exhaust it before one instrument crosses its trigger. A time trigger re-checks every account at
least once before funding alone could eat the other half of the buffer (and at least daily). A stock's market
status change re-checks all its holders (the closed-market haircut add-on is a step, not a move).
All keys are (price or time, account): heap order, and so liquidation order, is deterministic.
"""

from __future__ import annotations

import heapq

from ledger.risk import Health
from ledger.state import AccountState, LedgerState
from ledger.units import NANO
from ledger.watch_index import Watchlist

MAX_RECHECK_INTERVAL_US = 24 * 3_600 * 1_000_000
MIN_RECHECK_INTERVAL_US = 60 * 1_000_000  # funding over a minute is negligible against any margin
# Bound on |d(mark - MM)/dS| per contract; everlasting option theo has |delta| <= 1, the pool lean and
# the MM slope add less than half again in any configuration we run.
OPTION_SLOPE_BOUND_NUM, OPTION_SLOPE_BOUND_DEN = 3, 2


def disarm(watch: Watchlist, account: str) -> None:
    watch.version[account] = watch.version.get(account, 0) + 1


def rearm(state: LedgerState, acct: AccountState, health: Health, at_us: int) -> None:
    """Record the account's buffer and set the prices at which it must be checked again."""
    watch = state.watchlist
    disarm(watch, acct.account)
    if not acct.positions and acct.cash_micro_usd >= 0:
        return
    version = watch.version[acct.account]
    buffer = health.equity_micro_usd - (health.maintenance_micro_usd if acct.positions else 0)
    sensitivities: dict[str, tuple[int, int, bool]] = {}  # instrument -> (num, den, both directions)
    # Option values move only when their series are repriced, so their triggers are set around the spot
    # the marks were priced at (not the latest tick), and only a repricing mark can cross them.
    priced_spot: dict[str, tuple[int, int]] = {}  # underlying -> (lowest, highest) priced spot
    funding_num = 0  # funding paid per microsecond is at most funding_num / (NANO x 1e12) micro-USD
    for series_id, pos in acct.positions.items():
        series = state.series[series_id]
        underlying = series.underlying
        funding_num += abs(pos.volume_nano) * abs(series.mark_micro_usd - series.intrinsic_micro_usd) * 1_000_000 // series.funding_period_s
        lo, hi = priced_spot.get(underlying, (series.spot_micro_usd, series.spot_micro_usd))
        priced_spot[underlying] = (min(lo, series.spot_micro_usd), max(hi, series.spot_micro_usd))
        num, den, _ = sensitivities.get(underlying, (0, NANO * OPTION_SLOPE_BOUND_DEN, True))
        sensitivities[underlying] = (num + abs(pos.volume_nano) * OPTION_SLOPE_BOUND_NUM, den, True)
    for symbol, qty in acct.margin_nano.items():
        price = state.prices.get(symbol)
        if qty > 0 and price is not None:
            sensitivities[symbol] = (qty * price.multiplier_nano, NANO * NANO, False)
    half = max(buffer, 0) // 2
    wait_us = MAX_RECHECK_INTERVAL_US if funding_num == 0 else min(MAX_RECHECK_INTERVAL_US, half * NANO * 10**12 // funding_num)
    wait_us = max(wait_us, MIN_RECHECK_INTERVAL_US)
    due_us = at_us + wait_us
    heapq.heappush(watch.due, (due_us, acct.account, version))
    n = len(sensitivities)
    for instrument, (num, den, both) in sensitivities.items():
        price = state.prices.get(instrument)
        if price is None or num == 0:
            continue
        # distance in micro-USD of the instrument's price: buffer / (n x sensitivity), floored, >= 0
        distance = half * den // (n * num)
        low_ref, high_ref = priced_spot.get(instrument, (price.price_micro_usd, price.price_micro_usd))
        heapq.heappush(watch.low.setdefault(instrument, []), (-(low_ref - distance), acct.account, version))
        if both:
            heapq.heappush(watch.high.setdefault(instrument, []), (high_ref + distance, acct.account, version))


def due_accounts(state: LedgerState, instrument: str, price_micro_usd: int, at_us: int, moves: bool = True) -> list[str]:
    """Accounts whose trigger the new mark (or the clock) has crossed, each once, sorted."""
    watch = state.watchlist
    found: dict[str, None] = {}
    low = watch.low.get(instrument) if moves else None
    while low and -low[0][0] >= price_micro_usd:
        _, account, version = heapq.heappop(low)
        if watch.version.get(account) == version:
            found[account] = None
    high = watch.high.get(instrument) if moves else None
    while high and high[0][0] <= price_micro_usd:
        _, account, version = heapq.heappop(high)
        if watch.version.get(account) == version:
            found[account] = None
    due = watch.due
    while due and due[0][0] <= at_us:
        _, account, version = heapq.heappop(due)
        if watch.version.get(account) == version:
            found[account] = None
    return sorted(found)
