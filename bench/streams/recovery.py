"""Recovery benchmark: time from worker start to folding again, on a long ledger.sequenced, with and without snapshots.

Run with the broker up (`make kafka-up`): `python -m bench.streams.recovery [--entries N] [--write]`
(default 10,000,000 entries; `--quick`: 1,000,000). Destructive for the local broker's stockledger topics.

The log: the 2,000-account scenario (118,075 entries, the replay benchmark's small book), then copies of
its records with their original source coordinates up to N entries, written straight to ledger.sequenced
as SequencedBatch records of 500. Copies are what a sequencer re-sends after crashes; the fold logs each
in the Merkle log and skips it by source offset, so the measurement is dominated by what recovery must
do per entry (read it, hash it, check it) rather than by the risk engine. (A 10M-event history of real
trades would take the fold ~25 minutes to build first; recovery from a snapshot does not depend on what
the entries were, only on the state's size and the tail after the snapshot.)

Measured in one run: (1) a worker folds the whole log and writes snapshots at the shipped cadence (the default of
STOCKLEDGER_SNAPSHOT_EVERY_RECORDS: every 200,000 entries); it is
stopped (SIGTERM: a clean stop writes one more snapshot, at the end of the log); (2) a new worker starts:
seconds until it logs that it recovered and is folding (snapshot found and loaded + tail), `recovery_s_10m`;
(3) the snapshots written on stop are deleted, as if the first worker had been killed -9 just before its next
snapshot was due, and a worker starts again: the same figure with the longest tail the cadence allows,
`recovery_after_kill_s_10m`; (4) every snapshot is deleted and a worker starts again: the same figure for a
rebuild from offset 0, the baseline, `recovery_no_snapshot_s_10m`; ratios = baseline / with snapshots.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bench.common import machine, merge_results, poller
from bench.replay.run import SMALL_BOOK, scenario_archive
from schemas.codec import encode
from schemas.topics import LEDGER_SEQUENCED
from services.archive import read_archive
from services.kafka_security import LEDGER, aiokafka_auth
from services.ports import free_port
from services.producer import produce_rows
from services.settings import Settings, get_settings
from services.stream_status import committed_fold_offset
from services.topics_admin import reset_for_run
from streams import snapshots

ROOT = Path(__file__).resolve().parents[2]
BATCH = 500
SNAPSHOT_EVERY = Settings.model_fields["snapshot_every_records"].default  # the shipped cadence, whatever the env says
RECOVERED = re.compile(r"active: recovered (from the snapshot at offset \d+|from offset 0)")


def sourced_entries(rows) -> list[dict]:
    """Archive rows as SequencedBatch items with source coordinates (partition 0, offsets per topic), as the
    sequencer would have written them."""
    counters: dict[str, int] = {}
    entries = []
    for n, (topic, key, value) in enumerate(rows):
        offset = counters.get(topic, 0)
        counters[topic] = offset + 1
        entries.append({"topic": topic, "partition": 0, "offset": offset, "timestamp_ms": 1_773_000_000_000 + n,
                        "key": key.encode(), "value": value})
    return entries


async def write_log(bootstrap: str, entries: int) -> int:
    """The scenario's entries, then re-sent copies of them, as SequencedBatch records; returns the record count."""
    base = sourced_entries(read_archive(scenario_archive(*SMALL_BOOK, 7)))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20,
                                max_request_size=8 << 20, **aiokafka_auth(LEDGER))
    await producer.start()
    records = 0
    try:
        futures = []
        for start in range(0, entries, BATCH):
            batch = [base[(start + i) % len(base)] for i in range(min(BATCH, entries - start))]
            futures.append(await producer.send(LEDGER_SEQUENCED, value=encode("SequencedBatch", {"records": batch}),
                                               key=b"batch"))
            records += 1
            if len(futures) >= 200:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return records


