"""Exactly-once projection of the ledger's output topics into DuckDB.

A kafka-python consumer (auto commit off) reads ledger.postings, request.outcomes, liquidation.events,
ledger.rejections and series.state in micro-batches (at most ``max_batch_records`` records or
``max_batch_ms`` of waiting). Each batch is decoded (PostingBatch records by schemas.posting_reader, the rest by
the codec), appended through Arrow
(``INSERT INTO t SELECT ... FROM batch``) and the next offset of every partition it touched is written to
``projector_offsets`` in the SAME DuckDB transaction. On partition assignment the consumer seeks to the
offsets stored in DuckDB (a ConsumerRebalanceListener), so a kill -9 at any instant neither loses nor
doubles a row: either the transaction committed (rows and offsets) or it did not (neither). The transaction
(LedgerStore: legs, books, running totals) runs beside the next batch's decoding, in a writer process when the
projector owns its file (services.projector_process), on a thread with a shared connection.

Re-emissions (the stream worker re-sends an output after a crash, at a new offset, with the same
event_id and content) are dropped by an anti-join against the rows already stored, pruned to the
batch's effective-time range (a re-emission has the same ``occurred_at``, and DuckDB's zone maps skip
the rest of the table). Measured on DuckDB 2.0 with 4M stored postings and 10k-row batches: full
anti-join ~100-200 ms, unique index + INSERT OR IGNORE ~400 ms (and 7x the file size), range-pruned
anti-join ~7-25 ms; so the range-pruned anti-join it is.

Bytes that are not a record the projector knows are stored in ``projector_errors`` with their lineage.
The stored offsets are also committed to the consumer group after each batch, for lag monitoring only.

Run it: ``python -m services.projector --db var/stockledger.duckdb [--topics a,b] [--until-caught-up]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, repeat
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ledger.log_entry import entry_leaf_hash
from schemas import codec
from schemas.posting_reader import HEADER as POSTING_HEADER
from schemas.posting_reader import PostingValues, read_posting_batch
from schemas.topics import PROJECTED_TOPICS
from services.kafka_security import PROJECTOR, kafka_python_auth
from services.projection_schema import (
    BALANCES_FROM,
    BOOK_KEY_HASH_SQL,
    EVENT_TABLES,
    LEG_BUCKETS,
    LEG_TABLES,
    TABLES,
    arrow_schema,
    column_names,
    ensure_schema,
    rows_to_arrow,
)
from services.projector_limits import MAX_BATCH_RECORDS

log = logging.getLogger("stockledger.projector")

OUTPUT_TOPICS: tuple[str, ...] = PROJECTED_TOPICS  # declared in schemas.topics
LIQUIDATION_SUBJECTS = ("LiquidationTriggered", "LiquidationExecuted", "BadDebtCovered", "AutoDeleveraged")
PROJECTED_SUBJECTS = frozenset({"PostingBatch", "RequestOutcome", "Rejection", "SeriesState", "SequencedRecord", "SequencedBatch", "TreeHead",
                                *LIQUIDATION_SUBJECTS})
TOPIC_METADATA_WAIT_S = 30  # how long a starting projector waits for the metadata of just-created topics
FULL_GC_EVERY_S = 30.0  # see GC_PAUSED
FETCH_BYTES_PER_PARTITION = 8 << 20  # kafka-python's max_partition_fetch_bytes (see Projector._open)
CHECKPOINT_WAL_MB = 256  # WAL size past which the projector checkpoints its file after a commit (LedgerStore.maintain)
CHECKPOINT_THRESHOLD = f"{CHECKPOINT_WAL_MB}MB"  # the same, as DuckDB's own setting (the bench's in-process steps)
BACKSTOP_CHECKPOINT_THRESHOLD = "1GB"  # DuckDB's own checkpoint inside a commit, if maintain has not run by then


class Lineage(NamedTuple):
    """Where a row came from: recorded time (us), topic, partition, offset."""

    recorded_at_us: int
    topic: str
    partition: int | None
    offset: int


class InRecord(NamedTuple):
    """The fields of a Kafka ConsumerRecord the projector uses (tests build these by hand)."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None  # ms since the epoch, as Kafka stores it
    key: bytes | None
    value: bytes | None


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_bytes_hex)


def _bytes_hex(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


BATCH_COLUMNS = tuple(column_names("posting_batches"))
LEG_FIELDS = ("leg", "debit_account", "credit_account", "asset", "amount_minor")  # per leg; the rest is the batch's
POSTING_COLUMNS = tuple(column_names("postings"))


# A PostingBatch record handed over undecoded to the writer process (RowBuffer.hand_over_appenders, HandOver).
HANDED_SCHEMA = pa.schema([("value", pa.binary()), ("key", pa.binary()), ("recorded_at_us", pa.int64()),
                           ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64())])
HANDED_COLUMNS = tuple(HANDED_SCHEMA.names)


