"""Three-way reconciliation per symbol (ISIN) as of a time: ledger vs chain vs custodian (DESIGN.md section 7).

Pure functions over a :class:`~ledger.state.LedgerState` (plus, optionally, statement / supply rows
parsed from files that are not imported yet). No I/O, no clock, no floats.

The legs, per listed symbol (quantities in nano-units; displayed in shares = tokens x multiplier):

1. inside the ledger: holder balances (wallet + margin) + main pool + insurance pool == the ledger's
   supply of tokens;
2. ledger vs chain: those tokens == the observed on-chain supply (latest observation);
3. ledger vs custodian: the sum of the latest statements' AGGR == the ledger's book of the custodian
   (``custodian:<sym>``, i.e. ``shares_held_nano``), and the custodian covers the holders' tokens x
   multiplier (a shortfall is a quantity break).

Break classes:

* ``timing``             the custodian/ledger difference equals in-transit movements (the clearing account
                         ``custodian:<sym>:in_transit``) that started inside the tolerance window; clears
                         when they settle;
* ``missing_internal``   an external source shows a holding the ledger lacks (ledger zero, or a symbol /
                         ISIN the ledger does not list, or a CANCEL of a statement the ledger does not hold);
* ``missing_external``   the ledger has a holding and the external source has none (no statement, no
                         supply observation, or a zero);
* ``quantity_mismatch``  both sides hold it, in different quantities (not explained by timing), a reserve
                         shortfall, or liabilities that differ from the ledger's own supply;
* ``instrument_mismatch`` a statement's ISIN differs from the listed ISIN of its symbol (detected from the
                         file before import: the core rejects such a statement);
* ``duplicate``          the same statement (statement_ref + ISIN) or observation again: twice in the
                         files, already imported, or already the current statement;
* ``availability``       AVAI + NAVL != AGGR;
* ``stale_statement``    a current statement whose as_of is older than the tolerance (default 24 h)
                         before the recon time, or an out-of-order statement / observation the core
                         would reject as not newer;
* ``clearing``           an in-transit movement older than the timing window: the clearing account has
                         not returned to zero in time;
* ``multiplier_mismatch`` the oracle's latest mark reports a multiplier other than the ledger's own
                         history at that mark's publication time (a corporate action the oracle applied
                         early, late or not at all, or one the ledger lacks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from ledger.state import LedgerState
from ledger.units import SECOND_US
from services.por import (
    format_duration,
    format_nano,
    format_time,
    liabilities_by_symbol,
    shares_for_tokens_ceil,
)
from services.statements import StatementRow, SupplyRow

HOUR_US = 3_600 * SECOND_US
DEFAULT_TIMING_WINDOW_US = 48 * HOUR_US
DEFAULT_STALE_AFTER_US = 24 * HOUR_US

TIMING = "timing"
MISSING_INTERNAL = "missing_internal"
MISSING_EXTERNAL = "missing_external"
QUANTITY_MISMATCH = "quantity_mismatch"
INSTRUMENT_MISMATCH = "instrument_mismatch"
DUPLICATE = "duplicate"
AVAILABILITY = "availability"
STALE_STATEMENT = "stale_statement"
CLEARING = "clearing"
MULTIPLIER_MISMATCH = "multiplier_mismatch"
BREAK_CLASSES = (TIMING, MISSING_INTERNAL, MISSING_EXTERNAL, QUANTITY_MISMATCH, INSTRUMENT_MISMATCH, DUPLICATE,
                 AVAILABILITY, STALE_STATEMENT, CLEARING, MULTIPLIER_MISMATCH)

_SUBSET_STATE_CAP = 65_536


@dataclass(frozen=True)
class Break:
    """One reconciliation break; quantities in nano-shares (None where a column does not apply)."""

    symbol: str
    isin: str
    klass: str
    explanation: str
    ledger_nano: int | None = None
    chain_nano: int | None = None
    custodian_nano: int | None = None
    difference_nano: int | None = None  # external minus ledger


@dataclass(frozen=True)
class InTransit:
    """An open item of a clearing account: a custody movement instructed but not settled."""

    symbol: str
    movement_ref: str
    qty_nano: int  # signed: + a deposit on its way in, - a withdrawal on its way out
    since_us: int | None
    age_us: int | None
    overdue: bool

    @property
    def direction(self) -> str:
        return "DEPOSIT" if self.qty_nano > 0 else "WITHDRAWAL"

    def describe(self) -> str:
        age = "age unknown" if self.age_us is None else f"since {format_time(self.since_us)}, {format_duration(self.age_us)}"
        return f"{self.movement_ref} ({self.direction.lower()} {format_nano(abs(self.qty_nano))}, {age})"


@dataclass(frozen=True)
class StatementLine:
    """A current statement line per safekeeping account (from the ledger or from a file)."""

    safekeeping_account: str
    statement_ref: str
    statement_number: int
    as_of_us: int
    aggr_nano: int
    avai_nano: int
    navl_nano: int
    source: str  # "ledger" or "<file> line <n>"


@dataclass(frozen=True)
class SymbolRecon:
    """The three figures of one symbol and the inputs behind them (nano-units)."""

    symbol: str
    isin: str
    multiplier_nano: int
    supply_tokens_nano: int
    liabilities_tokens_nano: int
    ledger_shares_nano: int  # ceil(liabilities x multiplier)
    custody_book_nano: int  # the ledger's custodian:<sym> balance
    in_transit_nano: int  # sum of |open in-transit movements|
    chain_tokens_nano: int | None
    chain_shares_nano: int | None
    chain_block: int | None
    custodian_nano: int | None
    statements: tuple[StatementLine, ...]
    breaks: int = 0


@dataclass
class ReconResult:
    as_of_us: int
    timing_window_us: int
    stale_after_us: int
    symbols: list[SymbolRecon] = field(default_factory=list)
    breaks: list[Break] = field(default_factory=list)
    in_transit: list[InTransit] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for b in self.breaks:
            out[b.klass] = out.get(b.klass, 0) + 1
        return out

    def ok(self, allow_timing: bool = False) -> bool:
        """No breaks (or, with allow_timing, none but timing breaks inside the window)."""
        return all(allow_timing and b.klass == TIMING for b in self.breaks)


def _subset_matching(target: int, items: Sequence[InTransit]) -> list[InTransit] | None:
    """Some of the items whose |qty| add up to target exactly (smallest first found), or None."""
    if target <= 0:
        return None
    reach: dict[int, tuple[int, ...]] = {0: ()}
    for i, item in enumerate(items):
        amount = abs(item.qty_nano)
        for total, picked in list(reach.items()):
            new = total + amount
            if new > target or new in reach:
                continue
            reach[new] = (*picked, i)
            if new == target:
                return [items[j] for j in reach[new]]
            if len(reach) >= _SUBSET_STATE_CAP:
                break
    return None


def reconcile(
    state: LedgerState,
    as_of_us: int,
    statements: Sequence[StatementRow] = (),
    supplies: Sequence[SupplyRow] = (),
    in_transit_since: Mapping[tuple[str, str], int] | None = None,
    *,
    timing_window_us: int = DEFAULT_TIMING_WINDOW_US,
    stale_after_us: int = DEFAULT_STALE_AFTER_US,
) -> ReconResult:
    """Reconcile every listed symbol as of ``as_of_us``.

    ``statements`` / ``supplies`` are rows from files not imported yet: each is checked (instrument,
    availability, duplicate, out-of-order) and the acceptable ones are overlaid on the ledger's current
    statements and observations, as the core would apply them. ``in_transit_since`` maps
    (symbol, movement_ref) to the time the in-transit leg was recorded; a movement without a known
    start is taken to be inside the window (and says so).
    """
    result = ReconResult(as_of_us, timing_window_us, stale_after_us)
    breaks = result.breaks
    reserves = state.reserves
    isin_to_symbol = {r.isin: s for s, r in reserves.items()}
    current: dict[str, dict[str, StatementLine]] = {
        s: {
            acct: StatementLine(acct, st.statement_ref, st.statement_number, st.as_of_us, st.aggr_qty_nano, st.avai_qty_nano,
                                st.navl_qty_nano, "ledger")
            for acct, st in r.statements.items()
        }
        for s, r in reserves.items()
    }
    observed: dict[str, tuple[int | None, int, str]] = {
        s: (r.observed_supply_nano, r.observed_block, "ledger") for s, r in reserves.items()
    }
    seen_in_files: dict[str, str] = {}

    def add(symbol: str, isin: str, klass: str, explanation: str, **q: int | None) -> None:
        breaks.append(Break(symbol, isin, klass, explanation, **q))

    # ---- rows from files, in order: what the core would do with each, and the overlay it leaves
    for row in statements:
        r = reserves.get(row.symbol)
        if r is None:
            other = isin_to_symbol.get(row.isin)
            if other is not None:
                add(row.symbol, row.isin, INSTRUMENT_MISMATCH,
                    f"{row.where}: ISIN {row.isin} is listed as {other}, the statement names {row.symbol} (not listed)",
                    custodian_nano=row.aggr_nano)
            else:
                add(row.symbol, row.isin, MISSING_INTERNAL,
                    f"{row.where}: the custodian reports {format_nano(row.aggr_nano)} of {row.symbol} / {row.isin} "
                    f"in {row.safekeeping_account}; the ledger does not list this instrument",
                    custodian_nano=row.aggr_nano, ledger_nano=0, difference_nano=row.aggr_nano)
            continue
        if row.isin != r.isin:
            other = isin_to_symbol.get(row.isin)
            tail = f"; {row.isin} is {other}'s ISIN" if other else ""
            add(row.symbol, row.isin, INSTRUMENT_MISMATCH,
                f"{row.where}: statement ISIN {row.isin} for {row.symbol}, but {row.symbol} is listed with {r.isin}{tail}; "
                f"the ledger rejects it (invalid_statement)", custodian_nano=row.aggr_nano)
            continue
        if row.avai_nano + row.navl_nano != row.aggr_nano:
            total = row.avai_nano + row.navl_nano
            add(row.symbol, row.isin, AVAILABILITY,
                f"{row.where}: AVAI {format_nano(row.avai_nano)} + NAVL {format_nano(row.navl_nano)} = {format_nano(total)} "
                f"!= AGGR {format_nano(row.aggr_nano)} ({row.statement_ref}, {row.safekeeping_account})",
                custodian_nano=row.aggr_nano, difference_nano=total - row.aggr_nano)
            continue
        eid = row.event_id
        if eid in seen_in_files:
            add(row.symbol, row.isin, DUPLICATE,
                f"{row.where}: statement_ref {row.statement_ref} / {row.isin} appears again (first at {seen_in_files[eid]})",
                custodian_nano=row.aggr_nano)
            continue
        if eid in state.seen:
            add(row.symbol, row.isin, DUPLICATE,
                f"{row.where}: statement_ref {row.statement_ref} / {row.isin} was already imported (event {eid})",
                custodian_nano=row.aggr_nano)
            continue
        seen_in_files[eid] = row.where
        lines = current[row.symbol]
        cur = lines.get(row.safekeeping_account)
        if row.function == "CANCEL":
            if cur is None or cur.statement_ref != row.statement_ref:
                held = (f"the current statement there is {cur.statement_ref} ({cur.source})" if cur
                        else "no statement is current there")
                add(row.symbol, row.isin, MISSING_INTERNAL,
                    f"{row.where}: CANCEL of statement {row.statement_ref} for {row.safekeeping_account}, which the "
                    f"ledger does not hold: {held}; the ledger rejects it", custodian_nano=row.aggr_nano)
            else:
                del lines[row.safekeeping_account]
            continue
        if cur is not None:
            if cur.statement_ref == row.statement_ref:
                add(row.symbol, row.isin, DUPLICATE,
                    f"{row.where}: statement_ref {row.statement_ref} is already the current statement of "
                    f"{row.safekeeping_account} ({cur.source})", custodian_nano=row.aggr_nano)
                continue
            if row.statement_number <= cur.statement_number:
                add(row.symbol, row.isin, STALE_STATEMENT,
                    f"{row.where}: statement number {row.statement_number} ({row.statement_ref}) is not newer than "
                    f"{cur.statement_number} ({cur.statement_ref}) held for {row.safekeeping_account}; the ledger rejects it",
                    custodian_nano=row.aggr_nano)
                continue
        lines[row.safekeeping_account] = StatementLine(
            row.safekeeping_account, row.statement_ref, row.statement_number, row.as_of_us, row.aggr_nano, row.avai_nano,
            row.navl_nano, row.where)

    for sup in supplies:
        r = reserves.get(sup.symbol)
        if r is None:
            add(sup.symbol, "", MISSING_INTERNAL,
                f"{sup.where}: {sup.chain} shows a supply of {format_nano(sup.supply_nano)} {sup.symbol} tokens at block "
                f"{sup.block_number}; the ledger does not list {sup.symbol}", chain_nano=sup.supply_nano)
            continue
        eid = sup.event_id
        if eid in seen_in_files or eid in state.seen:
            first = seen_in_files.get(eid, "the ledger")
            add(sup.symbol, r.isin, DUPLICATE, f"{sup.where}: observation {eid} appears again (first in {first})")
            continue
        seen_in_files[eid] = sup.where
        _obs, block, _src = observed[sup.symbol]
        if sup.block_number < block:
            add(sup.symbol, r.isin, STALE_STATEMENT,
                f"{sup.where}: observation at block {sup.block_number} is older than block {block} already held; "
                f"the ledger rejects it")
            continue
        observed[sup.symbol] = (sup.supply_nano, sup.block_number, sup.where)

    # ---- per symbol
    liabilities = liabilities_by_symbol(state)
    window = timing_window_us
    since_map = in_transit_since or {}
    for sym in sorted(reserves):
        r = reserves[sym]
        isin = r.isin
        mult = r.multiplier_at(as_of_us)
        liab = liabilities.get(sym, 0)
        ledger_shares = shares_for_tokens_ceil(liab, mult)
        book = r.shares_held_nano

        items: list[InTransit] = []
        for ref in sorted(r.in_transit_refs):
            since = since_map.get((sym, ref))
            age = None if since is None else max(0, as_of_us - since)
            items.append(InTransit(sym, ref, r.in_transit_refs[ref], since, age, age is not None and age > window))
        result.in_transit.extend(items)

        # 1. inside the ledger
        if liab != r.supply_nano:
            add(sym, isin, QUANTITY_MISMATCH,
                f"holder balances + pools = {format_nano(liab)} tokens but the ledger's supply:{sym} is "
                f"{format_nano(r.supply_nano)} tokens", ledger_nano=ledger_shares,
                difference_nano=shares_for_tokens_ceil(r.supply_nano, mult) - ledger_shares)

        # 2. ledger vs chain
        obs, block, obs_src = observed[sym]
        chain_shares = None if obs is None else shares_for_tokens_ceil(obs, mult)
        where = "" if obs_src == "ledger" else f"{obs_src}: "
        if obs is None:
            if liab > 0:
                add(sym, isin, MISSING_EXTERNAL,
                    f"no on-chain supply observation; the ledger owes {format_nano(liab)} tokens", ledger_nano=ledger_shares)
        elif obs != liab:
            q = {"ledger_nano": ledger_shares, "chain_nano": chain_shares, "difference_nano": chain_shares - ledger_shares}
            detail = (f"{where}on-chain supply {format_nano(obs)} tokens at block {block} vs ledger {format_nano(liab)} "
                      f"tokens (difference {format_nano(obs - liab)} tokens)")
            if liab == 0:
                add(sym, isin, MISSING_INTERNAL, f"{detail}: the chain shows tokens the ledger does not have", **q)
            elif obs == 0:
                add(sym, isin, MISSING_EXTERNAL, f"{detail}: the chain shows none of the ledger's tokens", **q)
            else:
                add(sym, isin, QUANTITY_MISMATCH, detail, **q)

        # 3. ledger vs custodian
        lines = current[sym]
        custodian = None
        if not lines:
            if book > 0 or liab > 0:
                add(sym, isin, MISSING_EXTERNAL,
                    f"no custodian statement; the ledger books {format_nano(book)} shares at custodian:{sym}",
                    ledger_nano=book)
        else:
            custodian = sum(line.aggr_nano for line in lines.values())
            stated = ", ".join(
                f"{line.safekeeping_account} {line.statement_ref} as of {format_time(line.as_of_us)}"
                + ("" if line.source == "ledger" else f" ({line.source})")
                for line in sorted(lines.values(), key=lambda x: x.safekeeping_account))
            d = custodian - book
            q = {"ledger_nano": book, "custodian_nano": custodian, "difference_nano": d}
            if d != 0:
                in_window = _subset_matching(d, [i for i in items if not i.overdue])
                if in_window is not None:
                    add(sym, isin, TIMING,
                        f"custodian AGGR {format_nano(custodian)} ({stated}) exceeds the custodian:{sym} book by "
                        f"{format_nano(d)} = in transit: {'; '.join(i.describe() for i in in_window)}; clears when "
                        f"{'it settles' if len(in_window) == 1 else 'they settle'}", **q)
                else:
                    overdue = _subset_matching(d, items)
                    detail = f"custodian AGGR {format_nano(custodian)} ({stated}) vs custodian:{sym} book {format_nano(book)}"
                    if overdue is not None:
                        detail += (f"; equal to in-transit movements beyond the {format_duration(window)} window: "
                                   + "; ".join(i.describe() for i in overdue))
                    if book == 0:
                        add(sym, isin, MISSING_INTERNAL, f"{detail}: the custodian holds shares the ledger does not book", **q)
                    elif custodian == 0:
                        add(sym, isin, MISSING_EXTERNAL, f"{detail}: the custodian states none of the booked shares", **q)
                    else:
                        add(sym, isin, QUANTITY_MISMATCH, detail, **q)
            if custodian < ledger_shares:
                add(sym, isin, QUANTITY_MISMATCH,
                    f"reserve shortfall: custodian AGGR {format_nano(custodian)} < holders' {format_nano(liab)} tokens x "
                    f"multiplier {format_nano(mult)} = {format_nano(ledger_shares)} shares",
                    ledger_nano=ledger_shares, custodian_nano=custodian, difference_nano=custodian - ledger_shares)
            for line in sorted(lines.values(), key=lambda x: x.safekeeping_account):
                src = "" if line.source == "ledger" else f"{line.source}: "
                if line.avai_nano + line.navl_nano != line.aggr_nano:
                    add(sym, isin, AVAILABILITY,
                        f"{src}{line.statement_ref} ({line.safekeeping_account}): AVAI + NAVL != AGGR",
                        custodian_nano=line.aggr_nano, difference_nano=line.avai_nano + line.navl_nano - line.aggr_nano)
                age = as_of_us - line.as_of_us
                if age > stale_after_us:
                    add(sym, isin, STALE_STATEMENT,
                        f"{src}statement {line.statement_ref} ({line.safekeeping_account}) is as of "
                        f"{format_time(line.as_of_us)}, {format_duration(age)} before the recon time "
                        f"(tolerance {format_duration(stale_after_us)})", custodian_nano=line.aggr_nano)

        # 4. the oracle's multiplier against the ledger's own history, at the mark's publication time
        mark = state.prices.get(sym)
        if mark is not None:
            reported = mark.oracle_multiplier_nano or mark.multiplier_nano
            recorded = r.multiplier_at(mark.published_at_us)
            if reported != recorded:
                add(sym, isin, MULTIPLIER_MISMATCH,
                    f"the oracle's mark published {format_time(mark.published_at_us)} reports {format_nano(reported)} "
                    f"shares per token; the ledger's corporate actions give {format_nano(recorded)} at that time",
                    difference_nano=reported - recorded)

        # clearing account custodian:<sym>:in_transit must return to zero
        for item in items:
            if item.overdue:
                add(sym, isin, CLEARING,
                    f"custodian:{sym}:in_transit has not returned to zero: {item.describe()} is beyond the "
                    f"{format_duration(window)} window", ledger_nano=abs(item.qty_nano))

        result.symbols.append(SymbolRecon(
            sym, isin, mult, r.supply_nano, liab, ledger_shares, book, sum(abs(i.qty_nano) for i in items), obs,
            chain_shares, block if obs is not None else None, custodian,
            tuple(sorted(lines.values(), key=lambda x: x.safekeeping_account))))
    per_symbol: dict[str, int] = {}
    for b in breaks:
        per_symbol[b.symbol] = per_symbol.get(b.symbol, 0) + 1
    result.symbols = [replace(s, breaks=per_symbol.get(s.symbol, 0)) for s in result.symbols]
    return result
