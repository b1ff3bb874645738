"""Stream benchmarks on the real broker: fold throughput vs raw aiokafka consume+decode, e2e latency, two workers, RSS.

Run with the broker up (`make kafka-up`): `python -m bench.streams.run [--events N] [--accounts N]`.
Destructive for the local broker's stockledger topics: they are reset before each measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka import Consumer
from kafka import KafkaConsumer

from bench.common import broker_pid, cpu_s, machine, merge_results, poller
from bench.streams.recovery import sourced_entries
from schemas.codec import decode, encode
from schemas.topics import INPUT_TOPICS, LEDGER_POSTINGS, LEDGER_SEQUENCED
from services.archive import read_archive, write_archive
from services.kafka_security import ADMIN, LEDGER, aiokafka_auth, kafka_python_auth, librdkafka_auth
from services.ports import free_port
from services.producer import make_producer, produce_rows
from services.replay import replay
from services.scenario import ScenarioConfig, generate
from services.settings import get_settings
from services.stream_status import committed_fold_offset, committed_offsets
from services.topics_admin import reset_for_run

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "var" / "bench"
SEQUENCED_BATCH = 500  # entries per SequencedBatch, the sequencer's default


def archive(accounts: int, events: int, seed: int = 7) -> Path:
    path = CACHE / f"streams-{accounts}-{events}-{seed}.avro"
    if not path.exists():
        write_archive(path, generate(ScenarioConfig(accounts=accounts, events=events, seed=seed)), f"{accounts}:{events}:{seed}")
    return path


async def raw_consume_decode(bootstrap: str, expected: int) -> float:
    """Baseline: aiokafka reads every input record and decodes its Avro body; events/s."""
    consumer = AIOKafkaConsumer(*INPUT_TOPICS, bootstrap_servers=bootstrap, group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False, **aiokafka_auth(ADMIN))
    await consumer.start()
    n = 0
    start = time.perf_counter()
    try:
        while n < expected:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                for rec in records:
                    with contextlib.suppress(Exception):  # bad input counts as consumed
                        decode(rec.value)
                    n += 1
    finally:
        await consumer.stop()
    return n / (time.perf_counter() - start)


def start_worker(bootstrap: str, app_id: str, log: Path | None = None) -> subprocess.Popen:
    host, port = bootstrap.split(":")
    env = os.environ | {"STOCKLEDGER_KAFKA_HOST": host, "STOCKLEDGER_KAFKA_PORT": port, "STOCKLEDGER_APP_ID": app_id,
                        "STOCKLEDGER_WORKER_WEB_PORT": str(free_port())}
    out = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - the child writes it
    return subprocess.Popen([sys.executable, "-m", "services.cli", "worker", "--log-level", "INFO" if log else "WARNING"],
                            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def sequenced_end(bootstrap: str) -> int:
    c = KafkaConsumer(bootstrap_servers=bootstrap, **kafka_python_auth(ADMIN))
    try:
        tp = TopicPartition(LEDGER_SEQUENCED, 0)
        return c.end_offsets([tp])[tp]
    finally:
        c.close()


def wait_folded(bootstrap: str, app_id: str, expected_inputs: int, procs, timeout_s: float = 3_600) -> tuple[float, int]:
    """Seconds until every input is sequenced and folded; peak RSS (MiB) of the workers meanwhile.

    A worker's RSS counts its sequencer process (streams/sequencer_process.py), not its forked hash and
    snapshot children (copy-on-write images of the worker's own pages).
    """
    start = time.perf_counter()
    peak = 0
    with poller(bootstrap) as admin:
        while time.perf_counter() - start < timeout_s:
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    worker = psutil.Process(p.pid)
                    rss = worker.memory_info().rss
                    for child in worker.children():
                        with contextlib.suppress(psutil.Error):
                            if "streams.sequencer_process" in " ".join(child.cmdline()):
                                rss += child.memory_info().rss
                    peak = max(peak, rss)
            seq = committed_offsets(bootstrap, f"{app_id}.sequencer", admin)
            if sum(o for tp, o in seq.items() if tp.topic in INPUT_TOPICS) >= expected_inputs:
                end = sequenced_end(bootstrap)
                if committed_fold_offset(bootstrap, app_id, admin) >= end > 0:
                    return time.perf_counter() - start, peak // (1024 * 1024)
            time.sleep(0.2)
    raise TimeoutError("fold did not finish")




def fold_run(bootstrap: str, path: Path, workers: int) -> tuple[float, int, int]:
    reset_for_run(bootstrap)
    n = sum(produce_rows(bootstrap, read_archive(path)).values())
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    procs = [start_worker(bootstrap, app_id) for _ in range(workers)]
    try:
        seconds, peak = wait_folded(bootstrap, app_id, n, procs)
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
    return n, seconds, peak


WARMUP_ROWS = 500  # produced and folded before the clock starts: the worker's lazy recovery is not latency


def _event_id(value: bytes) -> str | None:
    try:
        return decode(value)[1].get("event_id")
    except Exception:  # noqa: BLE001 - bad input is part of the scenario; it has no id to time
        return None


def e2e_latency(bootstrap: str, path: Path, rate_per_s: int, seconds: float) -> dict[str, float]:
    """Produce at a fixed rate while a worker folds; latency = posting visible - record sent, per cause event.

    The worker first folds WARMUP_ROWS rows (its first record triggers its recovery: reading the snapshots
    topic, ~1 s), then the clocked run starts. Also split per stage: produce -> the sequencer's write of the
    record (the SequencedBatch record's timestamp), and that write -> the posting seen.

    The harness shares the two cores with the worker and the broker, so it stays light: librdkafka clients
    (C) for producing and watching, event ids decoded before the clock starts, the sequenced records matched
    by source coordinates (from the delivery reports) instead of decoding every entry. The kafka-python
    version of this harness took 80-87 % of a core by itself (top, 2026-12-07), and the worker got 75 %.
    """
    reset_for_run(bootstrap)
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    log = CACHE / f"latency-{app_id}.log"
    proc = start_worker(bootstrap, app_id, log)
    total = int(rate_per_s * seconds)
    rows = [(topic, key.encode(), value, _event_id(value))
            for topic, key, value in itertools.islice(read_archive(path), WARMUP_ROWS + total)]
    sent_at: dict[str, float] = {}  # event id -> wall time sent
    at_coords: dict[tuple[str, int, int], str] = {}  # (topic, partition, offset) -> event id, from delivery reports
    seen: dict[str, float] = {}  # cause event id -> wall time its posting was fetched
    sequenced_ms: dict[tuple[str, int, int], int] = {}  # source coordinates -> the SequencedBatch's timestamp
    stop = threading.Event()

    def watch(topic: str) -> None:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-{uuid.uuid4().hex[:6]}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False, "fetch.wait.max.ms": 10,
                      **librdkafka_auth(ADMIN)})
        c.subscribe([topic])
        while not stop.is_set():
            messages = c.consume(num_messages=1_000, timeout=0.02)
            now = time.time()
            for msg in messages:
                if msg.error() is not None:
                    continue
                if topic == LEDGER_POSTINGS:
                    seen.setdefault(decode(msg.value())[1]["cause_event_id"], now)
                    continue
                stamped = msg.timestamp()[1]
                for entry in decode(msg.value())[1]["records"]:
                    sequenced_ms.setdefault((entry["topic"], entry["partition"], entry["offset"]), stamped)
        c.close()

    watchers = [threading.Thread(target=watch, args=(t,), daemon=True) for t in (LEDGER_POSTINGS, LEDGER_SEQUENCED)]
    for w in watchers:
        w.start()
    producer = make_producer(bootstrap, ADMIN)
    measured: set[str] = set()

    def delivered(err, msg, event_id: str | None = None) -> None:
        if err is None and event_id is not None:
            at_coords[(msg.topic(), msg.partition(), msg.offset())] = event_id

    try:
        warmup_ids = {event_id for *_, event_id in rows[:WARMUP_ROWS]}
        for topic, key, value, _ in rows[:WARMUP_ROWS]:
            producer.produce(topic, key=key, value=value, timestamp=int(time.time() * 1000))
        producer.flush(30)
        deadline = time.monotonic() + 120
        while not seen:  # the worker has started, recovered and folded
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the worker folded nothing; see {log}")
            time.sleep(0.05)
        time.sleep(1.0)
        start = time.perf_counter()
        for i, (topic, key, value, event_id) in enumerate(rows[WARMUP_ROWS:]):
            due = start + i / rate_per_s
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            # Live producers stamp records with their wall clock (CreateTime); the sequencer's watermark uses it.
            now = time.time()
            # A redelivery of an id seen before (the scenario has them) would time the first copy's posting.
            timed = event_id is not None and event_id not in sent_at and event_id not in warmup_ids
            producer.produce(topic, key=key, value=value, timestamp=int(now * 1000),
                             on_delivery=functools.partial(delivered, event_id=event_id if timed else None))
            producer.poll(0)
            if timed:
                sent_at[event_id] = now
                measured.add(event_id)
        producer.flush(30)
        wait_folded(bootstrap, app_id, len(rows), [proc], timeout_s=600)  # not a fixed wait
        time.sleep(1.0)  # the watchers see the last postings
    finally:
        stop.set()
        for w in watchers:
            w.join()
        proc.terminate()
        proc.wait(30)
    lat = sorted((seen[e] - sent_at[e]) * 1000 for e in measured if e in seen)
    seq_at = {at_coords[c]: ms for c, ms in sequenced_ms.items() if c in at_coords}
    to_seq = sorted(seq_at[e] - sent_at[e] * 1000 for e in measured if e in seq_at)
    from_seq = sorted(seen[e] * 1000 - seq_at[e] for e in measured if e in seen and e in seq_at)
    if not lat:
        raise RuntimeError("no postings observed")

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(len(xs) * q))]

    return {"p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "samples": len(lat),
            "sequencer_p50_ms": pct(to_seq, 0.5), "sequencer_p99_ms": pct(to_seq, 0.99),
            "fold_p50_ms": pct(from_seq, 0.5), "fold_p99_ms": pct(from_seq, 0.99)}


def latency_line(lat: dict[str, float]) -> str:
    return (f"e2e latency at 2,000 events/s: p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms "
            f"(goal < 500: {'met' if lat['p99_ms'] < 500 else 'MISSED'}) over {lat['samples']:,} events; "
            f"produce -> sequenced p50/p99 {lat['sequencer_p50_ms']:.0f}/{lat['sequencer_p99_ms']:.0f} ms, "
            f"sequenced -> posting seen {lat['fold_p50_ms']:.0f}/{lat['fold_p99_ms']:.0f} ms")


def latency_keys(lat: dict[str, float]) -> dict[str, float]:
    return {"stream_e2e_p50_ms": round(lat["p50_ms"], 1), "stream_e2e_p99_ms": round(lat["p99_ms"], 1),
            "stream_e2e_samples": lat["samples"],
            "stream_e2e_sequencer_p99_ms": round(lat["sequencer_p99_ms"], 1),
            "stream_e2e_fold_p99_ms": round(lat["fold_p99_ms"], 1)}


async def write_sequenced(bootstrap: str, path: Path) -> tuple[int, int]:
    """The archive's entries straight into ledger.sequenced as SequencedBatch records of 500 (what the
    sequencer writes), with source coordinates; returns (entries, records)."""
    entries = sourced_entries(read_archive(path))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20,
                                max_request_size=8 << 20, **aiokafka_auth(LEDGER))
    await producer.start()
    try:
        futures = [await producer.send(LEDGER_SEQUENCED, key=b"batch",
                                       value=encode("SequencedBatch", {"records": entries[i:i + SEQUENCED_BATCH]}))
                   for i in range(0, len(entries), SEQUENCED_BATCH)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(entries), len(futures)


FAUST_ROUNDS = 3  # replay and Faust fold alternated: one pair's ratio moved 0.78-0.95 between runs on this VM


def faust_fold(bootstrap: str, path: Path, rounds: int = FAUST_ROUNDS) -> dict[str, object]:
    """The fold on Faust against the core-only replay of the same entries, `rounds` times alternated.

    Each round: the replay folds the archive in-process with the same step, building the same output records
    (with_outputs), no Kafka at all; then a Faust worker folds a ledger.sequenced written beforehand (so the
    sequencer has nothing to do), timed from its log line saying it recovered (offset 0, the fold starts) until the
    group's committed offset reaches the end. The headline is the median of the rounds' ratios; the worker's and
    the broker's CPU seconds over the timed window are recorded with them (what the fold costs beyond the step).
    """
    reset_for_run(bootstrap)
    entries, records = asyncio.run(write_sequenced(bootstrap, path))
    runs = []
    for _ in range(rounds):
        started, cpu0 = time.perf_counter(), time.process_time()
        replay(read_archive(path), with_outputs=True)
        replay_s, replay_cpu = time.perf_counter() - started, time.process_time() - cpu0
        app_id = f"bench-{uuid.uuid4().hex[:6]}"
        log = CACHE / f"faust-fold-{app_id}.log"
        proc = start_worker(bootstrap, app_id, log)
        try:
            deadline = time.monotonic() + 600
            while "active: recovered" not in log.read_text(errors="replace"):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the worker did not start folding; see {log}")
                time.sleep(0.02)
            broker = broker_pid()
            with poller(bootstrap) as admin:
                t0, worker0, broker0 = time.perf_counter(), cpu_s(proc.pid), cpu_s(broker)
                while committed_fold_offset(bootstrap, app_id, admin) < records:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the worker did not finish folding; see {log}")
                    time.sleep(0.05)
                fold_s = time.perf_counter() - t0
                worker_cpu, broker_cpu = cpu_s(proc.pid) - worker0, cpu_s(broker) - broker0
        finally:
            proc.terminate()
            proc.wait(30)
        runs.append({"faust_entries_per_s": round(entries / fold_s), "replay_entries_per_s": round(entries / replay_s),
                     "ratio": round(replay_s / fold_s, 4), "worker_cpu_s": round(worker_cpu, 1),
                     "replay_cpu_s": round(replay_cpu, 1), "broker_cpu_s": round(broker_cpu, 1),
                     "fold_wall_s": round(fold_s, 1)})
        print(f"  round {len(runs)}: {runs[-1]}", flush=True)
    median = sorted(runs, key=lambda r: r["ratio"])[len(runs) // 2]
    return {"entries": entries, "median": median, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--accounts", type=int, default=5_000)
    ap.add_argument("--rss-accounts", type=int, default=100_000)
    ap.add_argument("--rss-events", type=int, default=50_000)
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--only", choices=("faust", "fold", "latency", "rss"), help="run one measurement and merge only its keys")
    args = ap.parse_args()
    if args.quick:
        args.events, args.accounts, args.rss_accounts, args.rss_events, args.latency_seconds = 10_000, 500, 2_000, 5_000, 5.0
    bootstrap = get_settings().bootstrap_servers
    path = archive(args.accounts, args.events)
    if args.only in ("faust", None):
        faust = faust_fold(bootstrap, path)
        m, entries = faust["median"], faust["entries"]
        print(f"fold on Faust (median of {len(faust['runs'])} alternated rounds): {m['faust_entries_per_s']:,} entries/s; "
              f"core-only replay {m['replay_entries_per_s']:,} entries/s; ratio {m['ratio']:.3f} "
              f"(goal >= 0.9: {'met' if m['ratio'] >= 0.9 else 'MISSED'}) over {entries:,} entries; "
              f"ratios {[r['ratio'] for r in faust['runs']]}")
        merge_results("streams", {"faust_fold_events_per_s": m["faust_entries_per_s"],
                                  "replay_events_per_s_same_run": m["replay_entries_per_s"],
                                  "faust_fold_ratio_to_replay": m["ratio"], "faust_fold_entries": entries,
                                  "faust_fold_rounds": faust["runs"], "machine": machine()})
        if args.only == "faust":
            return
    if args.only == "latency":
        lat = e2e_latency(bootstrap, path, 2_000, args.latency_seconds)
        print(latency_line(lat))
        merge_results("streams_latency", latency_keys(lat))
        return

    n, one_s, _ = fold_run(bootstrap, path, workers=1)
    baseline = asyncio.run(raw_consume_decode(bootstrap, n))
    fold_eps = n / one_s
    print(f"fold, one worker: {n:,} events in {one_s:.1f} s = {fold_eps:,.0f} events/s; raw consume+decode {baseline:,.0f} events/s")
    n2, two_s, _ = fold_run(bootstrap, path, workers=2)
    print(f"fold, two workers: {n2:,} events in {two_s:.1f} s (speed-up {one_s / two_s:.2f})")
    lat = e2e_latency(bootstrap, path, 2_000, args.latency_seconds)
    print(latency_line(lat))
    rss_path = archive(args.rss_accounts, args.rss_events)
    n3, rss_s, peak = fold_run(bootstrap, rss_path, workers=1)
    print(f"worker peak RSS with {args.rss_accounts:,} accounts ({n3:,} events): {peak} MiB")
    merge_results("streams", {
        "stream_fold_events_per_s": round(fold_eps),
        "stream_raw_consume_decode_events_per_s": round(baseline),
        "stream_ratio_to_raw_consume": round(fold_eps / baseline, 4),
        **latency_keys(lat),
        "stream_two_worker_speedup": round(one_s / two_s, 3),
        "stream_worker_peak_rss_mib": peak,
        "stream_bench_sizes": {"events": n, "accounts": args.accounts, "rss_accounts": args.rss_accounts, "rss_events": n3},
    })


if __name__ == "__main__":
    main()
