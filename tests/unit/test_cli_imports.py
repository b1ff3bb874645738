"""The CLI and the stream worker start without the read side's heavy libraries (they cost the worker's recovery time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READ_SIDE = ("duckdb", "pyarrow", "fastapi", "uvicorn")


def test_the_worker_s_imports_leave_out_duckdb_arrow_and_the_http_stack():
    code = ("import sys, services.cli, streams.worker; "
            f"print(','.join(m for m in {READ_SIDE!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at startup: {out.stdout.strip()}"


def test_the_commands_that_need_them_still_find_them():
    # `audit` and `report` import DuckDB when they run: their help and a missing file still answer in one line
    from typer.testing import CliRunner

    from services.cli import app

    result = CliRunner().invoke(app, ["audit", "trial-balance", "--db", str(ROOT / "var" / "no-such.duckdb")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = CliRunner().invoke(app, ["report", "--html", "/tmp/x.html", "--db", str(ROOT / "var" / "no-such.duckdb")])
    assert result.exit_code != 0 and "does not exist" in result.output
