"""The `stockledger` command line: topics, scenario, replay, produce, demo."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.cli_audit import audit_app, serve
from services.cli_log import log_app
from services.cli_por import por_app
from services.cli_recon import recon_app
from services.cli_report import report
from services.cli_security import acls_app, token_app
from services.cli_snapshot import snapshot_app
from services.settings import get_settings

app = typer.Typer(help="stockledger: the system of record for tokenized-stock collateral.", no_args_is_help=True,
                  add_completion=False)
topics_app = typer.Typer(help="Kafka topics as declared in schemas/topics.py.", no_args_is_help=True)
scenario_app = typer.Typer(help="Reproducible generated markets.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(scenario_app, name="scenario")
app.add_typer(por_app, name="por")
app.add_typer(recon_app, name="recon")
app.add_typer(audit_app, name="audit")
app.add_typer(log_app, name="log")
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(acls_app, name="acls")
app.add_typer(token_app, name="token")
app.command("serve")(serve)
app.command("report")(report)
console = Console()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of an error (errors are one line otherwise)")] = False,
) -> None:
    """stockledger: the system of record for tokenized-stock collateral."""


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(), console=console, transient=False)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/] {message}", soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


@topics_app.command("create")
def topics_create(
    bootstrap: Annotated[str | None, typer.Option(help="host:port of the broker (default from settings)")] = None,
    registry_url: Annotated[str | None, typer.Option(
        help="schema registry (Confluent API) to register the schemas in (default STOCKLEDGER_REGISTRY_URL; none: skip)")] = None,
) -> None:
    """Create every declared topic that is missing and report drift of existing ones; register every schema version
    under its subject (record name) with BACKWARD_TRANSITIVE and report drift from the .avsc files (exit 1 on drift)."""
    from services.topics_admin import ensure_topics

    try:
        report = ensure_topics(bootstrap or get_settings().bootstrap_servers)
    except Exception as exc:  # noqa: BLE001 - the user needs the cause, not a traceback
        _fail(f"cannot reach Kafka at {bootstrap or get_settings().bootstrap_servers}: {exc}. Start it with `make kafka-up`.")
    console.print(report.summary())
    registry_ok = _register_schemas(registry_url if registry_url is not None else get_settings().registry_url)
    if not report.ok or not registry_ok:
        raise typer.Exit(1)


def _register_schemas(url: str) -> bool:
    """Register the catalog in the schema registry at url and print the report; True without drift (or without url)."""
    from schemas.registry import RegistryError, register_catalog

    if not url:
        console.print("schema registry: none configured (STOCKLEDGER_REGISTRY_URL); records carry the catalog's ids")
        return True
    try:
        reg = register_catalog(url)
    except RegistryError as exc:
        _fail(f"schema registry: {exc}. Start it with `make kafka-up`.")
    console.print(reg.summary())
    return reg.ok


@topics_app.command("list")
def topics_list() -> None:
    """Show the declared topics: key, partitions, configs."""
    from schemas.topics import TOPICS

    t = Table(title="Declared topics")
    for col in ("topic", "key", "partitions", "configs", "carries"):
        t.add_column(col)
    for spec in TOPICS:
        t.add_row(spec.name, spec.key, str(spec.partitions), ", ".join(f"{k}={v}" for k, v in spec.configs.items()), spec.description)
    console.print(t)


@scenario_app.command("generate")
def scenario_generate(
    out: Annotated[Path, typer.Option(help="archive file to write (Avro object container)")],
    accounts: Annotated[int, typer.Option(min=10, help="number of accounts")] = 2_000,
    events: Annotated[int, typer.Option(min=100, help="market events after the set-up phase")] = 100_000,
    seed: Annotated[int, typer.Option(help="same seed, same bytes")] = 7,
) -> None:
    """Generate a reproducible market scenario: custody, mints, prices, a crash, a weekend, a split, trades, bad input."""
    from services.archive import write_archive
    from services.scenario import ScenarioConfig, generate

    cfg = ScenarioConfig(accounts=accounts, events=events, seed=seed)
    start = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task("generating", total=None, rate="")
        def rows():
            for i, row in enumerate(generate(cfg), 1):
                if i % 20_000 == 0:
                    progress.update(task, completed=i, rate="")
                yield row
        n = write_archive(out, rows(), seed_label=f"{accounts}:{events}:{seed}")
        progress.update(task, completed=n, total=n)
    console.print(f"wrote {n:,} records to {out} ({out.stat().st_size:,} bytes) in {time.perf_counter() - start:.1f} s")


@app.command()
def replay(
    archive: Annotated[Path, typer.Argument(help="event archive (Avro object container file) in log order")],
    duckdb_path: Annotated[Path | None, typer.Option("--duckdb", help="also write events, postings and emitted events here")] = None,
    quiet: Annotated[bool, typer.Option(help="print only the state hash")] = False,
    reference: Annotated[bool, typer.Option("--reference", help="re-value every account after every event (slow): "
                                            "the surveillance reference; must print the same hash")] = False,
    from_snapshot: Annotated[Path | None, typer.Option("--from-snapshot", help="start from this snapshot (`stockledger "
                                                       "snapshot export`): its entries are checked against the archive's "
                                                       "first ones by Merkle root, then skipped")] = None,
) -> None:
    """Fold an archive with the ledger core, no Kafka needed, and print what happened and the state hash."""
    from services.archive import read_archive
    from services.replay import replay as run_replay
    from services.summary import print_summary

    if not archive.exists():
        _fail(f"archive {archive} does not exist; make one with `stockledger scenario generate --out {archive}`")
    restored = None
    rows = read_archive(archive, with_source=True)
    if from_snapshot is not None:
        from services.cli_snapshot import load_file

        restored, manifest = load_file(from_snapshot)
        rows = _after_snapshot(rows, manifest, archive)
    sink = None
    if duckdb_path is not None:
        from services.atomic import TargetBusy
        from services.duckdb_sink import DuckDBSink

        try:
            sink = DuckDBSink(duckdb_path)  # writes beside the target; replaces it only when the replay succeeded
        except TargetBusy as busy:
            _fail(str(busy))
    start = time.perf_counter()
    try:
        if quiet:
            result = run_replay(rows, sink=sink, reference=reference, ledger=restored)
        else:
            with _progress() as progress:
                task = progress.add_task("replaying", total=None, rate="")

                def tick(n: int) -> None:
                    elapsed = time.perf_counter() - start
                    progress.update(task, completed=n, rate=f"{n / elapsed:,.0f} ev/s" if elapsed else "")

                result = run_replay(rows, sink=sink, progress=tick, reference=reference, ledger=restored)
    except BaseException as exc:
        if sink is not None:
            sink.abort()  # the target keeps its old content
        if isinstance(exc, OSError | ValueError | EOFError):
            from services.errors import InputError, one_line

            raise InputError(f"cannot read {archive}: {one_line(exc)}") from exc
        raise
    elapsed = time.perf_counter() - start
    if sink is not None:
        sink.close(result.meta(str(archive)))
    if quiet:
        print(result.hash())
        return
    print_summary(console, result)
    console.print(f"{result.total_in:,} records in {elapsed:.1f} s ({result.total_in / max(elapsed, 1e-9):,.0f} events/s)")
    console.print(f"Merkle log: {result.state.log.size:,} entries, root {result.state.log.root().hex()}")
    if duckdb_path is not None:
        console.print(f"DuckDB written: {duckdb_path} (tables events, postings, emitted, ledger_meta; view balances)")


def _after_snapshot(rows, manifest: dict, archive: Path):
    """The archive's rows after the snapshot's entries, once their Merkle root matches the snapshot's log."""
    from ledger.log_entry import entry_leaf_hash
    from ledger.merkle_log import Frontier

    frontier, size = Frontier(), manifest["log_size"]
    it = iter(rows)
    for row in it:
        frontier.append(entry_leaf_hash(row[0], row[1], row[2]))
        if frontier.size == size:
            break
    if frontier.size != size or frontier.root().hex() != manifest["log_root"]:
        _fail(f"the first {size:,} entries of {archive} are not the history of the snapshot (Merkle root "
              f"{frontier.root().hex()[:16]}..., the snapshot's {manifest['log_root'][:16]}...)", 1)
    return it


