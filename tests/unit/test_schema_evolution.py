"""Schema evolution: the catalog is well formed and every subject is backward-transitive compatible.

Today every subject has only v1, so the real-catalog check passes trivially; the synthetic schema pairs
below show the checker (schemas/compat.py, Apache Avro's ReaderWriterCompatibilityChecker) says "no" when
it must, and each verdict is confirmed with real bytes: written with the writer schema, read with
fastavro's schemaless_reader(writer, reader).
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import fastavro
import pytest
from fastavro.read import SchemaResolutionError

from schemas import catalog, codec, compat

# ----------------------------------------------------------------------------------- catalog shape


def test_schema_ids_are_unique():
    ids = [e.schema_id for e in catalog.ENTRIES]
    assert len(ids) == len(set(ids))
    assert all(i > 0 for i in ids)
    assert set(catalog.BY_ID) == set(ids)


def test_subject_versions_are_unique_and_contiguous():
    pairs = [(e.subject, e.version) for e in catalog.ENTRIES]
    assert len(pairs) == len(set(pairs))
    for subject in catalog.LATEST:
        entries = compat.subject_versions(subject)
        assert [e.version for e in entries] == list(range(1, len(entries) + 1)), subject
        # append-only: a newer version always got a higher id
        assert [e.schema_id for e in entries] == sorted(e.schema_id for e in entries), subject
        assert catalog.LATEST[subject] == entries[-1]


def test_every_avsc_file_is_registered_and_every_entry_has_its_file():
    on_disk = {p.name for p in catalog.AVSC_DIR.glob("*.avsc")}
    registered = [e.filename for e in catalog.ENTRIES]
    assert len(registered) == len(set(registered)), "a file is registered twice"
    assert on_disk - set(registered) == set(), "unregistered .avsc files"
    assert set(registered) - on_disk == set(), "registered files missing on disk"


@pytest.mark.parametrize("entry", catalog.ENTRIES, ids=lambda e: f"{e.subject}.v{e.version}")
def test_entry_matches_its_file(entry):
    raw = catalog.raw_schema(entry.schema_id)
    assert raw["type"] == "record"
    assert raw["name"] == entry.subject
    match = re.fullmatch(r"[a-z0-9_]+\.v(\d+)\.avsc", entry.filename)
    assert match and int(match.group(1)) == entry.version, f"{entry.filename} does not say v{entry.version}"
    catalog.parsed_schema(entry.schema_id)  # parses with fastavro
    compat.can_read(raw, raw)  # and with Apache Avro


# ------------------------------------------------------------------------------ the real catalog


def test_catalog_is_backward_transitive():
    assert compat.catalog_problems() == {}


def _sample(node: Any, names: dict[str, Any] | None = None) -> Any:
    """A small valid datum of an Avro schema (parsed JSON); unions take their first non-null branch."""
    names = {} if names is None else names
    if isinstance(node, str):
        base = {
            "string": "x",
            "bytes": b"x",
            "int": 1,
            "long": 1,
            "float": 1.0,
            "double": 1.0,
            "boolean": True,
            "null": None,
        }
        return base[node] if node in base else _sample(names[node.split(".")[-1]], names)
    if isinstance(node, list):
        return _sample(next((b for b in node if b != "null"), "null"), names)
    kind = node["type"]
    if kind == "record":
        names[node["name"]] = node
        return {f["name"]: _sample(f["type"], names) for f in node["fields"]}
    if kind == "enum":
        names[node["name"]] = node
        return node["symbols"][0]
    if kind == "array":
        return [_sample(node["items"], names)]
    if kind == "map":
        return {"k": _sample(node["values"], names)}
    return _sample(kind, names)


def _resolve(writer: dict, reader: dict, datum: Any) -> Any:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(writer), datum)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, fastavro.parse_schema(writer), fastavro.parse_schema(reader))


@pytest.mark.parametrize("subject", sorted(catalog.LATEST))
def test_newest_reads_bytes_of_every_older_version(subject):
    """Real data: every older version's bytes (framed by the codec) resolve into the newest schema."""
    entries = compat.subject_versions(subject)
    newest = entries[-1]
    for old in entries:  # includes newest itself, so the check runs today with v1 only
        datum = _sample(catalog.raw_schema(old.schema_id))
        wire = codec.encode_with_id(old.schema_id, datum)
        assert codec.peek_schema_id(wire) == old.schema_id
        body = io.BytesIO(wire[codec.HEADER_SIZE :])
        read = fastavro.schemaless_reader(
            body, catalog.parsed_schema(old.schema_id), catalog.parsed_schema(newest.schema_id)
        )
        assert body.tell() == len(wire) - codec.HEADER_SIZE
        for name in read.keys() & datum.keys():
            assert read[name] == datum[name]


# -------------------------------------------------------------------------- synthetic schema pairs


def rec(*fields: dict, name: str = "Thing", **extra: Any) -> dict:
    return {"type": "record", "name": name, "namespace": "stockledger.test", "fields": list(fields), **extra}


