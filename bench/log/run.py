"""Merkle log benchmark: what the log costs the fold, and raw log append speed.

Run from the repository root: `python -m bench.log.run [--quick] [--write]`. Measured in one run:

1. the fold of the 2,000-account book (100,000 events, the replay benchmark's small book) with the
   Merkle log on and off, alternating, best of the rounds each (CPU seconds): the log must keep the fold
   within 10 % of its rate without it;
2. appending leaves to the fold's frontier against the raw baseline of hashing the same entries once;
(`por prove --all` at 100,000 accounts is timed in bench/audit, with the other proof-of-reserves figures.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

from bench.common import merge_results
from bench.replay.run import SMALL_BOOK, scenario_archive
from ledger.log_entry import entry_bytes
from ledger.merkle_log import Frontier, leaf_hash
from services.archive import read_archive
from services.replay import replay

GOALS = {"fold_with_log_ratio": 0.9}


def fold_cost(rows: list, rounds: int) -> dict:
    on, off = [], []
    for _ in range(rounds):
        for flag, runs in ((True, on), (False, off)):
            t = time.process_time()
            replay(rows, merkle_log=flag)
            runs.append(time.process_time() - t)
    best_on, best_off = min(on), min(off)
    return {"fold_events_per_s_log_on": round(len(rows) / best_on), "fold_events_per_s_log_off": round(len(rows) / best_off),
            "fold_with_log_ratio": round(best_off / best_on, 4), "fold_log_rounds_cpu_s": {"on": on, "off": off}}


def append_cost(rows: list) -> dict:
    entries = [entry_bytes(t, k, v) for t, k, v in rows]
    t = time.process_time()
    for e in entries:
        hashlib.sha256(e).digest()
    raw = time.process_time() - t
    t = time.process_time()
    f = Frontier()
    for e in entries:
        f.append(leaf_hash(e))
    f.root()
    log = time.process_time() - t
    return {"log_append_entries_per_s": round(len(entries) / log), "log_raw_sha256_entries_per_s": round(len(entries) / raw),
            "log_append_ratio_to_raw_hash": round(raw / log, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes; not recorded unless --write")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    events, accounts = (20_000, 500) if args.quick else SMALL_BOOK
    rows = list(read_archive(scenario_archive(events, accounts, args.seed)))
    m = {"log_bench_sizes": {"events": events, "accounts": accounts, "archive_rows": len(rows), "quick": args.quick}}
    m |= fold_cost(rows, 1 if args.quick else 2)
    m |= append_cost(rows)
    if args.write or not args.quick:
        merge_results("log", m)
    print(json.dumps({k: v for k, v in m.items() if k != "fold_log_rounds_cpu_s"}, indent=2))
    ok = m["fold_with_log_ratio"] >= GOALS["fold_with_log_ratio"]
    print(f"fold with the log: {m['fold_with_log_ratio']} of its rate without it (goal >= 0.9): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
