"""Collateral rules per account: deposits from the wallet into margin, withdrawals checked against IM."""

from __future__ import annotations

from typing import Any

from ledger import chart, limits, reasons
from ledger.outcome import Outcome
from ledger.reasons import Rejected
from ledger.reserve import request_outcome
from ledger.risk import account_health
from ledger.state import AccountState, LedgerState
from ledger.watch_index import recheck


def known_account(state: LedgerState, account: str) -> AccountState:
    acct = state.accounts.get(account)
    if acct is None:
        raise Rejected(reasons.UNKNOWN_ACCOUNT, f"account {account!r} has no balances")
    return acct


def listed_symbol(state: LedgerState, symbol: str) -> None:
    if symbol not in state.reserves:
        raise Rejected(reasons.UNKNOWN_SYMBOL, f"symbol {symbol!r} is not listed")


def positive(qty: int, what: str = "qty_nano") -> None:
    if qty <= 0:
        raise Rejected(reasons.NON_POSITIVE_AMOUNT, f"{what} must be > 0, got {qty}")


def take_from_wallet(acct: AccountState, symbol: str, qty: int) -> None:
    held = acct.wallet_nano.get(symbol, 0)
    if held < qty:
        raise Rejected(reasons.INSUFFICIENT_BALANCE, f"wallet holds {held} nano {symbol}, needs {qty}")
    acct.wallet_nano[symbol] = held - qty


def watch(state: LedgerState, instrument: str, account: str) -> None:
    """Register that this account's equity moves with the instrument (for liquidation checks)."""
    state.exposure.setdefault(instrument, {})[account] = None


def apply_collateral_deposit(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    account, symbol, qty = ev["account"], ev["symbol"], ev["qty_nano"]
    listed_symbol(state, symbol)
    positive(qty)
    acct = known_account(state, account)
    take_from_wallet(acct, symbol, qty)
    acct.margin_nano[symbol] = acct.margin_nano.get(symbol, 0) + qty
    watch(state, symbol, account)
    recheck(state, account)
    out.post(chart.wallet(account, symbol), chart.margin(account, symbol), symbol, qty)


def apply_collateral_withdrawal(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    account, symbol, qty = ev["account"], ev["symbol"], ev["qty_nano"]
    listed_symbol(state, symbol)
    positive(qty)
    acct = known_account(state, account)
    held = acct.margin_nano.get(symbol, 0)
    if held < qty:
        raise Rejected(reasons.INSUFFICIENT_BALANCE, f"margin holds {held} nano {symbol}, withdrawal needs {qty}")
    health = account_health(state, acct, ev["occurred_at"], margin_after_nano=acct.margin_nano | {symbol: held - qty})
    inputs = health.as_inputs() | {"qty_nano": qty}
    limits.require_fits(inputs)
    # Equity must cover IM after the withdrawal; with no positions it must still cover any cash debt.
    if health.equity_micro_usd < max(health.initial_micro_usd, 0):
        raise Rejected(
            reasons.INSUFFICIENT_MARGIN,
            f"equity after withdrawal {health.equity_micro_usd} < initial margin {health.initial_micro_usd} micro-USD",
            inputs,
        )
    acct.margin_nano[symbol] = held - qty
    acct.wallet_nano[symbol] = acct.wallet_nano.get(symbol, 0) + qty
    recheck(state, account)
    out.post(chart.margin(account, symbol), chart.wallet(account, symbol), symbol, qty)
    out.emit("RequestOutcome", request_outcome(ev, "COLLATERAL_WITHDRAWAL", account, None, inputs))
