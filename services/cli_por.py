"""`stockledger por ...`: proof of reserves over a folded archive (report, publish, prove, verify).

The archive is loaded here, in the CLI layer only: ``services/por.py`` works on any LedgerState.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ledger.merkle_sum import ProofError, UnknownAccountError
from ledger.state import LedgerState
from services import por
from services.atomic import write_text_atomic

por_app = typer.Typer(
    help="Proof of reserves: custodian vs ledger vs supply x multiplier, Merkle-sum liabilities, proofs.",
    no_args_is_help=True,
)
# Wide output when not a terminal (files, pipes, CI logs): figures are never cut; a terminal sets its width.
console = Console(width=None if sys.stdout.isatty() else 160)

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")

ArchiveOpt = Annotated[Path, typer.Option("--archive", help="event archive (Avro OCF) to fold with the offline replay")]
AsOfOpt = Annotated[
    str | None,
    typer.Option("--as-of", help="ISO-8601 (UTC if no offset) or integer microseconds; default: the last event's time"),
]
SecretOpt = Annotated[
    Path | None,
    typer.Option("--secret-file", help=f"file holding the salt secret (default: ${por.SECRET_ENV})"),
]


def fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


# --------------------------------------------------------------------------- loading (shared with recon)


@dataclass
class LoadedState:
    """A folded archive: the state, the as-of time used and what the fold saw."""

    state: LedgerState
    as_of_us: int
    last_event_us: int | None
    records: int
    skipped_after_as_of: int
    in_transit_since: dict[tuple[str, str], int] = field(default_factory=dict)


def parse_as_of(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return por.parse_time(text)
    except ValueError as exc:
        fail(f"--as-of: {exc}")
    return None


def load_state(archive: Path, as_of_us: int | None) -> LoadedState:
    """Fold the archive with services.replay.replay; with an as-of time, events effective after it are left out."""
    from services.archive import read_archive
    from services.replay import decode_row, replay

    if not archive.exists():
        fail(f"archive {archive} does not exist; make one with `stockledger scenario generate --out {archive}`")
    last: list[int] = []
    skipped = 0
    since: dict[tuple[str, str], int] = {}

    def rows():
        nonlocal skipped
        for row in read_archive(archive):
            if as_of_us is not None:
                decoded = decode_row(row[2])
                if not isinstance(decoded, Exception):
                    t = decoded[1].get("occurred_at")
                    if isinstance(t, int) and t > as_of_us:
                        skipped += 1
                        continue
            yield row

    def sink(_n, _row, subject, record, out) -> None:
        if record is None:
            return
        t = record.get("occurred_at")
        if isinstance(t, int) and (not last or t > last[0]):
            last[:] = [t]
        if (subject == "CustodyMovement" and out.rejection is None and not out.duplicate
                and record.get("status") == "IN_TRANSIT"):
            since[(record["symbol"], record["movement_ref"])] = record["occurred_at"]

    try:
        result = replay(rows(), sink=sink)
    except (OSError, ValueError) as exc:
        fail(f"cannot read {archive}: {exc}")
    last_us = last[0] if last else None
    if as_of_us is None:
        if last_us is None:
            fail(f"archive {archive} holds no decodable event: pass --as-of")
        as_of_us = last_us
    return LoadedState(result.state, as_of_us, last_us, result.total_in, skipped, since)


def read_secret(secret_file: Path | None, *, required: bool) -> bytes | None:
    """The salt secret from --secret-file (trailing newline stripped) or $STOCKLEDGER_POR_SECRET."""
    if secret_file is not None:
        try:
            secret = secret_file.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            fail(f"cannot read --secret-file {secret_file}: {exc}")
    else:
        env = os.environ.get(por.SECRET_ENV)
        if env is None:
            if required:
                fail(f"no salt secret: set {por.SECRET_ENV} or pass --secret-file (32 random bytes, e.g. `openssl rand -hex 32`)")
            return None
        secret = env.encode("utf-8")
    if len(secret) < 16:
        fail("the salt secret must be at least 16 bytes (32 random bytes recommended)")
    return secret


def _snapshot(loaded: LoadedState, secret: bytes) -> por.Snapshot:
    try:
        return por.build_snapshot(loaded.state, loaded.as_of_us, secret)
    except por.PorError as exc:
        fail(f"cannot commit the liabilities: {exc}", 1)
    raise AssertionError  # unreachable


def write_json(path: Path, doc: Any) -> None:
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")  # a reader never sees half a document


def _header(loaded: LoadedState, archive: Path) -> None:
    skipped = f", {loaded.skipped_after_as_of:,} effective after it left out" if loaded.skipped_after_as_of else ""
    console.print(f"as of {por.format_time(loaded.as_of_us)} ({loaded.as_of_us} us): {archive}, "
                  f"{loaded.records:,} records folded{skipped}", soft_wrap=True)


# --------------------------------------------------------------------------- commands


@por_app.command("report")
def report(archive: ArchiveOpt, as_of: AsOfOpt = None, secret_file: SecretOpt = None) -> None:
    """Per symbol: custodian aggregate, shares held, supply x multiplier, liabilities, ratio, verdict; and the root.

    Exit 0 when every symbol is FULLY_RESERVED and liabilities equal supply, 1 otherwise.
    """
    loaded = load_state(archive, parse_as_of(as_of))
    try:
        rows = por.reserve_report(loaded.state, loaded.as_of_us)
    except por.PorError as exc:
        fail(str(exc), 1)
    if not rows:
        fail(f"no symbol is listed as of {por.format_time(loaded.as_of_us)}: nothing to report", 1)
    _header(loaded, archive)
    t = Table(title="Proof of reserves (shares and tokens; nano-units shown as decimals)")
    for col in ("symbol", "custodian aggregate", "shares held (ledger)", "supply x multiplier", "liabilities (tokens)",
                "ratio", "verdict"):
        t.add_column(col, justify="left" if col in ("symbol", "verdict") else "right", overflow="fold")
    colour = {por.FULLY_RESERVED: "green", por.UNDER_RESERVED: "red", por.NO_STATEMENT: "yellow"}
    for r in rows:
        liab = por.format_nano(r.liabilities_tokens_nano)
        if not r.liabilities_match_supply:
            liab = f"[red]{liab} != supply {por.format_nano(r.supply_tokens_nano)}[/]"
        aggregate = por.format_nano(r.custodian_aggregate_nano)
        if r.custodian_source == por.SOURCE_LEDGER:
            aggregate += " (ledger; no statement)"
        t.add_row(r.symbol, aggregate, por.format_nano(r.shares_held_nano),
                  f"{por.format_nano(r.supply_shares_nano)} (x{por.format_nano(r.multiplier_nano)})", liab,
                  por.format_ppm(r.ratio_ppm), f"[{colour[r.verdict]}]{r.verdict}[/]")
    console.print(t)
    secret = read_secret(secret_file, required=False)
    if secret is None:
        console.print(f"root: not computed (set {por.SECRET_ENV} or pass --secret-file)")
    else:
        snap = _snapshot(loaded, secret)
        console.print(f"snapshot {snap.snapshot_id}", soft_wrap=True)
        console.print(f"root {snap.root_hash} over {len(snap.tree):,} accounts (incl. {por.POOL_MAIN}, {por.POOL_INSURANCE})",
                      soft_wrap=True)
    if any(r.verdict != por.FULLY_RESERVED or not r.liabilities_match_supply for r in rows):
        raise typer.Exit(1)


@por_app.command("publish")
def publish(
    archive: ArchiveOpt,
    out: Annotated[Path, typer.Option("--out", help="root file to write (JSON)")],
    as_of: AsOfOpt = None,
    secret_file: SecretOpt = None,
) -> None:
    """Commit every account's liabilities and write the root file to publish."""
    loaded = load_state(archive, parse_as_of(as_of))
    secret = read_secret(secret_file, required=True)
    snap = _snapshot(loaded, secret)
    doc = por.root_document(snap)
    write_json(out, doc)
    _header(loaded, archive)
    console.print(f"snapshot {snap.snapshot_id}: root {snap.root_hash} over {len(snap.tree):,} accounts -> {out}",
                  soft_wrap=True)
    for r in snap.reserves:
        console.print(f"  {r.symbol}: liabilities {por.format_nano(r.liabilities_tokens_nano)} tokens, custodian "
                      f"{por.format_nano(r.custodian_aggregate_nano)} shares ({r.custodian_source}), {r.verdict}",
                      soft_wrap=True)


