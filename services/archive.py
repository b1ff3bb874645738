"""Event archives: Avro object container files of Kafka-shaped records (topic, key, value bytes) in log order."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import fastavro

from schemas.catalog import LATEST, parsed_schema

ARCHIVE_SCHEMA_ID = LATEST["ArchiveRecord"].schema_id
ArchiveRow = tuple[str, str, bytes]  # (topic, key, value)


# The record count and a digest of the rows, in the container's header metadata. The header comes before
# the rows, so fixed-width placeholders are written first and filled in once the last row is out.
COUNT_KEY, DIGEST_KEY = "stockledger.records", "stockledger.digest"
_COUNT_PLACEHOLDER, _DIGEST_PLACEHOLDER = "#" * 20, "?" * 64


class ArchiveError(ValueError):
    """An archive that is short, altered, or whose trailer does not match its rows."""


def _row_digest() -> Any:
    return hashlib.sha256(b"stockledger-archive-rows:v2")


def _feed(digest: Any, topic: str, key: str, value: bytes) -> None:
    for part in (topic.encode(), key.encode(), value):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)


def write_archive(path: Path, rows: Iterable[ArchiveRow], seed_label: str, block_records: int = 4000) -> int:
    """Write rows to an OCF; the sync marker derives from seed_label so equal input gives equal bytes.

    The header metadata records how many rows the file holds and a SHA-256 of them (read_archive checks both).
    """
    sync_marker = hashlib.sha256(f"stockledger-archive:{seed_label}".encode()).digest()[:16]
    count = 0
    digest = _row_digest()

    def records() -> Iterator[dict]:
        nonlocal count
        for topic, key, value in rows:
            count += 1
            _feed(digest, topic, key, value)
            yield {"topic": topic, "key": key, "value": value}

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w+b") as fo:
        fastavro.writer(
            fo, parsed_schema(ARCHIVE_SCHEMA_ID), records(), codec="deflate", sync_interval=block_records * 64,
            metadata={"stockledger.archive": "v2", COUNT_KEY: _COUNT_PLACEHOLDER, DIGEST_KEY: _DIGEST_PLACEHOLDER},
            sync_marker=sync_marker,
        )
        fo.seek(0)
        header = fo.read(4096)
        for placeholder, value in ((_COUNT_PLACEHOLDER, f"{count:020d}"), (_DIGEST_PLACEHOLDER, digest.hexdigest())):
            fo.seek(header.index(placeholder.encode()))
            fo.write(value.encode())
    return count


def read_archive(path: Path) -> Iterator[ArchiveRow]:
    """Stream rows in log order without loading the file whole; at the end, check the count and digest.

    A short or altered archive raises ArchiveError after its last readable row (archives written before
    the trailer existed carry none and are read as they are).
    """
    with open(path, "rb") as fo:
        reader = fastavro.reader(fo)
        expected_count, expected_digest = reader.metadata.get(COUNT_KEY), reader.metadata.get(DIGEST_KEY)
        digest, count = _row_digest(), 0
        for rec in reader:
            count += 1
            if expected_digest is not None:
                _feed(digest, rec["topic"], rec["key"], rec["value"])
            yield rec["topic"], rec["key"], rec["value"]
    if expected_count is None:
        return
    if expected_count == _COUNT_PLACEHOLDER or int(expected_count) != count:
        raise ArchiveError(f"the archive holds {count:,} records, its header says {int(expected_count.strip('#') or 0):,}: "
                           "it is short or was cut")
    if digest.hexdigest() != expected_digest:
        raise ArchiveError("the records do not match the digest in the archive's header: it was altered")


def archive_size_hint(path: Path) -> int:
    """Bytes of the archive, for progress bars."""
    return path.stat().st_size