def f(name: str, type_: Any, **extra: Any) -> dict:
    return {"name": name, "type": type_, **extra}


def enum(*symbols: str, **extra: Any) -> dict:
    return {"type": "enum", "name": "Colour", "symbols": list(symbols), **extra}


ITEM_V1 = rec(f("sku", "string"), name="Item")
ITEM_ADDED_NO_DEFAULT = rec(f("sku", "string"), f("qty", "long"), name="Item")
ITEM_ADDED_DEFAULT = rec(f("sku", "string"), f("qty", "long", default=0), name="Item")

# (id, writer, reader, datum written with the writer, compatible?, expected read if compatible)
CASES: list[tuple[str, dict, dict, Any, bool, Any]] = [
    (
        "added field with default",
        rec(f("a", "long")),
        rec(f("a", "long"), f("b", "string", default="z")),
        {"a": 1},
        True,
        {"a": 1, "b": "z"},
    ),
    (
        "added field without default",
        rec(f("a", "long")),
        rec(f("a", "long"), f("b", "string")),
        {"a": 1},
        False,
        None,
    ),
    (
        "added nullable field with null default",
        rec(f("a", "long")),
        rec(f("a", "long"), f("b", ["null", "string"], default=None)),
        {"a": 1},
        True,
        {"a": 1, "b": None},
    ),
    (
        "removed field",
        rec(f("a", "long"), f("b", "string")),
        rec(f("a", "long")),
        {"a": 1, "b": "gone"},
        True,
        {"a": 1},
    ),
    (
        "renamed field with alias",
        rec(f("qty", "long")),
        rec(f("qty_nano", "long", aliases=["qty"])),
        {"qty": 5},
        True,
        {"qty_nano": 5},
    ),
    (
        "renamed field without alias",
        rec(f("qty", "long")),
        rec(f("qty_nano", "long")),
        {"qty": 5},
        False,
        None,
    ),
    ("renamed record", rec(f("a", "long")), rec(f("a", "long"), name="Other"), {"a": 1}, False, None),
    ("int -> long", rec(f("a", "int")), rec(f("a", "long")), {"a": 2**31 - 1}, True, {"a": 2**31 - 1}),
    ("int -> float", rec(f("a", "int")), rec(f("a", "float")), {"a": 3}, True, {"a": 3.0}),
    ("int -> double", rec(f("a", "int")), rec(f("a", "double")), {"a": 3}, True, {"a": 3.0}),
    ("long -> float", rec(f("a", "long")), rec(f("a", "float")), {"a": 3}, True, {"a": 3.0}),
    ("long -> double", rec(f("a", "long")), rec(f("a", "double")), {"a": 3}, True, {"a": 3.0}),
    ("float -> double", rec(f("a", "float")), rec(f("a", "double")), {"a": 0.5}, True, {"a": 0.5}),
    ("long -> int (narrowing)", rec(f("a", "long")), rec(f("a", "int")), {"a": 2**40}, False, None),
    ("double -> float (narrowing)", rec(f("a", "double")), rec(f("a", "float")), {"a": 0.1}, False, None),
    ("long -> string", rec(f("a", "long")), rec(f("a", "string")), {"a": 1}, False, None),
    ("string -> bytes", rec(f("a", "string")), rec(f("a", "bytes")), {"a": "hé"}, True, {"a": "hé".encode()}),
    ("bytes -> string", rec(f("a", "bytes")), rec(f("a", "string")), {"a": b"ok"}, True, {"a": "ok"}),
    (
        "enum symbol added",
        rec(f("c", enum("RED", "BLUE"))),
        rec(f("c", enum("RED", "BLUE", "GREEN"))),
        {"c": "BLUE"},
        True,
        {"c": "BLUE"},
    ),
    (
        "enum symbol removed",
        rec(f("c", enum("RED", "BLUE", "GREEN"))),
        rec(f("c", enum("RED", "BLUE"))),
        {"c": "GREEN"},
        False,
        None,
    ),
    (
        "enum symbol removed, reader enum has a default",
        rec(f("c", enum("RED", "BLUE", "GREEN"))),
        rec(f("c", enum("RED", "BLUE", default="RED"))),
        {"c": "GREEN"},
        True,
        {"c": "RED"},
    ),
    (
        "plain -> nullable union",
        rec(f("a", "string")),
        rec(f("a", ["null", "string"])),
        {"a": "x"},
        True,
        {"a": "x"},
    ),
    (
        "nullable union -> plain",
        rec(f("a", ["null", "string"])),
        rec(f("a", "string")),
        {"a": None},
        False,
        None,
    ),
    (
        "union widened",
        rec(f("a", ["null", "string"])),
        rec(f("a", ["null", "string", "long"])),
        {"a": "x"},
        True,
        {"a": "x"},
    ),
    (
        "union branch dropped",
        rec(f("a", ["null", "string", "long"])),
        rec(f("a", ["null", "string"])),
        {"a": 7},
        False,
        None,
    ),
    (
        "array of records: item field added with default",
        rec(f("items", {"type": "array", "items": ITEM_V1})),
        rec(f("items", {"type": "array", "items": ITEM_ADDED_DEFAULT})),
        {"items": [{"sku": "A"}]},
        True,
        {"items": [{"sku": "A", "qty": 0}]},
    ),
    (
        "array of records: item field added without default",
        rec(f("items", {"type": "array", "items": ITEM_V1})),
        rec(f("items", {"type": "array", "items": ITEM_ADDED_NO_DEFAULT})),
        {"items": [{"sku": "A"}]},
        False,
        None,
    ),
    (
        "nested record: field added without default",
        rec(f("item", ITEM_V1)),
        rec(f("item", ITEM_ADDED_NO_DEFAULT)),
        {"item": {"sku": "A"}},
        False,
        None,
    ),
    (
        "map values int -> long",
        rec(f("m", {"type": "map", "values": "int"})),
        rec(f("m", {"type": "map", "values": "long"})),
        {"m": {"k": 1}},
        True,
        {"m": {"k": 1}},
    ),
    (
        "map values long -> int",
        rec(f("m", {"type": "map", "values": "long"})),
        rec(f("m", {"type": "map", "values": "int"})),
        {"m": {"k": 1}},
        False,
        None,
    ),
    (
        "array -> map",
        rec(f("a", {"type": "array", "items": "long"})),
        rec(f("a", {"type": "map", "values": "long"})),
        {"a": [1]},
        False,
        None,
    ),
]