@por_app.command("prove")
def prove(
    account: Annotated[str, typer.Argument(help=f"account id (or {por.POOL_MAIN} / {por.POOL_INSURANCE})")],
    archive: ArchiveOpt,
    out: Annotated[Path, typer.Option("--out", help="proof file to write (JSON)")],
    as_of: AsOfOpt = None,
    secret_file: SecretOpt = None,
) -> None:
    """Write one account's inclusion proof (same snapshot and root as `publish` for the same archive and time)."""
    loaded = load_state(archive, parse_as_of(as_of))
    secret = read_secret(secret_file, required=True)
    snap = _snapshot(loaded, secret)
    try:
        proof = snap.proof(account)
    except UnknownAccountError as exc:
        fail(str(exc), 1)
    write_json(out, proof)
    quantities = ", ".join(f"{s} {por.format_nano(q)}" for s, q in proof["quantities"].items() if q) or "no tokens"
    console.print(f"{account}: {quantities}; leaf {proof['leaf_index']}, {len(proof['path'])} levels -> {out}",
                  soft_wrap=True)
    console.print(f"snapshot {snap.snapshot_id}, root {snap.root_hash}", soft_wrap=True)


@por_app.command("verify")
def verify(
    proof_file: Annotated[Path, typer.Argument(metavar="PROOF", help="proof file (JSON) written by `por prove`")],
    root: Annotated[str, typer.Option("--root", help="published root file (JSON) or the bare root hash (64 hex)")],
) -> None:
    """Check a proof offline against the published root: no archive, no database. Exit 0 OK, 1 failed."""
    try:
        proof = json.loads(proof_file.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read {proof_file}: {exc}")
    except ValueError as exc:
        console.print(f"[red]FAILED[/]: {proof_file} is not valid JSON: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    root_arg: dict[str, Any] | str
    root_path = Path(root)
    if root_path.is_file():
        try:
            root_arg = json.loads(root_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            fail(f"cannot read the root file {root}: {exc}")
    elif _HEX64.fullmatch(root):
        root_arg = root.lower()
    else:
        fail(f"--root {root!r} is neither a file nor a 64-hex root hash")
    try:
        verified, notes = por.verify_against_root(proof, root_arg)
    except (ProofError, por.PorError) as exc:
        console.print(f"[red]FAILED[/]: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"[green]OK[/]: {verified.account_id} is included in snapshot {verified.snapshot_id}", soft_wrap=True)
    for sym, q in verified.quantities.items():
        console.print(f"  {sym}: {por.format_nano(q)} ({q} nano)", soft_wrap=True)
    console.print(f"root {verified.root_hash}; leaf {verified.leaf_index}", soft_wrap=True)
    if isinstance(root_arg, dict):
        console.print("root sums <= tokens covered by the custodian aggregates: "
                      + ", ".join(f"{s} {por.format_nano(verified.root_sums[s])}" for s in verified.symbols),
                      soft_wrap=True)
    for note in notes:
        console.print(f"[yellow]note[/]: {note}", soft_wrap=True)
