"""Un-stick Faust's commit when a seek moved its committed offset below acknowledgements it had already cleared.

Seen on a new worker whose agent was delivered records while Faust was still restoring the table changelogs: the
fold folded them and they were acknowledged and committed; then Faust's post-recovery seek (`perform_seek`) read an
older committed offset from the broker and set it as its own, while the acknowledgements of the offsets in between
had already left its list. Its `_new_offset` refuses to commit across a gap of more than one offset, so the group's
committed offset stayed there for good (2 of 3 runs with 16 MiB fetches, 1 of 5 with 1 MiB). The fold's own
in-order acker knows which offsets it has acknowledged in this assignment (every output of them landed): those, and
only those, are put back into Faust's list, and only once the gap has stood unchanged for STUCK_FOR_S (while a
commit is in flight Faust has already taken its offsets off the list, for milliseconds: that is no stall).
"""

from __future__ import annotations

from typing import Any

from faust.types.tuples import ack_lock

STUCK_FOR_S = 5.0


class AckRepair:
    """Watches one partition's acknowledgement bookkeeping; `check` puts back what this assignment acknowledged."""

    def __init__(self) -> None:
        self.seen: tuple[int, int] | None = None  # (committed offset, lowest pending acknowledgement) of a gap
        self.seen_at = 0.0

    def check(self, consumer: Any, tp: Any, acked_from: int, acked_through: int, now: float) -> list[int]:
        """The offsets put back (acked_from..acked_through: what this assignment's acker acknowledged)."""
        with ack_lock:  # Faust's own lock for its acknowledgement bookkeeping (faust.transport.consumer.Consumer.ack)
            committed = consumer._committed_offset.get(tp)  # noqa: SLF001 - Faust keeps it private
            acked = consumer._acked.get(tp)  # noqa: SLF001
            if not committed or not acked or min(acked) - committed <= 1:
                self.seen = None
                return []
            gap = (committed, min(acked))
            if gap != self.seen:
                self.seen, self.seen_at = gap, now  # a commit in flight looks like this for a moment
                return []
            if now - self.seen_at < STUCK_FOR_S or committed < acked_from or gap[1] - 1 > acked_through:
                return []  # not stuck long enough, or offsets this assignment did not acknowledge: never invented
            index = consumer._acked_index[tp]  # noqa: SLF001
            missing = [o for o in range(committed, gap[1]) if o not in index]
            acked.extend(missing)
            acked.sort()
            index.update(missing)
            self.seen = None
            return missing
