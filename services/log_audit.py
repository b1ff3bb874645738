"""`stockledger log audit`: re-derive a DuckDB projection from its Merkle log and name every row that differs.

Four checks, each naming the rows it faults (docs/AUDITOR.md, "Auditing a DuckDB file"):

1. log_entries holds leaves 0..n-1 once each (a gap is a deleted row, a repeat an inserted one);
2. each entry's bytes hash to its stored leaf hash (an edited entry);
3. every signed head verifies with the log's key, agrees with its own row, and its root equals the root
   recomputed from the entries (an entry changed together with its hash, or a head row edited): the first
   failing head bounds where the change is;
4. the entries are folded again with the worker's own step (streams.step.Ledger.step) and every posting batch, posting, request outcome, liquidation and series mark the fold
   derives is compared with the stored row: an edited, deleted or inserted output row is named by table,
   event id and column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb

from ledger.log_entry import entry_leaf_hash
from ledger.merkle_log import Frontier
from ledger.params import RiskParams
from schemas import codec
from services.checkpoint_note import NoteError, Verifier, open_note
from services.projection_schema import column_names
from services.projector import Lineage, RowBuffer
from streams.step import Entry, Ledger

COMPARED_TABLES: dict[str, tuple[str, ...]] = {  # table -> the columns that identify a row
    "posting_batches": ("event_id",),
    "postings": ("event_id", "leg"),
    "request_outcomes": ("event_id",),
    "liquidations": ("event_id",),
    "series_marks": ("event_id",),
    "rejections": ("event_id",),
}
LINEAGE_TAIL = 5  # recorded_at_us, source, topic, partition, offset: where a row was read, not what it says
_NO_LINEAGE = Lineage(0, "", None, 0)


@dataclass(frozen=True)
class Finding:
    table: str
    row: str
    problem: str

    def __str__(self) -> str:
        return f"{self.table} {self.row}: {self.problem}"


@dataclass
class AuditReport:
    entries: int = 0
    heads_checked: int = 0
    rows_compared: int = 0
    root_hash: str = ""
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _key(table: str, row: tuple) -> tuple:
    return tuple(row[i] for i in _KEY_POSITIONS[table])


_KEY_POSITIONS = {t: tuple(column_names(t).index(c) for c in cols) for t, cols in COMPARED_TABLES.items()}


def audit(con: duckdb.DuckDBPyConnection, verifier: Verifier | None, params: RiskParams | None = None,
          progress: Callable[[int], None] | None = None) -> AuditReport:
    """Run every check; findings name the faulty rows (the report is complete, never stopped at the first)."""
    report = AuditReport()
    found = report.findings.append
    heads = con.execute("SELECT event_id, origin, tree_size, root_hash, note FROM tree_heads ORDER BY tree_size").fetchall()
    roots_at: dict[int, bytes] = {}
    wanted_sizes = {size for _, _, size, _, _ in heads}
    frontier = Frontier()
    if 0 in wanted_sizes:
        roots_at[0] = frontier.root()  # the worker signs the empty log when it starts on an empty topic
    ledger = Ledger(params=params)
    expected = RowBuffer()
    expected_index: dict[str, dict[tuple, tuple]] = {t: {} for t in COMPARED_TABLES}
    next_index = 0
    cur = con.execute("SELECT leaf_index, source_topic, source_partition, source_offset, timestamp_ms, key, value, "
                      "leaf_hash FROM log_entries ORDER BY leaf_index")
    while True:
        chunk = cur.fetchmany(10_000)
        if not chunk:
            break
        for leaf_index, topic, partition, offset, timestamp_ms, key, value, stored_hash in chunk:
            if leaf_index < next_index:
                found(Finding("log_entries", f"leaf {leaf_index}", "appears more than once: an inserted row"))
                continue
            if leaf_index > next_index:
                found(Finding("log_entries", f"leaves {next_index}..{leaf_index - 1}", "missing: deleted rows"))
            next_index = leaf_index + 1
            leaf = entry_leaf_hash(topic, key, value)
            if bytes(stored_hash) != leaf:
                found(Finding("log_entries", f"leaf {leaf_index}", "its bytes do not hash to its stored leaf hash: edited"))
            frontier.append(leaf)
            if frontier.size in wanted_sizes:
                roots_at[frontier.size] = frontier.root()
            # The worker's own step: the same outputs, ids and times as the worker published.
            res = ledger.step(Entry(topic, key, value, partition, offset, timestamp_ms))
            for _t, _k, out_value in res.outputs:
                subject, rec = codec.decode(out_value)
                expected.add(subject, rec, _NO_LINEAGE)
            report.entries += 1
        for table in COMPARED_TABLES:  # move this chunk's rows into the index, keeping memory to one copy
            for row in expected.rows[table]:
                expected_index[table][_key(table, row)] = row[:-LINEAGE_TAIL]
        expected = RowBuffer()
        if progress is not None:
            progress(report.entries)
    report.root_hash = frontier.root().hex()
    _check_heads(heads, roots_at, verifier, report)
    for table in COMPARED_TABLES:
        _compare_table(con, table, expected_index[table], report)
    return report


def _check_heads(heads: list[tuple], roots_at: dict[int, bytes], verifier: Verifier | None, report: AuditReport) -> None:
    found = report.findings.append
    last_good = 0
    for event_id, origin, size, root_hex, note in heads:
        report.heads_checked += 1
        where = f"{event_id} (size {size})"
        if verifier is not None:
            try:
                cp = open_note(note, verifier)
            except NoteError as exc:
                found(Finding("tree_heads", where, f"signature check failed: {exc}"))
                continue
            if (cp.origin, cp.size, cp.root.hex()) != (origin, size, root_hex):
                found(Finding("tree_heads", where, "the row's origin, size or root differs from its signed note: edited"))
                continue
        recomputed = roots_at.get(size)
        if recomputed is None:
            found(Finding("tree_heads", where, f"the log holds fewer entries ({report.entries:,}) than this head signs"))
        elif recomputed.hex() != root_hex:
            found(Finding("log_entries", f"leaves {last_good}..{size - 1}",
                          f"the entries do not reproduce the signed root of size {size}: a row in this range was "
                          "changed, deleted or inserted"))
        else:
            last_good = size


def _compare_table(con: duckdb.DuckDBPyConnection, table: str, expected: dict[tuple, tuple], report: AuditReport) -> None:
    found = report.findings.append
    columns = column_names(table)
    key_columns = COMPARED_TABLES[table]
    cur = con.execute(f"SELECT * FROM {table}")
    seen: set[tuple] = set()
    while True:
        chunk = cur.fetchmany(20_000)
        if not chunk:
            break
        for row in chunk:
            key = _key(table, row)
            name = ", ".join(f"{c}={v}" for c, v in zip(key_columns, key, strict=True))
            report.rows_compared += 1
            if key in seen:
                found(Finding(table, name, "stored twice: an inserted row"))
                continue
            seen.add(key)
            want = expected.get(key)
            got = tuple(row[:-LINEAGE_TAIL])
            if want is None:
                found(Finding(table, name, "no event of the log produces this row: inserted (or its id edited)"))
            elif got != want:
                diff = next((c, g, w) for c, g, w in zip(columns, got, want, strict=False) if g != w)
                found(Finding(table, name, f"edited: {diff[0]} is {_short(diff[1])}, the log gives {_short(diff[2])}"))
    for key in expected.keys() - seen:
        name = ", ".join(f"{c}={v}" for c, v in zip(key_columns, key, strict=True))
        found(Finding(table, name, "the log produces this row but the file lacks it: deleted (or not projected yet)"))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
