"""Atomic outputs: a file is written beside its target, fsynced, then renamed over it; a DuckDB target held by another process is refused."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class TargetBusy(Exception):
    """The target is held by another process (or is not a file this tool may replace)."""


def temp_beside(target: Path) -> Path:
    """A new, empty temporary path in the target's directory (so the final rename stays on one file system)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(name)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, target: Path) -> None:
    """fsync the finished temporary file, rename it over the target, fsync the directory: all or nothing."""
    fsync_path(tmp)
    os.replace(tmp, target)
    fsync_path(target.parent)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces target, on any error it is removed."""
    tmp = temp_beside(target)
    try:
        yield tmp
        commit(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def refuse_if_held(db: Path) -> None:
    """Raise TargetBusy if another process holds the DuckDB file (or it is not a DuckDB file)."""
    if not db.exists():
        return
    import duckdb

    try:
        duckdb.connect(str(db)).close()  # read-write: takes the exclusive lock a holder would conflict with
    except duckdb.Error as exc:
        first_line = str(exc).splitlines()[0][:300]
        raise TargetBusy(f"{db} is in use or not a DuckDB file, so it is left as it is ({first_line})") from exc
