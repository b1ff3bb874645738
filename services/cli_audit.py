"""`stockledger audit ...` and `stockledger serve`: audit queries, the projector, and the HTTP API.

The lead registers them in services/cli.py:

    from services.cli_audit import audit_app, serve
    app.add_typer(audit_app, name="audit")
    app.command("serve")(serve)

Standalone: ``python -m services.cli_audit audit balance ...`` and ``python -m services.cli_audit serve ...``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.projector_limits import MAX_BATCH_RECORDS
from services.settings import get_settings

if TYPE_CHECKING:  # DuckDB and the audit queries are imported by the commands that use them: `stockledger worker`
    import duckdb  # and the other commands start without them (~0.45 s of imports on a 2-core machine)

audit_app = typer.Typer(help="Audit queries over the projected DuckDB file, and the Kafka -> DuckDB projector.",
                        no_args_is_help=True, add_completion=False)
console = Console()
log = logging.getLogger("stockledger.serve")

DbOpt = Annotated[Path | None, typer.Option("--db", help="DuckDB file (default: settings duckdb_path)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
TopicsOpt = Annotated[str | None, typer.Option(help="comma-separated topics (default: the five output topics)")]
PrefixOpt = Annotated[str | None, typer.Option(help="prefix added to every topic name")]
BootstrapOpt = Annotated[str | None, typer.Option(help="host:port of the broker (default from settings)")]
GroupOpt = Annotated[str | None, typer.Option(help="consumer group (default <app_id>-projector); one per DuckDB file")]


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/] {message}", soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


def _db(db: Path | None) -> Path:
    return db if db is not None else get_settings().duckdb_path


def _open_read_only(db: Path | None, sandboxed: bool = False) -> duckdb.DuckDBPyConnection:
    import duckdb

    from services import audit
    path = _db(db)
    if not path.exists():
        _fail(f"DuckDB file {path} does not exist; project into it with `stockledger audit project --db {path}`")
    try:
        return audit.connect_sandboxed(path) if sandboxed else duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        _fail(f"cannot open {path} read-only: {exc}. A projector or `stockledger serve` holds it: "
              "query its HTTP API, or read a Parquet export or a snapshot copy (docs/AUDIT_API.md).")
    raise AssertionError("unreachable")


def _time(value: str | None, name: str) -> int | None:
    from services import audit
    try:
        return audit.parse_time_us(value)
    except audit.AuditError as exc:
        _fail(f"{name}: {exc}")
    return None


def _table(title: str, columns: list[str], right: tuple[str, ...] = ()) -> Table:
    """A table whose cells fold instead of being cut: an amount is never shown truncated."""
    t = Table(title=title)
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left", overflow="fold")
    return t


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


@audit_app.command("balance")
def balance_cmd(
    account: Annotated[str, typer.Argument(help="account, e.g. user:acct-0001:margin:AAPL")],
    asset: Annotated[str, typer.Argument(help="asset, e.g. AAPL, USD, SH:AAPL, LP:main")],
    as_of: Annotated[str | None, typer.Option("--as-of", help="effective time: us since the epoch or ISO-8601")] = None,
    recorded_as_of: Annotated[str | None, typer.Option("--recorded-as-of", help="recorded time: us or ISO-8601")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Balance of an account in an asset (credits - debits) as of an effective and/or recorded time."""
    from services import audit
    as_of_us, recorded_us = _time(as_of, "--as-of"), _time(recorded_as_of, "--recorded-as-of")
    con = _open_read_only(db)
    if not audit.account_known(con, account, asset):
        _fail(f"no postings for account {account!r} in asset {asset!r}")
    b = audit.balance(con, account, asset, as_of_us, recorded_us)
    if as_json:
        _print_json(b.as_dict())
        return
    console.print(f"{b.account} {b.asset}: [bold]{b.balance_minor:,}[/] minor units over {b.legs} legs"
                  f" (as of {audit.iso(as_of_us) or 'now'}, recorded by {audit.iso(recorded_us) or 'now'};"
                  f" last event {b.last_event_id})")


