"""The fold: apply(state, subject, record) routes an event to its rule, deduplicates, then runs the surveillance sweep."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from ledger import limits, market, pool, reasons, reserve, settlement, trading
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
    "CollateralDeposit": settlement.apply_deposit,
    "CollateralWithdrawalRequest": settlement.apply_withdrawal,
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


class RuleError(Exception):
    """A rule or the sweep raised something other than Rejected: a bug, never bad input. The shell stops on it."""

    def __init__(self, subject: str, event_id: str, detail: str):
        super().__init__(f"{subject} {event_id!r}: {detail}")
        self.subject = subject
        self.event_id = event_id
        self.detail = detail


def content_digest(subject: str, record: dict[str, Any]) -> bytes:
    """Digest of an event's content, to tell a redelivery (same) from a conflicting reuse of an id."""
    return hashlib.blake2b(repr((subject, sorted(record.items()))).encode(), digest_size=16).digest()


def apply(state: LedgerState, subject: str, record: dict[str, Any]) -> Outcome:
    """Apply one decoded input event; mutates state only when the outcome has no rejection.

    Order: declared limits (ledger.limits), then the decided ids, then the rule. A record outside its
    limits, a conflicting reuse of an id and a record beyond the redelivery horizon are *refused*: the
    refusal depends on the record alone, so nothing is remembered and the answer's id names the reason
    and the content. A rule's rejection is a *decision*, remembered like an approval: a redelivery of
    a decided id never decides again (DESIGN section 6). Any other exception in a rule is a bug: it is
    raised as RuleError (fail-stop), never counted as a rejection of the input.
    """
    event_id = record.get("event_id", "")
    out = Outcome(event_id if type(event_id) is str else "", subject)
    rule = RULES.get(subject)
    if rule is None:
        return _reject(state, out, reasons.UNKNOWN_SCHEMA, f"{subject} is not an input event")
    try:
        limits.check_record(subject, record)
    except limits.LimitError as err:
        return _refuse(state, out, err.reason, err.detail, record)
    digest = content_digest(subject, record)[:DIGEST_BYTES]
    seen = state.seen.get(event_id)
    if seen is not None:
        if seen == digest:
            out.duplicate = True
            state.counters.duplicates += 1
            return out
        return _refuse(state, out, reasons.CONFLICTING_DUPLICATE, f"event_id {limits.shown(event_id)} was decided with different content", record)
    horizon = state.params.redelivery_horizon_us
    at = record["occurred_at"]
    if state.seen.too_old(at, horizon):
        return _refuse(state, out, reasons.BEYOND_REDELIVERY_HORIZON,
                       f"occurred_at {at} is more than {horizon} us behind the ledger's clock "
                       f"{state.seen.clock_us}: a redelivery of a forgotten id could not be recognised", record)
    try:
        rule(state, record, out)
    except Rejected as rej:
        out.postings.clear()
        out.emitted.clear()
        state.seen.remember(event_id, digest, at, horizon, advance_clock=False)
        return _reject(state, out, rej.reason, rej.detail, record, rej.inputs)
    except Exception as exc:  # noqa: BLE001 - not bad input (limits held): a bug, which must stop the fold
        raise RuleError(subject, event_id, f"rule raised {type(exc).__name__}: {exc}") from exc
    state.seen.remember(event_id, digest, at, horizon)
    state.counters.applied[subject] = state.counters.applied.get(subject, 0) + 1
    try:
        sweep(state, at, record, out)
    except Exception as exc:  # noqa: BLE001
        raise RuleError(subject, event_id, f"surveillance raised {type(exc).__name__}: {exc}") from exc
    unfit = unrepresentable_output(out)
    if unfit is not None:
        raise RuleError(subject, event_id, f"within its limits, yet it derived {unfit}, which does not fit an Avro long")
    return out


def unrepresentable_output(out: Outcome) -> str | None:
    """The first derived integer (postings, emitted records) that an Avro long cannot hold, or None."""
    for p in out.postings:
        if not limits.fits_long(p.amount_minor):
            return f"posting amount {p.amount_minor}"
    for subject, record in out.emitted:
        bad = _unfit_in(record)
        if bad is not None:
            return f"{subject}.{bad}"
    return None


def _unfit_in(value: Any, path: str = "") -> str | None:
    if type(value) is int:
        return None if limits.fits_long(value) else f"{path} = {value}"
    if isinstance(value, dict):
        items: Any = value.items()
        keyed = True
    elif isinstance(value, list):
        items, keyed = enumerate(value), False
    else:
        return None
    lo, hi = limits.LONG_MIN, limits.LONG_MAX
    for k, v in items:
        # Every output record is checked, so the common fields (an int in range, a string) are settled here
        # without a call or a path string; only containers and out-of-range ints go further.
        t = type(v)
        if t is int:
            if lo <= v <= hi:
                continue
        elif not isinstance(v, (dict, list)):
            continue
        bad = _unfit_in(v, (f"{path}.{k}" if path else str(k)) if keyed else f"{path}[{k}]")
        if bad is not None:
            return bad
    return None


def _refuse(state: LedgerState, out: Outcome, reason: str, detail: str, record: dict[str, Any]) -> Outcome:
    """A rejection that decides nothing (limits, id reuse, horizon): answered under an id naming reason and content."""
    return _reject(state, out, reason, detail, record, refusal=True)


def _reject(state: LedgerState, out: Outcome, reason: str, detail: str, record: dict[str, Any] | None = None,
            inputs: dict[str, int] | None = None, refusal: bool = False) -> Outcome:
    out.rejection = (reason, detail)
    state.counters.rejected[reason] = state.counters.rejected.get(reason, 0) + 1
    limit = (inputs or {}).get("pool_limit_breached")
    if limit is not None:
        state.counters.count(trading.POOL_LIMIT_NAMES[limit])
    if record is not None and out.subject in REQUEST_KINDS and _answerable(record):
        inputs = inputs or {}
        if limits.unrepresentable(inputs) is not None:
            inputs = {}  # the reason and detail stand; figures an Avro long cannot hold are not echoed
        answer = reserve.request_outcome(record, REQUEST_KINDS[out.subject], _key(out.subject, record), reason, inputs)
        if refusal:
            digest = content_digest(out.subject, record)[:DIGEST_BYTES].hex()
            answer["event_id"] = f"{answer['event_id']}:{reason}:{digest}"
        out.emit("RequestOutcome", answer)
    return out


def _answerable(record: dict[str, Any]) -> bool:
    """An answer needs the request's envelope: an id and a time within their limits."""
    try:
        limits.check_field("event_id", limits.ENVELOPE["event_id"], record.get("event_id"))
        limits.check_field("occurred_at", limits.ENVELOPE["occurred_at"], record.get("occurred_at"))
    except limits.LimitError:
        return False
    return True


def _key(subject: str, record: dict[str, Any]) -> str:
    key = record.get(REQUEST_KEY_FIELD.get(subject, "account"), "")
    return key if type(key) is str and len(key) <= limits.TEXT_MAX_CHARS else ""
