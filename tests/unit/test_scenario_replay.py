"""Scenario generator and offline replay: reproducible bytes, same hash twice, every record accounted for."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
from typer.testing import CliRunner

from services.archive import read_archive, write_archive
from services.cli import app
from services.replay import replay
from services.scenario import ScenarioConfig, generate, market_open

SMALL = ScenarioConfig(accounts=120, events=4_000, seed=11)


def _write(path: Path, cfg: ScenarioConfig) -> str:
    write_archive(path, generate(cfg), f"{cfg.accounts}:{cfg.events}:{cfg.seed}")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    a = _write(tmp_path / "a.avro", SMALL)
    b = _write(tmp_path / "b.avro", SMALL)
    c = _write(tmp_path / "c.avro", ScenarioConfig(accounts=120, events=4_000, seed=12))
    assert a == b
    assert a != c


def test_replay_twice_same_hash_and_counts_add_up(tmp_path):
    path = tmp_path / "s.avro"
    _write(path, SMALL)
    first = replay(read_archive(path))
    second = replay(read_archive(path))
    assert first.hash() == second.hash()
    total = sum(first.records_in.values())
    assert total == sum(1 for _ in read_archive(path))
    for topic, n in first.records_in.items():
        assert n == first.applied.get(topic, 0) + first.duplicates.get(topic, 0) + first.rejected.get(topic, 0)
    assert sum(first.rejected_by_reason.values()) == sum(first.rejected.values())


def test_scenario_has_what_the_market_needs(tmp_path):
    path = tmp_path / "s.avro"
    _write(path, ScenarioConfig(accounts=300, events=20_000, seed=3))
    result = replay(read_archive(path))
    state = result.state
    reasons = result.rejected_by_reason
    assert {"malformed", "unknown_schema", "insufficient_reserve"} <= set(reasons), reasons
    assert sum(result.duplicates.values()) > 0
    assert state.counters.liquidations > 0
    assert state.counters.bad_debt_micro_usd > 0, "the crash should leave some bad debt"
    assert state.reserves["NVDA"].multipliers[-1][1] == 3_000_000_000  # the 3-for-1 split
    assert state.reserves["AAPL"].multipliers[-1][1] > 1_000_000_000  # the reinvested dividend
    assert state.pool.shares_nano > 0
    assert {"BTC", "ETH"} <= set(state.prices)


def test_market_hours():
    friday_1500 = 1_772_809_200 * 1_000_000  # 2026-03-06 15:00 UTC
    saturday_1500 = friday_1500 + 86_400 * 1_000_000
    assert market_open(friday_1500)
    assert not market_open(saturday_1500)
    assert not market_open(friday_1500 + 7 * 3_600 * 1_000_000)  # 22:00 UTC, after the close


def test_cli_generate_then_replay_twice_same_hash_and_duckdb(tmp_path):
    runner = CliRunner()
    archive = tmp_path / "cli.avro"
    gen = runner.invoke(app, ["scenario", "generate", "--out", str(archive), "--accounts", "50", "--events", "2000", "--seed", "5"])
    assert gen.exit_code == 0, gen.output
    one = runner.invoke(app, ["replay", str(archive), "--quiet"])
    two = runner.invoke(app, ["replay", str(archive), "--quiet"])
    assert one.exit_code == 0 and two.exit_code == 0, one.output + two.output
    assert one.output.strip() == two.output.strip()
    assert len(one.output.strip()) == 64
    db = tmp_path / "l.duckdb"
    full = runner.invoke(app, ["replay", str(archive), "--duckdb", str(db)])
    assert full.exit_code == 0, full.output
    assert "state hash" in full.output
    con = duckdb.connect(str(db), read_only=True)
    events = con.execute("SELECT count(*) FROM events").fetchone()[0]
    assert events == sum(1 for _ in read_archive(archive))
    debits, credits = con.execute(
        "SELECT sum(amount_minor), sum(amount_minor) FROM postings").fetchone()
    assert debits == credits and debits > 0
    # balances are sums of postings: every asset nets to zero over all accounts (double entry)
    unbalanced = con.execute("SELECT asset, sum(balance_minor) s FROM balances GROUP BY asset HAVING s <> 0").fetchall()
    assert unbalanced == []
    stored_hash = con.execute("SELECT value FROM ledger_meta WHERE key = 'state_hash'").fetchone()[0]
    assert stored_hash == one.output.strip()


def test_cli_replay_missing_archive_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["replay", str(tmp_path / "nope.avro")])
    assert result.exit_code == 2
    assert "does not exist" in " ".join(result.output.split())


def test_demo_embedded_runs_without_kafka(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--embedded", "--accounts", "40", "--events", "1500", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "state hash" in result.output
    assert "Proof of reserves" in result.output
    assert "stockledger por verify" in " ".join(result.output.split())


def test_split_keeps_the_reserve_covering_supply(tmp_path):
    """Regression: a 3-for-1 split tripled the multiplier but not the custodian's shares (NVDA at 77 %)."""
    path = tmp_path / "s.avro"
    _write(path, ScenarioConfig(accounts=200, events=12_000, seed=7))
    state = replay(read_archive(path)).state
    nvda = state.reserves["NVDA"]
    multiplier = nvda.multipliers[-1][1]
    assert multiplier == 3_000_000_000
    assert nvda.shares_held_nano * 1_000_000_000 >= nvda.supply_nano * multiplier
