"""JSON as the user files are read: a key twice in one object is an error, not "the last one wins"."""

from __future__ import annotations

import json
from pathlib import Path
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


class DocumentError(ValueError):
    """A JSON document a user handed in cannot be used: unreadable, not JSON, too deep, a key repeated."""


def read_document(path: Path, what: str) -> Any:
    """A user's JSON file (a proof, a root, a manifest), or DocumentError with one line saying why not."""
    try:
        return loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DocumentError(f"cannot read {what} {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DocumentError(f"{what} {path} is not valid JSON: {str(exc)[:200]}") from None
