"""Read-only HTTP API over the projected DuckDB file (FastAPI; OpenAPI docs at /docs).

DuckDB lets one process open a file read-write, and a read-only process cannot open it while a writer
holds it. So ``services.cli_audit.serve`` runs the projector and this API in ONE process over one DuckDB
database: the projector writes through its own connection, and every request reads through its own
cursor (a cursor is a connection to the same database: it sees committed batches, never half of one).
Other readers use Parquet exports (GET /export/{table}) or a snapshot copy of the file (see
docs/AUDIT_API.md).

Amounts are JSON integers in minor units (exact; JavaScript clients should parse big integers), times
are integer microseconds since the epoch; ``as_of`` and ``recorded_as_of`` also take ISO-8601.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import duckdb
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from schemas.models import RejectionReason
from services import audit
from services.api_log import router as log_router
from services.projection_schema import QUERYABLE

PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
TimeParam = Annotated[str | None, Query(description="integer microseconds since the epoch, or ISO-8601 (UTC if no zone)")]


class BalanceOut(BaseModel):
    account: str
    asset: str
    balance_minor: int
    legs: int
    as_of_us: int | None
    recorded_as_of_us: int | None
    last_event_id: str | None
    last_occurred_at_us: int | None


class HistoryRowOut(BaseModel):
    event_id: str
    cause_event_id: str | None
    cause_kind: str | None
    leg: int
    side: str
    counterparty: str
    amount_minor: int
    balance_minor: int
    occurred_at_us: int
    recorded_at_us: int
    topic: str
    partition: int | None
    offset: int


class HistoryOut(BaseModel):
    account: str
    asset: str
    rows: list[HistoryRowOut]


class RejectionOut(BaseModel):
    event_id: str
    cause_event_id: str | None
    reason: str
    detail: str | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    schema_id: int | None
    original: str | None  # hex
    occurred_at_us: int
    recorded_at_us: int
    topic: str
    partition: int | None
    offset: int


def cursor(request: Request) -> Iterator[duckdb.DuckDBPyConnection]:
    """One cursor per request (DuckDB cursors are not shared between threads), closed afterwards."""
    cur = request.app.state.connection().cursor()
    try:
        yield cur
    finally:
        cur.close()


Cur = Annotated[duckdb.DuckDBPyConnection, Depends(cursor)]


def _time(value: str | None, name: str) -> int | None:
    try:
        return audit.parse_time_us(value)
    except audit.AuditError as exc:
        raise HTTPException(422, f"{name}: {exc}") from exc


def create_app(db: Path | str | None = None, *, connection: duckdb.DuckDBPyConnection | None = None,
               projector: Any = None, on_shutdown: Callable[[], None] | None = None) -> FastAPI:
    """The API over a DuckDB file opened read-only, or over a connection shared with a projector.

    on_shutdown runs when the server shuts down (serve stops its projector there, before uvicorn re-raises
    the signal that stopped it).
    """
    state: dict[str, Any] = {"con": connection, "owns": False}
    lock = threading.Lock()

    def shared() -> duckdb.DuckDBPyConnection:
        with lock:
            if state["con"] is None:
                if db is None:
                    raise RuntimeError("create_app needs a db path or a connection")
                if not Path(db).exists():
                    raise HTTPException(503, f"DuckDB file {db} does not exist yet")
                state["con"] = duckdb.connect(str(db), read_only=True)
                state["owns"] = True
            return state["con"]

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        if on_shutdown is not None:
            on_shutdown()
        if state["owns"] and state["con"] is not None:
            state["con"].close()

    app = FastAPI(title="stockledger audit API", version="1.0",
                  description=__doc__, lifespan=lifespan)
    app.state.connection = shared
    app.include_router(log_router)

    @app.get("/health", summary="Liveness, row counts, stored offsets and projector progress")
    def health(cur: Cur) -> dict[str, Any]:
        cur.execute("BEGIN TRANSACTION")  # one snapshot: the offsets belong to the rows counted (a commit may land between)
        try:
            offsets = [{"topic": t, "partition": p, "next_offset": o} for t, p, o in cur.execute(
                'SELECT topic, "partition", next_offset FROM projector_offsets ORDER BY topic, "partition"').fetchall()] \
                if "projector_offsets" in audit.relations(cur) else []
            tables = audit.table_counts(cur)
        finally:
            cur.execute("COMMIT")
        return {"status": "ok", "db": str(db) if db is not None else None, "tables": tables,
                "offsets": offsets, "projector": projector.snapshot() if projector is not None else None}

    @app.get("/balances/{account}/{asset}", response_model=BalanceOut,
             summary="Balance of an account in an asset, as of an effective and/or a recorded time")
    def get_balance(cur: Cur, account: str, asset: str, as_of: TimeParam = None,
                    recorded_as_of: TimeParam = None) -> dict[str, Any]:
        as_of_us, recorded_us = _time(as_of, "as_of"), _time(recorded_as_of, "recorded_as_of")
        if not audit.account_known(cur, account, asset):
            raise HTTPException(404, f"no postings for account {account!r} in asset {asset!r}")
        return audit.balance(cur, account, asset, as_of_us, recorded_us).as_dict()

    @app.get("/history/{account}/{asset}", response_model=HistoryOut,
             summary="Every leg of the account in the asset with the running balance and its lineage")
    def get_history(cur: Cur, account: str, asset: str, as_of: TimeParam = None, recorded_as_of: TimeParam = None,
                    limit: Annotated[int, Query(ge=1, le=100_000)] = 1_000,
                    skip: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        as_of_us, recorded_us = _time(as_of, "as_of"), _time(recorded_as_of, "recorded_as_of")
        if not audit.account_known(cur, account, asset):
            raise HTTPException(404, f"no postings for account {account!r} in asset {asset!r}")
        rows = audit.history(cur, account, asset, as_of_us, recorded_us, limit=limit, skip=skip)
        return {"account": account, "asset": asset, "rows": [r.__dict__ for r in rows]}

    @app.get("/trial-balance", summary="Per asset debits = credits; clearing accounts listed, flagged unless zero")
    def get_trial_balance(cur: Cur, as_of: TimeParam = None, recorded_as_of: TimeParam = None) -> dict[str, Any]:
        return audit.trial_balance(cur, _time(as_of, "as_of"), _time(recorded_as_of, "recorded_as_of")).as_dict()

    @app.get("/liquidations/{account}", summary="Each liquidation of an account explained from its recorded inputs")
    def get_liquidations(cur: Cur, account: str) -> dict[str, Any]:
        explained = audit.explain_liquidations(cur, account)
        if not explained:
            raise HTTPException(404, f"no liquidation recorded for account {account!r}")
        return {"account": account, "liquidations": [e.as_dict() for e in explained]}

    @app.get("/rejections", response_model=list[RejectionOut], summary="Rejected inputs, with their original bytes (hex)")
    def get_rejections(cur: Cur, reason: str | None = None, limit: Annotated[int, Query(ge=1, le=100_000)] = 100,
                       skip: Annotated[int, Query(ge=0)] = 0) -> list[dict[str, Any]]:
        valid = [r.value for r in RejectionReason]
        if reason is not None and reason not in valid:
            raise HTTPException(422, f"unknown reason {reason!r}; one of: {', '.join(valid)}")
        return audit.rejections(cur, reason, limit=limit, skip=skip)

    @app.get("/pool/nav", summary="Pool NAV and LP share value over time (recorded by the core)")
    def get_pool_nav(cur: Cur, as_of: TimeParam = None,
                     limit: Annotated[int, Query(ge=1, le=100_000)] = 1_000) -> dict[str, Any]:
        return {"points": audit.recorded_pool_nav(cur, limit=limit, as_of_us=_time(as_of, "as_of"))}

    @app.get("/pool/book", summary="Pool cash, tokens and shares outstanding over time (from postings)")
    def get_pool_book(cur: Cur, as_of: TimeParam = None,
                      limit: Annotated[int, Query(ge=1, le=100_000)] = 1_000) -> dict[str, Any]:
        points = audit.pool_history(cur, as_of_us=_time(as_of, "as_of"), limit=limit)
        return {"points": [p.__dict__ for p in points]}

    @app.get("/export/{table}", summary="Download a table or view as Parquet", response_class=FileResponse,
             responses={200: {"content": {PARQUET_MEDIA_TYPE: {}}}, 404: {"description": "unknown table"}})
    def get_export(cur: Cur, table: str) -> FileResponse:
        if table not in QUERYABLE or table not in audit.relations(cur):
            raise HTTPException(404, f"unknown table {table!r}; one of: {', '.join(t for t in QUERYABLE)}")
        fd, path = tempfile.mkstemp(prefix=f"stockledger-{table}-", suffix=".parquet")
        os.close(fd)
        try:
            audit.export_parquet(cur, table, path)
        except BaseException:
            os.unlink(path)
            raise
        return FileResponse(path, media_type=PARQUET_MEDIA_TYPE, filename=f"{table}.parquet",
                            background=BackgroundTask(os.unlink, path))

    @app.get("/snapshot", summary="Download a consistent copy of the whole DuckDB file (for other readers)",
             response_class=FileResponse, responses={200: {"content": {"application/octet-stream": {}}}})
    def get_snapshot(cur: Cur) -> FileResponse:
        workdir = tempfile.mkdtemp(prefix="stockledger-snapshot-")
        path = Path(workdir) / "snapshot.duckdb"
        try:
            audit.snapshot(cur, path)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return FileResponse(path, media_type="application/octet-stream", filename="stockledger-snapshot.duckdb",
                            background=BackgroundTask(shutil.rmtree, workdir, True))

    return app
