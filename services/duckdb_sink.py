"""Write a replay's events, postings and emitted events into a DuckDB file in Arrow batches.

The output tables are the projector's (services/projection_schema.py: posting_batches, postings,
request_outcomes, liquidations, rejections, series_marks; views balance_legs and balances), so the audit
queries (services/audit.py) read a replay's file and a projected file alike. Lineage in a replay, where
nothing went through the output topics: ``topic`` is the input record's topic, ``partition`` is NULL,
``offset`` is the record's position in the archive (1-based), and ``recorded_at_us`` is the replay's log
clock: the latest ``occurred_at`` seen up to and including that record, in processing order (so a
back-dated event is recorded later than it is effective, as it would be live). The replay also keeps its
own tables: ``events`` (every input with its status), ``emitted`` and ``ledger_meta``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ledger.outcome import Outcome
from schemas.codec import DecodeError, peek_schema_id
from services.archive import ArchiveRow
from services.atomic import commit, refuse_if_held, temp_beside
from services.projection_schema import ensure_schema
from services.projector import Lineage, RowBuffer, insert_tables

DDL = """
CREATE TABLE IF NOT EXISTS events (seq BIGINT, event_id VARCHAR, subject VARCHAR, topic VARCHAR, key VARCHAR,
  occurred_at_us BIGINT, recorded_at_us BIGINT, status VARCHAR, reason VARCHAR, detail VARCHAR);
CREATE TABLE IF NOT EXISTS emitted (seq BIGINT, cause_event_id VARCHAR, subject VARCHAR, event_id VARCHAR,
  occurred_at_us BIGINT, payload JSON);
CREATE TABLE IF NOT EXISTS ledger_meta (key VARCHAR, value VARCHAR);
"""
EVENT_COLUMNS = ["seq", "event_id", "subject", "topic", "key", "occurred_at_us", "recorded_at_us", "status", "reason", "detail"]
EMITTED_COLUMNS = ["seq", "cause_event_id", "subject", "event_id", "occurred_at_us", "payload"]


class DuckDBSink:
    """Collects rows per table and appends them through Arrow every batch_rows events (never per event)."""

    def __init__(self, path: Path, batch_rows: int = 50_000):
        # The target is replaced only once the replay succeeded (close): a bad archive or a crash leaves
        # it as it was, and a file another process holds (`serve`) is refused before any work.
        refuse_if_held(path)
        self.path = path
        self.tmp = temp_beside(path)
        self.tmp.unlink()  # DuckDB creates its own file there
        self.con = duckdb.connect(str(self.tmp))
        self.con.execute(DDL)
        ensure_schema(self.con)
        self.batch_rows = batch_rows
        self.events: list[tuple] = []
        self.emitted: list[tuple] = []
        self.rows = RowBuffer()
        self.clock_us = 0  # the log clock: max occurred_at so far, in processing order

    def __call__(self, seq: int, row: ArchiveRow, subject: str | None, record: dict[str, Any] | None, out: Outcome) -> None:
        topic = row[0]
        occurred = record.get("occurred_at") if record else None
        if isinstance(occurred, int):
            self.clock_us = max(self.clock_us, occurred)
        recorded = self.clock_us
        at = occurred if isinstance(occurred, int) else recorded
        status = "rejected" if out.rejection else "duplicate" if out.duplicate else "applied"
        reason, detail = out.rejection if out.rejection else (None, None)
        self.events.append((seq, out.event_id or None, subject, topic, row[1], occurred, recorded, status, reason, detail))
        where = Lineage(recorded, topic, None, seq)
        key = row[1].encode() if isinstance(row[1], str) else row[1]
        self.rows.add_log_entry(seq - 1, topic, None, None, None, key, row[2], recorded)
        if out.postings:
            self.rows.add("PostingBatch", {
                "event_id": f"post:{out.event_id}", "occurred_at": at, "source": "stockledger",
                "cause_event_id": out.event_id, "cause_kind": out.subject,
                "postings": [p._asdict() for p in out.postings]}, where)
        for em_subject, em in out.emitted:
            self.rows.add(em_subject, em, where)
            self.emitted.append((seq, out.event_id, em_subject, em["event_id"], em["occurred_at"], json.dumps(em, default=_bytes_hex)))
        if out.rejection:
            try:
                schema_id: int | None = peek_schema_id(row[2])
            except DecodeError:
                schema_id = None
            self.rows.add("Rejection", {
                "event_id": f"reject:{topic}:{seq}", "occurred_at": at, "source": "stockledger",
                "cause_event_id": out.event_id or None, "reason": reason, "detail": detail, "source_topic": topic,
                "source_partition": None, "source_offset": seq, "schema_id": schema_id, "original": row[2]}, where)
        if len(self.events) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        self._append("events", self.events, EVENT_COLUMNS)
        self._append("emitted", self.emitted, EMITTED_COLUMNS)
        tables = self.rows.tables()
        if tables:
            insert_tables(self.con, tables, dedupe=False)  # a replay writes a fresh file: nothing to dedupe
        self.rows = RowBuffer()

    def _append(self, table: str, rows: list[tuple], columns: list[str]) -> None:
        if not rows:
            return
        arrow = pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})
        self.con.register("__sink_batch", arrow)
        try:
            self.con.execute(f"INSERT INTO {table} SELECT * FROM __sink_batch")
        finally:
            self.con.unregister("__sink_batch")
        rows.clear()

    def close(self, meta: dict[str, str]) -> None:
        """Flush, store the final state's facts and move the finished file over the target (atomically)."""
        try:
            self.flush()
            if meta:
                self.con.executemany("INSERT INTO ledger_meta VALUES (?, ?)", sorted(meta.items()))
            self.con.execute("CHECKPOINT")
            self.con.close()
            refuse_if_held(self.path)
            Path(f"{self.path}.wal").unlink(missing_ok=True)  # a stale log of the old file must not replay onto the new one
            commit(self.tmp, self.path)
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the temporary file (the target is untouched); safe to call after close."""
        with contextlib.suppress(duckdb.Error):
            self.con.close()
        for leftover in (self.tmp, Path(f"{self.tmp}.wal")):
            leftover.unlink(missing_ok=True)


def _bytes_hex(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)
