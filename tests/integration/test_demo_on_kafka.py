"""`stockledger demo` end to end on the real broker: its report equals the offline replay's (counts, reserves, hash)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from services.archive import read_archive
from services.cli import app
from services.replay import replay

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_demo_on_kafka_matches_the_offline_replay(kafka_bootstrap, tmp_path, monkeypatch):
    host, port = kafka_bootstrap.split(":")
    monkeypatch.setenv("STOCKLEDGER_KAFKA_HOST", host)
    monkeypatch.setenv("STOCKLEDGER_KAFKA_PORT", port)
    from services.settings import get_settings

    get_settings.cache_clear()
    try:
        runner = CliRunner()
        kafka_dir, embedded_dir = tmp_path / "kafka", tmp_path / "embedded"
        args = ["--accounts", "60", "--events", "2500", "--seed", "3"]
        on_kafka = runner.invoke(app, ["demo", *args, "--out-dir", str(kafka_dir), "--report-json", str(tmp_path / "k.json"),
                                       "--api-port", "18089", "--verify-fold"])
        assert on_kafka.exit_code == 0, on_kafka.output
        embedded = runner.invoke(app, ["demo", "--embedded", *args, "--out-dir", str(embedded_dir),
                                       "--report-json", str(tmp_path / "e.json")])
        assert embedded.exit_code == 0, embedded.output
    finally:
        get_settings.cache_clear()
    k = json.loads((tmp_path / "k.json").read_text())
    e = json.loads((tmp_path / "e.json").read_text())
    archive = next(kafka_dir.glob("scenario-*.avro"))
    offline = replay(read_archive(archive))
    assert k["state_hash"] == e["state_hash"] == offline.hash()
    assert k["reserves"] == e["reserves"]
    assert k["breaks"] == e["breaks"]
    assert k["liquidations"] == e["liquidations"] == offline.state.counters.liquidations
    # counts: Kafka's per-topic applied/duplicates/rejected equal the offline replay's
    for kind in ("applied", "duplicates", "rejected"):
        assert {t: n for t, n in k["counts"][kind].items() if n} == {t: n for t, n in getattr(offline, kind).items() if n}, kind
    assert k["counts"]["rejected_by_reason"] == offline.rejected_by_reason
    for text in ("Published records per topic", "Proof of reserves", "Reconciliation breaks", "Liquidations", "Pools",
                 "snapshot at the end of ledger.sequenced", "equals a fresh fold", "stockledger por verify"):
        assert text in " ".join(on_kafka.output.split()), text
    # The published PoR root is re-provable later, for any account, from the log the worker folded, and
    # bound to the worker's signed head of that log (the earlier demo's as-of and hex secret made it not).
    root = json.loads((kafka_dir / "por-root.json").read_text())
    assert root["log"] == {"tree_size": k["log_tree_size"], "root_hash": k["log_root_hash"]}
    proofs = tmp_path / "proofs"
    again = runner.invoke(app, ["por", "prove", "--archive", str(kafka_dir / "ledger-log.avro"), "--root",
                                str(kafka_dir / "por-root.json"), "--secret-file", str(kafka_dir / "por-secret"),
                                "--all", "--out", str(proofs)])
    assert again.exit_code == 0, again.output
    assert len(list(proofs.glob("proof-*.json"))) == root["accounts"]
    some = sorted(proofs.glob("proof-acct-*.json"))[len(root["symbols"])]
    verified = runner.invoke(app, ["por", "verify", str(some), "--root", str(kafka_dir / "por-root.json"),
                                   "--checkpoint", str(kafka_dir / "log-checkpoint.txt"),
                                   "--public-key", str(kafka_dir / "log-verifier.pub")])
    assert verified.exit_code == 0, verified.output
    assert "computed from the log of size" in verified.output