@app.command()
def produce(
    archive: Annotated[Path, typer.Argument(help="event archive to publish in log order")],
    bootstrap: Annotated[str | None, typer.Option(help="host:port of the broker")] = None,
) -> None:
    """Publish an archive's records to their topics, keyed, in order; prints counts per topic."""
    from services.archive import read_archive

    if not archive.exists():
        _fail(f"archive {archive} does not exist")
    bootstrap = bootstrap or get_settings().bootstrap_servers
    counts = _produce_with_progress(bootstrap, read_archive(archive))
    _print_counts("Produced", counts)


def _produce_with_progress(bootstrap: str, rows) -> dict[str, int]:
    from services.producer import produce_rows

    start = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task("producing", total=None, rate="")

        def tick(n: int) -> None:
            elapsed = time.perf_counter() - start
            progress.update(task, completed=n, rate=f"{n / elapsed:,.0f} rec/s" if elapsed else "")

        try:
            return produce_rows(bootstrap, rows, progress=tick)
        except Exception as exc:  # noqa: BLE001
            _fail(f"producing to {bootstrap} failed: {exc}. Is Kafka up (`make kafka-up`)?")
    return {}


def _print_counts(title: str, counts: dict[str, int]) -> None:
    t = Table(title=f"{title} records per topic")
    t.add_column("topic")
    t.add_column("records", justify="right")
    for topic, n in sorted(counts.items()):
        t.add_row(topic, f"{n:,}")
    t.add_row("[bold]total[/]", f"[bold]{sum(counts.values()):,}[/]")
    console.print(t)


