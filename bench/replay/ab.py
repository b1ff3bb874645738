"""Paired A/B of the fold: two source trees replay the same archive at the same time, one per core, round by round.

Run from the repository root: `python -m bench.replay.ab OLD_TREE NEW_TREE [--rounds N]`, where each tree is a
checkout of the repository (e.g. `git worktree add /tmp/base <rev>`). Each round starts both replays together
(each tree's own `bench.replay.run --child` over the 2,000-account book of bench/replay, generated and cached by
it), so steal time and neighbours on a shared VM hit both alike; it prints each side's CPU seconds, its state hash and the ratio
new/old, then the median ratio. On the 2-vCPU VM of 2026-12-08 the same code's CPU time moved 26-40 s between
sequential runs, while the paired ratio of identical trees stays within a few percent. Equal hashes are the
check that a speed-up changed no figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench.replay.run import SMALL_BOOK, scenario_archive


def one_round(trees: tuple[Path, Path], archive: Path) -> list[dict]:
    """Both trees' replays started together (each tree's own `bench.replay.run --child`); their CPU s and state hashes."""
    procs = [subprocess.Popen([sys.executable, "-m", "bench.replay.run", "--child", str(archive)], cwd=tree,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for tree in trees]
    results = []
    for tree, proc in zip(trees, procs, strict=True):
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"the replay in {tree} failed (exit {proc.returncode})")
        child = json.loads(out.strip().splitlines()[-1])
        results.append({"cpu_s": round(child["cpu_s"], 2), "state_hash": child["state_hash"][:16]})
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path, help="the baseline tree (a checkout of the repository)")
    ap.add_argument("new", type=Path, help="the tree under test")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    archive = scenario_archive(*SMALL_BOOK, args.seed)
    ratios = []
    for i in range(args.rounds):
        old, new = one_round((args.old.resolve(), args.new.resolve()), archive)
        ratios.append(new["cpu_s"] / old["cpu_s"])
        same = "same hash" if old["state_hash"] == new["state_hash"] else "HASHES DIFFER"
        print(f"round {i + 1}: old {old['cpu_s']} CPU s, new {new['cpu_s']} CPU s, new/old {ratios[-1]:.3f} ({same}: "
              f"{old['state_hash']} / {new['state_hash']})", flush=True)
    print(f"median new/old {statistics.median(ratios):.3f} over {args.rounds} rounds ({min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
