"""The catalog in a Confluent-compatible schema registry: subject names, registration, drift, and the codec's ids.

Subject naming: RecordNameStrategy. The subject of a schema is its record's full name
(``stockledger.v1.PostingBatch``), whatever topic carries it. Topics here carry several record types
(custody.events: StockListed, CustodyMovement, HoldingStatement, CorporateAction), so the default
TopicNameStrategy (one ``<topic>-value`` subject per topic) would need one union schema per topic, and adding a
record type to a topic would be a schema change of every other type on it. TopicRecordNameStrategy
(``<topic>-<record>``) would register every type again for each copy of a topic (tests and benchmarks use
prefixed copies) and give the same record type a compatibility history per topic. With the record name the
compatibility rule is per record type, exactly as in schemas/compat.py, and the codec needs no topic to
encode. Confluent clients select it with ``subject.name.strategy: record_subject_name_strategy``; readers
need no strategy at all (they fetch the writer's schema by the id in each record).

Ids: the registry assigns them (Apicurio gives content ids, the same content keeps its id under any subject),
and the wire bytes of a record must not depend on which registry answered: the Merkle log hashes them, archives
keep them and a replay must give the same log. So the catalog's ids stay the contract: registered in catalog
order into a registry that holds only stockledger's subjects they come out equal, and the codec (which takes
each id from the registry, once per process) refuses to encode when the registry's id differs from the
catalog's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from schemas.catalog import ENTRIES, SchemaEntry, raw_schema

COMPATIBILITY = "BACKWARD_TRANSITIVE"  # events are kept forever: the newest reader must read every older version
SCHEMA_TYPE = "AVRO"


class RegistryError(Exception):
    """The registry cannot give the codec an id for a catalog schema; the message says what to do."""


class SchemaNotRegistered(RegistryError):
    """The schema of a catalog entry is not registered under its subject."""


class SchemaIdMismatch(RegistryError):
    """The registry's id for a catalog schema differs from the catalog's (the bytes of records would differ)."""


class RegistryUnavailable(RegistryError):
    """The registry did not answer."""


def record_name(schema_text: str) -> str:
    """The full name (namespace.name) of the record a schema text declares."""
    raw = json.loads(schema_text)
    return f"{raw['namespace']}.{raw['name']}" if raw.get("namespace") else raw["name"]


@cache
def full_name(schema_id: int) -> str:
    """The record's full name of a catalog schema."""
    return record_name(json.dumps(raw_schema(schema_id)))


def subject_of(entry: SchemaEntry, prefix: str = "") -> str:
    """RecordNameStrategy subject of a catalog entry (prefix: for tests only, a separate set of subjects)."""
    return prefix + full_name(entry.schema_id)


def file_text(entry: SchemaEntry) -> str:
    """What is registered: the .avsc as written (docs and logical types included, for downstream tools)."""
    return entry.path.read_text()


def _same_schema(a: str, b: str) -> bool:
    return json.loads(a) == json.loads(b)


