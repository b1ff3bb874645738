"""`serve`: projector + HTTP API in one real process (uvicorn on 127.0.0.1, a free port), over the real broker.

Hand-made records go to fresh copies of the output topics with explicit Kafka timestamps (the recorded
time), the server projects them, and every endpoint is called over HTTP with httpx; the figures are
worked out by hand below. T(k) is k seconds after T0.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest
from kafka import KafkaProducer

from schemas import codec
from schemas.topics import (
    LEDGER_POSTINGS,
    LEDGER_REJECTIONS,
    LIQUIDATION_EVENTS,
    REQUEST_OUTCOMES,
    TOPICS_BY_NAME,
)
from services.auth import AUDITOR, HOLDER, OPERATOR, TokenStore
from services.kafka_security import ADMIN, kafka_python_auth
from services.projector import OUTPUT_TOPICS
from services.topics_admin import ensure_topics

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = 1_741_000_000_000_000
NANO, USD = 1_000_000_000, 1_000_000
MARGIN = "user:u1:margin:AAPL"


def T(seconds: int) -> int:
    return T0 + seconds * 1_000_000


def _batch(cause: str, occurred_s: int, debit: str, credit: str, asset: str, amount: int) -> dict:
    return {"event_id": f"post:{cause}", "occurred_at": T(occurred_s), "source": "stockledger", "cause_event_id": cause,
            "cause_kind": "CollateralDeposit",
            "postings": [{"debit_account": debit, "credit_account": credit, "asset": asset, "amount_minor": amount}]}


RECORDS = [  # (topic, subject, record, recorded_s)
    (LEDGER_POSTINGS, "PostingBatch", _batch("a1", 100, "user:u1:wallet:AAPL", MARGIN, "AAPL", 4 * NANO), 100),
    (LEDGER_POSTINGS, "PostingBatch", _batch("a3", 200, "external:custody:TSLA", "custodian:TSLA:in_transit", "SH:TSLA", 7 * NANO), 200),
    (LEDGER_POSTINGS, "PostingBatch", _batch("a2", 50, "user:u1:wallet:AAPL", MARGIN, "AAPL", 1 * NANO), 300),  # back-dated
    (REQUEST_OUTCOMES, "RequestOutcome", {
        "event_id": "outcome:t1", "occurred_at": T(150), "source": "stockledger", "request_event_id": "t1",
        "request_kind": "TRADE", "key": "u1", "decision": "APPROVED", "reason": None,
        "inputs": {"pool_nav_micro_usd": 900 * USD}}, 150),
    (LIQUIDATION_EVENTS, "LiquidationTriggered", {
        "event_id": "liq-trigger:m1:u2", "occurred_at": T(400), "source": "stockledger", "account": "u2",
        "cause_event_id": "m1", "equity_micro_usd": 50 * USD, "maintenance_margin_micro_usd": 200 * USD,
        "inputs": {"equity_micro_usd": 50 * USD, "price_micro_usd:AAPL": 190 * USD}}, 400),
    (LEDGER_REJECTIONS, "Rejection", {
        "event_id": "reject:price.events:0:9", "occurred_at": T(410), "source": "stockledger", "cause_event_id": "p9",
        "reason": "stale_price", "detail": "old", "source_topic": "price.events", "source_partition": 0,
        "source_offset": 9, "schema_id": 7, "original": b"\x00\x00\x00\x00\x07"}, 410),
]


def _check_roles(base: str, tokens: dict[str, str], own_url: str) -> None:
    """401 without a valid token, 403 outside the role, holders confined to their own accounts."""
    def get(path: str, who: str | None = None, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or tokens[who]}"} if (who or token) else {}
        return httpx.get(base + path, headers=headers, timeout=10)

    for path in ("/health", own_url, "/trial-balance", "/export/postings", "/snapshot"):
        anonymous = get(path)
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer", path
        assert get(path, token=tokens[AUDITOR][:-1] + "x").status_code == 401, path  # one character off
    assert get("/health", OPERATOR).status_code == 200
    for path in (own_url, "/trial-balance", "/rejections", "/liquidations/u2", "/export/postings", "/snapshot"):
        assert get(path, OPERATOR).status_code == 403, path
    own = get(own_url, "u1")
    assert own.status_code == 200 and own.json()["balance_minor"] == 5 * NANO
    assert [r["event_id"] for r in get(f"/history/{MARGIN}/AAPL", "u1").json()["rows"]] == ["post:a2", "post:a1"]
    assert get(own_url, "u2").status_code == 403  # another holder's account
    assert get(f"/history/{MARGIN}/AAPL", "u2").status_code == 403
    assert get("/balances/user:u2:margin:AAPL/AAPL", "u2").status_code == 404  # its own, with no postings
    assert get("/balances/user:nobody:margin:AAPL/AAPL", "u1").status_code == 403  # not 404: existence is not told
    for path in ("/health", "/trial-balance", "/rejections", "/liquidations/u1", "/pool/nav", "/export/postings", "/snapshot"):
        assert get(path, "u1").status_code == 403, path
    spec = httpx.get(base + "/openapi.json", timeout=10).json()
    assert spec["components"]["securitySchemes"]["bearer token"] == {
        "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["bearer token"]["description"]}
    assert all(op.get("security") == [{"bearer token": []}] for item in spec["paths"].values() for op in item.values())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(client: httpx.Client, predicate, timeout_s: float, what: str, proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} while waiting for {what}")
        try:
            r = client.get("/health")
            last = r.json() if r.status_code == 200 else r.text
            if r.status_code == 200 and predicate(last):
                return last
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last /health: {last}")


@pytest.mark.timeout(600)
def test_every_endpoint_over_http_with_projector_in_the_same_process(
    kafka_bootstrap: str, unique_topic_name, fresh_topics: list[str], tmp_path: Path
) -> None:
    prefix = unique_topic_name("")
    specs = [dataclasses.replace(TOPICS_BY_NAME[t], name=prefix + t) for t in OUTPUT_TOPICS]
    fresh_topics.extend(s.name for s in specs)
    assert ensure_topics(kafka_bootstrap, specs).ok
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", client_id="stockledger-api-test",
                             **kafka_python_auth(ADMIN))
    for topic, subject, record, recorded_s in RECORDS:
        producer.send(prefix + topic, key=b"k", value=codec.encode(subject, record), partition=0,
                      timestamp_ms=T(recorded_s) // 1000)
    producer.send(prefix + LEDGER_POSTINGS, key=b"k", value=b"\x00\x00", partition=1)  # bad bytes
    producer.flush(60)
    producer.close()

    db, port = tmp_path / "served.duckdb", _free_port()
    store = TokenStore(tmp_path / "tokens.json")
    tokens = {role: store.create(role)[1] for role in (AUDITOR, OPERATOR)}
    tokens["u1"], tokens["u2"] = store.create(HOLDER, "u1")[1], store.create(HOLDER, "u2")[1]
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli_audit", "serve", "--db", str(db), "--host", "127.0.0.1", "--port", str(port),
         "--topic-prefix", prefix, "--group", f"{prefix}api", "--bootstrap", kafka_bootstrap, "--max-batch-ms", "100",
         "--tokens-file", str(store.path)],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        env=os.environ | {"PYTHONUNBUFFERED": "1", "STOCKLEDGER_KAFKA_PRINCIPAL": ADMIN,
                          "STOCKLEDGER_API_HEAVY_REQUESTS_PER_MINUTE": "3", "STOCKLEDGER_API_EXPORT_MAX_ROWS": "3"})
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10, headers={"Authorization": f"Bearer {tokens[AUDITOR]}"}) as client:
            health = _wait(client, lambda h: h["tables"].get("posting_batches") == 3 and h["tables"].get("projector_errors") == 1
                           and h["tables"].get("rejections") == 1 and h["tables"].get("liquidations") == 1
                           and h["tables"].get("request_outcomes") == 1, 180, "the projection", proc)
            assert health["status"] == "ok" and health["projector"]["running"] is True
            assert health["projector"]["error"] is None
            assert {"topic": prefix + LEDGER_POSTINGS, "partition": 0, "next_offset": 3} in health["offsets"]

            url = f"/balances/{MARGIN}/AAPL"
            assert client.get(url).json()["balance_minor"] == 5 * NANO
            assert client.get(url, params={"as_of": T(60)}).json()["balance_minor"] == 1 * NANO  # only the back-dated one
            assert client.get(url, params={"recorded_as_of": T(250)}).json()["balance_minor"] == 4 * NANO  # not yet recorded
            assert client.get("/balances/user:nobody:margin:AAPL/AAPL").status_code == 404
            assert client.get(url, params={"as_of": "whenever"}).status_code == 422

            rows = client.get(f"/history/{MARGIN}/AAPL").json()["rows"]
            assert [(r["event_id"], r["amount_minor"], r["balance_minor"], r["offset"]) for r in rows] == [
                ("post:a2", NANO, NANO, 2), ("post:a1", 4 * NANO, 5 * NANO, 0)]
            assert rows[0]["recorded_at_us"] == T(300) and rows[0]["topic"] == prefix + LEDGER_POSTINGS

            tb = client.get("/trial-balance").json()
            assert tb["balanced"] is True and tb["flagged_clearing"] == ["custodian:TSLA:in_transit"]
            assert client.get("/trial-balance", params={"as_of": T(150)}).json()["ok"] is True

            liq = client.get("/liquidations/u2").json()["liquidations"][0]
            assert liq["health_ppm"] == 250_000 and liq["below_maintenance"] is True
            assert client.get("/liquidations/u1").status_code == 404

            rej = client.get("/rejections", params={"reason": "stale_price"}).json()
            assert [(r["event_id"], r["source_offset"], r["original"]) for r in rej] == [("reject:price.events:0:9", 9, "0000000007")]
            assert client.get("/rejections", params={"reason": "nope"}).status_code == 422

            assert client.get("/pool/nav").json()["points"][0]["nav_micro_usd"] == 900 * USD

            r = client.get("/export/postings")
            assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
            out = tmp_path / "postings.parquet"
            out.write_bytes(r.content)
            assert duckdb.connect().execute(f"SELECT COUNT(*), SUM(amount_minor)::HUGEINT FROM '{out}'").fetchone() == (3, 12 * NANO)
            assert client.get("/export/nothing").status_code == 404
            too_big = client.get("/export/balance_legs")  # 6 legs > STOCKLEDGER_API_EXPORT_MAX_ROWS=3
            assert too_big.status_code == 413 and "bound of 3" in too_big.json()["detail"]
            # another process cannot open the live file, but it can open a snapshot the server made
            with pytest.raises(duckdb.IOException):
                duckdb.connect(str(db), read_only=True)
            snap = tmp_path / "snapshot.duckdb"
            snap.write_bytes(client.get("/snapshot").content)
            with duckdb.connect(str(snap), read_only=True) as copy:
                assert copy.execute("SELECT COUNT(*) FROM postings").fetchone() == (3,)
            limited = client.get("/snapshot")  # the 4th export or snapshot within a minute
            assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
            _check_roles(base, tokens, url)
            assert client.get("/docs").status_code == 200
            assert "/trial-balance" in client.get("/openapi.json").json()["paths"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
        assert "projector stopped, DuckDB closed" in (tmp_path / "serve.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        log.close()
        print((tmp_path / "serve.log").read_text()[-3000:])
    # the server released the file: a read-only process opens it now
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT COUNT(*) FROM postings").fetchone() == (3,)
    con.close()
