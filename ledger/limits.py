"""Declared limits of every input field, checked at the edge before any rule runs (docs/SCHEMAS.md, "Limits").

Avro only says a `long` is 64-bit. The ledger multiplies quantities, prices and multipliers, sums them
into balances and writes the results back as Avro longs, so a value that is valid Avro can still make
a derived value unrepresentable (the encoder raises and the worker could never move past the record).
Every field therefore has a declared shape and range; a record outside them is refused with
`beyond_limit` (or `malformed` for a missing field or a wrong type) before any rule sees it. Ranges
of amounts are magnitudes: the sign and finer checks stay with the rules and their own reasons.
The aggregates a rule builds (a reserve's holding and supply, the shares-per-token multiplier, the
integers of an answer) have limits too, checked by the rules before they change anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.reasons import BEYOND_LIMIT, MALFORMED, Rejected
from ledger.units import NANO, PPM, SECOND_US

# Times: microseconds since the epoch, from 2000-01-01 (inclusive) to 2100-01-01 (exclusive), UTC.
TIME_MIN_US = 946_684_800 * SECOND_US
TIME_MAX_US = 4_102_444_800 * SECOND_US
QTY_MAX_NANO = 10**17  # one record moves at most 100 million tokens, shares, pool shares or contracts
RESERVE_MAX_NANO = 10**18  # a symbol's custodian holding, supply or in-transit total (1e9 shares)
PRICE_MAX_MICRO_USD = 10**12  # 1,000,000 USD per share, token or coin: prices, strikes, dividends
PPM_MAX = PPM  # haircuts and withholding are fractions
VOLATILITY_MAX_PPM = 10 * PPM  # 1,000 % a year
RATIO_MAX = 10**6  # split ratio terms (1:1,000,000 at most per action)
# Shares per token, nano: between 1/1,000 and 1,000 shares. Bounded below so that a reverse split
# cannot round the multiplier to 0 (tokens backed by nothing) and its floor loses at most 1e-6 of it.
MULTIPLIER_MIN_NANO = NANO // 1_000
MULTIPLIER_MAX_NANO = NANO * 1_000
FUNDING_PERIOD_MAX_S = 10 * 366 * 86_400
BLOCK_NUMBER_MAX = 10**15
INT32_MAX = 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1  # Avro long: what every derived integer must fit
ID_MAX_CHARS = 256  # event ids and references
TEXT_MAX_CHARS = 64  # symbols, accounts, instruments, sources, ISINs, chains


@dataclass(frozen=True)
class Int:
    """An integer in [lo, hi]."""

    lo: int
    hi: int


@dataclass(frozen=True)
class Text:
    """A string of min_chars to max_chars characters."""

    max_chars: int = TEXT_MAX_CHARS
    min_chars: int = 1


@dataclass(frozen=True)
class Choice:
    """One of the enum's symbols."""

    symbols: tuple[str, ...]


Limit = Int | Text | Choice

TIME = Int(TIME_MIN_US, TIME_MAX_US - 1)
QTY = Int(-QTY_MAX_NANO, QTY_MAX_NANO)
PRICE = Int(-PRICE_MAX_MICRO_USD, PRICE_MAX_MICRO_USD)
NAME = Text()
REF = Text(ID_MAX_CHARS)

ENVELOPE: dict[str, Limit] = {"event_id": REF, "occurred_at": TIME, "source": Text(min_chars=0)}

