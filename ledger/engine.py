"""The fold: apply(state, subject, record) routes an event to its rule, deduplicates, and checks liquidations."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from ledger import collateral, market, pool, reasons, reserve, trading
from ledger.liquidation import check_and_liquidate
from ledger.outcome import Outcome
from ledger.reasons import Rejected
from ledger.risk import account_health, collateral_units
from ledger.state import LedgerState
from ledger.watchlist import disarm, due_accounts, rearm

Rule = Callable[[LedgerState, dict[str, Any], Outcome], None]

RULES: dict[str, Rule] = {
    "StockListed": reserve.apply_stock_listed,
    "CustodyMovement": reserve.apply_custody_movement,
    "HoldingStatement": reserve.apply_holding_statement,
    "CorporateAction": reserve.apply_corporate_action,
    "MintRequest": reserve.apply_mint_request,
    "Burn": reserve.apply_burn,
    "SupplyObservation": reserve.apply_supply_observation,
    "PriceMark": market.apply_price_mark,
    "SeriesListed": market.apply_series_listed,
    "CollateralDeposit": collateral.apply_collateral_deposit,
    "CollateralWithdrawalRequest": collateral.apply_collateral_withdrawal,
    "LpDeposit": pool.apply_lp_deposit,
    "LpRedeemRequest": pool.apply_lp_redeem,
    "TradeRequest": trading.apply_trade_request,
}

# Requests get an answer event either way; facts that break a rule go to ledger.rejections only.
REQUEST_KINDS = {
    "MintRequest": "MINT",
    "CollateralWithdrawalRequest": "COLLATERAL_WITHDRAWAL",
    "LpRedeemRequest": "LP_REDEEM",
    "TradeRequest": "TRADE",
}
REQUEST_KEY_FIELD = {"MintRequest": "symbol"}

INPUT_SUBJECTS = frozenset(RULES)
# Events that change an account's margin buffer: the risk sweep re-arms its triggers after them.
ACCOUNT_RISK_SUBJECTS = frozenset({"CollateralDeposit", "CollateralWithdrawalRequest", "TradeRequest"})


def content_digest(subject: str, record: dict[str, Any]) -> bytes:
    """Digest of an event's content, to tell a redelivery (same) from a conflicting reuse of an id."""
    return hashlib.blake2b(repr((subject, sorted(record.items()))).encode(), digest_size=16).digest()


def apply(state: LedgerState, subject: str, record: dict[str, Any]) -> Outcome:
    """Apply one decoded input event; mutates state only when the outcome has no rejection."""
    event_id = record.get("event_id", "")
    out = Outcome(event_id, subject)
    rule = RULES.get(subject)
    if rule is None:
        return _reject(state, out, reasons.UNKNOWN_SCHEMA, f"{subject} is not an input event")
    if type(record.get("event_id")) is not str or type(record.get("occurred_at")) is not int:
        # Without its envelope a record can be neither deduplicated nor answered: reject it before any rule runs.
        return _reject(state, out, reasons.MALFORMED, "event_id (string) and occurred_at (int) are required")
    digest = content_digest(subject, record)
    seen = state.seen.get(event_id)
    if seen is not None:
        if seen == digest:
            out.duplicate = True
            state.counters.duplicates += 1
            return out
        return _reject(state, out, reasons.CONFLICTING_DUPLICATE, f"event_id {event_id} was applied with different content", record)
    try:
        rule(state, record, out)
    except Rejected as rej:
        out.postings.clear()
        out.emitted.clear()
        return _reject(state, out, rej.reason, rej.detail, record, rej.inputs)
    except (KeyError, TypeError) as exc:  # a record missing what its rule needs: rules validate before mutating
        out.postings.clear()
        out.emitted.clear()
        return _reject(state, out, reasons.MALFORMED, f"{type(exc).__name__}: {exc}", record)
    state.seen[event_id] = digest
    state.counters.applied[subject] = state.counters.applied.get(subject, 0) + 1
    if subject == "PriceMark":
        _liquidation_sweep(state, record, out)
    elif subject in ACCOUNT_RISK_SUBJECTS:
        acct = state.accounts[record["account"]]
        rearm(state, acct, account_health(state, acct, record["occurred_at"]), record["occurred_at"])
    return out


def _reject(state: LedgerState, out: Outcome, reason: str, detail: str, record: dict[str, Any] | None = None,
            inputs: dict[str, int] | None = None) -> Outcome:
    out.rejection = (reason, detail)
    state.counters.rejected[reason] = state.counters.rejected.get(reason, 0) + 1
    if record is not None and out.subject in REQUEST_KINDS and "event_id" in record:
        key = str(record.get(REQUEST_KEY_FIELD.get(out.subject, "account"), ""))
        out.emit("RequestOutcome", reserve.request_outcome(record, REQUEST_KINDS[out.subject], key, reason, inputs or {}))
    return out


def _haircut_steps(state: LedgerState, instrument: str, at: int, status_changed: bool) -> list[str]:
    """Stocks whose haircut add-on just stepped: a market status change, or a mark turning stale (or fresh)."""
    stepped = [instrument] if status_changed else []
    limit = state.params.price_staleness_limit_us
    stale = state.stale_prices
    for symbol, price in state.prices.items():
        if symbol not in state.reserves:
            continue
        is_stale = at - price.published_at_us > limit
        if is_stale != (symbol in stale):
            if is_stale:
                stale[symbol] = None
                stepped.append(symbol)
            else:
                del stale[symbol]
    return stepped


def _liquidation_sweep(state: LedgerState, mark: dict[str, Any], out: Outcome) -> None:
    """After a mark, check the accounts whose trigger it crossed (all holders on a market status change)."""
    at, instrument = mark["occurred_at"], mark["instrument"]
    # A stock mark moves collateral values at once; a crypto mark moves option values only when it
    # reprices the series (marks in between change nothing), and option triggers sit around the spot
    # the series were priced at, so the repricing mark crosses every trigger the move has passed.
    moves = instrument in state.reserves or any(subject == "SeriesState" for subject, _ in out.emitted)
    due = due_accounts(state, instrument, mark["price_micro_usd"], at, moves)
    stepped = _haircut_steps(state, instrument, at, out.status_changed)
    if stepped:
        due = sorted(set(due).union(*(state.exposure.get(s, ()) for s in stepped)))
    accounts = state.accounts
    units = None  # collateral_units, once the sweep values an account: prices and haircuts hold still meanwhile
    for account in due:
        acct = accounts[account]
        if not acct.positions and acct.cash_micro_usd >= 0:
            # Neither liquidatable nor armed (see check_and_liquidate, rearm): only its old triggers lapse.
            disarm(state.watchlist, account)
            continue
        if units is None:
            units = collateral_units(state, at)
        health = account_health(state, acct, at, units)
        if check_and_liquidate(state, acct, at, mark, out, health):
            health = account_health(state, acct, at, units)
        rearm(state, acct, health, at)
