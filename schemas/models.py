"""Pydantic v2 models of every schema subject, field by field, in the .avsc field order.

The .avsc files stay the source of truth; ``tests/unit/test_models_match_schemas.py`` fails when a model
drifts from the newest version of its subject (names, order, optionality, types, enum symbols).

Type mapping:

* ``string`` -> ``StrictStr``, ``bytes`` -> ``StrictBytes``
* ``long`` -> ``Long`` and ``int`` -> ``Int``: strict ``int`` bounded to the Avro range, so a float, a bool
  or a numeric string can never sneak into a money or quantity field
* ``timestamp-micros`` -> ``TimestampMicros`` (a ``Long``): integer microseconds since the Unix epoch, UTC
* ``enum`` -> a ``StrEnum`` whose values are the Avro symbols (validation accepts the symbol string)
* ``array`` of records -> ``list[<nested model>]``, ``map<long>`` -> ``dict[str, Long]``
* ``["null", X]`` with ``"default": null`` -> ``X | None = None``

``to_record(model)`` gives the plain dict ``schemas.codec.encode`` takes; ``from_record(subject, record)``
validates a decoded dict back into its model.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBytes, StrictStr

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1

Int = Annotated[int, Strict(), Ge(INT_MIN), Le(INT_MAX)]
"""Avro ``int``: a strict 32-bit signed integer."""

Long = Annotated[int, Strict(), Ge(LONG_MIN), Le(LONG_MAX)]
"""Avro ``long``: a strict 64-bit signed integer."""

TimestampMicros = Long
"""Avro ``long`` / ``timestamp-micros``: microseconds since the Unix epoch (UTC), kept as an int."""

_EVENT_ID = "Producer's idempotency key; derived events get ids from their cause."
_OCCURRED_AT = "Effective time, microseconds since the Unix epoch (UTC)."
_SOURCE = "Who produced the event (custodian, issuer, venue, oracle, stockledger)."
_QTY_NANO = "Quantity in nano-units (1e-9) of the asset."


class AvroModel(BaseModel):
    """Base of every schema model: unknown fields are rejected and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- enums


class CustodyDirection(StrEnum):
    DEPOSIT = "DEPOSIT"
    WITHDRAWAL = "WITHDRAWAL"


class MovementStatus(StrEnum):
    """IN_TRANSIT: instructed, not settled; SETTLED: final."""

    IN_TRANSIT = "IN_TRANSIT"
    SETTLED = "SETTLED"


class StatementFunction(StrEnum):
    NEW = "NEW"
    CANCEL = "CANCEL"


class StatementCompleteness(StrEnum):
    COMPLETE = "COMPLETE"
    DELTA = "DELTA"


class CorporateActionKind(StrEnum):
    SPLIT = "SPLIT"
    REVERSE_SPLIT = "REVERSE_SPLIT"
    CASH_DIVIDEND = "CASH_DIVIDEND"


class MarketStatus(StrEnum):
    UNKNOWN = "UNKNOWN"
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALTED = "HALTED"


class OptionKind(StrEnum):
    CALL = "CALL"
    PUT = "PUT"


class RequestKind(StrEnum):
    MINT = "MINT"
    COLLATERAL_WITHDRAWAL = "COLLATERAL_WITHDRAWAL"
    LP_REDEEM = "LP_REDEEM"
    TRADE = "TRADE"


class Decision(StrEnum):
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


class WaterfallStep(StrEnum):
    ACCOUNT_MARGIN = "ACCOUNT_MARGIN"
    PENALTY = "PENALTY"
    INSURANCE = "INSURANCE"
    LP_SOCIALISED = "LP_SOCIALISED"


class RejectionReason(StrEnum):
    malformed = "malformed"
    unknown_schema = "unknown_schema"
    unknown_symbol = "unknown_symbol"
    unknown_account = "unknown_account"
    unknown_series = "unknown_series"
    non_positive_amount = "non_positive_amount"
    insufficient_reserve = "insufficient_reserve"
    insufficient_balance = "insufficient_balance"
    insufficient_margin = "insufficient_margin"
    pool_capacity = "pool_capacity"
    stale_price = "stale_price"
    market_closed = "market_closed"
    conflicting_duplicate = "conflicting_duplicate"
    unknown_instrument = "unknown_instrument"
    invalid_statement = "invalid_statement"
    already_listed = "already_listed"
    beyond_redelivery_horizon = "beyond_redelivery_horizon"
    beyond_limit = "beyond_limit"
    pool_insolvent = "pool_insolvent"


