"""Faust's commit stuck after a seek: the acknowledgements this assignment made are put back, nothing else."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.ack_repair import refill_cleared_acks

TP0 = TP("ledger.sequenced", 0)


def _consumer(committed: int, acked: list[int]) -> SimpleNamespace:
    """The part of Faust's Consumer its _new_offset reads, in the state the stalled runs ended in."""
    c = SimpleNamespace(_acked=defaultdict(list), _acked_index=defaultdict(set), _gap=defaultdict(IntervalTree),
                        _committed_offset={TP0: committed})
    c._acked[TP0].extend(acked)
    c._acked_index[TP0].update(acked)
    return c


def test_the_stalled_state_commits_nothing_until_the_cleared_acks_are_put_back():
    # A seek set the committed offset back to 20; 20..22 had been acknowledged (and cleared by a commit) before it.
    c = _consumer(20, list(range(23, 60)))
    assert Consumer._new_offset(c, TP0) is None  # Faust's own rule: a gap of more than one, no commit, for good
    assert refill_cleared_acks(c, TP0, acked_from=0, acked_through=59) == [20, 21, 22]
    assert Consumer._new_offset(c, TP0) == 60


def test_offsets_this_assignment_did_not_acknowledge_are_never_put_back():
    c = _consumer(20, list(range(23, 60)))
    assert refill_cleared_acks(c, TP0, acked_from=21, acked_through=59) == []  # started above the committed offset
    assert refill_cleared_acks(c, TP0, acked_from=0, acked_through=21) == []  # 22 not acknowledged (in flight)
    assert Consumer._new_offset(c, TP0) is None
    healthy = _consumer(20, [21, 22, 23])  # a gap of one: Faust commits on its own; nothing to do
    assert refill_cleared_acks(healthy, TP0, acked_from=0, acked_through=23) == []
