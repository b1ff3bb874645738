"""Liquidation: close every position along the curve at the live quote, seize collateral, run the shortfall waterfall."""

from __future__ import annotations

from typing import Any

from ledger import chart, options
from ledger.market import accrue_funding, refresh_series, series_state_record
from ledger.outcome import Outcome, derived_event_id
from ledger.pool import credit_pool_pnl
from ledger.quotes import quote
from ledger.risk import Health, lean_liquidity_now, token_unit
from ledger.state import AccountState, LedgerState
from ledger.trading import change_position, settle_funding
from ledger.units import NANO, PPM, apply_ppm_ceil, token_value_micro_usd_floor, tokens_for_value_nano_ceil


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
        inputs[f"maintenance_margin_micro_usd:{series_id}"] = q.mm_micro_usd
    return inputs


def _pay_debt(state: LedgerState, acct: AccountState, payer: str, amount: int, out: Outcome) -> None:
    """A payer's USD settles part of the account's cash debt."""
    acct.cash_micro_usd += amount
    out.post(payer, chart.margin(acct.account, chart.USD), chart.USD, amount)


def liquidate(state: LedgerState, acct: AccountState, at_us: int, cause: dict[str, Any], health: Health, out: Outcome) -> None:
    p, pool, account, cause_id = state.params, state.pool, acct.account, cause["event_id"]
    acct.liquidations += 1
    state.counters.liquidations += 1
    trigger = _envelope("liq-trigger", cause_id, account, at_us) | {
        "account": account, "cause_event_id": cause_id, "equity_micro_usd": health.equity_micro_usd,
        "maintenance_margin_micro_usd": health.maintenance_micro_usd, "inputs": _inputs(state, acct, health),
    }
    out.emit("LiquidationTriggered", trigger)
    closed = []
    alpha = p.pool_alpha_ppm
    for series_id in sorted(acct.positions):
        series = state.series[series_id]
        accrue_funding(series, at_us)
        settle_funding(state, acct, series, out)
        volume = acct.positions[series_id].volume_nano
        # Closed along the pool's curve at the live quote, exactly as the account could close it itself:
        # a liquidation never pays more than a voluntary close (the penalty comes on top).
        q = quote(state, series)
        cost = options.trade_cost_micro_usd(q.theo_micro_usd, q.spot_micro_usd, q.delta_wad, alpha, lean_liquidity_now(state),
                                            series.net_volume_nano, -volume)
        value = -cost  # what the account receives for the position (negative: pays to close a short)
        closed.append({"series_id": series_id, "volume_nano": volume, "mark_micro_usd": value * NANO // volume, "value_micro_usd": value})
        change_position(state, series, acct, -volume)
        acct.cash_micro_usd += value
        pool.cash_micro_usd -= value
        out.post(chart.pool_main(chart.USD), chart.margin(account, chart.USD), chart.USD, value)
        refresh_series(state, series, at_us)
        out.emit("SeriesState", series_state_record(series, {"event_id": trigger["event_id"], "occurred_at": at_us}))
    debt = max(0, -acct.cash_micro_usd)
    penalty = apply_ppm_ceil(health.maintenance_micro_usd, p.liquidation_penalty_ppm)
    seized, covered, bonus = [], 0, 0
    for symbol in sorted(acct.margin_nano):
        remaining = debt - covered
        if remaining <= 0:
            break
        qty_held = acct.margin_nano[symbol]
        price, mult = token_unit(state, symbol, at_us)
        if qty_held <= 0 or price <= 0:
            continue
        want_value = apply_ppm_ceil(remaining, PPM + p.liquidation_bonus_ppm)
        qty = min(qty_held, tokens_for_value_nano_ceil(want_value, price, mult))
        value = token_value_micro_usd_floor(qty, price, mult)
        pays = remaining if qty < qty_held else min(remaining, value * PPM // (PPM + p.liquidation_bonus_ppm))
        acct.margin_nano[symbol] = qty_held - qty
        pool.tokens_nano[symbol] = pool.tokens_nano.get(symbol, 0) + qty
        pool.cash_micro_usd -= pays
        out.post(chart.margin(account, symbol), chart.pool_main(symbol), symbol, qty)
        _pay_debt(state, acct, chart.pool_main(chart.USD), pays, out)
        covered += pays
        bonus += value - pays
        seized.append({"symbol": symbol, "qty_nano": qty, "value_micro_usd": value})
    penalty_paid = 0
    for symbol in sorted(acct.margin_nano):
        if penalty_paid >= penalty:
            break
        qty_held = acct.margin_nano[symbol]
        price, mult = token_unit(state, symbol, at_us)
        if qty_held <= 0 or price <= 0:
            continue
        qty = min(qty_held, tokens_for_value_nano_ceil(penalty - penalty_paid, price, mult))
        value = min(penalty - penalty_paid, token_value_micro_usd_floor(qty, price, mult))
        acct.margin_nano[symbol] = qty_held - qty
        pool.insurance_tokens_nano[symbol] = pool.insurance_tokens_nano.get(symbol, 0) + qty
        out.post(chart.margin(account, symbol), chart.pool_insurance(symbol), symbol, qty)
        penalty_paid += value
        seized.append({"symbol": symbol, "qty_nano": qty, "value_micro_usd": value})
    shortfall = max(0, -acct.cash_micro_usd)
    state.counters.penalties_micro_usd += penalty_paid
    executed = _envelope("liq-exec", cause_id, account, at_us) | {
        "account": account, "trigger_event_id": trigger["event_id"], "closed_positions": closed, "seized": seized,
        "debt_micro_usd": debt, "penalty_micro_usd": penalty_paid, "bonus_micro_usd": bonus, "shortfall_micro_usd": shortfall,
    }
    out.emit("LiquidationExecuted", executed)
    if shortfall:
        _waterfall(state, acct, at_us, trigger["event_id"], covered, penalty - penalty_paid, shortfall, out)
    acct.margin_nano = {s: q for s, q in acct.margin_nano.items() if q}


def _waterfall(state: LedgerState, acct: AccountState, at_us: int, trigger_id: str, covered: int,
               penalty_forfeited: int, shortfall: int, out: Outcome) -> None:
    """Margin, then the penalty, then the insurance pool, then LPs: each step is an event with its amount."""
    pool = state.pool
    state.counters.bad_debt_micro_usd += shortfall
    steps = [("ACCOUNT_MARGIN", covered), ("PENALTY", penalty_forfeited)]
    from_insurance = min(shortfall, max(pool.insurance_cash_micro_usd, 0))
    if from_insurance:
        pool.insurance_cash_micro_usd -= from_insurance
        _pay_debt(state, acct, chart.pool_insurance(chart.USD), from_insurance, out)
    # Insurance tokens next: the main pool takes them at the oracle value and pays the debt in cash.
    for symbol in sorted(pool.insurance_tokens_nano):
        remaining = shortfall - from_insurance
        qty_held = pool.insurance_tokens_nano[symbol]
        price, mult = token_unit(state, symbol, at_us)
        if remaining <= 0 or qty_held <= 0 or price <= 0:
            continue
        qty = min(qty_held, tokens_for_value_nano_ceil(remaining, price, mult))
        value = min(remaining, token_value_micro_usd_floor(qty, price, mult))
        pool.insurance_tokens_nano[symbol] = qty_held - qty
        pool.tokens_nano[symbol] = pool.tokens_nano.get(symbol, 0) + qty
        pool.cash_micro_usd -= value
        out.post(chart.pool_insurance(symbol), chart.pool_main(symbol), symbol, qty)
        _pay_debt(state, acct, chart.pool_main(chart.USD), value, out)
        from_insurance += value
    pool.bad_debt_insurance_micro_usd += from_insurance
    steps.append(("INSURANCE", from_insurance))
    socialised = shortfall - from_insurance
    if socialised:
        pool.cash_micro_usd -= socialised
        pool.bad_debt_socialised_micro_usd += socialised
        credit_pool_pnl(state, -socialised)
        _pay_debt(state, acct, chart.pool_main(chart.USD), socialised, out)
    steps.append(("LP_SOCIALISED", socialised))
    for n, (step, amount) in enumerate(steps):
        out.emit("BadDebtCovered", {
            "event_id": derived_event_id("bad-debt", trigger_id, n + 1), "occurred_at": at_us, "source": "stockledger",
            "account": acct.account, "trigger_event_id": trigger_id, "step": step, "amount_micro_usd": amount,
        })
    assert acct.cash_micro_usd == 0, "waterfall must clear the account's debt"  # invariant, TigerBeetle style
