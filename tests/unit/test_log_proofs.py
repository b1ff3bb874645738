"""Signed checkpoints, proof files and `log audit` on a real DuckDB file written by the offline replay."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from ledger.merkle_log import Frontier, ProofError
from services import log_proofs, por
from services.archive import read_archive, write_archive
from services.checkpoint_note import (
    Checkpoint,
    NoteError,
    generate_signer,
    open_note,
    parse_signer,
    parse_verifier,
)
from services.cli import app
from services.duckdb_sink import DuckDBSink
from services.log_audit import audit
from services.log_keys import load_signer, verifier_path
from services.replay import replay
from services.scenario import ScenarioConfig, generate

ORIGIN = "stockledger.test/ledger"


@pytest.fixture(scope="module")
def signer():
    return generate_signer(ORIGIN)


@pytest.fixture(scope="module")
def built(tmp_path_factory, signer):
    """A replayed scenario in DuckDB plus signed heads at three sizes (as the worker would sign them)."""
    d = tmp_path_factory.mktemp("log")
    archive = d / "a.avro"
    write_archive(archive, generate(ScenarioConfig(accounts=40, events=1_500, seed=5)), "log-test")
    db = d / "r.duckdb"
    sink = DuckDBSink(db)
    result = replay(read_archive(archive), sink=sink)
    sink.close(result.meta(str(archive)))
    size = result.state.log.size
    sizes = [size // 3, (2 * size) // 3 + 1, size]
    frontier, roots = Frontier(), {}
    for i, (topic, key, value) in enumerate(read_archive(archive), 1):
        from ledger.log_entry import entry_leaf_hash

        frontier.append(entry_leaf_hash(topic, key, value))
        if i in sizes:
            roots[i] = frontier.root()
    con = duckdb.connect(str(db))
    for s in sizes:
        note = signer.sign(Checkpoint(ORIGIN, s, roots[s]).body())
        con.execute("INSERT INTO tree_heads VALUES (?, ?, ?, ?, ?, ?, 0, 0, 'stockledger', 'ledger.tree_heads', 0, ?)",
                    [f"tree-head:{ORIGIN}:{s}", ORIGIN, s, roots[s].hex(), ORIGIN, note, s])
    con.close()
    return db, sizes, result.state.log.root()


def test_signed_note_round_trip_and_c2sp_shapes(signer):
    cp = Checkpoint(ORIGIN, 12, bytes(range(32)))
    assert cp.body() == f"{ORIGIN}\n12\n{base64.b64encode(bytes(range(32))).decode()}\n"
    note = signer.sign(cp.body())
    body, sig_line = note.split("\n\n")
    assert body + "\n" == cp.body() and sig_line.startswith(f"\u2014 {ORIGIN} ") and sig_line.endswith("\n")
    assert len(base64.b64decode(sig_line.split(" ")[2])) == 4 + 64  # key id + Ed25519 signature
    verifier = parse_verifier(signer.verifier_key())
    assert open_note(note, verifier) == cp
    assert parse_signer(signer.encode()) == signer


def test_tampered_or_foreign_notes_fail(signer):
    verifier = parse_verifier(signer.verifier_key())
    note = signer.sign(Checkpoint(ORIGIN, 12, bytes(32)).body())
    for bad in (note.replace("\n12\n", "\n13\n"), note.replace(ORIGIN + "\n", "other.log\n", 1), note[:-3] + "AA\n",
                note.replace("\n\n", "\n"), note + "junk"):
        with pytest.raises(NoteError):
            open_note(bad, verifier)
    other = generate_signer(ORIGIN)
    with pytest.raises(NoteError, match="no signature"):
        open_note(other.sign(Checkpoint(ORIGIN, 12, bytes(32)).body()), verifier)


def test_key_file_is_private_and_reused(tmp_path):
    key = tmp_path / "keys" / "k.key"
    s1 = load_signer(key, ORIGIN)
    assert key.stat().st_mode & 0o777 == 0o600
    assert load_signer(key, ORIGIN) == s1
    assert verifier_path(key).read_text().strip() == s1.verifier_key()
    key.chmod(0o644)
    with pytest.raises(NoteError, match="readable by others"):
        load_signer(key, ORIGIN)


def test_inclusion_and_consistency_proofs_verify_offline(built, signer):
    db, sizes, _ = built
    verifier = parse_verifier(signer.verifier_key())
    con = duckdb.connect(str(db), read_only=True)
    latest = log_proofs.head(con)
    assert latest.tree_size == sizes[-1]
    batch = con.execute("SELECT event_id FROM posting_batches ORDER BY event_id LIMIT 1 OFFSET 7").fetchone()[0]
    leaf = log_proofs.find_leaf(con, event_id=batch)
    doc = json.loads(json.dumps(log_proofs.inclusion_document(con, leaf, latest)))
    summary, cp = log_proofs.verify_document(doc, verifier)
    assert cp.size == sizes[-1] and f"entry {leaf}" in summary
    cons = log_proofs.consistency_document(con, log_proofs.head(con, sizes[0]), log_proofs.head(con, sizes[1]))
    log_proofs.verify_document(cons, verifier)
    # Tampering: the entry's bytes, a path hash, the claimed index, a checkpoint swapped for another head's.
    bad_entry = dict(doc, entry=dict(doc["entry"], value_b64=base64.b64encode(b"forged").decode()))
    bad_path = dict(doc, path=[("0" if doc["path"][0][0] != "0" else "1") + doc["path"][0][1:], *doc["path"][1:]])
    bad_index = dict(doc, leaf_index=leaf + 1)
    bad_cp = dict(doc, checkpoint=log_proofs.head(con, sizes[1]).note)
    for bad in (bad_entry, bad_path, bad_index, bad_cp, dict(cons, path=cons["path"][1:])):
        with pytest.raises(ProofError):
            log_proofs.verify_document(bad, verifier)


def test_audit_of_an_untouched_file_is_clean(built, signer):
    db, sizes, root = built
    con = duckdb.connect(str(db), read_only=True)
    report = audit(con, parse_verifier(signer.verifier_key()))
    assert report.ok, report.findings[:5]
    assert report.entries == sizes[-1] and report.heads_checked == 3 and report.root_hash == root.hex()
    assert report.rows_compared > report.entries  # postings, outcomes, liquidations were all compared


@pytest.mark.parametrize(("edit", "table", "needle"), [
    ("UPDATE postings SET amount_minor = amount_minor + 1 WHERE event_id = (SELECT MIN(event_id) FROM postings) AND leg = 0",
     "postings", "edited: amount_minor"),
    ("DELETE FROM request_outcomes WHERE event_id = (SELECT MIN(event_id) FROM request_outcomes)",
     "request_outcomes", "deleted"),
    ("INSERT INTO posting_batches SELECT 'post:forged', cause_event_id, cause_kind, legs, occurred_at_us, recorded_at_us, "
     "source, topic, \"partition\", \"offset\" FROM posting_batches LIMIT 1", "posting_batches", "inserted"),
    ("UPDATE log_entries SET value = value || '\\x00'::BLOB WHERE leaf_index = 3", "log_entries", "leaf 3"),
    ("DELETE FROM log_entries WHERE leaf_index = 10", "log_entries", "missing"),
    ("UPDATE tree_heads SET root_hash = repeat('0', 64) WHERE tree_size = (SELECT MIN(tree_size) FROM tree_heads)",
     "tree_heads", "differs from its signed note"),
])
def test_audit_names_an_edited_deleted_or_inserted_row(built, signer, tmp_path, edit, table, needle):
    db, _, _ = built
    copy = tmp_path / "t.duckdb"
    copy.write_bytes(Path(db).read_bytes())
    con = duckdb.connect(str(copy))
    con.execute(edit)
    con.close()
    report = audit(duckdb.connect(str(copy), read_only=True), parse_verifier(signer.verifier_key()))
    assert not report.ok
    assert any(f.table == table and needle in str(f) for f in report.findings), [str(f) for f in report.findings[:5]]


def test_audit_catches_an_entry_edited_together_with_its_hash(built, signer, tmp_path):
    """The stored leaf hash is rewritten to match: only the signed root can tell, and it names the range."""
    db, sizes, _ = built
    copy = tmp_path / "t.duckdb"
    copy.write_bytes(Path(db).read_bytes())
    con = duckdb.connect(str(copy))
    from ledger.log_entry import entry_leaf_hash

    topic, key = con.execute("SELECT source_topic, key FROM log_entries WHERE leaf_index = 5").fetchone()
    con.execute("UPDATE log_entries SET value = ?, leaf_hash = ? WHERE leaf_index = 5",
                [b"x", entry_leaf_hash(topic, key, b"x")])
    con.close()
    report = audit(duckdb.connect(str(copy), read_only=True), parse_verifier(signer.verifier_key()))
    assert any(f.table == "log_entries" and f.row == f"leaves 0..{sizes[0] - 1}" for f in report.findings)


def test_log_cli_prove_and_verify(built, signer, tmp_path):
    db, sizes, _ = built
    runner = CliRunner()
    pub = tmp_path / "v.pub"
    pub.write_text(signer.verifier_key() + "\n")
    proof = tmp_path / "p.json"
    r = runner.invoke(app, ["log", "prove-inclusion", "--db", str(db), "--leaf", "4", "--out", str(proof)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["log", "verify", str(proof), "--public-key", str(pub)])
    assert r.exit_code == 0 and "OK" in r.output, r.output
    doc = json.loads(proof.read_text())
    doc["leaf_index"] = 5
    proof.write_text(json.dumps(doc))
    r = runner.invoke(app, ["log", "verify", str(proof), "--public-key", str(pub)])
    assert r.exit_code == 1 and "FAILED" in r.output
    cons = tmp_path / "c.json"
    r = runner.invoke(app, ["log", "prove-consistency", str(sizes[0]), str(sizes[2]), "--db", str(db), "--out", str(cons)])
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["log", "verify", str(cons), "--public-key", str(pub)]).exit_code == 0
    r = runner.invoke(app, ["log", "audit", "--db", str(db), "--public-key", str(pub)])
    assert r.exit_code == 0 and "OK" in r.output, r.output


def test_por_root_binding_to_a_signed_head(signer):
    doc = {"log": {"tree_size": 10, "root_hash": "ab" * 32}}
    por.check_log_binding(doc, 10, "ab" * 32)
    with pytest.raises(por.PorError, match="not the checkpoint"):
        por.check_log_binding(doc, 11, "ab" * 32)
    with pytest.raises(por.PorError, match="no Merkle log"):
        por.check_log_binding({}, 10, "ab" * 32)


def test_api_serves_heads_and_proofs_that_verify(built, signer, tmp_path):
    import warnings

    from services.api import create_app
    from services.auth import AUDITOR, OPERATOR, TokenStore

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    db, sizes, _ = built
    verifier = parse_verifier(signer.verifier_key())
    store = TokenStore(tmp_path / "tokens.json")
    auditor, operator = store.create(AUDITOR)[1], store.create(OPERATOR)[1]
    with TestClient(create_app(db, tokens=tmp_path / "tokens.json")) as client:
        assert client.get("/log/head").status_code == 401
        assert client.get("/log/head", headers={"Authorization": f"Bearer {operator}"}).status_code == 403
        client.headers["Authorization"] = f"Bearer {auditor}"
        head = client.get("/log/head")
        assert head.status_code == 200 and open_note(head.text, verifier).size == sizes[-1]
        proof = client.get("/log/inclusion", params={"leaf": 2})
        assert proof.status_code == 200
        log_proofs.verify_document(proof.json(), verifier)
        cons = client.get("/log/consistency", params={"old": sizes[0]})
        log_proofs.verify_document(cons.json(), verifier)
        assert client.get("/log/head", params={"size": 1}).status_code == 404
        assert client.get("/log/inclusion").status_code == 422
        assert client.get("/log/inclusion", params={"leaf": 10**30}).status_code == 422
