"""The worker's cyclic-GC policy: no automatic full collections in the fold's loop; one when the fold is idle, and a backstop.

CPython starts a full (generation 2) collection whenever the long-lived heap has grown by a quarter.
The fold's state only grows, so that happened every ~5 s under load, and each one walked the whole heap:
110-225 ms with the ledger's ~150,000 tracked objects (measured in the latency bench, 2026-12-07), a
stall of the one loop that sequences, folds and sends. Almost nothing is cyclic garbage by then (0-381
objects freed per full collection): young cycles die in generations 0 and 1, which run as before.
So the worker collects generation 2 itself: when the fold has been idle for a while, and at the latest
every `backstop_s` of busy time (memory stays bounded by what cycles accumulate in that time).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("stockledger.gc")

NEVER = 2**31 - 1  # generation 2's threshold (counts generation-1 collections): never reached


class FullCollections:
    """Decides when the worker runs a full collection; install() turns the automatic ones off."""

    def __init__(self, backstop_s: float = 300.0, idle_gap_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, collect: Callable[[], int] = gc.collect):
        self.backstop_s, self.idle_gap_s = backstop_s, idle_gap_s
        self.clock, self.collect = clock, collect
        self.last_at = clock()
        self.collections = 0

    @staticmethod
    def install() -> None:
        """Keep generations 0 and 1 as they are; generation 2 only when maybe() says so."""
        gen0, gen1, _ = gc.get_threshold()
        gc.set_threshold(gen0, gen1, NEVER)

    def maybe(self, idle: bool) -> bool:
        """Collect now if the fold is idle and the last full collection is idle_gap_s old, or it is backstop_s old."""
        now = self.clock()
        age = now - self.last_at
        if age < self.backstop_s and not (idle and age >= self.idle_gap_s):
            return False
        started = time.perf_counter()
        freed = self.collect()
        self.last_at = self.clock()
        self.collections += 1
        log.debug("full collection (%s): %d objects freed in %.0f ms", "idle" if idle else "backstop", freed,
                  (time.perf_counter() - started) * 1000)
        return True
