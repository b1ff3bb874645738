"""Proofs over the projected Merkle log (DuckDB tables log_entries and tree_heads) and their offline check.

Proof files are JSON (docs/AUDITOR.md, "Merkle log proofs"); verifying one needs only the file and the
log's verifier key: the checkpoint note it carries is opened with the key, the entry's leaf hash is
recomputed from its bytes, and the path is checked with RFC 9162's algorithms (ledger.merkle_log).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ledger.log_entry import entry_leaf_hash
from ledger.merkle_log import (
    ProofError,
    consistency_proof,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from services.checkpoint_note import Checkpoint, NoteError, Verifier, open_note

if TYPE_CHECKING:  # connections come from the caller: the CLI's other commands start without DuckDB
    import duckdb

INCLUSION_KIND = "stockledger-log-inclusion"
CONSISTENCY_KIND = "stockledger-log-consistency"
PROOF_VERSION = 1
MAX_PATH = 64  # a tree below 2^63 leaves has paths of at most 63 hashes


class LogError(ValueError):
    """A head, entry or proof cannot be found or read; the message says which and why."""


@dataclass(frozen=True)
class Head:
    """One signed tree head as projected."""

    tree_size: int
    root_hash: str
    origin: str
    note: str


def heads(con: duckdb.DuckDBPyConnection) -> list[Head]:
    rows = con.execute("SELECT DISTINCT tree_size, root_hash, origin, note FROM tree_heads ORDER BY tree_size").fetchall()
    return [Head(*r) for r in rows]


def head(con: duckdb.DuckDBPyConnection, size: int | None = None) -> Head:
    """The head of that size, or the latest; LogError if there is none."""
    if size is None:
        row = con.execute("SELECT tree_size, root_hash, origin, note FROM tree_heads ORDER BY tree_size DESC LIMIT 1").fetchone()
        if row is None:
            raise LogError("no signed tree head is projected yet: is the worker running and the projector caught up?")
    else:
        row = con.execute("SELECT tree_size, root_hash, origin, note FROM tree_heads WHERE tree_size = ? LIMIT 1",
                          [size]).fetchone()
        if row is None:
            sizes = [h.tree_size for h in heads(con)]
            near = ", ".join(str(s) for s in sizes[-5:]) or "none"
            raise LogError(f"no signed head of size {size} (latest sizes: {near})")
    return Head(*row)


def leaf_hashes(con: duckdb.DuckDBPyConnection, size: int) -> list[bytes]:
    """Stored leaf hashes 0..size-1 in order; LogError if the projection does not hold them all yet."""
    rows = con.execute("SELECT leaf_index, leaf_hash FROM log_entries WHERE leaf_index < ? ORDER BY leaf_index",
                       [size]).fetchall()
    if len(rows) != size or (rows and rows[-1][0] != size - 1):
        raise LogError(f"the projection holds {len(rows):,} of the {size:,} entries of that head: wait for the "
                       "projector, or run `stockledger log audit` if rows were removed")
    return [bytes(h) for _, h in rows]


def find_leaf(con: duckdb.DuckDBPyConnection, *, event_id: str | None = None, topic: str | None = None,
              partition: int | None = None, offset: int | None = None) -> int:
    """Leaf index of an input (by its event id, or the event id a posting batch or outcome names as its
    cause) or of a source record (topic, partition, offset)."""
    if event_id is not None:
        for sql in ("SELECT MIN(leaf_index) FROM log_entries WHERE event_id = ?",
                    "SELECT MIN(l.leaf_index) FROM posting_batches b JOIN log_entries l ON l.event_id = b.cause_event_id "
                    "WHERE b.event_id = ?",
                    "SELECT MIN(l.leaf_index) FROM request_outcomes o JOIN log_entries l ON l.event_id = o.request_event_id "
                    "WHERE o.event_id = ?"):
            row = con.execute(sql, [event_id]).fetchone()
            if row and row[0] is not None:
                return int(row[0])
        raise LogError(f"no log entry, posting batch or outcome has event id {event_id!r}")
    row = con.execute("SELECT MIN(leaf_index) FROM log_entries WHERE source_topic = ? AND source_partition = ? "
                      "AND source_offset = ?", [topic, partition, offset]).fetchone()
    if not row or row[0] is None:
        raise LogError(f"no log entry comes from {topic}[{partition}]@{offset}")
    return int(row[0])


def _b64(data: bytes | None) -> str:
    return base64.b64encode(data or b"").decode()


def inclusion_document(con: duckdb.DuckDBPyConnection, leaf_index: int, at: Head) -> dict[str, Any]:
    """Proof that entry leaf_index is in the log of the signed head `at`."""
    if not 0 <= leaf_index < at.tree_size:
        raise LogError(f"entry {leaf_index} is not below the head's size {at.tree_size}: use a later head")
    row = con.execute("SELECT source_topic, key, value, event_id, source_partition, source_offset FROM log_entries "
                      "WHERE leaf_index = ? LIMIT 1", [leaf_index]).fetchone()
    if row is None:
        raise LogError(f"entry {leaf_index} is not projected")
    topic, key, value, event_id, partition, offset = row
    leaves = leaf_hashes(con, at.tree_size)
    return {
        "kind": INCLUSION_KIND, "version": PROOF_VERSION, "leaf_index": leaf_index, "tree_size": at.tree_size,
        "entry": {"topic": topic, "key_b64": _b64(key), "value_b64": _b64(value)},
        "lineage": {"event_id": event_id, "source_partition": partition, "source_offset": offset},
        "leaf_hash": entry_leaf_hash(topic, key, value).hex(),
        "path": [h.hex() for h in inclusion_proof(leaves, leaf_index, at.tree_size)],
        "checkpoint": at.note,
    }


def consistency_document(con: duckdb.DuckDBPyConnection, old: Head, new: Head) -> dict[str, Any]:
    """Proof that the log of head `old` is a prefix of the log of head `new`."""
    if old.tree_size > new.tree_size:
        raise LogError(f"the old head ({old.tree_size}) is larger than the new one ({new.tree_size})")
    leaves = leaf_hashes(con, new.tree_size)
    return {
        "kind": CONSISTENCY_KIND, "version": PROOF_VERSION, "old_size": old.tree_size, "new_size": new.tree_size,
        "path": [h.hex() for h in consistency_proof(leaves, old.tree_size, new.tree_size)],
        "old_checkpoint": old.note, "new_checkpoint": new.note,
    }


# --------------------------------------------------------------------------- offline verification


def _hex32(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise ProofError(f"{what} must be 64 hex characters")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ProofError(f"{what} is not hex") from None


def _path(doc: Mapping[str, Any]) -> list[bytes]:
    path = doc.get("path")
    if not isinstance(path, list) or len(path) > MAX_PATH:
        raise ProofError(f"'path' must be a list of at most {MAX_PATH} hashes")
    return [_hex32(h, f"path[{i}]") for i, h in enumerate(path)]


def _int(doc: Mapping[str, Any], key: str) -> int:
    v = doc.get(key)
    if type(v) is not int or not 0 <= v < 1 << 63:
        raise ProofError(f"{key!r} must be an integer in [0, 2^63)")
    return v


def _opened(note: Any, verifier: Verifier, what: str) -> Checkpoint:
    if not isinstance(note, str):
        raise ProofError(f"{what} must be the signed note text")
    try:
        return open_note(note, verifier)
    except NoteError as exc:
        raise ProofError(f"{what}: {exc}") from None


def verify_document(doc: Any, verifier: Verifier, trusted: Checkpoint | None = None) -> tuple[str, Checkpoint]:
    """Check a proof file; returns a one-line summary and the (newest) checkpoint it was checked against.

    trusted: a checkpoint the verifier already holds (e.g. from `log head`); the proof's checkpoint must
    then be that very one.
    """
    if not isinstance(doc, Mapping) or doc.get("version") != PROOF_VERSION:
        raise ProofError(f"not a stockledger log proof of version {PROOF_VERSION}")
    kind = doc.get("kind")
    if kind == INCLUSION_KIND:
        cp = _opened(doc.get("checkpoint"), verifier, "checkpoint")
        index, size = _int(doc, "leaf_index"), _int(doc, "tree_size")
        if size != cp.size:
            raise ProofError(f"the proof is for size {size} but its checkpoint signs size {cp.size}")
        entry = doc.get("entry")
        if not isinstance(entry, Mapping) or not isinstance(entry.get("topic"), str):
            raise ProofError("'entry' must hold topic, key_b64 and value_b64")
        try:
            key = base64.b64decode(entry.get("key_b64", ""), validate=True)
            value = base64.b64decode(entry.get("value_b64", ""), validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise ProofError("entry key_b64 / value_b64 is not base64") from None
        leaf = entry_leaf_hash(entry["topic"], key, value)
        if "leaf_hash" in doc and _hex32(doc["leaf_hash"], "leaf_hash") != leaf:
            raise ProofError("the entry's bytes do not hash to the stated leaf_hash: the entry was altered")
        verify_inclusion(index, size, leaf, _path(doc), cp.root)
        summary = f"entry {index} ({entry['topic']}, {len(value)} bytes) is in the log of size {size}"
        newest = cp
    elif kind == CONSISTENCY_KIND:
        old = _opened(doc.get("old_checkpoint"), verifier, "old checkpoint")
        new = _opened(doc.get("new_checkpoint"), verifier, "new checkpoint")
        if (_int(doc, "old_size"), _int(doc, "new_size")) != (old.size, new.size):
            raise ProofError("the proof's sizes differ from its checkpoints' sizes")
        if old.origin != new.origin:
            raise ProofError(f"the checkpoints are of two logs ({old.origin!r}, {new.origin!r})")
        verify_consistency(old.size, new.size, old.root, new.root, _path(doc))
        summary = f"the log of size {old.size} is a prefix of the log of size {new.size}"
        newest = new
    else:
        raise ProofError(f"unknown proof kind {kind!r}")
    if trusted is not None and trusted != newest:
        raise ProofError(f"the proof's checkpoint (size {newest.size}) is not the trusted one (size {trusted.size})")
    return summary, newest
