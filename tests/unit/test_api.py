"""The read-only HTTP API (FastAPI TestClient) over the hand-made ledger of test_audit.py."""

from __future__ import annotations

import warnings

import duckdb
import pytest
from test_audit import ALICE_MARGIN, NANO, POSTINGS, USD, T, build_ledger_db

from services.api import create_app
from services.auth import AUDITOR, TokenStore

with warnings.catch_warnings():  # starlette's TestClient warns about httpx at import; not ours to fix
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture
def client(tmp_path):
    db = build_ledger_db(tmp_path / "ledger.duckdb")
    _, token = TokenStore(tmp_path / "tokens.json").create(AUDITOR)
    with TestClient(create_app(db, tokens=tmp_path / "tokens.json"), headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def test_health_lists_tables_and_offsets(client):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["tables"]["posting_batches"] == 8 and body["tables"]["postings"] == 12
    assert {"topic": POSTINGS, "partition": 0, "next_offset": 8} in body["offsets"]


def test_balance_as_of_and_recorded_as_of(client):
    url = f"/balances/{ALICE_MARGIN}/AAPL"
    assert client.get(url).json()["balance_minor"] == 5_500_000_000
    assert client.get(url, params={"as_of": T(1500)}).json()["balance_minor"] == 7 * NANO
    assert client.get(url, params={"recorded_as_of": T(2000)}).json()["balance_minor"] == 3_500_000_000
    iso = "2025-03-03T12:13:20Z"  # T(4000)... and ISO works as well as microseconds
    assert client.get(url, params={"as_of": iso}).json()["as_of_us"] == 1_741_004_000_000_000


def test_balance_errors_are_clear(client):
    r = client.get("/balances/user:nobody:wallet:AAPL/AAPL")
    assert r.status_code == 404 and "no postings" in r.json()["detail"]
    r = client.get(f"/balances/{ALICE_MARGIN}/AAPL", params={"as_of": "next tuesday"})
    assert r.status_code == 422 and "as_of" in r.json()["detail"]


def test_history_with_lineage(client):
    r = client.get(f"/history/{ALICE_MARGIN}/AAPL")
    assert r.status_code == 200
    rows = r.json()["rows"]
    assert [(x["event_id"], x["amount_minor"], x["balance_minor"]) for x in rows] == [
        ("post:dep-1", 5 * NANO, 5 * NANO), ("post:late-3", 2 * NANO, 7 * NANO), ("post:dep-2", -1_500_000_000, 5_500_000_000)]
    assert (rows[1]["topic"], rows[1]["partition"], rows[1]["offset"]) == (POSTINGS, 0, 5)
    assert len(client.get(f"/history/{ALICE_MARGIN}/AAPL", params={"limit": 1}).json()["rows"]) == 1
    assert client.get(f"/history/{ALICE_MARGIN}/AAPL", params={"limit": 0}).status_code == 422
    assert client.get("/history/nobody/AAPL").status_code == 404


def test_trial_balance(client):
    body = client.get("/trial-balance").json()
    assert body["balanced"] is True and body["ok"] is False
    assert body["flagged_clearing"] == ["custodian:MSFT:in_transit"]
    usd = next(a for a in body["assets"] if a["asset"] == "USD")
    assert usd["total_debits_minor"] == usd["total_credits_minor"] == 700 * USD
    assert client.get("/trial-balance", params={"as_of": T(2000)}).json()["ok"] is True


def test_liquidations(client):
    body = client.get("/liquidations/bob").json()
    [liq] = body["liquidations"]
    assert liq["health_ppm"] == 750_000 and liq["below_maintenance"] is True
    assert all(liq["checks"].values())
    assert [s["step"] for s in liq["waterfall"]] == ["ACCOUNT_MARGIN", "PENALTY", "INSURANCE", "LP_SOCIALISED"]
    r = client.get("/liquidations/nobody")
    assert r.status_code == 404 and "no liquidation" in r.json()["detail"]


def test_rejections(client):
    rows = client.get("/rejections", params={"reason": "insufficient_balance"}).json()
    assert [(x["event_id"], x["original"]) for x in rows] == [("reject:margin.events:0:77", b"\x00\x01raw".hex())]
    assert client.get("/rejections", params={"reason": "stale_price"}).json() == []
    assert len(client.get("/rejections").json()) == 1
    r = client.get("/rejections", params={"reason": "bogus"})
    assert r.status_code == 422 and "insufficient_balance" in r.json()["detail"]


def test_pool_endpoints(client):
    nav = client.get("/pool/nav").json()["points"]
    assert [p["share_value_micro_usd"] for p in nav] == [1_200_000, 1_000_000]
    book = client.get("/pool/book", params={"limit": 1}).json()["points"]
    assert book[0]["tokens_nano"] == {"AAPL": 3_500_000_000, "MSFT": NANO}


def test_export_parquet_download(client, tmp_path):
    r = client.get("/export/postings")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    out = tmp_path / "dl.parquet"
    out.write_bytes(r.content)
    assert duckdb.connect().execute(f"SELECT COUNT(*), SUM(amount_minor)::HUGEINT FROM '{out}'").fetchone() == (
        12, 5 * NANO + 10 * NANO + 10 * NANO + 1_500_000_000 + 250 * USD + 3 * NANO + 2 * NANO + NANO + 1000 * NANO
        + 2 * NANO + 380 * USD + 70 * USD)
    assert client.get("/export/balances").status_code == 200
    r = client.get("/export/secrets")
    assert r.status_code == 404 and "postings" in r.json()["detail"]


def test_snapshot_is_a_consistent_readable_copy(client, tmp_path):
    r = client.get("/snapshot")
    assert r.status_code == 200
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(r.content)
    con = duckdb.connect(str(copy), read_only=True)
    assert con.execute("SELECT COUNT(*) FROM posting_batches").fetchone() == (8,)
    assert con.execute(f"SELECT balance_minor FROM balances WHERE account = '{ALICE_MARGIN}'").fetchone() == (5_500_000_000,)
    con.close()


def test_openapi_docs(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/balances/{account}/{asset}", "/history/{account}/{asset}", "/trial-balance",
            "/liquidations/{account}", "/rejections", "/export/{table}"} <= set(paths)


@pytest.mark.parametrize("skip", ["1e20", str(10**20), str(2**63), "-1"])
def test_an_out_of_range_skip_is_a_4xx_not_a_500(client, skip):
    r = client.get("/rejections", params={"skip": skip})
    assert 400 <= r.status_code < 500, r.text
    assert len(r.text) < 2_000


def test_health_reads_counts_and_offsets_from_one_committed_state(tmp_path, monkeypatch):
    """A batch committed between the offsets read and the counts read gave new counts with old offsets."""
    from services import audit

    db = build_ledger_db(tmp_path / "ledger.duckdb")
    con = duckdb.connect(str(db))
    writer = con.cursor()
    real_counts = audit.table_counts

    def counts_after_a_commit(cur):
        writer.execute("INSERT INTO projector_offsets VALUES ('late.topic', 0, 5, 0)")  # the projector commits
        return real_counts(cur)

    monkeypatch.setattr(audit, "table_counts", counts_after_a_commit)
    _, token = TokenStore(tmp_path / "tokens.json").create(AUDITOR)
    with TestClient(create_app(db, tokens=tmp_path / "tokens.json", connection=con)) as c:
        body = c.get("/health", headers={"Authorization": f"Bearer {token}"}).json()
    assert body["tables"]["projector_offsets"] == len(body["offsets"])
    con.close()


def test_a_holder_gets_its_own_por_proof_only_and_an_auditor_any(tmp_path):
    """The issue's last role rule: an account holder reads only its own proof of reserves."""
    import json

    from services.api_por import ROOT_FILE, proof_file_name
    from services.auth import HOLDER

    db = build_ledger_db(tmp_path / "ledger.duckdb")
    proofs = tmp_path / "proofs"
    proofs.mkdir()
    for account in ("acct-1", "acct/2"):
        (proofs / proof_file_name(account)).write_text(json.dumps({"account_id": account, "leaf_index": 0}))
    (proofs / ROOT_FILE).write_text(json.dumps({"kind": "stockledger-por-root", "root_hash": "ab" * 32}))
    store = TokenStore(tmp_path / "tokens.json")
    holder = store.create(HOLDER, account="acct-1")[1]
    auditor = store.create(AUDITOR)[1]
    with TestClient(create_app(db, tokens=tmp_path / "tokens.json", por_dir=proofs)) as c:
        def get(token, **params):
            return c.get("/por/proof", params=params, headers={"Authorization": f"Bearer {token}"} if token else {})

        own = get(holder)
        assert own.status_code == 200 and own.json()["proof"]["account_id"] == "acct-1"
        assert own.json()["root"]["root_hash"] == "ab" * 32
        assert get(holder, account="acct/2").status_code == 403
        assert get(auditor, account="acct/2").json()["proof"]["account_id"] == "acct/2"
        assert get(auditor).status_code == 422
        assert get(auditor, account="nobody").status_code == 404
        assert get(None).status_code == 401
    with TestClient(create_app(db, tokens=tmp_path / "tokens.json")) as c:
        assert c.get("/por/proof", headers={"Authorization": f"Bearer {holder}"}).status_code == 404
