"""Un-stick Faust's commit when a seek moved its committed offset below acknowledgements it had already cleared.

Seen on a new worker whose agent was delivered records while Faust was still restoring the table changelogs: the
fold folded them and they were acknowledged and committed; then Faust's post-recovery seek (`perform_seek`) read an
older committed offset from the broker and set it as its own, while the acknowledgements of the offsets in between
had already left its list. Its `_new_offset` refuses to commit across a gap of more than one offset, so the group's
committed offset stayed there for good (2 of 3 runs with 16 MiB fetches, 1 of 5 with 1 MiB). The fold's own
in-order acker knows which offsets it has acknowledged in this assignment (every output of them landed): those, and
only those, are put back into Faust's list.
"""

from __future__ import annotations

from typing import Any

from faust.types.tuples import ack_lock


def refill_cleared_acks(consumer: Any, tp: Any, acked_from: int, acked_through: int) -> list[int]:
    """Put back the offsets between Faust's committed offset and its lowest pending acknowledgement when this
    assignment's acker acknowledged all of them (acked_from..acked_through); returns the offsets put back."""
    with ack_lock:  # Faust's own lock for its acknowledgement bookkeeping (faust.transport.consumer.Consumer.ack)
        committed = consumer._committed_offset.get(tp)  # noqa: SLF001 - Faust keeps it private
        acked = consumer._acked.get(tp)  # noqa: SLF001
        if not committed or not acked:
            return []
        low = min(acked)
        if low - committed <= 1 or committed < acked_from or low - 1 > acked_through:
            return []  # no stall, or offsets this assignment did not acknowledge: never invented
        index = consumer._acked_index[tp]  # noqa: SLF001
        missing = [o for o in range(committed, low) if o not in index]
        acked.extend(missing)
        acked.sort()
        index.update(missing)
        return missing
