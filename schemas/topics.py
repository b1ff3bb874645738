"""The one declaration of every Kafka topic: name, key, partition count and configs."""

from __future__ import annotations

from dataclasses import dataclass, field

KEYED_PARTITIONS = 6  # custody and mint share it, so one reserve agent sees both for a symbol

RETAIN_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
COMPACTED = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
# Roll every minute / 16 MiB: compaction only cleans rolled segments, and Faust reads a table's whole changelog
# before the fold may start (~200 us a record): with 10-minute segments the 10M-entry recovery bench restored
# 26,000 rows of 2,000 accounts (5.2 s of an 18 s recovery).
TABLE_CHANGELOG = COMPACTED | {"segment.ms": "60000", "segment.bytes": str(16 << 20), "min.cleanable.dirty.ratio": "0.2"}


@dataclass(frozen=True)
class TopicSpec:
    """A topic as declared: the key it is partitioned by and the configs it must carry."""

    name: str
    key: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    description: str = ""


CUSTODY_EVENTS = "custody.events"
MINT_EVENTS = "mint.events"
PRICE_EVENTS = "price.events"
MARGIN_EVENTS = "margin.events"
TRADE_EVENTS = "trade.events"
LIQUIDATION_EVENTS = "liquidation.events"
REQUEST_OUTCOMES = "request.outcomes"
SERIES_STATE = "series.state"
LEDGER_POSTINGS = "ledger.postings"
LEDGER_REJECTIONS = "ledger.rejections"
LEDGER_SEQUENCED = "ledger.sequenced"  # SequencedRecord (one entry) or SequencedBatch (key b"batch")
LEDGER_CHECKPOINTS = "ledger.checkpoints"
LEDGER_TREE_HEADS = "ledger.tree_heads"
LEDGER_SNAPSHOTS = "ledger.snapshots"
# The changelogs of the Faust worker's published tables (streams/app.py): the latest balances per account and
# per pool, for downstream consumers. Derived from the fold (never read back by it), compacted.
LEDGER_COLLATERAL = "ledger.collateral"
LEDGER_POOLS = "ledger.pools"
# One partition: the ledger's total order (see README, "Streams"). Every trade touches the one main
# pool and every mark can liquidate any account, so the venue's decisions are sequential anyway.
SEQUENCED_PARTITIONS = 1

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(CUSTODY_EVENTS, "symbol", KEYED_PARTITIONS, RETAIN_FOREVER, "custody movements, holding statements, corporate actions"),
    TopicSpec(MINT_EVENTS, "symbol", KEYED_PARTITIONS, RETAIN_FOREVER, "mint requests, burns, observed on-chain supply"),
    TopicSpec(PRICE_EVENTS, "instrument", KEYED_PARTITIONS, RETAIN_FOREVER, "oracle marks, instrument and series listings"),
    TopicSpec(MARGIN_EVENTS, "account", KEYED_PARTITIONS, RETAIN_FOREVER, "collateral deposits and withdrawals, LP deposits and redemptions"),
    TopicSpec(TRADE_EVENTS, "account", KEYED_PARTITIONS, RETAIN_FOREVER, "everlasting option trade requests"),
    TopicSpec(LIQUIDATION_EVENTS, "account", KEYED_PARTITIONS, RETAIN_FOREVER, "liquidation triggered / executed / bad debt covered"),
    TopicSpec(REQUEST_OUTCOMES, "account or symbol", KEYED_PARTITIONS, RETAIN_FOREVER, "approve / reject answers to requests, with inputs"),
    TopicSpec(SERIES_STATE, "series", KEYED_PARTITIONS, COMPACTED, "latest state per option series (compacted)"),
    TopicSpec(LEDGER_POSTINGS, "cause_event_id", KEYED_PARTITIONS, RETAIN_FOREVER, "double-entry posting batches, one per applied event"),
    TopicSpec(LEDGER_REJECTIONS, "source_topic", KEYED_PARTITIONS, RETAIN_FOREVER, "dead letters with the original bytes and a reason"),
    TopicSpec(LEDGER_SEQUENCED, "source topic", SEQUENCED_PARTITIONS, RETAIN_FOREVER, "input records in the ledger's total order"),
    TopicSpec(LEDGER_CHECKPOINTS, "worker group", 1, COMPACTED, "fold progress: offset, state hash, counts (compacted)"),
    # Keyed by origin and size, so compaction keeps every head (only a re-sent copy of one is dropped).
    TopicSpec(LEDGER_TREE_HEADS, "origin/tree size", 1, COMPACTED, "signed checkpoints of the Merkle log over ledger.sequenced"),
    # Chunked fold snapshots; compaction keeps each key's last value, old snapshots are deleted by tombstones. Segments
    # of 64 MiB / 10 min (not the broker's 1 GiB): compaction only cleans rolled ones, and a worker lists the whole
    # topic once after a recovery (recovery itself reads it from the end).
    TopicSpec(LEDGER_SNAPSHOTS, "group/offset/chunk", 1, COMPACTED | {"segment.ms": "600000", "segment.bytes": str(64 << 20)},
              "fold snapshots: chunks and manifests (compacted)"),
    # One partition each, like ledger.sequenced: Faust co-partitions a table's changelog with its agent's topic.
    # Small segments so compaction keeps up: Faust reads a table's whole changelog before the agent starts,
    # so its size bounds failover time (about one row per account, not one per publication).
    TopicSpec(LEDGER_COLLATERAL, "account", 1, TABLE_CHANGELOG, "latest balances per account (Faust table 'collateral', compacted)"),
    TopicSpec(LEDGER_POOLS, "pool", 1, TABLE_CHANGELOG, "latest state of the liquidity and insurance pools (Faust table 'pools', compacted)"),
)

