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

from heapq import heapify, heappop, heappush

from ledger.risk import Health
from ledger.state import AccountState, LedgerState, PriceState
from ledger.units import NANO
from ledger.watch_index import Watchlist

MAX_RECHECK_INTERVAL_US = 24 * 3_600 * 1_000_000
MIN_RECHECK_INTERVAL_US = 60 * 1_000_000  # funding over a minute is negligible against any margin
# Bound on |d(mark - MM)/dS| per contract; everlasting option theo has |delta| <= 1, the pool lean and
# the MM slope add less than half again in any configuration we run.
OPTION_SLOPE_BOUND_NUM, OPTION_SLOPE_BOUND_DEN = 3, 2
OPTION_DEN = NANO * OPTION_SLOPE_BOUND_DEN  # sensitivity denominators: per nano-contract, per nano-token x multiplier
TOKEN_DEN = NANO * NANO
FUNDING_WAIT_SCALE = NANO * 10**12  # half the buffer / (funding_num / (NANO x 1e12)) -> microseconds
MIN_COMPACTION_PUSHES = 65_536


def disarm(watch: Watchlist, account: str) -> None:
    watch.version[account] = watch.version.get(account, 0) + 1


def rearm(state: LedgerState, acct: AccountState, health: Health, at_us: int) -> None:
    """Record the account's buffer and set the prices at which it must be checked again."""
    watch = state.watchlist
    account = acct.account
    version = watch.version.get(account, 0) + 1  # disarm: the account's older entries are now stale
    watch.version[account] = version
    positions = acct.positions
    if not positions and acct.cash_micro_usd >= 0:
        return
    buffer = health.equity_micro_usd - (health.maintenance_micro_usd if positions else 0)
    prices = state.prices
    all_series = state.series
    # Option values move only when their series are repriced, so their triggers are set around the spot
    # the marks were priced at (not the latest tick), and only a repricing mark can cross them.
    options: dict[str, list[int]] = {}  # underlying -> [summed |volume_nano|, lowest, highest priced spot]
    funding_num = 0  # funding paid per microsecond is at most funding_num / (NANO x 1e12) micro-USD
    for series_id, pos in positions.items():
        series = all_series[series_id]
        volume = pos.volume_nano
        if volume < 0:
            volume = -volume
        premium = series.mark_micro_usd - series.intrinsic_micro_usd
        if premium < 0:
            premium = -premium
        funding_num += volume * premium * 1_000_000 // series.funding_period_s
        spot = series.spot_micro_usd
        entry = options.get(series.underlying)
        if entry is None:
            options[series.underlying] = [volume, spot, spot]
        else:
            entry[0] += volume
            if spot < entry[1]:
                entry[1] = spot
            elif spot > entry[2]:
                entry[2] = spot
    tokens: dict[str, tuple[int, PriceState]] = {}  # collateral symbol -> (qty x multiplier, its mark)
    for symbol, qty in acct.margin_nano.items():
        if qty > 0:
            price = prices.get(symbol)
            if price is not None:
                tokens[symbol] = (qty * price.multiplier_nano, price)
    half = max(buffer, 0) // 2
    wait_us = MAX_RECHECK_INTERVAL_US if funding_num == 0 else min(MAX_RECHECK_INTERVAL_US, half * FUNDING_WAIT_SCALE // funding_num)
    heappush(watch.due, (at_us + max(wait_us, MIN_RECHECK_INTERVAL_US), account, version))
    pushed = 1
    # The buffer is split evenly over the instruments; a collateral symbol that is also an underlying
    # counts once, as collateral (priced around the options' spots).
    n = len(tokens) + len(options)
    for underlying in options:
        if underlying in tokens:
            n -= 1
    low, high = watch.low, watch.high
    for underlying, (volume, low_ref, high_ref) in options.items():
        num = volume * OPTION_SLOPE_BOUND_NUM
        if num == 0 or underlying in tokens or underlying not in prices:
            continue
        # distance in micro-USD of the instrument's price: buffer / (n x sensitivity), floored, >= 0
        distance = half * OPTION_DEN // (n * num)
        heap = low.get(underlying)
        if heap is None:
            heap = low[underlying] = []
        heappush(heap, (distance - low_ref, account, version))  # a max-heap of low_ref - distance
        heap = high.get(underlying)
        if heap is None:
            heap = high[underlying] = []
        heappush(heap, (high_ref + distance, account, version))
        pushed += 2
    for symbol, (num, price) in tokens.items():
        if num == 0:
            continue
        distance = half * TOKEN_DEN // (n * num)
        entry = options.get(symbol)
        low_ref = price.price_micro_usd if entry is None else entry[1]
        heap = low.get(symbol)
        if heap is None:
            heap = low[symbol] = []
        heappush(heap, (distance - low_ref, account, version))
        pushed += 1
    watch.pushes += pushed
    if watch.pushes >= watch.compact_after:
        compact(watch)


def compact(watch: Watchlist) -> None:
    """Drop the entries that later rearms superseded (they would only be popped and skipped), keeping every heap key.

    Every rearm supersedes the account's previous entries, so without this the heaps grow with the
    number of re-checks rather than the number of accounts. Live entries, and so every future check
    and the canonical form, are unchanged.
    """
    current = watch.version.get
    live_total = 0
    for heap in (*watch.low.values(), *watch.high.values(), watch.due):
        heap[:] = [e for e in heap if current(e[1]) == e[2]]
        heapify(heap)
        live_total += len(heap)
    # Next compaction after twice as many pushes as entries are live now: amortised O(1) per push,
    # and the heaps never hold more than three times their live entries.
    watch.pushes = 0
    watch.compact_after = max(2 * live_total, MIN_COMPACTION_PUSHES)


def due_accounts(state: LedgerState, instrument: str, price_micro_usd: int, at_us: int, moves: bool = True) -> list[str]:
    """Accounts whose trigger the new mark (or the clock) has crossed, each once, sorted."""
    watch = state.watchlist
    current = watch.version.get
    found: dict[str, None] = {}
    low = watch.low.get(instrument) if moves else None
    while low and -low[0][0] >= price_micro_usd:
        _, account, version = heappop(low)
        if current(account) == version:
            found[account] = None
    high = watch.high.get(instrument) if moves else None
    while high and high[0][0] <= price_micro_usd:
        _, account, version = heappop(high)
        if current(account) == version:
            found[account] = None
    due = watch.due
    while due and due[0][0] <= at_us:
        _, account, version = heappop(due)
        if current(account) == version:
            found[account] = None
    return sorted(found)
