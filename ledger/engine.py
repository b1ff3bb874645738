"""The fold: apply(state, subject, record) routes an event to its rule, deduplicates, then runs the surveillance sweep."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from ledger import collateral, market, pool, reasons, reserve, trading
from ledger.idempotency import DIGEST_BYTES
from ledger.outcome import Outcome
from ledger.reasons import Rejected
from ledger.state import LedgerState
from ledger.surveillance import sweep

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
    digest = content_digest(subject, record)[:DIGEST_BYTES]
    seen = state.seen.get(event_id)
    if seen is not None:
        if seen == digest:
            out.duplicate = True
            state.counters.duplicates += 1
            return out
        return _reject(state, out, reasons.CONFLICTING_DUPLICATE, f"event_id {event_id} was applied with different content", record)
    horizon = state.params.redelivery_horizon_us
    if state.seen.too_old(record["occurred_at"], horizon):
        return _reject(state, out, reasons.BEYOND_REDELIVERY_HORIZON,
                       f"occurred_at {record['occurred_at']} is more than {horizon} us behind the ledger's clock "
                       f"{state.seen.clock_us}: a redelivery of a forgotten id could not be recognised", record)
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
    state.seen.remember(event_id, digest, record["occurred_at"], horizon)
    state.counters.applied[subject] = state.counters.applied.get(subject, 0) + 1
    sweep(state, record["occurred_at"], record, out)
    return out


def _reject(state: LedgerState, out: Outcome, reason: str, detail: str, record: dict[str, Any] | None = None,
            inputs: dict[str, int] | None = None) -> Outcome:
    out.rejection = (reason, detail)
    state.counters.rejected[reason] = state.counters.rejected.get(reason, 0) + 1
    if record is not None and out.subject in REQUEST_KINDS and "event_id" in record:
        key = str(record.get(REQUEST_KEY_FIELD.get(out.subject, "account"), ""))
        out.emit("RequestOutcome", reserve.request_outcome(record, REQUEST_KINDS[out.subject], key, reason, inputs or {}))
    return out
