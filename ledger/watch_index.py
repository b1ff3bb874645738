"""The surveillance index (derived data, never hashed) and the hooks rules feed it with; ledger.surveillance reads it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledger.state import LedgerState, SeriesState

MIN_COMPACTION_PUSHES = 65_536


class Surveillance:
    """Which accounts to re-check when: trigger heaps per instrument, a time heap, quote memo, funding bounds.

    Everything here is derived from the ledger state and only decides *which* accounts are re-valued
    after an event; a re-valuation that finds an account healthy changes nothing. So none of it is
    part of the state hash, and `reference` mode (re-value every account after every event) must end
    in the same decisions and the same hash: that is the test of every skip made here.
    """

    __slots__ = ("low", "high", "due", "version", "pushes", "compact_after", "quotes", "funding_bound_micro_usd",
                 "reference", "next_stale_us", "pending", "moved")

    def __init__(self, reference: bool = False) -> None:
        # instrument -> heap of (-trigger level, account, version): a max-heap of levels below which to re-check
        self.low: dict[str, list[tuple[int, str, int]]] = {}
        # instrument -> heap of (trigger level, account, version): levels above which to re-check (options only)
        self.high: dict[str, list[tuple[int, str, int]]] = {}
        self.due: list[tuple[int, str, int]] = []  # (time_us, account, version): funding may have eaten the buffer
        self.version: dict[str, int] = {}  # account -> version of its live entries; older entries are skipped
        self.pushes = 0  # entries pushed since the last compaction
        self.compact_after = MIN_COMPACTION_PUSHES
        self.quotes: dict[str, Any] = {}  # series_id -> ledger.quotes.Quote at the latest (spot, volatility)
        # series_id -> bound on |mark - intrinsic| (micro-USD per contract) the armed time triggers assume
        self.funding_bound_micro_usd: dict[str, int] = {}
        self.reference = reference  # re-value every account after every event (the slow reference mode)
        self.next_stale_us = 0  # earliest time a fresh stock mark turns stale (its haircut steps up)
        # Filled by the rules during an event, consumed by the sweep after it: accounts to re-value
        # (a step that moved every holder of an instrument) and instruments whose level moved.
        self.pending: dict[str, None] = {}
        self.moved: dict[str, int] = {}


def recheck_holders(state: LedgerState, instrument: str) -> None:
    """Every account exposed to the instrument is re-valued after this event (a step, not a move)."""
    holders = state.exposure.get(instrument)
    if holders:
        state.surveillance.pending.update(holders)


def recheck(state: LedgerState, account: str) -> None:
    """The account is re-valued after this event (its own collateral, cash or positions changed)."""
    state.surveillance.pending[account] = None


def note_move(state: LedgerState, instrument: str, level: int) -> None:
    """The instrument's level (spot, or stock price x multiplier) is now this: triggers it crossed fire."""
    state.surveillance.moved[instrument] = level


def bound_funding_premium(state: LedgerState, series: SeriesState) -> None:
    """Keep the premium bound the time triggers assume above |mark - intrinsic|; re-value holders when it grows."""
    premium = abs(series.mark_micro_usd - series.intrinsic_micro_usd)
    bounds = state.surveillance.funding_bound_micro_usd
    if premium > bounds.get(series.series_id, -1):
        if series.series_id in bounds:  # holders were armed with the old bound
            recheck_holders(state, series.underlying)
        bounds[series.series_id] = max(2 * premium, 1)


def stock_level(price_micro_usd: int, multiplier_nano: int) -> int:
    return price_micro_usd * multiplier_nano


def fresh_mark(state: LedgerState, symbol: str, published_at_us: int) -> None:
    """A new stock mark: it is fresh again (its add-on steps down, which harms no one) and may turn stale sooner."""
    state.stale_prices.pop(symbol, None)
    surv = state.surveillance
    surv.next_stale_us = min(surv.next_stale_us, published_at_us + state.params.price_staleness_limit_us + 1)
