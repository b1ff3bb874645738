"""Import custodian holding statements (MT535-shaped) and observed on-chain supply from CSV or JSON.

Formats (documented in docs/AUDITOR.md; samples in examples/):

Statements, one row per (statement, safekeeping account, ISIN), columns in any order, exactly these:

    statement_ref, statement_number, function (NEW|CANCEL), as_of (ISO-8601 with Z or an offset),
    completeness (COMPLETE|DELTA), safekeeping_account, isin, symbol, aggr, avai, navl

Supply observations:

    symbol, chain, block_number, supply [, observed_at (ISO-8601 with Z or an offset)]

Quantities (aggr, avai, navl, supply) are decimal strings of shares / tokens with at most 9 decimals
(``"12.000000001"``), converted exactly to nano-units (``12000000001``) -- never through a float. In
JSON a quantity is a string or an integer (whole units); a JSON number with a fraction or exponent is
refused. A JSON file is one array of objects with the same keys as the CSV columns.

Validation is all-or-nothing: every row is checked and every problem is reported with its file and
line number; a file with any bad row imports nothing. Good rows become HoldingStatement /
SupplyObservation records whose event ids derive from their content, so importing the same file twice
gives the same ids (the ledger counts the second copy as a duplicate and changes nothing):

    statement NEW     stmt-<statement_ref>-<isin>
    statement CANCEL  stmt-<statement_ref>-<isin>-cancel
    supply            supply-<symbol>-<chain>-<block_number>
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.limits import ID_MAX_CHARS, shown
from ledger.units import NANO
from schemas.codec import encode
from schemas.topics import SUBJECT_ROUTES
from services.archive import ArchiveRow, read_archive, write_archive
from services.atomic import atomic_path
from services.por import format_nano, parse_time
from services.strict_json import unique_keys

STATEMENT_COLUMNS = ("statement_ref", "statement_number", "function", "as_of", "completeness", "safekeeping_account",
                     "isin", "symbol", "aggr", "avai", "navl")
SUPPLY_COLUMNS = ("symbol", "chain", "block_number", "supply")
SUPPLY_OPTIONAL = ("observed_at",)
STATEMENTS = "statements"
SUPPLY = "supply"

LONG_MAX = 2**63 - 1  # Avro long
INT_MAX = 2**31 - 1  # Avro int
_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
_ISIN = re.compile(r"[A-Z]{2}[A-Z0-9]{9}[0-9]")
_TOKEN = re.compile(r"[^\s]+")


class QuantityError(ValueError):
    """A quantity that cannot be converted exactly to nano-units."""


def parse_quantity_nano(value: Any, what: str = "quantity") -> int:
    """Decimal string (or JSON integer) of whole units with at most 9 decimals -> nano-units, exactly.

    ``"12.000000001"`` -> 12000000001, ``"7"`` / ``7`` -> 7000000000. Refuses negatives, more than 9
    decimals, exponents, signs, separators, floats, booleans and anything that does not fit an Avro long.
    """
    if isinstance(value, bool) or value is None:
        raise QuantityError(f"{what} must be a decimal string, got {json.dumps(value)}")
    if isinstance(value, _JsonFloat):
        raise QuantityError(
            f"{what} is the JSON number {value.text}: write quantities with a fraction as strings (\"{value.text}\")"
        )
    if isinstance(value, int):
        if value < 0:
            raise QuantityError(f"{what} is negative ({value})")
        nano = value * NANO
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise QuantityError(f"{what} is empty")
        if text.startswith("-"):
            raise QuantityError(f"{what} is negative ({text})")
        m = _DECIMAL.fullmatch(text)
        if m is None:
            raise QuantityError(f"{what} {shown(text)} is not a plain decimal number (digits, optionally '.' and up to 9 decimals)")
        whole, frac = m.group(1), m.group(2) or ""
        if len(whole.lstrip("0")) > 20:  # beyond any Avro long in nano-units, and int() of it is slow or refused
            raise QuantityError(f"{what} of {len(whole):,} digits is too large (at most {LONG_MAX} nano-units)")
        if len(frac) > 9:
            raise QuantityError(f"{what} {shown(text)} has {len(frac)} decimals; at most 9 (nano-units) are allowed")
        nano = int(whole) * NANO + int(frac.ljust(9, "0") or "0")
    else:
        raise QuantityError(f"{what} must be a decimal string, got {type(value).__name__}")
    if nano > LONG_MAX:
        raise QuantityError(f"{what} {value} is too large (at most {LONG_MAX} nano-units)")
    return nano


class _JsonFloat:
    """A JSON number with a fraction or exponent, kept as its text so it can be named and refused."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


