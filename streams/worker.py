"""A stream worker: a fold group member; while it holds the sequenced partition it also runs the sequencer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer

from ledger.params import RiskParams
from services.log_keys import load_signer
from services.settings import get_settings
from streams.fold import Fold
from streams.sequencer import Sequencer
from streams.step import FoldHalted

log = logging.getLogger("stockledger.worker")


class Worker:
    """Runs until stop; several may run (one is active, the others take over on a rebalance)."""

    def __init__(self, bootstrap: str, app_id: str = "stockledger", idle_ms: int = 200, params: RiskParams | None = None,
                 *, auth: Mapping[str, Any]):
        self.bootstrap = bootstrap
        self.auth = auth  # the ledger principal's client security settings, for every client of the worker
        self.app_id = app_id
        self.idle_ms = idle_ms
        self.params = params
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._sequencer_task: asyncio.Task | None = None
        self._stop = asyncio.Event()
        self.producer: AIOKafkaProducer | None = None
        self.fold: Fold | None = None
        self.sequencer: Sequencer | None = None

    async def _set_active(self, active: bool) -> None:
        if active and self._sequencer_task is None:
            self.sequencer = Sequencer(self.bootstrap, f"{self.app_id}.sequencer", self.producer, idle_ms=self.idle_ms,
                                       auth=self.auth, batch_max_records=get_settings().sequencer_batch_max_records)
            self._sequencer_task = asyncio.create_task(self.sequencer.run(self._stop), name="sequencer")
            log.info("worker %s is active: sequencing and folding", self.worker_id)
        elif not active and self._sequencer_task is not None:
            self._sequencer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sequencer_task
            self._sequencer_task = None
            # Batches the cancelled sequencer handed to the producer are still on their way. Land them before
            # giving the partition up (this runs in the revocation callback): otherwise they could reach
            # ledger.sequenced after the next owner's first batches, interleaving two merge orders.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.producer.flush(), timeout=30)
            log.info("worker %s is standby", self.worker_id)

    async def run(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=True, acks="all",
                                         linger_ms=5, max_batch_size=512 * 1024, **self.auth)
        await self.producer.start()
        settings = get_settings()
        signer = load_signer(settings.log_key_file, settings.log_origin)
        self.fold = Fold(self.bootstrap, f"{self.app_id}.fold", self.worker_id, self.producer, self._set_active, self.params,
                         auth=self.auth, signer=signer, origin=settings.log_origin,
                         head_every_records=settings.log_checkpoint_every_records,
                         head_every_s=settings.log_checkpoint_every_ms / 1000,
                         snapshot_every_records=settings.snapshot_every_records,
                         snapshot_every_s=settings.snapshot_every_ms / 1000, snapshot_keep=settings.snapshot_keep)
        try:
            fold_task = asyncio.create_task(self.fold.run(self._stop), name="fold")
            while not self._stop.is_set():
                await asyncio.sleep(0.2)
                if fold_task.done():
                    fold_task.result()  # surface the error
                if self._sequencer_task is not None and self._sequencer_task.done():
                    exc = self._sequencer_task.exception()
                    if exc is not None:
                        raise exc
            await fold_task
        finally:
            await self._set_active(False)
            await self.producer.stop()

    def stop(self) -> None:
        self._stop.set()


def run_worker(bootstrap: str, app_id: str, idle_ms: int, auth: Mapping[str, Any], restart_delay_s: float = 1.0) -> None:
    """Blocking entry point with SIGTERM/SIGINT handling; uvloop when available.

    A lost broker or any other failure restarts the worker (state is rebuilt from the log), so an
    outage delays the ledger but never stops it; SIGTERM/SIGINT end it. A bug in the core on a
    record (FoldHalted) stops it for good, naming topic, partition and offset: input never does.
    """
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    stopping = False

    def request_stop(worker: Worker) -> None:
        nonlocal stopping
        stopping = True
        worker.stop()

    async def main(worker: Worker) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, request_stop, worker)
        await worker.run()

    while not stopping:
        try:
            asyncio.run(main(Worker(bootstrap, app_id, idle_ms, auth=auth)))
        except FoldHalted as halted:
            # A bug on a record: a restart would rebuild and stop on it again. Stop, naming the record.
            log.critical("%s; the worker stops (fix the bug, then restart it)", halted)
            raise
        except Exception:  # noqa: BLE001 - logged with its traceback, then a clean restart
            log.exception("worker failed; restarting in %.1f s", restart_delay_s)
            time.sleep(restart_delay_s)
        else:
            break
