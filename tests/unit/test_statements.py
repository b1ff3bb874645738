"""Statement and supply import (services/statements.py, `recon import`): exact decimals, all-or-nothing
validation with line numbers, archive output that the replay folds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from ledger_builders import T0, custody_movement, stock_listed
from typer.testing import CliRunner

from ledger.state_hash import state_hash
from schemas.codec import decode, encode
from schemas.topics import SUBJECT_ROUTES
from services import statements
from services.archive import read_archive, write_archive
from services.cli_recon import recon_app
from services.por import parse_time
from services.replay import replay
from services.statements import QuantityError, parse_quantity_nano

NANO = 1_000_000_000
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
AAPL_ISIN, TSLA_ISIN = "US0378331005", "US88160R1014"
HEADER = "statement_ref,statement_number,function,as_of,completeness,safekeeping_account,isin,symbol,aggr,avai,navl\n"


# --------------------------------------------------------------------------- exact quantities


@pytest.mark.parametrize(("text", "nano"), [
    ("12.000000001", 12_000_000_001),
    ("0.5", 500_000_000),
    ("7", 7 * NANO),
    ("0", 0),
    ("0.000000001", 1),
    (" 3.25 ", 3_250_000_000),
    ("9223372036.854775807", 2**63 - 1),  # the largest Avro long
    ("123456789.123456789", 123_456_789_123_456_789),
    (7, 7 * NANO),
])
def test_quantities_convert_exactly(text, nano):
    assert parse_quantity_nano(text) == nano


@pytest.mark.parametrize(("value", "reason"), [
    ("12.0000000001", "has 10 decimals; at most 9"),
    ("-1", "negative"),
    (-1, "negative"),
    ("1e3", "not a plain decimal"),
    ("1,000", "not a plain decimal"),
    ("+1", "not a plain decimal"),
    (".5", "not a plain decimal"),
    ("1.", "not a plain decimal"),
    ("", "empty"),
    (True, "must be a decimal string"),
    (None, "must be a decimal string"),
    ("9223372036.854775808", "too large"),
])
def test_bad_quantities_are_refused(value, reason):
    with pytest.raises(QuantityError, match=reason):
        parse_quantity_nano(value, "aggr")


# --------------------------------------------------------------------------- good files


def test_good_csv_rows(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text(HEADER
                 + "REF-1,7,NEW,2026-03-10T14:00:00Z,COMPLETE,SAFE-1,US0378331005,AAPL,12.000000001,12,0.000000001\n"
                 + "\n"  # blank lines are skipped, line numbers still count them
                 + "REF-1,7,CANCEL,2026-03-10T15:00:00+01:00,DELTA,SAFE-1,US88160R1014,TSLA,0,0,0\n")
    p = statements.parse_file(f)
    assert p.errors == [] and p.kind == statements.STATEMENTS
    a, b = p.statements
    assert (a.line, b.line) == (2, 4)
    assert a.aggr_nano == 12_000_000_001 and a.avai_nano == 12 * NANO and a.navl_nano == 1
    assert a.as_of_us == parse_time("2026-03-10T14:00:00Z")
    assert b.as_of_us == parse_time("2026-03-10T14:00:00Z")  # +01:00 taken into account
    assert a.event_id == "stmt-REF-1-US0378331005" and b.event_id == "stmt-REF-1-US88160R1014-cancel"
    rec = a.record()
    assert rec["occurred_at"] == rec["as_of"] == a.as_of_us and rec["source"] == "custodian"
    assert statements.import_problems([p]) == []


def test_good_json_rows_with_line_numbers(tmp_path):
    f = tmp_path / "s.json"
    rows = [
        {"statement_ref": "J-1", "statement_number": 3, "function": "NEW", "as_of": "2026-03-10T14:00:00Z",
         "completeness": "COMPLETE", "safekeeping_account": "SAFE-1", "isin": AAPL_ISIN, "symbol": "AAPL",
         "aggr": "10.5", "avai": 10, "navl": "0.5"},
        {"statement_ref": "J-1", "statement_number": "3", "function": "NEW", "as_of": "2026-03-10T14:00:00Z",
         "completeness": "COMPLETE", "safekeeping_account": "SAFE-1", "isin": TSLA_ISIN, "symbol": "TSLA",
         "aggr": "1", "avai": "1", "navl": "0"},
    ]
    f.write_text(json.dumps(rows, indent=2))
    p = statements.parse_file(f)
    assert p.errors == []
    assert [r.line for r in p.statements] == [2, 15]
    assert p.statements[0].aggr_nano == 10_500_000_000 and p.statements[0].avai_nano == 10 * NANO
    assert p.statements[1].statement_number == 3


def test_shipped_examples_are_valid():
    parsed = [statements.parse_file(EXAMPLES / name) for name in ("statement.csv", "statement.json", "supply.csv")]
    assert [e for p in parsed for e in p.errors] == []
    assert statements.import_problems(parsed) == []
    assert [p.kind for p in parsed] == [statements.STATEMENTS, statements.STATEMENTS, statements.SUPPLY]
    assert parsed[1].statements[0].navl_nano == 20 * NANO  # a JSON integer is whole shares
    breaks = statements.parse_file(EXAMPLES / "statement_breaks.csv")
    assert breaks.errors == []  # well-formed; its problems are reconciliation breaks
    assert statements.import_problems([breaks])  # ...which the import refuses


# --------------------------------------------------------------------------- bad files


def test_every_bad_row_is_reported_with_its_line(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text(HEADER
                 + "OK-1,1,NEW,2026-03-10T14:00:00Z,COMPLETE,SAFE-1,US0378331005,AAPL,1,1,0\n"        # line 2 good
                 + "B-1,1,NEW,2026-03-10T14:00:00Z,COMPLETE,SAFE-1,US0378331005,AAPL,1.0000000001,1,0\n"  # 3
                 + "B-2,1,NEW,2026-03-10T14:00:00Z,COMPLETE,SAFE-1,US0378331005,AAPL,-5,0,0\n"          # 4
                 + "B-3,1,OPEN,2026-03-10T14:00:00,COMPLETE,SAFE-1,XX1,AAPL,1,1,0\n"                    # 5
                 + "B-4,x,NEW,2026-03-10T14:00:00Z,PARTIAL,,US0378331005,AAPL,1,1,0\n"                  # 6
                 + "B-5,1,NEW,2026-03-10T14:00:00Z,COMPLETE,SAFE-1\n"                                    # 7
                 + "B-6,1,NEW,2026-03-10T14:00:00Z,COMPLETE,SAFE-1,US0378331005,AAPL,5,4,0\n"           # 8 AVAI+NAVL
                 + "OK-1,2,NEW,2026-03-10T14:00:00Z,COMPLETE,SAFE-2,US0378331005,AAPL,1,1,0\n")         # 9 duplicate id
    p = statements.parse_file(f)
    by_line: dict[int, list[str]] = {}
    for e in p.errors + statements.import_problems([p]):
        by_line.setdefault(e.line, []).append(e.message)
    assert sorted(by_line) == [3, 4, 5, 6, 7, 8, 9]
    assert "has 10 decimals" in by_line[3][0]
    assert "negative" in by_line[4][0]
    assert any("function must be one of NEW/CANCEL" in m for m in by_line[5])
    assert any("no time zone" in m for m in by_line[5])
    assert any("isin 'XX1' is not valid" in m for m in by_line[5])
    assert any("statement_number 'x' is not an integer" in m for m in by_line[6])
    assert any("completeness" in m for m in by_line[6])
    assert any("safekeeping_account is empty" in m for m in by_line[6])
    assert "6 fields, the header has 11" in by_line[7][0]
    assert "!= AGGR 5" in by_line[8][0]
    assert "duplicate of" in by_line[9][0] and "line 2" in by_line[9][0]


def test_json_floats_and_shape_errors(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('[\n {"statement_ref": "F", "statement_number": 1, "function": "NEW", "as_of": "2026-03-10T14:00:00Z",\n'
                 '  "completeness": "COMPLETE", "safekeeping_account": "S", "isin": "US0378331005", "symbol": "AAPL",\n'
                 '  "aggr": 12.5, "avai": "12.5", "navl": "0"},\n'
                 ' {"statement_ref": "G", "aggr": "1"},\n'
                 ' 42\n]\n')
    p = statements.parse_file(f)
    msgs = {e.line: e.message for e in p.errors}
    assert "JSON number 12.5" in msgs[2] and 'as strings ("12.5")' in msgs[2]
    assert "missing column(s)" in msgs[5]
    assert "must be an object" in msgs[6]
    syntax = tmp_path / "syntax.json"
    syntax.write_text('[\n {"a": 1},\n {"b": \n]')
    (err,) = statements.parse_file(syntax).errors
    assert "JSON syntax" in err.message and err.line == 4


def test_header_problems(tmp_path):
    f = tmp_path / "h.csv"
    f.write_text(HEADER.replace("navl", "nav") + "x\n")
    (err,) = statements.parse_file(f).errors
    assert err.line == 1 and "missing column(s) navl" in err.message and "unknown column(s) nav" in err.message
    g = tmp_path / "g.csv"
    g.write_text("a,b\n1,2\n")
    assert "cannot tell the file kind" in statements.parse_file(g).errors[0].message
    e = tmp_path / "e.csv"
    e.write_text("")
    assert "empty file" in statements.parse_file(e).errors[0].message


def test_supply_rows_and_observed_at(tmp_path):
    f = tmp_path / "sup.csv"
    f.write_text("symbol,chain,block_number,supply\nAAPL,ethereum,19000000,100.000000001\n")
    p = statements.parse_file(f)
    assert "observed_at is missing" in p.errors[0].message and p.errors[0].line == 2
    p = statements.parse_file(f, observed_at_us=T0)
    (row,) = p.supplies
    assert (row.supply_nano, row.block_number, row.observed_at_us) == (100 * NANO + 1, 19_000_000, T0)
    assert row.event_id == "supply-AAPL-ethereum-19000000"


# --------------------------------------------------------------------------- the import command


def base_archive(path: Path) -> Path:
    rows = []
    for subject, record in [("StockListed", stock_listed("AAPL", isin=AAPL_ISIN, at=T0)),
                            ("StockListed", stock_listed("TSLA", isin=TSLA_ISIN, at=T0)),
                            ("CustodyMovement", custody_movement("AAPL", 12 * NANO, isin=AAPL_ISIN, at=T0))]:
        topic, key_field = SUBJECT_ROUTES[subject]
        rows.append((topic, str(record[key_field]), encode(subject, record)))
    write_archive(path, rows, seed_label="base")
    return path


def test_import_to_archive_appends_and_the_replay_applies(tmp_path):
    archive = base_archive(tmp_path / "a.avro")
    old_rows = list(read_archive(archive))
    stmt = tmp_path / "s.csv"
    stmt.write_text(HEADER + "R-1,1,NEW,2026-03-10T14:00:00Z,COMPLETE,SAFE-1,US0378331005,AAPL,12.000000001,12,0.000000001\n")
    sup = tmp_path / "sup.csv"
    sup.write_text("symbol,chain,block_number,supply,observed_at\nAAPL,ethereum,5,0,2026-03-10T14:00:00Z\n")
    res = CliRunner().invoke(recon_app, ["import", str(stmt), str(sup), "--to-archive", str(archive)])
    assert res.exit_code == 0, res.output
    rows = list(read_archive(archive))
    assert rows[: len(old_rows)] == old_rows and len(rows) == len(old_rows) + 2
    subject, record = decode(rows[-2][2])
    assert subject == "HoldingStatement" and record["event_id"] == "stmt-R-1-US0378331005"
    assert record["aggr_qty_nano"] == 12_000_000_001 and rows[-2][:2] == ("custody.events", "AAPL")
    assert decode(rows[-1][2])[0] == "SupplyObservation" and rows[-1][:2] == ("mint.events", "AAPL")
    result = replay(read_archive(archive))
    assert sum(result.rejected.values()) == 0
    st = result.state.reserves["AAPL"].statements["SAFE-1"]
    assert (st.statement_ref, st.aggr_qty_nano, st.navl_qty_nano) == ("R-1", 12_000_000_001, 1)
    assert result.state.reserves["AAPL"].observed_block == 5

    # The same file again: same event ids, so the fold counts duplicates and reaches the same state.
    before = state_hash(result.state)
    res = CliRunner().invoke(recon_app, ["import", str(stmt), "--to-archive", str(archive)])
    assert res.exit_code == 0 and "already in" in res.output
    again = replay(read_archive(archive))
    assert state_hash(again.state) == before and sum(again.duplicates.values()) == 1


def test_bad_file_imports_nothing(tmp_path):
    archive = base_archive(tmp_path / "a.avro")
    before = archive.read_bytes()
    good = tmp_path / "good.csv"
    good.write_text(HEADER + "R-1,1,NEW,2026-03-10T14:00:00Z,COMPLETE,SAFE-1,US0378331005,AAPL,1,1,0\n")
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "R-2,1,NEW,2026-03-10T14:00:00Z,COMPLETE,SAFE-1,US88160R1014,TSLA,1,1,0\n"
                   + "R-3,1,NEW,2026-03-10T14:00:00Z,COMPLETE,SAFE-1,US88160R1014,TSLA,1.0000000001,1,0\n"
                   + "R-4,1,NEW,2026-03-10T14:00:00Z,COMPLETE,SAFE-1,US88160R1014,TSLA,2,1,0\n")
    res = CliRunner().invoke(recon_app, ["import", str(good), str(bad), "--to-archive", str(archive)])
    assert res.exit_code == 1
    assert "nothing was imported" in res.output
    assert "has 10 decimals" in res.output and "!= AGGR 2" in res.output
    assert "| 3 " in res.output.replace("│", "|") and "| 4 " in res.output.replace("│", "|")
    assert archive.read_bytes() == before
    new = tmp_path / "new.avro"
    res = CliRunner().invoke(recon_app, ["import", str(bad), "--to-archive", str(archive), "--out", str(new)])
    assert res.exit_code == 1 and not new.exists()


def test_import_examples_into_a_copy_leaves_the_original(tmp_path):
    archive = base_archive(tmp_path / "a.avro")
    before = archive.read_bytes()
    out = tmp_path / "b.avro"
    files = [str(EXAMPLES / n) for n in ("statement.csv", "statement.json", "supply.csv")]
    res = CliRunner().invoke(recon_app, ["import", *files, "--to-archive", str(archive), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert archive.read_bytes() == before
    assert len(list(read_archive(out))) == 3 + 8 + 8
    res = CliRunner().invoke(recon_app, ["import", *files, "--dry-run"])
    assert res.exit_code == 0 and "stmt-MT535-20260310-A-US0378331005" in res.output


def test_import_needs_exactly_one_destination(tmp_path):
    f = tmp_path / "s.csv"
    shutil.copy(EXAMPLES / "statement.csv", f)
    runner = CliRunner()
    assert runner.invoke(recon_app, ["import", str(f)]).exit_code == 2
    assert runner.invoke(recon_app, ["import", str(f), "--to-archive", str(tmp_path / "a.avro"), "--to-kafka"]).exit_code == 2


def test_a_repeated_json_key_is_an_error_not_last_one_wins():
    from services.statements import parse_json_text

    text = '[{"symbol": "AAPL", "symbol": "TSLA"}]'
    parsed = parse_json_text(text, "dup.json")
    assert any("appears twice" in e.message for e in parsed.errors), parsed.errors
