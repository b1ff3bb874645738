"""Turn a fold outcome into output records (topic, key, framed bytes) with ids derived from the cause."""

from __future__ import annotations

from typing import Any

from ledger.outcome import Outcome, derived_event_id
from schemas.codec import DecodeError, encode, peek_schema_id
from schemas.topics import LEDGER_POSTINGS, LEDGER_REJECTIONS, SUBJECT_ROUTES

OutputRecord = tuple[str, bytes, bytes]  # (topic, key, value)


def outputs_for(out: Outcome, record: dict[str, Any] | None, topic: str, partition: int, offset: int,
                key: bytes | None, value: bytes | None, at_us: int) -> list[OutputRecord]:
    """Postings batch, emitted events and, for a rejection, the dead letter with the original bytes."""
    produced: list[OutputRecord] = []
    if out.duplicate:
        return produced
    source_key = key or b""
    if out.postings:
        batch = {
            "event_id": derived_event_id("post", out.event_id), "occurred_at": record["occurred_at"] if record else at_us,
            "source": "stockledger", "cause_event_id": out.event_id, "cause_kind": out.subject,
            "postings": [p._asdict() for p in out.postings],
        }
        produced.append((LEDGER_POSTINGS, source_key, encode("PostingBatch", batch)))
    for subject, em in out.emitted:
        em_topic, key_field = SUBJECT_ROUTES[subject]
        produced.append((em_topic, str(em[key_field]).encode(), encode(subject, em)))
    if out.rejection is not None:
        reason, detail = out.rejection
        schema_id = None
        if value is not None:
            try:
                schema_id = peek_schema_id(value)
            except DecodeError:
                schema_id = None
        rejection = {
            "event_id": f"rej:{topic}:{partition}:{offset}", "occurred_at": record["occurred_at"] if record else at_us,
            "source": "stockledger", "cause_event_id": out.event_id or None, "reason": reason, "detail": detail[:2000],
            "source_topic": topic, "source_partition": partition, "source_offset": offset,
            "schema_id": schema_id, "original": value or b"",
        }
        produced.append((LEDGER_REJECTIONS, topic.encode(), encode("Rejection", rejection)))
    return produced
