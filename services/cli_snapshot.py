"""`stockledger snapshot ...`: the fold's snapshots on ledger.snapshots: list, export to a file, verify against the log."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.settings import get_settings

snapshot_app = typer.Typer(help="Fold snapshots (ledger.snapshots): list, export, verify.", no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 160)

BootstrapOpt = Annotated[str | None, typer.Option(help="host:port of the broker")]
GroupOpt = Annotated[str | None, typer.Option(help="the fold's consumer group (default <app_id>.fold)")]
OffsetOpt = Annotated[int | None, typer.Option(min=0, help="the snapshot's next_sequenced_offset (default: the newest)")]


def fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def _stored(bootstrap: str | None, group: str | None):
    from services.kafka_security import LEDGER, aiokafka_auth
    from streams import snapshots

    settings = get_settings()
    group = group or f"{settings.app_id}.fold"
    # Snapshots are read as the ledger principal: the topic holds the whole state, so only the ledger reads it.
    stored = asyncio.run(snapshots.read_stored(bootstrap or settings.bootstrap_servers, group, aiokafka_auth(LEDGER)))
    if not stored.manifests:
        fail(f"no snapshot of group {group} on the topic", 1)
    return stored, group


def _pick(stored, offset: int | None) -> int:
    if offset is None:
        return max(stored.manifests)
    if offset not in stored.manifests:
        fail(f"no snapshot at offset {offset}; there are: {', '.join(map(str, sorted(stored.manifests)))}", 1)
    return offset


@snapshot_app.command("list")
def list_cmd(bootstrap: BootstrapOpt = None, group: GroupOpt = None) -> None:
    """The snapshots on the topic: offset, entries, size, state hash, whether every chunk is there."""
    stored, group = _stored(bootstrap, group)
    t = Table(title=f"Snapshots of {group}")
    for col in ("offset", "entries", "bytes", "chunks", "state hash", "complete"):
        t.add_column(col, justify="left" if col == "state hash" else "right")
    for offset in sorted(stored.manifests):
        m = stored.manifests[offset]
        complete = len(stored.chunks.get(offset, {})) >= m["chunks"]
        t.add_row(f"{offset:,}", f"{m['log_size']:,}", f"{m['size_bytes']:,}", str(m["chunks"]), m["state_hash"][:16],
                  "yes" if complete else "[red]no[/]")
    console.print(t)


@snapshot_app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Option(help="file for the snapshot's bytes; the manifest goes to <out>.json")],
    offset: OffsetOpt = None, bootstrap: BootstrapOpt = None, group: GroupOpt = None,
) -> None:
    """Write one snapshot to a file, checked first, for `stockledger replay --from-snapshot`."""
    from services.atomic import write_text_atomic
    from streams import snapshots

    stored, _ = _stored(bootstrap, group)
    offset = _pick(stored, offset)
    try:
        data = stored.assemble(offset)
        snapshots.load(data, stored.manifests[offset])
    except snapshots.SnapshotError as exc:
        fail(str(exc), 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    write_text_atomic(manifest_path(out), json.dumps(stored.manifests[offset], indent=2) + "\n")
    console.print(f"snapshot at offset {offset:,} ({len(data):,} bytes) -> {out} and {manifest_path(out)}")


@snapshot_app.command("verify")
def verify_cmd(offset: OffsetOpt = None, bootstrap: BootstrapOpt = None, group: GroupOpt = None) -> None:
    """Fold ledger.sequenced from offset 0 up to a snapshot's offset and check its state hash. Exit 0 OK, 1 not."""
    from ledger.state_hash import state_hash
    from services.kafka_security import LEDGER, aiokafka_auth
    from streams import snapshots
    from streams.fold import rebuild

    stored, _ = _stored(bootstrap, group)
    offset = _pick(stored, offset)
    manifest = stored.manifests[offset]
    try:
        snapshots.load(stored.assemble(offset), manifest)
    except snapshots.SnapshotError as exc:
        console.print(f"[red]FAILED[/]: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    settings = get_settings()
    ledger = asyncio.run(rebuild(bootstrap or settings.bootstrap_servers, offset, auth=aiokafka_auth(LEDGER)))
    got = state_hash(ledger.state)
    if got != manifest["state_hash"] or ledger.state.log.root().hex() != manifest["log_root"]:
        console.print(f"[red]FAILED[/]: folding the log to offset {offset:,} gives state {got[:16]}..., "
                      f"the snapshot says {manifest['state_hash'][:16]}...", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"[green]OK[/]: the snapshot at offset {offset:,} equals a fold of the log from offset 0 "
                  f"({manifest['log_size']:,} entries, state {got[:16]}...)", soft_wrap=True)


def manifest_path(snapshot_file: Path) -> Path:
    return snapshot_file.with_name(snapshot_file.name + ".json")


def load_file(snapshot_file: Path) -> tuple[Any, dict[str, Any]]:
    """A snapshot file and its manifest (from `snapshot export`), checked; exits with a one-line error otherwise."""
    from services import strict_json
    from streams import snapshots

    try:
        manifest = strict_json.read_document(manifest_path(snapshot_file), "the snapshot manifest")
        data = snapshot_file.read_bytes()
    except strict_json.DocumentError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot read the snapshot {snapshot_file}: {exc.strerror}")
    try:
        return snapshots.load(data, manifest), manifest
    except (snapshots.SnapshotError, KeyError, TypeError) as exc:
        fail(f"{snapshot_file}: {exc}", 1)
    raise AssertionError  # unreachable