# ------------------------------------------------------------------------------------ nested records


class ClosedPosition(AvroModel):
    series_id: StrictStr
    volume_nano: Long
    mark_micro_usd: Long
    value_micro_usd: Long = Field(description="Signed close value paid to the account.")


class Seizure(AvroModel):
    symbol: StrictStr
    qty_nano: Long = Field(description=_QTY_NANO)
    value_micro_usd: Long


class Posting(AvroModel):
    debit_account: StrictStr
    credit_account: StrictStr
    asset: StrictStr
    amount_minor: Long = Field(
        description="Amount in the asset's minor unit: nano for tokens, shares and pool shares, micro for USD."
    )


# ------------------------------------------------------------------------------------ custody.events


class CustodyMovement(AvroModel):
    """Shares deposited at or withdrawn from the custodian (custody.events, key symbol)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    symbol: StrictStr = Field(description="Ticker of the tokenized stock, e.g. TSLA.")
    isin: StrictStr
    movement_ref: StrictStr = Field(
        description="Custodian's reference of the movement; in-transit and settled legs share it."
    )
    direction: CustodyDirection
    status: MovementStatus
    qty_nano: Long = Field(description="Shares in nano-shares.")


class HoldingStatement(AvroModel):
    """Custodian statement of holdings shaped like SWIFT MT535, one row per ISIN (custody.events, key symbol)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    statement_ref: StrictStr
    statement_number: Int
    function: StatementFunction
    as_of: TimestampMicros = Field(
        description="Time the holdings are stated for, microseconds since the Unix epoch (UTC)."
    )
    completeness: StatementCompleteness
    safekeeping_account: StrictStr
    isin: StrictStr
    symbol: StrictStr
    aggr_qty_nano: Long = Field(description="AGGR: aggregate holding, nano-shares.")
    avai_qty_nano: Long = Field(description="AVAI: available, nano-shares.")
    navl_qty_nano: Long = Field(description="NAVL: not available, nano-shares; AVAI + NAVL = AGGR.")


class CorporateAction(AvroModel):
    """Split, reverse split or reinvested cash dividend, via the shares-per-token multiplier (custody.events, key symbol)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    symbol: StrictStr
    action_ref: StrictStr
    kind: CorporateActionKind
    ratio_num: Long = Field(
        description="New shares per ratio_den old shares (SPLIT 3:1 is 3/1, REVERSE_SPLIT 1:10 is 1/10); 1/1 for dividends."
    )
    ratio_den: Long
    dividend_micro_usd_per_share: Long = Field(
        description="Gross cash dividend per share, micro-USD (CASH_DIVIDEND only)."
    )
    withholding_ppm: Long = Field(description="Tax withheld from the dividend, parts per million.")
    reference_price_micro_usd: Long = Field(
        description="Price the net dividend is reinvested at, micro-USD per share."
    )
    activation_time: TimestampMicros = Field(
        description="From this effective time on the new multiplier applies; microseconds since the Unix epoch (UTC)."
    )


class StockListed(AvroModel):
    """A tokenized stock admitted as collateral, with its haircut (custody.events, key symbol)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    symbol: StrictStr
    isin: StrictStr
    haircut_ppm: Long = Field(description="Valuation haircut, parts per million of the value.")


# --------------------------------------------------------------------------------------- mint.events


class MintRequest(AvroModel):
    """Issuer asks to mint tokens to an account; approved only if reserves cover it (mint.events, key symbol)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    symbol: StrictStr
    account: StrictStr
    qty_nano: Long = Field(description="Tokens to mint, nano-tokens.")


class Burn(AvroModel):
    """Tokens burned from an account's wallet on redemption (mint.events, key symbol)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    symbol: StrictStr
    account: StrictStr
    qty_nano: Long = Field(description="Tokens burned, nano-tokens.")


