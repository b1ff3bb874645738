"""Offline replay: fold an event archive with the core, no Kafka, and summarise what it did."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ledger import reasons
from ledger.engine import INPUT_SUBJECTS
from ledger.params import RiskParams
from ledger.state import LedgerState
from ledger.state_hash import state_hash
from schemas.codec import DecodeError, decode, peek_schema_id
from services.archive import ArchiveRow
from streams.step import Entry, FoldHalted, Ledger, StepResult


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
    clock_us: int = 0  # the log clock at the end: the latest effective time folded

    @property
    def total_in(self) -> int:
        return sum(self.records_in.values())

    def hash(self) -> str:
        return state_hash(self.state)

    def meta(self, archive: str) -> dict[str, str]:
        """What a replay's DuckDB file records about the fold (table ledger_meta)."""
        return {"state_hash": self.hash(), "archive": archive, "records": str(self.total_in),
                "log_tree_size": str(self.state.log.size), "log_root_hash": self.state.log.root().hex()}


ReplayHalted = FoldHalted  # the offline replay stops on a bug exactly as the worker does (same step)

Sink = Callable[[int, Entry, StepResult], None]


def entry_of(row: ArchiveRow) -> Entry:
    """An archive row as a log entry: (topic, key, value) and, for an exported log, its source coordinates."""
    if len(row) > 3:
        topic, key, value, partition, offset, timestamp_ms = row  # type: ignore[misc]
        return Entry(topic, key, value, partition, offset, timestamp_ms)
    return Entry(row[0], row[1], row[2])


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
           state: LedgerState | None = None, merkle_log: bool = True, with_outputs: bool | None = None,
           ledger: Ledger | None = None) -> ReplayResult:
    """Fold rows in log order with the ledger's one step (streams.step); sink (if given) sees every entry
    with its StepResult (outcome and output records), for projections.

    reference=True re-values every account after every event (the slow reference surveillance of
    the same core): it must take the same decisions and reach the same hash as the indexed sweep.
    state: fold into this (empty) state instead of a new one, e.g. to watch it from the sink.
    merkle_log=False leaves the Merkle log empty (only the benchmark does, to measure what the log costs).
    with_outputs: build the output records (default: when there is a sink); a sink that only reads the
    outcomes passes False.
    ledger: fold on from this ledger (a restored snapshot's) instead of an empty one.
    """
    if with_outputs is None:
        with_outputs = sink is not None
    if ledger is None:
        ledger = Ledger(state=state, params=params)
    ledger.state.surveillance.reference = reference
    result = ReplayResult(ledger.state)
    emitted = result.emitted_by_subject
    n = 0
    for n, row in enumerate(rows, 1):
        entry = entry_of(row)
        res = ledger.step(entry, with_outputs=with_outputs, merkle_log=merkle_log)
        out = res.outcome
        result.postings += len(out.postings)
        for em_subject, _ in out.emitted:
            emitted[em_subject] = emitted.get(em_subject, 0) + 1
        if sink is not None:
            sink(n, entry, res)
        if progress is not None and n % progress_every == 0:
            progress(n)
    if progress is not None:
        progress(n)
    c = ledger.counts
    result.applied, result.duplicates, result.rejected = c.applied, c.duplicates, c.rejected
    result.rejected_by_reason = c.rejected_by_reason
    result.records_in = {t: c.records_in(t) for t in set(c.applied) | set(c.duplicates) | set(c.rejected)}
    result.clock_us = ledger.clock_us
    return result
