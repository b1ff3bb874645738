"""The risk sweep's index type (kept apart from its functions so state.py can hold one)."""

from __future__ import annotations


class Watchlist:
    """Heaps of trigger prices per instrument plus one time heap; stale entries are skipped by version."""

    __slots__ = ("low", "high", "due", "version", "pushes", "compact_after")

    def __init__(self) -> None:
        self.low: dict[str, list[tuple[int, str, int]]] = {}  # max-heap via negated trigger price
        self.high: dict[str, list[tuple[int, str, int]]] = {}
        self.due: list[tuple[int, str, int]] = []
        self.version: dict[str, int] = {}
        # Heap upkeep, not part of the canonical form: entries pushed since the last compaction
        # (ledger.watchlist.compact drops superseded entries once as many were pushed as are live).
        self.pushes = 0
        self.compact_after = 65_536

    def canonical(self) -> list:
        """Live entries in a fixed order: what decides future checks, not how the heaps happen to be laid out."""
        live = lambda heap: sorted(e for e in heap if self.version.get(e[1]) == e[2])  # noqa: E731
        return [
            [[k, live(v)] for k, v in sorted(self.low.items())],
            [[k, live(v)] for k, v in sorted(self.high.items())],
            live(self.due),
            sorted(self.version.items()),
        ]