TOPICS_BY_NAME: dict[str, TopicSpec] = {t.name: t for t in TOPICS}
INPUT_TOPICS = (CUSTODY_EVENTS, MINT_EVENTS, PRICE_EVENTS, MARGIN_EVENTS, TRADE_EVENTS)
# What the fold writes besides its own log and progress: its decisions, their evidence, the signed heads.
LEDGER_OUTPUT_TOPICS = (LEDGER_POSTINGS, REQUEST_OUTCOMES, LIQUIDATION_EVENTS, LEDGER_REJECTIONS, SERIES_STATE,
                        LEDGER_TREE_HEADS)
# What the projector stores in DuckDB: the outputs and the sequenced log (the Merkle log's entries).
PROJECTED_TOPICS = (LEDGER_POSTINGS, REQUEST_OUTCOMES, LIQUIDATION_EVENTS, LEDGER_REJECTIONS, SERIES_STATE,
                    LEDGER_SEQUENCED, LEDGER_TREE_HEADS)

# Which topic carries each record type, and which field is its Kafka key.
SUBJECT_ROUTES: dict[str, tuple[str, str]] = {
    "StockListed": (CUSTODY_EVENTS, "symbol"),
    "CustodyMovement": (CUSTODY_EVENTS, "symbol"),
    "HoldingStatement": (CUSTODY_EVENTS, "symbol"),
    "CorporateAction": (CUSTODY_EVENTS, "symbol"),
    "MintRequest": (MINT_EVENTS, "symbol"),
    "Burn": (MINT_EVENTS, "symbol"),
    "SupplyObservation": (MINT_EVENTS, "symbol"),
    "PriceMark": (PRICE_EVENTS, "instrument"),
    "SeriesListed": (PRICE_EVENTS, "underlying"),
    "CollateralDeposit": (MARGIN_EVENTS, "account"),
    "CollateralWithdrawalRequest": (MARGIN_EVENTS, "account"),
    "LpDeposit": (MARGIN_EVENTS, "account"),
    "LpRedeemRequest": (MARGIN_EVENTS, "account"),
    "TradeRequest": (TRADE_EVENTS, "account"),
    "RequestOutcome": (REQUEST_OUTCOMES, "key"),
    "LiquidationTriggered": (LIQUIDATION_EVENTS, "account"),
    "LiquidationExecuted": (LIQUIDATION_EVENTS, "account"),
    "BadDebtCovered": (LIQUIDATION_EVENTS, "account"),
    "AutoDeleveraged": (LIQUIDATION_EVENTS, "account"),
    "SeriesState": (SERIES_STATE, "series_id"),
    "PostingBatch": (LEDGER_POSTINGS, "cause_event_id"),
    "Rejection": (LEDGER_REJECTIONS, "source_topic"),
    "SequencedRecord": (LEDGER_SEQUENCED, "topic"),
    "FoldCheckpoint": (LEDGER_CHECKPOINTS, "worker_id"),
    "TreeHead": (LEDGER_TREE_HEADS, "event_id"),
    "SnapshotChunk": (LEDGER_SNAPSHOTS, "group"),
    "SnapshotManifest": (LEDGER_SNAPSHOTS, "group"),
    "AccountCollateral": (LEDGER_COLLATERAL, "account"),
    "PoolState": (LEDGER_POOLS, "pool"),
}