class SupplyObservation(AvroModel):
    """On-chain total supply observed at a block (mint.events, key symbol)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    symbol: StrictStr
    chain: StrictStr
    block_number: Long
    supply_qty_nano: Long = Field(description="Total supply, nano-tokens.")


# -------------------------------------------------------------------------------------- price.events


class PriceMark(AvroModel):
    """Oracle mark for a stock or a crypto underlying (price.events, key instrument)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    instrument: StrictStr = Field(description="Stock ticker or crypto underlying (BTC, ETH).")
    price_micro_usd: Long = Field(description="Price per share or per coin, micro-USD.")
    market_status: MarketStatus
    multiplier_nano: Long = Field(
        description="Shares per token reported by the oracle, nano (1e9 = 1 share per token)."
    )
    volatility_ppm: Long = Field(
        description="Annualised volatility for crypto underlyings, ppm (1e6 = 100 %); 0 for stocks."
    )
    published_at: TimestampMicros = Field(
        description="Oracle timestamp of the observation, microseconds since the Unix epoch (UTC); "
        "staleness is measured from it."
    )


class SeriesListed(AvroModel):
    """An everlasting option series opened for trading (price.events, key underlying)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    series_id: StrictStr = Field(description="e.g. BTC-C-60000-7D.")
    underlying: StrictStr
    option_kind: OptionKind
    strike_micro_usd: Long
    funding_period_s: Long = Field(description="Funding period T in seconds.")


# ------------------------------------------------------------------------------------- margin.events


class CollateralDeposit(AvroModel):
    """Stock tokens moved from an account's wallet into its margin (margin.events, key account)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    account: StrictStr
    symbol: StrictStr
    qty_nano: Long = Field(description=_QTY_NANO)


class CollateralWithdrawalRequest(AvroModel):
    """Request to move collateral back to the wallet; approved only if equity stays >= IM (margin.events, key account)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    account: StrictStr
    symbol: StrictStr
    qty_nano: Long = Field(description=_QTY_NANO)


class LpDeposit(AvroModel):
    """Stock tokens deposited into the main pool for pool shares at NAV (margin.events, key account)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    account: StrictStr
    symbol: StrictStr
    qty_nano: Long = Field(description=_QTY_NANO)


class LpRedeemRequest(AvroModel):
    """Request to redeem pool shares at NAV, paid in one stock token (margin.events, key account)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    account: StrictStr
    shares_nano: Long = Field(description="Pool shares to redeem, nano-shares.")
    payout_symbol: StrictStr


# -------------------------------------------------------------------------------------- trade.events


class TradeRequest(AvroModel):
    """Everlasting option trade against the main pool; positive volume buys (trade.events, key account)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    account: StrictStr
    series_id: StrictStr
    volume_nano: Long = Field(description="Signed contracts, nano; > 0 buys, < 0 sells.")


# ---------------------------------------------------------------------------------- request.outcomes


class RequestOutcome(AvroModel):
    """The ledger's answer to a request, with the inputs it used (request.outcomes)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    request_event_id: StrictStr
    request_kind: RequestKind
    key: StrictStr = Field(description="Account or symbol the request was keyed by.")
    decision: Decision
    reason: StrictStr | None = Field(default=None, description="Rejection reason code; null when approved.")
    inputs: dict[StrictStr, Long] = Field(
        description="Every input the decision used (prices, equity, margin, reserve), integer units named in the key."
    )


# -------------------------------------------------------------------------------- liquidation.events


class LiquidationTriggered(AvroModel):
    """An account fell below maintenance margin (liquidation.events, key account)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    account: StrictStr
    cause_event_id: StrictStr
    equity_micro_usd: Long
    maintenance_margin_micro_usd: Long
    inputs: dict[StrictStr, Long] = Field(description="Prices, multipliers, marks and balances used.")


class LiquidationExecuted(AvroModel):
    """Positions closed along the curve (and any the backstop took over at the mark), collateral seized (liquidation.events, key account)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    account: StrictStr
    trigger_event_id: StrictStr
    closed_positions: list[ClosedPosition] = Field(description="Closed along the pool's curve, each series within the price-shift limit.")
    seized: list[Seizure]
    debt_micro_usd: Long = Field(description="Cash debt after closing, micro-USD.")
    penalty_micro_usd: Long
    bonus_micro_usd: Long
    shortfall_micro_usd: Long
    backstop_positions: list[ClosedPosition] | None = Field(
        default=None,
        description="What the pool took over at the mark (no further shift) because the capped close left the account "
        "under maintenance margin; null in v1 records and when the backstop did not act.",
    )


class BadDebtCovered(AvroModel):
    """One step of the shortfall waterfall (liquidation.events, key account)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    account: StrictStr
    trigger_event_id: StrictStr
    step: WaterfallStep
    amount_micro_usd: Long


