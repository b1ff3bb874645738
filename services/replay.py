"""Offline replay: fold an event archive with the core, no Kafka, and summarise what it did."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ledger import reasons
from ledger.engine import INPUT_SUBJECTS, RuleError, apply
from ledger.log_entry import entry_leaf_hash
from ledger.outcome import Outcome
from ledger.params import RiskParams
from ledger.state import LedgerState
from ledger.state_hash import state_hash
from schemas.codec import DecodeError, decode, peek_schema_id
from services.archive import ArchiveRow


@dataclass
class ReplayResult:
    """Counts per topic and the final state; records_in == applied + duplicates + rejected per topic."""

    state: LedgerState
    records_in: dict[str, int] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    emitted_by_subject: dict[str, int] = field(default_factory=dict)
    postings: int = 0

    @property
    def total_in(self) -> int:
        return sum(self.records_in.values())

    def hash(self) -> str:
        return state_hash(self.state)

    def meta(self, archive: str) -> dict[str, str]:
        """What a replay's DuckDB file records about the fold (table ledger_meta)."""
        return {"state_hash": self.hash(), "archive": archive, "records": str(self.total_in),
                "log_tree_size": str(self.state.log.size), "log_root_hash": self.state.log.root().hex()}


class ReplayHalted(Exception):
    """A bug in the core on one archived record (the offline twin of streams.folding.FoldHalted)."""

    def __init__(self, n: int, topic: str, err: RuleError):
        super().__init__(f"replay halted at record {n} ({topic}): {err}")
        self.n, self.topic = n, topic


Sink = Callable[[int, ArchiveRow, str | None, dict[str, Any] | None, Outcome], None]


def decode_row(value: bytes) -> tuple[str, dict[str, Any]] | DecodeError:
    """Decode an archived value; undecodable bytes come back as the error, never raised."""
    try:
        subject, record = decode(value)
    except DecodeError as err:
        return err
    if subject not in INPUT_SUBJECTS:
        return DecodeError(reasons.UNKNOWN_SCHEMA, f"{subject} is not an input record type", peek_schema_id(value))
    return subject, record


def replay(rows: Iterable[ArchiveRow], params: RiskParams | None = None, sink: Sink | None = None,
           progress: Callable[[int], None] | None = None, progress_every: int = 10_000, reference: bool = False,
           state: LedgerState | None = None, merkle_log: bool = True) -> ReplayResult:
    """Fold rows in log order; sink (if given) sees every row with its outcome, for projections.

    reference=True re-values every account after every event (the slow reference surveillance of
    the same core): it must take the same decisions and reach the same hash as the indexed sweep.
    state: fold into this (empty) state instead of a new one, e.g. to watch it from the sink.
    merkle_log=False leaves the Merkle log empty (only the benchmark does, to measure what the log costs).
    """
    if state is None:
        state = LedgerState(params=params or RiskParams())
    state.surveillance.reference = reference
    result = ReplayResult(state)
    records_in, applied, dups, rejected, by_reason, emitted = (
        result.records_in, result.applied, result.duplicates, result.rejected, result.rejected_by_reason, result.emitted_by_subject)
    n = 0
    for n, row in enumerate(rows, 1):
        topic = row[0]
        records_in[topic] = records_in.get(topic, 0) + 1
        if merkle_log:
            state.log.append(entry_leaf_hash(topic, row[1], row[2]))
        decoded = decode_row(row[2])
        if isinstance(decoded, DecodeError):
            out = Outcome("", "", rejection=(decoded.reason, decoded.detail))
            subject = record = None
        else:
            subject, record = decoded
            try:
                out = apply(state, subject, record)
            except RuleError as err:
                raise ReplayHalted(n, topic, err) from err
        if out.rejection is not None:
            rejected[topic] = rejected.get(topic, 0) + 1
            reason = out.rejection[0]
            by_reason[reason] = by_reason.get(reason, 0) + 1
        elif out.duplicate:
            dups[topic] = dups.get(topic, 0) + 1
        else:
            applied[topic] = applied.get(topic, 0) + 1
        result.postings += len(out.postings)
        for em_subject, _ in out.emitted:
            emitted[em_subject] = emitted.get(em_subject, 0) + 1
        if sink is not None:
            sink(n, row, subject, record, out)
        if progress is not None and n % progress_every == 0:
            progress(n)
    if progress is not None:
        progress(n)
    return result