class RowBuffer:
    """Rows per table for one batch, in the table's column order (projection_schema.TABLES).

    The same event_id twice in one batch is kept once. This is the projector's hot loop: a PostingBatch (most of the
    traffic) is kept as the flat tuple schemas.posting_reader returns, with its lineage in four lists, and nothing
    else is done per record; tables() turns them into columns in C (zip, chain, slices; duplicates found by one set
    of the batch's event ids) and the batch-level columns are repeated for each leg by Arrow (take), not in Python.
    Other subjects are rare and build tuples. ``rows`` shows every table as tuples (log audit compares rows).
    """

    def __init__(self, next_leaf_index: int = 0) -> None:
        self._rows: dict[str, list[tuple]] = {t: [] for t in TABLES
                                              if t not in ("projector_offsets", "posting_batches", "postings")}
        # Per posting batch: its values as the reader returns them (event_id, occurred_at, source, cause_event_id,
        # cause_kind, flat postings), and its recorded time, topic, partition and offset.
        self._posting_values: list[PostingValues] = []
        self._posting_lineage: tuple[list[int], list[str], list[int | None], list[int]] = ([], [], [], [])
        # PostingBatch records left undecoded for the writer process (HANDED_COLUMNS, one list each): see HandOver.
        self._handed: tuple[list, ...] = tuple([] for _ in HANDED_COLUMNS)
        self.next_leaf_index = next_leaf_index  # the Merkle log index of the next sequenced entry
        self._seen: set[tuple[str, str]] = set()
        self.duplicates = 0
        self.errors = 0

    def posting_appenders(self) -> tuple[Any, ...]:
        """The bound appends add_posting_values makes (values, recorded_at_us, topic, partition, offset), for a caller
        whose loop adds hundreds of thousands of batches and would otherwise pay a method call for each."""
        return (self._posting_values.append, *(column.append for column in self._posting_lineage))

    def hand_over_appenders(self) -> tuple[Any, ...]:
        """The bound appends of one record handed over undecoded (value, key, recorded_at_us, topic, partition,
        offset): tables() sends them as ``posting_raw`` and the writer process decodes them (decode_handed)."""
        return tuple(column.append for column in self._handed)

    def _posting_columns(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The posting batches' columns (BATCH_COLUMNS order) and their flat postings, one event_id once.

        The check for repeated event ids is one set of the column; only a batch that holds a repeat is filtered
        (first occurrence kept, the others counted as duplicates and dropped from the buffer)."""
        values = self._posting_values
        if not values:
            return [() for _ in BATCH_COLUMNS], []
        event_ids = [v[0] for v in values]
        if len(set(event_ids)) != len(event_ids):
            seen: set[str] = set()
            keep = []
            for i, e in enumerate(event_ids):
                if e not in seen:
                    seen.add(e)
                    keep.append(i)
            self.duplicates += len(values) - len(keep)
            self._posting_values = values = [values[i] for i in keep]
            self._posting_lineage = tuple([c[i] for i in keep] for c in self._posting_lineage)  # type: ignore[assignment]
        event_id, occurred, source, cause, kind, postings = zip(*values, strict=True)
        recorded, topic, partition, offset = self._posting_lineage
        legs = [len(p) >> 2 for p in postings]
        return [event_id, cause, kind, legs, occurred, recorded, source, topic, partition, offset], list(postings)

    def _leg_columns(self, counts: Sequence[int], postings: list[tuple[Any, ...]]) -> tuple[list, ...]:
        """(batch row, leg, debit, credit, asset, amount) per posting, each a list (chained iterators: no Python loop)."""
        flat = list(chain.from_iterable(postings))
        return (list(chain.from_iterable(map(repeat, range(len(counts)), counts))),
                list(chain.from_iterable(map(range, counts))), flat[0::4], flat[1::4], flat[2::4], flat[3::4])

    @property
    def rows(self) -> dict[str, list[tuple]]:
        columns, postings = self._posting_columns()
        batches = list(zip(*columns, strict=True))
        pos = {c: i for i, c in enumerate(BATCH_COLUMNS)}
        legs = []
        for b, *leg in zip(*self._leg_columns(columns[BATCH_COLUMNS.index("legs")], postings), strict=True):
            row = dict(zip(BATCH_COLUMNS, batches[b], strict=True)) | dict(zip(LEG_FIELDS, leg, strict=True))
            legs.append(tuple(row[c] if c in row else batches[b][pos[c]] for c in POSTING_COLUMNS))
        return self._rows | {"posting_batches": batches, "postings": legs}

    def _first(self, table: str, event_id: str) -> bool:
        key = (table, event_id)
        if key in self._seen:
            self.duplicates += 1
            return False
        self._seen.add(key)
        return True

    def add_log_entry(self, leaf_index: int, topic: str, partition: int | None, offset: int | None,
                      timestamp_ms: int | None, key: bytes | None, value: bytes | None, recorded_at_us: int) -> None:
        """One entry of the Merkle log (a ledger.sequenced record, or an archive row in a replay)."""
        if not self._first("log_entries", str(leaf_index)):
            return
        try:
            event_id = codec.decode(value or b"")[1].get("event_id")
        except codec.DecodeError:
            event_id = None
        self._rows["log_entries"].append((leaf_index, topic, partition, offset, timestamp_ms, key, value,
                                         event_id if isinstance(event_id, str) else None,
                                         entry_leaf_hash(topic, key, value), recorded_at_us))

    def add_posting_batch(self, record: dict[str, Any], recorded_at_us: int, topic: str, partition: int | None,
                          offset: int) -> None:
        """add() for a PostingBatch decoded by fastavro, without a Lineage per record."""
        # Every field is read before anything is appended: a record that lacks one leaves the columns aligned.
        postings = tuple(v for p in record["postings"]
                         for v in (p["debit_account"], p["credit_account"], p["asset"], p["amount_minor"]))
        self.add_posting_values((record["event_id"], record["occurred_at"], record.get("source"), record["cause_event_id"],
                                 record["cause_kind"], postings), recorded_at_us, topic, partition, offset)

    def add_posting_values(self, values: PostingValues, recorded_at_us: int, topic: str, partition: int | None,
                           offset: int) -> None:
        """One PostingBatch as schemas.posting_reader reads it (the projector's hot path: see posting_appenders)."""
        self._posting_values.append(values)
        recorded, topics, partitions, offsets = self._posting_lineage
        recorded.append(recorded_at_us)
        topics.append(topic)
        partitions.append(partition)
        offsets.append(offset)

    def add(self, subject: str, record: dict[str, Any], where: Lineage) -> bool:
        """Add the rows of one decoded record; False if the subject is not one the projector stores."""
        if subject in ("SequencedRecord", "SequencedBatch"):
            # Entries of the Merkle log, numbered in topic order (next_leaf_index, kept by the BatchWriter) and
            # recorded at their source time, as the fold stamps its outputs and as a replay records them.
            for r in (record["records"] if subject == "SequencedBatch" else [record]):
                self.add_log_entry(self.next_leaf_index, r["topic"], r["partition"], r["offset"], r["timestamp_ms"],
                                   r["key"], r["value"], r["timestamp_ms"] * 1_000)
                self.next_leaf_index += 1
            return True
        tail = (record["occurred_at"], where.recorded_at_us, record.get("source"), where.topic, where.partition,
                where.offset)
        event_id = record["event_id"]
        g = record.get
        if subject == "PostingBatch":
            self.add_posting_batch(record, where.recorded_at_us, where.topic, where.partition, where.offset)
        elif subject == "RequestOutcome":
            if self._first("request_outcomes", event_id):
                self._rows["request_outcomes"].append((
                    event_id, record["request_event_id"], record["request_kind"], record["key"], record["decision"],
                    g("reason"), _json(record["inputs"]), *tail))
        elif subject in LIQUIDATION_SUBJECTS:
            if self._first("liquidations", event_id):
                trigger = event_id if subject == "LiquidationTriggered" else g("trigger_event_id")
                self._rows["liquidations"].append((
                    event_id, subject, g("account"), trigger, g("cause_event_id"), g("step"), g("equity_micro_usd"),
                    g("maintenance_margin_micro_usd"), g("debt_micro_usd"), g("penalty_micro_usd"),
                    g("bonus_micro_usd"), g("shortfall_micro_usd"), g("amount_micro_usd", g("haircut_micro_usd")), _json(record), *tail))
        elif subject == "Rejection":
            if self._first("rejections", event_id):
                self._rows["rejections"].append((
                    event_id, g("cause_event_id"), record["reason"], g("detail"), g("source_topic"),
                    g("source_partition"), g("source_offset"), g("schema_id"), g("original"), *tail))
        elif subject == "TreeHead":
            if self._first("tree_heads", event_id):
                self._rows["tree_heads"].append((event_id, record["origin"], record["tree_size"], record["root_hash"],
                                                record["key_name"], record["note"], *tail))
        elif subject == "SeriesState":
            if self._first("series_marks", event_id):
                self._rows["series_marks"].append((
                    event_id, record["series_id"], g("underlying"), g("spot_micro_usd"), g("theo_micro_usd"),
                    g("mark_micro_usd"), g("net_volume_nano"), g("cum_funding_pico_usd"), g("volatility_ppm"), *tail))
        else:
            return False
        return True

    def add_error(self, rec: InRecord, recorded_at_us: int, reason: str, detail: str, schema_id: int | None = None,
                  subject: str | None = None) -> None:
        self.errors += 1
        self._rows["projector_errors"].append((rec.topic, rec.partition, rec.offset, recorded_at_us, reason, detail,
                                              schema_id, subject, rec.key, rec.value))

    def tables(self, assembled: bool = True) -> dict[str, pa.Table]:
        """Arrow tables per table. assembled=False leaves the postings as their batch's row number and per-leg
        columns (``posting_legs``; assemble_postings makes the table): a third of the bytes to send to the writer
        process, which assembles them."""
        out = {t: rows_to_arrow(t, rows) for t, rows in self._rows.items() if rows}
        if self._handed[0]:
            out["posting_raw"] = pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(self._handed, HANDED_SCHEMA,
                                                                                              strict=True)],
                                                      schema=HANDED_SCHEMA)
        if self._posting_values:
            columns, postings = self._posting_columns()
            schema = arrow_schema("posting_batches")
            batches = pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(columns, schema, strict=True)],
                                           schema=schema)
            out["posting_batches"] = batches
            posting_schema = arrow_schema("postings")
            leg_cols = self._leg_columns(columns[BATCH_COLUMNS.index("legs")], postings)
            legs = pa.Table.from_arrays(
                [pa.array(leg_cols[0], pa.int32()),
                 *(pa.array(c, posting_schema.field(f).type) for f, c in zip(LEG_FIELDS, leg_cols[1:], strict=True))],
                names=["batch_row", *LEG_FIELDS])
            out["postings" if assembled else "posting_legs"] = assemble_postings(batches, legs) if assembled else legs
        return out


