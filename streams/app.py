"""The Faust app that hosts the ledger: the fold agent, the sequencer service, the published tables and the web views.

- Agent `fold` consumes the batched ledger.sequenced (one partition: one active worker at a time) with
  manual acks: it takes a run of records and folds them with the one step (streams/fold.FoldHost); an
  acker task acks each run, strictly in order, once every output of it is acknowledged, while the agent
  folds the next run (at most RUNS_IN_FLIGHT runs in flight). It runs under
  mode.CrashingSupervisor: a failure stops the worker instead of restarting the agent past a record.
- The sequencer (streams/sequencer.py) needs every input partition and its own idle rule, which Faust's
  assignor cannot give, so a mode.Service starts it in a child process (streams/sequencer_process.py) when
  this worker is assigned the ledger.sequenced partition, and stops it (its last batches flushed, the
  process gone) when the partition is revoked.
- Tables `collateral` (key account id) and `pools` (key pool id) hold what the fold publishes; their
  changelogs ledger.collateral and ledger.pools are compacted, keyed by the id and Avro-encoded
  (AccountCollateral, PoolState) like every other topic, for downstream consumers. A standby worker keeps
  a replica (table_standby_replicas=1); the active worker does not read them back (FoldRecovery): its
  fold republishes every row after each recovery.
- Web views (Faust's web server, settings worker_web_host:worker_web_port): /ledger/status/,
  /ledger/accounts/{account}/, /ledger/pools/{pool}/.

Faust's exactly-once mode is not used (broken upstream and unable to span the 30 -> 1 -> 6 partition
topology); at-least-once with deterministic outputs (same ids, same bytes on a re-fold) is the contract.
Faust never creates topics here (topic_allow_declare=False): `stockledger topics create` declares them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from typing import Any

import faust
import mode
from aiokafka import AIOKafkaProducer
from faust.serializers import codecs
from faust.tables import TableManager
from faust.tables.recovery import Recovery

from ledger.params import RiskParams
from ledger.risk import account_health
from schemas.codec import decode, encode
from schemas.topics import LEDGER_COLLATERAL, LEDGER_POOLS, LEDGER_SEQUENCED
from services.kafka_security import LEDGER, aiokafka_auth
from services.log_keys import load_signer
from services.settings import Settings, get_settings
from streams.fold import Cadence, FoldHost, send_in_batches
from streams.gc_policy import FullCollections
from streams.sequencer import ledger_producer
from streams.step import FoldHalted

log = logging.getLogger("stockledger.app")
MEMBERSHIP_GRACE_S = 60.0  # outside the consumer group for longer than this: restart the Faust worker
RUNS_IN_FLIGHT = 8  # folded runs whose outputs may be unacknowledged at once
SEQUENCER_STOP_TIMEOUT_S = 12.0  # its producer flushed and its consumer closed, else killed (within the 20 s shutdown)


class AvroCodec(codecs.Codec):
    """A table value as one subject's Avro record in the Confluent wire format (schemas.codec)."""

    def __init__(self, subject: str, **kwargs: Any):
        self.subject = subject
        super().__init__(subject=subject, **kwargs)

    def _dumps(self, obj: Any) -> bytes:
        return encode(self.subject, obj)

    def _loads(self, s: bytes) -> Any:
        return decode(s)[1]


codecs.register("avro-AccountCollateral", AvroCodec("AccountCollateral"))
codecs.register("avro-PoolState", AvroCodec("PoolState"))


def broker_credentials(auth: dict[str, Any]) -> faust.SASLCredentials | None:
    """The ledger principal's aiokafka settings (services.kafka_security) as Faust credentials."""
    if auth.get("security_protocol", "PLAINTEXT") == "PLAINTEXT":
        return None
    return faust.SASLCredentials(username=auth["sasl_plain_username"], password=auth["sasl_plain_password"],
                                 ssl_context=auth["ssl_context"], mechanism=auth["sasl_mechanism"])


