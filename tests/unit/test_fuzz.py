"""Fuzz (issue 13): random and boundary values in every field of every input event, mixed into a valid desk.

Invariants: the fold never raises (a RuleError would be a bug), every output encodes, postings balance
per asset, no user balance goes negative, and a rejection changes no balance.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_builders import assert_postings_well_formed, posting_balances, state_balances
from test_hardening import SUBJECT_ROUTES, trading_desk, valid_records

from ledger import limits
from ledger.engine import apply
from ledger.state_hash import balances_hash
from schemas.codec import encode
from streams.step import Entry, outputs_of


def values_for(limit: limits.Limit) -> st.SearchStrategy[Any]:
    """Boundary values (at, just beyond, far beyond the limit), small realistic ones, and anything in range."""
    if isinstance(limit, limits.Int):
        edges = [limit.lo, limit.hi, limit.lo - 1, limit.hi + 1, 0, 1, -1, 2**63 - 1, -(2**63)]
        return st.one_of(st.sampled_from(edges), st.integers(limit.lo, limit.hi), st.integers(-10**12, 10**12))
    if isinstance(limit, limits.Text):
        return st.one_of(st.sampled_from(["", "AAPL", "BTC", "alice", "lp", "BTC-P-50000", "x" * (limit.max_chars + 1)]),
                         st.text(max_size=8))
    return st.one_of(st.sampled_from(limit.symbols), st.text(max_size=4))


@st.composite
def mutated_record(draw: Any) -> tuple[str, dict[str, Any]]:
    subject = draw(st.sampled_from(sorted(limits.FIELDS)))
    record = valid_records()[subject]
    fields = limits.FIELDS[subject] | {"occurred_at": limits.TIME}
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True)):
        record[name] = draw(values_for(fields[name]))
    record["event_id"] = draw(st.sampled_from(["dup-1", "dup-2"]) | st.uuids().map(str))
    return subject, record


@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_record(), min_size=1, max_size=12))
def test_the_fold_survives_any_field_value_and_keeps_its_invariants(records):
    lg = trading_desk()
    for subject, record in records:
        before = balances_hash(lg.state)
        out = apply(lg.state, subject, record)  # a RuleError here is a bug the fuzz found
        if out.rejection is not None or out.duplicate:
            assert out.postings == [] and balances_hash(lg.state) == before, out.rejection
        else:
            assert_postings_well_formed(out.postings)
            lg.postings.extend(out.postings)
        topic = SUBJECT_ROUTES[subject][0]
        at = record.get("occurred_at") if isinstance(record.get("occurred_at"), int) else 0
        outputs_of(out, Entry(topic, b"k", encode_or_none(subject, record), 0, 0), 0, at)
    assert posting_balances(lg.postings) == state_balances(lg.state)  # every change of a balance was posted
    for (account, asset), balance in state_balances(lg.state).items():
        if account.startswith("user:") and (":wallet:" in account or (":margin:" in account and asset != "USD")):
            assert balance >= 0, (account, asset, balance)


def encode_or_none(subject: str, record: dict[str, Any]) -> bytes | None:
    try:
        return encode(subject, record)
    except Exception:  # noqa: BLE001 - a mutated record need not be valid Avro; the dead letter then holds no bytes
        return None
