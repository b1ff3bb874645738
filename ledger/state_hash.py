"""Canonical state hash: a deterministic serialisation of the whole ledger state, then SHA-256."""

from __future__ import annotations

import hashlib
from dataclasses import fields, is_dataclass
from typing import Any

from ledger.state import LedgerState

NOT_HASHED = frozenset({"counters", "source_offsets", "surveillance"})


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


def state_hash(state: LedgerState) -> str:
    """Hex SHA-256 of the canonical state; equal states give equal hashes on every machine."""
    h = hashlib.sha256()
    for part in canonical_state(state):
        h.update(repr(part).encode())
    return h.hexdigest()