# --------------------------------------------------------------------------- parsed rows


@dataclass(frozen=True)
class RowError:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.message}"


@dataclass(frozen=True)
class StatementRow:
    """One validated MT535 line (quantities in nano-shares, times in microseconds)."""

    file: str
    line: int
    statement_ref: str
    statement_number: int
    function: str
    as_of_us: int
    completeness: str
    safekeeping_account: str
    isin: str
    symbol: str
    aggr_nano: int
    avai_nano: int
    navl_nano: int

    @property
    def event_id(self) -> str:
        base = f"stmt-{self.statement_ref}-{self.isin}"
        return base + "-cancel" if self.function == "CANCEL" else base

    @property
    def where(self) -> str:
        return f"{self.file} line {self.line}"

    def record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id, "occurred_at": self.as_of_us, "source": "custodian",
            "statement_ref": self.statement_ref, "statement_number": self.statement_number, "function": self.function,
            "as_of": self.as_of_us, "completeness": self.completeness, "safekeeping_account": self.safekeeping_account,
            "isin": self.isin, "symbol": self.symbol, "aggr_qty_nano": self.aggr_nano, "avai_qty_nano": self.avai_nano,
            "navl_qty_nano": self.navl_nano,
        }


@dataclass(frozen=True)
class SupplyRow:
    """One validated on-chain supply observation (nano-tokens)."""

    file: str
    line: int
    symbol: str
    chain: str
    block_number: int
    supply_nano: int
    observed_at_us: int

    @property
    def event_id(self) -> str:
        return f"supply-{self.symbol}-{self.chain}-{self.block_number}"

    @property
    def where(self) -> str:
        return f"{self.file} line {self.line}"

    def record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id, "occurred_at": self.observed_at_us, "source": "chain-indexer",
            "symbol": self.symbol, "chain": self.chain, "block_number": self.block_number,
            "supply_qty_nano": self.supply_nano,
        }


@dataclass
class ParsedFile:
    file: str
    kind: str | None
    statements: list[StatementRow] = field(default_factory=list)
    supplies: list[SupplyRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def rows(self) -> list[StatementRow | SupplyRow]:
        return [*self.statements, *self.supplies]


# --------------------------------------------------------------------------- field validation


def _text(raw: Any, name: str, problems: list[str], *, pattern: re.Pattern[str] = _TOKEN, hint: str = "") -> str:
    if not isinstance(raw, str):
        problems.append(f"{name} must be a string, got {_json_type(raw)}")
        return ""
    value = raw.strip()
    if not value:
        problems.append(f"{name} is empty")
    elif len(value) > ID_MAX_CHARS:  # the ledger would refuse it (ledger.limits); say so here, briefly
        problems.append(f"{name} of {len(value):,} characters is longer than {ID_MAX_CHARS}")
    elif not pattern.fullmatch(value):
        problems.append(f"{name} {shown(value)} is not valid{hint}")
    return value


def _integer(raw: Any, name: str, problems: list[str], low: int, high: int) -> int:
    if isinstance(raw, (bool, _JsonFloat)) or raw is None:
        problems.append(f"{name} must be an integer, got {shown(raw)}")
        return 0
    if isinstance(raw, str):
        text = raw.strip()
        if not re.fullmatch(r"-?[0-9]+", text):
            problems.append(f"{name} {shown(text)} is not an integer")
            return 0
        if len(text) > 20:  # beyond any 64-bit integer; int() of thousands of digits is slow or refused
            problems.append(f"{name} of {len(text):,} digits is out of range")
            return 0
        raw = int(text)
    if not isinstance(raw, int):
        problems.append(f"{name} must be an integer, got {_json_type(raw)}")
        return 0
    if not low <= raw <= high:
        problems.append(f"{name} {raw} is outside [{low}, {high}]")
    return raw


def _choice(raw: Any, name: str, problems: list[str], choices: Sequence[str]) -> str:
    value = raw.strip() if isinstance(raw, str) else raw
    if value not in choices:
        problems.append(f"{name} must be one of {'/'.join(choices)}, got {shown(value)}")
        return ""
    return value


def _time(raw: Any, name: str, problems: list[str]) -> int:
    if not isinstance(raw, str) or not raw.strip():
        problems.append(f"{name} must be an ISO-8601 time string, got {shown(raw)}")
        return 0
    text = raw.strip()
    if re.fullmatch(r"-?[0-9]+", text):
        problems.append(f"{name} {shown(text)} must be ISO-8601 (e.g. 2026-03-06T21:00:00Z), not a number")
        return 0
    try:
        return parse_time(text, naive_is_utc=False)
    except ValueError as exc:
        problems.append(f"{name}: {exc}")
        return 0


def _quantity(raw: Any, name: str, problems: list[str]) -> int:
    try:
        return parse_quantity_nano(raw, name)
    except QuantityError as exc:
        problems.append(str(exc))
        return 0


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, _JsonFloat):
        return f"number {v.text}"
    return {bool: "boolean", int: "number", str: "string", list: "array", dict: "object"}.get(type(v), type(v).__name__)


