"""The ledger's one step: an entry of the total order in, the outcome and its output records out.

Every transport folds through `Ledger.step`: the stream worker (entries from ledger.sequenced), the
offline replay (entries from an archive), `state dump`, `export-log` consumers and `log audit`. One step
means one decode, one dedup rule, one count, one set of output ids and one Merkle log; a replay's DuckDB
file is written from the very output records the worker publishes (services/duckdb_sink.py decodes them
with the projector's row builder), so the two read alike (tests/integration/test_contract.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger import reasons
from ledger.delivery import already_applied, apply_delivered
from ledger.engine import INPUT_SUBJECTS, RuleError
from ledger.log_entry import entry_leaf_hash
from ledger.outcome import Outcome, derived_event_id
from ledger.params import RiskParams
from ledger.state import LedgerState
from schemas.codec import DecodeError, decode, encode, peek_schema_id
from schemas.topics import LEDGER_POSTINGS, LEDGER_REJECTIONS, SUBJECT_ROUTES

OutputRecord = tuple[str, bytes, bytes]  # (topic, key, framed Avro value)
DETAIL_MAX_CHARS = 2_000  # a rejection's detail as published (the reason code carries the meaning)


@dataclass(frozen=True)
class Entry:
    """One source record as the fold consumes it; coordinates are None where the transport has none."""

    topic: str
    key: bytes | str | None
    value: bytes | None
    partition: int | None = None
    offset: int | None = None
    timestamp_ms: int | None = None

    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}" if self.partition is not None else self.topic


class FoldHalted(Exception):
    """A bug in the core on one entry: the fold stops (no restart loop), naming the entry."""

    def __init__(self, leaf_index: int, entry: Entry, err: Exception):
        super().__init__(f"fold halted at entry {leaf_index} ({entry.where()}): {err}")
        self.leaf_index, self.entry = leaf_index, entry


@dataclass
class TopicCounts:
    """records in = applied + duplicates + rejected, per source topic."""

    applied: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def records_in(self, topic: str) -> int:
        return self.applied.get(topic, 0) + self.duplicates.get(topic, 0) + self.rejected.get(topic, 0)

    def total_in(self) -> int:
        return sum(self.records_in(t) for t in set(self.applied) | set(self.duplicates) | set(self.rejected))

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {"applied": self.applied, "duplicates": self.duplicates, "rejected": self.rejected,
                "rejected_by_reason": self.rejected_by_reason}

    def count(self, topic: str, out: Outcome) -> None:
        if out.rejection is not None:
            self.rejected[topic] = self.rejected.get(topic, 0) + 1
            reason = out.rejection[0]
            self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1
        elif out.duplicate:
            self.duplicates[topic] = self.duplicates.get(topic, 0) + 1
        else:
            self.applied[topic] = self.applied.get(topic, 0) + 1


@dataclass
class StepResult:
    """What one entry did: its outcome, the decoded input, where it sits in the log, and the outputs."""

    outcome: Outcome
    subject: str | None
    record: dict[str, Any] | None
    leaf_index: int
    at_us: int  # effective time of the outputs: the input's occurred_at, else the log clock
    recorded_at_us: int  # the entry's arrival time where known (source timestamp), else the log clock
    outputs: list[OutputRecord]


def decode_input(value: bytes | None) -> tuple[str, dict[str, Any]] | tuple[None, tuple[str, str]]:
    """The shell's half of a record: bytes to (subject, record), or (None, (reason, detail))."""
    try:
        subject, record = decode(value if value is not None else b"")
    except DecodeError as err:
        return None, (err.reason, err.detail)
    if subject not in INPUT_SUBJECTS:
        return None, (reasons.UNKNOWN_SCHEMA, f"{subject} is not an input record type")
    return subject, record