def buffer_decoded(buf: RowBuffer, rec: InRecord, recorded_at_us: int) -> None:
    """Decode one record with the codec and buffer its rows (or an error row): every record the PostingBatch reader
    does not take, on either side of the hand-over (BatchWriter._prepare, decode_handed)."""
    try:
        subject, record = codec.decode(rec.value)
    except codec.DecodeError as err:
        buf.add_error(rec, recorded_at_us, err.reason, err.detail, err.schema_id)
        return
    if subject not in PROJECTED_SUBJECTS:
        buf.add_error(rec, recorded_at_us, "unexpected_subject", f"{subject} is not an output record the projector stores",
                      codec.peek_schema_id(rec.value), subject)
        return
    try:
        if subject == "PostingBatch":  # most of the traffic
            buf.add_posting_batch(record, recorded_at_us, rec.topic, rec.partition, rec.offset)
        else:
            buf.add(subject, record, Lineage(recorded_at_us, rec.topic, rec.partition, rec.offset))
    except (KeyError, TypeError, ValueError) as exc:  # a record no row can hold: kept, never a poison pill
        buf.add_error(rec, recorded_at_us, "unprojectable", f"{subject}: {type(exc).__name__}: {exc}",
                      codec.peek_schema_id(rec.value), subject)


def decode_handed(raw: pa.Table) -> RowBuffer:
    """The rows of the PostingBatch records the consumer handed over undecoded (``posting_raw``), decoded as
    BatchWriter._prepare decodes them: by the PostingBatch reader, or by the codec (errors kept as error rows)."""
    buf = RowBuffer()
    for value, key, recorded, topic, partition, offset in zip(*(raw.column(c).to_pylist() for c in HANDED_COLUMNS),
                                                              strict=True):
        values = read_posting_batch(value)
        if values is None:
            buffer_decoded(buf, InRecord(topic, partition, offset, None, key, value), recorded)
        else:
            buf.add_posting_values(values, recorded, topic, partition, offset)
    return buf


def merge_handed(tables: dict[str, pa.Table], handed: dict[str, pa.Table]) -> tuple[dict[str, pa.Table], int]:
    """The rows of the handed-over records (the first PostingBatch records of the batch) followed by the consumer's
    tables (posting legs unassembled). A PostingBatch in both parts is kept once: the row with the lower offset, as
    a consumer decoding the whole batch keeps the first: a re-emission has the same key, so the same partition.
    (Unless the topic's partition count changed between the two: then which copy's lineage is kept depends on the
    poll's timing, as it did before the hand-over, since which copies share a batch, and in what partition order,
    does too. Each copy is a real record of the same event; balances are the same either way.)
    Returns the tables and how many rows were dropped."""
    out = dict(handed)
    first_batches = handed["posting_batches"].num_rows if "posting_batches" in handed else 0
    for name, table in tables.items():
        if name == "posting_legs" and first_batches:  # the consumer's legs point at rows after the handed batches
            rows = pc.add(table.column("batch_row"), pa.scalar(first_batches, pa.int32()))
            table = table.set_column(0, "batch_row", rows)
        out[name] = pa.concat_tables([out[name], table]) if name in out else table
    if not first_batches or "posting_batches" not in tables:
        return out, 0
    batches, legs = out["posting_batches"], out["posting_legs"]
    event_ids = batches.column("event_id")
    if pc.count_distinct(event_ids).as_py() == batches.num_rows:
        return out, 0
    lowest: dict[str, tuple[int, int]] = {}  # event id -> (offset, row) of the row kept
    for row, (event_id, offset) in enumerate(zip(event_ids.to_pylist(), batches.column("offset").to_pylist(),
                                                strict=True)):
        if event_id not in lowest or offset < lowest[event_id][0]:
            lowest[event_id] = (offset, row)
    kept = sorted(row for _, row in lowest.values())
    new_row: list[int | None] = [None] * batches.num_rows
    for new, row in enumerate(kept):
        new_row[row] = new
    moved = pc.take(pa.array(new_row, pa.int32()), legs.column("batch_row"))
    legs = legs.set_column(0, "batch_row", moved).filter(pc.is_valid(moved))
    out["posting_batches"], out["posting_legs"] = batches.take(pa.array(kept, pa.int32())), legs
    return out, batches.num_rows - len(kept)


def assemble_postings(batches: pa.Table, legs: pa.Table) -> pa.Table:
    """The postings table from its batches and per-leg columns (RowBuffer.tables): the batch-level columns are
    repeated for each leg by Arrow (take), not in Python."""
    index = legs.column("batch_row")
    return pa.Table.from_arrays([legs.column(name) if name in LEG_FIELDS else batches.column(name).take(index)
                                 for name in POSTING_COLUMNS], schema=arrow_schema("postings"))


_BOOK_KEY_SEP = "\x00"  # account and asset joined into one key (neither holds a NUL)