def _statement_row(file: str, line: int, raw: dict[str, Any], problems: list[str]) -> StatementRow:
    return StatementRow(
        file=file, line=line,
        statement_ref=_text(raw["statement_ref"], "statement_ref", problems),
        statement_number=_integer(raw["statement_number"], "statement_number", problems, 1, INT_MAX),
        function=_choice(raw["function"], "function", problems, ("NEW", "CANCEL")),
        as_of_us=_time(raw["as_of"], "as_of", problems),
        completeness=_choice(raw["completeness"], "completeness", problems, ("COMPLETE", "DELTA")),
        safekeeping_account=_text(raw["safekeeping_account"], "safekeeping_account", problems),
        isin=_text(raw["isin"], "isin", problems, pattern=_ISIN,
                   hint=" (12 characters: 2-letter country, 9 alphanumerics, 1 check digit)"),
        symbol=_text(raw["symbol"], "symbol", problems),
        aggr_nano=_quantity(raw["aggr"], "aggr", problems),
        avai_nano=_quantity(raw["avai"], "avai", problems),
        navl_nano=_quantity(raw["navl"], "navl", problems),
    )


def _supply_row(file: str, line: int, raw: dict[str, Any], problems: list[str], observed_at_us: int | None) -> SupplyRow:
    if raw.get("observed_at") not in (None, ""):
        observed = _time(raw["observed_at"], "observed_at", problems)
    elif observed_at_us is not None:
        observed = observed_at_us
    else:
        problems.append("observed_at is missing: add the column or pass --observed-at")
        observed = 0
    return SupplyRow(
        file=file, line=line,
        symbol=_text(raw["symbol"], "symbol", problems),
        chain=_text(raw["chain"], "chain", problems),
        block_number=_integer(raw["block_number"], "block_number", problems, 0, LONG_MAX),
        supply_nano=_quantity(raw["supply"], "supply", problems),
        observed_at_us=observed,
    )


def _kind_of(keys: Iterable[str]) -> str | None:
    keys = set(keys)
    if "statement_ref" in keys:
        return STATEMENTS
    if "block_number" in keys:
        return SUPPLY
    return None


def _columns_problem(kind: str, keys: Iterable[str]) -> str | None:
    keys = list(keys)
    required = STATEMENT_COLUMNS if kind == STATEMENTS else SUPPLY_COLUMNS
    allowed = set(required) | (set(SUPPLY_OPTIONAL) if kind == SUPPLY else set())
    missing = [c for c in required if c not in keys]
    unknown = [c for c in keys if c not in allowed]
    dups = sorted({c for c in keys if keys.count(c) > 1})
    parts = []
    if missing:
        parts.append(f"missing column(s) {', '.join(missing)}")
    if unknown:
        parts.append(f"unknown column(s) {', '.join(unknown)}")
    if dups:
        parts.append(f"repeated column(s) {', '.join(dups)}")
    return "; ".join(parts) or None


