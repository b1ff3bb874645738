"""The sequencer in a process of its own, started and stopped by the worker that holds ledger.sequenced.

Why a process: in the worker's event loop the sequencer's round trips (fetch, end offsets, send, commit)
each waited for the fold to yield, and every fold step and garbage collection held its merge up too; the
produce -> sequenced stage then took 0.4-1.9 s at p99 under 2,000 events/s (bench/streams, 2026-12-07).
Alone it runs on the other core and keeps the idle rule's timing (streams/sequencer.py) whatever the
fold does. Its correctness does not depend on where it runs: it commits input offsets only after the
sequenced copies are acknowledged, and the fold skips re-sent copies by source offset.

Lifecycle: the worker's SequencerService (streams/app.py) starts it when assigned ledger.sequenced and
stops it on revocation with SIGTERM, waiting for it to exit, which it does only after its producer has
flushed: no batch of the old owner can land after the next owner's first. A kill -9 of the worker kills
it too (PR_SET_PDEATHSIG). It prints `sequenced <n>` lines for the worker's status view.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import traceback

PROGRESS_EVERY_S = 0.5


async def _run(args: argparse.Namespace) -> None:
    from services.kafka_security import LEDGER, aiokafka_auth
    from streams.sequencer import Sequencer, ledger_producer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # A Ctrl-C reaches the worker's whole process group: the worker stops this process itself, with SIGTERM,
    # once it has given up the partition; exiting on the SIGINT would look like a crash to it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    auth = aiokafka_auth(LEDGER)
    producer = ledger_producer(args.bootstrap, auth)
    await producer.start()
    sequencer = Sequencer(args.bootstrap, args.group_id, producer, idle_ms=args.idle_ms, auth=auth,
                          batch_max_records=args.batch_max_records)

    async def report() -> None:
        while True:
            print(f"sequenced {sequencer.sequenced}", flush=True)
            await asyncio.sleep(PROGRESS_EVERY_S)

    reporter = asyncio.ensure_future(report())
    try:
        await sequencer.run(stop)
    finally:
        reporter.cancel()
        # Every batch handed to the producer lands before this process exits (the worker waits for the exit).
        await producer.stop()
        print(f"sequenced {sequencer.sequenced}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m streams.sequencer_process", description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group-id", required=True)
    ap.add_argument("--idle-ms", type=int, required=True)
    ap.add_argument("--batch-max-records", type=int, required=True)
    ap.add_argument("--parent-pid", type=int, required=True)
    args = ap.parse_args(argv)
    from services.parent_tie import die_with_parent

    die_with_parent(args.parent_pid)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        asyncio.run(_run(args))
    except Exception:  # noqa: BLE001 - the traceback goes to the worker's log; the worker then restarts
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        os._exit(2)


if __name__ == "__main__":
    main()
