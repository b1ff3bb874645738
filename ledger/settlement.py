"""USD settlement: users pay USD in, winners withdraw it from the venue's USD on hand; pool tokens are redeemed and their shares sold when it runs short."""

from __future__ import annotations

from typing import Any

from ledger import chart, limits, reasons
from ledger.collateral import apply_collateral_deposit, apply_collateral_withdrawal, known_account
from ledger.outcome import Outcome
from ledger.reasons import Rejected
from ledger.reserve import request_outcome
from ledger.risk import NANO_SQUARED, account_health
from ledger.state import LedgerState
from ledger.units import NANO, PPM
from ledger.watch_index import recheck

NANO_PER_MICRO = 1_000  # a USD withdrawal's qty_nano is nano-USD, like every asset's quantity


def sellable_units(state: LedgerState, at_us: int) -> dict[str, int]:
    """micro-USD per nano-token x 1e18 that each pool token fetches when sold now: its oracle price less the
    settlement haircut, on a fresh open-market mark outside a corporate action's pause; others cannot be sold."""
    units = {}
    p = state.params
    for symbol, qty in sorted(state.pool.tokens_nano.items()):
        price = state.prices.get(symbol)
        if qty <= 0 or price is None or price.market_status != "OPEN" or symbol not in state.reserves:
            continue
        if at_us - price.published_at_us > p.price_staleness_limit_us or state.reserves[symbol].paused_for_activation_us is not None:
            continue
        units[symbol] = price.price_micro_usd * price.multiplier_nano * (PPM - p.usd_settlement_haircut_ppm) // PPM
    return units