class BookIds:
    """(account, asset) -> book number, as stored in account_books; a batch's new books are inserted with it.

    Held in memory by the one writer of a file. After a rolled-back transaction call reload: the ids handed out
    for it were never stored.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.reload(con)

    def reload(self, con: duckdb.DuckDBPyConnection) -> None:
        self.ids: dict[str, int] = {f"{a}{_BOOK_KEY_SEP}{s}": b for b, a, s in
                                    con.execute("SELECT book, account, asset FROM account_books").fetchall()}
        self.next_book = max(self.ids.values(), default=-1) + 1

    def legs(self, postings: pa.Table) -> tuple[pa.Table, pa.Table]:
        """Two legs per posting (all debits, then all credits, each with the amount), and the books first seen here
        (book, account, asset: insert_legs stores them with their key hash, computed by DuckDB).

        The (account, asset) keys are made, deduplicated and split by Arrow; Python looks up each distinct key once
        (map over a dict, in C) and numbers the new ones in order of first appearance.
        """
        asset = postings.column("asset")
        keys = pa.chunked_array([chunk for side in ("debit_account", "credit_account")
                                 for chunk in pc.binary_join_element_wise(postings.column(side), asset, _BOOK_KEY_SEP).chunks])
        encoded = pc.dictionary_encode(keys.combine_chunks())
        distinct = encoded.dictionary.to_pylist()
        found = pa.array(list(map(self.ids.get, distinct)), pa.int32())  # null: a book not seen before
        unseen = found.is_null()
        new_keys = encoded.dictionary.filter(unseen)
        first = self.next_book
        self.next_book += len(new_keys)
        numbers = pa.array(range(first, self.next_book), pa.int32())
        self.ids.update(zip(new_keys.to_pylist(), range(first, self.next_book), strict=True))
        books = pc.replace_with_mask(found, unseen, numbers) if len(new_keys) else found
        parts = pc.split_pattern(new_keys, _BOOK_KEY_SEP)
        new = pa.table({"book": numbers, "account": pc.list_element(parts, 0), "asset": pc.list_element(parts, 1)})
        n = postings.num_rows

        def twice(name: str) -> pa.ChunkedArray:
            chunks = postings.column(name).chunks
            return pa.chunked_array(chunks + chunks)

        legs = pa.Table.from_arrays([
            pc.take(books, encoded.indices), twice("asset"),
            pa.chunked_array([pa.repeat(True, n), pa.repeat(False, n)]), twice("amount_minor"), twice("occurred_at_us"),
            twice("recorded_at_us"), twice("partition"), twice("offset"), twice("leg"),
        ], schema=arrow_schema(LEG_TABLES[0]))
        return legs, new


def _insert_new(con: duckdb.DuckDBPyConnection, table: str, name: str, arrow: pa.Table, returning: str = "") -> Any:
    """INSERT the registered batch's rows whose event_id is not stored; the anti-join is pruned to the batch's
    occurred_at range (a re-emission carries the same content, hence the same effective time, so nothing outside
    the range can match and zone maps let DuckDB skip it)."""
    occurred = arrow.column("occurred_at_us")
    lo, hi = pc.min(occurred).as_py(), pc.max(occurred).as_py()
    return con.execute(f"INSERT INTO {table} SELECT b.* FROM {name} b WHERE NOT EXISTS (SELECT 1 FROM {table} p "
                       f"WHERE p.occurred_at_us BETWEEN $lo AND $hi AND p.event_id = b.event_id){returning}",
                       {"lo": lo, "hi": hi})


def _insert_all(con: duckdb.DuckDBPyConnection, table: str, arrow: pa.Table, where: str = "", select: str = "*") -> int:
    con.register("__batch_all", arrow)
    try:
        row = con.execute(f"INSERT INTO {table} SELECT {select} FROM __batch_all{where}").fetchone()
        return int(row[0]) if row else 0
    finally:
        con.unregister("__batch_all")


def insert_legs(con: duckdb.DuckDBPyConnection, postings: pa.Table, books: BookIds) -> int:
    """The postings' legs into their book's bucket table, new books, and the per-book running totals."""
    legs, new_books = books.legs(postings)
    new = new_books.num_rows
    if new:  # the key hash by DuckDB (book_key_hash's SQL twin), not by Python per book
        _insert_all(con, "account_books", new_books, select=f"book, account, asset, {BOOK_KEY_HASH_SQL}")
    # Sorted by bucket, each bucket's legs are one zero-copy slice: one plain append per bucket table.
    bucket = pc.bit_wise_and(legs.column("book"), LEG_BUCKETS - 1)
    legs = legs.take(pc.sort_indices(bucket))
    start = 0
    for k, count in sorted((c["values"], c["counts"]) for c in pc.value_counts(bucket).to_pylist()):
        _insert_all(con, LEG_TABLES[k], legs.slice(start, count))
        start += count
    first_new = new_books.column("book")[0].as_py() if new else books.next_book  # the batch's books from here on are new
    con.register("__batch_legs", legs)
    try:
        # Running totals: the batch's per-book sums added to the stored ones (a hash join on the integer book, no
        # index to maintain); the new books' sums inserted (books are numbered in order: new ones from first_new).
        totals = BALANCES_FROM.format(legs="__batch_legs")
        con.execute(f"""UPDATE account_balances a SET debits_minor = a.debits_minor + t.debits_minor,
              credits_minor = a.credits_minor + t.credits_minor, debit_legs = a.debit_legs + t.debit_legs,
              credit_legs = a.credit_legs + t.credit_legs
            FROM ({totals}) t WHERE a.book = t.book AND t.book < $first_new""", {"first_new": first_new}).fetchall()
        if new:
            con.execute(f"INSERT INTO account_balances {totals} HAVING book >= $first_new ORDER BY book",
                        {"first_new": first_new}).fetchall()
    finally:
        con.unregister("__batch_legs")
    return legs.num_rows


def insert_tables(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table], dedupe: bool = True,
                  books: BookIds | None = None) -> dict[str, int]:
    """Append Arrow tables; rows whose event_id is already stored are skipped. Returns rows inserted per table.

    The caller owns the transaction. Postings are deduplicated through their batches: a posting batch and its
    postings arrive in one record, so the postings of the batches found new are inserted as they are (no second
    anti-join over the largest table), and their legs go to the balance tables (insert_legs; books: the file's
    BookIds, loaded here if not given).
    """
    inserted: dict[str, int] = {}
    postings = tables.get("postings")
    for table, arrow in tables.items():
        if table == "postings" and "posting_batches" in tables:
            continue  # with its batches, below
        name = f"__batch_{table}"
        con.register(name, arrow)
        try:
            if dedupe and table == "posting_batches":
                new_ids = [r[0] for r in _insert_new(con, table, name, arrow, " RETURNING event_id").fetchall()]
                inserted[table] = len(new_ids)
                if postings is not None and len(new_ids) < arrow.num_rows:
                    postings = postings.filter(pc.is_in(postings.column("event_id"), value_set=pa.array(new_ids, pa.string())))
            elif dedupe and table in EVENT_TABLES:
                row = _insert_new(con, table, name, arrow).fetchone()
                inserted[table] = int(row[0]) if row else 0
            else:
                row = con.execute(f"INSERT INTO {table} SELECT * FROM {name}").fetchone()
                inserted[table] = int(row[0]) if row else 0
        finally:
            con.unregister(name)
    if postings is not None and "posting_batches" in tables:
        inserted["postings"] = _insert_all(con, "postings", postings) if postings.num_rows else 0
    if postings is not None and "postings" in inserted and postings.num_rows:
        inserted["account_legs"] = insert_legs(con, postings, books or BookIds(con))
    return inserted


@dataclass
class BatchResult:
    records: int = 0
    skipped: int = 0  # below the stored offset (already projected): never written twice
    duplicates: int = 0  # same event_id as a stored row or earlier in the batch
    errors: int = 0
    inserted: dict[str, int] = field(default_factory=dict)


class _GcPause:
    """Pauses Python's cyclic GC while any batch is being prepared or committed (on either thread).

    The GC would rescan the dicts, lists and tuples a batch allocates, several times over, and none of them is
    part of a cycle (reference counting frees them). Measured: the projector at 53,000 rows/s with the GC paused
    in prepare and commit only, 85,000 with it off (the same run, bench/audit). The projector runs a full
    collection between batches every FULL_GC_EVERY_S, so cycles made elsewhere are still freed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._resume:
                gc.enable()


GC_PAUSED = _GcPause()


@dataclass
class PreparedBatch:
    """A batch decoded and turned into Arrow tables, with the offsets it moves to: what commit writes."""

    tables: dict[str, pa.Table]
    next_offsets: dict[tuple[str, int], int]
    now_us: int
    result: BatchResult
    buffered_duplicates: int
    handed: int = 0  # PostingBatch records left for the writer process to decode
    sent_at: float | None = None  # when BatchWriter.send sent it to the writer process (perf_counter)


class WriteOutcome(NamedTuple):
    """What LedgerStore.write did: rows inserted and offered per table, and what it found in the handed-over records."""

    inserted: dict[str, int]
    offered: dict[str, int]  # rows per event table before the anti-join (the rest were stored already)
    errors: int  # handed-over records kept as error rows
    duplicates: int  # handed-over records whose event id was already in the batch
    handed: int  # records decoded here
    decode_s: float  # seconds decoding them
    write_s: float  # seconds for the rest (Arrow, DuckDB, commit)