def _unrecognised(keys: Iterable[str]) -> str:
    return (f"cannot tell the file kind from the columns {', '.join(keys) or '(none)'}: a statement file has "
            f"{', '.join(STATEMENT_COLUMNS)}; a supply file has {', '.join(SUPPLY_COLUMNS)} [, observed_at]")


class _Collector:
    def __init__(self, file: str, observed_at_us: int | None) -> None:
        self.parsed = ParsedFile(file, None)
        self.observed_at_us = observed_at_us

    def add(self, line: int, raw: dict[str, Any]) -> None:
        p = self.parsed
        problems: list[str] = []
        if p.kind == STATEMENTS:
            row: StatementRow | SupplyRow = _statement_row(p.file, line, raw, problems)
        else:
            row = _supply_row(p.file, line, raw, problems, self.observed_at_us)
        if problems:
            p.errors.extend(RowError(p.file, line, m) for m in problems)
        elif isinstance(row, StatementRow):
            p.statements.append(row)
        else:
            p.supplies.append(row)


def parse_csv_text(text: str, file: str, observed_at_us: int | None = None) -> ParsedFile:
    col = _Collector(file, observed_at_us)
    p = col.parsed
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    try:
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                p.kind = _kind_of(header)
                if p.kind is None:
                    p.errors.append(RowError(file, line, _unrecognised(header)))
                    return p
                problem = _columns_problem(p.kind, header)
                if problem:
                    p.errors.append(RowError(file, line, f"header: {problem}"))
                    return p
                continue
            if len(fields) != len(header):
                p.errors.append(RowError(file, line, f"{len(fields)} fields, the header has {len(header)}"))
                continue
            col.add(line, dict(zip(header, fields, strict=True)))
    except csv.Error as exc:
        p.errors.append(RowError(file, reader.line_num, f"CSV syntax: {exc}"))
    if header is None:
        p.errors.append(RowError(file, 1, "empty file: expected a header row and at least one data row"))
    elif not p.rows and not p.errors:
        p.errors.append(RowError(file, reader.line_num or 1, "no data rows after the header"))
    return p


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def parse_json_text(text: str, file: str, observed_at_us: int | None = None) -> ParsedFile:
    """A JSON array of row objects; each object's line number is where it starts."""
    col = _Collector(file, observed_at_us)
    p = col.parsed

    def bad_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a valid quantity")

    decoder = json.JSONDecoder(parse_float=_JsonFloat, parse_constant=bad_constant, object_pairs_hook=unique_keys)
    ws = re.compile(r"[ \t\n\r]*")
    pos = ws.match(text, 0).end()
    if pos >= len(text) or text[pos] != "[":
        p.errors.append(RowError(file, _line_of(text, pos), "a JSON file must be one array of row objects: [ {...}, ... ]"))
        return p
    pos = ws.match(text, pos + 1).end()
    items: list[tuple[int, Any]] = []
    if pos < len(text) and text[pos] == "]":
        end = pos + 1
    else:
        while True:
            try:
                value, end = decoder.raw_decode(text, pos)
            except ValueError as exc:
                p.errors.append(RowError(file, _line_of(text, getattr(exc, "pos", pos) or pos), f"JSON syntax: {shown(str(exc), 200)}"))
                return p
            except RecursionError:
                p.errors.append(RowError(file, _line_of(text, pos), "JSON nested too deeply"))
                return p
            items.append((_line_of(text, pos), value))
            pos = ws.match(text, end).end()
            if pos < len(text) and text[pos] == ",":
                pos = ws.match(text, pos + 1).end()
                continue
            if pos < len(text) and text[pos] == "]":
                end = pos + 1
                break
            p.errors.append(RowError(file, _line_of(text, pos), "JSON syntax: expected ',' or ']' after an array element"))
            return p
    if ws.match(text, end).end() != len(text):
        p.errors.append(RowError(file, _line_of(text, end), "JSON syntax: trailing content after the array"))
        return p
    if not items:
        p.errors.append(RowError(file, 1, "the array is empty: nothing to import"))
        return p
    for line, value in items:
        if not isinstance(value, dict):
            p.errors.append(RowError(file, line, f"each array element must be an object, got {_json_type(value)}"))
            continue
        if p.kind is None:
            p.kind = _kind_of(value)
            if p.kind is None:
                p.errors.append(RowError(file, line, _unrecognised(value)))
                return p
        problem = _columns_problem(p.kind, value)
        if problem:
            p.errors.append(RowError(file, line, problem))
            continue
        col.add(line, value)
    return p


