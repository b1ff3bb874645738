"""The HTML report: series computed from a hand-made projection file, checked by hand; the page; a real replay.

The hand-made file goes through the projector's own row builder and Arrow insert (RowBuffer, insert_tables),
so it has exactly the projection schema. T(k) is k seconds after T0; a posting moves ``amount`` from the debit
to the credit account, a balance is credits - debits.

Reserves (shares held at custodian:<SYM> in SH:<SYM> per token in circulation, minus supply:<SYM>):
  NVDA  t=100 deposit 10 shares (no tokens yet: no ratio)   t=200 mint 5 tokens  -> 10/5 = 2
        t=300 3-for-1 split: +20 shares, multiplier 1 -> 3  -> 30/5 = 6
        t=400 mint 4 -> 30/9 = 3.333333333 (floor)          t=450 burn 1 -> 30/8 = 3.75
        closest to the multiplier: 3.333333333 - 3 at t=400; never below it
  AAPL  t=120 5 shares in transit (not held)   t=150 deposit 2   t=250 mint 2 -> 1 (= multiplier, covered)
        t=350 withdraw 1 -> 0.5: one point below the multiplier
Pools: pool:main:USD  +10 at t=50 (recorded last: back-dated), +1000 at t=110, +30 at t=600 -> 10, 1010, 1040
       pool:insurance:USD  +50 at t=500, -30 at t=600 -> 50, 20
Liquidations: b at t=500 caused by the BTC mark oracle-btc-2 (shortfall: bad debt, insurance 30, LPs 20),
              d at t=320 caused by the ETH mark oracle-eth-1, c at t=550 caused by trade-9 (no series mark).
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest
import typer
from typer.testing import CliRunner

from services import html_report
from services.archive import read_archive, write_archive
from services.cli_report import report
from services.duckdb_sink import DuckDBSink
from services.html_report import MAX_POINTS, MultiplierChange, load_report, render_html, write_report
from services.projection_schema import ensure_schema
from services.projector import Lineage, RowBuffer, insert_tables
from services.replay import replay
from services.scenario import ScenarioConfig, generate

T0 = 1_772_000_000_000_000
NANO = 1_000_000_000
USD = 1_000_000


def T(seconds: int) -> int:
    return T0 + seconds * 1_000_000


def _batch(cause: str, s: int, kind: str, legs: list[tuple[str, str, str, int]]) -> tuple[str, dict]:
    return "PostingBatch", {"event_id": f"post:{cause}", "occurred_at": T(s), "source": "stockledger",
                            "cause_event_id": cause, "cause_kind": kind,
                            "postings": [{"debit_account": d, "credit_account": c, "asset": a, "amount_minor": n}
                                         for d, c, a, n in legs]}


def _mark(cause: str, series: str, underlying: str, s: int, spot_usd: int) -> tuple[str, dict]:
    return "SeriesState", {"event_id": f"series:{cause}:{series}", "occurred_at": T(s), "source": "stockledger",
                           "series_id": series, "underlying": underlying, "spot_micro_usd": spot_usd * USD,
                           "theo_micro_usd": 1, "mark_micro_usd": 1, "net_volume_nano": 0, "cum_funding_pico_usd": 0,
                           "volatility_ppm": 600_000}


def _trigger(account: str, cause: str, s: int) -> tuple[str, dict]:
    return "LiquidationTriggered", {"event_id": f"liq-trigger:{cause}:{account}", "occurred_at": T(s),
                                    "source": "stockledger", "account": account, "cause_event_id": cause,
                                    "equity_micro_usd": 900 * USD, "maintenance_margin_micro_usd": 1_200 * USD}


def _executed(account: str, cause: str, s: int, shortfall_usd: int) -> tuple[str, dict]:
    return "LiquidationExecuted", {"event_id": f"liq-exec:{cause}:{account}", "occurred_at": T(s),
                                   "source": "stockledger", "account": account,
                                   "trigger_event_id": f"liq-trigger:{cause}:{account}", "debt_micro_usd": 600 * USD,
                                   "penalty_micro_usd": 60 * USD, "bonus_micro_usd": 30 * USD,
                                   "shortfall_micro_usd": shortfall_usd * USD}


def _bad_debt(account: str, cause: str, s: int, n: int, step: str, usd: int) -> tuple[str, dict]:
    return "BadDebtCovered", {"event_id": f"bad-debt:liq-trigger:{cause}:{account}:{n}", "occurred_at": T(s),
                              "source": "stockledger", "account": account,
                              "trigger_event_id": f"liq-trigger:{cause}:{account}", "step": step,
                              "amount_micro_usd": usd * USD}


def _rejection(n: int, reason: str) -> tuple[str, dict]:
    return "Rejection", {"event_id": f"reject:margin.events:{n}", "occurred_at": T(700 + n), "source": "stockledger",
                         "cause_event_id": f"wd-{n}", "reason": reason, "detail": "", "source_topic": "margin.events",
                         "source_partition": 0, "source_offset": n, "schema_id": None, "original": b"raw"}


EXT_NVDA, EXT_AAPL = "external:custody:NVDA", "external:custody:AAPL"
RECORDS: list[tuple[str, dict]] = [
    _batch("cust-1", 100, "CustodyMovement", [(EXT_NVDA, "custodian:NVDA", "SH:NVDA", 10 * NANO)]),
    _batch("lp-1", 110, "LpDeposit", [("user:lp:wallet:USD", "pool:main:USD", "USD", 1_000 * USD)]),
    _batch("cust-2", 120, "CustodyMovement", [(EXT_AAPL, "custodian:AAPL:in_transit", "SH:AAPL", 5 * NANO)]),
    _batch("cust-3", 150, "CustodyMovement", [(EXT_AAPL, "custodian:AAPL", "SH:AAPL", 2 * NANO)]),
    _batch("mint-1", 200, "MintRequest", [("supply:NVDA", "user:a:wallet:NVDA", "NVDA", 5 * NANO)]),
    _batch("mint-2", 250, "MintRequest", [("supply:AAPL", "user:a:wallet:AAPL", "AAPL", 2 * NANO)]),
    _batch("ca-1", 300, "CorporateAction", [(EXT_NVDA, "custodian:NVDA", "SH:NVDA", 20 * NANO)]),
    _batch("wd-1", 350, "CustodyMovement", [("custodian:AAPL", EXT_AAPL, "SH:AAPL", 1 * NANO)]),
    _batch("mint-3", 400, "MintRequest", [("supply:NVDA", "user:b:wallet:NVDA", "NVDA", 4 * NANO)]),
    _batch("burn-1", 450, "Burn", [("user:a:wallet:NVDA", "supply:NVDA", "NVDA", 1 * NANO)]),
    _batch("oracle-btc-2", 500, "PriceMark", [("user:b:margin:USD", "pool:insurance:USD", "USD", 50 * USD)]),
    _batch("bad-1", 600, "PriceMark", [("pool:insurance:USD", "pool:main:USD", "USD", 30 * USD)]),
    _batch("lp-0", 50, "LpDeposit", [("user:lp:wallet:USD", "pool:main:USD", "USD", 10 * USD)]),  # back-dated
    _mark("oracle-btc-0", "BTC-C-60000", "BTC", 100, 60_000),
    _mark("oracle-btc-0", "BTC-P-50000", "BTC", 100, 60_000),
    _mark("oracle-eth-0", "ETH-C-3000", "ETH", 100, 3_000),
    _mark("oracle-btc-1", "BTC-C-60000", "BTC", 300, 58_000),
    _mark("oracle-eth-1", "ETH-C-3000", "ETH", 320, 2_500),
    _mark("oracle-btc-2", "BTC-C-60000", "BTC", 500, 40_000),
    _mark("trade-7", "ETH-C-3000", "ETH", 560, 2_600),
    _trigger("d", "oracle-eth-1", 320), _executed("d", "oracle-eth-1", 320, 0),
    _trigger("b", "oracle-btc-2", 500), _executed("b", "oracle-btc-2", 500, 20),
    _bad_debt("b", "oracle-btc-2", 500, 1, "ACCOUNT_MARGIN", 100),
    _bad_debt("b", "oracle-btc-2", 500, 2, "INSURANCE", 30),
    _bad_debt("b", "oracle-btc-2", 500, 3, "LP_SOCIALISED", 20),
    _trigger("c", "trade-9", 550), _executed("c", "trade-9", 550, 0),
    _rejection(1, "insufficient_margin"), _rejection(2, "insufficient_margin"), _rejection(3, "malformed"),
]


def build_db(path: Path) -> Path:
    con = duckdb.connect(str(path))
    ensure_schema(con)
    buf = RowBuffer()
    for offset, (subject, record) in enumerate(RECORDS):
        assert buf.add(subject, record, Lineage(T(1000 + offset), "ledger.postings", 0, offset))
    insert_tables(con, buf.tables(), dedupe=False)
    con.execute("CREATE TABLE ledger_meta (key VARCHAR, value VARCHAR)")
    con.execute("INSERT INTO ledger_meta VALUES ('state_hash', 'feedface0123'), ('records', '42')")
    con.close()
    return path


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return build_db(tmp_path / "hand.duckdb")


@pytest.fixture
def data(db: Path) -> html_report.ReportData:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return load_report(con, db.name)
    finally:
        con.close()


def _reserve(data: html_report.ReportData, symbol: str) -> html_report.Reserve:
    return next(r for r in data.reserves if r.symbol == symbol)


def _all_ints(data: html_report.ReportData) -> bool:
    series = [r.ratio for r in data.reserves] + [data.pool, data.insurance, *data.spots]
    return all(type(t) is int and type(v) is int for s in series for t, v in s.points) and all(
        type(x) is int for s in series for x in (s.lo, s.hi, s.last))


# -------------------------------------------------------------------------------------------- series


def test_shares_per_token_after_a_split_and_the_multiplier_rebuilt(data):
    nvda = _reserve(data, "NVDA")
    assert nvda.ratio.points == [(T(200), 2 * NANO), (T(300), 6 * NANO), (T(400), 3_333_333_333), (T(450), 3_750_000_000)]
    assert nvda.multipliers == [MultiplierChange(T(300), NANO, 3 * NANO, "ca-1")]
    assert nvda.multiplier_at(T(299)) == NANO and nvda.multiplier_at(T(300)) == 3 * NANO
    assert (nvda.held_nano, nvda.supply_nano) == (30 * NANO, 8 * NANO)
    assert nvda.breaches == 0
    assert (nvda.min_headroom_nano, nvda.min_headroom_t) == (333_333_333, T(400))
    assert (nvda.ratio.lo, nvda.ratio.hi, nvda.ratio.last, nvda.ratio.n) == (2 * NANO, 6 * NANO, 3_750_000_000, 4)


def test_in_transit_shares_do_not_count_and_a_withdrawal_breaches(data):
    aapl = _reserve(data, "AAPL")
    assert aapl.ratio.points == [(T(250), NANO), (T(350), NANO // 2)]
    assert aapl.multipliers == []
    assert aapl.breaches == 1  # equal to the multiplier at t=250 is covered; 0.5 at t=350 is not
    assert (aapl.min_headroom_nano, aapl.min_headroom_t) == (-(NANO // 2), T(350))
    assert [r.symbol for r in data.reserves] == ["AAPL", "NVDA"]


def test_pool_and_insurance_over_effective_time(data):
    # the back-dated deposit (recorded last) comes first in effective time
    assert data.pool.points == [(T(50), 10 * USD), (T(110), 1_010 * USD), (T(600), 1_040 * USD)]
    assert data.insurance.points == [(T(500), 50 * USD), (T(600), 20 * USD)]
    assert (data.insurance.lo, data.insurance.hi, data.insurance.last) == (20 * USD, 50 * USD, 20 * USD)
    [bad] = data.bad_debts
    assert (bad.t_us, bad.account, bad.insurance_micro_usd, bad.socialised_micro_usd, bad.total_micro_usd) == (
        T(500), "b", 30 * USD, 20 * USD, 150 * USD)


def test_spot_and_liquidations_placed_by_their_cause(data):
    btc, eth = data.spots
    assert btc.key == "BTC" and btc.points == [(T(100), 60_000 * USD), (T(300), 58_000 * USD), (T(500), 40_000 * USD)]
    assert eth.key == "ETH" and eth.points[-1] == (T(560), 2_600 * USD)
    by_account = {liq.account: liq for liq in data.liquidations}
    assert [liq.account for liq in data.liquidations] == ["d", "b", "c"]
    assert (by_account["b"].underlying, by_account["b"].spot_on("BTC"), by_account["b"].shortfall_micro_usd) == (
        "BTC", 40_000 * USD, 20 * USD)
    assert (by_account["d"].underlying, by_account["d"].spot_on("ETH")) == ("ETH", 2_500 * USD)
    c = by_account["c"]
    assert c.underlying is None and c.triggered and c.executed
    assert c.spot_on("BTC") == 40_000 * USD and c.spot_on("ETH") == 2_500 * USD  # last spot at or before t=550


def test_header_figures_and_integers_throughout(data):
    assert data.meta["state_hash"] == "feedface0123"
    assert data.counts["postings"] == 13 and data.counts["posting_batches"] == 13
    assert data.counts["LiquidationTriggered"] == 3 and data.counts["BadDebtCovered"] == 3
    assert data.rejections_by_reason == [("insufficient_margin", 2), ("malformed", 1)]
    assert (data.t0, data.t1) == (T(50), T(600))  # postings, marks and liquidations span the time axis
    assert _all_ints(data)


def test_downsampled_to_at_most_max_points_last_value_per_bucket(tmp_path):
    con = duckdb.connect(str(tmp_path / "many.duckdb"))
    ensure_schema(con)
    buf = RowBuffer()
    for i in range(2_000):  # pool cash +1 USD every second, minus 5 USD on every 7th
        legs = [("user:x:wallet:USD", "pool:main:USD", "USD", USD)] if i % 7 else [("pool:main:USD", "user:x:wallet:USD", "USD", 5 * USD)]
        subject, rec = _batch(f"e{i}", i, "TradeRequest", legs)
        buf.add(subject, rec, Lineage(T(i), "ledger.postings", 0, i))
    insert_tables(con, buf.tables(), dedupe=False)
    data = load_report(con)
    con.close()
    pool = data.pool
    expected = []
    bal = 0
    for i in range(2_000):
        bal += USD if i % 7 else -5 * USD
        expected.append((T(i), bal))
    assert pool.n == 2_000 and len(pool.points) <= MAX_POINTS
    assert pool.points[-1] == expected[-1] and pool.last == expected[-1][1]
    assert set(pool.points) <= set(expected)  # real (time, balance) pairs, never interpolated
    assert (pool.lo, pool.hi) == (min(v for _, v in expected), max(v for _, v in expected))
    # the last value of each bucket: every point is the latest row in its bucket of the time range
    span, n = T(1_999) - T(0) + 1, MAX_POINTS
    buckets = {(t - T(0)) * n // span: (t, v) for t, v in expected}
    assert pool.points == sorted(buckets.values())


# -------------------------------------------------------------------------------------------- the page


def test_page_is_written_self_contained_with_a_chart_per_symbol_and_the_markers(db, tmp_path):
    out = tmp_path / "r" / "report.html"
    write_report(db, out)
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page and "<script" not in page.lower()
    assert "<link" not in page.lower() and "@import" not in page and "url(http" not in page
    assert re.findall(r'data-chart="reserve" data-key="([A-Z]+)"', page) == ["AAPL", "NVDA"]
    assert page.count('class="liq liq-BTC"') == 1 and page.count('class="liq liq-BTC liq-other"') == 1
    assert page.count('class="liq liq-ETH"') == 1 and page.count('class="liq liq-ETH liq-other"') == 1
    assert page.count('class="mult-change"') == 1 and "x1 \u2192 x3" in page
    assert page.count('class="bad-debt socialised"') == 2  # on the pool chart and on the insurance chart
    assert page.count('class="breach"') == 1  # AAPL's withdrawal
    assert 'id="state-hash">feedface0123<' in page
    assert "<td>insufficient_margin</td><td class=\"n\">2</td>" in page
    assert page.count('data-chart="pool"') == 2 and page.count('data-chart="spot"') == 2


def test_cli_writes_the_page_and_refuses_a_missing_file(db, tmp_path):
    app = typer.Typer()
    app.command()(report)
    out = tmp_path / "cli.html"
    result = CliRunner().invoke(app, ["--html", str(out), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "report written" in result.output and out.exists()
    missing = CliRunner().invoke(app, ["--html", str(out), "--db", str(tmp_path / "nope.duckdb")])
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())
    helped = CliRunner().invoke(app, ["--help"])
    assert "--html" in helped.output and "--db" in helped.output


def test_a_file_without_postings_is_refused(tmp_path):
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    con = duckdb.connect(str(path), read_only=True)
    with pytest.raises(ValueError, match="postings"):
        load_report(con)
    con.close()


def test_render_of_an_empty_projection(tmp_path):
    con = duckdb.connect(str(tmp_path / "e.duckdb"))
    ensure_schema(con)
    page = render_html(load_report(con, "e.duckdb"))
    con.close()
    assert "nothing to draw" in page and "<svg" not in page


# -------------------------------------------------------------------------------------------- a real replay


def test_report_of_a_replayed_scenario_matches_the_folded_state(tmp_path):
    archive, db, out = tmp_path / "s.avro", tmp_path / "s.duckdb", tmp_path / "s.html"
    cfg = ScenarioConfig(accounts=120, events=3_000, seed=11)
    write_archive(archive, generate(cfg), "report-test")
    sink = DuckDBSink(db)
    result = replay(read_archive(archive), sink=sink)
    sink.close({"state_hash": result.hash(), "records": str(result.total_in)})
    state = result.state

    data = write_report(db, out)
    page = out.read_text()
    assert {r.symbol for r in data.reserves} == set(state.reserves)
    for r in data.reserves:
        reserve = state.reserves[r.symbol]
        assert r.multiplier_nano == reserve.multipliers[-1][1], r.symbol  # rebuilt from postings alone
        assert (r.held_nano, r.supply_nano) == (reserve.shares_held_nano, reserve.supply_nano)
        assert r.ratio.last == reserve.shares_held_nano * NANO // reserve.supply_nano
        assert len(r.ratio.points) <= MAX_POINTS and r.ratio.points[-1][1] == r.ratio.last
    nvda = _reserve(data, "NVDA")
    assert [(c.before_nano, c.after_nano) for c in nvda.multipliers] == [(NANO, 3 * NANO)]
    assert _reserve(data, "AAPL").multiplier_nano > NANO  # the reinvested dividend
    assert data.pool.last == state.pool.cash_micro_usd
    assert data.insurance.last == state.pool.insurance_cash_micro_usd
    assert sum(b.insurance_micro_usd for b in data.bad_debts) == state.pool.bad_debt_insurance_micro_usd
    assert sum(b.socialised_micro_usd for b in data.bad_debts) == state.pool.bad_debt_socialised_micro_usd
    assert len(data.liquidations) == state.counters.liquidations > 0
    assert all(len(s.points) <= MAX_POINTS for s in [data.pool, data.insurance, *data.spots])
    assert {s.key for s in data.spots} == {"BTC", "ETH"}
    assert _all_ints(data)
    assert sum(n for _, n in data.rejections_by_reason) == sum(result.rejected_by_reason.values())
    assert dict(data.rejections_by_reason) == result.rejected_by_reason
    # every liquidation has one marker (on its underlying's chart, or on both when no mark caused it)
    markers = len(re.findall(r'class="liq liq-(?:BTC|ETH)"', page))
    others = len(re.findall(r'class="liq liq-(?:BTC|ETH) liq-other"', page))
    assert markers + others // 2 == len(data.liquidations)
    assert result.hash() in page
    assert len(re.findall(r'data-chart="reserve"', page)) == len(state.reserves)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert out.stat().st_size < 400_000
