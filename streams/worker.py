"""`stockledger worker`: runs the Faust worker of streams/app.py, restarting it after a failure that is not a bug."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time

import faust

from ledger.params import RiskParams
from services.ports import check_port_free
from services.settings import Settings
from streams.app import create_app
from streams.gc_policy import FullCollections
from streams.step import FoldHalted

log = logging.getLogger("stockledger.worker")


SHUTDOWN_DEADLINE_S = 20.0  # after SIGTERM/SIGINT the process ends within this, clean or not


class _Worker(faust.Worker):
    """Faust's worker, remembering whether SIGTERM/SIGINT (not a crash) ended it, with a shutdown deadline.

    A clean stop commits what was acked and leaves the group; if that hangs (a coordinator lost in the
    middle of the rebalance the stop starts), the process exits anyway after SHUTDOWN_DEADLINE_S: what is
    not committed is folded again by the next owner with the same outputs, exactly as after kill -9.
    """

    stop_requested = False

    def _stopping(self) -> None:
        if not self.stop_requested:
            self.stop_requested = True
            deadline = threading.Timer(SHUTDOWN_DEADLINE_S, _exit_now)
            deadline.daemon = True
            deadline.start()

    def _on_sigint(self) -> None:
        self._stopping()
        super()._on_sigint()

    def _on_sigterm(self) -> None:
        self._stopping()
        super()._on_sigterm()


def _exit_now() -> None:
    log.error("the worker did not stop within %.0f s of the signal; exiting now", SHUTDOWN_DEADLINE_S)
    logging.shutdown()
    os._exit(0)


def run_worker(settings: Settings, idle_ms: int, log_level: str = "INFO", params: RiskParams | None = None,
               restart_delay_s: float = 1.0) -> None:
    """Blocking: run the Faust worker until SIGTERM/SIGINT; uvloop when available.

    A lost broker or any other failure ends the Faust worker (CrashingSupervisor) and this loop starts a
    fresh one (state is recovered from the newest snapshot and the log), so an outage delays the ledger
    but never stops it. A bug in the core on a record (FoldHalted) stops it for good, naming the record:
    input never does.
    """
    check_port_free(settings.worker_web_host, settings.worker_web_port)
    FullCollections.install()  # the app's idle timer runs them (streams/gc_policy.py)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    while True:
        app = create_app(settings, params, idle_ms)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        worker = _Worker(app, loop=loop, loglevel=log_level, quiet=True, redirect_stdouts=False)
        log.info("web views on http://%s:%d/ledger/status/", settings.worker_web_host, settings.worker_web_port)
        code: int | str | None = 0
        try:
            worker.execute_from_commandline()
        except SystemExit as ended:
            code = ended.code
        halted = app.stockledger_runtime.halted
        if halted is not None:
            raise halted
        if worker.stop_requested:
            return
        log.error("the Faust worker ended (exit code %s); restarting in %.1f s", code, restart_delay_s)
        time.sleep(restart_delay_s)


__all__ = ["FoldHalted", "run_worker"]