def parse_file(path: Path, observed_at_us: int | None = None) -> ParsedFile:
    """Parse and validate one .csv or .json file; never raises on content (errors are in the result)."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return ParsedFile(name, None, errors=[RowError(name, 0, f"cannot read: {exc}")])
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return parse_csv_text(text, name, observed_at_us)
    if suffix == ".json":
        return parse_json_text(text, name, observed_at_us)
    return ParsedFile(name, None, errors=[RowError(name, 0, "unknown file type: use a .csv or .json file")])


def import_problems(files: Sequence[ParsedFile]) -> list[RowError]:
    """Checks across rows that make a file unfit to import: AVAI + NAVL != AGGR (the ledger would
    reject the statement) and two rows with the same event id (same statement_ref and ISIN, or the
    same symbol, chain and block)."""
    problems: list[RowError] = []
    seen: dict[str, StatementRow | SupplyRow] = {}
    for pf in files:
        for row in pf.rows:
            if isinstance(row, StatementRow) and row.avai_nano + row.navl_nano != row.aggr_nano:
                problems.append(RowError(row.file, row.line, (
                    f"AVAI {_fmt(row.avai_nano)} + NAVL {_fmt(row.navl_nano)} = {_fmt(row.avai_nano + row.navl_nano)} "
                    f"!= AGGR {_fmt(row.aggr_nano)} (an availability break: the ledger rejects such a statement)")))
            first = seen.get(row.event_id)
            if first is not None:
                problems.append(RowError(row.file, row.line, f"duplicate of {first.where} (same event id {row.event_id})"))
            else:
                seen[row.event_id] = row
    return problems


def _fmt(q: int) -> str:
    return format_nano(q)


# --------------------------------------------------------------------------- output


def archive_rows(rows: Iterable[StatementRow | SupplyRow]) -> list[ArchiveRow]:
    """Encode rows as (topic, key, Confluent-framed Avro value), routed by schemas/topics.py."""
    out = []
    for row in rows:
        subject = "HoldingStatement" if isinstance(row, StatementRow) else "SupplyObservation"
        record = row.record()
        topic, key_field = SUBJECT_ROUTES[subject]
        out.append((topic, str(record[key_field]), encode(subject, record)))
    return out


def existing_event_ids(archive: Path, wanted: set[str]) -> set[str]:
    """Which of ``wanted`` event ids the archive already carries (custody and mint topics only)."""
    from schemas.codec import DecodeError, decode

    found: set[str] = set()
    if not archive.exists() or not wanted:
        return found
    topics = {SUBJECT_ROUTES["HoldingStatement"][0], SUBJECT_ROUTES["SupplyObservation"][0]}
    for topic, _key, value in read_archive(archive):
        if topic not in topics:
            continue
        try:
            _subject, record = decode(value)
        except DecodeError:
            continue
        if record.get("event_id") in wanted:
            found.add(record["event_id"])
    return found


def append_to_archive(archive: Path, new_rows: Sequence[ArchiveRow], out: Path | None = None) -> int:
    """Write ``out`` (default: ``archive`` itself, replaced atomically) = the archive's rows + new_rows.

    Returns the number of rows written. A missing ``archive`` gives an archive of the new rows only.
    """
    target = out or archive
    digest = hashlib.sha256()
    for _topic, _key, value in new_rows:
        digest.update(value)
    label = f"import:{archive.name}:{digest.hexdigest()[:32]}"

    def rows() -> Iterator[ArchiveRow]:
        if archive.exists():
            yield from read_archive(archive)
        yield from new_rows

    with atomic_path(target) as tmp:  # fsynced and renamed only when complete
        n = write_archive(tmp, rows(), seed_label=label)
    return n