def client(url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": url, "timeout": 10})


def _describe_failure(url: str, exc: Exception) -> str:
    if isinstance(exc, SchemaRegistryError):
        return f"HTTP {exc.http_status_code} (error code {exc.error_code}): {exc.error_message}"
    return f"no answer from the schema registry at {url}: {type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------------------------ the codec's ids


class RegistryIds:
    """Wire ids of catalog schemas as the registry gives them, looked up once per entry and cached."""

    def __init__(self, url: str, subject_prefix: str = ""):
        self.url = url
        self.subject_prefix = subject_prefix
        self._client = client(url)
        self._ids: dict[int, int] = {}

    def wire_id(self, entry: SchemaEntry) -> int:
        cached = self._ids.get(entry.schema_id)
        if cached is not None:
            return cached
        subject = subject_of(entry, self.subject_prefix)
        try:
            found = self._client.lookup_schema(subject, Schema(file_text(entry), SCHEMA_TYPE))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise SchemaNotRegistered(
                    f"{entry.subject} v{entry.version} ({entry.filename}) is not registered under subject {subject} in the "
                    f"schema registry at {self.url}: run `stockledger topics create` (it registers the catalog)") from exc
            raise RegistryError(f"looking up {entry.subject} v{entry.version} under {subject}: "
                                f"{_describe_failure(self.url, exc)}") from exc
        except Exception as exc:  # connection refused, timeout: the codec cannot frame records without an id
            raise RegistryUnavailable(f"looking up {entry.subject} v{entry.version}: {_describe_failure(self.url, exc)}. "
                                      "Start it with `make kafka-up`, or unset STOCKLEDGER_REGISTRY_URL for the "
                                      "catalog's built-in ids") from exc
        if found.schema_id != entry.schema_id:
            raise SchemaIdMismatch(
                f"the schema registry at {self.url} gives {entry.subject} v{entry.version} id {found.schema_id}, the catalog "
                f"(and every record already written) uses {entry.schema_id}: use a registry that holds only stockledger's "
                "subjects, registered in catalog order by `stockledger topics create`")
        self._ids[entry.schema_id] = found.schema_id
        return found.schema_id


# ------------------------------------------------------------------------------------ registration and drift


PROBLEMS = ("missing", "incompatible", "differs", "failed")


@dataclass(frozen=True)
class EntryStatus:
    """One catalog version in the registry: registered now, already there, or the problem."""

    entry: SchemaEntry
    subject: str
    state: str  # registered | present | missing (check only) | incompatible | differs | failed
    registry_id: int | None = None
    registry_version: int | None = None
    detail: str = ""

    @property
    def drift(self) -> bool:
        return (self.state in PROBLEMS or self.registry_id != self.entry.schema_id
                or self.registry_version != self.entry.version)

    def __str__(self) -> str:
        where = f"{self.subject} v{self.entry.version} ({self.entry.filename}, catalog id {self.entry.schema_id})"
        if self.state in PROBLEMS:
            return f"{where}: {self.state.upper()}: {self.detail}"
        notes = []
        if self.registry_id != self.entry.schema_id:
            notes.append(f"registry id {self.registry_id} differs from the catalog's")
        if self.registry_version != self.entry.version:
            notes.append(f"registry version {self.registry_version} differs from the catalog's")
        return f"{where}: {self.state}, id {self.registry_id}" + (f" ({'; '.join(notes)})" if notes else "")


@dataclass
class RegistryReport:
    """Outcome of register_catalog / check_catalog; `drift` lists every disagreement with the .avsc files."""

    url: str
    statuses: list[EntryStatus] = field(default_factory=list)
    compatibility: dict[str, str] = field(default_factory=dict)  # subject -> level found (after setting it)
    extra_versions: dict[str, list[int]] = field(default_factory=dict)  # registry versions the catalog lacks

    @property
    def drift(self) -> list[str]:
        lines = [str(s) for s in self.statuses if s.drift]
        lines += [f"{subject}: compatibility {level}, expected {COMPATIBILITY}"
                  for subject, level in sorted(self.compatibility.items()) if level != COMPATIBILITY]
        lines += [f"{subject}: registry versions {versions} are not in the catalog"
                  for subject, versions in sorted(self.extra_versions.items())]
        return lines

    @property
    def ok(self) -> bool:
        return not self.drift

    def count(self, state: str) -> int:
        return sum(1 for s in self.statuses if s.state == state)

    def summary(self) -> str:
        subjects = len({s.subject for s in self.statuses})
        head = (f"schema registry {self.url}: {len(self.statuses)} schema versions under {subjects} subjects "
                f"(record-name strategy, {COMPATIBILITY}): {self.count('registered')} registered now, "
                f"{self.count('present')} already there")
        return "\n".join([head, *(f"DRIFT {line}" for line in self.drift)])


def _compare_versions(c: SchemaRegistryClient, subject: str, versions: dict[int, str],
                      report: RegistryReport) -> dict[int, str]:
    """{catalog version: how the registry's version of that number differs}; registry-only versions noted."""
    try:
        registered = c.get_versions(subject)
    except SchemaRegistryError as exc:
        if exc.http_status_code == 404:
            return {}
        raise
    extra = sorted(v for v in registered if v not in versions)
    if extra:
        report.extra_versions[subject] = extra
    differs = {}
    for version, text in versions.items():
        if version in registered:
            stored = c.get_version(subject, version)
            if not _same_schema(stored.schema.schema_str, text):
                differs[version] = f"the registry's version {version} (id {stored.schema_id}) is a different schema"
    return differs


LOOKUP_THREADS = 8  # concurrent reads of what the registry holds


def register_catalog(url: str, *, entries: Iterable[SchemaEntry] = ENTRIES, subject_prefix: str = "",
                     schema_text: Callable[[SchemaEntry], str] = file_text, register: bool = True) -> RegistryReport:
    """Register every catalog version under its subject in catalog order, set BACKWARD_TRANSITIVE, report drift.

    Never changes what is registered: a version the registry refuses (incompatible) or holds with other content
    is reported. register=False only checks (no writes). Raises RegistryUnavailable if the registry does not answer.
    Catalog order (by id) makes the registry's ids equal the catalog's in a registry holding only these subjects.
    """
    c = client(url)
    report = RegistryReport(url)
    todo = [(e, schema_text(e)) for e in entries]
    subjects: dict[str, dict[int, str]] = {}
    for e, text in todo:
        subjects.setdefault(subject_prefix + record_name(text), {})[e.version] = text
    try:
        # What is there already, read in parallel (about 150 requests, one at a time ~3 s); then what is
        # missing is registered one by one in catalog order, which is what makes the ids the catalog's.
        with ThreadPoolExecutor(max_workers=LOOKUP_THREADS) as pool:
            compared = list(pool.map(lambda sv: _compare_versions(c, sv[0], sv[1], report), subjects.items()))
            found = list(pool.map(lambda et: _lookup(c, subject_prefix + record_name(et[1]), et[1]), todo))
            levels = dict(zip(subjects, pool.map(lambda subject: _compatibility(c, subject), subjects), strict=True))
        differs = {(subject, v): d for subject, diffs in zip(subjects, compared, strict=True) for v, d in diffs.items()}
        for (e, text), hit in zip(todo, found, strict=True):
            subject = subject_prefix + record_name(text)
            report.statuses.append(_register_one(c, e, subject, text, differs.get((subject, e.version)), register, hit))
            if subject not in report.compatibility:  # set the rule before the subject's second version arrives
                report.compatibility[subject] = _ensure_compatibility(c, subject, register, levels[subject])
    except SchemaRegistryError as exc:
        raise RegistryError(_describe_failure(url, exc)) from exc
    except RegistryError:
        raise
    except Exception as exc:  # noqa: BLE001 - connection refused, timeout
        raise RegistryUnavailable(_describe_failure(url, exc)) from exc
    return report


def check_catalog(url: str, **kwargs: Any) -> RegistryReport:
    """Drift between the catalog and the registry, without registering anything."""
    return register_catalog(url, register=False, **kwargs)


def _lookup(c: SchemaRegistryClient, subject: str, text: str) -> Any:
    """The registered version of this schema under the subject, or None."""
    try:
        return c.lookup_schema(subject, Schema(text, SCHEMA_TYPE))
    except SchemaRegistryError as exc:
        if exc.http_status_code != 404:
            raise
    return None


def _compatibility(c: SchemaRegistryClient, subject: str) -> str:
    try:
        return c.get_compatibility(subject)
    except SchemaRegistryError as exc:
        if exc.http_status_code != 404:
            raise
    return "(registry default)"


def _register_one(c: SchemaRegistryClient, e: SchemaEntry, subject: str, text: str, differs: str | None,
                  register: bool, found: Any) -> EntryStatus:
    if differs:
        return EntryStatus(e, subject, "differs", detail=differs)
    if found is not None:
        return EntryStatus(e, subject, "present", found.schema_id, found.version)
    if not register:
        return EntryStatus(e, subject, "missing", detail="not registered")
    schema = Schema(text, SCHEMA_TYPE)
    try:
        c.register_schema(subject, schema)
    except SchemaRegistryError as exc:
        if exc.http_status_code == 409:
            return EntryStatus(e, subject, "incompatible", detail=f"refused by the registry under {COMPATIBILITY}: "
                                                                  f"{exc.error_message}")
        return EntryStatus(e, subject, "failed", detail=f"HTTP {exc.http_status_code}: {exc.error_message}")
    found = c.lookup_schema(subject, schema)
    return EntryStatus(e, subject, "registered", found.schema_id, found.version)


def _ensure_compatibility(c: SchemaRegistryClient, subject: str, register: bool, level: str) -> str:
    """The subject's level (read beforehand), set to BACKWARD_TRANSITIVE when registering and it differs."""
    if level != COMPATIBILITY and register:
        c.set_compatibility(subject_name=subject, level=COMPATIBILITY)
        level = c.get_compatibility(subject)
    return level
