"""API tokens and roles: the token store, the rate limiter, size bounds, a holder confined to its accounts."""

from __future__ import annotations

import json
import warnings

import pytest
from test_audit import ALICE_MARGIN, build_ledger_db

from services.api import create_app
from services.auth import AUDITOR, HOLDER, OPERATOR, RateLimiter, TokenError, TokenStore
from services.settings import Settings

with warnings.catch_warnings():  # starlette's TestClient warns about httpx at import; not ours to fix
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def test_tokens_are_stored_hashed_0600_and_revocable(tmp_path):
    store = TokenStore(tmp_path / "tokens.json")
    record, token = store.create(HOLDER, "alice", label="alice's phone")
    text = store.path.read_text()
    secret = token.removeprefix(f"slt_{record.id}_")  # the secret may itself hold '_' (URL-safe base64)
    assert secret != token and len(secret) >= 32
    assert token not in text and secret not in text
    assert json.loads(text)["tokens"][0]["sha256"] == record.sha256
    assert store.path.stat().st_mode & 0o777 == 0o600
    assert store.authenticate(token) == record
    assert store.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert store.authenticate("slt_" + record.id + "_short") is None
    store.revoke(record.id)
    assert TokenStore(store.path).authenticate(token) is None
    assert store.authenticate(token) is None  # the same store sees the change to its file


def test_token_roles_and_accounts_are_checked(tmp_path):
    store = TokenStore(tmp_path / "tokens.json")
    with pytest.raises(TokenError, match="unknown role"):
        store.create("root")
    with pytest.raises(TokenError, match="holder role"):
        store.create(AUDITOR, "alice")
    with pytest.raises(TokenError, match="holder role"):
        store.create(HOLDER)
    with pytest.raises(TokenError, match="letters, digits"):
        store.create(HOLDER, "alice:margin")


def test_a_holder_owns_its_user_accounts_only(tmp_path):
    record, _ = TokenStore(tmp_path / "t.json").create(HOLDER, "u1")
    assert record.owns("user:u1:margin:AAPL") and record.owns("user:u1:lp")
    assert not record.owns("user:u10:margin:AAPL") and not record.owns("pool:main") and not record.owns("user:u1")


def test_a_token_file_others_can_read_is_refused(tmp_path):
    store = TokenStore(tmp_path / "tokens.json")
    _, token = store.create(AUDITOR)
    store.path.chmod(0o644)
    with pytest.raises(TokenError, match="chmod 600"):
        TokenStore(store.path).authenticate(token)


def test_rate_limiter_sliding_minute():
    limiter = RateLimiter(2)
    assert limiter.retry_after_s("a", now=0.0) == 0
    assert limiter.retry_after_s("a", now=10.0) == 0
    assert limiter.retry_after_s("a", now=20.0) == 41  # the call at 0 leaves the window at 60
    assert limiter.retry_after_s("b", now=20.0) == 0  # per token
    assert limiter.retry_after_s("a", now=60.5) == 0


@pytest.fixture
def served(tmp_path):
    db = build_ledger_db(tmp_path / "ledger.duckdb")
    store = TokenStore(tmp_path / "tokens.json")
    tokens = {AUDITOR: store.create(AUDITOR)[1], OPERATOR: store.create(OPERATOR)[1], "alice": store.create(HOLDER, "alice")[1]}
    settings = Settings(api_snapshot_max_bytes=1_000)
    with TestClient(create_app(db, tokens=store, settings=settings)) as c:
        yield c, {k: {"Authorization": f"Bearer {v}"} for k, v in tokens.items()}


def test_roles_over_the_app(served):
    client, auth = served
    assert client.get("/health").status_code == 401
    assert client.get("/health", headers={"Authorization": "Basic eDp5"}).status_code == 401
    assert client.get("/health", headers=auth[OPERATOR]).status_code == 200
    assert client.get(f"/balances/{ALICE_MARGIN}/AAPL", headers=auth[OPERATOR]).status_code == 403
    assert client.get(f"/balances/{ALICE_MARGIN}/AAPL", headers=auth["alice"]).status_code == 200
    assert client.get("/trial-balance", headers=auth["alice"]).status_code == 403
    assert client.get("/trial-balance", headers=auth[AUDITOR]).status_code == 200


def test_snapshot_above_the_size_bound_is_refused(served):
    client, auth = served
    r = client.get("/snapshot", headers=auth[AUDITOR])
    assert r.status_code == 413 and "above the bound of 1,000" in r.json()["detail"]


def test_serve_refuses_a_non_loopback_address_without_tls(tmp_path):
    from typer.testing import CliRunner

    from services.cli import app

    db = tmp_path / "never-created.duckdb"
    for host in ("0.0.0.0", "192.0.2.7", "ledger.example"):
        result = CliRunner().invoke(app, ["serve", "--db", str(db), "--host", host, "--no-project"])
        assert result.exit_code == 2, result.output
        assert "refusing to serve plain HTTP" in result.output
    half = CliRunner().invoke(app, ["serve", "--db", str(db), "--host", "0.0.0.0", "--tls-cert", str(db)])
    assert half.exit_code == 2 and "go together" in half.output
    assert not db.exists()