class Ledger:
    """The state, the counts and the log clock of one fold; `step` is the only way an entry gets in."""

    def __init__(self, state: LedgerState | None = None, params: RiskParams | None = None,
                 counts: TopicCounts | None = None, clock_us: int = 0):
        self.state = state if state is not None else LedgerState(params=params or RiskParams())
        self.counts = counts if counts is not None else TopicCounts()
        self.clock_us = clock_us  # the log clock: the latest occurred_at folded, in log order

    def step(self, entry: Entry, *, with_outputs: bool = True, merkle_log: bool = True) -> StepResult:
        """Log the entry, apply it (source-offset dedup where it has coordinates), count it, build its outputs.

        merkle_log=False skips the log (only the benchmark does, to measure what the log costs).
        """
        state = self.state
        leaf_index = state.log.size
        if merkle_log:
            state.log.append(entry_leaf_hash(entry.topic, entry.key, entry.value))
        if entry.partition is not None and entry.offset is not None and already_applied(
                state, entry.topic, entry.partition, entry.offset):
            # A redelivered copy (same source offset): decided already; no need to even decode it.
            out, decoded = Outcome("", ""), (None, ("", ""))
            out.duplicate = True
        else:
            decoded = decode_input(entry.value)
            try:
                out = apply_delivered(state, entry.topic, entry.partition, entry.offset, decoded)
            except RuleError as err:
                raise FoldHalted(leaf_index, entry, err) from err
        self.counts.count(entry.topic, out)
        subject, record = (decoded[0], decoded[1]) if decoded[0] is not None else (None, None)
        occurred = record.get("occurred_at") if record else None
        if isinstance(occurred, int) and occurred > self.clock_us:
            self.clock_us = occurred
        at = occurred if isinstance(occurred, int) else self.clock_us
        recorded = entry.timestamp_ms * 1_000 if entry.timestamp_ms is not None else self.clock_us
        result = StepResult(out, subject, record, leaf_index, at, recorded, [])  # type: ignore[arg-type]
        if with_outputs and not out.duplicate:
            try:
                result.outputs = outputs_of(out, entry, leaf_index, at)
            except Exception as exc:  # the core emitted what the schemas cannot hold: a bug, never input
                raise FoldHalted(leaf_index, entry, RuleError(out.subject, out.event_id,
                                                              f"output not encodable: {exc}")) from exc
        return result


def outputs_of(out: Outcome, entry: Entry, leaf_index: int, at_us: int) -> list[OutputRecord]:
    """Postings batch, emitted events and, for a rejection, the dead letter with the original bytes.

    Ids derive from the cause: post:<event id>, the emitted events' own ids, and rej:<leaf index> for a
    dead letter (an undecodable record has no id of its own; its place in the log is unique and the same
    wherever the log is folded).
    """
    produced: list[OutputRecord] = []
    key = entry.key.encode() if isinstance(entry.key, str) else (entry.key or b"")
    if out.postings:
        batch = {
            "event_id": derived_event_id("post", out.event_id), "occurred_at": at_us,
            "source": "stockledger", "cause_event_id": out.event_id, "cause_kind": out.subject,
            "postings": [p._asdict() for p in out.postings],
        }
        produced.append((LEDGER_POSTINGS, key, encode("PostingBatch", batch)))
    for subject, em in out.emitted:
        em_topic, key_field = SUBJECT_ROUTES[subject]
        produced.append((em_topic, str(em[key_field]).encode(), encode(subject, em)))
    if out.rejection is not None:
        reason, detail = out.rejection
        try:
            schema_id = peek_schema_id(entry.value) if entry.value is not None else None
        except DecodeError:
            schema_id = None
        rejection = {
            "event_id": f"rej:{leaf_index}", "occurred_at": at_us, "source": "stockledger",
            "cause_event_id": out.event_id or None, "reason": reason, "detail": detail[:DETAIL_MAX_CHARS],
            # An archive entry never sat in a Kafka partition: -1, and its offset is its place in the log.
            "source_topic": entry.topic, "source_partition": entry.partition if entry.partition is not None else -1,
            "source_offset": entry.offset if entry.offset is not None else leaf_index,
            "schema_id": schema_id, "original": entry.value or b"",
        }
        produced.append((LEDGER_REJECTIONS, entry.topic.encode(), encode("Rejection", rejection)))
    return produced
