"""`stockledger report`: a self-contained HTML page over a projection DuckDB file.

The lead registers it in services/cli.py:

    from services.cli_report import report
    app.command("report")(report)

Standalone: ``python -m services.cli_report --html var/report.html --db var/demo/ledger-embedded.duckdb``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/] {message}", soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


def report(
    html: Annotated[Path, typer.Option("--html", help="HTML file to write: one self-contained page, inline SVG and CSS, "
                                                      "no script, nothing fetched")],
    db: Annotated[Path, typer.Option("--db", help="DuckDB file written by `stockledger replay --duckdb` / "
                                                  "`stockledger demo` or by the projector (`stockledger serve`); "
                                                  "opened read-only")],
) -> None:
    """Write an HTML report: reserves per symbol, pool and insurance over time, liquidations on the BTC/ETH timeline."""
    import duckdb

    from services.html_report import write_report

    if not db.exists():
        _fail(f"DuckDB file {db} does not exist; write one with `stockledger replay ARCHIVE --duckdb {db}`")
    try:
        data = write_report(db, html)
    except duckdb.IOException as exc:
        _fail(f"cannot open {db} read-only: {exc}. A projector or `stockledger serve` holds it: stop it or copy the file.")
    except (duckdb.Error, ValueError) as exc:
        _fail(f"cannot build the report from {db}: {exc}")
    size = html.stat().st_size
    console.print(f"report written: {html} ({size:,} bytes; {len(data.reserves)} symbols, "
                  f"{len(data.liquidations):,} liquidations, {sum(n for _, n in data.rejections_by_reason):,} rejections)")


if __name__ == "__main__":
    typer.run(report)
