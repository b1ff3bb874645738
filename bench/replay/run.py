"""Offline replay benchmark: fold throughput against a raw Avro decode of the same archive, and the fold's peak RSS.

Run from the repository root: `python -m bench.replay.run [--events N] [--accounts N] [--seed S]`
(defaults: 1,000,000 events, 100,000 accounts), or `--quick` for a smoke run (50,000 / 5,000, results
printed, not recorded unless `--write`). The scenario archive is generated once per size, seed and
generator version and cached under var/bench/.

Measured in one run, on the same archive:
  1. baseline: services.archive.read_archive (fastavro) plus schemas.codec.decode of every value, no fold;
  2. replay: services.replay.replay over services.archive.read_archive, decode included, in a child
     process, which also gives (3) the fold's peak RSS, unpolluted by the baseline: the child's own
     VmHWM (Linux), read when the fold ends and before the state hash (whose canonical form is a second
     copy of the state; that peak is recorded too). getrusage(RUSAGE_CHILDREN) is recorded as well, but
     it covers the hash and Linux carries the parent's RSS at spawn over exec into it: an upper bound only.
Rates are archive rows per CPU second of the measuring process (both are single-threaded, so this is
one core's throughput and is not skewed by other load on the machine); wall-clock rates are recorded too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.common import RESULTS, machine, merge_results
from schemas.codec import DecodeError, decode
from services.archive import read_archive, write_archive
from services.scenario import ScenarioConfig, generate

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "var" / "bench"
GOALS = {"events_per_s": 30_000, "ratio_2k": 0.35, "peak_rss_mib": 1024}  # floors of the risk engine issue
SMALL_BOOK = (100_000, 2_000)  # events, accounts of the second, small-book measurement
PROGRESS_EVERY = 100_000


def generator_version() -> str:
    """Short digest of everything that shapes the archive bytes, so a changed generator is not served stale."""
    h = hashlib.sha256()
    for path in [ROOT / "services" / "scenario.py", ROOT / "schemas" / "codec.py", *sorted((ROOT / "schemas" / "avsc").rglob("*.avsc"))]:
        h.update(path.read_bytes())
    return h.hexdigest()[:10]


def scenario_archive(events: int, accounts: int, seed: int) -> Path:
    """The cached archive for this size and seed, generated (atomically) if missing."""
    path = CACHE / f"replay-{accounts}-{events}-{seed}-{generator_version()}.avro"
    if not path.exists():
        started = time.perf_counter()
        print(f"generating {path.name} ...", file=sys.stderr, flush=True)
        tmp = path.with_suffix(".avro.tmp")
        rows = write_archive(tmp, generate(ScenarioConfig(accounts=accounts, events=events, seed=seed)), f"{accounts}:{events}:{seed}")
        tmp.replace(path)
        print(f"generated {rows:,} rows in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return path


def decode_baseline(path: Path) -> dict[str, float]:
    """Raw cost of the input: read every archived row and decode its Avro body, fold nothing."""
    rows = errors = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for _topic, _key, value in read_archive(path):
        rows += 1
        try:
            decode(value)
        except DecodeError:  # the scenario's bad input: decoding it is still work the fold also does
            errors += 1
    return {"rows": rows, "decode_errors": errors, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}


def own_peak_rss_kib() -> int | None:
    """High-water RSS of this process's own address space (VmHWM), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def replay_child(path: Path) -> None:
    """In the child: fold the archive, print one JSON line of timings (the state hash is taken after the clock stops)."""
    from services.replay import replay

    wall, cpu = time.perf_counter(), time.process_time()

    def progress(n: int) -> None:
        spent = time.process_time() - cpu
        print(f"  replay: {n:,} rows, {spent:.0f} CPU s, {n / max(spent, 1e-9):,.0f} rows/CPU s", file=sys.stderr, flush=True)

    result = replay(read_archive(path), progress=progress, progress_every=PROGRESS_EVERY)
    cpu_s, wall_s = time.process_time() - cpu, time.perf_counter() - wall
    # Peak RSS of the fold itself: read before the state hash, whose canonical form is a second copy of the state.
    vm_hwm_kib, self_maxrss_kib = own_peak_rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "rows": result.total_in, "cpu_s": cpu_s, "wall_s": wall_s, "state_hash": result.hash(),
        "liquidations": result.state.counters.liquidations, "vm_hwm_kib": vm_hwm_kib, "self_maxrss_kib": self_maxrss_kib,
        "vm_hwm_with_hash_kib": own_peak_rss_kib(),
    }), flush=True)