def proceeds_needed_micro_usd(state: LedgerState, amount_micro_usd: int) -> int:
    """USD to raise before paying amount so that on hand >= amount and, after, >= the minimum cash ratio of the
    pool's USD debt: P >= amount - R and R + P - amount >= r x max(0, -(C + P)), the latter as
    P >= (amount - R - r C) / (1 + r) while C + P < 0 (R: on hand, C: the pool's cash, r: the ratio)."""
    pool, ratio = state.pool, state.params.usd_min_cash_ratio_ppm
    short = amount_micro_usd - pool.usd_on_hand_micro_usd
    with_ratio = -((-(short * PPM - ratio * pool.cash_micro_usd)) // (PPM + ratio))
    return max(0, short, with_ratio)


def apply_deposit(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    """CollateralDeposit: USD (symbol USD) here, a token by ledger.collateral."""
    if ev["symbol"] == chart.USD:
        apply_usd_deposit(state, ev, out)
    else:
        apply_collateral_deposit(state, ev, out)


def _usd_amount(qty_nano: int) -> int:
    """A USD record's qty_nano (nano-USD, like every asset's quantity) as micro-USD: positive and whole."""
    if qty_nano <= 0:
        raise Rejected(reasons.NON_POSITIVE_AMOUNT, f"qty_nano must be > 0, got {qty_nano}")
    if qty_nano % NANO_PER_MICRO:
        raise Rejected(reasons.MALFORMED, f"a USD amount is in whole micro-USD (qty_nano a multiple of 1000), got {qty_nano}")
    return qty_nano // NANO_PER_MICRO


def apply_usd_deposit(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    """A user pays USD in (CollateralDeposit with symbol USD, qty_nano in nano-USD): credited to its margin cash.

    The USD arrives in the venue's bank account, so the venue's USD on hand grows by it; the account's
    cash (a debt first, if it had one) and every total it moves are checked to fit before anything
    changes (the record's qty_nano was bounded at the edge, ledger.limits). A deposit only raises equity.
    """
    account = ev["account"]
    amount = _usd_amount(ev["qty_nano"])
    acct = known_account(state, account)
    pool = state.pool
    limits.require_fits({"cash_after_micro_usd": acct.cash_micro_usd + amount,
                         "usd_paid_in_after_micro_usd": pool.usd_paid_in_micro_usd + amount,
                         "usd_on_hand_after_micro_usd": pool.usd_on_hand_micro_usd + amount})
    acct.cash_micro_usd += amount
    pool.usd_paid_in_micro_usd += amount
    out.post(chart.usd_paid_out(), chart.margin(account, chart.USD), chart.USD, amount)
    recheck(state, account)
    state.counters.count("usd_deposit")


def apply_withdrawal(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    """CollateralWithdrawalRequest: USD (symbol USD) here, a token by ledger.collateral."""
    if ev["symbol"] == chart.USD:
        apply_usd_withdrawal(state, ev, out)
    else:
        apply_collateral_withdrawal(state, ev, out)


def apply_usd_withdrawal(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    """A winner's USD leaves the venue (CollateralWithdrawalRequest with symbol USD, qty_nano in nano-USD).

    The account must hold the cash (never borrowed USD) and still cover IM after it, as any withdrawal.
    The venue pays from the USD it holds; if that would leave less than the minimum cash ratio, pool tokens
    are first redeemed pro rata and the custodian sells the shares behind them at the oracle less the
    settlement haircut (the LPs carry the haircut: it is what holding tokens against a USD debt costs),
    every quantity and price in the outcome's inputs.
    """
    account, at = ev["account"], ev["occurred_at"]
    amount = _usd_amount(ev["qty_nano"])
    acct = known_account(state, account)
    if acct.cash_micro_usd < amount:
        raise Rejected(reasons.INSUFFICIENT_BALANCE, f"USD cash {acct.cash_micro_usd} micro-USD, withdrawal needs {amount}")
    health = account_health(state, acct, at, cash_delta_micro_usd=-amount)
    pool = state.pool
    needed = proceeds_needed_micro_usd(state, amount)
    inputs = health.as_inputs() | {"amount_micro_usd": amount, "usd_on_hand_micro_usd": pool.usd_on_hand_micro_usd,
                                   "pool_cash_micro_usd": pool.cash_micro_usd, "settlement_needed_micro_usd": needed}
    if health.equity_micro_usd < max(health.initial_micro_usd, 0):
        raise Rejected(reasons.INSUFFICIENT_MARGIN,
                       f"equity after withdrawal {health.equity_micro_usd} < initial margin {health.initial_micro_usd} micro-USD", inputs)
    sales: dict[str, tuple[int, int]] = {}  # symbol -> (qty_nano sold, proceeds micro-USD)
    if needed:
        units = sellable_units(state, at)
        sellable = {s: pool.tokens_nano[s] * u // NANO_SQUARED for s, u in units.items()}
        total = sum(sellable.values())
        target = needed + len(units)  # each symbol's proceeds may round down by a micro-USD
        inputs |= {"settlement_sellable_micro_usd": total}
        if total < target:
            limits.require_fits(inputs)
            raise Rejected(reasons.POOL_CAPACITY, f"the pool can raise {total} micro-USD from open-market tokens, "
                                                  f"the withdrawal needs {needed} first", inputs)
        for symbol, unit in units.items():
            held = pool.tokens_nano[symbol]
            qty = min(held, -((-held * target) // total))  # pro rata, rounded up
            sales[symbol] = (qty, qty * unit // NANO_SQUARED)
            inputs[f"settlement_qty_nano:{symbol}"] = qty
            inputs[f"settlement_price_micro_usd:{symbol}"] = state.prices[symbol].price_micro_usd
            inputs[f"settlement_multiplier_nano:{symbol}"] = state.prices[symbol].multiplier_nano
        inputs["settlement_haircut_ppm"] = state.params.usd_settlement_haircut_ppm
        inputs["settlement_proceeds_micro_usd"] = sum(v for _, v in sales.values())
    limits.require_fits(inputs)
    for symbol, (qty, proceeds) in sales.items():
        # The tokens are redeemed (burned) and the custodian sells the shares behind them: supply and the
        # custodian's holding fall together, so the reserve still covers supply x multiplier.
        reserve = state.reserves[symbol]
        shares = qty * reserve.multiplier_at(at) // NANO
        pool.tokens_nano[symbol] -= qty
        reserve.supply_nano -= qty
        reserve.shares_held_nano -= shares
        pool.cash_micro_usd += proceeds
        pool.usd_raised_micro_usd += proceeds
        out.post(chart.pool_main(symbol), chart.supply(symbol), symbol, qty)
        out.post(chart.custodian(symbol), chart.custody_external(symbol), chart.share_asset(symbol), shares)
        out.post(chart.usd_raised(), chart.pool_main(chart.USD), chart.USD, proceeds)
    acct.cash_micro_usd -= amount
    pool.usd_paid_out_micro_usd += amount
    out.post(chart.margin(account, chart.USD), chart.usd_paid_out(), chart.USD, amount)
    recheck(state, account)
    state.counters.count("usd_withdrawal")
    if sales:
        state.counters.count("settlement_sale")
    out.emit("RequestOutcome", request_outcome(ev, "COLLATERAL_WITHDRAWAL", account, None, inputs))