@app.command()
def demo(
    accounts: Annotated[int, typer.Option(min=10, help="accounts in the generated scenario")] = 2_000,
    events: Annotated[int, typer.Option(min=100, help="market events in the generated scenario")] = 100_000,
    seed: Annotated[int, typer.Option(help="scenario seed")] = 7,
    embedded: Annotated[bool, typer.Option(help="no Kafka, no Java: fold the scenario with the offline replay")] = False,
    out_dir: Annotated[Path, typer.Option(help="where the archive, DuckDB file, PoR root and proofs go")] = Path("var/demo"),
    keep_running: Annotated[bool, typer.Option(help="leave the worker and the API up after the report (Ctrl-C stops)")] = False,
    reset_topics: Annotated[bool, typer.Option(help="empty the local broker's stockledger topics first (demo only)")] = True,
    api_port: Annotated[int | None, typer.Option(help="port of the HTTP API (default from settings)")] = None,
    report_json: Annotated[Path | None, typer.Option(help="also write the report's figures as JSON here")] = None,
    verify_fold: Annotated[bool, typer.Option(help="on Kafka: also fold the whole log again and compare state hashes "
                                                   "(the report reads the worker's verified snapshot either way)")] = False,
) -> None:
    """The main job: generate a market, run it through Kafka, the stream worker and the projector, then report."""
    import json

    from services.archive import write_archive
    from services.scenario import ScenarioConfig, generate

    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"scenario-{accounts}-{events}-{seed}.avro"
    # On Kafka the codec takes its ids from the registry (when configured): the catalog goes in before anything
    # is encoded, the scenario included (a fresh registry holds nothing).
    if not embedded and not _register_schemas(get_settings().registry_url):
        _fail("the schema registry disagrees with the catalog (drift above; a local registry that drifted: "
              "`bash scripts/registry.sh reset`)", 1)
    console.rule("1. generate the scenario")
    if not archive.exists():
        n = write_archive(archive, generate(ScenarioConfig(accounts=accounts, events=events, seed=seed)), f"{accounts}:{events}:{seed}")
        console.print(f"{n:,} records -> {archive}")
    else:
        console.print(f"reusing {archive}")
    if embedded:
        figures = _demo_embedded(archive, out_dir)
    else:
        figures = _demo_on_kafka(archive, out_dir, keep_running, reset_topics, api_port, verify_fold)
    if report_json is not None:
        report_json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


