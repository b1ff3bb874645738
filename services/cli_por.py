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
from services import por, strict_json
from services.atomic import write_text_atomic
from services.por import proof_file_name

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
    log: tuple[int, str] = (0, "")  # (size, root hex) of the Merkle log of every entry read (before the as-of filter)


def parse_as_of(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return por.parse_time(text)
    except ValueError as exc:
        fail(f"--as-of: {exc}")
    return None


def load_state(archive: Path, as_of_us: int | None, log_size: int | None = None) -> LoadedState:
    """Fold the archive with services.replay.replay; with an as-of time, events effective after it are left out.

    log_size: read only the first log_size entries (the history a published root names). The Merkle log
    is kept over every entry read, also those the as-of time leaves out: it names the history, the as-of
    time says which part of it counts.
    """
    from ledger.log_entry import entry_leaf_hash
    from ledger.merkle_log import Frontier
    from services.archive import read_archive
    from services.replay import decode_row, replay

    if not archive.exists():
        fail(f"archive {archive} does not exist; make one with `stockledger scenario generate --out {archive}`")
    last: list[int] = []
    skipped = 0
    since: dict[tuple[str, str], int] = {}

    frontier = Frontier()

    def rows():
        nonlocal skipped
        for row in read_archive(archive, with_source=True):
            if log_size is not None and frontier.size >= log_size:
                return
            frontier.append(entry_leaf_hash(row[0], row[1], row[2]))
            if as_of_us is not None:
                decoded = decode_row(row[2])
                if not isinstance(decoded, Exception):
                    t = decoded[1].get("occurred_at")
                    if isinstance(t, int) and t > as_of_us:
                        skipped += 1
                        continue
            yield row

    def sink(_n, _entry, res) -> None:
        record, out = res.record, res.outcome
        if record is None:
            return
        t = record.get("occurred_at")
        if isinstance(t, int) and (not last or t > last[0]):
            last[:] = [t]
        if (res.subject == "CustodyMovement" and out.rejection is None and not out.duplicate
                and record.get("status") == "IN_TRANSIT"):
            since[(record["symbol"], record["movement_ref"])] = record["occurred_at"]

    try:
        result = replay(rows(), sink=sink, merkle_log=False, with_outputs=False)
    except (OSError, ValueError) as exc:
        fail(f"cannot read {archive}: {exc}")
    if log_size is not None and frontier.size < log_size:
        fail(f"archive {archive} holds {frontier.size:,} entries, fewer than the {log_size:,} the root names", 1)
    last_us = last[0] if last else None
    if as_of_us is None:
        if last_us is None:
            fail(f"archive {archive} holds no decodable event: pass --as-of")
        as_of_us = last_us
    return LoadedState(result.state, as_of_us, last_us, result.total_in, skipped, since, (frontier.size, frontier.root().hex()))


def archive_as_of(archive: Path) -> int:
    """The default as-of time of an archive: its latest effective time (the rule `load_state` applies)."""
    from services.archive import read_archive
    from services.replay import decode_row

    latest = None
    for row in read_archive(archive):
        decoded = decode_row(row[2])
        if not isinstance(decoded, Exception):
            t = decoded[1].get("occurred_at")
            if isinstance(t, int) and (latest is None or t > latest):
                latest = t
    if latest is None:
        fail(f"archive {archive} holds no decodable event: pass --as-of")
    return latest


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
        return por.build_snapshot(loaded.state, loaded.as_of_us, secret, log=loaded.log)
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


def _read_root_file(path: Path) -> dict[str, Any]:
    """A published root file, checked for shape; a one-line error and exit 2 otherwise."""
    try:
        doc = strict_json.read_document(path, "the root file")
    except strict_json.DocumentError as exc:
        fail(str(exc))
    try:
        por.root_cover(doc)
    except por.PorError as exc:
        fail(f"the root file {path} cannot be used: {exc}")
    return doc


def write_all_proofs(snap: por.Snapshot, out: Path) -> int:
    """Every committed account's proof as out/proof-<account>.json; returns how many."""
    out.mkdir(parents=True, exist_ok=True)
    accounts = snap.tree.account_ids
    for acct in accounts:
        write_json(out / proof_file_name(acct), snap.proof(acct))
    return len(accounts)


@por_app.command("prove")
def prove(
    archive: ArchiveOpt,
    account: Annotated[str | None, typer.Argument(help=f"account id (or {por.POOL_MAIN} / {por.POOL_INSURANCE})")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="proof file to write (JSON); with --all, a directory")] = None,
    all_accounts: Annotated[bool, typer.Option("--all", help="every account's proof, one fold (files proof-<account>.json)")] = False,
    root: Annotated[Path | None, typer.Option("--root", help="a published root file: prove against it, whatever the "
                                              "archive holds since (its as-of time and log size are used, and checked)")] = None,
    as_of: AsOfOpt = None,
    secret_file: SecretOpt = None,
) -> None:
    """Write inclusion proofs (same snapshot and root as `publish` for the same archive and time).

    With --root the proofs are for that published root at any later time: only the first log-size entries
    of the archive are folded, their Merkle log must equal the one the root names, and the rebuilt root
    must equal the published one.
    """
    if out is None:
        fail("--out is required (a file, or a directory with --all)")
    if (account is None) == (not all_accounts):
        fail("name one ACCOUNT or pass --all")
    doc = _read_root_file(root) if root is not None else None
    log_size = None
    if doc is not None:
        if as_of is not None:
            fail("--as-of comes from the root file when --root is given")
        try:
            binding = por.root_log_binding(doc)
        except por.PorError as exc:
            fail(f"{root}: {exc}")
        if binding is None:
            fail(f"{root} names no Merkle log (a version-1 root): prove without --root, with its --as-of")
        log_size = binding[0]
        as_of_us: int | None = doc["as_of_us"] if type(doc.get("as_of_us")) is int else None
        if as_of_us is None:
            fail(f"{root}: 'as_of_us' must be an integer")
    else:
        as_of_us = parse_as_of(as_of)
    loaded = load_state(archive, as_of_us, log_size)
    secret = read_secret(secret_file, required=True)
    snap = _snapshot(loaded, secret)
    if doc is not None:
        if loaded.log != por.root_log_binding(doc):
            fail(f"the archive's first {log_size:,} entries have Merkle root {loaded.log[1]}, not the root file's "
                 f"{doc['log']['root_hash']}: it is not the history the root was computed from", 1)
        if (snap.snapshot_id, snap.root_hash) != (doc["snapshot_id"], doc["root_hash"]):
            fail(f"rebuilt snapshot {snap.snapshot_id} root {snap.root_hash} differs from the published "
                 f"{doc['snapshot_id']} root {doc['root_hash']}: wrong secret?", 1)
    if all_accounts:
        n = write_all_proofs(snap, out)
        console.print(f"{n:,} proofs -> {out}/ (snapshot {snap.snapshot_id}, root {snap.root_hash})", soft_wrap=True)
        return
    assert account is not None
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
    checkpoint: Annotated[Path | None, typer.Option(help="signed Merkle log checkpoint (`stockledger log head`): "
                                                    "also check the root was computed from exactly that history")] = None,
    public_key: Annotated[str | None, typer.Option("--public-key", help="the log's verifier key, or a file holding it")] = None,
) -> None:
    """Check a proof offline against the published root: no archive, no database.

    Exit 0: the proof verifies. 1: it was read and does not verify (the reason is printed). 2: an argument
    cannot be used (a missing or unreadable file, a file that is not JSON or repeats a key, a root file
    that is not a stockledger root, a --root that is neither a file nor a hash).
    """
    try:
        proof = strict_json.read_document(proof_file, "the proof file")
    except strict_json.DocumentError as exc:
        fail(str(exc))
    root_arg: dict[str, Any] | str
    root_path = Path(root)
    if root_path.is_file():
        root_arg = _read_root_file(root_path)
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
    if checkpoint is not None:
        _check_binding(root_arg, checkpoint, public_key)
    for note in notes:
        console.print(f"[yellow]note[/]: {note}", soft_wrap=True)


def _check_binding(root_doc: dict[str, Any] | str, checkpoint: Path, public_key: str | None) -> None:
    from services.checkpoint_note import NoteError, open_note
    from services.log_keys import load_verifier

    if not isinstance(root_doc, dict):
        fail("--checkpoint needs the root file, not a bare hash")
    if public_key is None:
        fail("--checkpoint needs --public-key (the log's verifier key)")
    try:
        cp = open_note(checkpoint.read_text(encoding="utf-8"), load_verifier(public_key))
        por.check_log_binding(root_doc, cp.size, cp.root.hex())
    except OSError as exc:
        fail(f"cannot read {checkpoint}: {exc.strerror}")
    except (NoteError, por.PorError) as exc:
        console.print(f"[red]FAILED[/]: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"[green]OK[/]: the root was computed from the log of size {cp.size:,} (root {cp.root.hex()[:16]}...) "
                  f"that {cp.origin} signed", soft_wrap=True)