class LedgerStore:
    """The DuckDB side of the projection: the books, and one transaction per batch (rows, legs, running totals and
    the next offsets, or none of them). Used on the projector's commit thread (a shared connection) or inside its
    writer process (services.projector_process), where DuckDB does not contend for the consumer's GIL."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        ensure_schema(con)
        # DuckDB checkpoints the WAL into the file once it holds 16 MB, about every batch here, and each checkpoint
        # rewrites the tables' partly filled row groups: measured 150-430 ms per 20,000-record commit with the
        # default, 80 ms with checkpoints every few hundred MB. And DuckDB runs it inside the commit that crosses the
        # threshold: the commit's answer waited 1.3-1.5 s for a 227 MB WAL. So the store checkpoints itself after a
        # commit has been answered (maintain), once the WAL passes CHECKPOINT_WAL_MB; DuckDB's own threshold is a
        # backstop. A crash replays at most that much WAL on open.
        con.execute(f"SET checkpoint_threshold = '{BACKSTOP_CHECKPOINT_THRESHOLD}'")
        path = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
        self._wal = Path(f"{path[0]}.wal") if path and path[0] else None  # None: in memory
        self.books = BookIds(con)

    def execute(self, sql: str, params: Any = None) -> duckdb.DuckDBPyConnection:
        """A statement on the store's connection (reads; a writer process answers with the rows)."""
        return self.con.execute(sql, params)

    def state(self) -> tuple[dict[tuple[str, int], int], int]:
        """The stored next offset per topic partition, and the Merkle log index of the next sequenced entry."""
        offsets = {(t, p): o for t, p, o in
                   self.con.execute('SELECT topic, "partition", next_offset FROM projector_offsets').fetchall()}
        return offsets, self.con.execute("SELECT coalesce(max(leaf_index) + 1, 0) FROM log_entries").fetchone()[0]

    def write(self, tables: dict[str, pa.Table], next_offsets: dict[tuple[str, int], int], now_us: int) -> WriteOutcome:
        """One transaction: the tables (deduplicated), the postings' legs and totals, the next offsets; the records
        handed over undecoded (``posting_raw``) are decoded here first. On any error the transaction is rolled back,
        the books handed out are taken back, and it raises."""
        started = time.perf_counter()
        offsets = pa.table({
            "topic": pa.array([t for t, _ in next_offsets], pa.string()),
            "partition": pa.array([p for _, p in next_offsets], pa.int32()),
            "next_offset": pa.array(list(next_offsets.values()), pa.int64()),
            "updated_at_us": pa.array([now_us] * len(next_offsets), pa.int64()),
        })
        errors = duplicates = handed = 0
        if "posting_raw" in tables:
            raw = tables["posting_raw"]
            handed = raw.num_rows
            buf = decode_handed(raw)
            tables, repeated = merge_handed({t: v for t, v in tables.items() if t != "posting_raw"},
                                            buf.tables(assembled=False))
            errors, duplicates = buf.errors, buf.duplicates + repeated
        decoded_at = time.perf_counter()
        if "posting_legs" in tables:  # sent unassembled (RowBuffer.tables(assembled=False))
            tables = {t: v for t, v in tables.items() if t != "posting_legs"} | {
                "postings": assemble_postings(tables["posting_batches"], tables["posting_legs"])}
        offered = {t: v.num_rows for t, v in tables.items() if t in EVENT_TABLES and t != "postings"}
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            inserted = insert_tables(con, tables, books=self.books)
            con.register("__batch_offsets", offsets)
            try:
                con.execute("INSERT OR REPLACE INTO projector_offsets SELECT * FROM __batch_offsets")
            finally:
                con.unregister("__batch_offsets")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            self.books.reload(con)  # the books numbered for this batch were never stored
            raise
        return WriteOutcome(inserted, offered, errors, duplicates, handed, decoded_at - started,
                            time.perf_counter() - decoded_at)

    def maintain(self) -> bool:
        """Checkpoint the file if its WAL has passed CHECKPOINT_WAL_MB (between commits: see __init__); whether it did."""
        try:
            if self._wal is None or self._wal.stat().st_size <= CHECKPOINT_WAL_MB << 20:
                return False
        except FileNotFoundError:  # no WAL: nothing written since the last checkpoint
            return False
        try:
            self.con.execute("CHECKPOINT")
        except duckdb.TransactionException as exc:  # another transaction in the way: the next commit tries again
            log.info("checkpoint deferred: %s", exc)
            return False
        return True

    def close(self) -> None:
        self.con.close()


class BatchWriter:
    """Decodes consumed records and writes them, with the next offsets, in one DuckDB transaction.

    write = prepare (decode, rows, Arrow: Python, the consumer's thread) + commit (LedgerStore.write: the legs and
    the DuckDB transaction): the projector runs the commit of one batch beside the preparation of the next, in its
    writer process (or on a thread, with a shared connection). ``store``: a LedgerStore, or the writer process's
    handle; by default a LedgerStore on ``con``.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection | None = None, store: Any = None):
        self.store = store if store is not None else LedgerStore(con)
        self.remote = not isinstance(self.store, LedgerStore)  # a writer process: postings are sent unassembled
        self.offsets, self.next_leaf_index = self.store.state()
        self.claimed = dict(self.offsets)  # committed, or prepared and on their way to a commit
        self.last_outcome: WriteOutcome | None = None  # the last commit's (HandOver reads its timings)
        self.last_commit_s = 0.0  # and how long it took, seen from here (sending the tables included)
        # next_leaf_index: the Merkle log index of the next sequenced entry; stored (as log_entries) in the same
        # transactions as the offsets, claimed with them at prepare time, and reloaded with them if a commit fails.

    def stored_offsets(self, topics: Iterable[str] | None = None) -> dict[tuple[str, int], int]:
        wanted = None if topics is None else set(topics)
        return {k: v for k, v in self.offsets.items() if wanted is None or k[0] in wanted}

    def write(self, records: Sequence[InRecord]) -> BatchResult:
        return self.commit(self.prepare(records))

    def prepare(self, records: Sequence[InRecord], hand_over: int = 0) -> PreparedBatch:
        """Decode and buffer the records not yet claimed (those below are counted as skipped).

        hand_over: how many PostingBatch records to leave undecoded for the writer process (HandOver; only with a
        writer process: a store on this process's connection would decode them on the commit thread, under the
        same GIL)."""
        with GC_PAUSED:
            return self._prepare(records, hand_over if self.remote else 0)

    def _prepare(self, records: Sequence[InRecord], hand_over: int) -> PreparedBatch:
        result = BatchResult()
        buf = RowBuffer(self.next_leaf_index)
        next_offsets: dict[tuple[str, int], int] = {}
        claimed = self.claimed
        now_us = time.time_ns() // 1000
        read_postings = read_posting_batch
        add_values, add_recorded, add_topic, add_partition, add_offset = buf.posting_appenders()
        hand_value, hand_key, hand_recorded, hand_topic, hand_partition, hand_offset = buf.hand_over_appenders()
        to_hand = handing = hand_over if POSTING_HEADER else 0  # no header: the reader knows no PostingBatch layout
        claimed_get, next_get = claimed.get, next_offsets.get
        skipped = 0
        for rec in records:  # the hot loop: per PostingBatch a read and five appends (RowBuffer.add_posting_values)
            tp = (rec.topic, rec.partition)
            offset = rec.offset
            if offset < claimed_get(tp, 0):
                skipped += 1
                continue
            if offset >= next_get(tp, 0):
                next_offsets[tp] = offset + 1
            ts = rec.timestamp
            recorded = ts * 1000 if ts is not None and ts >= 0 else now_us
            if rec.value is None:
                buf.add_error(rec, recorded, "tombstone", "record with a null value")
                continue
            if to_hand and rec.value[:5] == POSTING_HEADER:  # a PostingBatch the writer process will decode
                to_hand -= 1
                hand_value(rec.value)
                hand_key(rec.key)
                hand_recorded(recorded)
                hand_topic(rec.topic)
                hand_partition(rec.partition)
                hand_offset(offset)
                continue
            values = read_postings(rec.value)  # most of the traffic; None for anything else (decoded below)
            if values is not None:
                add_values(values)
                add_recorded(recorded)
                add_topic(rec.topic)
                add_partition(rec.partition)
                add_offset(offset)
                continue
            buffer_decoded(buf, rec, recorded)
        result.skipped, result.records = skipped, len(records) - skipped
        if not next_offsets:  # every record was below the claimed offsets: nothing to write
            return PreparedBatch({}, {}, now_us, result, 0, 0)
        claimed.update(next_offsets)
        self.next_leaf_index = buf.next_leaf_index
        tables = buf.tables(assembled=not self.remote)  # counts the batch's repeated event ids (buf.duplicates)
        result.errors = buf.errors
        return PreparedBatch(tables, next_offsets, now_us, result, buf.duplicates, handing - to_hand)

    def send(self, prepared: PreparedBatch) -> None:
        """Send a prepared batch to the writer process from this thread (WriterProcess.begin_write says why);
        commit then waits for its answer. A no-op for a store on this process's connection."""
        if not self.remote or not prepared.next_offsets:
            return
        prepared.sent_at = time.perf_counter()
        try:
            self.store.begin_write(prepared.tables, prepared.next_offsets, prepared.now_us)
        except BaseException:
            self.claimed = dict(self.offsets)  # the projector stops; nothing after the stored offsets counts
            raise

    def commit(self, prepared: PreparedBatch) -> BatchResult:
        """Write the batch's rows and next offsets in one transaction (or neither)."""
        with GC_PAUSED:
            return self._commit(prepared)

    def _commit(self, prepared: PreparedBatch) -> BatchResult:
        tables, next_offsets, result = prepared.tables, prepared.next_offsets, prepared.result
        if not next_offsets:
            self.last_outcome = None  # nothing was written: no timings for HandOver
            return result
        started = prepared.sent_at or time.perf_counter()
        try:
            if prepared.sent_at is None:
                outcome = self.store.write(tables, next_offsets, prepared.now_us)
            else:
                outcome = self.store.end_write()
        except BaseException:
            self.claimed = dict(self.offsets)  # what was prepared after this batch is read again
            try:
                self.next_leaf_index = self.store.state()[1]
            except Exception:  # noqa: BLE001 - the store is gone too; the projector stops on the first error anyway
                log.exception("could not reload the stored state after a failed commit")
            raise
        self.offsets.update(next_offsets)
        self.last_outcome, self.last_commit_s = outcome, time.perf_counter() - started
        if not self.remote:
            self.store.maintain()  # the writer process runs it itself, once it has answered
        result.inserted = outcome.inserted
        result.errors += outcome.errors
        result.duplicates = (prepared.buffered_duplicates + outcome.duplicates
                             + sum(n - outcome.inserted.get(t, 0) for t, n in outcome.offered.items()))
        return result