@pytest.mark.parametrize(
    ("writer", "reader", "datum", "compatible", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_checker_verdict_matches_real_resolution(writer, reader, datum, compatible, expected):
    verdict = compat.can_read(reader, writer)
    assert bool(verdict) is compatible, verdict.problems
    if compatible:
        assert verdict.problems == ()
        assert _resolve(writer, reader, datum) == expected
    else:
        assert verdict.problems, "an incompatible verdict must say why"
        # The bytes really cannot be read: fastavro's resolution refuses them too.
        with pytest.raises(SchemaResolutionError):
            _resolve(writer, reader, datum)


def test_problem_messages_name_the_cause():
    no_default = compat.can_read(rec(f("a", "long"), f("b", "string")), rec(f("a", "long")))
    assert any("reader_field_missing_default_value" in p and "b" in p for p in no_default.problems)
    removed = compat.can_read(rec(f("c", enum("RED"))), rec(f("c", enum("RED", "GREEN"))))
    assert any("missing_enum_symbols" in p and "GREEN" in p for p in removed.problems)


def test_transitive_not_just_latest_pair():
    """v3 reads v2 but not v1: only a check against EVERY earlier version catches it."""
    v1 = rec(f("a", "long"))
    v2 = rec(f("a", "long"), f("b", "string", default=""))
    v3 = rec(f("a", "long"), f("b", "string"))  # default dropped
    assert compat.can_read(v3, v2)
    assert not compat.can_read(v3, v1)
    problems = compat.backward_transitive([v1, v2, v3])
    assert problems and all(p.startswith("v3 cannot read v1") for p in problems)
    assert compat.backward_transitive([v1, v2]) == []
    assert compat.backward_transitive([v1]) == []


def test_catalog_check_fails_on_an_incompatible_new_version(monkeypatch):
    """catalog_problems() walks the catalog: a bad v2 registered for a subject is reported."""
    v1 = catalog.raw_schema(catalog.LATEST["Burn"].schema_id)
    good_v2 = {**v1, "fields": [*v1["fields"], f("memo", "string", default="")]}
    bad_v2 = {**v1, "fields": [*v1["fields"], f("memo", "string")]}
    burn_v1 = catalog.LATEST["Burn"]
    burn_v2 = catalog.SchemaEntry(9001, "Burn", 2, "burn.v2.avsc")
    schemas = {burn_v1.schema_id: v1}
    monkeypatch.setattr(catalog, "ENTRIES", (burn_v1, burn_v2))
    monkeypatch.setattr(catalog, "LATEST", {"Burn": burn_v2})
    monkeypatch.setattr(catalog, "raw_schema", lambda schema_id: schemas[schema_id])

    schemas[9001] = good_v2
    assert compat.catalog_problems() == {}
    schemas[9001] = bad_v2
    problems = compat.catalog_problems()
    assert list(problems) == ["Burn"]
    assert "memo" in problems["Burn"][0] and "v2 (id 9001) cannot read v1 (id 6)" in problems["Burn"][0]


def test_avsc_text_is_accepted_too():
    text = json.dumps(rec(f("a", "int")))
    assert compat.can_read(json.dumps(rec(f("a", "long"))), text)


def test_schema_ids_are_contiguous_from_one():
    """A schema registry assigns ids in registration order: a gap in the catalog made `topics create` report
    drift for every later version (found by .ci/run in a fresh clone with a fresh registry)."""
    assert [e.schema_id for e in catalog.ENTRIES] == list(range(1, len(catalog.ENTRIES) + 1))
