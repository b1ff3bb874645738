"""Event archives: Avro object container files of Kafka-shaped records (topic, key, value bytes) in log order."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import fastavro

from schemas.catalog import LATEST, parsed_schema

ARCHIVE_SCHEMA_ID = LATEST["ArchiveRecord"].schema_id
ArchiveRow = tuple[str, str, bytes]  # (topic, key, value)


def write_archive(path: Path, rows: Iterable[ArchiveRow], seed_label: str, block_records: int = 4000) -> int:
    """Write rows to an OCF; the sync marker derives from seed_label so equal input gives equal bytes."""
    sync_marker = hashlib.sha256(f"stockledger-archive:{seed_label}".encode()).digest()[:16]
    count = 0

    def records() -> Iterator[dict]:
        nonlocal count
        for topic, key, value in rows:
            count += 1
            yield {"topic": topic, "key": key, "value": value}

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fo:
        fastavro.writer(
            fo, parsed_schema(ARCHIVE_SCHEMA_ID), records(), codec="deflate", sync_interval=block_records * 64,
            metadata={"stockledger.archive": "v1"}, sync_marker=sync_marker,
        )
    return count


def read_archive(path: Path) -> Iterator[ArchiveRow]:
    """Stream rows in log order without loading the file whole."""
    with open(path, "rb") as fo:
        for rec in fastavro.reader(fo):
            yield rec["topic"], rec["key"], rec["value"]


def archive_size_hint(path: Path) -> int:
    """Bytes of the archive, for progress bars."""
    return path.stat().st_size
