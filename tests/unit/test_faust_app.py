"""The Faust app's wiring: tables on the declared changelog topics with Avro values, no topic creation, one agent."""

from __future__ import annotations

from faust.types import TP

from schemas.codec import decode
from schemas.samples import sample_records
from schemas.topics import LEDGER_COLLATERAL, LEDGER_POOLS, LEDGER_SEQUENCED, TOPICS_BY_NAME
from services.settings import Settings
from streams.app import create_app


def _app(tmp_path):
    settings = Settings(kafka_security="plaintext", worker_data_dir=tmp_path, log_key_file=tmp_path / "k.key",
                        app_id="unit")
    return create_app(settings)


def test_tables_write_and_recover_through_the_declared_compacted_topics_as_avro(tmp_path):
    app = _app(tmp_path)
    tables = app.stockledger_tables
    assert {t.changelog_topic.get_topic_name() for t in tables.values()} == {LEDGER_COLLATERAL, LEDGER_POOLS}
    for topic in (LEDGER_COLLATERAL, LEDGER_POOLS):
        assert TOPICS_BY_NAME[topic].configs.get("cleanup.policy") == "compact"
        assert TOPICS_BY_NAME[topic].partitions == 1
    samples = {subject: record for _, _, subject, record in sample_records(60, seed=3)}
    for table, subject in ((tables["collateral"], "AccountCollateral"), (tables["pools"], "PoolState")):
        row = samples[subject]
        # What Faust writes to the changelog and what its recovery decodes, through its own serializer registry.
        wire = app.serializers.dumps_value(None, row, serializer=table.value_serializer)
        assert decode(wire) == (subject, row)
        assert app.serializers.loads_value(None, wire, serializer=table.value_serializer) == row
        assert app.serializers.dumps_key(None, b"acct-1", serializer=table.key_serializer) == b"acct-1"
        assert table.partition_for_key(b"anything") == 0


def test_the_worker_declares_no_topic_and_elects_no_leader(tmp_path):
    app = _app(tmp_path)
    assert app.conf.id == "unit.fold"  # the fold's consumer group, as status and the snapshots expect
    assert app.conf.topic_allow_declare is False and app.conf.topic_disable_leader is True
    assert app.conf.stream_wait_empty is False
    agents = list(app.agents.values())
    assert len(agents) == 1 and agents[0].channel.get_topic_name() == LEDGER_SEQUENCED
    assert agents[0].supervisor_strategy.__name__ == "CrashingSupervisor"


def test_a_worker_outside_its_group_too_long_crashes_to_be_restarted(tmp_path, monkeypatch):
    import asyncio

    from streams import app as app_module

    app = _app(tmp_path)
    runtime = app.stockledger_runtime
    crashes: list[BaseException] = []

    async def crash(exc):
        crashes.append(exc)

    monkeypatch.setattr(app, "crash", crash)
    clock = [1_000.0]
    monkeypatch.setattr(app_module.time, "monotonic", lambda: clock[0])
    generations = iter([3, -1, -1, -1, 5, -1])
    monkeypatch.setattr(runtime, "group_generation", lambda: next(generations))

    def tick(seconds: float) -> None:
        clock[0] += seconds
        asyncio.run(runtime.check_membership())

    tick(0)  # a member (generation 3)
    tick(30)  # out, 30 s: still within the grace
    tick(29)
    assert crashes == []
    tick(2)  # out for 61 s: crash, so run_worker starts a fresh Faust worker
    assert len(crashes) == 1 and "not a member of consumer group unit.fold" in str(crashes[0])
    tick(1)  # a member again (generation 5): the clock restarts
    tick(59)
    assert len(crashes) == 1


def test_the_active_worker_does_not_read_the_fold_tables_back_but_a_standby_keeps_its_replica(tmp_path):
    import faust

    app = _app(tmp_path)
    recovery = app.tables.recovery
    collateral = app.stockledger_tables["collateral"]
    other = app.Table("other", default=None, partitions=1)  # a table the fold does not publish: restored as usual
    recovery.add_active(collateral, TP(LEDGER_COLLATERAL, 0))
    recovery.add_active(other, TP("unit-other-changelog", 0))
    assert recovery.active_tps == {TP("unit-other-changelog", 0)}
    recovery.add_standby(collateral, TP(LEDGER_COLLATERAL, 0))
    assert recovery.standby_tps == {TP(LEDGER_COLLATERAL, 0)}
    assert isinstance(other, faust.Table)


