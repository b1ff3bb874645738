"""Liquidation: close along the curve (partially where that restores health, within a price-shift limit), backstop the rest, seize, penalise, run the waterfall, auto-deleverage."""

from __future__ import annotations

from typing import Any

from ledger import chart, options
from ledger.adl import auto_deleverage, deficit_micro_usd
from ledger.market import accrue_funding
from ledger.outcome import Outcome, derived_event_id
from ledger.quotes import quote
from ledger.risk import (
    NANO_SQUARED,
    Health,
    account_health,
    is_liquidatable,
    lean_liquidity_now,
    price_addon_ppm,
    token_unit,
)
from ledger.state import AccountState, LedgerState
from ledger.trading import close_against_pool, settle_funding
from ledger.units import NANO, PPM, apply_ppm_ceil, div_ceil


def _envelope(kind: str, cause_id: str, account: str, at_us: int, n: int = 0) -> dict[str, Any]:
    return {"event_id": derived_event_id(kind, f"{cause_id}:{account}", n), "occurred_at": at_us, "source": "stockledger"}


def _inputs(state: LedgerState, acct: AccountState, health: Health) -> dict[str, int]:
    inputs = health.as_inputs() | {"cash_micro_usd": acct.cash_micro_usd}
    for symbol, qty in sorted(acct.margin_nano.items()):
        price, mult = token_unit(state, symbol, 0)
        inputs[f"margin_nano:{symbol}"] = qty
        inputs[f"price_micro_usd:{symbol}"] = price
        inputs[f"multiplier_nano:{symbol}"] = mult
    for series_id, pos in sorted(acct.positions.items()):
        inputs[f"volume_nano:{series_id}"] = pos.volume_nano
        q = quote(state, state.series[series_id])
        inputs[f"spot_micro_usd:{series_id}"] = q.spot_micro_usd
        inputs[f"theo_micro_usd:{series_id}"] = q.theo_micro_usd
        inputs[f"maintenance_margin_micro_usd:{series_id}"] = q.mm_micro_usd(pos.volume_nano)
    return inputs


def _pay_debt(state: LedgerState, acct: AccountState, payer: str, amount: int, out: Outcome) -> None:
    """A payer's USD settles part of the account's cash debt."""
    acct.cash_micro_usd += amount
    out.post(payer, chart.margin(acct.account, chart.USD), chart.USD, amount)


def _seize_unit(state: LedgerState, symbol: str, at_us: int) -> int:
    """micro-USD per nano-token x 1e18 at which a seized token counts: the oracle less its closed/stale band
    (a frozen weekend price is not what the token would fetch; DESIGN section 5)."""
    price, mult = token_unit(state, symbol, at_us)
    return price * mult * (PPM - price_addon_ppm(state, symbol, at_us)) // PPM


