"""Write a replay's events, postings and emitted events into a DuckDB file in Arrow batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ledger.outcome import Outcome
from services.archive import ArchiveRow

DDL = """
CREATE TABLE IF NOT EXISTS events (seq BIGINT, event_id VARCHAR, subject VARCHAR, topic VARCHAR, key VARCHAR,
  occurred_at_us BIGINT, status VARCHAR, reason VARCHAR, detail VARCHAR);
CREATE TABLE IF NOT EXISTS postings (seq BIGINT, event_id VARCHAR, leg INTEGER, occurred_at_us BIGINT,
  debit_account VARCHAR, credit_account VARCHAR, asset VARCHAR, amount_minor HUGEINT);
CREATE TABLE IF NOT EXISTS emitted (seq BIGINT, cause_event_id VARCHAR, subject VARCHAR, event_id VARCHAR,
  occurred_at_us BIGINT, payload JSON);
CREATE TABLE IF NOT EXISTS ledger_meta (key VARCHAR, value VARCHAR);
"""


class DuckDBSink:
    """Collects rows per table and appends them through Arrow every batch_rows rows (never per event)."""

    def __init__(self, path: Path, batch_rows: int = 50_000):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        self.con = duckdb.connect(str(path))
        self.con.execute(DDL)
        self.batch_rows = batch_rows
        self.events: list[tuple] = []
        self.postings: list[tuple] = []
        self.emitted: list[tuple] = []

    def __call__(self, seq: int, row: ArchiveRow, subject: str | None, record: dict[str, Any] | None, out: Outcome) -> None:
        occurred = record.get("occurred_at") if record else None
        status = "rejected" if out.rejection else "duplicate" if out.duplicate else "applied"
        reason, detail = out.rejection if out.rejection else (None, None)
        self.events.append((seq, out.event_id or None, subject, row[0], row[1], occurred, status, reason, detail))
        for leg, p in enumerate(out.postings):
            self.postings.append((seq, out.event_id, leg, occurred, p.debit_account, p.credit_account, p.asset, p.amount_minor))
        for em_subject, em in out.emitted:
            self.emitted.append((seq, out.event_id, em_subject, em["event_id"], em["occurred_at"], json.dumps(em, default=_bytes_hex)))
        if len(self.events) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        self._append("events", self.events, ["seq", "event_id", "subject", "topic", "key", "occurred_at_us", "status", "reason", "detail"])
        self._append("postings", self.postings,
                     ["seq", "event_id", "leg", "occurred_at_us", "debit_account", "credit_account", "asset", "amount_minor"])
        self._append("emitted", self.emitted, ["seq", "cause_event_id", "subject", "event_id", "occurred_at_us", "payload"])

    def _append(self, table: str, rows: list[tuple], columns: list[str]) -> None:
        if not rows:
            return
        arrow = pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})  # noqa: F841 (read by DuckDB)
        self.con.execute(f"INSERT INTO {table} SELECT * FROM arrow")
        rows.clear()

    def close(self, meta: dict[str, str]) -> None:
        """Flush, store the final state's facts and a balances view (balances are sums of postings)."""
        self.flush()
        self.con.executemany("INSERT INTO ledger_meta VALUES (?, ?)", sorted(meta.items()))
        self.con.execute("""
            CREATE OR REPLACE VIEW balances AS
            SELECT account, asset, SUM(amount) AS balance_minor FROM (
              SELECT credit_account AS account, asset, amount_minor AS amount FROM postings
              UNION ALL SELECT debit_account, asset, -amount_minor FROM postings) GROUP BY account, asset""")
        self.con.close()


def _bytes_hex(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)
