"""A one-off consumer's slow close never holds up recovery."""

from __future__ import annotations

import asyncio
import time

from streams import consumers


class _SlowClose:
    def __init__(self, close_s: float):
        self.close_s, self.closed = close_s, False

    async def stop(self):
        await asyncio.sleep(self.close_s)
        self.closed = True


def test_stop_soon_returns_after_the_wait_and_the_close_finishes_in_the_background(monkeypatch):
    monkeypatch.setattr(consumers, "STOP_WAIT_S", 0.2)

    async def run():
        slow, quick = _SlowClose(1.0), _SlowClose(0.0)
        started = time.monotonic()
        await consumers.stop_soon(quick)
        assert quick.closed  # a quick close is simply awaited
        await consumers.stop_soon(slow)
        waited = time.monotonic() - started
        assert not slow.closed and waited < 0.9  # returned at the bound, not after the 1 s close
        await asyncio.sleep(1.0)
        assert slow.closed and not consumers._STOPPING  # closed later, no task left behind

    asyncio.run(run())