class SequencerService(mode.Service):
    """The sequencer (streams/sequencer_process.py) as a child process, running while this worker holds ledger.sequenced."""

    def __init__(self, runtime: Runtime, **kwargs: Any):
        super().__init__(**kwargs)
        self.runtime = runtime
        self.process: asyncio.subprocess.Process | None = None
        self.sequenced = 0  # what the child last reported
        self.stopping = False

    async def on_start(self) -> None:
        rt = self.runtime
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streams.sequencer_process", "--bootstrap", rt.bootstrap,
            "--group-id", f"{rt.settings.app_id}.sequencer", "--idle-ms", str(rt.idle_ms),
            "--batch-max-records", str(rt.settings.sequencer_batch_max_records), "--parent-pid", str(os.getpid()),
            stdout=asyncio.subprocess.PIPE)
        log.info("sequencer process %d started", self.process.pid)
        self.add_future(self._watch(self.process))

    @property
    def running(self) -> bool:
        """Started and not (being) stopped: this worker is the active one."""
        return self.process is not None and not self.stopping

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        """Read its progress lines; if it exits while not being stopped, the worker restarts clean."""
        assert process.stdout is not None
        async for line in process.stdout:
            with contextlib.suppress(ValueError, IndexError):
                self.sequenced = int(line.split()[1])
        code = await process.wait()
        if not self.stopping:
            log.error("the sequencer process exited with code %s", code)
            await self.runtime.app.crash(RuntimeError(f"the sequencer process exited with code {code}"))

    async def on_stop(self) -> None:
        # It flushes every batch it handed to its producer before it exits, so once it is gone none of this
        # worker's batches can reach ledger.sequenced after the next owner's first (this runs in the
        # revocation): two merge orders are never interleaved. A child that does not stop in time is killed.
        self.stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            code = await asyncio.wait_for(process.wait(), timeout=SEQUENCER_STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("the sequencer process did not stop within %.0f s; killing it", SEQUENCER_STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            code = await process.wait()
        if code != 0:  # e.g. its last input commit failed: the next owner re-sends those records; the fold skips them
            log.warning("the sequencer process stopped with exit code %s", code)


class Runtime(mode.Service):
    """What the app's agent, timers, signals and views share: the producer, the fold host, the sequencer."""

    def __init__(self, app: faust.App, settings: Settings, params: RiskParams | None, idle_ms: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.app, self.settings, self.params, self.idle_ms = app, settings, params, idle_ms
        self.bootstrap = settings.bootstrap_servers
        self.auth = aiokafka_auth(LEDGER, settings)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.producer: AIOKafkaProducer | None = None
        self.host: FoldHost | None = None
        self.sequencer: SequencerService | None = None
        self.halted: FoldHalted | None = None
        self.started_at = time.time()
        self.ready = asyncio.Event()  # set once the producer and the host exist
        self.folded_in = -1  # the assignment the fold last folded a run in (a jump ahead within it is a hole)
        self.member_at = time.monotonic()  # last time the consumer was a member of its group
        self.assignment = 0  # counts revocations: runs taken before one are not acked after it
        # Full collections when the fold is quiet (streams/gc_policy.py); run_worker turns off the automatic ones.
        self.full_gc = FullCollections(backstop_s=settings.gc_full_backstop_ms / 1000)

    async def on_start(self) -> None:
        s = self.settings
        self.producer = ledger_producer(self.bootstrap, self.auth)
        await self.producer.start()
        cadence = Cadence(head_every_records=s.log_checkpoint_every_records, head_every_s=s.log_checkpoint_every_ms / 1000,
                          snapshot_every_records=s.snapshot_every_records, snapshot_every_s=s.snapshot_every_ms / 1000,
                          snapshot_idle_every_s=s.snapshot_idle_every_ms / 1000,
                          snapshot_keep=s.snapshot_keep, publish_every_s=s.table_publish_every_ms / 1000,
                          hash_every_s=s.checkpoint_hash_every_ms / 1000, work_in_child=s.fold_work_in_child,
                          idle_s=self.idle_ms / 1000)
        self.host = FoldHost(self.bootstrap, self.app.conf.id, self.worker_id, self.producer, self.params,
                             auth=self.auth, signer=load_signer(s.log_key_file, s.log_origin), origin=s.log_origin,
                             cadence=cadence, publish=self.publish)
        self.ready.set()

    async def on_stop(self) -> None:
        await self.set_sequencing(False)
        if self.producer is not None:
            await self.producer.stop()

    def group_generation(self) -> int | None:
        """The Faust consumer's group generation (-1: not a member right now); None if it cannot be read."""
        try:
            return self.app.consumer._thread._ensure_consumer()._coordinator.generation  # noqa: SLF001 - no public call
        except Exception:  # noqa: BLE001 - the watchdog then stays quiet
            return None

    async def check_membership(self) -> None:
        """Crash the app (run_worker starts a fresh one) after MEMBERSHIP_GRACE_S outside the consumer group.

        Seen on the real broker: a broker restarted while Faust's consumer was starting left it 'Ready'
        but never joining its group again, folding nothing, for good. A fresh app joins at once.
        """
        generation, now = self.group_generation(), time.monotonic()
        if generation is None or generation > 0:
            self.member_at = now
        elif now - self.member_at > MEMBERSHIP_GRACE_S:
            await self.app.crash(RuntimeError(f"not a member of consumer group {self.app.conf.id} for "
                                              f"{MEMBERSHIP_GRACE_S:.0f} s; restarting the Faust worker"))

    async def set_sequencing(self, active: bool) -> None:
        if active and self.sequencer is None:
            self.sequencer = SequencerService(self, loop=self.loop)
            await self.sequencer.start()
            log.info("worker %s is active: sequencing and folding", self.worker_id)
        elif not active and self.sequencer is not None:
            await self.sequencer.stop()
            self.sequencer = None
            log.info("worker %s is standby", self.worker_id)

    async def publish(self, accounts: list[dict[str, Any]], pool: dict[str, Any] | None) -> None:
        """Write the changed rows to the tables: into each table's store and, as Avro, to its changelog topic.

        The changelog records are sent with the fold's producer and awaited (Faust's own table writes go
        through a buffer that never reports a failed send, one message at a time); the records are exactly
        what Faust writes and recovers a table from (key bytes, value in the table's codec, partition 0).
        """
        tables = self.app.stockledger_tables
        changelog: list[tuple[str, bytes, bytes, int | None]] = []
        for name, topic, subject, key_field, rows in (("collateral", LEDGER_COLLATERAL, "AccountCollateral", "account", accounts),
                                                      ("pools", LEDGER_POOLS, "PoolState", "pool", [pool] if pool else [])):
            for row in rows:
                key = row[key_field].encode()
                tables[name].data[key] = row
                changelog.append((topic, key, encode(subject, row), None))  # None: stamped when sent
        await (await send_in_batches(self.producer, changelog))


class FoldRecovery(Recovery):
    """Faust's table recovery, except that an active worker does not read the fold's tables back.

    The tables are derived: after every recovery the fold republishes every account and the pool from its
    own state (FoldHost._recover), so reading a changelog into an active table first only delays the fold
    (the recovery bench: 22,500 rows, 3.2 s of a kill -9 recovery; compaction keeps a changelog near one row
    per account plus the last minute's, so it grows with the book). A standby still keeps its replica.
    """

    def add_active(self, table: Any, tp: Any) -> None:
        if isinstance(table, OnePartitionTable):
            return
        super().add_active(table, tp)


class FoldTableManager(TableManager):
    """The app's table manager (faust setting TableManager), with FoldRecovery as its recovery service."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = FoldRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class OnePartitionTable(faust.Table):
    """A table whose changelog has one partition, written from outside a stream event's context.

    The fold writes its rows after a run of records, not while Faust iterates one event, so the partition
    cannot come from the current event; both changelogs have one partition (like ledger.sequenced).
    """

    def __init__(self, app: faust.App, *, value_codec: str, **kwargs: Any):
        super().__init__(app, key_type=bytes, **kwargs)
        # Faust derives a table's serializers from key_type/value_type (json unless a Record says otherwise);
        # ours are raw keys and the subject's Avro, for the changelog and for recovering from it alike.
        self.key_serializer, self.value_serializer = "raw", value_codec

    def partition_for_key(self, key: Any) -> int:
        return 0

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        """Keep the rows: Faust's memory store would drop every changelog row whose partition is not among the
        active ones it is given, and FoldRecovery gives none for these tables (a standby never had any). With
        one partition that purge only wiped a standby's replica, or a new owner's rows before the fold republished."""
        await self.call_recover_callbacks()


def _table(app: faust.App, name: str, subject: str, changelog: str) -> OnePartitionTable:
    codec = f"avro-{subject}"
    schema = faust.Schema(key_type=bytes, key_serializer="raw", value_serializer=codec)
    table = OnePartitionTable(app, value_codec=codec, name=name, default=None, partitions=1, schema=schema,
                              changelog_topic=app.topic(changelog, partitions=1, schema=schema),
                              beacon=app.tables.beacon)
    return app.tables.add(table)


def create_app(settings: Settings | None = None, params: RiskParams | None = None, idle_ms: int = 200) -> faust.App:
    """The ledger's Faust app: group `<app_id>.fold`, memory tables, no topic declaration, web views."""
    settings = settings or get_settings()
    app_id = f"{settings.app_id}.fold"
    auth = aiokafka_auth(LEDGER, settings)
    datadir = settings.worker_data_dir / app_id  # Faust wants it even with memory tables
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        broker_credentials=broker_credentials(auth),
        store="memory://",
        datadir=str(datadir),
        autodiscover=False,
        topic_allow_declare=False,  # `stockledger topics create` declares every topic, with its configs
        topic_disable_leader=True,  # no leader election needed (the sequencer follows the partition)
        topic_partitions=1,
        table_standby_replicas=1,
        TableManager=FoldTableManager,  # the active worker's tables come from the fold, not their changelogs
        consumer_auto_offset_reset="earliest",
        # On shutdown, do not wait for runs taken but not yet acked: the next owner folds them again (same
        # outputs), and waiting on them could outlast the rebalance that shutdown itself starts.
        stream_wait_empty=False,
        broker_commit_interval=1.0,
        # A crashed worker is noticed within 20 s (Faust's default is 60): failover starts sooner.
        broker_session_timeout=20.0,
        broker_heartbeat_interval=3.0,
        # Metadata every 10 s (default 5 min): a broker that restarts answers the first join before it has
        # loaded its topics, the assignment then ignores them as missing, and only a metadata change makes
        # the group rebalance again.
        consumer_metadata_max_age_ms=10_000,
        producer_acks=-1,
        web_enabled=True,
        web_bind=settings.worker_web_host,
        web_host=settings.worker_web_host,
        web_port=settings.worker_web_port,
    )
    runtime = Runtime(app, settings, params, idle_ms)
    app.stockledger_runtime = runtime
    sequenced = app.topic(LEDGER_SEQUENCED, key_type=bytes, value_type=bytes, key_serializer="raw",
                          value_serializer="raw", partitions=1)
    collateral = _table(app, "collateral", "AccountCollateral", LEDGER_COLLATERAL)
    pools = _table(app, "pools", "PoolState", LEDGER_POOLS)
    app.stockledger_tables = {"collateral": collateral, "pools": pools}
    take_max, take_within_s = settings.fold_take_max_records, settings.fold_take_within_ms / 1000

    @app.agent(sequenced, supervisor_strategy=mode.CrashingSupervisor)
    async def fold(stream):
        # Runs whose outputs are in flight, acked strictly in order by `ack_in_order` once every output of
        # the run is acknowledged; the agent folds the next run meanwhile (bounded: put() waits when full).
        in_flight: asyncio.Queue = asyncio.Queue(maxsize=RUNS_IN_FLIGHT)
        acker = asyncio.ensure_future(ack_in_order(stream, in_flight))
        try:
            async for events in stream.noack_take(take_max, within=take_within_s):
                records = [(ev.message.offset, ev.message.value) for ev in events]
                await runtime.ready.wait()
                host = runtime.host
                if runtime.folded_in == runtime.assignment and records[0][0] > host.next_offset:
                    # Records between the last run folded in this assignment and this one never reached the agent
                    # (Faust took them into a stream buffer it cleared when it completed a new worker's assignment).
                    # Folding on would skip their outputs, and Faust, never given their acks, would never commit
                    # past them (seen: the group's offset stuck at 20 of 262). Seek back: Faust delivers them again,
                    # and this run after them; this copy is never acked.
                    log.warning("sequenced records %d..%d never reached the fold; seeking back to them",
                                host.next_offset, records[0][0] - 1)
                    await app.consumer.seek(events[0].message.tp, host.next_offset)
                    continue
                try:
                    landed = await host.fold(records)
                except FoldHalted as halted:
                    # A bug in the core on one record: stop for good, naming it (a restart would stop on it again).
                    runtime.halted = halted
                    log.critical("%s; the worker stops (fix the bug, then restart it)", halted)
                    raise
                runtime.folded_in = runtime.assignment
                await in_flight.put((runtime.assignment, events, landed))
        finally:
            acker.cancel()

    async def ack_in_order(stream, in_flight: asyncio.Queue) -> None:
        while True:
            assignment, events, landed = await in_flight.get()
            try:
                await landed
            except Exception as exc:  # noqa: BLE001 - a lost output: never ack past it; a fresh worker refolds
                log.error("an output of sequenced records %d..%d was not acknowledged: %r; restarting the Faust worker",
                          events[0].message.offset, events[-1].message.offset, exc)
                await app.crash(exc)
                return
            if assignment != runtime.assignment:
                continue  # taken under an assignment since revoked: Faust redelivers them; never ack them here
            for ev in events:
                await stream.ack(ev)

    @app.timer(interval=max(idle_ms / 1000, 0.05))
    async def idle_duties():
        if runtime.ready.is_set():
            await runtime.host.idle(active=runtime.sequencer is not None and runtime.sequencer.running)
            runtime.full_gc.maybe(idle=runtime.host.quiet())

    @app.timer(interval=5.0)
    async def membership_watchdog():
        await runtime.check_membership()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender, revoked, **kwargs):
        runtime.assignment += 1
        if runtime.host is not None:
            runtime.host.revoked()  # before any await: an idle recovery in flight publishes nothing
        await runtime.set_sequencing(False)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender, assigned, **kwargs):
        active = any(tp.topic == LEDGER_SEQUENCED for tp in app.assignor.assigned_actives())
        if active and runtime.host is not None:
            runtime.host.activated()  # the position is checked against the group's when idle
        await runtime.set_sequencing(active)

    @app.on_before_shutdown.connect
    async def on_shutdown(sender, **kwargs):
        # Faust sends no revocation while it stops, and the Runtime stops after the consumer has left the
        # group: the sequencer process must be gone before then, or the next owner's could start beside it.
        active = runtime.sequencer is not None and runtime.sequencer.running
        try:
            await runtime.set_sequencing(False)  # first: sequencing stops, whatever happens below
            if active and runtime.host is not None:
                await runtime.host.snapshot_on_stop()  # the state as of its last folded record (never raises)
        finally:
            if runtime.host is not None:
                runtime.host.revoked()

    @app.page("/ledger/status/")
    async def status_view(web, request):
        return web.json(status(runtime))

    @app.page("/ledger/accounts/{account}/")
    async def account_view(web, request, account):
        found = account_status(runtime, account)
        if found is None:
            body, code = not_found(runtime, f"no account {account!r}")
            return web.json(body, status=code)
        return web.json(found)

    @app.page("/ledger/pools/{pool}/")
    async def pool_view(web, request, pool):
        row = pools.get(pool.encode())
        if row is None:
            body, code = not_found(runtime, f"no pool {pool!r}")
            return web.json(body, status=code)
        return web.json(row)

    app.add_dependency(runtime)  # started before the app's consumer delivers anything, stopped with the app
    return app