def _demo_embedded(archive: Path, out_dir: Path) -> dict:
    from services.archive import read_archive
    from services.cli_por import archive_as_of
    from services.demo_report import Counts, print_report
    from services.duckdb_sink import DuckDBSink
    from services.replay import replay as run_replay

    console.rule("2. fold the archive with the ledger core (embedded: no Kafka)")
    db = out_dir / "ledger-embedded.duckdb"
    sink = DuckDBSink(db)
    start = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task("replaying", total=None, rate="")

        def tick(n: int) -> None:
            progress.update(task, completed=n, rate=f"{n / max(time.perf_counter() - start, 1e-9):,.0f} ev/s")

        result = run_replay(read_archive(archive, with_source=True), sink=sink, progress=tick)
    sink.close(result.meta(str(archive)))
    counts = Counts(result.applied, result.duplicates, result.rejected, result.rejected_by_reason)
    return print_report(console, result.state, counts, out_dir, api_url=None, db_path=db, archive=archive,
                        as_of_us=archive_as_of(archive))


def _demo_on_kafka(archive: Path, out_dir: Path, keep_running: bool, reset: bool, api_port: int | None,
                   verify_fold: bool) -> dict:
    from services import demo as kafka_demo
    from services.archive import read_archive, write_archive
    from services.atomic import write_text_atomic
    from services.cli_por import archive_as_of
    from services.demo_report import Counts, print_report
    from services.log_keys import verifier_path
    from services.topics_admin import ensure_topics
    from services.topics_admin import reset_topics as reset_all

    settings = get_settings()
    bootstrap = settings.bootstrap_servers
    port = api_port or settings.api_port
    app_id = kafka_demo.new_app_id()
    console.rule("2. topics, stream worker, projector + API")
    try:
        report = reset_all(bootstrap) if reset else ensure_topics(bootstrap)
    except Exception as exc:  # noqa: BLE001
        _fail(f"cannot reach Kafka at {bootstrap}: {exc}. `make demo` starts it; or run `stockledger demo --embedded`.")
    console.print(("topics emptied and recreated: " if reset else "") + report.summary().replace("\n", "; "))
    db = out_dir / "ledger-kafka.duckdb"
    for stale in (db, Path(f"{db}.wal")):
        stale.unlink(missing_ok=True)  # its stored offsets belong to the topics just emptied
    procs = kafka_demo.DemoProcesses(app_id, db, port, out_dir)
    procs.make_auditor_token()
    procs.start()
    try:
        console.print(f"worker and projector started (app id {app_id}); logs in {out_dir}/worker.log, {out_dir}/serve.log")
        console.print(f"the Faust worker's web views: http://{settings.worker_web_host}:{procs.web_port}/ledger/status/ "
                      f"(also /ledger/accounts/<account>/, /ledger/pools/main/)")
        console.rule("3. publish the scenario")
        produced = _produce_with_progress(bootstrap, read_archive(archive))
        _print_counts("Published", produced)
        console.rule("4. wait until every consumer has caught up")
        kafka_demo.wait_caught_up(console, bootstrap, app_id, f"{app_id}-projector", sum(produced.values()), procs)
        until = __import__("services.stream_status", fromlist=["x"]).committed_fold_offset(bootstrap, app_id)
        cp = kafka_demo.final_checkpoint(bootstrap, app_id, until)
        # The worker's state from its own snapshot at the end of the log: loading checks its bytes, its Merkle
        # root and its state hash, which must also equal the one the worker checkpointed. Both come from the
        # worker's memory: that the fold of the log gives this state is what --verify-fold checks.
        try:
            state, loaded = kafka_demo.final_snapshot_state(bootstrap, app_id, until)  # the hash verified on load
        except Exception as exc:  # noqa: BLE001 - a bad or missing snapshot is a one-line failure
            _fail(f"cannot read the worker's final state: {exc}", 1)
        if loaded != cp["state_hash"]:
            _fail(f"the worker's checkpointed state hash {cp['state_hash']} differs from its snapshot's {loaded}", 1)
        console.print(f"the worker's snapshot at the end of ledger.sequenced ({until:,} records) verifies against its "
                      f"checkpoint: state hash {loaded[:16]}..."
                      + ("" if verify_fold else " (`--verify-fold` also folds the log again to check the worker)"))
        if verify_fold:
            rebuilt = kafka_demo.state_hash(kafka_demo.rebuild_state(bootstrap, until))
            if rebuilt != loaded:
                _fail(f"the worker's state hash {loaded} differs from a fresh fold of the log {rebuilt}", 1)
            console.print(f"the worker's state hash equals a fresh fold of ledger.sequenced: {rebuilt[:16]}...")
        counts = Counts(cp["applied"], cp["duplicates"], cp["rejected"], cp["rejected_by_reason"])
        # The log as the worker folded it, as an archive: `por prove --root` re-proves the root from it.
        from services.stream_status import read_sequenced

        log_archive = out_dir / "ledger-log.avro"
        write_archive(log_archive, read_sequenced(bootstrap, until), seed_label=f"export:{until}")
        head = kafka_demo.tree_head_at(bootstrap, state.log.size)
        checkpoint, verifier = out_dir / "log-checkpoint.txt", out_dir / "log-verifier.pub"
        write_text_atomic(checkpoint, head["note"])
        write_text_atomic(verifier, verifier_path(kafka_demo.log_key_file()).read_text())
        console.print(f"the worker signed the log at {state.log.size:,} entries: root {head['root_hash'][:16]}... "
                      f"(equals the fold's: {head['root_hash'] == state.log.root().hex()})")
        if not keep_running:
            procs.terminate()  # the report needs neither: they shut down (a few s) while it prints
        figures = print_report(console, state, counts, out_dir, api_url=f"http://{settings.api_host}:{port}", db_path=db,
                               archive=log_archive, as_of_us=archive_as_of(log_archive), checkpoint=checkpoint,
                               verifier=verifier)
        if keep_running:
            console.print("[bold]--keep-running[/]: worker and API stay up; Ctrl-C stops them.")
            try:
                while True:
                    procs.check_alive()
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return figures
    finally:
        procs.stop()