def start_worker(app_id: str, log: Path, snapshot_every: int) -> subprocess.Popen:
    env = os.environ | {"STOCKLEDGER_APP_ID": app_id, "STOCKLEDGER_WORKER_WEB_PORT": str(free_port()), "STOCKLEDGER_SNAPSHOT_EVERY_RECORDS": str(snapshot_every),
                        "STOCKLEDGER_SNAPSHOT_EVERY_MS": "0", "STOCKLEDGER_SNAPSHOT_IDLE_EVERY_MS": "0",
                        "STOCKLEDGER_LOG_KEY_FILE": str(log.parent / "bench.key")}
    return subprocess.Popen([sys.executable, "-m", "services.cli", "worker"], cwd=ROOT, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115 - the child writes it


def first_input_row():
    return next(iter(read_archive(scenario_archive(*SMALL_BOOK, 7))))


def wait_for(predicate, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}")


def recovery_time(app_id: str, log: Path, snapshot_every: int) -> tuple[float, str]:
    proc = start_worker(app_id, log, snapshot_every)
    # The Faust worker recovers when its fold agent gets the first run after the assignment, so one new input
    # record follows the start (a re-sent price mark: sequenced, then a no-op duplicate in the fold).
    produce_rows(get_settings().bootstrap_servers, [first_input_row()])
    try:
        took = wait_for(lambda: RECOVERED.search(log.read_text()) is not None, 3_600, "the worker to recover")
        return took, RECOVERED.search(log.read_text()).group(1)
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=10_000_000)
    ap.add_argument("--quick", action="store_true", help="1,000,000 entries; not recorded unless --write")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    entries = 1_000_000 if args.quick else args.entries
    bootstrap = get_settings().bootstrap_servers
    work = ROOT / "var" / "bench" / "recovery"
    work.mkdir(parents=True, exist_ok=True)
    reset_for_run(bootstrap)
    t = time.perf_counter()
    records = asyncio.run(write_log(bootstrap, entries))
    print(f"wrote {entries:,} entries in {records:,} SequencedBatch records in {time.perf_counter() - t:.0f} s", flush=True)
    app_id = f"bench-recovery-{uuid.uuid4().hex[:6]}"
    build = start_worker(app_id, work / "build.log", SNAPSHOT_EVERY)
    t = time.perf_counter()
    try:
        with poller(bootstrap) as admin:
            wait_for(lambda: committed_fold_offset(bootstrap, app_id, admin) >= records, 7_200, "the first fold of the whole log")
    finally:
        build.terminate()
        build.wait(120)
    fold_s = time.perf_counter() - t
    print(f"first fold of the whole log: {fold_s:.0f} s ({entries / fold_s:,.0f} entries/s)", flush=True)
    with_snap, how = recovery_time(app_id, work / "recover.log", SNAPSHOT_EVERY)
    print(f"recovery with snapshots, after a clean stop: {with_snap:.2f} s ({how})", flush=True)

    def drop(which) -> None:
        """Tombstones for the group's snapshots that `which(offset)` selects."""
        stored = asyncio.run(snapshots.read_stored(bootstrap, f"{app_id}.fold", aiokafka_auth(LEDGER)))

        async def run() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **aiokafka_auth(LEDGER))
            await producer.start()
            try:
                for offset, manifest in stored.manifests.items():
                    if which(offset):
                        await snapshots.delete(producer, manifest)
                await producer.flush()
            finally:
                await producer.stop()

        asyncio.run(run())

    # A kill -9 just before the next snapshot was due: the snapshots written on stop (at the end of the log and
    # after) go, the cadence's newest stays, and the tail since it (up to SNAPSHOT_EVERY entries) is folded.
    drop(lambda offset: offset >= records)
    after_kill, how_kill = recovery_time(app_id, work / "recover-after-kill.log", SNAPSHOT_EVERY)
    print(f"recovery with snapshots, after a kill -9 (tail since the cadence's newest): {after_kill:.2f} s ({how_kill})",
          flush=True)
    drop(lambda offset: True)
    without, how0 = recovery_time(app_id, work / "recover-from-0.log", 0)
    print(f"recovery without snapshots: {without:.2f} s ({how0})", flush=True)
    metrics = {
        "recovery_s_10m": round(with_snap, 2), "recovery_after_kill_s_10m": round(after_kill, 2),
        "recovery_no_snapshot_s_10m": round(without, 2),
        "recovery_ratio_no_snapshot_to_snapshot": round(without / with_snap, 1),
        "recovery_ratio_no_snapshot_to_after_kill": round(without / after_kill, 1),
        "recovery_bench": {"entries": entries, "sequenced_records": records, "snapshot_every_entries": SNAPSHOT_EVERY,
                           "first_fold_s": round(fold_s), "machine": machine(),
                           "recovered": {"clean_stop": how, "after_kill": how_kill}},
    }
    if args.write or not args.quick:
        merge_results("streams", metrics)
    print(metrics)
    for name, took in (("after a clean stop", with_snap), ("after a kill -9", after_kill)):
        print(f"recovery with snapshots {name}: {took:.2f} s (goal < 10 s: {'met' if took < 10 else 'MISSED'})")


if __name__ == "__main__":
    main()