class AutoDeleveraged(AvroModel):
    """One auto-deleveraging step: a profitable trader's positions reduced at the mark and part of its profit taken for a bad debt the insurance and the LPs' equity could not absorb (liquidation.events, key account)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    account: StrictStr
    trigger_event_id: StrictStr
    bankrupt_account: StrictStr = Field(description="The liquidated account whose debt the LPs' equity could not absorb.")
    rank: Int = Field(description="Position in the ADL queue, 1 = first deleveraged.")
    score_ppm: Long = Field(description="Ranking score x 1e6: (claim / equity) x (notional / equity), profit times leverage (Hyperliquid's ADL index without entry prices).")
    claim_micro_usd: Long = Field(description="What the pool owed the account before the step: equity - collateral (cash + positions at theo - funding owed).")
    equity_micro_usd: Long = Field(description="The account's equity before the step.")
    notional_micro_usd: Long = Field(description="Sum of |volume| x spot over its positions before the step.")
    pool_model_value_micro_usd: Long = Field(description="The pool's model value (the LPs' equity, ledger.pool) before the step; negative here.")
    deficit_before_micro_usd: Long = Field(description="What is left to recover before this step.")
    fraction_ppm: Long = Field(description="Share of every position closed at the mark (deficit / claim, rounded up, at most 1e6).")
    closed_positions: list[ClosedPosition] = Field(description="Closed at the mark (theo), rounded against the account.")
    haircut_micro_usd: Long = Field(
        description="USD taken from the account to the pool: the deficit, at most its claim and its equity above maintenance margin after the reduction.")
    deficit_after_micro_usd: Long = Field(description="deficit_before - haircut.")


# -------------------------------------------------------------------------------------- series.state


class SeriesState(AvroModel):
    """Latest state of an option series, published to a compacted topic (series.state, key series)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    series_id: StrictStr
    underlying: StrictStr
    spot_micro_usd: Long
    theo_micro_usd: Long
    mark_micro_usd: Long
    net_volume_nano: Long = Field(description="Traders' net position in the series.")
    cum_funding_pico_usd: Long = Field(description="Cumulative funding per contract, pico-USD (1e-12).")
    volatility_ppm: Long


# ----------------------------------------------------------------------------- ledger.* and archives


class PostingBatch(AvroModel):
    """Balanced double-entry postings of one applied event (ledger.postings)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    cause_event_id: StrictStr
    cause_kind: StrictStr
    postings: list[Posting]


class Rejection(AvroModel):
    """A dead letter: an input the ledger did not apply (ledger.rejections)."""

    event_id: StrictStr = Field(description=_EVENT_ID)
    occurred_at: TimestampMicros = Field(description=_OCCURRED_AT)
    source: StrictStr = Field(description=_SOURCE)
    cause_event_id: StrictStr | None = None
    reason: RejectionReason
    detail: StrictStr
    source_topic: StrictStr
    source_partition: Int
    source_offset: Long
    schema_id: Int | None = None
    original: StrictBytes = Field(description="The record's value bytes as received.")


class ArchiveRecord(AvroModel):
    """One Kafka record in an event archive (Avro object container file), in log order."""

    topic: StrictStr
    key: StrictStr
    value: StrictBytes = Field(description="Confluent-framed Avro bytes (or whatever bytes arrived).")
    source_partition: Int | None = Field(default=None, description="Source partition, where the record came from a topic (an exported log); null in a generated archive.")
    source_offset: Long | None = Field(default=None, description="Source offset: the fold deduplicates redeliveries by it, as live.")
    timestamp_ms: Long | None = Field(default=None, description="Source record timestamp: the ledger's recorded time of the entry.")


class SequencedRecord(AvroModel):
    """One input record as placed in the ledger's total order by the sequencer (ledger.sequenced, one partition)."""

    topic: StrictStr = Field(description="Source topic.")
    partition: Int = Field(description="Source partition.")
    offset: Long = Field(description="Source offset; the fold skips offsets it has already applied for this partition.")
    timestamp_ms: Long = Field(description="Source record timestamp (CreateTime), the merge key.")
    key: StrictBytes | None = None
    value: StrictBytes | None = Field(default=None, description="The source record's value bytes, untouched.")


