"""The surveillance index (derived data, never hashed) and the hooks rules feed it with; ledger.surveillance reads it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ledger import options

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
                 "reference", "next_stale_us", "pending", "moved", "series_holders", "step_watch",
                 "known_health", "stress_theos", "stale_as_of_us")

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
        # (series_id, side) -> bound on the premium that side pays, micro-USD per contract, assumed by the
        # armed time triggers: side 1 = longs (mark above intrinsic), -1 = shorts (mark below intrinsic)
        self.funding_bound_micro_usd: dict[tuple[str, int], int] = {}
        self.series_holders: dict[str, dict[str, None]] = {}  # series_id -> accounts that held it
        # symbol -> {account: version}: accounts whose buffer could not also absorb that stock's haircut
        # steps (market closing, mark turning stale); everyone else was armed with the steps budgeted
        self.step_watch: dict[str, dict[str, int]] = {}
        self.reference = reference  # re-value every account after every event (the slow reference mode)
        self.next_stale_us = 0  # earliest time a fresh stock mark turns stale (its haircut steps up)
        # The effective time state.stale_prices was last worked out at: it holds for later times up to
        # next_stale_us, not for earlier ones (an event may be dated before the one folded just before it).
        self.stale_as_of_us = 0
        # Filled by the rules during an event, consumed by the sweep after it: accounts to re-value
        # (a step that moved every holder of an instrument) and instruments whose level moved.
        self.pending: dict[str, None] = {}
        self.moved: dict[str, int] = {}
        # account -> its ledger.risk.Health after this event, when the rule already worked it out on the
        # very figures the event committed (a trade's post-trade valuation): the sweep need not redo it
        self.known_health: dict[str, Any] = {}
        # series_id -> (spot, volatility, move, theo at spot x (1 + move), theo at spot x (1 - move)): the
        # pool's stress limit (ledger.risk.pool_exposure), memoised like the quotes
        self.stress_theos: dict[str, tuple[int, int, int, int, int]] = {}

    # The memos are worked out again on demand and decide nothing: a snapshot leaves them out (smaller), and a
    # state restored from one starts with them empty. So a memo written by another version of the code (a
    # ledger.quotes.Quote with other fields) is never used, and snapshots stay readable across such changes.
    _MEMOS = ("quotes", "stress_theos")

    def __getstate__(self) -> dict[str, Any]:
        return {name: {} if name in self._MEMOS else getattr(self, name) for name in self.__slots__ if hasattr(self, name)}

    def __setstate__(self, saved: Any) -> None:
        if isinstance(saved, tuple):  # pickled before __getstate__ existed: (None, slot values)
            saved = {**(saved[0] or {}), **(saved[1] or {})}
        self.__init__()  # every slot at its default (memos empty) first: a snapshot older than a slot leaves none unset
        for name, value in saved.items():
            if name not in self._MEMOS:
                setattr(self, name, value)


def recheck_holders(state: LedgerState, instrument: str) -> None:
    """Every account exposed to the instrument is re-valued after this event (a step, not a move)."""
    holders = state.exposure.get(instrument)
    if holders:
        state.surveillance.pending.update(holders)


def recheck_step_exposed(surv: Surveillance, symbol: str, due: dict[str, None]) -> None:
    """A stock's haircut stepped up: re-value the accounts whose armed budget did not cover that step."""
    watched = surv.step_watch.get(symbol)
    if not watched:
        return
    current = surv.version.get
    live = {account: version for account, version in watched.items() if current(account) == version}
    surv.step_watch[symbol] = live
    due.update(dict.fromkeys(live))


def recheck(state: LedgerState, account: str, health: Any = None) -> None:
    """The account is re-valued after this event (its own collateral, cash or positions changed).

    health: its valuation after the event, if the rule computed exactly that (the sweep then reuses it;
    the reference mode never does, so the tests comparing the two would catch a wrong one).
    """
    surv = state.surveillance
    surv.pending[account] = None
    if health is not None:
        surv.known_health[account] = health


def note_move(state: LedgerState, instrument: str, level: int) -> None:
    """The instrument's level (spot, or stock price x multiplier) is now this: triggers it crossed fire."""
    state.surveillance.moved[instrument] = level


def bound_funding_premium(state: LedgerState, series: SeriesState) -> None:
    """Keep each side's premium bound above what it now pays; when one grows, re-value that series' holders.

    Funding flows one way at a time: longs pay while mark > intrinsic, shorts while mark < intrinsic.
    Each side's time triggers assume a bound on what it pays; a refresh that outgrows it sets the
    bound to four times the new premium and queues the series' holders (armed with the old bound).
    """
    premium = series.mark_micro_usd - series.intrinsic_micro_usd
    side = 1 if premium > 0 else -1
    key = (series.series_id, side)
    surv = state.surveillance
    if abs(premium) > surv.funding_bound_micro_usd.get(key, 0):
        # The time value alone never exceeds K/u (its value at the strike): start each side above that,
        # so only an unusual lean raises a bound (and re-values every holder of the series).
        # A raise re-values every holder of the series, so it leaves room: four times the new premium.
        cap = options.time_value_cap_micro_usd(series.strike_micro_usd, series.volatility_ppm, series.funding_period_s)
        first = key not in surv.funding_bound_micro_usd
        surv.funding_bound_micro_usd[key] = 2 * max(abs(premium), cap) if first else 4 * abs(premium)
        holders = surv.series_holders.get(series.series_id)
        if holders:
            surv.pending.update(holders)


def hold(state: LedgerState, series_id: str, account: str) -> None:
    """The account holds (or held) the series: its holders are re-valued when the series' funding bound grows."""
    holders = state.surveillance.series_holders.get(series_id)
    if holders is None:
        holders = state.surveillance.series_holders[series_id] = {}
    holders[account] = None


def stock_level(price_micro_usd: int, multiplier_nano: int) -> int:
    return price_micro_usd * multiplier_nano


def fresh_mark(state: LedgerState, symbol: str, published_at_us: int) -> None:
    """A new stock mark: it is fresh again (its add-on steps down, which harms no one) and may turn stale sooner."""
    state.stale_prices.pop(symbol, None)
    surv = state.surveillance
    surv.next_stale_us = min(surv.next_stale_us, published_at_us + state.params.price_staleness_limit_us + 1)
