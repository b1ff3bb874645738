"""One-off aiokafka consumers (recovery reads): stopping them without waiting on a slow close."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer

_STOPPING: set[asyncio.Task] = set()  # consumers still closing in the background (kept from the GC)
STOP_WAIT_S = 2.0


async def stop_soon(consumer: AIOKafkaConsumer) -> None:
    """Stop a one-off consumer, waiting at most STOP_WAIT_S; the rest of its close runs in the background.

    Seen in the demo: an assigned (group-less) consumer's stop() took 30 s while the worker's sequencer was
    busy, and recovery waited for it; nothing of the recovery depends on the close having finished.
    """
    task = asyncio.ensure_future(consumer.stop())
    _STOPPING.add(task)
    task.add_done_callback(_STOPPING.discard)
    with contextlib.suppress(asyncio.TimeoutError, Exception):
        await asyncio.wait_for(asyncio.shield(task), STOP_WAIT_S)