@app.command()
def worker(
    bootstrap: Annotated[str | None, typer.Option(help="host:port of the broker")] = None,
    idle_ms: Annotated[int, typer.Option(min=1, max=60_000,
                                         help="how long the sequencer waits for an idle input partition")] = 200,
    web_port: Annotated[int | None, typer.Option(min=1, max=65_535,
                                                 help="port of the worker's web views (default STOCKLEDGER_WORKER_WEB_PORT, 6066)")] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Run a Faust stream worker (several may run: one is active, the others stand by and take over on a rebalance).

    Web views: http://<host>:<port>/ledger/status/, /ledger/accounts/<account>/, /ledger/pools/main/.
    """
    import logging

    from streams.worker import run_worker

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = get_settings()
    update: dict[str, object] = {}
    if bootstrap:
        host, _, port = bootstrap.rpartition(":")
        if not host or not port.isdigit():
            _fail(f"--bootstrap {bootstrap!r} is not host:port", 2)
        update |= {"kafka_host": host, "kafka_port": int(port)}
    if web_port is not None:
        update["worker_web_port"] = web_port
    run_worker(settings.model_copy(update=update), idle_ms, log_level.upper())


@app.command()
def status(
    bootstrap: Annotated[str | None, typer.Option(help="host:port of the broker")] = None,
) -> None:
    """Lag per topic and partition for the sequencer and the fold, and the latest checkpoint's counts."""
    from services.stream_status import read_status

    settings = get_settings()
    try:
        st = read_status(bootstrap or settings.bootstrap_servers, settings.app_id)
    except Exception as exc:  # noqa: BLE001
        _fail(f"cannot read status from Kafka: {exc}")
    t = Table(title="Lag (records not yet taken by the ledger)")
    for col in ("stage", "topic", "partition", "end offset", "committed", "lag"):
        t.add_column(col, justify="right" if col in ("partition", "end offset", "committed", "lag") else "left")
    for row in st.lags:
        t.add_row(*[str(v) for v in row])
    console.print(t)
    cp = st.checkpoint
    if cp is None:
        console.print("no checkpoint yet: no worker has folded anything")
        return
    c = Table(title=f"Fold checkpoint (worker {cp['worker_id']}, next sequenced offset {cp['next_sequenced_offset']:,})")
    for col in ("source topic", "applied", "duplicates", "rejected"):
        c.add_column(col, justify="left" if col == "source topic" else "right")
    for topic in sorted(set(cp["applied"]) | set(cp["rejected"]) | set(cp["duplicates"])):
        c.add_row(topic, f"{cp['applied'].get(topic, 0):,}", f"{cp['duplicates'].get(topic, 0):,}", f"{cp['rejected'].get(topic, 0):,}")
    console.print(c)
    console.print("rejected by reason: " + ", ".join(f"{k} {v:,}" for k, v in sorted(cp["rejected_by_reason"].items())))
    console.print(f"state hash at that offset: {cp['state_hash'] or '(not computed yet)'}")


state_app = typer.Typer(help="The ledger state held by the stream workers.", no_args_is_help=True)
app.add_typer(state_app, name="state")


@state_app.command("dump")
def state_dump(
    bootstrap: Annotated[str | None, typer.Option(help="host:port of the broker")] = None,
    quiet: Annotated[bool, typer.Option(help="print only the state hash")] = False,
) -> None:
    """Rebuild the state the workers hold (the fold of ledger.sequenced up to the committed offset) and print it."""
    import asyncio

    from services.kafka_security import AUDITOR, aiokafka_auth
    from services.stream_status import committed_fold_offset
    from services.summary import print_state
    from streams.fold import rebuild

    settings = get_settings()
    bootstrap = bootstrap or settings.bootstrap_servers
    until = committed_fold_offset(bootstrap, settings.app_id)
    state = asyncio.run(rebuild(bootstrap, until, auth=aiokafka_auth(AUDITOR))).state
    from ledger.state_hash import state_hash

    if quiet:
        print(state_hash(state))
        return
    console.print(f"folded {until:,} sequenced records")
    print_state(console, state)


@app.command("export-log")
def export_log(
    out: Annotated[Path, typer.Option(help="archive to write: the input records in the ledger's order")],
    bootstrap: Annotated[str | None, typer.Option(help="host:port of the broker")] = None,
) -> None:
    """Write ledger.sequenced up to the fold's committed offset to an archive: `stockledger replay` folds it offline, and its Merkle log equals the live one."""
    from services.archive import write_archive
    from services.stream_status import committed_fold_offset, read_sequenced

    settings = get_settings()
    bootstrap = bootstrap or settings.bootstrap_servers
    until = committed_fold_offset(bootstrap, settings.app_id)
    n = write_archive(out, read_sequenced(bootstrap, until), seed_label=f"export:{until}")
    console.print(f"wrote {n:,} records (of {until:,} sequenced) to {out}")


def main() -> None:  # pragma: no cover - console entry point
    from services.errors import run

    sys.exit(run(app))


if __name__ == "__main__":  # pragma: no cover
    main()
