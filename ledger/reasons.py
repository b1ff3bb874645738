"""Named rejection reason codes: every input is applied or rejected with exactly one of these."""

from __future__ import annotations

MALFORMED = "malformed"
UNKNOWN_SCHEMA = "unknown_schema"
UNKNOWN_SYMBOL = "unknown_symbol"
UNKNOWN_ACCOUNT = "unknown_account"
UNKNOWN_SERIES = "unknown_series"
UNKNOWN_INSTRUMENT = "unknown_instrument"
NON_POSITIVE_AMOUNT = "non_positive_amount"
INSUFFICIENT_RESERVE = "insufficient_reserve"
INSUFFICIENT_BALANCE = "insufficient_balance"
INSUFFICIENT_MARGIN = "insufficient_margin"
POOL_CAPACITY = "pool_capacity"
STALE_PRICE = "stale_price"
MARKET_CLOSED = "market_closed"
CONFLICTING_DUPLICATE = "conflicting_duplicate"
INVALID_STATEMENT = "invalid_statement"
ALREADY_LISTED = "already_listed"
BEYOND_REDELIVERY_HORIZON = "beyond_redelivery_horizon"  # too old to tell from a redelivery (ledger.idempotency)
BEYOND_LIMIT = "beyond_limit"  # a field or a value derived from it outside its declared limits (ledger.limits)
POOL_INSOLVENT = "pool_insolvent"  # an LP deposit into a pool whose NAV is <= 0 (ledger.pool)

ALL_REASONS: tuple[str, ...] = (
    MALFORMED, UNKNOWN_SCHEMA, UNKNOWN_SYMBOL, UNKNOWN_ACCOUNT, UNKNOWN_SERIES, NON_POSITIVE_AMOUNT,
    INSUFFICIENT_RESERVE, INSUFFICIENT_BALANCE, INSUFFICIENT_MARGIN, POOL_CAPACITY, STALE_PRICE,
    MARKET_CLOSED, CONFLICTING_DUPLICATE, UNKNOWN_INSTRUMENT, INVALID_STATEMENT, ALREADY_LISTED,
    BEYOND_REDELIVERY_HORIZON, BEYOND_LIMIT, POOL_INSOLVENT,
)


class Rejected(Exception):
    """Raised inside the core before any state is touched; the engine turns it into a rejection."""

    def __init__(self, reason: str, detail: str, inputs: dict[str, int] | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.inputs = inputs or {}