def measure_replay(path: Path) -> dict:
    """Run the fold in a child process; peak RSS is the child's VmHWM (else RUSAGE_CHILDREN, KiB on Linux)."""
    proc = subprocess.run([sys.executable, "-m", "bench.replay.run", "--child", str(path)], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["rusage_children_maxrss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out["peak_rss_kib"] = out["vm_hwm_kib"] or out["rusage_children_maxrss_kib"]
    return out


def run(events: int, accounts: int, seed: int, write: bool) -> dict:
    path = scenario_archive(events, accounts, seed)
    load_before = os.getloadavg()[0]
    base = decode_baseline(path)
    print(f"baseline: {base['rows']:,} rows decoded in {base['cpu_s']:.1f} CPU s", file=sys.stderr, flush=True)
    rep = measure_replay(path)
    load_after = os.getloadavg()[0]
    if rep["rows"] != base["rows"]:
        raise SystemExit(f"replay saw {rep['rows']} rows, the baseline {base['rows']}")
    rows = base["rows"]
    metrics = {
        "replay_events_per_s": round(rows / rep["cpu_s"]),
        "replay_decode_baseline_events_per_s": round(rows / base["cpu_s"]),
        "replay_ratio_to_decode": round(base["cpu_s"] / rep["cpu_s"], 4),
        "replay_peak_rss_mib": round(rep["peak_rss_kib"] / 1024),
        "replay_wall_events_per_s": round(rows / rep["wall_s"]),
        "replay_decode_baseline_wall_events_per_s": round(rows / base["wall_s"]),
        "replay_bench_sizes": {"events": events, "accounts": accounts, "seed": seed, "archive_rows": rows,
                               "decode_errors": base["decode_errors"], "liquidations": rep["liquidations"],
                               "replay_cpu_s": round(rep["cpu_s"], 1), "replay_wall_s": round(rep["wall_s"], 1),
                               "rusage_children_maxrss_mib": round(rep["rusage_children_maxrss_kib"] / 1024),
                               "peak_rss_with_state_hash_mib": round((rep["vm_hwm_with_hash_kib"] or 0) / 1024),
                               "load_average": [round(load_before, 2), round(load_after, 2)]},
        "replay_state_hash": rep["state_hash"],
    }
    small = measure_small_book(seed)
    metrics.update(small)
    if write:
        merge_results("replay", metrics)
    return metrics


def measure_small_book(seed: int) -> dict:
    """The same measurement on a 2,000-account book (100,000 events): the fold's ratio to decode there."""
    events, accounts = SMALL_BOOK
    path = scenario_archive(events, accounts, seed)
    base = decode_baseline(path)
    rep = measure_replay(path)
    return {"replay_events_per_s_2k": round(base["rows"] / rep["cpu_s"]),
            "replay_decode_baseline_events_per_s_2k": round(base["rows"] / base["cpu_s"]),
            "replay_ratio_to_decode_2k": round(base["cpu_s"] / rep["cpu_s"], 4),
            "replay_state_hash_2k": rep["state_hash"]}


def profile(top: int, seed: int) -> None:
    """Where the fold's time goes (profile before optimising): cProfile of the small book, by own time."""
    import cProfile
    import pstats

    from services.replay import replay

    path = scenario_archive(*SMALL_BOOK, seed)
    rows = list(read_archive(path))
    profiler = cProfile.Profile()
    profiler.runcall(replay, rows)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def report(m: dict) -> str:
    sizes = m["replay_bench_sizes"]
    met = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    lines = [
        f"Offline replay: {sizes['events']:,} events, {sizes['accounts']:,} accounts, seed {sizes['seed']} ({sizes['archive_rows']:,} archive rows)",
        f"  replay              {m['replay_events_per_s']:>12,} events/s (CPU; wall {m['replay_wall_events_per_s']:,})"
        f"  goal >= {GOALS['events_per_s']:,}: {met(m['replay_events_per_s'] >= GOALS['events_per_s'])}",
        f"  decode baseline     {m['replay_decode_baseline_events_per_s']:>12,} events/s (CPU; wall {m['replay_decode_baseline_wall_events_per_s']:,})",
        f"  ratio               {m['replay_ratio_to_decode']:>12}",
        f"  2,000 accounts      {m['replay_events_per_s_2k']:>12,} events/s (CPU), decode {m['replay_decode_baseline_events_per_s_2k']:,},"
        f" ratio {m['replay_ratio_to_decode_2k']}  goal >= {GOALS['ratio_2k']}: {met(m['replay_ratio_to_decode_2k'] >= GOALS['ratio_2k'])}",
        f"  peak RSS            {m['replay_peak_rss_mib']:>12,} MiB  goal < {GOALS['peak_rss_mib']}: {met(m['replay_peak_rss_mib'] < GOALS['peak_rss_mib'])}",
        f"  state hash          {m['replay_state_hash']}",
        f"  machine             {machine()}",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, help="market events after set-up (default 1,000,000; --quick 50,000)")
    ap.add_argument("--accounts", type=int, help="accounts (default 100,000; --quick 5,000)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="smoke run: 50,000 events, 5,000 accounts; not recorded unless --write")
    ap.add_argument("--write", action="store_true", help=f"record the figures in {RESULTS.relative_to(ROOT)} (default unless --quick)")
    ap.add_argument("--profile", type=int, metavar="N", help="instead: cProfile the fold of the 2,000-account book, print the top N")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        replay_child(args.child)
        return
    if args.profile:
        profile(args.profile, args.seed)
        return
    default_events, default_accounts = (50_000, 5_000) if args.quick else (1_000_000, 100_000)
    args.events = args.events or default_events
    args.accounts = args.accounts or default_accounts
    metrics = run(args.events, args.accounts, args.seed, write=args.write or not args.quick)
    print(report(metrics))


if __name__ == "__main__":
    main()
