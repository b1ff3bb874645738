"""`stockledger log ...`: the tamper-evident Merkle log: heads, inclusion and consistency proofs, offline checks, audit."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ledger.merkle_log import ProofError
from services import log_proofs, strict_json
from services.atomic import write_text_atomic
from services.checkpoint_note import NoteError
from services.log_keys import load_signer, load_verifier, verifier_path
from services.settings import get_settings

log_app = typer.Typer(
    help="The Merkle log over ledger.sequenced (RFC 9162): signed heads, proofs, offline verification, audit.",
    no_args_is_help=True,
)
console = Console(width=None if sys.stdout.isatty() else 160)

DbOpt = Annotated[Path | None, typer.Option("--db", help="projected DuckDB file (default: the settings' duckdb_path)")]
KeyOpt = Annotated[str | None, typer.Option(
    "--public-key", help="verifier key (<name>+<id>+<key>) or a file holding it (default: the .pub beside the signing key)")]


def fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def _connect(db: Path | None):
    import duckdb

    path = db or get_settings().duckdb_path
    if not path.exists():
        fail(f"{path} does not exist: run the projector (`stockledger serve`) or `stockledger replay --duckdb`")
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        fail(f"cannot open {path}: {str(exc).splitlines()[0]}")
    raise AssertionError  # unreachable


def _verifier(text: str | None):
    if text is None:
        pub = verifier_path(get_settings().log_key_file)
        if not pub.exists():
            fail(f"no verifier key given and none at {pub}: pass --public-key")
        text = str(pub)
    try:
        return load_verifier(text)
    except NoteError as exc:
        fail(str(exc))
    raise AssertionError  # unreachable


def _write(out: Path | None, doc: dict[str, Any]) -> None:
    text = json.dumps(doc, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, text)
    console.print(f"written: {out}", soft_wrap=True)


@log_app.command("keygen")
def keygen(
    key_file: Annotated[Path | None, typer.Option(help="where to keep the signing key (default from settings)")] = None,
    name: Annotated[str | None, typer.Option(help="key name (default: the log origin from settings)")] = None,
) -> None:
    """Make the checkpoint signing key (mode 0600) if missing, and print its verifier key for auditors."""
    settings = get_settings()
    path = key_file or settings.log_key_file
    existed = path.exists()
    try:
        signer = load_signer(path, name or settings.log_origin)
    except NoteError as exc:
        fail(str(exc))
    console.print(f"{'existing' if existed else 'new'} signing key {path}; verifier key in {verifier_path(path)}:", soft_wrap=True)
    print(signer.verifier_key())


@log_app.command("public-key")
def public_key(key_file: Annotated[Path | None, typer.Option(help="the signing key file")] = None) -> None:
    """Print the verifier key auditors use (from the signing key; nothing secret is printed)."""
    path = key_file or get_settings().log_key_file
    try:
        print(load_signer(path, get_settings().log_origin, create=False).verifier_key())
    except NoteError as exc:
        fail(str(exc))


@log_app.command("head")
def head_cmd(db: DbOpt = None, out: Annotated[Path | None, typer.Option(help="also write the signed note here")] = None) -> None:
    """Print the latest signed checkpoint (a C2SP signed note: origin, size, root, signature)."""
    con = _connect(db)
    try:
        h = log_proofs.head(con)
    except log_proofs.LogError as exc:
        fail(str(exc), 1)
    sys.stdout.write(h.note)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, h.note)


@log_app.command("prove-inclusion")
def prove_inclusion(
    db: DbOpt = None,
    event_id: Annotated[str | None, typer.Option(help="an input's event id, or a posting batch's / outcome's")] = None,
    topic: Annotated[str | None, typer.Option(help="source topic (with --partition and --offset)")] = None,
    partition: Annotated[int | None, typer.Option(min=0)] = None,
    offset: Annotated[int | None, typer.Option(min=0)] = None,
    leaf: Annotated[int | None, typer.Option(min=0, help="leaf index (the entry's place in the ledger's total order, from 0)")] = None,
    size: Annotated[int | None, typer.Option(min=1, help="prove against the signed head of this size (default: latest)")] = None,
    out: Annotated[Path | None, typer.Option(help="proof file to write (default: stdout)")] = None,
) -> None:
    """Proof that one input record is in the log, against a signed head: checkable with `log verify` alone."""
    con = _connect(db)
    try:
        if leaf is None:
            if event_id is None and None in (topic, partition, offset):
                fail("say which record: --event-id, or --topic with --partition and --offset, or --leaf")
            leaf = log_proofs.find_leaf(con, event_id=event_id, topic=topic, partition=partition, offset=offset)
        doc = log_proofs.inclusion_document(con, leaf, log_proofs.head(con, size))
    except log_proofs.LogError as exc:
        fail(str(exc), 1)
    _write(out, doc)


@log_app.command("prove-consistency")
def prove_consistency(
    old: Annotated[int, typer.Argument(min=1, help="tree size of the older signed head")],
    new: Annotated[int | None, typer.Argument(help="tree size of the newer signed head (default: latest)")] = None,
    db: DbOpt = None,
    out: Annotated[Path | None, typer.Option(help="proof file to write (default: stdout)")] = None,
) -> None:
    """Proof that the log at head OLD is a prefix of the log at head NEW: nothing was rewritten in between."""
    con = _connect(db)
    try:
        doc = log_proofs.consistency_document(con, log_proofs.head(con, old), log_proofs.head(con, new))
    except log_proofs.LogError as exc:
        fail(str(exc), 1)
    _write(out, doc)


@log_app.command("verify")
def verify_cmd(
    proof_file: Annotated[Path, typer.Argument(metavar="PROOF", help="proof file from prove-inclusion / prove-consistency")],
    public_key: KeyOpt = None,
    checkpoint: Annotated[Path | None, typer.Option(help="a signed head you already trust: the proof must be against it")] = None,
) -> None:
    """Check a proof offline (no database, no Kafka): signature of its checkpoint, leaf bytes, path.

    Exit 0 OK, 1 the proof does not verify, 2 an argument cannot be used (unreadable, not JSON, no key).
    """
    verifier = _verifier(public_key)
    try:
        doc = strict_json.read_document(proof_file, "the proof file")
    except strict_json.DocumentError as exc:
        fail(str(exc))
    trusted = None
    if checkpoint is not None:
        from services.checkpoint_note import open_note

        try:
            trusted = open_note(checkpoint.read_text(encoding="utf-8"), verifier)
        except (OSError, NoteError) as exc:
            fail(f"--checkpoint {checkpoint}: {exc}")
    try:
        summary, cp = log_proofs.verify_document(doc, verifier, trusted)
    except ProofError as exc:
        console.print(f"[red]FAILED[/]: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"[green]OK[/]: {summary}", soft_wrap=True)
    console.print(f"checkpoint {cp.origin} size {cp.size} root {cp.root.hex()}, signed by {verifier.name}", soft_wrap=True)


@log_app.command("audit")
def audit_cmd(
    db: DbOpt = None,
    public_key: KeyOpt = None,
    no_signatures: Annotated[bool, typer.Option("--no-signatures", help="skip the head signature check (a replay's file has no heads)")] = False,
    show: Annotated[int, typer.Option(min=1, help="findings to print")] = 50,
) -> None:
    """Recompute the log from the file's entries, check every signed head, re-fold and compare every output row.

    Exit 0 when the file is exactly what its log produces, 1 with the faulty rows named otherwise.
    """
    from services.log_audit import audit

    verifier = None if no_signatures else _verifier(public_key)
    con = _connect(db)
    report = audit(con, verifier)
    console.print(f"{report.entries:,} log entries (root {report.root_hash}), {report.heads_checked:,} signed heads, "
                  f"{report.rows_compared:,} output rows compared", soft_wrap=True)
    if report.ok:
        console.print("[green]OK[/]: every row is what the log produces", soft_wrap=True)
        return
    console.print(f"[red]FAILED[/]: {len(report.findings):,} finding(s)", soft_wrap=True)
    for f in report.findings[:show]:
        console.print(f"  {f}", soft_wrap=True, markup=False)
    raise typer.Exit(1)


