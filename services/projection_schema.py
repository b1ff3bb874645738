"""DuckDB schema of the projections, shared by the Kafka projector and the offline replay's sink.

Every projected row keeps its lineage: the event id, the effective time (``occurred_at_us``), the recorded
time (``recorded_at_us``: the Kafka record timestamp, or the replay's log clock) and where it came from
(``topic``, ``partition``, ``offset``; ``offset`` is an SQL keyword, so write it ``"offset"`` in queries).

Columns are declared once here with their DuckDB and Arrow types, so the DDL and the Arrow tables that
``INSERT INTO t SELECT * FROM batch`` reads always agree, column for column. Money and quantities are
integers (BIGINT for Avro longs, HUGEINT where sums are stored), never floating point.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa


@dataclass(frozen=True)
class Column:
    name: str
    sql: str
    arrow: pa.DataType
    doc: str = ""

    @property
    def quoted(self) -> str:
        return f'"{self.name}"'


def _lineage(kafka: bool = True) -> tuple[Column, ...]:
    return (
        Column("occurred_at_us", "BIGINT NOT NULL", pa.int64(), "effective time, us since the epoch"),
        Column("recorded_at_us", "BIGINT NOT NULL", pa.int64(),
               "recorded time: Kafka record timestamp in us (projector) or the replay's log clock"),
        Column("source", "VARCHAR", pa.string(), "who produced the record"),
        Column("topic", "VARCHAR NOT NULL", pa.string(), "topic the row was read from (replay: the input topic)"),
        Column("partition", "INTEGER", pa.int32(), "partition (NULL in a replay)"),
        Column("offset", "BIGINT NOT NULL", pa.int64(), "offset in the partition (replay: archive position)"),
    )


TABLES: dict[str, tuple[Column, ...]] = {
    # One row per PostingBatch (also empty ones): the unit of deduplication and of the topic count.
    "posting_batches": (
        Column("event_id", "VARCHAR NOT NULL", pa.string(), "PostingBatch.event_id (post:<cause_event_id>)"),
        Column("cause_event_id", "VARCHAR", pa.string()),
        Column("cause_kind", "VARCHAR", pa.string()),
        Column("legs", "INTEGER NOT NULL", pa.int32(), "number of postings in the batch"),
        *_lineage(),
    ),
    # One row per leg pair: amount_minor of asset moves from debit_account to credit_account.
    "postings": (
        Column("event_id", "VARCHAR NOT NULL", pa.string(), "the batch's event id"),
        Column("cause_event_id", "VARCHAR", pa.string()),
        Column("cause_kind", "VARCHAR", pa.string()),
        Column("leg", "INTEGER NOT NULL", pa.int32(), "position in the batch, from 0"),
        Column("debit_account", "VARCHAR NOT NULL", pa.string()),
        Column("credit_account", "VARCHAR NOT NULL", pa.string()),
        Column("asset", "VARCHAR NOT NULL", pa.string()),
        Column("amount_minor", "HUGEINT NOT NULL", pa.int64(), "positive, in the asset's minor unit"),
        *_lineage(),
    ),
    "request_outcomes": (
        Column("event_id", "VARCHAR NOT NULL", pa.string()),
        Column("request_event_id", "VARCHAR", pa.string()),
        Column("request_kind", "VARCHAR", pa.string()),
        Column("key", "VARCHAR", pa.string(), "account or symbol"),
        Column("decision", "VARCHAR", pa.string()),
        Column("reason", "VARCHAR", pa.string()),
        Column("inputs", "JSON", pa.string(), "every input the decision used (integers)"),
        *_lineage(),
    ),
    # One row per LiquidationTriggered / LiquidationExecuted / BadDebtCovered / AutoDeleveraged, with the full payload.
    "liquidations": (
        Column("event_id", "VARCHAR NOT NULL", pa.string()),
        Column("kind", "VARCHAR NOT NULL", pa.string(), "LiquidationTriggered | LiquidationExecuted | BadDebtCovered | AutoDeleveraged"),
        Column("account", "VARCHAR", pa.string()),
        Column("trigger_event_id", "VARCHAR", pa.string(), "the trigger's event id (its own for a trigger)"),
        Column("cause_event_id", "VARCHAR", pa.string(), "what caused the trigger (a mark, a trade); triggers only"),
        Column("step", "VARCHAR", pa.string(), "waterfall step; BadDebtCovered only"),
        Column("equity_micro_usd", "BIGINT", pa.int64()),
        Column("maintenance_margin_micro_usd", "BIGINT", pa.int64()),
        Column("debt_micro_usd", "BIGINT", pa.int64()),
        Column("penalty_micro_usd", "BIGINT", pa.int64()),
        Column("bonus_micro_usd", "BIGINT", pa.int64()),
        Column("shortfall_micro_usd", "BIGINT", pa.int64()),
        Column("amount_micro_usd", "BIGINT", pa.int64(), "waterfall step amount; an ADL step's haircut"),
        Column("payload", "JSON", pa.string(), "the whole record"),
        *_lineage(),
    ),
    "rejections": (
        Column("event_id", "VARCHAR NOT NULL", pa.string()),
        Column("cause_event_id", "VARCHAR", pa.string()),
        Column("reason", "VARCHAR NOT NULL", pa.string()),
        Column("detail", "VARCHAR", pa.string()),
        Column("source_topic", "VARCHAR", pa.string(), "where the rejected input was read"),
        Column("source_partition", "INTEGER", pa.int32()),
        Column("source_offset", "BIGINT", pa.int64()),
        Column("schema_id", "INTEGER", pa.int32()),
        Column("original", "BLOB", pa.binary(), "the rejected record's bytes as received"),
        *_lineage(),
    ),
    "series_marks": (
        Column("event_id", "VARCHAR NOT NULL", pa.string()),
        Column("series_id", "VARCHAR NOT NULL", pa.string()),
        Column("underlying", "VARCHAR", pa.string()),
        Column("spot_micro_usd", "BIGINT", pa.int64()),
        Column("theo_micro_usd", "BIGINT", pa.int64()),
        Column("mark_micro_usd", "BIGINT", pa.int64()),
        Column("net_volume_nano", "BIGINT", pa.int64()),
        Column("cum_funding_pico_usd", "BIGINT", pa.int64()),
        Column("volatility_ppm", "BIGINT", pa.int64()),
        *_lineage(),
    ),
    # The Merkle log's entries, numbered in ledger.sequenced order (a batch holds many; docs/AUDITOR.md). A replay writes
    # its archive's rows (source partition and offset NULL). `stockledger log audit` recomputes every
    # leaf hash and the tree from these rows and checks them against the signed heads.
    "log_entries": (
        Column("leaf_index", "BIGINT NOT NULL", pa.int64(), "position in the ledger's total order, from 0"),
        Column("source_topic", "VARCHAR NOT NULL", pa.string()),
        Column("source_partition", "INTEGER", pa.int32()),
        Column("source_offset", "BIGINT", pa.int64()),
        Column("timestamp_ms", "BIGINT", pa.int64(), "source record timestamp (the sequencer's merge key)"),
        Column("key", "BLOB", pa.binary()),
        Column("value", "BLOB", pa.binary(), "the input record's bytes as sequenced"),
        Column("event_id", "VARCHAR", pa.string(), "the input's event id (NULL if undecodable)"),
        Column("leaf_hash", "BLOB NOT NULL", pa.binary(), "SHA-256(0x00 || entry bytes), as the fold logged it"),
        Column("recorded_at_us", "BIGINT", pa.int64()),
    ),
    # Signed checkpoints of the log (ledger.tree_heads).
    "tree_heads": (
        Column("event_id", "VARCHAR NOT NULL", pa.string(), "tree-head:<origin>:<tree_size>"),
        Column("origin", "VARCHAR NOT NULL", pa.string()),
        Column("tree_size", "BIGINT NOT NULL", pa.int64()),
        Column("root_hash", "VARCHAR NOT NULL", pa.string(), "64 hex"),
        Column("key_name", "VARCHAR NOT NULL", pa.string()),
        Column("note", "VARCHAR NOT NULL", pa.string(), "the C2SP signed note"),
        *_lineage(),
    ),
    # Records on an output topic the projector could not project: kept with their bytes, never a crash.
    "projector_errors": (
        Column("topic", "VARCHAR NOT NULL", pa.string()),
        Column("partition", "INTEGER", pa.int32()),
        Column("offset", "BIGINT NOT NULL", pa.int64()),
        Column("recorded_at_us", "BIGINT", pa.int64()),
        Column("reason", "VARCHAR NOT NULL", pa.string(), "malformed | unknown_schema | unexpected_subject | tombstone | unprojectable"),
        Column("detail", "VARCHAR", pa.string()),
        Column("schema_id", "INTEGER", pa.int32()),
        Column("subject", "VARCHAR", pa.string()),
        Column("key", "BLOB", pa.binary()),
        Column("value", "BLOB", pa.binary()),
    ),
    # Next offset to read per topic partition, written in the same transaction as the rows.
    "projector_offsets": (
        Column("topic", "VARCHAR NOT NULL", pa.string()),
        Column("partition", "INTEGER NOT NULL", pa.int32()),
        Column("next_offset", "BIGINT NOT NULL", pa.int64()),
        Column("updated_at_us", "BIGINT", pa.int64(), "wall clock of the commit"),
    ),
}

# The read side of balances, derived from postings by the projector in the same transaction (and rebuilt from
# postings by ensure_schema for a file written before they existed). Each posting is split into its two legs,
# each with its own amount, so debits and credits are summed independently: the trial balance can fail.
LEG_BUCKETS = 16  # an account's legs live in account_legs_<book % LEG_BUCKETS>: a balance scans 1/16 of the legs
assert LEG_BUCKETS & (LEG_BUCKETS - 1) == 0, "a power of two: the projector computes the bucket as book & (LEG_BUCKETS - 1)"
# A leg holds no high-cardinality string: its posting is found from (occurred_at_us, recorded_at_us, "partition",
# "offset", leg) and the book's account (audit.balance's last event). The event id and topic strings cost the
# projector's commit more than the integers (bench/audit, BENCHMARKS.md "The projector, third pass").
LEG_COLUMNS: tuple[Column, ...] = (
    Column("book", "INTEGER NOT NULL", pa.int32(), "account_books.book of the (account, asset) the leg moves"),
    Column("asset", "VARCHAR NOT NULL", pa.string(), "the book's asset (18-odd values: the trial balance groups by it)"),
    Column("is_debit", "BOOLEAN NOT NULL", pa.bool_(), "debit leg (the account gives) or credit leg (it receives)"),
    Column("amount_minor", "BIGINT NOT NULL", pa.int64(), "positive, in the asset's minor unit"),
    Column("occurred_at_us", "BIGINT NOT NULL", pa.int64()),
    Column("recorded_at_us", "BIGINT NOT NULL", pa.int64()),
    Column("partition", "INTEGER", pa.int32(), "the posting's partition (NULL in a replay)"),
    Column("offset", "BIGINT NOT NULL", pa.int64(), "the posting's offset (replay: archive position)"),
    Column("leg", "INTEGER NOT NULL", pa.int32(), "position of the posting in its batch"),
)
LEG_TABLES: tuple[str, ...] = tuple(f"account_legs_{k:02d}" for k in range(LEG_BUCKETS))
LEDGER_TABLES: dict[str, tuple[Column, ...]] = {
    # One integer per (account, asset): legs are found by an integer column (exact zone maps, cheap scans).
    "account_books": (
        Column("book", "INTEGER NOT NULL", pa.int32()),
        Column("account", "VARCHAR NOT NULL", pa.string()),
        Column("asset", "VARCHAR NOT NULL", pa.string()),
        Column("key_hash", "BIGINT NOT NULL", pa.int64(), "book_key_hash(account, asset): found by an integer scan"),
    ),
    **{name: LEG_COLUMNS for name in LEG_TABLES},
    # Running totals per book, added to from each batch's legs: the current trial balance reads these.
    "account_balances": (
        Column("book", "INTEGER NOT NULL", pa.int32()),
        Column("asset", "VARCHAR NOT NULL", pa.string(), "the book's asset (the trial balance groups by it)"),
        Column("debits_minor", "HUGEINT NOT NULL", pa.int64(), "sum of the book's debit legs"),
        Column("credits_minor", "HUGEINT NOT NULL", pa.int64(), "sum of the book's credit legs"),
        Column("debit_legs", "BIGINT NOT NULL", pa.int64()),
        Column("credit_legs", "BIGINT NOT NULL", pa.int64()),
    ),
}


def book_key_hash(account: str, asset: str) -> int:
    """A stable 60-bit hash of (account, asset): a book is looked up by this integer (a scan of 1.7M string pairs
    took 3-12 ms, of the integers under 2 ms), then the strings are compared. The first 15 hex digits of the MD5 of
    "account NUL asset": a standard function, so DuckDB computes the same value when it stores a book
    (BOOK_KEY_HASH_SQL, off the projector's Python thread) and no upgrade can change it."""
    return int(hashlib.md5(f"{account}\x00{asset}".encode(), usedforsecurity=False).hexdigest()[:15], 16)


# book_key_hash in DuckDB's SQL, over the columns account and asset (a unit test checks they agree).
BOOK_KEY_HASH_SQL = "('0x' || md5(account || chr(0) || asset)[1:15])::BIGINT"


def leg_table(book: int) -> str:
    """The bucket table that holds a book's legs."""
    return LEG_TABLES[book % LEG_BUCKETS]


# Tables whose rows carry an event_id that identifies them; a re-sent event_id is not inserted twice.
EVENT_TABLES: tuple[str, ...] = ("posting_batches", "postings", "request_outcomes", "liquidations", "rejections",
                                 "series_marks", "tree_heads")
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {"projector_offsets": ("topic", "partition")}

VIEWS = """
CREATE OR REPLACE VIEW balance_legs AS
SELECT credit_account AS account, asset, amount_minor AS signed_amount_minor, 'credit' AS side,
       debit_account AS counterparty, occurred_at_us, recorded_at_us, event_id, cause_event_id, cause_kind, leg,
       topic, "partition", "offset"
FROM postings
UNION ALL
SELECT debit_account AS account, asset, -amount_minor AS signed_amount_minor, 'debit' AS side,
       credit_account AS counterparty, occurred_at_us, recorded_at_us, event_id, cause_event_id, cause_kind, leg,
       topic, "partition", "offset"
FROM postings;

CREATE OR REPLACE VIEW balances AS
SELECT account, asset, SUM(signed_amount_minor) AS balance_minor, COUNT(*) AS legs,
       MAX(occurred_at_us) AS last_occurred_at_us, MAX(recorded_at_us) AS last_recorded_at_us
FROM balance_legs
GROUP BY account, asset;
""" + "CREATE OR REPLACE VIEW account_legs AS\n" + "\nUNION ALL\n".join(f"SELECT * FROM {t}" for t in LEG_TABLES) + ";\n"

ALL_TABLES: dict[str, tuple[Column, ...]] = TABLES | LEDGER_TABLES
QUERYABLE: tuple[str, ...] = (*TABLES, "account_books", "account_balances", "account_legs", "balance_legs", "balances")


def table_ddl(name: str) -> str:
    cols = [f"{c.quoted} {c.sql}" for c in ALL_TABLES[name]]
    if name in PRIMARY_KEYS:
        cols.append("PRIMARY KEY (" + ", ".join(f'"{k}"' for k in PRIMARY_KEYS[name]) + ")")
    return f"CREATE TABLE IF NOT EXISTS {name} (\n  " + ",\n  ".join(cols) + "\n)"


def ddl(tables: Sequence[str] | None = None) -> str:
    """The whole schema (or the named tables) as SQL, views included."""
    names = list(ALL_TABLES) if tables is None else list(tables)
    return ";\n".join(table_ddl(n) for n in names) + ";\n" + VIEWS


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table and view that is missing (idempotent); derive the legs of a file written without them, or
    with the earlier legs that held the event id and topic strings (readers accept both layouts)."""
    stale = con.execute("""SELECT count(*) FROM information_schema.columns WHERE table_catalog = current_database()
                           AND table_schema = current_schema() AND table_name = $t AND column_name = 'event_id'""",
                        {"t": LEG_TABLES[0]}).fetchall()[0][0]
    if stale:
        con.execute("DROP VIEW IF EXISTS account_legs")
        for name in LEG_TABLES:
            con.execute(f"DROP TABLE {name}")
    for name in ALL_TABLES:
        con.execute(table_ddl(name))
    con.execute(VIEWS)
    if stale or con.execute("SELECT count(*) FROM account_books").fetchall()[0][0] == 0 and con.execute(
            "SELECT count(*) FROM (SELECT 1 FROM postings LIMIT 1)").fetchall()[0][0]:
        rebuild_ledger_tables(con)


def rebuild_ledger_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Books, legs and balances from the postings table, in SQL (a file projected before they existed; benchmarks)."""
    for name in LEDGER_TABLES:
        con.execute(f"DELETE FROM {name}").fetchall()
    con.execute(f"""INSERT INTO account_books SELECT (row_number() OVER (ORDER BY account, asset) - 1)::INTEGER,
                          account, asset, {BOOK_KEY_HASH_SQL}
                   FROM (SELECT debit_account AS account, asset FROM postings UNION SELECT credit_account, asset FROM postings)
                   ORDER BY account, asset""").fetchall()
    legs = """SELECT b.book, p.asset, {debit} AS is_debit, p.amount_minor::BIGINT, p.occurred_at_us, p.recorded_at_us,
                     p."partition", p."offset", p.leg
              FROM postings p JOIN account_books b ON b.account = p.{side}_account AND b.asset = p.asset
              WHERE b.book % {buckets} = {k}"""
    for k, table in enumerate(LEG_TABLES):
        con.execute(f"INSERT INTO {table} {legs.format(debit='true', side='debit', buckets=LEG_BUCKETS, k=k)} "
                    f"UNION ALL {legs.format(debit='false', side='credit', buckets=LEG_BUCKETS, k=k)}").fetchall()
    con.execute(f"INSERT INTO account_balances {BALANCES_FROM.format(legs='account_legs')}").fetchall()


# Per-book totals of a set of legs (the batch's, or all of them in a rebuild).
BALANCES_FROM = """SELECT book, asset, COALESCE(SUM(amount_minor) FILTER (WHERE is_debit), 0) AS debits_minor,
       COALESCE(SUM(amount_minor) FILTER (WHERE NOT is_debit), 0) AS credits_minor,
       COUNT(*) FILTER (WHERE is_debit) AS debit_legs, COUNT(*) FILTER (WHERE NOT is_debit) AS credit_legs
FROM {legs} GROUP BY book, asset"""


def arrow_schema(name: str) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow) for c in ALL_TABLES[name]])


def column_names(name: str) -> list[str]:
    return [c.name for c in ALL_TABLES[name]]


def rows_to_arrow(name: str, rows: Sequence[tuple[Any, ...]]) -> pa.Table:
    """Row tuples in the table's column order -> an Arrow table of its types (for INSERT INTO name SELECT *)."""
    schema = arrow_schema(name)
    if not rows:
        return schema.empty_table()
    columns = list(zip(*rows, strict=True))
    if len(columns) != len(schema):
        raise ValueError(f"{name}: rows have {len(columns)} values, the table has {len(schema)} columns")
    return pa.Table.from_arrays([pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)], schema=schema)
