"""Through the real broker (issue 13): a record at every field limit and one beyond it are folded or rejected, and the records after them are folded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ledger import limits, reasons
from schemas.codec import encode
from schemas.topics import SUBJECT_ROUTES
from services.replay import replay
from services.stream_status import committed_fold_offset, read_sequenced
from tests.integration.streams_harness import fresh_stream_env, stop, wait_caught_up

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from ledger_builders import NANO, T0, USD, mint, price_mark  # noqa: E402
from test_hardening import INT_FIELDS, trading_desk, valid_records  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def row(subject: str, record: dict) -> tuple[str, str, bytes]:
    topic, key_field = SUBJECT_ROUTES[subject]
    return topic, str(record[key_field])[:64], encode(subject, record)


def test_records_at_and_beyond_every_limit_never_stop_the_worker(kafka_bootstrap, tmp_path):
    from services.producer import produce_rows

    env = fresh_stream_env(kafka_bootstrap, tmp_path)
    rows = [row(s, r) for s, r in trading_desk().inputs]
    beyond = 0
    for n, (subject, name, limit) in enumerate(INT_FIELDS):
        for k, value in enumerate((limit.hi, limit.lo, limit.hi + 1, 2**63 - 1)):
            if limit.hi < 2**31 and abs(value) >= 2**31:
                continue  # an Avro int: not encodable at all
            if value == limits.TIME.hi and name in ("occurred_at", "published_at"):
                continue  # a mark dated 2099 would make the tail's marks stale (folded, but rejected)
            rows.append(row(subject, valid_records()[subject] | {name: value, "event_id": f"lim-{n}-{k}"}))
            beyond += value > limit.hi
    tail = [row("PriceMark", price_mark("AAPL", 203 * USD, at=T0 + 60_000_000, event_id="tail-mark")),
            row("MintRequest", mint("AAPL", "alice", NANO, at=T0 + 60_000_001, event_id="tail-mint"))]
    rows += tail
    worker = env.start_worker()
    try:
        produce_rows(env.bootstrap, rows)
        cp = wait_caught_up(env, len(rows), workers=[worker])  # lag back to 0 on every stage
        assert worker.poll() is None, env.logs()
    finally:
        stop(worker)
    assert sum(cp["applied"].values()) + sum(cp["rejected"].values()) + sum(cp["duplicates"].values()) == len(rows)
    assert cp["rejected_by_reason"].get(reasons.BEYOND_LIMIT, 0) >= beyond
    # Online and offline agree: the sequenced log folded offline gives the worker's hash.
    sequenced = list(read_sequenced(env.bootstrap, committed_fold_offset(env.bootstrap, env.app_id)))
    result = replay(sequenced)
    assert result.hash() == cp["state_hash"]
    assert result.state.prices["AAPL"].price_micro_usd == 203 * USD  # the tail was folded, and applied
    assert result.state.accounts["alice"].wallet_nano["AAPL"] >= NANO
