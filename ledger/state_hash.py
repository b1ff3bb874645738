"""Canonical state hash: a deterministic serialisation of the whole ledger state, streamed into SHA-256."""

from __future__ import annotations

import hashlib
from dataclasses import fields, is_dataclass
from typing import Any

from ledger.state import LedgerState

NOT_HASHED = frozenset({"counters", "source_offsets", "surveillance", "log"})
STREAM_ABOVE = 256  # containers with more entries than this are hashed entry by entry, never built whole


def _canonical(value: Any) -> Any:
    if hasattr(value, "canonical"):
        return _canonical(value.canonical())
    if is_dataclass(value):
        return [[f.name, _canonical(getattr(value, f.name))] for f in fields(value)]
    if isinstance(value, dict):
        return [[_canonical(k), _canonical(v)] for k, v in sorted(value.items())]
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, bool | int | str):
        return value
    raise TypeError(f"{type(value).__name__} has no canonical form (floats are not allowed in state)")


def canonical_state(state: LedgerState) -> list[Any]:
    """Everything but delivery bookkeeping (counters, source offsets) and the derived surveillance index, in a fixed order."""
    return [[f.name, _canonical(getattr(state, f.name))] for f in fields(state) if f.name not in NOT_HASHED]


def _feed(h: Any, value: Any) -> None:
    """Hash a value's canonical form; large containers entry by entry, so the hash never holds a second copy of the state."""
    if hasattr(value, "canonical_parts"):
        for part in value.canonical_parts():
            h.update(repr(part).encode())
    elif isinstance(value, dict) and len(value) > STREAM_ABOVE:
        for key in sorted(value):
            h.update(repr([_canonical(key), _canonical(value[key])]).encode())
    else:
        h.update(repr(_canonical(value)).encode())


def state_hash(state: LedgerState, leave_out: frozenset[str] = frozenset(), new_sha256: Any = hashlib.sha256) -> str:
    """Hex SHA-256 of the canonical state; equal states give equal hashes on every machine.

    new_sha256: any SHA-256 constructor (a forked child uses CPython's built-in one, not OpenSSL's).
    """
    h = new_sha256()
    for f in fields(state):
        if f.name not in NOT_HASHED and f.name not in leave_out:
            h.update(repr(f.name).encode())
            _feed(h, getattr(state, f.name))
    return h.hexdigest()


def balances_hash(state: LedgerState) -> str:
    """The state hash without the decided ids: what a rejection (remembered as decided) must leave unchanged."""
    return state_hash(state, frozenset({"seen"}))