FIELDS: dict[str, dict[str, Limit]] = {
    "StockListed": {"symbol": NAME, "isin": NAME, "haircut_ppm": Int(-PPM_MAX, PPM_MAX)},
    "CustodyMovement": {"symbol": NAME, "isin": NAME, "movement_ref": REF, "direction": Choice(("DEPOSIT", "WITHDRAWAL")),
                        "status": Choice(("IN_TRANSIT", "SETTLED")), "qty_nano": QTY},
    "HoldingStatement": {"statement_ref": REF, "statement_number": Int(-INT32_MAX - 1, INT32_MAX),
                         "function": Choice(("NEW", "CANCEL")), "as_of": TIME, "completeness": Choice(("COMPLETE", "DELTA")),
                         "safekeeping_account": REF, "isin": NAME, "symbol": NAME,
                         "aggr_qty_nano": Int(-RESERVE_MAX_NANO, RESERVE_MAX_NANO),
                         "avai_qty_nano": Int(-RESERVE_MAX_NANO, RESERVE_MAX_NANO),
                         "navl_qty_nano": Int(-RESERVE_MAX_NANO, RESERVE_MAX_NANO)},
    "CorporateAction": {"symbol": NAME, "action_ref": REF, "kind": Choice(("SPLIT", "REVERSE_SPLIT", "CASH_DIVIDEND")),
                        "ratio_num": Int(-RATIO_MAX, RATIO_MAX), "ratio_den": Int(-RATIO_MAX, RATIO_MAX),
                        "dividend_micro_usd_per_share": PRICE, "withholding_ppm": Int(-PPM_MAX, PPM_MAX),
                        "reference_price_micro_usd": PRICE, "activation_time": TIME},
    "MintRequest": {"symbol": NAME, "account": NAME, "qty_nano": QTY},
    "Burn": {"symbol": NAME, "account": NAME, "qty_nano": QTY},
    "SupplyObservation": {"symbol": NAME, "chain": NAME, "block_number": Int(-BLOCK_NUMBER_MAX, BLOCK_NUMBER_MAX),
                          "supply_qty_nano": Int(-RESERVE_MAX_NANO, RESERVE_MAX_NANO)},
    "PriceMark": {"instrument": NAME, "price_micro_usd": PRICE, "market_status": Choice(("UNKNOWN", "CLOSED", "OPEN", "HALTED")),
                  "multiplier_nano": Int(-MULTIPLIER_MAX_NANO, MULTIPLIER_MAX_NANO),
                  "volatility_ppm": Int(-VOLATILITY_MAX_PPM, VOLATILITY_MAX_PPM), "published_at": TIME},
    "SeriesListed": {"series_id": NAME, "underlying": NAME, "option_kind": Choice(("CALL", "PUT")), "strike_micro_usd": PRICE,
                     "funding_period_s": Int(-FUNDING_PERIOD_MAX_S, FUNDING_PERIOD_MAX_S)},
    "CollateralDeposit": {"account": NAME, "symbol": NAME, "qty_nano": QTY},
    "CollateralWithdrawalRequest": {"account": NAME, "symbol": NAME, "qty_nano": QTY},
    "LpDeposit": {"account": NAME, "symbol": NAME, "qty_nano": QTY},
    "LpRedeemRequest": {"account": NAME, "shares_nano": QTY, "payout_symbol": NAME},
    "TradeRequest": {"account": NAME, "series_id": NAME, "volume_nano": QTY},
}


class LimitError(Exception):
    """A field outside its declared shape (reason `malformed`) or range (reason `beyond_limit`)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def shown(value: Any, max_chars: int = 40) -> str:
    """A value for a message, cut to max_chars: a 10 MB bad value is never echoed in full."""
    text = repr(value)
    return text if len(text) <= max_chars else f"{text[:max_chars]}... ({len(text):,} chars)"


def check_field(name: str, limit: Limit, value: Any) -> None:
    """Raise LimitError if value does not have the field's shape and range."""
    if isinstance(limit, Int):
        if type(value) is not int:
            raise LimitError(MALFORMED, f"{name} must be an integer, got {type(value).__name__}")
        if not limit.lo <= value <= limit.hi:
            raise LimitError(BEYOND_LIMIT, f"{name} {shown(value)} is outside its limits [{limit.lo}, {limit.hi}]")
    elif isinstance(limit, Text):
        if type(value) is not str:
            raise LimitError(MALFORMED, f"{name} must be a string, got {type(value).__name__}")
        if len(value) < limit.min_chars:
            raise LimitError(MALFORMED, f"{name} must not be empty")
        if len(value) > limit.max_chars:
            raise LimitError(BEYOND_LIMIT, f"{name} of {len(value):,} characters is longer than {limit.max_chars}")
    elif value not in limit.symbols:
        raise LimitError(MALFORMED, f"{name} {shown(value)} is not one of {', '.join(limit.symbols)}")


def check_record(subject: str, record: dict[str, Any]) -> None:
    """Every declared field of the subject present, of its type and within its limits; else LimitError."""
    for fields in (ENVELOPE, FIELDS[subject]):
        for name, limit in fields.items():
            if name not in record:
                raise LimitError(MALFORMED, f"{subject} has no {name}")
            check_field(name, limit, record[name])


def fits_long(value: int) -> bool:
    return LONG_MIN <= value <= LONG_MAX


def unrepresentable(values: dict[str, int]) -> str | None:
    """The first integer (by name) that an Avro long cannot hold, or None when all fit."""
    for name, value in values.items():
        if not fits_long(value):
            return name
    return None


def require_fits(inputs: dict[str, int]) -> None:
    """Called by a request rule before it commits: every figure of its answer must fit an Avro long."""
    name = unrepresentable(inputs)
    if name is not None:
        raise Rejected(BEYOND_LIMIT, f"{name} = {shown(inputs[name])} does not fit a 64-bit integer")


def require_within(value: int, hi: int, what: str) -> None:
    """Called by a rule before it commits: an aggregate (a holding, a supply) stays within its limit."""
    if value > hi:
        raise Rejected(BEYOND_LIMIT, f"{what} would become {value}, above its limit {hi}")
