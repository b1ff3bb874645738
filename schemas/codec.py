"""Confluent wire format codec: magic byte 0, 4-byte big-endian schema id, schemaless Avro body.

Schema ids: with STOCKLEDGER_REGISTRY_URL set, each id is taken from the schema registry (once per schema and
process; schemas/registry.py), and encoding a schema the registry does not hold, or holds under another id,
fails with a RegistryError saying what to do. Without it (embedded mode, unit tests) the catalog's ids are used.
Decoding needs no registry: an id names a catalog file, and the registry is made to agree with the catalog.
"""

from __future__ import annotations

import io
import struct
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from schemas.catalog import BY_ID, LATEST, SchemaEntry, parsed_schema

MAGIC = 0
_HEADER = struct.Struct(">BI")
HEADER_SIZE = _HEADER.size


class DecodeError(Exception):
    """Bytes that are not a valid stockledger record; `reason` is a rejection reason code."""

    def __init__(self, reason: str, detail: str, schema_id: int | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.schema_id = schema_id


class _Ids:
    """Where wire ids come from: None = the catalog, else a registry.RegistryIds; headers cached per catalog id."""

    source: Any = None
    resolved = False
    headers: dict[int, bytes] = {}


def use_catalog_ids() -> None:
    """Embedded mode: the catalog's own ids, no registry."""
    _Ids.source, _Ids.resolved, _Ids.headers = None, True, {}


def use_registry(url: str, subject_prefix: str = "") -> None:
    """Take ids from the schema registry at url (Confluent API); subject_prefix only for tests."""
    from schemas.registry import RegistryIds

    _Ids.source, _Ids.resolved, _Ids.headers = RegistryIds(url, subject_prefix), True, {}


def _header(entry: SchemaEntry) -> bytes:
    header = _Ids.headers.get(entry.schema_id)
    if header is None:
        if not _Ids.resolved:  # first use in this process: the setting decides
            from services.settings import get_settings

            url = get_settings().registry_url
            use_registry(url) if url else use_catalog_ids()
        schema_id = entry.schema_id if _Ids.source is None else _Ids.source.wire_id(entry)
        header = _Ids.headers[entry.schema_id] = _HEADER.pack(MAGIC, schema_id)
    return header


def encode(subject: str, record: dict[str, Any]) -> bytes:
    """Frame a record with the latest schema of its subject."""
    entry = LATEST[subject]
    buf = io.BytesIO()
    buf.write(_header(entry))
    schemaless_writer(buf, parsed_schema(entry.schema_id), record)
    return buf.getvalue()


def encode_with_id(schema_id: int, record: dict[str, Any]) -> bytes:
    """Frame a record with an explicit catalog schema id (for tests and old versions)."""
    buf = io.BytesIO()
    buf.write(_header(BY_ID[schema_id]))
    schemaless_writer(buf, parsed_schema(schema_id), record)
    return buf.getvalue()


def peek_schema_id(data: bytes) -> int:
    """The schema id in the header, or DecodeError."""
    if data is None or len(data) < HEADER_SIZE:
        raise DecodeError("malformed", f"record of {0 if data is None else len(data)} bytes is shorter than the 5-byte header")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError("malformed", f"magic byte is {magic}, expected {MAGIC}")
    return schema_id


def decode(data: bytes) -> tuple[str, dict[str, Any]]:
    """Decode framed bytes to (subject, record); every failure is a DecodeError naming the problem."""
    schema_id = peek_schema_id(data)
    entry = BY_ID.get(schema_id)
    if entry is None:
        raise DecodeError("unknown_schema", f"schema id {schema_id} is not in the catalog", schema_id)
    buf = io.BytesIO(data)
    buf.seek(HEADER_SIZE)
    try:
        record = schemaless_reader(buf, parsed_schema(schema_id), None)
    except (EOFError, StopIteration) as exc:
        raise DecodeError("malformed", f"body truncated for {entry.subject} (schema id {schema_id}): {exc!r}", schema_id) from exc
    except Exception as exc:  # fastavro raises assorted errors on garbage (IndexError, UnicodeDecodeError, ...)
        raise DecodeError("malformed", f"body is not a valid {entry.subject}: {type(exc).__name__}: {exc}", schema_id) from exc
    wide = _wide_int(parsed_schema(schema_id), record)
    if wide is not None:
        raise DecodeError("malformed", f"{entry.subject}.{wide} does not fit an Avro int (32 bits)", schema_id)
    if buf.tell() != len(data):
        raise DecodeError("malformed", f"{len(data) - buf.tell()} trailing bytes after the {entry.subject} body", schema_id)
    return entry.subject, record


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _int_fields(schema: Any) -> tuple[str, ...]:
    """Top-level fields typed int or ["null", "int"] (the only place stockledger schemas use int)."""
    names = []
    for f in schema["fields"]:
        t = f["type"]
        if t == "int" or (isinstance(t, list) and "int" in t):
            names.append(f["name"])
    return tuple(names)


def _wide_int(schema: Any, record: dict[str, Any]) -> str | None:
    # fastavro reads an int as an unbounded zigzag varint: a writer that is not Avro could hand us 2^40.
    for name in _int_fields(schema):
        value = record.get(name)
        if type(value) is int and not INT32_MIN <= value <= INT32_MAX:
            return name
    return None