def test_rows_read_from_the_changelog_survive_the_end_of_a_recovery_that_had_no_active_partition(tmp_path):
    """Faust's memory store drops, when a recovery completes, every changelog row whose partition is not among
    the table's active ones; FoldRecovery gives none (a standby never had any): the replica must stay."""
    import asyncio
    from types import SimpleNamespace

    app = _app(tmp_path)
    collateral = app.stockledger_tables["collateral"]
    row = {"account": "acct-1"}

    def event(key: bytes) -> SimpleNamespace:
        return SimpleNamespace(key=key, value=row, message=SimpleNamespace(value=b"x", partition=0))

    collateral.data.apply_changelog_batch([event(b"acct-1"), event(b"acct-2")], lambda k: k, lambda v: v)
    asyncio.run(collateral.on_recovery_completed(set(), {TP(LEDGER_COLLATERAL, 0)}))
    assert collateral.get(b"acct-1") == row and collateral.get(b"acct-2") == row


def test_a_missing_row_is_503_while_the_active_worker_recovers_and_404_after(tmp_path):
    from types import SimpleNamespace

    from streams.app import not_found

    runtime = _app(tmp_path).stockledger_runtime
    assert not_found(runtime, "no account 'x'") == ({"error": "no account 'x'"}, 404)  # a standby: its replica is all
    runtime.sequencer = object()  # active
    runtime.host = SimpleNamespace(tables_filled=False)  # recovered or not, its rows are not all published yet
    body, status = not_found(runtime, "no account 'x'")
    assert status == 503 and body["error"].startswith("recovering")
    runtime.host = SimpleNamespace(tables_filled=True)
    assert not_found(runtime, "no account 'x'") == ({"error": "no account 'x'"}, 404)


def test_a_run_beyond_the_folds_next_offset_within_one_assignment_seeks_back_and_is_never_folded(tmp_path, monkeypatch):
    """The fix for a new worker's commit stuck at 20: records 20-21 vanished from Faust's stream buffer, the next
    run started at 22. The agent must seek the consumer back to 20 (Faust delivers them again), fold nothing of
    the run at 22, and ack only what it folded, in order."""
    import asyncio
    from types import SimpleNamespace

    app = _app(tmp_path)
    runtime = app.stockledger_runtime
    tp = SimpleNamespace(topic=LEDGER_SEQUENCED, partition=0)

    def run(first: int, last: int) -> list:
        return [SimpleNamespace(message=SimpleNamespace(offset=o, value=b"", tp=tp)) for o in range(first, last + 1)]

    class Host:
        next_offset, folded = 0, []

        async def fold(self, records):  # FoldHost would recover to a run beyond next_offset: the hole's outputs lost
            self.folded.append((records[0][0], records[-1][0]))
            self.next_offset = records[-1][0] + 1
            return asyncio.gather()  # every output landed

    class Stream:
        def __init__(self, runs):
            self.runs, self.acked = runs, []

        async def noack_take(self, max_, within):
            for events in self.runs:
                yield events
            await asyncio.sleep(0.05)  # let the acker ack the last run

        async def ack(self, event):
            self.acked.append(event.message.offset)

    seeks = []

    async def seek(tp_, offset):
        seeks.append(offset)

    monkeypatch.setattr(type(app), "consumer", SimpleNamespace(seek=seek))
    runtime.host = Host()
    runtime.ready.set()
    stream = Stream([run(0, 19), run(22, 30), run(20, 30)])  # 20-21 lost, then delivered again after the seek
    agent = next(iter(app.agents.values()))
    asyncio.run(agent.fun(stream))
    assert seeks == [20]
    assert runtime.host.folded == [(0, 19), (20, 30)]
    assert stream.acked == list(range(0, 31))