@audit_app.command("history")
def history_cmd(
    account: Annotated[str, typer.Argument()],
    asset: Annotated[str, typer.Argument()],
    as_of: Annotated[str | None, typer.Option("--as-of")] = None,
    recorded_as_of: Annotated[str | None, typer.Option("--recorded-as-of")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many legs")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every leg of the account with the running balance and its lineage (event, topic, partition, offset)."""
    from services import audit
    as_of_us, recorded_us = _time(as_of, "--as-of"), _time(recorded_as_of, "--recorded-as-of")
    con = _open_read_only(db)
    if not audit.account_known(con, account, asset):
        _fail(f"no postings for account {account!r} in asset {asset!r}")
    rows = audit.history(con, account, asset, as_of_us, recorded_us, limit=limit)
    if as_json:
        _print_json([r.__dict__ for r in rows])
        return
    t = _table(f"History of {account} in {asset}", ["occurred_at", "event_id", "cause_kind", "leg", "counterparty", "amount",
                                                    "balance", "topic:partition@offset"], right=("amount", "balance", "leg"))
    for r in rows:
        t.add_row(audit.iso(r.occurred_at_us), r.event_id, r.cause_kind or "", str(r.leg), r.counterparty,
                  f"{r.amount_minor:+,}", f"{r.balance_minor:,}", f"{r.topic}:{r.partition}@{r.offset}")
    console.print(t)


@audit_app.command("trial-balance")
def trial_balance_cmd(
    as_of: Annotated[str | None, typer.Option("--as-of")] = None,
    recorded_as_of: Annotated[str | None, typer.Option("--recorded-as-of")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per asset: total debits = total credits; clearing accounts (custodian:<sym>:in_transit) at zero. Exit 1 if not."""
    from services import audit
    as_of_us, recorded_us = _time(as_of, "--as-of"), _time(recorded_as_of, "--recorded-as-of")
    tb = audit.trial_balance(_open_read_only(db), as_of_us, recorded_us)
    if as_json:
        _print_json(tb.as_dict())
    else:
        cols = ["asset", "postings", "debits", "credits", "debit balances", "credit balances", "accounts", "ok"]
        t = _table("Trial balance", cols, right=tuple(cols[1:]))
        for a in tb.assets:
            t.add_row(a.asset, f"{a.postings:,}", f"{a.total_debits_minor:,}", f"{a.total_credits_minor:,}",
                      f"{a.debit_balances_minor:,}", f"{a.credit_balances_minor:,}", str(a.accounts),
                      "yes" if a.balanced else "[red]NO[/]")
        console.print(t)
        c = _table("Clearing accounts (must return to zero)", ["account", "asset", "balance", "at zero"], right=("balance",))
        for row in tb.clearing:
            c.add_row(row.account, row.asset, f"{row.balance_minor:,}", "yes" if row.at_zero else "[red]NO[/]")
        console.print(c)
        console.print("trial balance " + ("[green]OK[/]" if tb.ok else "[red]NOT OK[/]"))
    if not tb.ok:
        raise typer.Exit(1)


@audit_app.command("liquidation")
def liquidation_cmd(
    account: Annotated[str, typer.Argument(help="account id as in the liquidation events, e.g. acct-0001")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Explain each liquidation of an account from its recorded inputs: health recomputed, amounts, waterfall."""
    from services import audit
    explained = audit.explain_liquidations(_open_read_only(db), account)
    if not explained:
        _fail(f"no liquidation recorded for account {account!r}")
    if as_json:
        _print_json([e.as_dict() for e in explained])
        return
    for e in explained:
        console.rule(f"liquidation {e.trigger_event_id}")
        if e.trigger is not None:
            tr = e.trigger
            console.print(f"at {audit.iso(tr['lineage']['occurred_at_us'])} caused by {tr['cause_event_id']}"
                          f" ({tr['lineage']['topic']}:{tr['lineage']['partition']}@{tr['lineage']['offset']})")
            console.print(f"equity {tr['equity_micro_usd']:,} < maintenance margin {tr['maintenance_margin_micro_usd']:,}"
                          f" micro-USD: health {e.health_ppm:,} ppm" if e.health_ppm is not None else
                          f"equity {tr['equity_micro_usd']:,}, no maintenance margin")
            metrics = sorted({m for v in e.instruments.values() for m in v})
            t = _table("Recorded inputs per instrument", ["instrument", *metrics], right=tuple(metrics))
            for name, v in e.instruments.items():
                t.add_row(name, *[f"{v[m]:,}" if m in v else "" for m in metrics])
            console.print(t)
            console.print("figures: " + ", ".join(f"{k}={v:,}" for k, v in e.figures.items()))
        else:
            console.print("[yellow]the LiquidationTriggered event is not in the projection[/]")
        if e.executed is not None:
            x = e.executed
            seized = ", ".join(f"{s['qty_nano']:,} nano {s['symbol']}" for s in x["seized"])
            console.print(f"executed: debt {x['debt_micro_usd']:,}, penalty {x['penalty_micro_usd']:,}, bonus {x['bonus_micro_usd']:,},"
                          f" shortfall {x['shortfall_micro_usd']:,} micro-USD; closed {len(x['closed_positions'])} positions,"
                          f" seized {seized or 'nothing'}")
        for step in e.waterfall:
            console.print(f"waterfall {step['step']}: {step['amount_micro_usd']:,} micro-USD")
        for name, ok in e.checks.items():
            console.print(f"check {name}: " + ("[green]yes[/]" if ok else "[red]NO[/]"))


@audit_app.command("pool")
def pool_cmd(
    price: Annotated[list[str] | None, typer.Option("--price", help="SYMBOL=PRICE_MICRO_USD[@MULTIPLIER_NANO], to value tokens")] = None,
    limit: Annotated[int, typer.Option(min=1, help="last N points")] = 20,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pool NAV and LP share value over time (recorded by the core), and the pool's book from postings."""
    from services import audit
    prices: dict[str, tuple[int, int]] = {}
    for item in price or []:
        try:
            symbol, _, rest = item.partition("=")
            value, _, mult = rest.partition("@")
            prices[symbol] = (int(value), int(mult) if mult else 1_000_000_000)
        except ValueError:
            _fail(f"--price {item!r}: expected SYMBOL=PRICE_MICRO_USD[@MULTIPLIER_NANO] in integers")
    con = _open_read_only(db)
    nav = audit.recorded_pool_nav(con, limit=limit)
    book = audit.pool_history(con, prices=prices, limit=limit)
    if as_json:
        _print_json({"nav": nav, "book": [p.__dict__ for p in book]})
        return
    t = _table("Pool NAV and share value (recorded by the core)",
               ["occurred_at", "event_id", "nav micro-USD", "shares nano", "share value micro-USD"])
    for p in nav:
        t.add_row(audit.iso(p["occurred_at_us"]), p["event_id"], f"{p['nav_micro_usd']:,}", f"{p['shares_outstanding_nano']:,}",
                  f"{p['share_value_micro_usd']:,}" if p["share_value_micro_usd"] is not None else "-")
    console.print(t)
    b = _table("Pool book from postings (cash, tokens, shares; valued at --price)",
               ["occurred_at", "event_id", "cash micro-USD", "tokens nano", "shares nano", "book value", "share value"])
    for p in book:
        b.add_row(audit.iso(p.occurred_at_us), p.event_id, f"{p.cash_micro_usd:,}",
                  ", ".join(f"{s} {q:,}" for s, q in p.tokens_nano.items()), f"{p.shares_outstanding_nano:,}",
                  f"{p.book_value_micro_usd:,}" if p.book_value_micro_usd is not None else "-",
                  f"{p.share_value_micro_usd:,}" if p.share_value_micro_usd is not None else "-")
    console.print(b)


@audit_app.command("export")
def export_cmd(
    table_or_sql: Annotated[str, typer.Argument(help="a table or view name, or a SELECT query")],
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write")],
    db: DbOpt = None,
) -> None:
    """Export a table, view or query to Parquet (amounts stay exact: HUGEINT becomes DECIMAL(38,0)).

    The query runs read-only with DuckDB's external access disabled: it reads the ledger's tables, never a
    local file, a URL or another database.
    """
    from services import audit
    con = _open_read_only(db, sandboxed=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        n = audit.export_parquet(con, table_or_sql, out)
    except audit.AuditError as exc:
        _fail(str(exc))
    console.print(f"wrote {n:,} rows to {out}")


@audit_app.command("project")
def project_cmd(
    db: DbOpt = None,
    until_caught_up: Annotated[bool, typer.Option("--until-caught-up", help="exit once every partition is projected")] = False,
    topics: TopicsOpt = None,
    topic_prefix: PrefixOpt = None,
    bootstrap: BootstrapOpt = None,
    group: GroupOpt = None,
    max_batch: Annotated[int, typer.Option(help="records per DuckDB transaction at most")] = MAX_BATCH_RECORDS,
    max_batch_ms: Annotated[int, typer.Option(help="longest wait to fill a batch")] = 500,
    timeout: Annotated[float, typer.Option(help="with --until-caught-up: give up after this many seconds")] = 600.0,
) -> None:
    """Run the exactly-once projector (Kafka output topics -> DuckDB); Ctrl-C stops it after the current batch."""
    from services.projector import main as projector_main

    args = ["--db", str(_db(db)), "--max-batch", str(max_batch), "--max-batch-ms", str(max_batch_ms), "--timeout", str(timeout)]
    for flag, value in (("--topics", topics), ("--topic-prefix", topic_prefix), ("--bootstrap", bootstrap), ("--group", group)):
        if value:
            args += [flag, value]
    if until_caught_up:
        args.append("--until-caught-up")
    raise typer.Exit(projector_main(args))


# ----------------------------------------------------------------------------------------------- serve


BROKER_GRACE_S = 15.0  # how long /health tolerates no broker connection before it says unhealthy


class ProjectorThread:
    """Runs the projector next to the API; restarts it after an error (Kafka away), the API keeps serving."""

    def __init__(self, con: duckdb.DuckDBPyConnection, **kwargs: Any):
        self.con, self.kwargs = con, kwargs
        self.stop = threading.Event()
        self.projector: Any = None
        self.error: str | None = None
        self.restarts = 0
        self._down_since: float | None = None
        self.thread = threading.Thread(target=self._run, name="projector", daemon=True)

    def _run(self) -> None:
        from services.projector import Projector

        while not self.stop.is_set():
            try:
                self.projector = Projector(self.con, **self.kwargs)
                self.error = None
                self.projector.run(self.stop)
            except Exception as exc:  # noqa: BLE001 - logged, reported by /health, retried
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("projector failed; retrying in 5 s")
                self.restarts += 1
                self.stop.wait(5.0)

    def snapshot(self) -> dict[str, Any]:
        base = self.projector.snapshot() if self.projector is not None else {"broker_connected": False}
        running = self.thread.is_alive() and self.error is None
        if running and not base.get("broker_connected"):
            self._down_since = self._down_since or time.monotonic()
        else:
            self._down_since = None
        # Healthy = the thread runs, its last attempt raised nothing, and it reached a broker within the grace period.
        healthy = running and (self._down_since is None or time.monotonic() - self._down_since < BROKER_GRACE_S)
        return base | {"running": running, "healthy": healthy, "error": self.error, "restarts": self.restarts}

    def start(self) -> None:
        self.thread.start()

    def close(self, timeout_s: float = 30.0) -> None:
        self.stop.set()
        self.thread.join(timeout_s)


def serve(
    db: DbOpt = None,
    host: Annotated[str | None, typer.Option(help="interface to listen on (default settings api_host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default settings api_port)")] = None,
    project: Annotated[bool, typer.Option("--project/--no-project", help="run the projector in this process")] = True,
    topics: TopicsOpt = None,
    topic_prefix: PrefixOpt = None,
    bootstrap: BootstrapOpt = None,
    group: GroupOpt = None,
    max_batch: Annotated[int, typer.Option(help="records per DuckDB transaction at most")] = MAX_BATCH_RECORDS,
    max_batch_ms: Annotated[int, typer.Option(help="longest wait to fill a batch")] = 500,
    tokens_file: Annotated[Path | None, typer.Option("--tokens-file", help="API tokens (default settings api_tokens_file); "
                                                     "make them with `stockledger token create`")] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="serve HTTPS with this certificate (PEM)")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="the certificate's private key (PEM)")] = None,
    allow_plain_http: Annotated[bool, typer.Option("--allow-plain-http", help="listen on a non-loopback address "
                                                   "without TLS (bearer tokens then cross the network in clear)")] = False,
    por_dir: Annotated[Path | None, typer.Option("--por-dir", help="proofs of reserves to serve at /por/proof "
                                                 "(`por prove --root ROOT --all --out DIR`, plus por-root.json)")] = None,
) -> None:
    """Projector and read-only HTTP API in ONE process over one DuckDB file (DuckDB allows one writer).

    Every request needs a bearer token (docs/SECURITY.md). A non-loopback --host needs --tls-cert and
    --tls-key, or --allow-plain-http (behind a TLS-terminating proxy, or in a private container network).
    """
    import duckdb
    import uvicorn

    from services.api import create_app
    from services.auth import TokenError, TokenStore
    from services.projection_schema import ensure_schema
    from services.projector import resolve_topics

    settings = get_settings()
    bind = host or settings.api_host
    if (tls_cert is None) != (tls_key is None):
        _fail("--tls-cert and --tls-key go together")
    if not _is_loopback(bind) and tls_cert is None and not allow_plain_http:
        _fail(f"refusing to serve plain HTTP on {bind}, a non-loopback address: bearer tokens would cross the network "
              "in clear. Give --tls-cert and --tls-key, or --allow-plain-http if a TLS proxy fronts this server.")
    tokens = TokenStore(tokens_file or settings.api_tokens_file)
    try:
        known = tokens.records()
    except (TokenError, ValueError) as exc:
        _fail(f"token file {tokens.path}: {exc}")
    if not known:
        log.warning("no API token in %s: every request gets 401 until `stockledger token create` makes one", tokens.path)
    path = _db(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stdout)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        con = duckdb.connect(str(path))
    except duckdb.IOException as exc:
        _fail(f"cannot open {path} for writing: {exc}. Another projector or server holds it.")
    ensure_schema(con)
    runner = None
    if project:
        runner = ProjectorThread(con, topics=resolve_topics(topics, topic_prefix), bootstrap=bootstrap, group_id=group,
                                 max_batch_records=max_batch, max_batch_ms=max_batch_ms)
        runner.start()
    started = time.monotonic()
    closed = threading.Event()

    def shutdown() -> None:  # the app's lifespan end: after the last request, before uvicorn re-raises the signal
        if closed.is_set():
            return
        closed.set()
        if runner is not None:
            runner.close()  # commits the batch in hand, then stops
        con.close()
        log.info("projector stopped, DuckDB closed after %.0f s", time.monotonic() - started)

    app = create_app(path, tokens=tokens, connection=con, projector=runner, on_shutdown=shutdown, por_dir=por_dir)
    server = uvicorn.Server(uvicorn.Config(app, host=bind, port=port or settings.api_port, log_level="info",
                                           ssl_certfile=str(tls_cert) if tls_cert else None,
                                           ssl_keyfile=str(tls_key) if tls_key else None))
    try:
        server.run()  # SIGINT / SIGTERM: graceful shutdown (uvicorn then re-raises the signal)
    finally:
        shutdown()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def _standalone() -> typer.Typer:
    main_app = typer.Typer(add_completion=False, no_args_is_help=True)
    main_app.add_typer(audit_app, name="audit")
    main_app.command("serve")(serve)
    return main_app


if __name__ == "__main__":  # pragma: no cover
    _standalone()()
