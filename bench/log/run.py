"""Merkle log benchmark: what the log costs the fold, raw log append speed, and `por prove --all` at 100,000 accounts.

Run from the repository root: `python -m bench.log.run [--quick] [--write]`. Measured in one run:

1. the fold of the 2,000-account book (100,000 events, the replay benchmark's small book) with the
   Merkle log on and off, alternating, best of the rounds each (CPU seconds): the log must keep the fold
   within 10 % of its rate without it;
2. appending leaves to the fold's frontier against the raw baseline of hashing the same entries once;
3. `por prove --all` for 100,000 accounts (the snapshot, every proof, one file each, written as the CLI
   writes them) against the raw baseline of writing the same number of files of the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

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


def prove_all_cost(accounts: int, seed: int) -> dict:
    from bench.audit.run import START_US, YEAR_US, por_state
    from services import por
    from services.cli_por import write_all_proofs

    state = por_state(accounts, seed)
    out = Path(tempfile.mkdtemp(prefix="stockledger-proofs-"))
    try:
        t = time.perf_counter()
        snap = por.build_snapshot(state, START_US + YEAR_US, b"bench-secret-0123456789abcdef", state_hash_hex="0" * 64)
        written = write_all_proofs(snap, out / "proofs")
        total = time.perf_counter() - t
        sizes = [p.stat().st_size for p in list((out / "proofs").iterdir())[:1000]]
        blob = b"x" * (sum(sizes) // len(sizes))
        raw_dir = out / "raw"
        raw_dir.mkdir()
        t = time.perf_counter()
        for i in range(written):
            (raw_dir / f"proof-{i}.json").write_bytes(blob)
        raw = time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"por_prove_all_100k_s": round(total, 2), "por_prove_all_accounts": written,
            "por_prove_all_raw_write_s": round(raw, 2), "por_prove_all_ratio_to_raw_write": round(raw / total, 3)}


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
    m |= prove_all_cost(5_000 if args.quick else 100_000, args.seed)
    if args.write or not args.quick:
        merge_results("log", m)
    print(json.dumps({k: v for k, v in m.items() if k != "fold_log_rounds_cpu_s"}, indent=2))
    ok = m["fold_with_log_ratio"] >= GOALS["fold_with_log_ratio"]
    print(f"fold with the log: {m['fold_with_log_ratio']} of its rate without it (goal >= 0.9): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
