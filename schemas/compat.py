"""Backward-transitive schema compatibility of the catalog, checked with Apache Avro's own checker.

Rule: the newest version of a subject (the reader every consumer uses) must be able to read data written
with EVERY earlier version of that subject (events are retained forever and replayed from the start).
``avro.compatibility.ReaderWriterCompatibilityChecker`` implements the Avro specification's schema
resolution rules (the same ones as the Java checker): a reader field missing from the writer needs a
default, writer-only fields are skipped, int -> long -> float -> double and string <-> bytes promote,
the reader's enum must hold every writer symbol (unless the reader enum has a default), each writer union
branch must be readable, and arrays, maps and nested records are checked recursively.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from schemas import catalog


@dataclass(frozen=True)
class Compatibility:
    """Whether ``reader`` can read everything ``writer`` writes, and why not."""

    compatible: bool
    problems: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.compatible


def _parse(schema: dict[str, Any] | str) -> avro.schema.Schema:
    return avro.schema.parse(schema if isinstance(schema, str) else json.dumps(schema))


def can_read(reader: dict[str, Any] | str, writer: dict[str, Any] | str) -> Compatibility:
    """Check one (reader, writer) pair of schemas (JSON dicts or .avsc text)."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(_parse(reader), _parse(writer))
    if result.compatibility is SchemaCompatibilityType.compatible:
        return Compatibility(True)
    kinds = ", ".join(sorted({i.value for i in result.incompatibilities}))
    problems = tuple(
        f"{kinds} at {location}: {message}"
        for location in sorted(result.locations)
        for message in sorted(result.messages)
    )
    return Compatibility(False, problems or (kinds,))


def backward_transitive(versions: list[dict[str, Any]]) -> list[str]:
    """Problems with the newest of ``versions`` (oldest first) reading each earlier one; [] if none."""
    *older, newest = versions
    problems = []
    for number, writer in enumerate(older, start=1):
        result = can_read(newest, writer)
        problems.extend(f"v{len(versions)} cannot read v{number}: {p}" for p in result.problems)
    return problems


def subject_versions(subject: str) -> list[catalog.SchemaEntry]:
    """Catalog entries of a subject, oldest version first."""
    return sorted((e for e in catalog.ENTRIES if e.subject == subject), key=lambda e: e.version)


def catalog_problems() -> dict[str, list[str]]:
    """Backward-transitive problems of every subject in the catalog: {subject: [problem, ...]}, only failures."""
    found: dict[str, list[str]] = {}
    for subject in catalog.LATEST:
        entries = subject_versions(subject)
        newest = entries[-1]
        problems = [
            f"{subject} v{newest.version} (id {newest.schema_id}) cannot read v{old.version} (id {old.schema_id}): {p}"
            for old in entries[:-1]
            for p in can_read(
                catalog.raw_schema(newest.schema_id), catalog.raw_schema(old.schema_id)
            ).problems
        ]
        if problems:
            found[subject] = problems
    return found
