"""Surveillance: after every event, re-value every account whose health that event may have moved, and liquidate.

The invariant (DESIGN section 5): after every applied event, no account with positions has equity
below maintenance margin (nor an account with a cash debt negative equity) unless that event's
outcome liquidates it. `reference` mode re-values every such account after every event; the indexed
mode re-values only the accounts that can have moved, and every skip it makes is provably safe:

An account's buffer B = equity - MM (equity alone for a debt without positions) changes only when
  1. its own collateral, cash or positions change (its own events: always re-valued);
  2. a price it is exposed to moves: a stock it holds as collateral (valued at price x multiplier, so
     a split or reverse split with its price is no move at all) or the spot of an underlying it has
     options on (positions are valued at theo at the live spot: another trader's flow, the pool's
     liquidity and its lean move no one's equity);
  3. a step: a stock's market status flips or its mark turns stale (the haircut add-on), or an
     underlying's volatility changes: every holder is re-valued;
  4. funding accrues (at the underlying's marks and at trades on the series).
When an account is re-valued and found healthy, its buffer (less a few micro-USD of rounding slack
per line) is spread over these causes: a share for funding becomes a time by which accrual at the
assumed premium bound could have used it up; the rest is spread over its instruments in proportion
to their typical dollar moves, each becoming a trigger level at distance share / sensitivity, with
sensitivities that are upper bounds (tokens: quantity; options: the quote's local slope bound, valid
within SLOPE_WINDOW_PPM of the spot, where option triggers are capped). As
long as no level is crossed and the time has not come, sum(sensitivity x move) + funding < buffer,
so the account cannot be under margin. When a series' premium outgrows the bound its holders were
armed with, the bound is raised to four times the premium and they are re-valued.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import Any

from ledger.liquidation import liquidate
from ledger.outcome import Outcome
from ledger.quotes import SLOPE_WINDOW_PPM, quote
from ledger.risk import Health, account_health, collateral_units, haircut_ppm, is_liquidatable
from ledger.state import AccountState, LedgerState
from ledger.units import NANO, PPM
from ledger.watch_index import MIN_COMPACTION_PUSHES, Surveillance, recheck_step_exposed, stock_level

MAX_RECHECK_INTERVAL_US = 24 * 3_600 * 1_000_000  # a backstop: every armed account is re-valued daily
# Sensitivities share one denominator: per micro-USD of spot for options (slope ppm x |volume| nano),
# per unit of price_micro_usd x multiplier_nano for tokens (qty nano / 1e18).
SENSITIVITY_DEN = PPM * NANO * NANO
FUNDING_WAIT_SCALE = NANO * 10**12  # micro-USD per microsecond, scaled: see arm()
ROUNDING_SLACK_PER_LINE = 3  # micro-USD: floors and ceilings in valuing one position or token balance


def sweep(state: LedgerState, at_us: int, cause: dict[str, Any], out: Outcome) -> None:
    """After an applied event: find the accounts it may have moved, re-value them in account order, liquidate."""
    surv = state.surveillance
    due, moved, known = surv.pending, surv.moved, surv.known_health
    surv.pending, surv.moved, surv.known_health = {}, {}, {}
    _stale_steps(state, at_us, due)
    if surv.reference:
        due = {a: None for a, acct in state.accounts.items() if acct.positions or acct.cash_micro_usd < 0}
    else:
        for instrument, level in moved.items():
            _crossed(surv, instrument, level, due)
        timed = surv.due
        current = surv.version.get
        while timed and timed[0][0] <= at_us:
            _, account, version = heappop(timed)
            if current(account) == version:
                due[account] = None
    if not due:
        return
    accounts = state.accounts
    units = None  # collateral units at this instant, worked out once for the whole sweep
    for account in sorted(due):
        acct = accounts[account]
        if not acct.positions and acct.cash_micro_usd >= 0:
            disarm(surv, account)  # neither liquidatable nor armed: only its old triggers lapse
            continue
        if units is None:
            units = collateral_units(state, at_us)
        health = known.get(account) if not surv.reference else None
        if health is None:
            health = account_health(state, acct, at_us, units)
        if is_liquidatable(health, bool(acct.positions)):
            for other in liquidate(state, acct, at_us, cause, health, out):
                known.pop(other, None)  # auto-deleveraged: a health worked out before it is stale
            if not acct.positions and acct.cash_micro_usd >= 0:
                disarm(surv, account)
                continue
            units = collateral_units(state, at_us)  # the liquidation moved no price, but keep it exact
            health = account_health(state, acct, at_us, units)
        if not surv.reference:
            arm(state, acct, health, at_us, units)


def _stale_steps(state: LedgerState, at_us: int, due: dict[str, None]) -> None:
    """Stocks whose mark turned stale by now (haircut add-on steps up): holders armed without that step budgeted are re-valued."""
    surv = state.surveillance
    # The set holds from stale_as_of_us up to next_stale_us. An event may be dated before the one folded
    # before it: then it is worked out again, since a mark stale then may be fresh now and must step up
    # again (re-valuing its holders) when it turns. getattr: snapshots pickled before the field lack it.
    if getattr(surv, "stale_as_of_us", 0) <= at_us < surv.next_stale_us:
        return
    surv.stale_as_of_us = at_us
    limit = state.params.price_staleness_limit_us
    stale = state.stale_prices
    next_stale = None
    for symbol, price in state.prices.items():
        if symbol not in state.reserves:
            continue
        turns_stale_us = price.published_at_us + limit + 1
        if at_us >= turns_stale_us:
            if symbol not in stale:
                stale[symbol] = None
                recheck_step_exposed(surv, symbol, due)
        else:
            stale.pop(symbol, None)
            if next_stale is None or turns_stale_us < next_stale:
                next_stale = turns_stale_us
    surv.next_stale_us = next_stale if next_stale is not None else 2**62


def _crossed(surv: Surveillance, instrument: str, level: int, due: dict[str, None]) -> None:
    current = surv.version.get
    low = surv.low.get(instrument)
    while low and -low[0][0] >= level:
        _, account, version = heappop(low)
        if current(account) == version:
            due[account] = None
    high = surv.high.get(instrument)
    while high and high[0][0] <= level:
        _, account, version = heappop(high)
        if current(account) == version:
            due[account] = None


def disarm(surv: Surveillance, account: str) -> None:
    surv.version[account] = surv.version.get(account, 0) + 1


def arm(state: LedgerState, acct: AccountState, health: Health, at_us: int, units: dict[str, tuple[int, int]]) -> None:
    """Spread the account's buffer over funding time and its instruments' moves; push the triggers.

    units: ledger.risk.collateral_units at at_us (price x multiplier, PPM - haircut per symbol).
    """
    surv = state.surveillance
    account = acct.account
    version = surv.version.get(account, 0) + 1  # the account's older entries are now stale
    surv.version[account] = version
    positions = acct.positions
    if not positions and acct.cash_micro_usd >= 0:
        return
    p = state.params
    prices = state.prices
    all_series = state.series
    lines = len(positions) + len(acct.margin_nano)
    buffer = health.equity_micro_usd - health.maintenance_micro_usd - ROUNDING_SLACK_PER_LINE * lines - 2
    if not positions:
        buffer += health.maintenance_micro_usd  # a debt without positions is liquidatable below zero equity
    buffer = max(buffer, 0)
    time_budget = buffer * p.funding_buffer_share_ppm // PPM
    price_budget = buffer - time_budget
    # Funding: sum |volume| x premium bound / T, rounded up, in micro-USD per microsecond x NANO x 1e12.
    bounds = surv.funding_bound_micro_usd
    funding_num = 0
    # Option sensitivity per underlying, per micro-USD of spot over PPM x NANO, for a fall and for a rise:
    # sum |volume_nano| x slope_ppm, with the quote's local bounds (valid within the window) and the global
    # ones (anywhere). Theo moves a position one way only (long calls and short puts lose on a fall, long
    # puts and short calls on a rise); MM may rise either way.
    option_num: dict[str, list[int]] = {}  # underlying -> [local fall, local rise, global fall, global rise]
    memo = surv.quotes
    for series_id, pos in positions.items():
        series = all_series[series_id]
        volume = abs(pos.volume_nano)
        bound = bounds.get((series_id, 1 if pos.volume_nano > 0 else -1), 0)  # what this side may pay
        funding_num += -((-volume * bound * 1_000_000) // series.funding_period_s)
        # The quote at this spot and volatility (account_health just used it; a volatility change re-values
        # every holder); quote()'s memo check inlined, as in account_health.
        q = memo.get(series_id)
        price = prices[series.underlying]
        if q is None or q[0] != price.price_micro_usd or q[1] != price.volatility_ppm:
            q = quote(state, series)
        loses_on_fall = (pos.volume_nano > 0) == (series.option_kind == "CALL")
        if pos.volume_nano < 0:  # a short's theo + MM as a whole, either way (ledger.quotes.Quote)
            local_theo = any_theo = 0
            local_mm, any_mm = volume * q.short_buffer_slope_ppm, volume * q.short_buffer_slope_any_ppm
        else:
            local_theo, any_theo = volume * q.delta_slope_ppm, volume * q.delta_slope_any_ppm
            local_mm, any_mm = volume * q.long_mm_slope_ppm, volume * q.long_mm_slope_any_ppm
        sums = option_num.get(series.underlying)
        if sums is None:
            sums = option_num[series.underlying] = [0, 0, 0, 0]
        if loses_on_fall:
            sums[0] += local_theo + local_mm
            sums[1] += local_mm
            sums[2] += any_theo + any_mm
            sums[3] += any_mm
        else:
            sums[0] += local_mm
            sums[1] += local_theo + local_mm
            sums[2] += any_mm
            sums[3] += any_theo + any_mm
    wait_us = MAX_RECHECK_INTERVAL_US if funding_num == 0 else time_budget * FUNDING_WAIT_SCALE // funding_num
    # Equity counts funding accrued to at_us (ledger.risk.account_health), so only later accrual eats the share.
    due_us = at_us + min(wait_us, MAX_RECHECK_INTERVAL_US)
    heappush(surv.due, (due_us, account, version))
    pushed = 1
    # Each instrument i: level X_i, sensitivities (fall, rise) / SENSITIVITY_DEN, typical move X_i x sigma_i.
    # Shares of the budget in proportion to max(fall, rise) x X_i x sigma_i, each side's distance its share
    # over its sensitivity: an instrument moves one way at a time, so no combination of moves short of the
    # triggers can exceed the budget (see _spread).
    legs: list[tuple[str, int, tuple[int, int], tuple[int, int] | None, int]] = []  # (instrument, level, local, global, sigma)
    for underlying, (local_fall, local_rise, any_fall, any_rise) in option_num.items():
        price = prices[underlying]
        legs.append((underlying, price.price_micro_usd, (local_fall * NANO, local_rise * NANO),
                     (any_fall * NANO, any_rise * NANO), price.volatility_ppm))
    # Stocks: a move (triggers below) and a step (the closed-market and stale add-ons, at most what is
    # left of the value): the steps are budgeted too when the buffer allows, else the account is
    # re-valued when one happens. The loss bound holds at any later level while no trigger fired,
    # since a rise adds more value than a step at the higher level takes (haircuts never exceed 100 %).
    step_loss = 0
    stocks = []
    step_addon = p.closed_market_addon_ppm + p.stale_price_addon_ppm
    for symbol, qty in acct.margin_nano.items():
        mark = prices.get(symbol)
        if qty > 0 and mark is not None and mark.price_micro_usd:
            level = stock_level(mark.price_micro_usd, mark.multiplier_nano)
            legs.append((symbol, level, (qty * PPM, 0), None, p.stock_trigger_volatility_ppm))
            stocks.append(symbol)
            unit = units.get(symbol)
            addon = min(step_addon, PPM - haircut_ppm(state, symbol, at_us) if unit is None else unit[1])
            step_loss -= (-qty * level * addon) // (NANO * NANO * PPM)
    if stocks:
        if 4 * step_loss <= price_budget:  # cheap to budget: the moves keep most of it
            price_budget -= step_loss
        else:
            for symbol in stocks:
                watched = surv.step_watch.get(symbol)
                if watched is None:
                    watched = surv.step_watch[symbol] = {}
                watched[account] = version
    distances = _spread(price_budget, legs)
    low, high = surv.low, surv.high
    for (instrument, level, _, _, _), (fall, rise) in zip(legs, distances, strict=True):  # no starred target: a list per leg
        heap = low.get(instrument)
        if heap is None:
            heap = low[instrument] = []
        heappush(heap, (fall - level, account, version))  # a max-heap of level - distance
        pushed += 1
        if rise is not None:
            heap = high.get(instrument)
            if heap is None:
                heap = high[instrument] = []
            heappush(heap, (level + rise, account, version))
            pushed += 1
    surv.pushes += pushed
    if surv.pushes >= surv.compact_after:
        compact(surv)


def _spread(budget: int, legs: list[tuple[str, int, tuple[int, int], tuple[int, int] | None, int]]) -> list[tuple[int, int | None]]:
    """(fall, rise) trigger distances per leg (rise None: a token loses on a fall only) within the budget.

    Each leg's share of the budget is in proportion to max(fall, rise sensitivity) x level x sigma; each
    side's distance is that share over that side's sensitivity, so a move up to the trigger costs at most
    the share. Two ways, each safe on its own, and the one whose nearest trigger is more typical moves away
    wins: the options' local slopes with their triggers capped at the window where those slopes hold, or
    the global slopes with no cap. Tokens are the same either way (quantity, no cap).
    """
    best: list[tuple[int, int | None]] = []
    best_score = -1
    for local in (True, False):
        rows = []
        total = 0
        for _, level, near, anywhere, sigma in legs:
            fall, rise = near if local or anywhere is None else anywhere
            typical = level * sigma
            weight = (fall if fall >= rise else rise) * typical  # max(fall, rise) x level x sigma
            total += weight
            rows.append((level, fall, rise, weight, typical, anywhere is None))
        distances: list[tuple[int, int | None]] = []
        score = None
        for level, fall, rise, weight, typical, token in rows:
            share = budget * SENSITIVITY_DEN * weight  # x sensitivity / total
            d_fall = share // (total * fall) if total and fall else 0
            d_rise = None if token else (share // (total * rise) if total and rise else 0)
            if local and not token:
                cap = level * SLOPE_WINDOW_PPM // PPM
                d_fall = min(d_fall, cap)
                d_rise = min(d_rise, cap) if d_rise is not None else None
            distances.append((d_fall, d_rise))
            nearest = d_fall if d_rise is None else min(d_fall, d_rise)
            moves = nearest * PPM * PPM // typical  # how many typical moves away, scaled
            score = moves if score is None or moves < score else score
        if score is not None and score > best_score:
            best, best_score = distances, score
    return best


def compact(surv: Surveillance) -> None:
    """Drop entries that later arms superseded (they would only be popped and skipped); live entries stay.

    Without this the heaps grow with the number of re-valuations rather than the number of accounts.
    """
    current = surv.version.get
    live_total = 0
    for heap in (*surv.low.values(), *surv.high.values(), surv.due):
        heap[:] = [e for e in heap if current(e[1]) == e[2]]
        heapify(heap)
        live_total += len(heap)
    # Next compaction after twice as many pushes as entries are live now: amortised O(1) per push,
    # and the heaps never hold more than three times their live entries.
    surv.pushes = 0
    surv.compact_after = max(2 * live_total, MIN_COMPACTION_PUSHES)