class SequencedBatch(AvroModel):
    """Consecutive input records in the ledger's total order, as the sequencer writes them (ledger.sequenced, one partition): one Kafka record carries up to sequencer_batch_max_records entries, so the fold pays the transport once per batch."""

    records: list[SequencedRecord] = Field(description="The entries in order, each a SequencedRecord.")


class SnapshotChunk(AvroModel):
    """One piece of a fold snapshot (ledger.snapshots, compacted, key <group>/<offset>/<index>); the manifest says how many and their digest."""

    group: StrictStr = Field(description="The fold's consumer group (one ledger).")
    next_sequenced_offset: Long = Field(description="The ledger.sequenced offset the snapshot's state has folded up to (exclusive).")
    index: Int = Field(description="Position of this chunk, from 0.")
    data: StrictBytes = Field(description="Up to 512 KiB of the snapshot's bytes.")


class SnapshotManifest(AvroModel):
    """A fold snapshot's table of contents (ledger.snapshots, key <group>/<offset>/manifest), written after all its chunks: recovery trusts a snapshot only when every chunk is there and the bytes hash to sha256 and the state to state_hash."""

    event_id: StrictStr = Field(description="snapshot:<group>:<next_sequenced_offset>")
    occurred_at: TimestampMicros = Field(description="The ledger's log clock when the snapshot was taken, microseconds since the Unix epoch (UTC).")
    source: StrictStr
    group: StrictStr
    next_sequenced_offset: Long
    format: StrictStr = Field(description="How the bytes encode the fold (pickle5+zlib/v1: the state, counts and log clock).")
    chunks: Int
    size_bytes: Long
    sha256: StrictStr = Field(description="SHA-256 of the snapshot's bytes, 64 hex.")
    state_hash: StrictStr = Field(description="The canonical state hash of the state inside.")
    log_size: Long = Field(description="Entries in the Merkle log at the snapshot.")
    log_root: StrictStr = Field(description="The Merkle log's root hash at the snapshot, 64 hex.")


class FoldCheckpoint(AvroModel):
    """Progress of the fold, published after each committed batch (ledger.checkpoints, compacted, key worker group)."""

    event_id: StrictStr
    occurred_at: TimestampMicros = Field(description="Latest effective time folded, microseconds since the Unix epoch (UTC).")
    source: StrictStr
    worker_id: StrictStr
    next_sequenced_offset: Long = Field(description="Next offset of ledger.sequenced to fold.")
    state_hash: StrictStr
    applied: dict[StrictStr, Long] = Field(description="Applied records per source topic.")
    duplicates: dict[StrictStr, Long] = Field(description="Redeliveries (same offset or same event) per source topic.")
    rejected: dict[StrictStr, Long] = Field(description="Rejected records per source topic.")
    rejected_by_reason: dict[StrictStr, Long]


class TreeHead(AvroModel):
    """A signed checkpoint of the Merkle log over ledger.sequenced (ledger.tree_heads, compacted, key origin/size): docs/AUDITOR.md."""

    event_id: StrictStr = Field(description="tree-head:<origin>:<tree_size>")
    occurred_at: TimestampMicros = Field(description="Latest effective time folded when the head was taken, microseconds since the Unix epoch (UTC).")
    source: StrictStr
    origin: StrictStr = Field(description="The log's origin line (first line of the checkpoint).")
    tree_size: Long = Field(description="Entries in the log; equals the next ledger.sequenced offset to fold.")
    root_hash: StrictStr = Field(description="RFC 9162 root hash, 64 lowercase hex.")
    key_name: StrictStr = Field(description="Name of the signing key (verifier keys are <name>+<key id>+<key>).")
    note: StrictStr = Field(description="The C2SP signed note: checkpoint body, blank line, signature lines.")


# ---------------------------------------------------------------------------------------- registry

class AccountCollateral(AvroModel):
    """One account's balances as the fold holds them (ledger.collateral: the changelog of the Faust table 'collateral', compacted, key account id): published after the sequenced record that changed them, at most once per publish interval."""

    event_id: StrictStr = Field(description="collateral:<account>:<next_sequenced_offset>")
    occurred_at: TimestampMicros = Field(description="The ledger's log clock at publication, microseconds since the Unix epoch (UTC).")
    source: StrictStr
    account: StrictStr
    next_sequenced_offset: Long = Field(description="The balances are the fold of ledger.sequenced up to (not including) this offset.")
    margin_nano: dict[StrictStr, Long] = Field(description="Tokens pledged as margin collateral, per symbol, nano-tokens.")
    wallet_nano: dict[StrictStr, Long] = Field(description="Tokens in the account's wallet (not collateral), per symbol, nano-tokens.")
    cash_micro_usd: Long = Field(description="USD cash; negative is a debt to the pool secured by the collateral.")
    positions_nano: dict[StrictStr, Long] = Field(description="Option positions per series id, signed volume in nano-units (negative: short).")
    lp_shares_nano: Long
    liquidations: Long = Field(description="Liquidations of this account so far.")


