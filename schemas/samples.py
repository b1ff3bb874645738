"""Deterministic, realistic sample records of every input and output subject, routed to their topics.

``sample_records(n, seed)`` is a pure function of its arguments (``random.Random(seed)``, a fixed clock
start, event ids drawn from the same generator): the same call gives the same records, byte for byte.
Every record is built through its Pydantic model (schemas/models.py), so it is valid by construction, and
returned as the plain dict ``schemas.codec.encode`` takes. ArchiveRecord is not sampled: it is a file
format for archives, not a record carried by a topic.

Units follow the field names: ``*_nano`` is 1e-9 of a share, token, pool share or contract, ``*_micro_usd``
1e-6 USD, ``*_pico_usd`` 1e-12 USD, ``*_ppm`` parts per million, times are microseconds since the epoch.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas import codec
from schemas.models import (
    MODELS,
    Decision,
    RejectionReason,
    RequestKind,
    to_record,
)
from schemas.topics import INPUT_TOPICS, SUBJECT_ROUTES

STOCKS: dict[str, str] = {  # ticker -> ISIN
    "TSLA": "US88160R1014",
    "AAPL": "US0378331005",
    "NVDA": "US67066G1040",
    "AMZN": "US0231351067",
    "MSFT": "US5949181045",
    "GOOGL": "US02079K3059",
}
SYMBOLS: tuple[str, ...] = tuple(STOCKS)
CRYPTO: tuple[str, ...] = ("BTC", "ETH")
ACCOUNTS: tuple[str, ...] = tuple(f"acct-{i:04d}" for i in range(1, 33))
CHAINS: tuple[str, ...] = ("ethereum", "solana", "arbitrum")

USD = 1_000_000  # micro-USD per USD
NANO = 1_000_000_000  # nano-units per unit
PPM = 1_000_000  # parts per million
DAY_S = 86_400
START_US = int(datetime(2025, 3, 3, 14, 30, tzinfo=UTC).timestamp()) * 1_000_000

_START_PRICE_USD: dict[str, int] = {
    "TSLA": 250,
    "AAPL": 190,
    "NVDA": 120,
    "AMZN": 185,
    "MSFT": 420,
    "GOOGL": 170,
    "BTC": 65_000,
    "ETH": 3_200,
}
_STRIKES_USD: dict[str, tuple[int, ...]] = {"BTC": (55_000, 65_000, 75_000), "ETH": (2_800, 3_200, 3_600)}
SERIES: tuple[tuple[str, str, str, int, int], ...] = tuple(  # (series_id, underlying, kind, strike $, days)
    (f"{u}-{k[0]}-{s}-{d}D", u, k, s, d)
    for u, strikes in _STRIKES_USD.items()
    for s in strikes
    for k in ("CALL", "PUT")
    for d in (1, 7)
)

# Input subjects first (by topic), then what stockledger itself publishes.
SUBJECTS: tuple[str, ...] = tuple(s for s in SUBJECT_ROUTES if s in MODELS and s != "ArchiveRecord")

Sample = tuple[str, str, str, dict[str, Any]]  # (topic, key, subject, record)


@dataclass
class _World:
    """Mutable state of one sample run: the generator, the clock, prices and counters."""

    rng: random.Random
    now_us: int = START_US
    prices: dict[str, int] = field(default_factory=lambda: {k: v * USD for k, v in _START_PRICE_USD.items()})
    counter: int = 0
    block: int = 21_800_000
    recent_event_ids: list[str] = field(default_factory=list)

    def tick(self) -> int:
        self.now_us += self.rng.randint(1_000, 2_000_000)  # 1 ms .. 2 s between events
        return self.now_us

    def next_ref(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter:08d}"

    def event_id(self) -> str:
        eid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.recent_event_ids = [*self.recent_event_ids[-63:], eid]
        return eid

    def cause_id(self) -> str:
        return self.rng.choice(self.recent_event_ids) if self.recent_event_ids else self.event_id()

    def price(self, instrument: str) -> int:
        """A random walk of at most 1 % per observation, in micro-USD."""
        p = self.prices[instrument]
        p = max(USD // 100, p + p * self.rng.randint(-10_000, 10_000) // PPM)
        self.prices[instrument] = p
        return p

    def qty_nano(self, max_units: int = 500) -> int:
        """A positive quantity: usually whole units, sometimes fractional."""
        units = self.rng.randint(1, max_units) * NANO
        return units + (self.rng.randint(1, NANO - 1) if self.rng.random() < 0.3 else 0)

    def header(self, source: str) -> dict[str, Any]:
        return {"event_id": self.event_id(), "occurred_at": self.tick(), "source": source}


# ----------------------------------------------------------------------------------------- builders


def _custody_movement(w: _World) -> dict[str, Any]:
    symbol = w.rng.choice(SYMBOLS)
    return {
        **w.header("custodian"),
        "symbol": symbol,
        "isin": STOCKS[symbol],
        "movement_ref": w.next_ref("MV"),
        "direction": w.rng.choice(("DEPOSIT", "DEPOSIT", "WITHDRAWAL")),
        "status": w.rng.choice(("IN_TRANSIT", "SETTLED")),
        "qty_nano": w.qty_nano(10_000),
    }


def _holding_statement(w: _World) -> dict[str, Any]:
    symbol = w.rng.choice(SYMBOLS)
    header = w.header("custodian")
    avai = w.qty_nano(1_000_000)
    navl = w.rng.choice((0, 0, w.qty_nano(5_000)))
    number = w.counter + 1
    return {
        **header,
        "statement_ref": w.next_ref("MT535"),
        "statement_number": number,
        "function": "CANCEL" if w.rng.random() < 0.05 else "NEW",
        "as_of": header["occurred_at"] - w.rng.randint(0, 3_600) * 1_000_000,
        "completeness": w.rng.choice(("COMPLETE", "COMPLETE", "DELTA")),
        "safekeeping_account": "SAFE-0001",
        "isin": STOCKS[symbol],
        "symbol": symbol,
        "aggr_qty_nano": avai + navl,
        "avai_qty_nano": avai,
        "navl_qty_nano": navl,
    }


def _corporate_action(w: _World) -> dict[str, Any]:
    symbol = w.rng.choice(SYMBOLS)
    header = w.header("custodian")
    kind = w.rng.choice(("SPLIT", "REVERSE_SPLIT", "CASH_DIVIDEND"))
    num, den, dividend, withholding, reference = 1, 1, 0, 0, 0
    if kind == "SPLIT":
        num = w.rng.choice((2, 3, 4, 10))
    elif kind == "REVERSE_SPLIT":
        den = w.rng.choice((2, 5, 10))
    else:
        dividend = w.rng.randint(5, 120) * 10_000  # 0.05 .. 1.20 USD per share
        withholding = w.rng.choice((0, 150_000, 300_000))  # 0 %, 15 %, 30 %
        reference = w.price(symbol)
    return {
        **header,
        "symbol": symbol,
        "action_ref": w.next_ref("CA"),
        "kind": kind,
        "ratio_num": num,
        "ratio_den": den,
        "dividend_micro_usd_per_share": dividend,
        "withholding_ppm": withholding,
        "reference_price_micro_usd": reference,
        "activation_time": header["occurred_at"] + w.rng.randint(1, 14) * DAY_S * 1_000_000,
    }


def _stock_listed(w: _World) -> dict[str, Any]:
    symbol = w.rng.choice(SYMBOLS)
    return {
        **w.header("stockledger"),
        "symbol": symbol,
        "isin": STOCKS[symbol],
        "haircut_ppm": w.rng.choice((150_000, 200_000, 250_000, 300_000)),
    }


def _mint_request(w: _World) -> dict[str, Any]:
    return {
        **w.header("issuer"),
        "symbol": w.rng.choice(SYMBOLS),
        "account": w.rng.choice(ACCOUNTS),
        "qty_nano": w.qty_nano(2_000),
    }


def _burn(w: _World) -> dict[str, Any]:
    return {
        **w.header("issuer"),
        "symbol": w.rng.choice(SYMBOLS),
        "account": w.rng.choice(ACCOUNTS),
        "qty_nano": w.qty_nano(500),
    }


def _supply_observation(w: _World) -> dict[str, Any]:
    w.block += w.rng.randint(1, 50)
    return {
        **w.header("issuer"),
        "symbol": w.rng.choice(SYMBOLS),
        "chain": w.rng.choice(CHAINS),
        "block_number": w.block,
        "supply_qty_nano": w.qty_nano(5_000_000),
    }


def _price_mark(w: _World) -> dict[str, Any]:
    instrument = w.rng.choice(SYMBOLS + CRYPTO)
    header = w.header("oracle")
    crypto = instrument in CRYPTO
    return {
        **header,
        "instrument": instrument,
        "price_micro_usd": w.price(instrument),
        "market_status": "OPEN"
        if crypto
        else w.rng.choice(("OPEN", "OPEN", "OPEN", "CLOSED", "HALTED", "UNKNOWN")),
        "multiplier_nano": NANO
        if crypto
        else w.rng.choice((NANO, NANO, NANO + w.rng.randint(1, 50_000_000))),
        "volatility_ppm": w.rng.randint(450_000, 950_000) if crypto else 0,
        "published_at": header["occurred_at"] - w.rng.randint(0, 3_000_000),
    }


def _series_listed(w: _World) -> dict[str, Any]:
    series_id, underlying, kind, strike, days = w.rng.choice(SERIES)
    return {
        **w.header("venue"),
        "series_id": series_id,
        "underlying": underlying,
        "option_kind": kind,
        "strike_micro_usd": strike * USD,
        "funding_period_s": days * DAY_S,
    }


def _account_symbol_qty(source: str, max_units: int) -> Callable[[_World], dict[str, Any]]:
    def build(w: _World) -> dict[str, Any]:
        return {
            **w.header(source),
            "account": w.rng.choice(ACCOUNTS),
            "symbol": w.rng.choice(SYMBOLS),
            "qty_nano": w.qty_nano(max_units),
        }

    return build


def _lp_redeem_request(w: _World) -> dict[str, Any]:
    return {
        **w.header("venue"),
        "account": w.rng.choice(ACCOUNTS),
        "shares_nano": w.qty_nano(1_000),
        "payout_symbol": w.rng.choice(SYMBOLS),
    }


def _trade_request(w: _World) -> dict[str, Any]:
    volume = w.rng.randint(1, 200) * NANO // 10  # 0.1 .. 20 contracts
    return {
        **w.header("venue"),
        "account": w.rng.choice(ACCOUNTS),
        "series_id": w.rng.choice(SERIES)[0],
        "volume_nano": volume if w.rng.random() < 0.55 else -volume,
    }


_REJECT_REASONS: dict[RequestKind, tuple[RejectionReason, ...]] = {
    RequestKind.MINT: (RejectionReason.insufficient_reserve, RejectionReason.unknown_symbol),
    RequestKind.COLLATERAL_WITHDRAWAL: (RejectionReason.insufficient_margin, RejectionReason.stale_price),
    RequestKind.LP_REDEEM: (RejectionReason.insufficient_balance, RejectionReason.pool_capacity),
    RequestKind.TRADE: (
        RejectionReason.insufficient_margin,
        RejectionReason.market_closed,
        RejectionReason.unknown_series,
    ),
}


def _request_outcome(w: _World) -> dict[str, Any]:
    kind = w.rng.choice(tuple(RequestKind))
    key = w.rng.choice(SYMBOLS) if kind is RequestKind.MINT else w.rng.choice(ACCOUNTS)
    approved = w.rng.random() < 0.8
    if kind is RequestKind.MINT:
        reserve = w.qty_nano(1_000_000)
        inputs = {
            "reserve_qty_nano": reserve,
            "supply_qty_nano": reserve - w.qty_nano(10_000),
            "request_qty_nano": w.qty_nano(2_000),
        }
    else:
        symbol = w.rng.choice(SYMBOLS)
        equity = w.rng.randint(1_000, 5_000_000) * USD
        inputs = {
            f"{symbol}.price_micro_usd": w.price(symbol),
            f"{symbol}.multiplier_nano": NANO,
            "equity_micro_usd": equity,
            "initial_margin_micro_usd": equity * w.rng.randint(10, 120) // 100,
        }
    return {
        **w.header("stockledger"),
        "request_event_id": w.cause_id(),
        "request_kind": kind.value,
        "key": key,
        "decision": (Decision.APPROVED if approved else Decision.REJECTED).value,
        "reason": None if approved else w.rng.choice(_REJECT_REASONS[kind]).value,
        "inputs": inputs,
    }


def _liquidation_triggered(w: _World) -> dict[str, Any]:
    symbol = w.rng.choice(SYMBOLS)
    maintenance = w.rng.randint(10_000, 2_000_000) * USD
    return {
        **w.header("stockledger"),
        "account": w.rng.choice(ACCOUNTS),
        "cause_event_id": w.cause_id(),
        "equity_micro_usd": maintenance - w.rng.randint(1, maintenance // USD) * USD,
        "maintenance_margin_micro_usd": maintenance,
        "inputs": {
            f"{symbol}.price_micro_usd": w.price(symbol),
            f"{symbol}.multiplier_nano": NANO,
            f"{symbol}.collateral_qty_nano": w.qty_nano(5_000),
        },
    }


def _liquidation_executed(w: _World) -> dict[str, Any]:
    closed = []
    for _ in range(w.rng.randint(1, 3)):
        series_id, underlying, *_ = w.rng.choice(SERIES)
        volume = w.rng.randint(-100, 100) * NANO // 10 or NANO
        mark = w.rng.randint(10, 5_000) * USD
        closed.append(
            {
                "series_id": series_id,
                "volume_nano": volume,
                "mark_micro_usd": mark,
                "value_micro_usd": volume * mark // NANO,
            }
        )
    seized = []
    for symbol in w.rng.sample(SYMBOLS, w.rng.randint(1, 2)):
        qty = w.qty_nano(1_000)
        seized.append({"symbol": symbol, "qty_nano": qty, "value_micro_usd": qty * w.price(symbol) // NANO})
    debt = w.rng.randint(0, 500_000) * USD
    penalty = debt * 5 // 100
    covered = sum(s["value_micro_usd"] for s in seized)
    return {
        **w.header("stockledger"),
        "account": w.rng.choice(ACCOUNTS),
        "trigger_event_id": w.cause_id(),
        "closed_positions": closed,
        "seized": seized,
        "debt_micro_usd": debt,
        "penalty_micro_usd": penalty,
        "bonus_micro_usd": penalty // 2,
        "shortfall_micro_usd": max(0, debt + penalty - covered),
        "backstop_positions": closed[-1:] if debt // USD % 2 else None,  # v2; no extra draw, so later samples stay put
    }


def _bad_debt_covered(w: _World) -> dict[str, Any]:
    return {
        **w.header("stockledger"),
        "account": w.rng.choice(ACCOUNTS),
        "trigger_event_id": w.cause_id(),
        "step": w.rng.choice(("ACCOUNT_MARGIN", "PENALTY", "INSURANCE", "LP_SOCIALISED")),
        "amount_micro_usd": w.rng.randint(1, 250_000) * USD,
    }


def _auto_deleveraged(w: _World) -> dict[str, Any]:
    series_id, *_ = w.rng.choice(SERIES)
    volume = w.rng.randint(1, 100) * NANO // 10
    mark = w.rng.randint(10, 5_000) * USD
    deficit = w.rng.randint(1, 250_000) * USD
    haircut = w.rng.randint(0, deficit // USD) * USD
    claim = haircut + w.rng.randint(0, 100_000) * USD
    equity = claim + w.rng.randint(1, 500_000) * USD
    return {
        **w.header("stockledger"),
        "account": w.rng.choice(ACCOUNTS),
        "trigger_event_id": w.cause_id(),
        "bankrupt_account": w.rng.choice(ACCOUNTS),
        "rank": w.rng.randint(1, 20),
        "score_ppm": w.rng.randint(1, 50 * PPM),
        "claim_micro_usd": claim,
        "equity_micro_usd": equity,
        "notional_micro_usd": w.rng.randint(1, 10_000_000) * USD,
        "pool_model_value_micro_usd": -deficit,
        "deficit_before_micro_usd": deficit,
        "fraction_ppm": w.rng.randint(1, PPM),
        "closed_positions": [{"series_id": series_id, "volume_nano": volume, "mark_micro_usd": mark,
                              "value_micro_usd": volume * mark // NANO}],
        "haircut_micro_usd": haircut,
        "deficit_after_micro_usd": deficit - haircut,
    }


def _series_state(w: _World) -> dict[str, Any]:
    series_id, underlying, _kind, _strike, _days = w.rng.choice(SERIES)
    spot = w.price(underlying)
    theo = spot * w.rng.randint(1_000, 80_000) // PPM
    return {
        **w.header("stockledger"),
        "series_id": series_id,
        "underlying": underlying,
        "spot_micro_usd": spot,
        "theo_micro_usd": theo,
        "mark_micro_usd": theo + theo * w.rng.randint(-20_000, 20_000) // PPM,
        "net_volume_nano": w.rng.randint(-5_000, 5_000) * NANO // 10,
        "cum_funding_pico_usd": w.rng.randint(-(10**15), 10**15),
        "volatility_ppm": w.rng.randint(450_000, 950_000),
    }


_CAUSES: tuple[tuple[str, str, str], ...] = (  # (cause kind, debit sub-account, credit sub-account)
    ("CollateralDeposit", "margin", "wallet"),
    ("CollateralWithdrawalRequest", "wallet", "margin"),
    ("MintRequest", "wallet", "issuer:unissued"),
    ("Burn", "issuer:unissued", "wallet"),
    ("LpDeposit", "pool:main", "wallet"),
)


def _posting_batch(w: _World) -> dict[str, Any]:
    kind, debit, credit = w.rng.choice(_CAUSES)
    account = w.rng.choice(ACCOUNTS)
    postings = []
    for symbol in w.rng.sample(SYMBOLS, w.rng.randint(1, 3)):
        postings.append(
            {
                "debit_account": debit if ":" in debit else f"{account}:{debit}",
                "credit_account": credit if ":" in credit else f"{account}:{credit}",
                "asset": symbol,
                "amount_minor": w.qty_nano(1_000),
            }
        )
    if w.rng.random() < 0.3:  # a fee in USD alongside
        postings.append(
            {
                "debit_account": f"{account}:cash",
                "credit_account": "fees:venue",
                "asset": "USD",
                "amount_minor": w.rng.randint(1, 5_000) * 10_000,
            }
        )
    return {
        **w.header("stockledger"),
        "cause_event_id": w.cause_id(),
        "cause_kind": kind,
        "postings": postings,
    }


def _rejection(w: _World) -> dict[str, Any]:
    reason = w.rng.choice(
        (
            RejectionReason.malformed,
            RejectionReason.unknown_schema,
            RejectionReason.insufficient_balance,
            RejectionReason.unknown_symbol,
            RejectionReason.stale_price,
            RejectionReason.conflicting_duplicate,
        )
    )
    cause: str | None = None
    if reason in (RejectionReason.malformed, RejectionReason.unknown_schema):
        if reason is RejectionReason.malformed:  # too short for the header, or a wrong magic byte
            original = bytes(w.rng.getrandbits(8) for _ in range(w.rng.randint(0, 4)))
            if w.rng.random() < 0.5:
                original = bytes([w.rng.randint(1, 255)]) + bytes(w.rng.getrandbits(8) for _ in range(12))
        else:
            original = b"\x00" + w.rng.randint(1_000, 9_999).to_bytes(4, "big") + bytes(range(16))
        source_topic = w.rng.choice(INPUT_TOPICS)
        try:
            codec.decode(original)
            raise AssertionError("sample bytes meant to be rejected decoded")  # pragma: no cover
        except codec.DecodeError as exc:
            detail, schema_id = exc.detail, exc.schema_id
            assert exc.reason == reason.value
    else:  # a valid input the ledger refused: its original bytes are a real framed record
        subject = w.rng.choice([s for s in SUBJECTS if SUBJECT_ROUTES[s][0] in INPUT_TOPICS])
        inner = to_record(MODELS[subject].model_validate(_BUILDERS[subject](w)))
        original = codec.encode(subject, inner)
        source_topic, cause = SUBJECT_ROUTES[subject][0], inner["event_id"]
        detail, schema_id = f"{subject} {inner['event_id']}: {reason.value}", codec.peek_schema_id(original)
    return {
        **w.header("stockledger"),  # after the rejected input: a rejection never precedes its cause
        "cause_event_id": cause,
        "reason": reason.value,
        "detail": detail,
        "source_topic": source_topic,
        "source_partition": w.rng.randrange(6),
        "source_offset": w.rng.randint(0, 50_000_000),
        "schema_id": schema_id,
        "original": original,
    }


def _sequenced_record(w: _World) -> dict[str, Any]:
    subject = w.rng.choice([s for s in SUBJECTS if SUBJECT_ROUTES[s][0] in INPUT_TOPICS])
    inner = to_record(MODELS[subject].model_validate(_BUILDERS[subject](w)))
    topic, key_field = SUBJECT_ROUTES[subject]
    return {
        "topic": topic,
        "partition": w.rng.randrange(6),
        "offset": w.rng.randint(0, 50_000_000),
        "timestamp_ms": inner["occurred_at"] // 1_000,
        "key": str(inner[key_field]).encode(),
        "value": codec.encode(subject, inner),
    }


def _fold_checkpoint(w: _World) -> dict[str, Any]:
    applied = {t: w.rng.randint(0, 10_000) for t in INPUT_TOPICS}
    return {
        **w.header("stockledger"),
        "worker_id": "stockledger",
        "next_sequenced_offset": sum(applied.values()),
        "state_hash": f"{w.rng.getrandbits(256):064x}",
        "applied": applied,
        "duplicates": {t: w.rng.randint(0, 50) for t in INPUT_TOPICS},
        "rejected": {t: w.rng.randint(0, 50) for t in INPUT_TOPICS},
        "rejected_by_reason": {"insufficient_margin": w.rng.randint(0, 50)},
    }


def _tree_head(w: _World) -> dict[str, Any]:
    size = w.rng.randint(0, 10_000_000)
    root = f"{w.rng.getrandbits(256):064x}"
    return {
        **w.header("stockledger"),
        "origin": "stockledger.local/ledger",
        "tree_size": size,
        "root_hash": root,
        "key_name": "stockledger.local/ledger",
        "note": f"stockledger.local/ledger\n{size}\n{root}\n\n\u2014 stockledger.local/ledger AAAA\n",
    }


def _snapshot_chunk(w: _World) -> dict[str, Any]:
    return {"group": "stockledger.fold", "next_sequenced_offset": w.rng.randint(0, 10**7), "index": w.rng.randint(0, 99),
            "data": w.rng.randbytes(w.rng.randint(0, 64))}


def _snapshot_manifest(w: _World) -> dict[str, Any]:
    offset = w.rng.randint(0, 10**7)
    return {**w.header("stockledger"), "group": "stockledger.fold", "next_sequenced_offset": offset,
            "format": "pickle5+zlib/v1", "chunks": w.rng.randint(1, 300), "size_bytes": w.rng.randint(1, 10**9),
            "sha256": f"{w.rng.getrandbits(256):064x}", "state_hash": f"{w.rng.getrandbits(256):064x}",
            "log_size": offset * 500, "log_root": f"{w.rng.getrandbits(256):064x}"}


def _account_collateral(w: _World) -> dict[str, Any]:
    account = f"acct-{w.rng.randint(0, 999):04d}"
    offset = w.rng.randint(0, 10**7)
    return {**w.header("stockledger"), "event_id": f"collateral:{account}:{offset}", "account": account,
            "next_sequenced_offset": offset,
            "margin_nano": {s: w.qty_nano() for s in w.rng.sample(SYMBOLS, 2)},
            "wallet_nano": {s: w.qty_nano() for s in w.rng.sample(SYMBOLS, 1)},
            "cash_micro_usd": w.rng.randint(-10**12, 10**12),
            "positions_nano": {s[0]: w.rng.choice((-1, 1)) * w.qty_nano(20) for s in w.rng.sample(SERIES, 2)},
            "lp_shares_nano": w.rng.choice((0, w.qty_nano())), "liquidations": w.rng.randint(0, 3)}


def _pool_state(w: _World) -> dict[str, Any]:
    offset = w.rng.randint(0, 10**7)
    nav = w.rng.randint(-10**12, 10**14)
    shares = w.qty_nano(10**6)
    raised, paid_in = w.rng.randint(0, 10**11), w.rng.randint(0, 10**11)
    paid_out = w.rng.randint(0, raised + paid_in)
    return {**w.header("stockledger"), "event_id": f"pool:main:{offset}", "pool": "main",
            "next_sequenced_offset": offset, "tokens_nano": {s: w.qty_nano(10**5) for s in SYMBOLS},
            "cash_micro_usd": w.rng.randint(-10**12, 10**13), "shares_nano": shares, "nav_micro_usd": nav,
            "share_value_micro_usd": nav * NANO // shares,
            "insurance_tokens_nano": {s: w.qty_nano(10**3) for s in w.rng.sample(SYMBOLS, 2)},
            "insurance_cash_micro_usd": w.rng.randint(0, 10**11),
            "bad_debt_socialised_micro_usd": w.rng.randint(0, 10**9), "bad_debt_insurance_micro_usd": w.rng.randint(0, 10**9),
            "model_value_micro_usd": nav + w.rng.randint(0, 10**9), "usd_raised_micro_usd": raised,
            "usd_paid_in_micro_usd": paid_in, "usd_paid_out_micro_usd": paid_out, "usd_on_hand_micro_usd": raised + paid_in - paid_out}


_BUILDERS: dict[str, Callable[[_World], dict[str, Any]]] = {
    "CustodyMovement": _custody_movement,
    "HoldingStatement": _holding_statement,
    "CorporateAction": _corporate_action,
    "StockListed": _stock_listed,
    "MintRequest": _mint_request,
    "Burn": _burn,
    "SupplyObservation": _supply_observation,
    "PriceMark": _price_mark,
    "SeriesListed": _series_listed,
    "CollateralDeposit": _account_symbol_qty("venue", 2_000),
    "CollateralWithdrawalRequest": _account_symbol_qty("venue", 500),
    "LpDeposit": _account_symbol_qty("venue", 5_000),
    "LpRedeemRequest": _lp_redeem_request,
    "TradeRequest": _trade_request,
    "RequestOutcome": _request_outcome,
    "LiquidationTriggered": _liquidation_triggered,
    "LiquidationExecuted": _liquidation_executed,
    "BadDebtCovered": _bad_debt_covered,
    "AutoDeleveraged": _auto_deleveraged,
    "SeriesState": _series_state,
    "PostingBatch": _posting_batch,
    "Rejection": _rejection,
    "SequencedRecord": _sequenced_record,
    "FoldCheckpoint": _fold_checkpoint,
    "TreeHead": _tree_head,
    "SnapshotChunk": _snapshot_chunk,
    "SnapshotManifest": _snapshot_manifest,
    "AccountCollateral": _account_collateral,
    "PoolState": _pool_state,
}
assert set(SUBJECTS) == set(_BUILDERS), f"samples out of date: {set(SUBJECTS) ^ set(_BUILDERS)}"


def route(subject: str, record: dict[str, Any]) -> tuple[str, str]:
    """(topic, key) of a record, as declared in schemas.topics.SUBJECT_ROUTES."""
    topic, key_field = SUBJECT_ROUTES[subject]
    return topic, record[key_field]


def sample_records(n: int, seed: int) -> list[Sample]:
    """n valid records, (topic, key, subject, record), spread evenly over every sampled subject.

    Subjects come in rounds: each round of len(SUBJECTS) records holds every subject once, in a shuffled
    order; so any n >= len(SUBJECTS) contains every subject. Deterministic in (n, seed).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    w = _World(random.Random(seed))
    out: list[Sample] = []
    round_: list[str] = []
    for _ in range(n):
        if not round_:
            round_ = list(SUBJECTS)
            w.rng.shuffle(round_)
        subject = round_.pop()
        record = to_record(MODELS[subject].model_validate(_BUILDERS[subject](w)))
        topic, key = route(subject, record)
        out.append((topic, key, subject, record))
    return out
