"""The demo's closing report: counts, reserves with the PoR verdict and root, breaks, liquidations, pools, next steps."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ledger.state import LedgerState
from ledger.state_hash import state_hash
from services import por, recon
from services.atomic import write_text_atomic
from services.summary import (
    economics_table,
    last_event_time,
    liquidations_table,
    pools_table,
    qty,
    reasons_table,
)
from streams.step import TopicCounts

Counts = TopicCounts  # records in = applied + duplicates + rejected, per source topic, and rejections by reason


def demo_secret_file(out_dir: Path) -> Path:
    """A per-demo salt secret kept next to the outputs (a real operator keeps it in a vault).

    The file's bytes (trailing newline stripped) are the secret, exactly as `por ... --secret-file` reads
    them, so the demo's published root can be re-proven with the same file.
    """
    path = out_dir / "por-secret"
    if not path.exists():
        write_text_atomic(path, hashlib.sha256(f"stockledger-demo:{out_dir.resolve()}".encode()).hexdigest() + "\n")
    return path


def counts_table(counts: Counts) -> Table:
    t = Table(title="Records in = applied + duplicates + rejected")
    for col in ("source topic", "in", "applied", "duplicates", "rejected"):
        t.add_column(col, justify="left" if col == "source topic" else "right")
    topics = sorted(set(counts.applied) | set(counts.duplicates) | set(counts.rejected))
    for topic in topics:
        t.add_row(topic, f"{counts.records_in(topic):,}", f"{counts.applied.get(topic, 0):,}",
                  f"{counts.duplicates.get(topic, 0):,}", f"{counts.rejected.get(topic, 0):,}")
    total = sum(counts.records_in(tp) for tp in topics)
    t.add_row("[bold]total[/]", f"[bold]{total:,}[/]", f"{sum(counts.applied.values()):,}",
              f"{sum(counts.duplicates.values()):,}", f"{sum(counts.rejected.values()):,}")
    return t


def reserves_table(rows: list[por.SymbolReserve], root_hash: str) -> Table:
    t = Table(title=f"Proof of reserves (root {root_hash[:16]}...)")
    for col in ("symbol", "custodian AGGR", "supply x multiplier", "liabilities (tokens)", "ratio", "verdict"):
        t.add_column(col, justify="left" if col in ("symbol", "verdict") else "right")
    for r in rows:
        colour = "green" if r.verdict == por.FULLY_RESERVED else "red"
        t.add_row(r.symbol, qty(r.custodian_aggregate_nano), qty(r.supply_shares_nano), qty(r.liabilities_tokens_nano),
                  por.format_ppm(r.ratio_ppm), f"[{colour}]{r.verdict}[/]")
    return t


def breaks_table(result: recon.ReconResult) -> Table:
    t = Table(title="Reconciliation breaks by class (ledger vs chain vs custodian)")
    t.add_column("class")
    t.add_column("count", justify="right")
    t.add_column("example")
    examples: dict[str, str] = {}
    for b in result.breaks:
        examples.setdefault(b.klass, f"{b.symbol}: {b.explanation}")
    for klass, n in sorted(result.counts().items()):
        t.add_row(klass, str(n), examples[klass][:90])
    if not result.breaks:
        t.add_row("(none)", "0", "ledger, chain and custodian agree for every symbol")
    return t


def print_report(console: Console, state: LedgerState, counts: Counts, out_dir: Path, *, api_url: str | None,
                 db_path: Path, archive: Path, as_of_us: int, checkpoint: Path | None = None,
                 verifier: Path | None = None) -> dict:
    """Print the report; write root.json and one example proof; return the figures the tests compare.

    archive: the entries the state was folded from, in order; as_of_us: the PoR time, by the rule
    `por publish` uses (the latest effective time in the archive), so `por prove --root` reproduces the root.
    """
    at = last_event_time(state)
    shash = state_hash(state)
    secret_file = demo_secret_file(out_dir)
    secret = secret_file.read_bytes().rstrip(b"\r\n")
    snap = por.build_snapshot(state, as_of_us, secret, state_hash_hex=shash, log=(state.log.size, state.log.root().hex()))
    root_path = out_dir / "por-root.json"
    write_text_atomic(root_path, json.dumps(por.root_document(snap), indent=2) + "\n")
    example = next((a for a in sorted(state.accounts) if state.accounts[a].margin_nano), None)
    proof_path = None
    if example is not None:
        proof_path = out_dir / f"proof-{example}.json"
        write_text_atomic(proof_path, json.dumps(snap.proof(example), indent=2) + "\n")
    breaks = recon.reconcile(state, at)
    console.rule("Report")
    console.print(counts_table(counts))
    console.print(reasons_table(counts.rejected_by_reason))
    console.print(reserves_table(snap.reserves, snap.root_hash))
    console.print(breaks_table(breaks))
    console.print(liquidations_table(state))
    console.print(pools_table(state, at))
    console.print(economics_table(state))
    console.print(f"[bold]state hash[/] {shash}")
    console.rule("Where to look next")
    if api_url:
        console.print(f"HTTP API: {api_url}/docs  (balances, history, trial balance, liquidations, Parquet export)")
        console.print(f"  as the auditor: curl -H \"Authorization: Bearer $(cat {out_dir / 'auditor.token'})\" {api_url}/trial-balance")
    console.print(f"DuckDB: {db_path}   PoR root: {root_path}")
    if proof_path is not None:
        binding = f" --checkpoint {checkpoint} --public-key {verifier}" if checkpoint and verifier else ""
        console.print(f"Verify one account offline: stockledger por verify {proof_path} --root {root_path}{binding}")
    console.print(f"Re-prove any account later: stockledger por prove ACCOUNT --archive {archive} --root {root_path} "
                  f"--secret-file {secret_file} --out proof.json  (--all --out DIR for every account)")
    console.print(f"Merkle log: {state.log.size:,} entries, root {state.log.root().hex()}"
                  + (f"; signed head {checkpoint}" if checkpoint else ""))
    return {"state_hash": shash, "root_hash": snap.root_hash, "snapshot_id": snap.snapshot_id,
            "log_tree_size": state.log.size, "log_root_hash": state.log.root().hex(), "counts": counts.as_dict(),
            "reserves": {r.symbol: [r.custodian_aggregate_nano, r.supply_shares_nano, r.liabilities_tokens_nano, r.verdict]
                         for r in snap.reserves},
            "breaks": breaks.counts(), "liquidations": state.counters.liquidations,
            "economics": dict(sorted(state.counters.economics.items()))}
