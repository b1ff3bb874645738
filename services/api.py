"""Read-only HTTP API over the projected DuckDB file (FastAPI; OpenAPI docs at /docs).

DuckDB lets one process open a file read-write, and a read-only process cannot open it while a writer
holds it. So ``services.cli_audit.serve`` runs the projector and this API in ONE process over one DuckDB
database: the projector writes through its own connection, and every request reads through its own
cursor (a cursor is a connection to the same database: it sees committed batches, never half of one).
Other readers use Parquet exports (GET /export/{table}) or a snapshot copy of the file (see
docs/AUDIT_API.md).

Amounts are JSON integers in minor units (exact; JavaScript clients should parse big integers), times
are integer microseconds since the epoch; ``as_of`` and ``recorded_as_of`` also take ISO-8601.

Every endpoint needs ``Authorization: Bearer <token>`` (tokens from ``stockledger token create``): 401
without a valid token, 403 outside the token's role. auditor: everything; operator: /health; holder:
/balances and /history of its own accounts (user:<account>:...). /export and /snapshot are rate-limited
per token (429) and refused above a size bound (413). See docs/SECURITY.md.
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
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.background import BackgroundTask

from schemas.models import RejectionReason
from services import audit
from services.api_log import router as log_router
from services.api_por import proof_route
from services.api_por import router as por_router
from services.auth import AUDITOR, HOLDER, OPERATOR, RateLimiter, TokenError, TokenRecord, TokenStore
from services.errors import http_error
from services.projection_schema import QUERYABLE
from services.settings import Settings, get_settings

PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
SKIP_MAX = 2**62  # beyond it DuckDB's OFFSET overflows (a 500 before): a 422 instead
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
bearer = HTTPBearer(auto_error=False, scheme_name="bearer token",
                    description="a token made by `stockledger token create` (roles auditor, operator, holder)")
UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def caller(request: Request,
           credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> TokenRecord:
    """The token record of the request: 401 without a token or with an unknown or revoked one."""
    if credentials is None:
        raise HTTPException(401, "a bearer token is required (stockledger token create)", headers=UNAUTHORIZED)
    try:
        record = request.app.state.tokens.authenticate(credentials.credentials)
    except TokenError as exc:
        raise HTTPException(503, f"the token store is unusable: {exc}") from exc
    if record is None:
        raise HTTPException(401, "unknown or revoked token", headers=UNAUTHORIZED)
    return record


def allow(*roles: str) -> Callable[[TokenRecord], TokenRecord]:
    """A dependency admitting the given roles only (403 for any other valid token)."""
    def check(who: Annotated[TokenRecord, Depends(caller)]) -> TokenRecord:
        if who.role not in roles:
            raise HTTPException(403, f"the {who.role} role may not use this endpoint")
        return who
    return check


Auditor = Annotated[TokenRecord, Depends(allow(AUDITOR))]
Reader = Annotated[TokenRecord, Depends(allow(AUDITOR, HOLDER))]
Watcher = Annotated[TokenRecord, Depends(allow(AUDITOR, OPERATOR))]
proof_route(Depends(allow(AUDITOR, HOLDER)))  # GET /por/proof: a holder its own, an auditor any


def _own(who: TokenRecord, account: str) -> None:
    """A holder sees its own accounts only; checked before the account's existence, so nothing leaks."""
    if who.role == HOLDER and not who.owns(account):
        raise HTTPException(403, "a holder token reads its own accounts only")


def _time(value: str | None, name: str) -> int | None:
    try:
        return audit.parse_time_us(value)
    except audit.AuditError as exc:
        raise HTTPException(422, f"{name}: {exc}") from exc


