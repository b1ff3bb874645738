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
# An exported log's row also carries where it came from: (topic, key, value, partition, offset, timestamp_ms).
SourcedRow = tuple[str, str, bytes, int, int, int]


# The record count and a digest of the rows, in the container's header metadata. The header comes before
# the rows, so fixed-width placeholders are written first and filled in once the last row is out.
COUNT_KEY, DIGEST_KEY = "stockledger.records", "stockledger.digest"
_COUNT_PLACEHOLDER, _DIGEST_PLACEHOLDER = "#" * 20, "?" * 64


class ArchiveError(ValueError):
    """An archive that is short, altered, or whose trailer does not match its rows."""


def _row_digest() -> Any:
    return hashlib.sha256(b"stockledger-archive-rows:v2")


def _feed(digest: Any, topic: str, key: str, value: bytes, source: tuple[Any, ...] = ()) -> None:
    for part in (topic.encode(), key.encode(), value):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    if any(v is not None for v in source):  # an exported log's coordinates are part of what is checked
        digest.update(b"|" + ",".join("" if v is None else str(v) for v in source).encode())


def write_archive(path: Path, rows: Iterable[ArchiveRow], seed_label: str, block_records: int = 4000) -> int:
    """Write rows to an OCF; the sync marker derives from seed_label so equal input gives equal bytes.

    The header metadata records how many rows the file holds and a SHA-256 of them (read_archive checks both).
    """
    sync_marker = hashlib.sha256(f"stockledger-archive:{seed_label}".encode()).digest()[:16]
    count = 0
    digest = _row_digest()

    def records() -> Iterator[dict]:
        nonlocal count
        for row in rows:
            topic, key, value = row[0], row[1], row[2]
            source = tuple(row[3:6]) if len(row) > 3 else (None, None, None)
            count += 1
            _feed(digest, topic, key, value, source)
            yield {"topic": topic, "key": key, "value": value, "source_partition": source[0],
                   "source_offset": source[1], "timestamp_ms": source[2]}

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


def read_archive(path: Path, with_source: bool = False) -> Iterator[ArchiveRow | SourcedRow]:
    """Stream rows in log order without loading the file whole; at the end, check the count and digest.

    with_source: rows of an exported log come with their source coordinates (6-tuples), so the replay
    deduplicates redeliveries and stamps times exactly as the worker did.
    A short or altered archive raises ArchiveError after its last readable row (archives written before
    the trailer existed carry none and are read as they are).
    """
    with open(path, "rb") as fo:
        reader = fastavro.reader(fo)
        expected_count, expected_digest = reader.metadata.get(COUNT_KEY), reader.metadata.get(DIGEST_KEY)
        digest, count = _row_digest(), 0
        for rec in reader:
            count += 1
            source = (rec.get("source_partition"), rec.get("source_offset"), rec.get("timestamp_ms"))
            if expected_digest is not None:
                _feed(digest, rec["topic"], rec["key"], rec["value"], source)
            if with_source and source[0] is not None:
                yield rec["topic"], rec["key"], rec["value"], source[0], source[1], source[2]
            else:
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
