"""`stockledger recon ...`: import custodian statements / on-chain supply, and the three-way reconciliation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from services import por, recon, statements
from services.cli_por import AsOfOpt, console, fail, load_state, parse_as_of

recon_app = typer.Typer(
    help="Reconciliation: ledger vs on-chain supply vs custodian statements (MT535-shaped); statement import.",
    no_args_is_help=True,
)


def _parse_files(files: list[Path], observed_at: str | None) -> list[statements.ParsedFile]:
    observed_us = None
    if observed_at is not None:
        try:
            observed_us = por.parse_time(observed_at)
        except ValueError as exc:
            fail(f"--observed-at: {exc}")
    return [statements.parse_file(f, observed_us) for f in files]


def _print_errors(errors: list[statements.RowError], what: str) -> None:
    t = Table(title=f"{len(errors)} problem(s): {what}")
    for col in ("file", "line", "problem"):
        t.add_column(col, overflow="fold")
    for e in errors:
        t.add_row(e.file, str(e.line), e.message)
    console.print(t)


@recon_app.command("import")
def import_files(
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="statement / supply files (.csv or .json)")],
    to_archive: Annotated[Path | None, typer.Option("--to-archive", help="archive to extend with the new records")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="write the extended archive here (default: replace --to-archive)")] = None,
    to_kafka: Annotated[bool, typer.Option("--to-kafka", help="publish the records to Kafka instead")] = False,
    bootstrap: Annotated[str | None, typer.Option(help="host:port of the broker (default from settings)")] = None,
    observed_at: Annotated[str | None, typer.Option("--observed-at", help="time of supply rows without an observed_at column")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and show what would be imported; write nothing")] = False,
) -> None:
    """Validate every row of every file; import all of them, or nothing (exit 1) if any row is bad."""
    if not dry_run and (to_archive is None) == (not to_kafka):
        fail("pass exactly one of --to-archive ARCHIVE or --to-kafka (or --dry-run)")
    if out is not None and to_archive is None:
        fail("--out needs --to-archive")
    for f in files:
        if not f.is_file():
            fail(f"{f} does not exist")
    parsed = _parse_files(files, observed_at)
    order = {str(f): i for i, f in enumerate(files)}
    errors = sorted([e for p in parsed for e in p.errors] + statements.import_problems(parsed),
                    key=lambda e: (order.get(e.file, 0), e.line))
    if errors:
        _print_errors(errors, "nothing was imported")
        raise typer.Exit(1)
    rows = [r for p in parsed for r in p.rows]
    encoded = statements.archive_rows(rows)
    n_stmt = sum(len(p.statements) for p in parsed)
    n_sup = sum(len(p.supplies) for p in parsed)
    summary = f"{n_stmt} statement line(s), {n_sup} supply observation(s) from {len(files)} file(s)"
    if dry_run:
        console.print(f"valid: {summary}; nothing written (--dry-run)")
        for r in rows:
            console.print(f"  {r.where}: {r.event_id}", soft_wrap=True)
        return
    if to_kafka:
        from services.producer import produce_rows
        from services.settings import get_settings

        bootstrap = bootstrap or get_settings().bootstrap_servers
        try:
            counts = produce_rows(bootstrap, encoded)
        except Exception as exc:  # noqa: BLE001 - the operator needs the cause
            fail(f"producing to {bootstrap} failed: {exc}. Is Kafka up (`make kafka-up`)?", 1)
        console.print(f"published {summary} to Kafka at {bootstrap}: "
                      + ", ".join(f"{t} {n}" for t, n in sorted(counts.items())))
        return
    assert to_archive is not None
    already = statements.existing_event_ids(to_archive, {r.event_id for r in rows})
    total = statements.append_to_archive(to_archive, encoded, out)
    console.print(f"imported {summary}: {out or to_archive} now holds {total:,} records", soft_wrap=True)
    if already:
        console.print(f"[yellow]note[/]: {len(already)} record(s) were already in {to_archive} (same event id); "
                      f"the ledger counts them as duplicates and changes nothing", soft_wrap=True)


@recon_app.command("report")
def report(
    archive: Annotated[Path, typer.Option("--archive", help="event archive (Avro OCF) to fold with the offline replay")],
    statements_files: Annotated[
        list[Path] | None,
        typer.Option("--statements", help="statement or supply file not imported yet (.csv/.json); repeatable"),
    ] = None,
    as_of: AsOfOpt = None,
    timing_window_hours: Annotated[int, typer.Option(min=0, help="in-transit movements younger than this explain timing breaks")] = 48,
    stale_hours: Annotated[int, typer.Option(min=0, help="a statement older than this before the recon time is stale")] = 24,
    observed_at: Annotated[str | None, typer.Option("--observed-at", help="time of supply rows without an observed_at column")] = None,
    allow_timing: Annotated[bool, typer.Option("--allow-timing", help="exit 0 when the only breaks are timing breaks")] = False,
) -> None:
    """Three-way reconciliation per symbol (ISIN); prints the breaks. Exit 0 no breaks, 1 breaks, 2 unusable input."""
    files = statements_files or []
    for f in files:
        if not f.is_file():
            fail(f"{f} does not exist")
    parsed = _parse_files(files, observed_at)
    errors = [e for p in parsed for e in p.errors]
    if errors:
        _print_errors(errors, "fix the statement file(s) first")
        raise typer.Exit(2)
    loaded = load_state(archive, parse_as_of(as_of))
    hour = recon.HOUR_US
    result = recon.reconcile(
        loaded.state, loaded.as_of_us,
        [r for p in parsed for r in p.statements], [r for p in parsed for r in p.supplies],
        loaded.in_transit_since, timing_window_us=timing_window_hours * hour, stale_after_us=stale_hours * hour,
    )
    skipped = f", {loaded.skipped_after_as_of:,} effective after it left out" if loaded.skipped_after_as_of else ""
    console.print(f"reconciliation as of {por.format_time(loaded.as_of_us)}: {archive} ({loaded.records:,} records{skipped})"
                  + (f" + {len(files)} file(s) not imported" if files else ""), soft_wrap=True)

    t = Table(title="Per symbol (shares = tokens x multiplier; nano-units shown as decimals)")
    for col in ("symbol", "ISIN", "ledger (holders+pools)", "custodian book", "in transit", "chain", "custodian AGGR", "breaks"):
        t.add_column(col, justify="left" if col in ("symbol", "ISIN") else "right", overflow="fold")
    for s in result.symbols:
        t.add_row(s.symbol, s.isin, por.format_nano(s.ledger_shares_nano), por.format_nano(s.custody_book_nano),
                  por.format_nano(s.in_transit_nano), por.format_nano(s.chain_shares_nano), por.format_nano(s.custodian_nano),
                  "[green]0[/]" if not s.breaks else f"[red]{s.breaks}[/]")
    console.print(t)

    if result.in_transit:
        c = Table(title="Clearing accounts custodian:<sym>:in_transit (must return to zero)")
        for col in ("symbol", "movement", "direction", "quantity", "since", "age", "status"):
            c.add_column(col, overflow="fold")
        for i in result.in_transit:
            c.add_row(i.symbol, i.movement_ref, i.direction, por.format_nano(abs(i.qty_nano)),
                      "-" if i.since_us is None else por.format_time(i.since_us),
                      "unknown" if i.age_us is None else por.format_duration(i.age_us),
                      "[red]overdue[/]" if i.overdue else "inside window")
        console.print(c)

    if not result.breaks:
        console.print("[green]no breaks[/]")
        return
    b = Table(title=f"{len(result.breaks)} break(s): " + ", ".join(f"{k} {n}" for k, n in sorted(result.counts().items())))
    for col in ("symbol", "ISIN", "ledger", "chain", "custodian", "difference", "class", "explanation"):
        b.add_column(col, overflow="fold", justify="right" if col in ("ledger", "chain", "custodian", "difference") else "left")
    for br in result.breaks:
        b.add_row(br.symbol, br.isin, por.format_nano(br.ledger_nano), por.format_nano(br.chain_nano),
                  por.format_nano(br.custodian_nano), por.format_nano(br.difference_nano), br.klass, br.explanation)
    console.print(b)
    if not result.ok(allow_timing):
        raise typer.Exit(1)
