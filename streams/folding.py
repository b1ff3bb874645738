"""One sequenced record through the core: decode, apply with source-offset dedup, count per source topic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger import reasons
from ledger.delivery import apply_delivered
from ledger.engine import INPUT_SUBJECTS, RuleError
from ledger.log_entry import entry_leaf_hash
from ledger.outcome import Outcome
from ledger.state import LedgerState
from schemas.codec import DecodeError, decode


class FoldHalted(Exception):
    """A bug in the core on one record: the worker stops (no restart loop) with the record's coordinates."""

    def __init__(self, topic: str, partition: int, offset: int, err: RuleError):
        super().__init__(f"fold halted at {topic}[{partition}]@{offset}: {err}")
        self.topic, self.partition, self.offset = topic, partition, offset


@dataclass
class TopicCounts:
    """records in = applied + duplicates + rejected, per source topic."""

    applied: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def records_in(self, topic: str) -> int:
        return self.applied.get(topic, 0) + self.duplicates.get(topic, 0) + self.rejected.get(topic, 0)

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


def decode_input(value: bytes | None) -> tuple[str, dict[str, Any]] | tuple[None, tuple[str, str]]:
    """The shell's half of a record: bytes to (subject, record), or (None, (reason, detail))."""
    try:
        subject, record = decode(value if value is not None else b"")
    except DecodeError as err:
        return None, (err.reason, err.detail)
    if subject not in INPUT_SUBJECTS:
        return None, (reasons.UNKNOWN_SCHEMA, f"{subject} is not an input record type")
    return subject, record


def fold_one(state: LedgerState, counts: TopicCounts, topic: str, partition: int, offset: int,
             key: bytes | None, value: bytes | None) -> tuple[Outcome, dict[str, Any] | None]:
    """Log the entry, apply it; returns the outcome and the decoded record (None if undecodable)."""
    state.log.append(entry_leaf_hash(topic, key, value))
    decoded = decode_input(value)
    try:
        out = apply_delivered(state, topic, partition, offset, decoded)
    except RuleError as err:
        raise FoldHalted(topic, partition, offset, err) from err
    counts.count(topic, out)
    return out, (decoded[1] if decoded[0] is not None else None)  # type: ignore[return-value]
