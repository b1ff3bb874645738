"""Stream workers on the real broker: same state as the offline replay, through kill -9, broker restarts and rebalances."""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import time

import psutil
import pytest

from schemas.codec import decode
from schemas.topics import INPUT_TOPICS, LEDGER_COLLATERAL, LEDGER_POOLS, LEDGER_POSTINGS, LEDGER_REJECTIONS
from services.archive import read_archive
from services.producer import produce_rows
from services.replay import replay
from streams.tables import account_row, pool_row
from tests.integration.streams_harness import (
    REPO_ROOT,
    archive_counts,
    decoded,
    fresh_stream_env,
    make_archive,
    read_topic,
    settled_roles,
    stop,
    wait_caught_up,
    worker_view,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture
def stream_env(kafka_bootstrap, tmp_path):
    return fresh_stream_env(kafka_bootstrap, tmp_path)


def _offline_hash(archive) -> str:
    return replay(read_archive(archive)).hash()


def test_one_worker_reaches_the_offline_replay_hash(stream_env, tmp_path):
    archive = make_archive(tmp_path)
    expected_counts = archive_counts(archive)
    worker = stream_env.start_worker()
    try:
        produced = produce_rows(stream_env.bootstrap, read_archive(archive))
        assert produced == expected_counts
        cp = wait_caught_up(stream_env, sum(expected_counts.values()), workers=[worker])
    finally:
        stop(worker)
    assert cp["state_hash"] == _offline_hash(archive)
    # records in = applied + duplicates + rejected, per source topic
    for topic in INPUT_TOPICS:
        total = cp["applied"].get(topic, 0) + cp["duplicates"].get(topic, 0) + cp["rejected"].get(topic, 0)
        assert total == expected_counts.get(topic, 0), topic
    rejections = decoded(read_topic(stream_env.bootstrap, LEDGER_REJECTIONS))
    assert len(rejections) == sum(cp["rejected"].values())


def test_kill_9_three_times_same_hash_and_no_conflicting_reemission(stream_env, tmp_path):
    archive = make_archive(tmp_path, accounts=150, events=6_000, seed=9)
    expected = sum(archive_counts(archive).values())
    produce_rows(stream_env.bootstrap, read_archive(archive))
    rng = random.Random(20261126)
    worker = stream_env.start_worker("first")
    try:
        for _ in range(3):
            time.sleep(rng.uniform(1.5, 4.0))
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            worker = stream_env.start_worker("restarted")
        cp = wait_caught_up(stream_env, expected, workers=[worker])
        # The active worker's sequencer runs in a child process, and a kill -9 of the worker takes it along:
        # an orphan would go on merging into ledger.sequenced beside the next owner's.
        sequencers = _sequencer_processes(worker.pid)
        assert len(sequencers) == 1
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert _gone_within(sequencers, 5.0), f"the sequencer process outlived its worker: {sequencers}"
    finally:
        stop(worker)
    assert cp["state_hash"] == _offline_hash(archive)
    by_id: dict[str, set[bytes]] = {}
    for rec in read_topic(stream_env.bootstrap, LEDGER_POSTINGS):
        subject, batch = __import__("schemas.codec", fromlist=["decode"]).decode(rec.value)
        by_id.setdefault(batch["event_id"], set()).add(rec.value)
    assert by_id, "no postings were published"
    conflicting = {k: v for k, v in by_id.items() if len(v) > 1}
    assert conflicting == {}


def _sequencer_processes(worker_pid: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(worker_pid).children():
        with contextlib.suppress(psutil.Error):  # the fold's forked hash/snapshot children come and go
            if "streams.sequencer_process" in " ".join(child.cmdline()):
                found.append(child)
    return found


def _gone_within(procs: list[psutil.Process], timeout_s: float) -> bool:
    """Every process has exited (a zombie left for init to reap counts as gone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = []
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        if not alive:
            return True
        time.sleep(0.1)
    return False


def test_broker_restart_mid_run(stream_env, tmp_path):
    archive = make_archive(tmp_path, accounts=150, events=6_000, seed=13)
    expected = sum(archive_counts(archive).values())
    produce_rows(stream_env.bootstrap, read_archive(archive))
    worker = stream_env.start_worker()
    kafka_sh = str(REPO_ROOT / "scripts" / "kafka.sh")
    try:
        time.sleep(2.5)
        subprocess.run(["bash", kafka_sh, "stop"], check=True, env=stream_env.env(), capture_output=True)
        time.sleep(3)
        subprocess.run(["bash", kafka_sh, "start"], check=True, env=stream_env.env(), capture_output=True)
        cp = wait_caught_up(stream_env, expected, workers=[worker])
        assert worker.poll() is None, "the worker should survive the outage"
    finally:
        stop(worker)
    assert cp["state_hash"] == _offline_hash(archive)


def test_two_workers_rebalance_same_hash(stream_env, tmp_path):
    archive = make_archive(tmp_path, accounts=150, events=6_000, seed=17)
    expected = sum(archive_counts(archive).values())
    first = stream_env.start_worker("a")
    second = None
    try:
        produce_rows(stream_env.bootstrap, read_archive(archive))
        time.sleep(2.0)
        second = stream_env.start_worker("b")  # joins: a rebalance while the first is folding
        time.sleep(3.0)
        stop(first, signal.SIGTERM)  # leaves: the second takes over and rebuilds from the log
        cp = wait_caught_up(stream_env, expected, workers=[second])
    finally:
        stop(first)
        if second is not None:
            stop(second)
    assert cp["state_hash"] == _offline_hash(archive)
    assert "is active" in stream_env.log_of("b")  # the second worker took over: sequencer and fold


def _latest_by_key(bootstrap: str, topic: str) -> dict[bytes, dict]:
    """What compaction keeps of a topic: the last value per key."""
    return {rec.key: decode(rec.value)[1] for rec in read_topic(bootstrap, topic)}


def _without_coordinates(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("event_id", "occurred_at", "next_sequenced_offset")}


def test_standby_takes_over_after_kill_9_and_the_tables_and_views_follow(stream_env, tmp_path):
    archive = make_archive(tmp_path, accounts=120, events=4_000, seed=29)
    rows = list(read_archive(archive))
    half = len(rows) // 2
    a, b = stream_env.start_worker("a"), stream_env.start_worker("b")
    survivor = None
    try:
        produce_rows(stream_env.bootstrap, rows[:half])
        wait_caught_up(stream_env, half, workers=[a, b])
        roles = settled_roles([a, b])
        assert sorted(roles.values()) == ["active", "standby"], roles
        active = next(p for p, role in roles.items() if role == "active")
        survivor = b if active is a else a
        active.kill()  # kill -9: no goodbye to the group; the standby takes over after the session timeout
        active.wait()
        produce_rows(stream_env.bootstrap, rows[half:])
        cp = wait_caught_up(stream_env, len(rows), workers=[survivor])
        status = worker_view(survivor)
        assert status["role"] == "active" and status["recoveries"] >= 1
        assert status["next_sequenced_offset"] == cp["next_sequenced_offset"]
        result = replay(iter(rows))
        assert cp["state_hash"] == result.hash()
        # The published tables equal the offline fold, account by account (compaction keeps the last row).
        state = result.state
        expected = {a.encode(): _without_coordinates(account_row(acct, 0, 0)) for a, acct in state.accounts.items()}
        deadline = time.monotonic() + 60
        while True:
            published = {k: _without_coordinates(v) for k, v in _latest_by_key(stream_env.bootstrap, LEDGER_COLLATERAL).items()}
            if published == expected or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert published == expected
        pools = _latest_by_key(stream_env.bootstrap, LEDGER_POOLS)
        assert _without_coordinates(pools[b"main"]) == _without_coordinates(pool_row(state, 0, 0))
        # The views answer from the survivor: one account's balances and live health, the pool, a 404.
        account = max(state.accounts, key=lambda acct: len(state.accounts[acct].positions))
        view = worker_view(survivor, f"/ledger/accounts/{account}/")
        assert _without_coordinates(view["balances"]) == expected[account.encode()]
        assert view["health"]["equity_micro_usd"] >= view["health"]["maintenance_margin_micro_usd"]
        assert _without_coordinates(worker_view(survivor, "/ledger/pools/main/")) == _without_coordinates(pools[b"main"])
        assert worker_view(survivor, "/ledger/accounts/no-such-account/") is None  # 404
    finally:
        for p in (a, b):
            stop(p)


def test_bad_input_lands_in_rejections_and_the_worker_keeps_going(stream_env, tmp_path):
    from schemas.codec import encode

    bad = [
        ("trade.events", "k1", b"\x13\x37 not avro at all"),
        ("margin.events", "k2", b"\x00" + (4242).to_bytes(4, "big") + b"\x02\x04"),
        ("mint.events", "TSLA", encode("MintRequest", {"event_id": "m-1", "occurred_at": 1_700_000_000_000_001, "source": "t", "symbol": "TSLA",
                                                       "account": "a", "qty_nano": 5})[:-3]),
        ("mint.events", "ZZZZ", encode("MintRequest", {"event_id": "m-2", "occurred_at": 1_700_000_000_000_002, "source": "t", "symbol": "ZZZZ",
                                                       "account": "a", "qty_nano": 5})),
        ("trade.events", "nobody", encode("TradeRequest", {"event_id": "t-1", "occurred_at": 1_700_000_000_000_003, "source": "t",
                                                            "account": "nobody", "series_id": "BTC-C-1-7D", "volume_nano": 1})),
    ]
    worker = stream_env.start_worker()
    try:
        produce_rows(stream_env.bootstrap, bad)
        cp = wait_caught_up(stream_env, len(bad), workers=[worker])
        assert worker.poll() is None
    finally:
        stop(worker)
    reasons = sorted(r["reason"] for _, r in decoded(read_topic(stream_env.bootstrap, LEDGER_REJECTIONS)))
    assert reasons == sorted(["malformed", "unknown_schema", "malformed", "unknown_symbol", "unknown_account"])
    originals = {r["original"] for _, r in decoded(read_topic(stream_env.bootstrap, LEDGER_REJECTIONS))}
    assert {value for _, _, value in bad} == originals
    assert sum(cp["rejected"].values()) == len(bad)


def test_health_says_degraded_while_the_broker_is_down(stream_env, tmp_path, monkeypatch):
    """/health of `serve` used to say ok (thread alive) with Kafka stopped: a poll just returns nothing."""
    import warnings

    import duckdb

    from services import cli_audit
    from services.api import create_app
    from services.auth import OPERATOR, TokenStore

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    monkeypatch.setattr(cli_audit, "BROKER_GRACE_S", 1.0)
    con = duckdb.connect(str(tmp_path / "h.duckdb"))
    runner = cli_audit.ProjectorThread(con, bootstrap=stream_env.bootstrap, group_id=f"{stream_env.app_id}-projector")
    runner.start()
    kafka_sh = str(REPO_ROOT / "scripts" / "kafka.sh")

    def wait_status(client, code, timeout_s, connected):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            r = client.get("/health")
            if r.status_code == code and r.json()["projector"]["broker_connected"] is connected:
                return r.json()
            time.sleep(0.5)
        raise AssertionError(f"/health did not answer {code} within {timeout_s} s: {r.status_code} {r.json()['projector']}")

    _, token = TokenStore(tmp_path / "tokens.json").create(OPERATOR)  # /health is the operator's
    try:
        with TestClient(create_app(connection=con, projector=runner, tokens=tmp_path / "tokens.json")) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            assert wait_status(client, 200, 60, connected=True)["status"] == "ok"
            subprocess.run(["bash", kafka_sh, "stop"], check=True, env=stream_env.env(), capture_output=True)
            try:
                assert wait_status(client, 503, 60, connected=False)["status"] == "degraded"
            finally:
                subprocess.run(["bash", kafka_sh, "start"], check=True, env=stream_env.env(), capture_output=True)
            assert wait_status(client, 200, 90, connected=True)["status"] == "ok"
    finally:
        runner.close()