class PoolState(AvroModel):
    """The main liquidity pool and the insurance pool behind it as the fold holds them (ledger.pools: the changelog of the Faust table 'pools', compacted, key pool id): published after the sequenced record that changed them, at most once per publish interval."""

    event_id: StrictStr = Field(description="pool:<pool>:<next_sequenced_offset>")
    occurred_at: TimestampMicros = Field(description="The ledger's log clock at publication, microseconds since the Unix epoch (UTC).")
    source: StrictStr
    pool: StrictStr = Field(description="main (the one liquidity pool; the insurance pool's balances are fields of it).")
    next_sequenced_offset: Long = Field(description="The figures are the fold of ledger.sequenced up to (not including) this offset.")
    tokens_nano: dict[StrictStr, Long] = Field(description="Stock tokens the pool holds, per symbol, nano-tokens.")
    cash_micro_usd: Long
    shares_nano: Long = Field(description="LP shares issued, nano-shares.")
    nav_micro_usd: Long = Field(description="Net asset value (DESIGN section 5: liquidity + funding receivable - the cost to close the net position along the curve).")
    share_value_micro_usd: Long = Field(description="NAV per whole share, rounded down; 0 when no shares are issued.")
    insurance_tokens_nano: dict[StrictStr, Long]
    insurance_cash_micro_usd: Long
    bad_debt_socialised_micro_usd: Long = Field(description="Bad debt the pool's LPs absorbed so far.")
    bad_debt_insurance_micro_usd: Long = Field(description="Bad debt the insurance pool absorbed so far.")
    model_value_micro_usd: Long | None = Field(
        default=None, description="The pool's model value (liquidity + its book at theo + funding receivable): what LP shares are priced on (ledger.pool). Null in v1 records.")
    usd_raised_micro_usd: Long | None = Field(
        default=None, description="USD raised so far by selling the shares behind redeemed pool tokens (ledger.settlement). Null in v1 records.")
    usd_paid_in_micro_usd: Long | None = Field(default=None, description="USD users paid in so far (CollateralDeposit with symbol USD). Null in v1 records.")
    usd_paid_out_micro_usd: Long | None = Field(default=None, description="USD paid out so far (winners' withdrawals). Null in v1 records.")
    usd_on_hand_micro_usd: Long | None = Field(default=None, description="USD the venue holds: raised + paid in - paid out. Null in v1 records.")


MODELS: dict[str, type[AvroModel]] = {
    m.__name__: m
    for m in (
        CustodyMovement,
        HoldingStatement,
        CorporateAction,
        StockListed,
        MintRequest,
        Burn,
        SupplyObservation,
        PriceMark,
        SeriesListed,
        CollateralDeposit,
        CollateralWithdrawalRequest,
        LpDeposit,
        LpRedeemRequest,
        TradeRequest,
        RequestOutcome,
        LiquidationTriggered,
        LiquidationExecuted,
        BadDebtCovered,
        AutoDeleveraged,
        SeriesState,
        PostingBatch,
        Rejection,
        ArchiveRecord,
        SequencedRecord,
        SequencedBatch,
        SnapshotChunk,
        SnapshotManifest,
        FoldCheckpoint,
        TreeHead,
        AccountCollateral,
        PoolState,
    )
}
"""Subject (Avro record name) -> model of its newest schema version."""


def subject_of(model: BaseModel) -> str:
    """The schema subject a model instance encodes as."""
    return type(model).__name__


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return {name: _plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_record(model: BaseModel) -> dict[str, Any]:
    """A plain dict for ``schemas.codec.encode``: field order kept, enums as their symbol strings."""
    return _plain(model)


def from_record(subject: str, record: dict[str, Any]) -> AvroModel:
    """Validate a decoded record (as ``schemas.codec.decode`` returns it) into the subject's model."""
    return MODELS[subject].model_validate(record)
