"""The Merkle log through the real broker: signed heads from the worker, proofs from the projection, audit of edits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import duckdb
import pytest
from typer.testing import CliRunner

from services import log_proofs
from services.archive import read_archive, write_archive
from services.checkpoint_note import parse_verifier
from services.cli import app
from services.producer import produce_rows
from services.projector import Projector
from services.replay import replay
from services.stream_status import committed_fold_offset, read_sequenced
from tests.integration.streams_harness import REPO_ROOT, fresh_stream_env, make_archive, stop, wait_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_worker_signs_heads_projection_proves_and_audit_names_an_edited_row(kafka_bootstrap, tmp_path):
    env = fresh_stream_env(kafka_bootstrap, tmp_path)
    key = tmp_path / "keys" / "log.key"
    worker_env = env.env() | {"STOCKLEDGER_LOG_KEY_FILE": str(key), "STOCKLEDGER_LOG_CHECKPOINT_EVERY_RECORDS": "700"}
    rows = list(read_archive(make_archive(tmp_path, accounts=80, events=2_500, seed=11)))
    half = len(rows) // 2
    log = open(tmp_path / "worker-merkle.log", "w")  # noqa: SIM115 - kept open for the child
    worker = subprocess.Popen([sys.executable, "-m", "services.cli", "worker", "--idle-ms", "200"], cwd=REPO_ROOT,
                              env=worker_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        produce_rows(kafka_bootstrap, rows[:half])
        wait_caught_up(env, half, workers=[worker])
        produce_rows(kafka_bootstrap, rows[half:])
        wait_caught_up(env, len(rows), workers=[worker])
        until = committed_fold_offset(kafka_bootstrap, env.app_id)
        entries = sum(1 for _ in read_sequenced(kafka_bootstrap, until))  # batches hold many entries each
        db = tmp_path / "projected.duckdb"
        projector = Projector(db, bootstrap=kafka_bootstrap, group_id=f"{env.app_id}-projector")
        deadline = time.monotonic() + 120
        try:
            while True:  # the head of the final size is signed once the fold is idle
                projector.catch_up(timeout_s=60)
                sizes = [r[0] for r in projector.con.execute("SELECT tree_size FROM tree_heads").fetchall()]
                if entries in sizes or time.monotonic() > deadline:
                    break
                time.sleep(1)
        finally:
            projector.close()
    finally:
        stop(worker)
    assert entries in sizes, f"no head of the final size {entries}: {sorted(sizes)}"
    assert len(sizes) >= 3  # every 700 entries and when idle: several heads over the run
    verifier = parse_verifier(key.with_suffix(".pub").read_text())

    # The live log is the log of the same entries offline: an export replays to the very same root.
    export = tmp_path / "export.avro"
    write_archive(export, read_sequenced(kafka_bootstrap, until), "export")
    assert replay(read_archive(export)).state.log.root().hex() == log_proofs.head(duckdb.connect(str(db), read_only=True)).root_hash

    con = duckdb.connect(str(db), read_only=True)
    first, latest = log_proofs.head(con, min(s for s in sizes if s > 0)), log_proofs.head(con)
    summary, _ = log_proofs.verify_document(log_proofs.consistency_document(con, first, latest), verifier)
    assert f"size {first.tree_size} is a prefix" in summary
    batch = con.execute("SELECT event_id FROM posting_batches WHERE cause_kind = 'TradeRequest' LIMIT 1").fetchone()[0]
    proof = log_proofs.inclusion_document(con, log_proofs.find_leaf(con, event_id=batch), latest)
    log_proofs.verify_document(json.loads(json.dumps(proof)), verifier)
    target = con.execute("SELECT event_id, leg FROM postings WHERE cause_kind = 'TradeRequest' LIMIT 1").fetchone()
    con.close()

    runner = CliRunner()
    pub = str(key.with_suffix(".pub"))
    clean = runner.invoke(app, ["log", "audit", "--db", str(db), "--public-key", pub])
    assert clean.exit_code == 0 and "OK" in clean.output, clean.output
    con = duckdb.connect(str(db))
    con.execute("UPDATE postings SET amount_minor = amount_minor * 2 WHERE event_id = ? AND leg = ?", list(target))
    con.close()
    edited = runner.invoke(app, ["log", "audit", "--db", str(db), "--public-key", pub])
    assert edited.exit_code == 1, edited.output
    assert f"postings event_id={target[0]}, leg={target[1]}: edited: amount_minor" in edited.output
    assert os.path.exists(pub)