def status(runtime: Runtime) -> dict[str, Any]:
    """The worker's status view: role, offsets, counts, the last hash and the recovery."""
    host = runtime.host
    ledger = host.ledger if host is not None else None
    seq = runtime.sequencer
    return {
        "worker_id": runtime.worker_id, "app_id": runtime.app.conf.id,
        "role": "active" if runtime.sequencer is not None else "standby",
        "next_sequenced_offset": host.next_offset if host else 0, "sequenced_records_folded": host.folded if host else 0,
        "log_size": ledger.state.log.size if ledger else 0,
        "counts": ledger.counts.as_dict() if ledger else {},
        "sequencer_records": seq.sequenced if seq is not None else 0,
        "recovered_from_snapshot_offset": host.recovered_from if host else None,
        "recoveries": host.recoveries if host else 0,
        "last_hashed_offset": host.last_hashed_offset if host else -1,
        "uptime_s": round(time.time() - runtime.started_at, 1),
    }


def not_found(runtime: Runtime, what: str) -> tuple[dict[str, str], int]:
    """The answer for a row the tables lack: 503 on the active worker until its last recovery's rows are published
    (its tables are filled from the fold's state, not read back from their changelogs: FoldRecovery), else 404."""
    host = runtime.host
    if runtime.sequencer is not None and (host is None or not host.tables_filled):
        return {"error": "recovering: the tables are filled once the fold has recovered; try again shortly"}, 503
    return {"error": what}, 404


def account_status(runtime: Runtime, account: str) -> dict[str, Any] | None:
    """One account: its published balances (the table) and, on the active worker, its live health."""
    row = runtime.app.stockledger_tables["collateral"].get(account.encode())
    ledger = runtime.host.ledger if runtime.host is not None else None
    live = None
    if ledger is not None and account in ledger.state.accounts:
        health = account_health(ledger.state, ledger.state.accounts[account], ledger.clock_us)
        live = {"at_us": ledger.clock_us, **health.as_inputs()}
    if row is None and live is None:
        return None
    return {"account": account, "balances": row, "health": live}