def create_app(db: Path | str | None = None, *, tokens: TokenStore | Path | str,
               connection: duckdb.DuckDBPyConnection | None = None, projector: Any = None,
               on_shutdown: Callable[[], None] | None = None, settings: Settings | None = None,
               por_dir: Path | None = None) -> FastAPI:
    """The API over a DuckDB file opened read-only, or over a connection shared with a projector.

    tokens: the token store (or its file) every request is checked against. on_shutdown runs when the
    server shuts down (serve stops its projector there, before uvicorn re-raises the signal that stopped it).
    """
    settings = settings or get_settings()
    state: dict[str, Any] = {"con": connection, "owns": False}
    lock = threading.Lock()
    heavy_limiter = RateLimiter(settings.api_heavy_requests_per_minute)
    heavy_running = threading.Lock()  # one export or snapshot at a time: each may take a while and disk

    def heavy(who: TokenRecord) -> None:
        wait_s = heavy_limiter.retry_after_s(who.id)
        if wait_s:
            raise HTTPException(429, f"at most {settings.api_heavy_requests_per_minute} exports or snapshots a minute",
                                headers={"Retry-After": str(wait_s)})
        if not heavy_running.acquire(blocking=False):
            raise HTTPException(429, "another export or snapshot is running; try again shortly",
                                headers={"Retry-After": "5"})

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
    app.state.tokens = tokens if isinstance(tokens, TokenStore) else TokenStore(tokens)
    app.include_router(log_router, dependencies=[Depends(allow(AUDITOR))])  # proofs of the whole log: auditors
    app.state.por_dir = por_dir
    app.include_router(por_router)

    @app.exception_handler(Exception)
    async def _one_handler(request: Request, exc: Exception) -> JSONResponse:
        # services.errors: bad request input is a 4xx with a one-line message; anything else a bare 500.
        status, message = http_error(exc)
        return JSONResponse({"detail": message}, status_code=status)

    @app.get("/health", summary="Liveness, row counts, stored offsets and projector progress; 503 when the "
             "projector this server runs is down or has not reached a broker for 15 s")
    def health(cur: Cur, _who: Watcher) -> JSONResponse:
        # One read transaction: counts and offsets from the same committed batch (read apart, a batch
        # committed in between gave the new counts with the old offsets).
        cur.execute("BEGIN TRANSACTION")
        try:
            offsets = [{"topic": t, "partition": p, "next_offset": o} for t, p, o in cur.execute(
                'SELECT topic, "partition", next_offset FROM projector_offsets ORDER BY topic, "partition"').fetchall()] \
                if "projector_offsets" in audit.relations(cur) else []
            tables = audit.table_counts(cur)
        finally:
            cur.execute("COMMIT")
        proj = projector.snapshot() if projector is not None else None
        healthy = proj is None or proj.get("healthy", True)
        body = {"status": "ok" if healthy else "degraded", "db": str(db) if db is not None else None,
                "tables": tables, "offsets": offsets, "projector": proj}
        return JSONResponse(body, status_code=200 if healthy else 503)

    @app.get("/balances/{account}/{asset}", response_model=BalanceOut,
             summary="Balance of an account in an asset, as of an effective and/or a recorded time")
    def get_balance(cur: Cur, who: Reader, account: str, asset: str, as_of: TimeParam = None,
                    recorded_as_of: TimeParam = None) -> dict[str, Any]:
        _own(who, account)
        as_of_us, recorded_us = _time(as_of, "as_of"), _time(recorded_as_of, "recorded_as_of")
        if not audit.account_known(cur, account, asset):
            raise HTTPException(404, f"no postings for account {account!r} in asset {asset!r}")
        return audit.balance(cur, account, asset, as_of_us, recorded_us).as_dict()

    @app.get("/history/{account}/{asset}", response_model=HistoryOut,
             summary="Every leg of the account in the asset with the running balance and its lineage")
    def get_history(cur: Cur, who: Reader, account: str, asset: str, as_of: TimeParam = None,
                    recorded_as_of: TimeParam = None, limit: Annotated[int, Query(ge=1, le=100_000)] = 1_000,
                    skip: Annotated[int, Query(ge=0, le=SKIP_MAX)] = 0) -> dict[str, Any]:
        _own(who, account)
        as_of_us, recorded_us = _time(as_of, "as_of"), _time(recorded_as_of, "recorded_as_of")
        if not audit.account_known(cur, account, asset):
            raise HTTPException(404, f"no postings for account {account!r} in asset {asset!r}")
        rows = audit.history(cur, account, asset, as_of_us, recorded_us, limit=limit, skip=skip)
        return {"account": account, "asset": asset, "rows": [r.__dict__ for r in rows]}

    @app.get("/trial-balance", summary="Per asset debits = credits; clearing accounts listed, flagged unless zero")
    def get_trial_balance(cur: Cur, _who: Auditor, as_of: TimeParam = None, recorded_as_of: TimeParam = None) -> dict[str, Any]:
        return audit.trial_balance(cur, _time(as_of, "as_of"), _time(recorded_as_of, "recorded_as_of")).as_dict()

    @app.get("/liquidations/{account}", summary="Each liquidation of an account explained from its recorded inputs")
    def get_liquidations(cur: Cur, _who: Auditor, account: str) -> dict[str, Any]:
        explained = audit.explain_liquidations(cur, account)
        if not explained:
            raise HTTPException(404, f"no liquidation recorded for account {account!r}")
        return {"account": account, "liquidations": [e.as_dict() for e in explained]}

    @app.get("/rejections", response_model=list[RejectionOut], summary="Rejected inputs, with their original bytes (hex)")
    def get_rejections(cur: Cur, _who: Auditor, reason: str | None = None, limit: Annotated[int, Query(ge=1, le=100_000)] = 100,
                       skip: Annotated[int, Query(ge=0, le=SKIP_MAX)] = 0) -> list[dict[str, Any]]:
        valid = [r.value for r in RejectionReason]
        if reason is not None and reason not in valid:
            raise HTTPException(422, f"unknown reason {reason!r}; one of: {', '.join(valid)}")
        return audit.rejections(cur, reason, limit=limit, skip=skip)

    @app.get("/pool/nav", summary="Pool NAV and LP share value over time (recorded by the core)")
    def get_pool_nav(cur: Cur, _who: Auditor, as_of: TimeParam = None,
                     limit: Annotated[int, Query(ge=1, le=100_000)] = 1_000) -> dict[str, Any]:
        return {"points": audit.recorded_pool_nav(cur, limit=limit, as_of_us=_time(as_of, "as_of"))}

    @app.get("/pool/book", summary="Pool cash, tokens and shares outstanding over time (from postings)")
    def get_pool_book(cur: Cur, _who: Auditor, as_of: TimeParam = None,
                      limit: Annotated[int, Query(ge=1, le=100_000)] = 1_000) -> dict[str, Any]:
        points = audit.pool_history(cur, as_of_us=_time(as_of, "as_of"), limit=limit)
        return {"points": [p.__dict__ for p in points]}

    @app.get("/export/{table}", summary="Download a table or view as Parquet", response_class=FileResponse,
             responses={200: {"content": {PARQUET_MEDIA_TYPE: {}}}, 404: {"description": "unknown table"},
                        413: {"description": "more rows than api_export_max_rows"},
                        429: {"description": "rate limit (api_heavy_requests_per_minute) or one already running"}})
    def get_export(cur: Cur, who: Auditor, table: str) -> FileResponse:
        if table not in QUERYABLE or table not in audit.relations(cur):
            raise HTTPException(404, f"unknown table {table!r}; one of: {', '.join(t for t in QUERYABLE)}")
        heavy(who)
        try:
            rows = cur.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            if rows > settings.api_export_max_rows:
                raise HTTPException(413, f"{table} has {rows:,} rows, above the bound of {settings.api_export_max_rows:,}; "
                                         "query it with `stockledger audit export` on a snapshot instead")
            fd, path = tempfile.mkstemp(prefix=f"stockledger-{table}-", suffix=".parquet")
            os.close(fd)
            try:
                audit.export_parquet(cur, table, path)
            except BaseException:
                os.unlink(path)
                raise
        finally:
            heavy_running.release()
        return FileResponse(path, media_type=PARQUET_MEDIA_TYPE, filename=f"{table}.parquet",
                            background=BackgroundTask(os.unlink, path))

    @app.get("/snapshot", summary="Download a consistent copy of the whole DuckDB file (for other readers)",
             response_class=FileResponse, responses={200: {"content": {"application/octet-stream": {}}},
                                                     413: {"description": "database above api_snapshot_max_bytes"},
                                                     429: {"description": "rate limit or one already running"}})
    def get_snapshot(cur: Cur, who: Auditor) -> FileResponse:
        heavy(who)
        try:
            size = sum(p.stat().st_size for p in (Path(str(db)), Path(f"{db}.wal")) if p.exists()) if db is not None else 0
            if size > settings.api_snapshot_max_bytes:
                raise HTTPException(413, f"the database is {size:,} bytes, above the bound of "
                                         f"{settings.api_snapshot_max_bytes:,}; export tables instead")
            workdir = tempfile.mkdtemp(prefix="stockledger-snapshot-")
            path = Path(workdir) / "snapshot.duckdb"
            try:
                audit.snapshot(cur, path)
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
        finally:
            heavy_running.release()
        return FileResponse(path, media_type="application/octet-stream", filename="stockledger-snapshot.duckdb",
                            background=BackgroundTask(shutil.rmtree, workdir, True))

    return app
