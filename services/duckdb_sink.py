"""Write a replay's output records into a DuckDB file in Arrow batches, as the projector writes them.

The replay folds with the worker's own step (streams.step), which returns the very output records the
worker publishes; this sink decodes them and builds their rows with the projector's RowBuffer, so the
tables (services/projection_schema.py) hold the same ids, amounts, payloads and times as a projected
file (tests/integration/test_contract.py). Lineage that only a transport has differs, by design: in a
replay ``topic`` is the output topic the record would go to, ``partition`` is NULL and ``offset`` is the
entry's leaf index in the Merkle log; ``recorded_at_us`` is, as live, the entry's source timestamp where
the archive has one (an exported log), else the log clock (the latest ``occurred_at`` folded so far). The
replay also keeps its own tables: ``events`` (every input with its status), ``emitted`` and ``ledger_meta``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from schemas.codec import decode
from services.atomic import commit, refuse_if_held, temp_beside
from services.projection_schema import ensure_schema
from services.projector import Lineage, RowBuffer, insert_tables
from streams.step import Entry, StepResult

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

    def __call__(self, seq: int, entry: Entry, res: StepResult) -> None:
        """One entry: its events row, its log entry, and the rows of its output records (decoded as the
        projector decodes them from Kafka: the same ids, amounts and payloads)."""
        out, record = res.outcome, res.record
        occurred = record.get("occurred_at") if record else None
        status = "rejected" if out.rejection else "duplicate" if out.duplicate else "applied"
        reason, detail = out.rejection if out.rejection else (None, None)
        key = entry.key.encode() if isinstance(entry.key, str) else entry.key
        self.events.append((seq, out.event_id or None, res.subject, entry.topic,
                            key.decode(errors="replace") if key is not None else None, occurred,
                            res.recorded_at_us, status, reason, detail))
        self.rows.add_log_entry(res.leaf_index, entry.topic, entry.partition, entry.offset, entry.timestamp_ms, key,
                                entry.value, res.recorded_at_us)
        for out_topic, _key, value in res.outputs:
            subject, rec = decode(value)
            self.rows.add(subject, rec, Lineage(res.recorded_at_us, out_topic, None, res.leaf_index))
        for em_subject, em in out.emitted:
            self.emitted.append((seq, out.event_id, em_subject, em["event_id"], em["occurred_at"], json.dumps(em, default=_bytes_hex)))
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
