"""The worker's full-collection policy: none automatic, one when the fold is quiet, and a backstop."""

from __future__ import annotations

import gc

from streams.gc_policy import NEVER, FullCollections


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy(clock: FakeClock, calls: list[float]) -> FullCollections:
    return FullCollections(backstop_s=300.0, idle_gap_s=10.0, clock=clock, collect=lambda: calls.append(clock.now) or 0)


def test_busy_fold_collects_only_at_the_backstop():
    clock, calls = FakeClock(), []
    p = policy(clock, calls)
    for _ in range(299):
        clock.now += 1.0
        assert not p.maybe(idle=False)
    clock.now += 1.0
    assert p.maybe(idle=False)
    assert calls == [1300.0]
    clock.now += 299.0
    assert not p.maybe(idle=False)  # the clock restarts at each collection


def test_a_quiet_fold_collects_once_the_gap_has_passed_and_not_again_right_away():
    clock, calls = FakeClock(), []
    p = policy(clock, calls)
    clock.now += 9.0
    assert not p.maybe(idle=True)
    clock.now += 1.0
    assert p.maybe(idle=True)
    clock.now += 5.0
    assert not p.maybe(idle=True)
    assert calls == [1010.0] and p.collections == 1


def test_install_turns_off_automatic_full_collections_and_keeps_the_young_generations():
    before = gc.get_threshold()
    try:
        FullCollections.install()
        assert gc.get_threshold() == (before[0], before[1], NEVER)
    finally:
        gc.set_threshold(*before)