class HandOver:
    """How many PostingBatch records of a batch the consumer leaves undecoded for the writer process.

    The consumer's thread polls and decodes one batch while the writer process commits the previous one; with every
    batch decoded here the consumer was the slower side (bench/audit: poll 2.3-2.6 s and prepare 3.5-3.7 s per
    300,000 records, the writer busy 3.8-4.3 s: BENCHMARKS.md, "The projector, fourth pass"), and the writer idled.
    The writer decodes what it is handed with the same code (decode_handed).

    How many: the commit of a batch can start when both sides are ready: the consumer once it has decoded its part,
    the writer once the batch before is committed (``backlog_s`` from now). Handing k of n records over, the
    consumer is ready after (n - k) * local_s; so k = n - backlog_s / local_s makes both ready at once (fewer: the
    writer idles; more: the consumer waits, and the writer has more to do). When the writer keeps up the backlog is
    short and more goes over; when it falls behind, less. The seconds per record of each step are moving averages
    of the batches before. A quarter of the first batch goes over (the writer has nothing else to do, but decodes
    more slowly than this process while it warms up: measured 17.5 vs 11-13 us per record), the second is
    decoded here (so both sides are measured).
    """

    WEIGHT = 0.5  # of the newest batch in each moving average

    def __init__(self) -> None:
        self.local_s: float | None = None  # the consumer's prepare, per record it decoded
        self.writer_decode_s: float | None = None  # the writer's decode, per record handed over
        self.write_s: float | None = None  # a commit without the decoding, per record of the batch
        self.share: float | None = None  # of the last batch, handed over

    def _mix(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.WEIGHT * (new - old)

    def count(self, records: int, in_flight: PreparedBatch | None, now: float) -> int:
        """Records to hand over out of the next batch's ``records``; ``in_flight``: the batch the writer is
        committing (sent at its sent_at, perf_counter), if any."""
        local_s = self.local_s
        if local_s is None or local_s <= 0:  # no measure yet: a quarter of the first batch goes over, the next is decoded here
            self.share = 0.25 if in_flight is None else 0.0
            return int(records * self.share)
        backlog_s = 0.0
        if in_flight is not None and in_flight.sent_at is not None:
            decode_s = local_s if self.writer_decode_s is None else self.writer_decode_s  # the same code
            write_s = local_s if self.write_s is None else self.write_s
            expected_s = in_flight.result.records * write_s + in_flight.handed * decode_s
            backlog_s = max(0.0, expected_s - (now - in_flight.sent_at))
        wanted = max(0.0, min(1.0, 1.0 - backlog_s / (local_s * records))) if records else 0.0
        # Half-way from the last share: alone, the rule swings (a big hand-over leaves a long backlog, so the next
        # batch hands nothing over, so the backlog after it is short...).
        self.share = wanted if self.share is None else (self.share + wanted) / 2
        return int(records * self.share)

    def prepared(self, seconds: float, decoded: int) -> None:
        if decoded:
            self.local_s = self._mix(self.local_s, seconds / decoded)

    def committed(self, outcome: WriteOutcome, commit_s: float, records: int) -> None:
        """A commit took commit_s seen from the consumer (sending the tables, decoding, writing)."""
        if outcome.handed:
            self.writer_decode_s = self._mix(self.writer_decode_s, outcome.decode_s / outcome.handed)
        if records:
            self.write_s = self._mix(self.write_s, max(0.0, commit_s - outcome.decode_s) / records)


@dataclass
class ProjectorStats:
    records: int = 0
    batches: int = 0
    duplicates: int = 0
    errors: int = 0
    skipped: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    handed: int = 0  # PostingBatch records the writer process decoded (HandOver)
    poll_s: float = 0.0  # the consumer's thread: polling Kafka
    prepare_s: float = 0.0  # decoding and building the Arrow tables
    wait_s: float = 0.0  # waiting for the writer's commit of the previous batch
    started_at: float = field(default_factory=time.monotonic)
    last_commit_at: float | None = None  # wall clock (time.time())

    def add(self, r: BatchResult) -> None:
        self.records += r.records
        self.batches += 1
        self.duplicates += r.duplicates
        self.errors += r.errors
        self.skipped += r.skipped
        for t, n in r.inserted.items():
            self.rows[t] = self.rows.get(t, 0) + n
        self.last_commit_at = time.time()

    def as_dict(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started_at
        return {"records": self.records, "batches": self.batches, "duplicates": self.duplicates, "errors": self.errors,
                "skipped": self.skipped, "rows": dict(self.rows), "elapsed_s": round(elapsed, 3), "handed": self.handed,
                "poll_s": round(self.poll_s, 3), "prepare_s": round(self.prepare_s, 3), "wait_s": round(self.wait_s, 3),
                "records_per_s": round(self.records / elapsed) if elapsed > 0 else 0,
                "last_commit_at": self.last_commit_at}


class Projector:
    """Kafka -> DuckDB, exactly once. One projector per DuckDB file (DuckDB allows one writing process)."""

    def __init__(
        self,
        db: Path | str | duckdb.DuckDBPyConnection,
        *,
        topics: Sequence[str] = OUTPUT_TOPICS,
        bootstrap: str | None = None,
        group_id: str | None = None,
        max_batch_records: int = MAX_BATCH_RECORDS,
        max_batch_ms: int = 500,
        log_every_s: float = 10.0,
        consumer_config: dict[str, Any] | None = None,
    ):
        from services.settings import get_settings

        settings = get_settings()
        if isinstance(db, duckdb.DuckDBPyConnection):
            # A shared connection (`stockledger serve`: the API reads the same database): our own cursor, own
            # transactions, committed on a thread (DuckDB's default threads for the API's queries).
            self.con: Any = db.cursor()
            store: Any = LedgerStore(self.con)
        else:
            # Its own file: committed by a writer process beside this one (services.projector_process); self.con
            # answers reads through it.
            from services.projector_process import WriterProcess, keep_freed_memory

            keep_freed_memory()  # this process decodes a few hundred MB per batch too
            Path(db).parent.mkdir(parents=True, exist_ok=True)
            self.con = store = WriterProcess(db)
        self._closed = False
        self.writer = BatchWriter(store=store)
        self.topics = list(topics)
        self.bootstrap = bootstrap or settings.bootstrap_servers
        self.group_id = group_id or f"{settings.app_id}-projector"
        self.max_batch_records = max_batch_records
        self.max_batch_ms = max_batch_ms
        self.log_every_s = log_every_s
        self.consumer_config = consumer_config or {}
        self.stats = ProjectorStats()
        self._consumer: Any = None
        self._pending: list[InRecord] = []
        self._pending_poll_s = 0.0  # seconds spent polling the pending records
        self._hand_over = HandOver()
        self._in_flight: PreparedBatch | None = None  # the batch being committed (HandOver reads when it was sent)
        # One commit in flight while the next batch is prepared: on this thread it waits for the writer process (or
        # runs DuckDB, which releases the GIL, with a shared connection).
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="projector-commit")
        self._committing: Future[BatchResult] | None = None
        self._last_gc = time.monotonic()
        self._lock = threading.Lock()  # guards stats snapshots taken by other threads (the API)
        self._last_log = time.monotonic()
        self._last_publish = 0.0
        self._published: dict[tuple[str, int], int] = {}

    # ------------------------------------------------------------------------------------------ kafka

    def _open(self) -> Any:
        if self._consumer is not None:
            return self._consumer
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        projector = self

        class SeekToStored(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):  # noqa: D401 - kafka-python callback
                projector._drop(revoked)

            def on_partitions_assigned(self, assigned):
                projector._seek(assigned)

        config = {
            "bootstrap_servers": self.bootstrap,
            "group_id": self.group_id,
            # Static membership: a restarted projector takes its partitions back at once instead of
            # waiting out the dead member's session.
            "group_instance_id": f"{self.group_id}-0",
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": self.max_batch_records,
            # Up to 8 MiB per partition per fetch instead of 1: a 40,000-record batch arrives in fewer round trips
            # (bench/audit: the same CPU, 10-30 % less wall time to read a topic).
            "max_partition_fetch_bytes": FETCH_BYTES_PER_PARTITION,
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 2_000,
            # Also the rebalance timeout: how long a join may wait. A batch takes well under a second, so
            # two minutes bound a stalled rebalance without ever expiring a healthy projector.
            "max_poll_interval_ms": 120_000,
            "client_id": f"{self.group_id}-projector",
            # A topic created just before the projector joins may be missing from the first metadata
            # answer; the group then assigns nothing until the next refresh (5 minutes by default).
            "metadata_max_age_ms": 5_000,
        } | kafka_python_auth(PROJECTOR) | self.consumer_config
        consumer = KafkaConsumer(**config)
        self._await_topic_metadata(consumer)
        consumer.subscribe(self.topics, listener=SeekToStored())
        self._consumer = consumer
        return consumer

    def _await_topic_metadata(self, consumer: Any) -> None:
        """Wait (bounded) until the broker's metadata lists every topic before joining the group.

        A group joined while a just-created topic is missing from the metadata assigns nothing, and
        kafka-python may not rejoin when the topic appears: the projector then idles with zero
        partitions (seen in the demo and the projector tests under load). Asking for each topic's
        partitions first makes the first join see them all.
        """
        deadline = time.monotonic() + TOPIC_METADATA_WAIT_S
        missing = list(self.topics)
        while missing:
            missing = [t for t in missing if not consumer.partitions_for_topic(t)]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if missing:
            log.warning("no metadata yet for %s after %d s; joining anyway", ", ".join(missing), TOPIC_METADATA_WAIT_S)

    def _drop(self, revoked: Iterable[Any]) -> None:
        """Forget the unwritten records of revoked partitions: whoever gets them reads them again from the
        offsets stored in DuckDB. (No DuckDB write here: kafka-python runs this callback under its
        coordinator lock, and a long write would stall the heartbeats.)"""
        gone = {(tp.topic, tp.partition) for tp in revoked}
        if gone and self._pending:
            kept = [r for r in self._pending if (r.topic, r.partition) not in gone]
            log.info("rebalance: %d unwritten records of revoked partitions will be read again",
                     len(self._pending) - len(kept))
            self._pending = kept

    def _seek(self, assigned: Iterable[Any]) -> None:
        self._await_commit()  # the stored offsets include the batch in flight
        stored = self.writer.offsets
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                self._consumer.seek_to_beginning(tp)  # DuckDB, not Kafka, is the record of progress
            else:
                self._consumer.seek(tp, offset)
        log.info("assigned %d partitions; resuming from offsets stored in DuckDB", len(list(assigned)))

    def _flush(self) -> BatchResult | None:
        """Prepare the pending records and hand them to the commit thread; returns the previous batch's result."""
        if not self._pending:
            return None
        batch, self._pending = self._pending, []
        poll_s, self._pending_poll_s = self._pending_poll_s, 0.0
        hand_over = (self._hand_over.count(len(batch), self._in_flight, time.perf_counter()) if self.writer.remote
                     else 0)
        started = time.perf_counter()
        prepared = self.writer.prepare(batch, hand_over)
        prepare_s = time.perf_counter() - started
        self._hand_over.prepared(prepare_s, prepared.result.records - prepared.handed)
        with self._lock:
            self.stats.poll_s += poll_s
            self.stats.prepare_s += prepare_s
            self.stats.handed += prepared.handed
        previous = self._await_commit()
        self.writer.send(prepared)  # from this thread (WriterProcess.begin_write); the commit thread awaits the answer
        try:
            self._committing, self._in_flight = self._committer.submit(self.writer.commit, prepared), prepared
        except BaseException:  # sent, but nothing will read the answer: end the writer (it holds the request's lock)
            if self.writer.remote:
                self.writer.store.kill()
            raise
        return previous

    def _await_commit(self) -> BatchResult | None:
        """Wait for the batch in flight (a failed commit raises here: the projector stops) and count it."""
        if self._committing is None:
            return None
        committing, self._committing, self._in_flight = self._committing, None, None
        started = time.perf_counter()
        result = committing.result()
        waited = time.perf_counter() - started
        if self.writer.last_outcome is not None:
            log.debug("batch of %d records: %d decoded by the writer (%.3f s); commit %.3f s, waited for %.3f s",
                      result.records, self.writer.last_outcome.handed, self.writer.last_outcome.decode_s,
                      self.writer.last_commit_s, waited)
            self._hand_over.committed(self.writer.last_outcome, self.writer.last_commit_s, result.records)
        now = time.monotonic()
        if now - self._last_gc >= FULL_GC_EVERY_S:  # the GC is paused while batches are built (GC_PAUSED):
            self._last_gc = now  # a full collection now and then still finds the cycles made elsewhere
            gc.collect()
        with self._lock:
            self.stats.wait_s += waited
            self.stats.add(result)
        self._maybe_log()
        return result

    def _publish_offsets(self, force: bool = False, sync: bool = False) -> None:
        """Copy the offsets stored in DuckDB to the group's committed offsets, for lag monitoring only.

        Kafka tools (kafka-consumer-groups.sh, the demo's progress view) read committed offsets; the
        projector itself never does: on assignment it seeks to DuckDB's offsets. Best effort, async, at
        most once a second.
        """
        now = time.monotonic()
        if self._consumer is None or (not force and now - self._last_publish < 1.0):
            return
        from kafka.structs import OffsetAndMetadata

        assigned = self._consumer.assignment()
        offsets = {tp: OffsetAndMetadata(self.writer.offsets[(tp.topic, tp.partition)], "", -1) for tp in assigned
                   if (tp.topic, tp.partition) in self.writer.offsets
                   and self._published.get((tp.topic, tp.partition)) != self.writer.offsets[(tp.topic, tp.partition)]}
        if not offsets:
            return
        self._last_publish = now
        try:
            if sync:
                self._consumer.commit(offsets=offsets, timeout_ms=5_000)
                self._on_published(offsets, None)
            else:
                self._consumer.commit_async(offsets=offsets, callback=self._on_published)
        except Exception as exc:  # noqa: BLE001 - monitoring only; DuckDB holds the truth
            log.debug("offset publish skipped: %s", exc)

    def _on_published(self, offsets: dict[Any, Any], response: Any) -> None:
        if isinstance(response, Exception):
            log.debug("offset publish failed: %s", response)
            return
        for tp, meta in offsets.items():
            self._published[(tp.topic, tp.partition)] = meta.offset

    def _maybe_log(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_log >= self.log_every_s:
            self._last_log = now
            s = self.stats.as_dict()
            log.info("projected %d records (%d rec/s) in %d batches; rows %s; duplicates %d, errors %d; polling %.1f s, "
                     "preparing %.1f s, waiting for the writer %.1f s; %d records decoded by the writer",
                     s["records"], s["records_per_s"], s["batches"], s["rows"], s["duplicates"], s["errors"], s["poll_s"],
                     s["prepare_s"], s["wait_s"], s["handed"])

    def step(self, stop_event: threading.Event | None = None, until: dict[Any, int] | None = None) -> BatchResult | None:
        """Gather one micro-batch (max_batch_records or max_batch_ms) and write it in one transaction.

        until: end offsets (catch_up's); the batch is taken as soon as every partition's position reaches them."""
        consumer = self._open()
        deadline = time.monotonic() + self.max_batch_ms / 1000
        with GC_PAUSED:  # the consumed records are as acyclic as the rows made of them
            started = time.perf_counter()
            while len(self._pending) < self.max_batch_records:
                remaining_ms = int((deadline - time.monotonic()) * 1000)
                if remaining_ms <= 0 or (stop_event is not None and stop_event.is_set()):
                    break
                polled = consumer.poll(timeout_ms=min(remaining_ms, 200),
                                       max_records=self.max_batch_records - len(self._pending))
                if not polled and self._pending:  # nothing more within a poll's wait: take the batch as it is
                    break
                for records in polled.values():
                    self._pending.extend(records)  # kafka-python's ConsumerRecords have InRecord's fields
                if until is not None and self._pending and self._reached(until):
                    break  # a catch-up's last records: no need to wait for more
            self._pending_poll_s += time.perf_counter() - started
        result = self._flush()
        if result is None and self._committing is not None and self._committing.done():
            result = self._await_commit()  # quiet topics: count the batch committed meanwhile (or raise its error)
        self._publish_offsets()
        return result

    def run(self, stop_event: threading.Event) -> ProjectorStats:
        """Project until stop_event is set; the batch in hand is committed before returning."""
        log.info("projector: topics %s, group %s, batches of %d records / %d ms", self.topics, self.group_id,
                 self.max_batch_records, self.max_batch_ms)
        try:
            while not stop_event.is_set():
                self.step(stop_event)
            self._flush()
            self._await_commit()
            self._publish_offsets(force=True, sync=True)
        finally:
            self._maybe_log(force=True)
            self.close()
        return self.stats

    def lag(self) -> dict[tuple[str, int], int] | None:
        """Records not yet projected per partition, or None until every partition of the topics is assigned."""
        ends = self._end_offsets()
        return None if ends is None else self._lag_to(ends)

    def _end_offsets(self) -> dict[Any, int] | None:
        """The end offset of every assigned partition (a broker round trip), or None until all are assigned."""
        consumer = self._open()
        assignment = consumer.assignment()
        expected = 0
        for topic in self.topics:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                return None
            expected += len(parts)
        if not assignment or len(assignment) < expected:
            return None
        return consumer.end_offsets(list(assignment))

    def _reached(self, ends: dict[Any, int]) -> bool:
        """Whether the consumer's position is at or past every partition's end offset in ``ends`` (False for a
        partition no longer assigned: a rebalance since the ends were read)."""
        try:
            return all((self._consumer.position(tp) or 0) >= end for tp, end in ends.items())
        except Exception:  # noqa: BLE001 - kafka-python asserts the partition is assigned
            return False

    def _lag_to(self, ends: dict[Any, int]) -> dict[tuple[str, int], int]:
        lag = {}
        for tp, end in ends.items():
            done = self.writer.claimed.get((tp.topic, tp.partition), 0)  # a batch in flight counts: catch_up waits for it
            if not self._pending:  # the consumer's position also steps over offsets that hold no record
                done = max(done, self._consumer.position(tp) or 0)  # (transaction markers, compacted gaps)
            lag[(tp.topic, tp.partition)] = max(0, end - done)
        return lag

    def catch_up(self, timeout_s: float = 60.0) -> ProjectorStats:
        """Project until every partition's stored next offset reaches its end offset; TimeoutError otherwise.

        The end offsets are asked for again only once the projector has reached the ones it knows (an end offset
        never moves back, so a partition behind a known end is behind): the ListOffsets request waits behind the
        consumer's fetch in flight on the same connection, and asking after every batch cost the bench's catch-up
        2.1-2.3 s of its 13 s (BENCHMARKS.md, "The projector, fourth pass").
        """
        deadline = time.monotonic() + timeout_s
        ends: dict[Any, int] | None = None
        lag: dict[tuple[str, int], int] | None = None
        while True:
            self.step(until=ends)
            if ends is not None and not set(ends) <= self._consumer.assignment():
                ends = None  # a rebalance since they were read: ask again
            if ends is None or not any(self._lag_to(ends).values()):
                ends = self._end_offsets()
                lag = None if ends is None else self._lag_to(ends)
                if lag is not None and not any(lag.values()):
                    self._await_commit()
                    self._publish_offsets(force=True, sync=True)
                    self._maybe_log(force=True)
                    return self.stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"projector not caught up after {timeout_s:g}s: lag {lag if ends is None else self._lag_to(ends)}")

    def broker_connected(self) -> bool:
        """Whether the consumer holds a live connection to any broker (False before the first poll).

        A poll against a stopped broker just returns nothing, so "the thread is alive" says nothing about
        Kafka; this asks kafka-python's client (the consumer's, a documented-in-code private attribute).
        """
        consumer = self._consumer
        client = getattr(consumer, "_client", None)
        if client is None:
            return False
        return any(client.connected(b.node_id) for b in client.cluster.brokers())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.stats.as_dict() | {"topics": self.topics, "group_id": self.group_id,
                                           "broker_connected": self.broker_connected()}

    def close(self) -> None:
        if self._committing is not None:
            try:
                self._await_commit()
            except Exception:  # noqa: BLE001 - already failing; the rows and offsets of that batch were rolled back
                log.exception("the last batch's commit failed")
        self._committer.shutdown(wait=True)
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except TypeError:  # pragma: no cover - older kafka-python signature
                self._consumer.close()
            self._consumer = None
        if not self._closed:
            self._closed = True
            self.con.close()  # our own connection, or our cursor of a shared one (which stays open)


# ----------------------------------------------------------------------------------------------- CLI


def resolve_topics(topics: str | None, prefix: str | None) -> list[str]:
    """Comma-separated names, or the declared output topics, each with an optional prefix."""
    names = [t.strip() for t in topics.split(",") if t.strip()] if topics else list(OUTPUT_TOPICS)
    return [f"{prefix or ''}{t}" for t in names]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.projector", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, type=Path, help="DuckDB file to project into")
    parser.add_argument("--topics", help=f"comma-separated topics (default: {','.join(OUTPUT_TOPICS)})")
    parser.add_argument("--topic-prefix", help="prefix added to every topic name (tests use fresh copies)")
    parser.add_argument("--bootstrap", help="host:port of the broker (default from settings)")
    parser.add_argument("--group", help="consumer group id (default <app_id>-projector)")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH_RECORDS, help="records per transaction at most")
    parser.add_argument("--max-batch-ms", type=int, default=500, help="longest wait to fill a batch")
    parser.add_argument("--log-every", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--until-caught-up", action="store_true", help="exit once every partition is projected")
    parser.add_argument("--timeout", type=float, default=600.0, help="with --until-caught-up: give up after this")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stdout)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    projector = Projector(args.db, topics=resolve_topics(args.topics, args.topic_prefix), bootstrap=args.bootstrap,
                          group_id=args.group, max_batch_records=args.max_batch, max_batch_ms=args.max_batch_ms,
                          log_every_s=args.log_every)
    if args.until_caught_up:
        try:
            stats = projector.catch_up(args.timeout)
        except TimeoutError as exc:
            log.error("%s", exc)
            return 1
        finally:
            projector.close()
        print(json.dumps({"caught_up": True, **stats.as_dict()}), flush=True)
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    projector.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