def _shift_cap_nano(state: LedgerState, q: Any, lean_micro_usd: int) -> int | None:
    """Largest |volume| one liquidation may close in a series: its mark moves by at most
    liquidation_price_shift_limit_ppm of theo (Deri v3's priceShiftLimit); None when the curve is flat."""
    p = state.params
    num = q.spot_micro_usd * q.spot_micro_usd * abs(q.delta_wad) * p.pool_alpha_ppm  # mark slope P/Q per nano (options._lean_coefficient)
    if num == 0 or lean_micro_usd <= 0:
        return None
    den = lean_micro_usd * options.WAD * PPM * NANO
    return max(1, p.liquidation_price_shift_limit_ppm * q.theo_micro_usd * den // (num * PPM))


def _close(state: LedgerState, acct: AccountState, fraction_ppm: int, at_us: int, trigger_id: str,
           used: dict[str, int] | None, closed: list[dict[str, Any]], out: Outcome) -> int:
    """Close fraction_ppm of every position (rounded up) along the curve, within the shift limit (used: volume
    closed so far per series), or with no limit (used None: the backstop); returns MM closed."""
    alpha = state.params.pool_alpha_ppm
    mm_closed = 0
    for series_id in sorted(acct.positions):
        series = state.series[series_id]
        accrue_funding(series, at_us)
        settle_funding(state, acct, series, out)
        volume = acct.positions[series_id].volume_nano
        q = quote(state, series)
        lean = lean_liquidity_now(state)
        size = div_ceil(abs(volume) * fraction_ppm, PPM)
        cap = None if used is None else _shift_cap_nano(state, q, lean)
        if cap is not None and used is not None:
            size = min(size, max(cap - used.get(series_id, 0), 0))
        if size <= 0:
            continue
        if used is not None:
            used[series_id] = used.get(series_id, 0) + size
        part = size if volume > 0 else -size
        # Along the pool's curve at the live quote, exactly as the account could close it itself:
        # a liquidation never pays more than a voluntary close (the penalty comes on top).
        cost = options.trade_cost_micro_usd(q.theo_micro_usd, q.spot_micro_usd, q.delta_wad, alpha, lean, series.net_volume_nano, -part)
        value = -cost  # what the account receives for the part (negative: pays to close a short)
        closed.append({"series_id": series_id, "volume_nano": part, "mark_micro_usd": value * NANO // part, "value_micro_usd": value})
        mm_closed += div_ceil(q.mm_micro_usd(volume) * size, NANO)
        close_against_pool(state, series, acct, part, value, at_us, trigger_id, out)
    return mm_closed


def _cured(state: LedgerState, acct: AccountState, mm_closed: int, at_us: int) -> bool:
    """Whether the account, its positions as they stand, is at or above MM once the penalty on mm_closed is taken
    (worked out exactly as _take_penalty will take it, so the decision and the outcome cannot disagree)."""
    cash, quantities = _penalty_plan(state, acct, apply_ppm_ceil(mm_closed, state.params.liquidation_penalty_ppm), at_us)
    margin_after = {s: q - quantities.get(s, 0) for s, q in acct.margin_nano.items()}
    after = account_health(state, acct, at_us, cash_delta_micro_usd=-cash, margin_after_nano=margin_after)
    return not is_liquidatable(after, True)


def liquidate(state: LedgerState, acct: AccountState, at_us: int, cause: dict[str, Any], health: Health, out: Outcome) -> list[str]:
    """One liquidation step (DESIGN section 5); the account ends it at or above MM, or flat.

    Close factor (Aave v3.3): an account whose equity is still at least liquidation_partial_min_health of
    its MM is first closed by liquidation_close_factor of every position; the rest is closed only if that
    (and its penalty) does not restore equity >= MM. Each series' close along the curve is capped by the
    price-shift limit (Deri v3); if what the cap leaves still does not restore equity >= MM after the
    penalty, the backstop (the main pool) takes over every remaining position at once, at what its own NAV
    says that book is worth (the cost of closing it along the curve, so the LPs neither gain nor lose by it
    and the account pays what closing it itself would cost): no account stays under MM after the event
    (the surveillance invariant).
    The penalty (of all MM closed) is taken from positive cash first, then collateral; a debt left once no
    position remains is covered by collateral (seized with the bonus, at the oracle less the closed or
    stale band), then the waterfall (insurance, then LPs), then auto-deleveraging for what the LPs' equity
    could not absorb (ledger.adl). Returns the accounts auto-deleveraged (their health changed in this event).
    """
    p, account, cause_id = state.params, acct.account, cause["event_id"]
    acct.liquidations += 1
    state.counters.liquidations += 1
    trigger = _envelope("liq-trigger", cause_id, account, at_us) | {
        "account": account, "cause_event_id": cause_id, "equity_micro_usd": health.equity_micro_usd,
        "maintenance_margin_micro_usd": health.maintenance_micro_usd, "inputs": _inputs(state, acct, health),
    }
    out.emit("LiquidationTriggered", trigger)
    closed: list[dict[str, Any]] = []
    used: dict[str, int] = {}
    equity, mm = health.equity_micro_usd, health.maintenance_micro_usd
    partial = bool(acct.positions) and equity > 0 and equity * PPM >= mm * p.liquidation_partial_min_health_ppm
    mm_closed = _close(state, acct, p.liquidation_close_factor_ppm if partial else PPM, at_us, trigger["event_id"], used, closed, out)
    if partial and acct.positions and not _cured(state, acct, mm_closed, at_us):  # the close factor did not cure it
        mm_closed += _close(state, acct, PPM, at_us, trigger["event_id"], used, closed, out)
    backstop: list[dict[str, Any]] = []
    if acct.positions and not _cured(state, acct, mm_closed, at_us):  # the price-shift limit stopped the close short
        mm_closed += _close(state, acct, PPM, at_us, trigger["event_id"], None, backstop, out)
    debt = max(0, -acct.cash_micro_usd) if not acct.positions else 0
    seized, covered, bonus = _seize_for_debt(state, acct, debt, at_us, out)
    penalty = apply_ppm_ceil(mm_closed, p.liquidation_penalty_ppm)
    penalty_paid = _take_penalty(state, acct, penalty, at_us, seized, out)
    shortfall = debt - covered
    state.counters.penalties_micro_usd += penalty_paid
    executed = _envelope("liq-exec", cause_id, account, at_us) | {
        "account": account, "trigger_event_id": trigger["event_id"], "closed_positions": closed, "seized": seized,
        "debt_micro_usd": debt, "penalty_micro_usd": penalty_paid, "bonus_micro_usd": bonus, "shortfall_micro_usd": shortfall,
        "backstop_positions": backstop or None,
    }
    out.emit("LiquidationExecuted", executed)
    if backstop:
        state.counters.count("backstop")
    elif acct.positions:
        state.counters.count("partial_liquidation")
    deleveraged: list[str] = []
    if shortfall:
        socialised = _waterfall(state, acct, at_us, trigger["event_id"], covered, shortfall, out)
        deficit = deficit_micro_usd(state, socialised)
        if deficit:
            deleveraged = auto_deleverage(state, at_us, trigger["event_id"], account, deficit, out)
    acct.margin_nano = {s: q for s, q in acct.margin_nano.items() if q}
    return deleveraged


def _seize_for_debt(state: LedgerState, acct: AccountState, debt: int, at_us: int,
                    out: Outcome) -> tuple[list[dict[str, Any]], int, int]:
    """Collateral to the main pool for the debt, with the Aave-style bonus: (seized lines, debt covered, bonus)."""
    p, pool, account = state.params, state.pool, acct.account
    seized: list[dict[str, Any]] = []
    covered = bonus = 0
    for symbol in sorted(acct.margin_nano):
        remaining = debt - covered
        if remaining <= 0:
            break
        qty_held = acct.margin_nano[symbol]
        unit = _seize_unit(state, symbol, at_us)
        if qty_held <= 0 or unit <= 0:
            continue
        want_value = apply_ppm_ceil(remaining, PPM + p.liquidation_bonus_ppm)
        qty = min(qty_held, div_ceil(want_value * NANO_SQUARED, unit))
        value = qty * unit // NANO_SQUARED
        pays = remaining if qty < qty_held else min(remaining, value * PPM // (PPM + p.liquidation_bonus_ppm))
        acct.margin_nano[symbol] = qty_held - qty
        pool.tokens_nano[symbol] = pool.tokens_nano.get(symbol, 0) + qty
        pool.cash_micro_usd -= pays
        out.post(chart.margin(account, symbol), chart.pool_main(symbol), symbol, qty)
        _pay_debt(state, acct, chart.pool_main(chart.USD), pays, out)
        covered += pays
        bonus += value - pays
        seized.append({"symbol": symbol, "qty_nano": qty, "value_micro_usd": value})
    return seized, covered, bonus


def _penalty_plan(state: LedgerState, acct: AccountState, penalty: int, at_us: int) -> tuple[int, dict[str, int]]:
    """How the penalty would be taken: (USD from positive cash, token quantities by symbol at the seizure value)."""
    from_cash = min(penalty, max(acct.cash_micro_usd, 0))
    paid = from_cash
    quantities: dict[str, int] = {}
    for symbol in sorted(acct.margin_nano):
        if paid >= penalty:
            break
        qty_held = acct.margin_nano[symbol]
        unit = _seize_unit(state, symbol, at_us)
        if qty_held <= 0 or unit <= 0:
            continue
        qty = min(qty_held, div_ceil((penalty - paid) * NANO_SQUARED, unit))
        quantities[symbol] = qty
        paid += min(penalty - paid, qty * unit // NANO_SQUARED)
    return from_cash, quantities


def _take_penalty(state: LedgerState, acct: AccountState, penalty: int, at_us: int, seized: list[dict[str, Any]], out: Outcome) -> int:
    """The penalty to the insurance pool: from positive cash first, then collateral (at the seizure value)."""
    pool, account = state.pool, acct.account
    paid, quantities = _penalty_plan(state, acct, penalty, at_us)
    if paid:
        acct.cash_micro_usd -= paid
        pool.insurance_cash_micro_usd += paid
        out.post(chart.margin(account, chart.USD), chart.pool_insurance(chart.USD), chart.USD, paid)
    for symbol, qty in quantities.items():
        value = min(penalty - paid, qty * _seize_unit(state, symbol, at_us) // NANO_SQUARED)
        acct.margin_nano[symbol] -= qty
        pool.insurance_tokens_nano[symbol] = pool.insurance_tokens_nano.get(symbol, 0) + qty
        out.post(chart.margin(account, symbol), chart.pool_insurance(symbol), symbol, qty)
        paid += value
        seized.append({"symbol": symbol, "qty_nano": qty, "value_micro_usd": value})
    return paid


def _waterfall(state: LedgerState, acct: AccountState, at_us: int, trigger_id: str, covered: int, shortfall: int, out: Outcome) -> int:
    """The debt left after the close, partitioned exactly: account margin (covered by seized collateral), the
    penalty (0: it is collected only from what is left after the debt, so it never covers one), the
    insurance pool, then LPs. The four BadDebtCovered amounts add up to the executed debt_micro_usd. Returns
    what the LPs absorbed (auto-deleveraging then recovers the part their equity could not)."""
    pool = state.pool
    state.counters.bad_debt_micro_usd += shortfall
    from_insurance = min(shortfall, max(pool.insurance_cash_micro_usd, 0))
    if from_insurance:
        pool.insurance_cash_micro_usd -= from_insurance
        _pay_debt(state, acct, chart.pool_insurance(chart.USD), from_insurance, out)
    # Insurance tokens next: the main pool takes them at their seizure value and pays the debt in cash.
    for symbol in sorted(pool.insurance_tokens_nano):
        remaining = shortfall - from_insurance
        qty_held = pool.insurance_tokens_nano[symbol]
        unit = _seize_unit(state, symbol, at_us)
        if remaining <= 0 or qty_held <= 0 or unit <= 0:
            continue
        qty = min(qty_held, div_ceil(remaining * NANO_SQUARED, unit))
        value = min(remaining, qty * unit // NANO_SQUARED)
        pool.insurance_tokens_nano[symbol] = qty_held - qty
        pool.tokens_nano[symbol] = pool.tokens_nano.get(symbol, 0) + qty
        pool.cash_micro_usd -= value
        out.post(chart.pool_insurance(symbol), chart.pool_main(symbol), symbol, qty)
        _pay_debt(state, acct, chart.pool_main(chart.USD), value, out)
        from_insurance += value
    pool.bad_debt_insurance_micro_usd += from_insurance
    socialised = shortfall - from_insurance
    if socialised:
        pool.cash_micro_usd -= socialised
        pool.bad_debt_socialised_micro_usd += socialised
        _pay_debt(state, acct, chart.pool_main(chart.USD), socialised, out)
    steps = [("ACCOUNT_MARGIN", covered), ("PENALTY", 0), ("INSURANCE", from_insurance), ("LP_SOCIALISED", socialised)]
    for n, (step, amount) in enumerate(steps):
        out.emit("BadDebtCovered", {
            "event_id": derived_event_id("bad-debt", trigger_id, n + 1), "occurred_at": at_us, "source": "stockledger",
            "account": acct.account, "trigger_event_id": trigger_id, "step": step, "amount_micro_usd": amount,
        })
    assert acct.cash_micro_usd == 0, "waterfall must clear the account's debt"  # invariant, TigerBeetle style
    return socialised
