"""JSON as the user files are read: a key twice in one object is an error, not "the last one wins"."""

from __future__ import annotations

import json
from typing import Any


class DuplicateKeyError(ValueError):
    """An object names the same key twice: which value was meant cannot be known."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook that refuses a repeated key (json's default keeps the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"the key {key[:40]!r} appears twice in one object")
        out[key] = value
    return out


def loads(text: str) -> Any:
    """json.loads with unique keys; a document nested too deeply is a ValueError, not a RecursionError."""
    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
