"""Proof of reserves (services/por.py, services/cli_por.py): golden figures worked out by hand, proofs
for every account against the published root, tampering, and the CLI on a real archive."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from ledger_builders import (
    T0,
    collateral_deposit,
    custody_movement,
    holding_statement,
    lp_deposit,
    mint,
    price_mark,
    stock_listed,
    supply_observation,
)
from typer.testing import CliRunner

from ledger.merkle_sum import ProofError, derive_salt
from ledger.state import AccountState, LedgerState, ReserveState, Statement
from ledger.state_hash import state_hash
from schemas.codec import encode
from schemas.topics import SUBJECT_ROUTES
from services import por
from services.archive import read_archive, write_archive
from services.cli_por import por_app
from services.replay import replay
from services.scenario import ScenarioConfig, generate

NANO = 1_000_000_000
HOUR_US = 3_600_000_000
T = 1_772_000_000_000_000  # 2026-02-25T06:13:20Z
SECRET = b"s" * 32
AAPL_ISIN, TSLA_ISIN, MSFT_ISIN = "US0378331005", "US88160R1014", "US5949181045"


def golden_state(tsla_aggr_nano: int = 61 * NANO) -> LedgerState:
    """Two accounts, the main pool and the insurance pool, three symbols.

    AAPL  multiplier 1.5 from T - 1 h.  alice wallet 100 + margin 50, bob wallet 0.000000001,
          pool 200, insurance 49.999999999  => liabilities = supply = 400 tokens;
          supply x multiplier = 600 shares; statements SAFE-1 450 + SAFE-2 150 = 600 => ratio 100 %.
    TSLA  multiplier 1.  alice wallet 10, bob margin 20.5, pool 30, insurance 0.5 => 61 tokens;
          statement 61 shares (or fewer for the under-reserved case).
    MSFT  listed, no balances, no statement: the ledger's 5 shares stand in => NO_STATEMENT.
    """
    st = LedgerState()
    aapl = ReserveState("AAPL", AAPL_ISIN, 0, shares_held_nano=600 * NANO, supply_nano=400 * NANO,
                        multipliers=[(0, NANO), (T - HOUR_US, 1_500_000_000)])
    aapl.statements = {
        "SAFE-1": Statement("S-1", 1, T - HOUR_US, 450 * NANO, 450 * NANO, 0),
        "SAFE-2": Statement("S-2", 1, T - HOUR_US, 150 * NANO, 140 * NANO, 10 * NANO),
    }
    tsla = ReserveState("TSLA", TSLA_ISIN, 0, shares_held_nano=61 * NANO, supply_nano=61 * NANO)
    tsla.statements = {"SAFE-1": Statement("S-1", 1, T - HOUR_US, tsla_aggr_nano, tsla_aggr_nano, 0)}
    msft = ReserveState("MSFT", MSFT_ISIN, 0, shares_held_nano=5 * NANO)
    st.reserves = {"TSLA": tsla, "AAPL": aapl, "MSFT": msft}
    st.accounts = {
        "alice": AccountState("alice", wallet_nano={"AAPL": 100 * NANO, "TSLA": 10 * NANO}, margin_nano={"AAPL": 50 * NANO}),
        "bob": AccountState("bob", wallet_nano={"AAPL": 1}, margin_nano={"TSLA": 20 * NANO + 500_000_000}),
    }
    st.pool.tokens_nano = {"AAPL": 200 * NANO, "TSLA": 30 * NANO}
    st.pool.insurance_tokens_nano = {"AAPL": 50 * NANO - 1, "TSLA": 500_000_000}
    return st


# --------------------------------------------------------------------------- golden figures


def test_golden_report_by_hand():
    rows = {r.symbol: r for r in por.reserve_report(golden_state(), T)}
    assert list(rows) == ["AAPL", "MSFT", "TSLA"]  # the fixed symbol order
    aapl = rows["AAPL"]
    assert aapl.custodian_aggregate_nano == 600 * NANO
    assert aapl.custodian_source == por.SOURCE_STATEMENTS and aapl.safekeeping_accounts == ("SAFE-1", "SAFE-2")
    assert aapl.shares_held_nano == 600 * NANO
    assert aapl.multiplier_nano == 1_500_000_000
    assert aapl.supply_shares_nano == 600 * NANO
    assert aapl.liabilities_tokens_nano == 400 * NANO == aapl.supply_tokens_nano
    assert aapl.ratio_ppm == 1_000_000 and aapl.verdict == por.FULLY_RESERVED
    assert aapl.custodian_token_cover_nano == 400 * NANO
    tsla = rows["TSLA"]
    assert (tsla.liabilities_tokens_nano, tsla.supply_shares_nano, tsla.ratio_ppm, tsla.verdict) == (
        61 * NANO, 61 * NANO, 1_000_000, por.FULLY_RESERVED)
    msft = rows["MSFT"]
    assert msft.custodian_aggregate_nano == 5 * NANO and msft.custodian_source == por.SOURCE_LEDGER
    assert msft.ratio_ppm is None and msft.verdict == por.NO_STATEMENT


def test_under_reserved_ratio_is_rounded_down():
    rows = {r.symbol: r for r in por.reserve_report(golden_state(tsla_aggr_nano=60 * NANO), T)}
    # 60 / 61 = 0.983606557... -> 983,606 ppm (floor)
    assert rows["TSLA"].ratio_ppm == 983_606
    assert rows["TSLA"].verdict == por.UNDER_RESERVED
    assert rows["AAPL"].verdict == por.FULLY_RESERVED


def test_multiplier_is_taken_as_of_the_time():
    rows = {r.symbol: r for r in por.reserve_report(golden_state(), T - 2 * HOUR_US)}
    assert rows["AAPL"].multiplier_nano == NANO
    assert rows["AAPL"].supply_shares_nano == 400 * NANO
    assert rows["AAPL"].ratio_ppm == 1_500_000  # 600 / 400


def test_supply_times_multiplier_rounds_up():
    assert por.shares_for_tokens_ceil(3, 1_000_000_001) == 4  # 3.000000003 nano -> 4
    assert por.shares_for_tokens_ceil(3, NANO) == 3
    assert por.tokens_covered_floor(4, 1_000_000_001) == 3  # 3.999999996 -> 3


def test_liabilities_that_differ_from_supply_are_flagged():
    st = golden_state()
    st.reserves["AAPL"].supply_nano += 1
    row = next(r for r in por.reserve_report(st, T) if r.symbol == "AAPL")
    assert not row.liabilities_match_supply


# --------------------------------------------------------------------------- tree and proofs


def test_every_proof_verifies_against_the_published_root():
    st = golden_state()
    snap = por.build_snapshot(st, T, SECRET)
    root = json.loads(json.dumps(por.root_document(snap)))  # exactly what a verifier reads back
    assert root["symbols"] == ["AAPL", "MSFT", "TSLA"]
    assert root["root_sums"] == {"AAPL": 400 * NANO, "MSFT": 0, "TSLA": 61 * NANO}
    assert root["custodian_aggregates"] == {"AAPL": 600 * NANO, "MSFT": 5 * NANO, "TSLA": 61 * NANO}
    assert root["custodian_token_cover"] == {"AAPL": 400 * NANO, "MSFT": 5 * NANO, "TSLA": 61 * NANO}
    assert root["custodian_sources"]["MSFT"] == por.SOURCE_LEDGER
    assert root["accounts"] == 4
    expected = {
        "alice": {"AAPL": 150 * NANO, "MSFT": 0, "TSLA": 10 * NANO},
        "bob": {"AAPL": 1, "MSFT": 0, "TSLA": 20_500_000_000},
        por.POOL_MAIN: {"AAPL": 200 * NANO, "MSFT": 0, "TSLA": 30 * NANO},
        por.POOL_INSURANCE: {"AAPL": 50 * NANO - 1, "MSFT": 0, "TSLA": 500_000_000},
    }
    for account, quantities in expected.items():
        proof = json.loads(json.dumps(snap.proof(account)))
        assert proof["salt"] == derive_salt(SECRET, snap.snapshot_id, account).hex()
        verified, notes = por.verify_against_root(proof, root)
        assert verified.quantities == quantities
        assert any("MSFT" in n for n in notes)  # the fallback aggregate is called out
        verified, _ = por.verify_against_root(proof, root["root_hash"])  # inclusion only, bare hash
        assert verified.account_id == account


def test_snapshot_is_deterministic_and_tied_to_time_and_state():
    st = golden_state()
    a = por.build_snapshot(st, T, SECRET)
    b = por.build_snapshot(copy.deepcopy(st), T, SECRET)
    assert (a.snapshot_id, a.root_hash) == (b.snapshot_id, b.root_hash)
    assert a.snapshot_id == f"por-2026-02-25T06:13:20Z-{state_hash(st)[:16]}"
    later = por.build_snapshot(st, T + 1, SECRET)
    assert later.snapshot_id != a.snapshot_id and later.root_hash != a.root_hash
    other_secret = por.build_snapshot(st, T, b"t" * 32)
    assert other_secret.root_hash != a.root_hash and other_secret.root_sums == a.root_sums


def test_under_reserved_root_fails_every_proof_with_the_reason():
    snap = por.build_snapshot(golden_state(tsla_aggr_nano=60 * NANO), T, SECRET)
    root = por.root_document(snap)
    for account in ("alice", "bob", por.POOL_MAIN, por.POOL_INSURANCE):
        with pytest.raises(ProofError) as err:
            por.verify_against_root(snap.proof(account), root)
        assert str(err.value) == (
            "the account is included in the published root, but liabilities exceed reserves for TSLA: root sum "
            "61000000000 nano-tokens > 60000000000 nano-tokens covered by the custodian aggregate 60000000000 "
            "nano-shares at multiplier 1000000000 (floor(aggregate x 1e9 / multiplier))")
        assert por.verify_against_root(snap.proof(account), root["root_hash"])[0].account_id == account


def test_reserve_check_uses_the_tokens_the_shares_cover_after_the_multiplier():
    st = golden_state()
    st.reserves["AAPL"].statements["SAFE-2"].aggr_qty_nano = 149 * NANO  # 599 shares at 1.5 cover 399.333333333 tokens
    snap = por.build_snapshot(st, T, SECRET)
    root = por.root_document(snap)
    assert root["custodian_token_cover"]["AAPL"] == 399_333_333_333
    assert root["verdicts"]["AAPL"] == por.UNDER_RESERVED and root["ratio_ppm"]["AAPL"] == 998_333
    with pytest.raises(ProofError, match="exceed reserves for AAPL: root sum 400000000000 nano-tokens > 399333333333"):
        por.verify_against_root(snap.proof("alice"), root)


def test_tampered_proofs_fail_with_clear_messages():
    snap = por.build_snapshot(golden_state(), T, SECRET)
    root = por.root_document(snap)
    proof = snap.proof("alice")

    bigger = copy.deepcopy(proof)
    bigger["quantities"]["AAPL"] += 1
    with pytest.raises(ProofError, match="root hash mismatch"):
        por.verify_against_root(bigger, root)

    hidden = copy.deepcopy(proof)
    hidden["path"][0]["sums"]["TSLA"] -= 1
    with pytest.raises(ProofError, match="root hash mismatch"):
        por.verify_against_root(hidden, root)

    negative = copy.deepcopy(proof)
    negative["quantities"]["TSLA"] = -1
    with pytest.raises(ProofError, match="negative quantity for TSLA"):
        por.verify_against_root(negative, root)

    other = por.root_document(por.build_snapshot(golden_state(), T + 1, SECRET))
    with pytest.raises(ProofError, match="proof is for snapshot"):
        por.verify_against_root(proof, other)

    doctored = copy.deepcopy(root)
    doctored["custodian_token_cover"]["TSLA"] += 1
    with pytest.raises(por.PorError, match="root file is inconsistent"):
        por.verify_against_root(proof, doctored)

    with pytest.raises(por.PorError, match="not a stockledger proof-of-reserves root file"):
        por.verify_against_root(proof, {"root_hash": root["root_hash"]})


def test_negative_balances_are_refused_before_anything_is_committed():
    st = golden_state()
    st.accounts["bob"].wallet_nano["AAPL"] = -1
    st.accounts["bob"].margin_nano["AAPL"] = 2  # would net to +1: must still be refused
    with pytest.raises(por.PorError, match="account 'bob': negative wallet balance -1 of AAPL"):
        por.build_snapshot(st, T, SECRET)
    st = golden_state()
    st.pool.insurance_tokens_nano["TSLA"] = -5
    with pytest.raises(por.PorError, match="pool:insurance: negative insurance balance -5 of TSLA"):
        por.build_snapshot(st, T, SECRET)


def test_account_named_like_a_pool_is_refused():
    st = golden_state()
    st.accounts["pool:main"] = AccountState("pool:main", wallet_nano={"AAPL": 0})
    with pytest.raises(por.PorError, match="collides with a pool pseudo-account"):
        por.build_snapshot(st, T, SECRET)


def test_generated_scenario_every_account_proves_against_the_root():
    rows = list(generate(ScenarioConfig(accounts=60, events=3_000, seed=5)))
    state = replay(rows).state
    as_of = max(st.as_of_us for r in state.reserves.values() for st in r.statements.values())
    # The generator issues statements of a few random shares; give the custodian what it actually holds.
    for r in state.reserves.values():
        needed = por.shares_for_tokens_ceil(r.supply_nano, r.multiplier_at(as_of))
        held = max(r.shares_held_nano, needed)
        r.statements = {"SAFE-001": Statement("FIX", 10**6, as_of, held, held, 0)}
    snap = por.build_snapshot(state, as_of, SECRET)
    root = json.loads(json.dumps(por.root_document(snap)))
    assert root["root_sums"] == {s: r.supply_nano for s, r in sorted(state.reserves.items())}
    assert set(root["verdicts"].values()) == {por.FULLY_RESERVED}
    accounts = snap.tree.account_ids
    assert len(accounts) == len(state.accounts) + 2
    total = dict.fromkeys(root["symbols"], 0)
    for account in accounts:
        verified, _ = por.verify_against_root(json.loads(json.dumps(snap.proof(account))), root)
        for s, q in verified.quantities.items():
            total[s] += q
    assert total == root["root_sums"]


# --------------------------------------------------------------------------- times


def test_parse_and_format_times():
    assert por.parse_time("2026-02-25T06:13:20Z") == T
    assert por.parse_time("2026-02-25T07:13:20+01:00") == T
    assert por.parse_time("2026-02-25T06:13:20") == T  # no offset: UTC on the command line
    assert por.parse_time(str(T)) == T
    assert por.parse_time("2026-02-25T06:13:20.000001Z") == T + 1
    with pytest.raises(ValueError, match="no time zone"):
        por.parse_time("2026-02-25T06:13:20", naive_is_utc=False)
    with pytest.raises(ValueError):
        por.parse_time("yesterday")
    assert por.format_time(T) == "2026-02-25T06:13:20Z"
    assert por.format_time(T + 5) == "2026-02-25T06:13:20.000005Z"
    assert por.format_nano(12_000_000_001) == "12.000000001"
    assert por.format_nano(1_234_500_000_000) == "1,234.5"
    assert por.format_ppm(983_606) == "98.3606 %"


# --------------------------------------------------------------------------- CLI on a real archive


def write_events(path: Path, events: list[tuple[str, dict]]) -> Path:
    rows = []
    for subject, record in events:
        topic, key_field = SUBJECT_ROUTES[subject]
        rows.append((topic, str(record[key_field]), encode(subject, record)))
    write_archive(path, rows, seed_label=path.name)
    return path


def small_archive(path: Path, statement_aggr_nano: int = 100 * NANO) -> Path:
    """alice: wallet 50 + margin 10; bob: wallet 25 after an LP deposit of 15 => 100 AAPL tokens owed."""
    s = 1_000_000
    return write_events(path, [
        ("StockListed", stock_listed("AAPL", isin=AAPL_ISIN, at=T0)),
        ("PriceMark", price_mark("AAPL", 200_000_000, at=T0)),
        ("CustodyMovement", custody_movement("AAPL", 100 * NANO, isin=AAPL_ISIN, at=T0)),
        ("HoldingStatement", holding_statement("AAPL", statement_aggr_nano, statement_aggr_nano, 0, isin=AAPL_ISIN, at=T0)),
        ("MintRequest", mint("AAPL", "alice", 60 * NANO, at=T0 + s)),
        ("MintRequest", mint("AAPL", "bob", 40 * NANO, at=T0 + s)),
        ("CollateralDeposit", collateral_deposit("alice", "AAPL", 10 * NANO, at=T0 + 2 * s)),
        ("LpDeposit", lp_deposit("bob", "AAPL", 15 * NANO, at=T0 + 3 * s)),
        ("SupplyObservation", supply_observation("AAPL", 100 * NANO, 1, at=T0 + 4 * s)),
    ])


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv(por.SECRET_ENV, "x" * 32)


def test_cli_publish_prove_verify(tmp_path, secret_env):
    archive = small_archive(tmp_path / "a.avro")
    runner = CliRunner()
    root_file, proof_file = tmp_path / "root.json", tmp_path / "alice.json"

    res = runner.invoke(por_app, ["publish", "--archive", str(archive), "--out", str(root_file)])
    assert res.exit_code == 0, res.output
    root = json.loads(root_file.read_text())
    assert root["as_of_us"] == T0 + 4_000_000  # the last event's time
    assert root["root_sums"] == {"AAPL": 100 * NANO}
    assert root["verdicts"] == {"AAPL": por.FULLY_RESERVED}

    res = runner.invoke(por_app, ["prove", "alice", "--archive", str(archive), "--out", str(proof_file)])
    assert res.exit_code == 0, res.output
    proof = json.loads(proof_file.read_text())
    assert proof["quantities"] == {"AAPL": 60 * NANO} and proof["root_hash"] == root["root_hash"]

    res = runner.invoke(por_app, ["verify", str(proof_file), "--root", str(root_file)])
    assert res.exit_code == 0, res.output
    assert "OK" in res.output and "alice" in res.output and "AAPL: 60 (60000000000 nano)" in res.output

    res = runner.invoke(por_app, ["verify", str(proof_file), "--root", root["root_hash"]])
    assert res.exit_code == 0 and "bare hash" in res.output

    proof["quantities"]["AAPL"] = 61 * NANO
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(proof))
    res = runner.invoke(por_app, ["verify", str(tampered), "--root", str(root_file)])
    assert res.exit_code == 1
    assert "FAILED" in res.output and "root hash mismatch" in res.output

    res = runner.invoke(por_app, ["verify", str(proof_file), "--root", "not-a-root"])
    assert res.exit_code == 2

    # Exit 2 for arguments that cannot be used, as docs/AUDITOR.md says (was 1 for a non-JSON proof and a
    # wrong-kind root; a repeated key was silently "last one wins").
    not_json, deep, dup, wrong_kind = (tmp_path / n for n in ("nj.json", "deep.json", "dup.json", "wk.json"))
    not_json.write_text("{bad")
    deep.write_text("[" * 100_000 + "]" * 100_000)
    dup.write_text(proof_file.read_text().replace('"leaf_index"', '"leaf_index": 9, "leaf_index"', 1))
    wrong_kind.write_text(json.dumps({"kind": "something-else"}))
    for args, needle in (([str(not_json), "--root", str(root_file)], "not valid JSON"),
                         ([str(deep), "--root", str(root_file)], "nested too deeply"),
                         ([str(dup), "--root", str(root_file)], "appears twice"),
                         ([str(proof_file), "--root", str(wrong_kind)], "cannot be used")):
        res = runner.invoke(por_app, ["verify", *args])
        assert res.exit_code == 2 and needle in " ".join(res.output.split()), (args, res.output)

    res = runner.invoke(por_app, ["prove", "carol", "--archive", str(archive), "--out", str(tmp_path / "c.json")])
    assert res.exit_code == 1 and "'carol' is not in snapshot" in res.output


def test_cli_report_exit_codes_and_as_of(tmp_path, secret_env):
    runner = CliRunner()
    ok = small_archive(tmp_path / "ok.avro")
    res = runner.invoke(por_app, ["report", "--archive", str(ok)])
    assert res.exit_code == 0, res.output
    assert "FULLY_RESERVED" in res.output and "root " in res.output

    short = small_archive(tmp_path / "short.avro", statement_aggr_nano=99 * NANO)
    res = runner.invoke(por_app, ["report", "--archive", str(short)])
    assert res.exit_code == 1 and "UNDER_RESERVED" in res.output and "99.0000 %" in res.output

    # As of the listing time, the mints (1 s later) are left out: nothing is owed yet.
    root_file = tmp_path / "early.json"
    res = runner.invoke(por_app, ["publish", "--archive", str(ok), "--out", str(root_file), "--as-of", por.format_time(T0)])
    assert res.exit_code == 0, res.output
    early = json.loads(root_file.read_text())
    assert early["as_of_us"] == T0 and early["root_sums"] == {"AAPL": 0}
    assert early["snapshot_id"].startswith(f"por-{por.format_time(T0)}-")


def test_cli_needs_a_secret_to_commit(tmp_path, monkeypatch):
    monkeypatch.delenv(por.SECRET_ENV, raising=False)
    archive = small_archive(tmp_path / "a.avro")
    runner = CliRunner()
    res = runner.invoke(por_app, ["publish", "--archive", str(archive), "--out", str(tmp_path / "r.json")])
    assert res.exit_code == 2 and por.SECRET_ENV in res.output
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(b"y" * 32 + b"\n")
    res = runner.invoke(por_app, ["publish", "--archive", str(archive), "--out", str(tmp_path / "r.json"),
                                  "--secret-file", str(secret_file)])
    assert res.exit_code == 0, res.output
    # The report still prints the reserves without a secret, just not the root.
    res = runner.invoke(por_app, ["report", "--archive", str(archive)])
    assert res.exit_code == 0 and "root: not computed" in res.output


def test_replayed_archive_matches_the_report(tmp_path):
    archive = small_archive(tmp_path / "a.avro")
    state = replay(read_archive(archive)).state
    (row,) = por.reserve_report(state, T0 + 4_000_000)
    assert (row.custodian_aggregate_nano, row.shares_held_nano, row.supply_shares_nano, row.liabilities_tokens_nano) == (
        100 * NANO, 100 * NANO, 100 * NANO, 100 * NANO)
    balances = dict(por.liability_balances(state, ("AAPL",)))
    assert balances == {"alice": (60 * NANO,), "bob": (25 * NANO,), por.POOL_MAIN: (15 * NANO,), por.POOL_INSURANCE: (0,)}
