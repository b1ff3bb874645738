"""A single self-contained HTML page (inline SVG and CSS, no script, nothing fetched) over a projection file.

Reads a DuckDB file written by the offline replay (services/duckdb_sink.py) or by the Kafka projector
(services/projector.py); both use the tables of services/projection_schema.py. Three chart sections:

1. Reserves per symbol: shares held at the custodian (balance of ``custodian:<SYM>`` in ``SH:<SYM>``) per
   token in circulation (minus the balance of ``supply:<SYM>`` in ``<SYM>``), over effective time, against
   the multiplier (shares per token) in force; the multiplier is rebuilt from the corporate-action postings.
2. The main pool's USD cash (``pool:main:USD``) and the insurance fund's USD (``pool:insurance:USD``) over
   effective time, with the bad-debt moments (``BadDebtCovered`` rows) marked.
3. BTC / ETH spot over time (``series_marks``) with one marker per liquidation at its effective time.

Every figure is an integer in the ledger's minor units (nano-shares, nano-tokens, micro-USD) from the SQL to
the moment it is scaled to an SVG coordinate; floats exist only in the drawing. Balances are cumulative
sums (window functions) over ``postings`` ordered by ``occurred_at_us``; each series is downsampled in SQL
to at most ``MAX_POINTS`` points, the last value per time bucket, while its minimum, maximum and count of
multiplier breaches are computed over every point.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

NANO = 1_000_000_000
MICRO = 1_000_000
MAX_POINTS = 400
BIGINT_MIN = -(2**63)

MAIN_POOL_USD = "pool:main:USD"
INSURANCE_USD = "pool:insurance:USD"
LIQUIDATION_KINDS = ("LiquidationTriggered", "LiquidationExecuted", "BadDebtCovered")

# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Series:
    """A step series of integers over effective time: downsampled points plus full-resolution figures."""

    key: str
    points: list[tuple[int, int]]  # (occurred_at_us, value), at most MAX_POINTS, last value per bucket
    n: int  # points at full resolution
    lo: int  # full-resolution minimum
    hi: int  # full-resolution maximum
    last: int  # the final value
    lo_t: int  # when the minimum was first reached

    @staticmethod
    def empty(key: str) -> Series:
        return Series(key, [], 0, 0, 0, 0, 0)


@dataclass(frozen=True)
class MultiplierChange:
    """Shares per token changed at ``t_us`` (a split or a reinvested dividend), rebuilt from its posting."""

    t_us: int
    before_nano: int
    after_nano: int
    cause_event_id: str


@dataclass(frozen=True)
class Reserve:
    symbol: str
    ratio: Series  # shares held per token in circulation, nano (floor), where supply > 0
    held_nano: int  # final custodian balance
    supply_nano: int  # final tokens in circulation
    multipliers: list[MultiplierChange]
    breaches: int  # full-resolution points with ratio < multiplier in force
    min_headroom_nano: int | None  # min(ratio - multiplier) over every point
    min_headroom_t: int | None
    underivable: list[str] = field(default_factory=list)  # corporate actions with nothing held before them

    def multiplier_at(self, t_us: int) -> int:
        current = NANO
        for ch in self.multipliers:
            if ch.t_us > t_us:
                break
            current = ch.after_nano
        return current

    @property
    def multiplier_nano(self) -> int:
        return self.multipliers[-1].after_nano if self.multipliers else NANO


@dataclass(frozen=True)
class BadDebt:
    trigger_event_id: str
    t_us: int
    account: str | None
    insurance_micro_usd: int
    socialised_micro_usd: int
    total_micro_usd: int  # every waterfall step, account margin and penalty included


@dataclass(frozen=True)
class Liquidation:
    trigger_event_id: str
    account: str | None
    t_us: int
    cause_event_id: str | None
    underlying: str | None  # the underlying of the mark (or trade) that caused it, from series_marks lineage
    cause_spot_micro_usd: int | None
    spot_at: dict[str, int]  # last spot at or before t_us, per underlying
    equity_micro_usd: int | None
    maintenance_margin_micro_usd: int | None
    debt_micro_usd: int | None
    penalty_micro_usd: int | None
    shortfall_micro_usd: int | None
    triggered: bool
    executed: bool

    def spot_on(self, underlying: str) -> int | None:
        if self.underlying == underlying and self.cause_spot_micro_usd is not None:
            return self.cause_spot_micro_usd
        return self.spot_at.get(underlying)


@dataclass
class ReportData:
    db_name: str
    writer: str
    t0: int | None
    t1: int | None
    meta: dict[str, str]
    counts: dict[str, int]
    rejections_by_reason: list[tuple[str, int]]
    reserves: list[Reserve]
    pool: Series
    insurance: Series
    bad_debts: list[BadDebt]
    spots: list[Series]
    liquidations: list[Liquidation]
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- SQL


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> Any:
    row = con.execute(sql, params or []).fetchone()
    return row[0] if row else None


def _series(con: duckdb.DuckDBPyConnection, ctes: str, t0: int, t1: int, params: dict[str, Any] | None = None,
            max_points: int = MAX_POINTS) -> dict[str, Series]:
    """``ctes`` is a WITH clause whose last CTE ``s(key, t, v)`` has one row per key and distinct t.

    Downsampled: time [t0, t1] is cut into ``max_points`` buckets and the last row of each is kept, so a
    step chart drawn through the points ends every bucket at the right level. Figures over every row.
    """
    p = {"t0": t0, "span": max(t1 - t0 + 1, 1), "n": max_points, **(params or {})}
    pts: dict[str, list[tuple[int, int]]] = {}
    for key, t, v in con.execute(
            f"""{ctes}
            SELECT key, t, v FROM s
            QUALIFY row_number() OVER (PARTITION BY key, (CAST(t - $t0 AS HUGEINT) * $n) // $span ORDER BY t DESC) = 1
            ORDER BY key, t""", p).fetchall():
        pts.setdefault(key, []).append((int(t), int(v)))
    out: dict[str, Series] = {}
    stats = con.execute(f"""{ctes}
        SELECT key, count(*), min(v), max(v), arg_max(v, t), arg_min(t, (v, t)) FROM s GROUP BY key ORDER BY key""",
                        {k: v for k, v in p.items() if k not in ("t0", "span", "n")}).fetchall()
    for key, n, lo, hi, last, lo_t in stats:
        out[key] = Series(key, pts.get(key, []), int(n), int(lo), int(hi), int(last), int(lo_t))
    return out


def _legs(pred: str) -> str:
    """Signed legs (credit +, debit -) of the postings whose account satisfies pred (written on `account`)."""
    return f"""
      SELECT credit_account AS account, asset, occurred_at_us AS t, "partition" AS p, "offset" AS o, leg,
             cause_kind, cause_event_id, amount_minor AS d
      FROM postings WHERE {pred.replace('account', 'credit_account')}
      UNION ALL
      SELECT debit_account, asset, occurred_at_us, "partition", "offset", leg, cause_kind, cause_event_id, -amount_minor
      FROM postings WHERE {pred.replace('account', 'debit_account')}"""


# Per symbol and effective time: custodian shares held and tokens in circulation, then the ratio (floor).
RESERVE_CTES = f"""
WITH legs AS ({_legs("(account LIKE 'custodian:%' OR account LIKE 'supply:%')")}),
tagged AS (
  SELECT CASE WHEN asset LIKE 'SH:%' AND account = 'custodian:' || substr(asset, 4) THEN substr(asset, 4)
              WHEN account = 'supply:' || asset THEN asset END AS symbol,
         t,
         CASE WHEN account LIKE 'custodian:%' THEN d ELSE 0 END AS d_held,
         CASE WHEN account LIKE 'supply:%' THEN -d ELSE 0 END AS d_supply
  FROM legs),
per_t AS (SELECT symbol, t, sum(d_held) AS d_held, sum(d_supply) AS d_supply
          FROM tagged WHERE symbol IS NOT NULL GROUP BY symbol, t),
cum AS (SELECT symbol, t, sum(d_held) OVER w AS held, sum(d_supply) OVER w AS supply FROM per_t
        WINDOW w AS (PARTITION BY symbol ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)),
ratio AS (SELECT symbol, t, held, supply,
                 CASE WHEN supply > 0 THEN (held * {NANO} - ((held * {NANO}) % supply + supply) % supply) // supply END AS r
          FROM cum)"""

# Corporate-action postings on the custodian, in processing order, with the holding before and after.
CORPORATE_ACTIONS_SQL = f"""
WITH legs AS ({_legs("account LIKE 'custodian:%'")}),
own AS (SELECT substr(asset, 4) AS symbol, * FROM legs WHERE asset LIKE 'SH:%' AND account = 'custodian:' || substr(asset, 4)),
run AS (SELECT *, sum(d) OVER (PARTITION BY symbol ORDER BY p NULLS FIRST, o, leg
                               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS held_after FROM own)
SELECT symbol, t, cause_event_id, held_after - d AS held_before, held_after
FROM run WHERE cause_kind = 'CorporateAction' ORDER BY symbol, p NULLS FIRST, o, leg"""


def _balance_ctes(accounts: Sequence[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
    pred = " OR ".join(f"(account = $a{i} AND asset = $s{i})" for i in range(len(accounts)))
    params: dict[str, Any] = {}
    for i, (acct, asset) in enumerate(accounts):
        params[f"a{i}"], params[f"s{i}"] = acct, asset
    ctes = f"""
WITH legs AS ({_legs("(" + pred + ")")}),
per_t AS (SELECT account AS key, t, sum(d) AS d FROM legs GROUP BY account, t),
s AS (SELECT key, t, sum(d) OVER (PARTITION BY key ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS v
      FROM per_t)"""
    return ctes, params


SPOT_CTES = """
WITH s AS (SELECT underlying AS key, occurred_at_us AS t, arg_max(spot_micro_usd, "offset") AS v FROM series_marks
           WHERE underlying IS NOT NULL AND spot_micro_usd IS NOT NULL GROUP BY underlying, occurred_at_us)"""

LIQUIDATIONS_SQL = """
WITH trig AS (SELECT trigger_event_id AS id, account, occurred_at_us AS t, cause_event_id AS cause,
                     equity_micro_usd AS equity, maintenance_margin_micro_usd AS mm
              FROM liquidations WHERE kind = 'LiquidationTriggered'),
ex AS (SELECT trigger_event_id AS id, account, occurred_at_us AS t, debt_micro_usd AS debt,
              penalty_micro_usd AS penalty, shortfall_micro_usd AS shortfall
       FROM liquidations WHERE kind = 'LiquidationExecuted'),
j AS (SELECT coalesce(trig.id, ex.id) AS id, coalesce(trig.account, ex.account) AS account,
             coalesce(trig.t, ex.t) AS t, trig.cause, trig.equity, trig.mm, ex.debt, ex.penalty, ex.shortfall,
             trig.id IS NOT NULL AS triggered, ex.id IS NOT NULL AS executed
      FROM trig FULL OUTER JOIN ex ON trig.id = ex.id),
-- a SeriesState's event id is series:<cause event id>:<series id>: the mark (or trade) behind a trigger
cause_mark AS (SELECT substr(event_id, 8, length(event_id) - length(series_id) - 8) AS cause,
                      min(underlying) AS underlying, min(spot_micro_usd) AS spot
               FROM series_marks WHERE event_id LIKE 'series:%' AND occurred_at_us IN (SELECT t FROM j) GROUP BY 1)
SELECT j.id, j.account, j.t, j.cause, cm.underlying, cm.spot, j.equity, j.mm, j.debt, j.penalty, j.shortfall,
       j.triggered, j.executed
FROM j LEFT JOIN cause_mark cm ON cm.cause = j.cause ORDER BY j.t, j.id"""

SPOT_AT_SQL = SPOT_CTES + """,
liq AS (SELECT DISTINCT trigger_event_id AS id, occurred_at_us AS t FROM liquidations
        WHERE kind IN ('LiquidationTriggered', 'LiquidationExecuted')),
pairs AS (SELECT liq.id, liq.t, u.key FROM liq CROSS JOIN (SELECT DISTINCT key FROM s) u)
SELECT pairs.id, pairs.key, s.v FROM pairs ASOF JOIN s ON pairs.key = s.key AND pairs.t >= s.t"""

BAD_DEBT_SQL = """
SELECT trigger_event_id, min(occurred_at_us) AS t, min(account),
       coalesce(sum(amount_micro_usd) FILTER (WHERE step = 'INSURANCE'), 0),
       coalesce(sum(amount_micro_usd) FILTER (WHERE step = 'LP_SOCIALISED'), 0),
       coalesce(sum(amount_micro_usd), 0)
FROM liquidations WHERE kind = 'BadDebtCovered' GROUP BY trigger_event_id ORDER BY t, trigger_event_id"""


def _time_range(con: duckdb.DuckDBPyConnection, tables: set[str]) -> tuple[int | None, int | None]:
    parts = [f"SELECT min(occurred_at_us) AS lo, max(occurred_at_us) AS hi FROM {t}"
             for t in ("postings", "series_marks", "liquidations") if t in tables]
    if not parts:
        return None, None
    row = con.execute(f"SELECT min(lo), max(hi) FROM ({' UNION ALL '.join(parts)})").fetchone()
    return (None, None) if row is None or row[0] is None else (int(row[0]), int(row[1]))


def _multiplier_changes(con: duckdb.DuckDBPyConnection) -> tuple[dict[str, list[MultiplierChange]], dict[str, list[str]]]:
    """Each corporate action moved the custodian's holding by new/base (held_after = held x new // base), so
    new = ceil(base x held_after / held_before): exact whenever held_before >= base (one share per token)."""
    changes: dict[str, list[MultiplierChange]] = {}
    underivable: dict[str, list[str]] = {}
    current: dict[str, int] = {}
    for symbol, t, cause, before, after in con.execute(CORPORATE_ACTIONS_SQL).fetchall():
        before, after = int(before), int(after)
        base = current.get(symbol, NANO)
        if before <= 0:
            underivable.setdefault(symbol, []).append(cause)
            continue
        new = -(-base * after // before)
        current[symbol] = new
        changes.setdefault(symbol, []).append(MultiplierChange(int(t), base, new, cause))
    return changes, underivable


def _reserves(con: duckdb.DuckDBPyConnection, t0: int, t1: int) -> list[Reserve]:
    ratios = _series(con, RESERVE_CTES + ", s AS (SELECT symbol AS key, t, r AS v FROM ratio WHERE r IS NOT NULL)", t0, t1)
    finals = {sym: (int(h), int(s)) for sym, h, s in con.execute(
        RESERVE_CTES + " SELECT symbol, arg_max(held, t), arg_max(supply, t) FROM cum GROUP BY symbol").fetchall()}
    changes, underivable = _multiplier_changes(con)
    rows = [(sym, BIGINT_MIN, NANO) for sym in finals]
    rows += [(sym, ch.t_us, ch.after_nano) for sym, chs in changes.items() for ch in chs]
    mults = pa.table({"symbol": pa.array([r[0] for r in rows], pa.string()),
                      "t": pa.array([r[1] for r in rows], pa.int64()),
                      "mult": pa.array([r[2] for r in rows], pa.int64())})
    con.register("__report_multipliers", mults)
    try:
        checks = {sym: (int(n), lo, lo_t) for sym, n, lo, lo_t in con.execute(RESERVE_CTES + """
            SELECT ratio.symbol, count(*) FILTER (WHERE ratio.r < m.mult), min(ratio.r - m.mult),
                   arg_min(ratio.t, (ratio.r - m.mult, ratio.t))
            FROM ratio ASOF JOIN __report_multipliers m ON ratio.symbol = m.symbol AND ratio.t >= m.t
            WHERE ratio.r IS NOT NULL GROUP BY ratio.symbol""").fetchall()}
    finally:
        con.unregister("__report_multipliers")
    out = []
    for sym in sorted(finals):
        held, supply = finals[sym]
        n, lo, lo_t = checks.get(sym, (0, None, None))
        out.append(Reserve(sym, ratios.get(sym, Series.empty(sym)), held, supply, changes.get(sym, []), n,
                           None if lo is None else int(lo), None if lo_t is None else int(lo_t),
                           underivable.get(sym, [])))
    return out


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


def load_report(con: duckdb.DuckDBPyConnection, db_name: str = "") -> ReportData:
    """Every figure of the page, computed in SQL over the projection tables present."""
    tables = _tables(con)
    notes: list[str] = []
    if "postings" not in tables:
        raise ValueError("no postings table: not a stockledger projection file (services/projection_schema.py)")
    columns = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'postings'").fetchall()}
    missing = [c for c in ("occurred_at_us", "partition", "offset", "leg", "cause_kind", "cause_event_id") if c not in columns]
    if missing:
        raise ValueError(f"postings has no {', '.join(missing)}: an older file format; write it again with "
                         "`stockledger replay ARCHIVE --duckdb FILE` (or project it with the current projector)")
    if "ledger_meta" in tables or "events" in tables:
        writer = "offline replay (services/duckdb_sink.py)"
    elif "projector_offsets" in tables:
        writer = "Kafka projector (services/projector.py)"
    else:
        writer = "unknown writer"
    meta = dict(con.execute("SELECT key, value FROM ledger_meta").fetchall()) if "ledger_meta" in tables else {}
    counts: dict[str, int] = {"postings": int(_scalar(con, "SELECT count(*) FROM postings"))}
    for table in ("posting_batches", "series_marks", "request_outcomes", "projector_errors"):
        if table in tables:
            counts[table] = int(_scalar(con, f"SELECT count(*) FROM {table}"))
    if "request_outcomes" in tables:
        for decision, n in con.execute("SELECT decision, count(*) FROM request_outcomes GROUP BY 1").fetchall():
            counts[f"outcomes {str(decision).lower()}"] = int(n)
    has_liq = "liquidations" in tables
    if has_liq:
        for kind in LIQUIDATION_KINDS:
            counts[kind] = int(_scalar(con, "SELECT count(*) FROM liquidations WHERE kind = ?", [kind]))
    else:
        notes.append("no liquidations table: no liquidation or bad-debt markers")
    rejections: list[tuple[str, int]] = []
    if "rejections" in tables:
        rejections = [(str(r), int(n)) for r, n in con.execute(
            "SELECT reason, count(*) AS n FROM rejections GROUP BY reason ORDER BY n DESC, reason").fetchall()]
        counts["rejections"] = sum(n for _, n in rejections)
    t0, t1 = _time_range(con, tables)
    if t0 is None or t1 is None:
        notes.append("no rows with an effective time: nothing to draw")
        return ReportData(db_name, writer, None, None, meta, counts, rejections, [], Series.empty(MAIN_POOL_USD),
                          Series.empty(INSURANCE_USD), [], [], [], notes)
    reserves = _reserves(con, t0, t1)
    ctes, params = _balance_ctes([(MAIN_POOL_USD, "USD"), (INSURANCE_USD, "USD")])
    pools = _series(con, ctes, t0, t1, params)
    bad_debts: list[BadDebt] = []
    liquidations: list[Liquidation] = []
    spots: list[Series] = []
    if "series_marks" in tables:
        spots = list(_series(con, SPOT_CTES, t0, t1).values())
    else:
        notes.append("no series_marks table: no spot timeline")
    if has_liq:
        bad_debts = [BadDebt(str(i), int(t), a, int(ins), int(soc), int(tot))
                     for i, t, a, ins, soc, tot in con.execute(BAD_DEBT_SQL).fetchall()]
        spot_at: dict[str, dict[str, int]] = {}
        if "series_marks" in tables:
            for i, key, v in con.execute(SPOT_AT_SQL).fetchall():
                if v is not None:
                    spot_at.setdefault(str(i), {})[str(key)] = int(v)
        for (i, account, t, cause, und, spot, equity, mm, debt, penalty, shortfall, trig, exe) in con.execute(
                LIQUIDATIONS_SQL if "series_marks" in tables else
                LIQUIDATIONS_SQL.replace("FROM series_marks WHERE", "FROM (SELECT NULL::VARCHAR AS event_id, "
                                         "NULL::VARCHAR AS series_id, NULL::VARCHAR AS underlying, NULL::BIGINT AS "
                                         "spot_micro_usd, NULL::BIGINT AS occurred_at_us) WHERE")).fetchall():
            liquidations.append(Liquidation(
                str(i), account, int(t), cause, und, _int_or_none(spot), spot_at.get(str(i), {}), _int_or_none(equity),
                _int_or_none(mm), _int_or_none(debt), _int_or_none(penalty), _int_or_none(shortfall), bool(trig), bool(exe)))
    for r in reserves:
        if r.underivable:
            notes.append(f"{r.symbol}: corporate action(s) {', '.join(r.underivable)} found the custodian empty; "
                         "their multiplier cannot be rebuilt from postings and is not drawn")
    return ReportData(db_name, writer, t0, t1, meta, counts, rejections, reserves,
                      pools.get(MAIN_POOL_USD, Series.empty(MAIN_POOL_USD)),
                      pools.get(INSURANCE_USD, Series.empty(INSURANCE_USD)), bad_debts, spots, liquidations, notes)


# --------------------------------------------------------------------------------------------- formatting


def fmt_fixed(value: int, scale_digits: int, decimals: int) -> str:
    """An integer in 10^-scale_digits units as a decimal string with thousands separators (truncated)."""
    decimals = max(0, min(decimals, scale_digits))
    sign = "-" if value < 0 else ""
    q = abs(value) // 10 ** (scale_digits - decimals)  # truncated, as the command line's tables show money
    whole, frac = divmod(q, 10**decimals)
    if q == 0:
        sign = ""
    return f"{sign}{whole:,}" + (f".{frac:0{decimals}d}" if decimals else "")


def fmt_usd(micro: int | None, decimals: int = 2) -> str:
    return "n/a" if micro is None else fmt_fixed(micro, 6, decimals)


def fmt_nano(nano: int | None, decimals: int = 9) -> str:
    return "n/a" if nano is None else fmt_fixed(nano, 9, decimals)


def fmt_mult(nano: int) -> str:
    """A multiplier without trailing zeros: 3, 1.003703703."""
    whole, frac = divmod(nano, NANO)
    return f"{whole}" if frac == 0 else f"{whole}.{frac:09d}".rstrip("0")


def fmt_mult_short(nano: int) -> str:
    """A multiplier for a chart label: at most 4 decimals (truncated), no trailing zeros."""
    whole, frac = divmod(nano, NANO)
    short = f"{frac // 100_000:04d}".rstrip("0")
    return f"{whole}.{short}" if short else f"{whole}"


def fmt_time(t_us: int | None) -> str:
    if t_us is None:
        return "n/a"
    return datetime.fromtimestamp(t_us // MICRO, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _short_time(t_us: int) -> str:
    return datetime.fromtimestamp(t_us // MICRO, UTC).strftime("%m-%d %H:%M:%S")


def _esc(s: object) -> str:
    return html.escape(str(s), quote=True)


# --------------------------------------------------------------------------------------------- SVG

W_FULL, W_HALF = 1120, 548
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 84, 14, 12, 26
TIME_STEPS_S = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400,
                30 * 86400, 91 * 86400, 365 * 86400)


def nice_step(span: int, target: int = 5) -> int:
    """The smallest 1, 2 or 5 x 10^k (an integer >= 1) that cuts span into at most ~target steps."""
    raw = max(1, -(-span // target))
    mag = 10 ** (len(str(raw)) - 1)
    for m in (1, 2, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag  # pragma: no cover


def y_axis(lo: int, hi: int, target: int = 5) -> tuple[int, int, int]:
    """(axis_lo, axis_hi, step): the data range widened to whole steps; a flat series gets a small band."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = max(abs(hi) // 10, 1)
        lo, hi = lo - pad, hi + pad
    step = nice_step(hi - lo, target)
    return (lo // step) * step, -((-hi) // step) * step, step


def _decimals_for(step: int, scale_digits: int) -> int:
    zeros = 0
    while step % 10 == 0 and zeros < scale_digits:
        step //= 10
        zeros += 1
    return scale_digits - zeros


@dataclass
class Line:
    points: list[tuple[int, int]]
    color: str
    width: float = 1.6
    dash: str | None = None
    extend_to: int | None = None  # carry the last value to this time (a balance holds until it changes)
    fill_below: str | None = None  # fill between the line and the bottom of the plot


@dataclass
class Marker:
    t_us: int
    value: int | None  # None: a tick at the top of the plot
    shape: str  # circle | ring | triangle | vline
    color: str
    title: str
    css: str = ""
    label: str = ""


@dataclass
class Chart:
    kind: str
    key: str
    width: int
    height: int
    t0: int
    t1: int
    lo: int
    hi: int
    scale_digits: int
    lines: list[Line] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    label: str = ""
    clipped_note: str = ""


_chart_ids = [0]


def _x(c: Chart, t: int) -> float:
    span = max(c.t1 - c.t0, 1)
    return MARGIN_L + (t - c.t0) * (c.width - MARGIN_L - MARGIN_R) / span


def _y(c: Chart, v: int) -> float:
    span = max(c.hi - c.lo, 1)
    return MARGIN_T + (c.hi - v) * (c.height - MARGIN_T - MARGIN_B) / span


def _f(x: float) -> str:
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _time_ticks(t0: int, t1: int, max_ticks: int = 8) -> tuple[list[int], str]:
    span_s = max((t1 - t0) // MICRO, 1)
    step = next((s for s in TIME_STEPS_S if span_s // s <= max_ticks), TIME_STEPS_S[-1])
    first = -(-(t0 // MICRO) // step) * step
    ticks = list(range(first, t1 // MICRO + 1, step))
    fmt = "%b %d" if step >= 86400 else "%b %d %H:%M"
    return [t * MICRO for t in ticks], fmt


def _clusters(spots: list[tuple[float, float]], radius: float = 7.0) -> list[tuple[tuple[float, float], int]]:
    """Greedy left-to-right grouping of marker positions within ``radius`` px of a group's first marker."""
    groups: list[list[Any]] = []
    for x, y in sorted(spots):
        for g in groups[-8:]:
            if abs(x - g[0]) <= radius and abs(y - g[1]) <= radius:
                g[2] += 1
                break
        else:
            groups.append([x, y, 1])
    return [((g[0], g[1]), g[2]) for g in groups]


def _vline_label(c: Chart, m: Marker) -> str:
    x = _x(c, m.t_us)
    right = x > MARGIN_L + (c.width - MARGIN_L - MARGIN_R) * 0.7
    return (f'<text x="{_f(x - 6 if right else x + 6)}" y="{MARGIN_T + 11}" class="ml{" end" if right else ""}" '
            f'fill="{m.color}">{_esc(m.label)}</text>')


def render_chart(c: Chart) -> str:
    _chart_ids[0] += 1
    cid = f"clip{_chart_ids[0]}"
    pl, pr, pt, pb = MARGIN_L, c.width - MARGIN_R, MARGIN_T, c.height - MARGIN_B
    out = [f'<svg class="chart" data-chart="{_esc(c.kind)}" data-key="{_esc(c.key)}" viewBox="0 0 {c.width} {c.height}" '
           f'width="{c.width}" height="{c.height}" role="img" aria-label="{_esc(c.label)}">',
           f'<defs><clipPath id="{cid}"><rect x="{pl}" y="{pt - 1}" width="{pr - pl}" height="{pb - pt + 2}"/></clipPath></defs>',
           f'<rect x="{pl}" y="{pt}" width="{pr - pl}" height="{pb - pt}" class="plot"/>']
    lo, hi, step = c.lo, c.hi, nice_step(c.hi - c.lo)
    decimals = _decimals_for(step, c.scale_digits)
    v = -((-lo) // step) * step
    while v <= hi:
        y = _f(_y(c, v))
        out.append(f'<line x1="{pl}" x2="{pr}" y1="{y}" y2="{y}" class="grid{" zero" if v == 0 else ""}"/>'
                   f'<text x="{pl - 6}" y="{y}" class="yl">{fmt_fixed(v, c.scale_digits, decimals)}</text>')
        v += step
    ticks, tfmt = _time_ticks(c.t0, c.t1, max(2, (pr - pl) // 100))
    for t in ticks:
        x = _f(_x(c, t))
        label = datetime.fromtimestamp(t // MICRO, UTC).strftime(tfmt)
        out.append(f'<line x1="{x}" x2="{x}" y1="{pt}" y2="{pb}" class="grid"/>'
                   f'<text x="{x}" y="{pb + 16}" class="xl">{label}</text>')
    body = []
    for line in c.lines:
        if not line.points:
            continue
        xs = [_x(c, t) for t, _ in line.points]
        ys = [_y(c, v) for _, v in line.points]
        d = [f"M{_f(xs[0])} {_f(ys[0])}"]
        for i in range(1, len(xs)):
            d.append(f"H{_f(xs[i])}V{_f(ys[i])}")
        if line.extend_to is not None:
            d.append(f"H{_f(_x(c, line.extend_to))}")
        path = "".join(d)
        if line.fill_below:
            body.append(f'<path d="{path}V{_f(pb)}H{_f(xs[0])}Z" fill="{line.fill_below}" stroke="none"/>')
        dash = f' stroke-dasharray="{line.dash}"' if line.dash else ""
        body.append(f'<path d="{path}" fill="none" stroke="{line.color}" stroke-width="{line.width}"{dash}/>')
    out.append(f'<g clip-path="url(#{cid})">' + "".join(body) + "</g>")
    spots: list[tuple[float, float]] = []  # where point-like markers sit, for the cluster counts
    for m in c.markers:
        x = _f(_x(c, m.t_us))
        title = f"<title>{_esc(m.title)}</title>"
        css = f' class="{m.css}"' if m.css else ""
        if m.shape == "vline":
            out.append(f'<g{css}><line x1="{x}" x2="{x}" y1="{pt}" y2="{pb}" stroke="{m.color}" stroke-width="1.2" '
                       f'stroke-dasharray="4 3"/><path d="M{x} {pt}h-4l4 7l4 -7z" fill="{m.color}"/>'
                       + (_vline_label(c, m) if m.label else "") + f"{title}</g>")
        elif m.shape == "triangle":
            spots.append((_x(c, m.t_us), pt + 2.0))
            out.append(f'<path{css} d="M{x} {pt + 8}l-4.5 -7.5h9z" fill="{m.color}">{title}</path>')
        else:
            yv = min(max(_y(c, m.value if m.value is not None else c.hi), pt), pb)
            spots.append((_x(c, m.t_us), yv))
            y = _f(yv)
            if m.shape == "ring":
                out.append(f'<circle{css} cx="{x}" cy="{y}" r="3.6" style="fill:#fff;fill-opacity:1;stroke:{m.color};'
                           f'stroke-width:1.4">{title}</circle>')
            else:
                out.append(f'<circle{css} cx="{x}" cy="{y}" r="3.8" fill="{m.color}">{title}</circle>')
    last_label = -1e9
    for (cx, cy), n in _clusters(spots):
        if n > 1 and cx - last_label > 26:  # markers drawn on top of each other: say how many lie there
            out.append(f'<text x="{_f(cx + 5)}" y="{_f(max(cy - 6, pt + 9))}" class="cl">\u00d7{n}</text>')
            last_label = cx
    if c.clipped_note:
        out.append(f'<text x="{pl + 6}" y="{pb - 6}" class="note">{_esc(c.clipped_note)}</text>')
    out.append("</svg>")
    return "".join(out)


# --------------------------------------------------------------------------------------------- page

BLUE, RED, ORANGE, GREEN, GREY, INK = "#1f6feb", "#cf222e", "#d97706", "#1a7f37", "#8c959f", "#24292f"

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f6f8fa;color:#24292f;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif}
main{max-width:1160px;margin:0 auto;padding:20px 20px 40px}
h1{font-size:24px;margin:0 0 2px}h2{font-size:18px;margin:28px 0 4px}h3{font-size:14px;margin:0 0 4px}
.sub{color:#57606a;margin:0 0 14px}.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px;margin:12px 0}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px}
.card .v{font-size:19px;white-space:nowrap;font-weight:600;font-variant-numeric:tabular-nums}.card .k{color:#57606a;font-size:12px}
table.t{border-collapse:collapse;background:#fff;border:1px solid #d0d7de;font-variant-numeric:tabular-nums}
table.t td,table.t th{padding:3px 10px;border-bottom:1px solid #eaeef2;text-align:left}table.t td.n{text-align:right}
.row{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}
.grid2{display:grid;grid-template-columns:repeat(2,1fr);gap:14px}
.panel{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 12px}
.cap{color:#57606a;font-size:12.5px;margin:4px 0 0;font-variant-numeric:tabular-nums}
.legend{font-size:12.5px;color:#57606a;margin:2px 0 6px}.legend span{margin-right:14px;white-space:nowrap}
.sw{display:inline-block;width:14px;height:3px;vertical-align:middle;margin-right:5px}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;vertical-align:middle;margin-right:5px}
.badge{font-size:11px;font-weight:600;padding:1px 7px;border-radius:10px;margin-left:8px;vertical-align:middle}
.ok{background:#dafbe1;color:#1a7f37}.bad{background:#ffebe9;color:#cf222e}
.notes{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:6px 12px;margin:10px 0}
footer{margin-top:28px;color:#57606a;font-size:12.5px}footer li{margin-bottom:4px}
svg.chart{display:block;max-width:100%;height:auto}
svg .plot{fill:#fff;stroke:#d0d7de}svg .grid{stroke:#eaeef2;stroke-width:1}svg .zero{stroke:#8c959f}
svg text{font:10.5px system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;fill:#57606a}
svg .yl{text-anchor:end;dominant-baseline:middle}svg .xl{text-anchor:middle}
svg .note{fill:#57606a;font-style:italic}svg .ml{font-weight:600}svg .end{text-anchor:end}
svg .cl{font-weight:600;fill:#24292f}svg circle{fill-opacity:.85;stroke:#fff;stroke-width:.8}svg path.bad-debt{stroke:#fff;stroke-width:.6}
"""


def _legend(items: Sequence[tuple[str, str, str]]) -> str:
    parts = []
    for kind, color, text in items:
        if kind == "line":
            parts.append(f'<span><i class="sw" style="background:{color}"></i>{_esc(text)}</span>')
        elif kind == "dash":
            parts.append(f'<span><i class="sw" style="background:repeating-linear-gradient(90deg,{color} 0 5px,'
                         f'transparent 5px 8px)"></i>{_esc(text)}</span>')
        elif kind == "ring":
            parts.append(f'<span><i class="dot" style="border:1.5px solid {color};background:#fff"></i>{_esc(text)}</span>')
        else:
            parts.append(f'<span><i class="dot" style="background:{color}"></i>{_esc(text)}</span>')
    return f'<div class="legend">{"".join(parts)}</div>'


def _card(value: str, key: str) -> str:
    return f'<div class="card"><div class="v">{_esc(value)}</div><div class="k">{_esc(key)}</div></div>'


def reserve_chart(r: Reserve, t0: int, t1: int) -> Chart:
    mults = [NANO] + [ch.after_nano for ch in r.multipliers]
    # Over the points drawn (one per time bucket), the 90th percentile: the top of the axis, so a tenth of the
    # time span at most is off scale (the first mints, against a custodian already full of shares). A short
    # series is drawn whole.
    drawn = sorted(v for _, v in r.ratio.points)
    top = (drawn[(len(drawn) - 1) * 9 // 10] if len(drawn) >= 20 else drawn[-1]) if drawn else max(mults)
    lo = min([r.ratio.lo, *mults]) if r.ratio.n else min(mults)
    hi = max(top, *mults)
    pad = max((hi - lo) // 10, 1)
    a_lo, a_hi, _ = y_axis(max(lo - pad, 0), hi + pad)
    step_pts = [(t0, NANO)] + [(ch.t_us, ch.after_nano) for ch in r.multipliers]
    chart = Chart("reserve", r.symbol, W_HALF, 190, t0, t1, a_lo, a_hi, 9,
                  label=f"{r.symbol}: shares held per token over effective time against the multiplier")
    chart.lines.append(Line(step_pts, RED, 1.3, "5 3", extend_to=t1, fill_below="rgba(207,34,46,0.07)"))
    chart.lines.append(Line(r.ratio.points, BLUE, 1.7, extend_to=t1 if r.ratio.points else None))
    for ch in r.multipliers:
        chart.markers.append(Marker(ch.t_us, None, "vline", RED, f"multiplier {fmt_mult(ch.before_nano)} -> "
                                    f"{fmt_mult(ch.after_nano)} at {fmt_time(ch.t_us)} ({ch.cause_event_id})",
                                    "mult-change", f"x{fmt_mult_short(ch.before_nano)} \u2192 x{fmt_mult_short(ch.after_nano)}"))
    if r.breaches and r.min_headroom_t is not None and r.min_headroom_nano is not None:
        v = r.multiplier_at(r.min_headroom_t) + r.min_headroom_nano
        chart.markers.append(Marker(r.min_headroom_t, v, "ring", RED, f"lowest: {fmt_nano(v)} shares per token at "
                                    f"{fmt_time(r.min_headroom_t)}, below the multiplier", "breach"))
    if r.ratio.n and r.ratio.hi > a_hi:
        chart.clipped_note = f"\u2191 early ratios off scale (up to {fmt_nano(r.ratio.hi, 1)})"
    return chart


def _reserve_panel(r: Reserve, t0: int, t1: int) -> str:
    ok = r.breaches == 0
    badge = ('<span class="badge ok">covered throughout</span>' if ok else
             f'<span class="badge bad">below the multiplier at {r.breaches:,} point(s)</span>')
    if not r.ratio.n:
        badge = '<span class="badge ok">no tokens in circulation</span>'
    chart = reserve_chart(r, t0, t1)
    cap = [f"now <b>{fmt_nano(r.ratio.last if r.ratio.n else None, 4)}</b> shares per token "
           f"(held {fmt_nano(r.held_nano, 2)} shares / {fmt_nano(r.supply_nano, 2)} tokens), "
           f"multiplier <b>{fmt_mult(r.multiplier_nano)}</b>"]
    if r.min_headroom_nano is not None and r.min_headroom_t is not None:
        side = "over" if r.min_headroom_nano >= 0 else "below"
        cap.append(f"closest: {fmt_nano(abs(r.min_headroom_nano), 4)} {side} the multiplier at {fmt_time(r.min_headroom_t)}")
    cap.append(f"{r.ratio.n:,} changes, {len(r.ratio.points):,} drawn")
    if r.multipliers:
        cap.append("multiplier changes: " + ", ".join(
            f"{fmt_mult(c.before_nano)} \u2192 {fmt_mult(c.after_nano)} at {fmt_time(c.t_us)}" for c in r.multipliers))
    return (f'<div class="panel reserve" data-symbol="{_esc(r.symbol)}"><h3>{_esc(r.symbol)}{badge}</h3>'
            + render_chart(chart) + f'<p class="cap">{" · ".join(cap)}</p></div>')


def pool_chart(series: Series, key: str, color: str, bad_debts: Sequence[BadDebt], t0: int, t1: int) -> Chart:
    lo, hi = min(series.lo, 0), max(series.hi, 0)
    pad = (hi - lo) // 20
    a_lo, a_hi, _ = y_axis(lo - pad if lo < 0 else lo, hi + pad)
    chart = Chart("pool", key, W_FULL, 200, t0, t1, a_lo, a_hi, 6, label=f"{key} balance in USD over effective time")
    chart.lines.append(Line(series.points, color, 1.7, extend_to=t1 if series.points else None))
    for b in bad_debts:
        if b.socialised_micro_usd > 0 or b.insurance_micro_usd > 0:
            chart.markers.append(Marker(
                b.t_us, None, "triangle", RED if b.socialised_micro_usd > 0 else ORANGE,
                f"{b.account} {_short_time(b.t_us)} insurance {fmt_usd(b.insurance_micro_usd)} "
                f"LPs {fmt_usd(b.socialised_micro_usd)}",
                "bad-debt socialised" if b.socialised_micro_usd > 0 else "bad-debt insured"))
    return chart


def spot_chart(series: Series, liquidations: Sequence[Liquidation], t0: int, t1: int) -> Chart:
    pad = (series.hi - series.lo) // 20
    a_lo, a_hi, _ = y_axis(series.lo - pad, series.hi + pad)
    u = series.key
    chart = Chart("spot", u, W_FULL, 230, t0, t1, a_lo, a_hi, 6, label=f"{u} spot in USD with liquidations")
    chart.lines.append(Line(series.points, INK, 1.3, extend_to=t1 if series.points else None))
    for liq in liquidations:
        if liq.underlying not in (u, None):
            continue
        spot = liq.spot_on(u)
        if spot is None:
            continue
        bad = (liq.shortfall_micro_usd or 0) > 0
        title = (f"{liq.account} {_short_time(liq.t_us)} {u} {fmt_usd(spot)} equity {fmt_usd(liq.equity_micro_usd)}"
                 f" MM {fmt_usd(liq.maintenance_margin_micro_usd)} shortfall {fmt_usd(liq.shortfall_micro_usd)}"
                 f" \u2190 {liq.cause_event_id}")
        if liq.underlying is None:
            chart.markers.append(Marker(liq.t_us, spot, "ring", GREY, title + " (not a series mark)",
                                        f"liq liq-{u} liq-other"))
        else:
            chart.markers.append(Marker(liq.t_us, spot, "circle", RED if bad else ORANGE, title, f"liq liq-{u}"))
    return chart


def _sum(values: Sequence[int]) -> int:
    return sum(values, 0)


def render_html(d: ReportData) -> str:
    _chart_ids[0] = 0
    c = d.counts
    state_hash = d.meta.get("state_hash")
    head = [f"<h1>stockledger report</h1><p class=\"sub\">{_esc(d.db_name)} · written by the {_esc(d.writer)} · "
            f"effective time {_esc(fmt_time(d.t0))} \u2192 {_esc(fmt_time(d.t1))}</p>"]
    head.append(f'<p>State hash: <span class="mono" id="state-hash">{_esc(state_hash)}</span></p>' if state_hash else
                "<p>State hash: <i>not in this file</i> (no ledger_meta: the projector does not fold state)</p>")
    triggered = c.get("LiquidationTriggered", 0)
    with_shortfall = sum(1 for liq in d.liquidations if (liq.shortfall_micro_usd or 0) > 0)
    ins = _sum([b.insurance_micro_usd for b in d.bad_debts])
    soc = _sum([b.socialised_micro_usd for b in d.bad_debts])
    cards = [_card(f"{c['postings']:,}", "postings (legs)")]
    if "posting_batches" in c:
        cards.append(_card(f"{c['posting_batches']:,}", "posting batches"))
    cards += [_card(f"{triggered:,}", f"liquidations ({with_shortfall:,} with bad debt)"),
              _card(f"{c.get('rejections', 0):,}", "rejections"),
              _card(fmt_usd(ins), "bad debt paid by insurance (USD)"),
              _card(fmt_usd(soc), "bad debt socialised to LPs (USD)"),
              _card(fmt_usd(d.pool.last if d.pool.n else None), "main pool USD cash now"),
              _card(fmt_usd(d.insurance.last if d.insurance.n else None), "insurance fund USD now")]
    if "series_marks" in c:
        cards.append(_card(f"{c['series_marks']:,}", "series marks"))
    if "request_outcomes" in c:
        cards.append(_card(f"{c.get('outcomes approved', 0):,} / {c.get('outcomes rejected', 0):,}",
                           "request outcomes approved / rejected"))
    if d.meta.get("records"):
        cards.append(_card(f"{int(d.meta['records']):,}", "records replayed"))
    head.append(f'<div class="cards">{"".join(cards)}</div>')
    rej_rows = "".join(f'<tr><td>{_esc(r)}</td><td class="n">{n:,}</td></tr>' for r, n in d.rejections_by_reason)
    liq_rows = "".join(f'<tr><td>{_esc(k)}</td><td class="n">{c.get(k, 0):,}</td></tr>' for k in LIQUIDATION_KINDS)
    head.append('<div class="row">'
                f'<table class="t" id="rejections"><tr><th>rejection reason</th><th>count</th></tr>'
                f'{rej_rows or "<tr><td colspan=2>none</td></tr>"}</table>'
                f'<table class="t"><tr><th>liquidation rows</th><th>count</th></tr>{liq_rows}</table></div>')
    if d.notes:
        head.append('<div class="notes">' + "<br>".join(_esc(n) for n in d.notes) + "</div>")
    body: list[str] = []
    if d.t0 is not None and d.t1 is not None:
        t0, t1 = d.t0, d.t1
        body.append('<h2>1. Reserves per symbol: shares held per token in circulation</h2>'
                    + _legend([("line", BLUE, "shares held at the custodian / tokens in circulation"),
                               ("dash", RED, "multiplier (shares per token); the shaded area below it is a breach"),
                               ("line", RED, "\u25bc multiplier change (split, reinvested dividend)")]))
        body.append('<div class="grid2">' + "".join(_reserve_panel(r, t0, t1) for r in d.reserves) + "</div>")
        if not d.reserves:
            body.append("<p>No custodian or supply postings.</p>")
        body.append("<h2>2. Main pool and insurance fund (USD)</h2>"
                    + _legend([("line", BLUE, "main pool USD cash (pool:main:USD)"),
                               ("line", GREEN, "insurance fund USD (pool:insurance:USD)"),
                               ("dot", RED, "\u25bc bad debt socialised to LPs"),
                               ("dot", ORANGE, "\u25bc bad debt paid by the insurance fund only")]))
        for series, key, color, title in ((d.pool, MAIN_POOL_USD, BLUE, "Main pool USD cash"),
                                          (d.insurance, INSURANCE_USD, GREEN, "Insurance fund USD")):
            cap = (f"now {fmt_usd(series.last)} USD · min {fmt_usd(series.lo)} · max {fmt_usd(series.hi)} · "
                   f"{series.n:,} changes, {len(series.points):,} drawn" if series.n else "no postings on this account")
            body.append(f'<div class="panel" data-account="{_esc(key)}"><h3>{_esc(title)} '
                        f'<span class="mono">{_esc(key)}</span></h3>'
                        + render_chart(pool_chart(series, key, color, d.bad_debts, t0, t1))
                        + f'<p class="cap">{cap}</p></div>')
        body.append("<h2>3. Liquidations on the BTC / ETH price timeline</h2>"
                    + _legend([("line", INK, "spot (USD) from series marks"),
                               ("dot", ORANGE, "liquidation covered by the account"),
                               ("dot", RED, "liquidation with a shortfall (bad debt)"),
                               ("ring", GREY, "liquidation whose cause is not a series mark (shown on every chart)")])
                    + '<p class="cap">Hover a marker: account, time (UTC), spot, equity, maintenance margin and shortfall '
                      "(USD), and the event that caused it.</p>")
        for s in d.spots:
            on = [liq for liq in d.liquidations if liq.underlying in (s.key, None) and liq.spot_on(s.key) is not None]
            cap = (f"spot now {fmt_usd(s.last)} USD · min {fmt_usd(s.lo)} at {fmt_time(s.lo_t)} · max {fmt_usd(s.hi)} · "
                   f"{s.n:,} marks, {len(s.points):,} drawn · {len(on):,} liquidations marked")
            body.append(f'<div class="panel" data-underlying="{_esc(s.key)}"><h3>{_esc(s.key)} spot</h3>'
                        + render_chart(spot_chart(s, d.liquidations, t0, t1)) + f'<p class="cap">{cap}</p></div>')
        if not d.spots:
            body.append("<p>No series marks.</p>")
    foot = f"""<footer><h3>How each chart is computed</h3><ol>
<li><b>Reserves.</b> For each symbol, the balance of <span class="mono">custodian:&lt;SYM&gt;</span> in asset
<span class="mono">SH:&lt;SYM&gt;</span> (shares held; the in-transit clearing account is not counted) and minus the
balance of <span class="mono">supply:&lt;SYM&gt;</span> in asset <span class="mono">&lt;SYM&gt;</span> (tokens in
circulation) are cumulative sums (SQL window functions) of the <span class="mono">postings</span> legs ordered by
effective time (<span class="mono">occurred_at_us</span>), credit +, debit -. The line is
floor(shares held &times; 10<sup>9</sup> / tokens) in nano-shares per token, drawn where tokens are in circulation.
The multiplier is rebuilt from the <span class="mono">CorporateAction</span> postings on the custodian: each moves the
holding by new/base, so new = ceil(base &times; held after / held before), with held taken in processing order
(partition, offset). Below-the-multiplier points and the closest approach are counted over every change, not just
the points drawn.</li>
<li><b>Pool and insurance.</b> Cumulative balances of <span class="mono">{MAIN_POOL_USD}</span> and
<span class="mono">{INSURANCE_USD}</span> in USD over effective time, from the same postings. Markers: the
<span class="mono">liquidations</span> rows of kind <span class="mono">BadDebtCovered</span>, per liquidation, whose
<span class="mono">INSURANCE</span> or <span class="mono">LP_SOCIALISED</span> steps are non-zero.</li>
<li><b>Liquidations.</b> Spot per underlying from <span class="mono">series_marks</span> (the
<span class="mono">SeriesState</span> rows: underlying, <span class="mono">spot_micro_usd</span>), one value per
effective time. One marker per liquidation (<span class="mono">LiquidationTriggered</span> joined to its
<span class="mono">LiquidationExecuted</span> by trigger event id) at its effective time, placed on the chart of
the underlying whose mark caused it (matched through the SeriesState event id,
<span class="mono">series:&lt;cause&gt;:&lt;series&gt;</span>), at that mark's spot.</li>
<li>Every figure is an integer in the ledger's units (nano-shares, micro-USD) until it is scaled to an SVG
coordinate. Each line is downsampled to at most {MAX_POINTS} points (the last value in each time bucket) and drawn
as steps: a balance holds until the next posting. Hover a marker for its figures. Times are UTC.</li>
</ol></footer>"""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>stockledger report \u2014 {_esc(d.db_name)}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(head)}{''.join(body)}{foot}</main></body></html>\n")


def write_report(db: Path, out: Path) -> ReportData:
    """Open ``db`` read-only, compute the report and write the page to ``out``."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        data = load_report(con, db.name)
    finally:
        con.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(data), encoding="utf-8")
    return data
