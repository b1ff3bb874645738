"""The canonical bytes of one entry of the ledger's total order: the Merkle log's leaf data (docs/AUDITOR.md).

An entry is what the fold consumes from one ledger.sequenced record: the source topic, the record key and
the record value, byte for byte. Layout, version 1 (lengths unsigned 32-bit big-endian):

    0x01 || len(topic) || topic (UTF-8) || len(key) || key || len(value) || value

An absent (null) key or value is the empty byte string: the fold reads a null value as empty bytes and
archives store keys as text, so null and empty must not make two different leaves. The source partition, offset and timestamp are lineage, not leaf data: the fold's
decisions depend on the entries and their order only, and leaving them out makes an exported archive and
the live log commit to the very same leaves (see docs/DESIGN.md, "Tamper-evident log").
"""

from __future__ import annotations

import struct

from ledger.merkle_log import leaf_hash

ENTRY_VERSION = b"\x01"
MAX_FIELD_BYTES = 0xFFFFFFFF
_LEN = struct.Struct(">I")


def _field(data: bytes) -> bytes:
    return _LEN.pack(len(data)) + data


def entry_bytes(topic: str, key: bytes | str | None, value: bytes | None) -> bytes:
    """Leaf data of one entry; a str key (archives store keys as text) is its UTF-8 bytes."""
    t = topic.encode("utf-8")
    k = key.encode("utf-8") if isinstance(key, str) else (key or b"")
    v = value or b""
    if max(len(t), len(k), len(v)) > MAX_FIELD_BYTES:
        raise ValueError("a log entry field is longer than 2^32 - 1 bytes")
    return ENTRY_VERSION + _field(t) + _field(k) + _field(v)


def entry_leaf_hash(topic: str, key: bytes | str | None, value: bytes | None) -> bytes:
    """RFC 9162 leaf hash of the entry: SHA-256(0x00 || entry_bytes)."""
    return leaf_hash(entry_bytes(topic, key, value))
