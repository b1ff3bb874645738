"""schemas/models.py must mirror the newest .avsc of every subject, field by field.

Both sides are reduced to the same structural description (walking the parsed .avsc JSON on one side and
the Pydantic annotations on the other) and compared: field names, order, optionality, defaults, mapped
types (int vs long by their bounds), nested records and enum symbol sets. Then every model round-trips
through the wire codec.
"""

from __future__ import annotations

import types
import typing
from enum import Enum
from typing import Any

import pytest
from annotated_types import Ge, Le
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Strict, ValidationError
from pydantic_core import PydanticUndefined

from schemas import catalog, codec
from schemas.models import INT_MAX, INT_MIN, LONG_MAX, LONG_MIN, MODELS, from_record, to_record

MISSING = "<no default>"
LATEST = sorted(catalog.LATEST.values(), key=lambda e: e.schema_id)
LATEST_IDS = [e.subject for e in LATEST]
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


# ------------------------------------------------------------------------------------- avro side


def _avro_type(node: Any, names: dict[str, Any], namespace: str | None) -> tuple:
    """Structural description of an Avro type from the .avsc JSON (named types resolved)."""
    if isinstance(node, str):
        if node in PRIMITIVES:
            return (node,)
        full = node if "." in node else f"{namespace}.{node}"
        return names[full] if full in names else names[node]
    if isinstance(node, list):
        branches = [_avro_type(b, names, namespace) for b in node]
        if len(branches) == 2 and ("null",) in branches:
            return ("nullable", next(b for b in branches if b != ("null",)))
        return ("union", tuple(branches))
    kind = node["type"]
    if kind in PRIMITIVES:
        return (kind,)  # logicalType (timestamp-micros) keeps the underlying type: an int
    if kind == "array":
        return ("array", _avro_type(node["items"], names, namespace))
    if kind == "map":
        return ("map", _avro_type(node["values"], names, namespace))
    ns = node.get("namespace", namespace)
    if kind == "enum":
        desc = ("enum", node["name"], tuple(node["symbols"]))
        names[f"{ns}.{node['name']}"] = desc
        return desc
    if kind == "record":
        fields = tuple(
            (f["name"], "default" in f, f.get("default", MISSING), _avro_type(f["type"], names, ns))
            for f in node["fields"]
        )
        desc = ("record", node["name"], fields)
        names[f"{ns}.{node['name']}"] = desc
        return desc
    raise AssertionError(f"unsupported Avro type {node!r}")


def avro_description(schema_id: int) -> tuple:
    raw = catalog.raw_schema(schema_id)
    return _avro_type(raw, {}, raw.get("namespace"))


# ----------------------------------------------------------------------------------- model side


def _int_kind(metadata: list[Any], where: str) -> tuple:
    assert any(isinstance(m, Strict) and m.strict for m in metadata), f"{where}: int is not strict"
    ge = next((m.ge for m in metadata if isinstance(m, Ge)), None)
    le = next((m.le for m in metadata if isinstance(m, Le)), None)
    if (ge, le) == (INT_MIN, INT_MAX):
        return ("int",)
    if (ge, le) == (LONG_MIN, LONG_MAX):
        return ("long",)
    raise AssertionError(f"{where}: int bounds {ge}..{le} are neither Avro int nor long")


def _model_type(annotation: Any, metadata: list[Any], where: str) -> tuple:
    """Structural description of a Pydantic annotation, in the same vocabulary as _avro_type."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return _model_type(base, [*metadata, *extra], where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        non_null = [a for a in args if a is not type(None)]
        if len(args) == 2 and len(non_null) == 1:
            return ("nullable", _model_type(non_null[0], metadata, where))
        return ("union", tuple(_model_type(a, [], where) for a in args))
    if origin is list:
        (item,) = typing.get_args(annotation)
        return ("array", _model_type(item, [], f"{where}[]"))
    if origin is dict:
        key, value = typing.get_args(annotation)
        assert _model_type(key, [], f"{where} key") == ("string",), f"{where}: map keys must be strict str"
        return ("map", _model_type(value, [], f"{where}{{}}"))
    if annotation is int:
        return _int_kind(metadata, where)
    if annotation in (str, bytes):
        assert any(isinstance(m, Strict) and m.strict for m in metadata), f"{where}: {annotation} not strict"
        return ("string",) if annotation is str else ("bytes",)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        values = tuple(m.value for m in annotation)
        assert all(isinstance(v, str) for v in values), f"{where}: enum values must be the symbol strings"
        return ("enum", annotation.__name__, values)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_description(annotation)
    raise AssertionError(f"{where}: unsupported annotation {annotation!r}")


def model_description(model: type[BaseModel]) -> tuple:
    fields = []
    for name, info in model.model_fields.items():
        default = MISSING if info.default is PydanticUndefined else info.default
        fields.append(
            (
                name,
                not info.is_required(),
                default,
                _model_type(info.annotation, list(info.metadata), f"{model.__name__}.{name}"),
            )
        )
    return ("record", model.__name__, tuple(fields))


# ------------------------------------------------------------------------------------------ tests


def test_every_subject_has_exactly_one_model():
    assert set(MODELS) == {e.subject for e in catalog.ENTRIES}
    for subject, model in MODELS.items():
        assert model.__name__ == subject


@pytest.mark.parametrize("entry", LATEST, ids=LATEST_IDS)
def test_model_fields_match_newest_schema(entry):
    expected = avro_description(entry.schema_id)
    actual = model_description(MODELS[entry.subject])
    # Compare field by field first for a readable failure, then the whole tree (nested records, enums).
    exp_fields, act_fields = expected[2], actual[2]
    assert [f[0] for f in act_fields] == [f[0] for f in exp_fields], "field names or order differ"
    for exp, act in zip(exp_fields, act_fields, strict=True):
        assert act == exp, f"{entry.subject}.{exp[0]}: model {act} != schema {exp}"
    assert actual == expected


@pytest.mark.parametrize("entry", LATEST, ids=LATEST_IDS)
def test_timestamps_are_documented_as_microseconds(entry):
    model = MODELS[entry.subject]
    for field in catalog.raw_schema(entry.schema_id)["fields"]:
        if isinstance(field["type"], dict) and field["type"].get("logicalType") == "timestamp-micros":
            description = model.model_fields[field["name"]].description or ""
            assert "microseconds" in description, f"{entry.subject}.{field['name']} must say microseconds"


def test_the_description_catches_drift():
    """The comparison is not vacuous: a renamed, retyped or reordered field is noticed."""

    def with_fields(fields):
        return _avro_type(
            {"type": "record", "name": "Burn", "namespace": "stockledger.v1", "fields": fields}, {}, None
        )

    good = catalog.raw_schema(catalog.LATEST["Burn"].schema_id)["fields"]
    model = model_description(MODELS["Burn"])
    assert with_fields(good) == model
    int_instead_of_long = [*good[:-1], {**good[-1], "type": "int"}]
    assert with_fields(int_instead_of_long) != model
    reordered = [good[1], good[0], *good[2:]]
    assert with_fields(reordered) != model
    with_default = [*good[:-1], {**good[-1], "default": 0}]
    assert with_fields(with_default) != model

    movement = catalog.raw_schema(catalog.LATEST["CustodyMovement"].schema_id)
    model = model_description(MODELS["CustodyMovement"])
    assert _avro_type(movement, {}, None) == model
    fields = [dict(f) for f in movement["fields"]]
    fields[-2] = {
        **fields[-2],
        "type": {**fields[-2]["type"], "symbols": ["IN_TRANSIT", "SETTLED", "FAILED"]},
    }
    assert _avro_type({**movement, "fields": fields}, {}, None) != model

    executed = catalog.raw_schema(catalog.LATEST["LiquidationExecuted"].schema_id)
    model = model_description(MODELS["LiquidationExecuted"])
    fields = [dict(f) for f in executed["fields"]]
    closed = fields[5]["type"]["items"]
    nested = {**closed, "fields": [*closed["fields"][:-1], {"name": "value_micro_usd", "type": "int"}]}
    fields[5] = {**fields[5], "type": {"type": "array", "items": nested}}
    assert _avro_type({**executed, "fields": fields}, {}, None) != model


# ------------------------------------------------------------------------------- valid instances


def _minimal(t: tuple) -> Any:
    """A small valid value of a described type."""
    kind = t[0]
    return {
        "string": lambda: "x",
        "bytes": lambda: b"\x00\x01",
        "int": lambda: 7,
        "long": lambda: 7,
        "enum": lambda: t[2][0],
        "nullable": lambda: None,
        "array": lambda: [_minimal(t[1])],
        "map": lambda: {"k": _minimal(t[1])},
        "record": lambda: {name: _minimal(ft) for name, _, _, ft in t[2]},
    }[kind]()


def _strategy(t: tuple) -> st.SearchStrategy:
    """Hypothesis strategy of valid values of a described type (full Avro ranges)."""
    kind = t[0]
    if kind == "string":
        return st.text(max_size=12)
    if kind == "bytes":
        return st.binary(max_size=12)
    if kind == "int":
        return st.integers(INT_MIN, INT_MAX)
    if kind == "long":
        return st.integers(LONG_MIN, LONG_MAX)
    if kind == "enum":
        return st.sampled_from(t[2])
    if kind == "nullable":
        return st.none() | _strategy(t[1])
    if kind == "array":
        return st.lists(_strategy(t[1]), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), _strategy(t[1]), max_size=3)
    if kind == "record":
        return st.fixed_dictionaries({name: _strategy(ft) for name, _, _, ft in t[2]})
    raise AssertionError(t)


def _int_fields(t: tuple) -> list[tuple[str, str]]:
    return [(name, ft[0]) for name, _, _, ft in t[2] if ft[0] in ("int", "long")]


@pytest.mark.parametrize("entry", LATEST, ids=LATEST_IDS)
def test_ints_are_strict(entry):
    """No float, bool, numeric string or out-of-range value gets into an int field."""
    desc = avro_description(entry.schema_id)
    model = MODELS[entry.subject]
    good = _minimal(desc)
    model.model_validate(good)
    for name, kind in _int_fields(desc):
        too_big = INT_MAX + 1 if kind == "int" else LONG_MAX + 1
        for bad in (7.0, 7.5, True, "7", too_big):
            with pytest.raises(ValidationError):
                model.model_validate({**good, name: bad})


def test_nested_and_map_ints_are_strict():
    desc = avro_description(catalog.LATEST["LiquidationExecuted"].schema_id)
    good = _minimal(desc)
    bad = {**good, "closed_positions": [{**good["closed_positions"][0], "mark_micro_usd": 1.5}]}
    with pytest.raises(ValidationError):
        MODELS["LiquidationExecuted"].model_validate(bad)
    desc = avro_description(catalog.LATEST["RequestOutcome"].schema_id)
    good = _minimal(desc)
    with pytest.raises(ValidationError):
        MODELS["RequestOutcome"].model_validate({**good, "inputs": {"price_micro_usd": 1.0}})


def test_unknown_fields_and_symbols_are_rejected():
    desc = avro_description(catalog.LATEST["PriceMark"].schema_id)
    good = _minimal(desc)
    with pytest.raises(ValidationError):
        MODELS["PriceMark"].model_validate({**good, "extra": 1})
    with pytest.raises(ValidationError):
        MODELS["PriceMark"].model_validate({**good, "market_status": "SIDEWAYS"})


def test_to_record_gives_plain_symbols():
    desc = avro_description(catalog.LATEST["LiquidationExecuted"].schema_id)
    record = to_record(MODELS["LiquidationExecuted"].model_validate(_minimal(desc)))
    assert record == _minimal(desc)
    desc = avro_description(catalog.LATEST["CustodyMovement"].schema_id)
    record = to_record(MODELS["CustodyMovement"].model_validate(_minimal(desc)))
    assert type(record["direction"]) is str and type(record["status"]) is str
    assert list(record) == [f[0] for f in desc[2]]


@pytest.mark.parametrize("entry", LATEST, ids=LATEST_IDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_model_round_trips_through_codec(entry, data):
    record = data.draw(_strategy(avro_description(entry.schema_id)))
    model = MODELS[entry.subject].model_validate(record)
    wire = codec.encode(entry.subject, to_record(model))
    subject, decoded = codec.decode(wire)
    assert subject == entry.subject
    assert from_record(subject, decoded) == model
    assert decoded == to_record(model)
