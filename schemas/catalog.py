"""Schema catalog: every (subject, version) has a stable wire id that is never reused."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

AVSC_DIR = Path(__file__).parent / "avsc"


@dataclass(frozen=True)
class SchemaEntry:
    """One registered schema version: its wire id, subject (record name) and file."""

    schema_id: int
    subject: str
    version: int
    filename: str

    @property
    def path(self) -> Path:
        return AVSC_DIR / self.filename


# Append only: a new version gets a new id; ids of published versions never change.
ENTRIES: tuple[SchemaEntry, ...] = (
    SchemaEntry(1, "CustodyMovement", 1, "custody_movement.v1.avsc"),
    SchemaEntry(2, "HoldingStatement", 1, "holding_statement.v1.avsc"),
    SchemaEntry(3, "CorporateAction", 1, "corporate_action.v1.avsc"),
    SchemaEntry(4, "StockListed", 1, "stock_listed.v1.avsc"),
    SchemaEntry(5, "MintRequest", 1, "mint_request.v1.avsc"),
    SchemaEntry(6, "Burn", 1, "burn.v1.avsc"),
    SchemaEntry(7, "SupplyObservation", 1, "supply_observation.v1.avsc"),
    SchemaEntry(8, "PriceMark", 1, "price_mark.v1.avsc"),
    SchemaEntry(9, "SeriesListed", 1, "series_listed.v1.avsc"),
    SchemaEntry(10, "CollateralDeposit", 1, "collateral_deposit.v1.avsc"),
    SchemaEntry(11, "CollateralWithdrawalRequest", 1, "collateral_withdrawal_request.v1.avsc"),
    SchemaEntry(12, "LpDeposit", 1, "lp_deposit.v1.avsc"),
    SchemaEntry(13, "LpRedeemRequest", 1, "lp_redeem_request.v1.avsc"),
    SchemaEntry(14, "TradeRequest", 1, "trade_request.v1.avsc"),
    SchemaEntry(15, "RequestOutcome", 1, "request_outcome.v1.avsc"),
    SchemaEntry(16, "LiquidationTriggered", 1, "liquidation_triggered.v1.avsc"),
    SchemaEntry(17, "LiquidationExecuted", 1, "liquidation_executed.v1.avsc"),
    SchemaEntry(18, "BadDebtCovered", 1, "bad_debt_covered.v1.avsc"),
    SchemaEntry(19, "SeriesState", 1, "series_state.v1.avsc"),
    SchemaEntry(20, "PostingBatch", 1, "posting_batch.v1.avsc"),
    SchemaEntry(21, "Rejection", 1, "rejection.v1.avsc"),
    SchemaEntry(22, "ArchiveRecord", 1, "archive_record.v1.avsc"),
    SchemaEntry(23, "SequencedRecord", 1, "sequenced_record.v1.avsc"),
    SchemaEntry(24, "FoldCheckpoint", 1, "fold_checkpoint.v1.avsc"),
    SchemaEntry(25, "Rejection", 2, "rejection.v2.avsc"),  # + reason beyond_redelivery_horizon
    SchemaEntry(26, "TreeHead", 1, "tree_head.v1.avsc"),
    SchemaEntry(27, "Rejection", 3, "rejection.v3.avsc"),  # + reason beyond_limit
    # Contiguous: a schema registry hands out ids in registration order, and `topics create` checks they match.
    SchemaEntry(28, "ArchiveRecord", 2, "archive_record.v2.avsc"),  # + source coordinates of an exported log
    SchemaEntry(29, "SequencedBatch", 1, "sequenced_batch.v1.avsc"),
    SchemaEntry(30, "SnapshotChunk", 1, "snapshot_chunk.v1.avsc"),
    SchemaEntry(31, "SnapshotManifest", 1, "snapshot_manifest.v1.avsc"),
    SchemaEntry(32, "AccountCollateral", 1, "account_collateral.v1.avsc"),  # the Faust tables' changelogs
    SchemaEntry(33, "PoolState", 1, "pool_state.v1.avsc"),
    SchemaEntry(34, "Rejection", 4, "rejection.v4.avsc"),  # + reason pool_insolvent
    SchemaEntry(35, "LiquidationExecuted", 2, "liquidation_executed.v2.avsc"),  # + backstop_positions
    SchemaEntry(36, "AutoDeleveraged", 1, "auto_deleveraged.v1.avsc"),  # issue 11: ADL steps
    SchemaEntry(37, "PoolState", 2, "pool_state.v2.avsc"),  # + model value and the USD figures
)

BY_ID: dict[int, SchemaEntry] = {e.schema_id: e for e in ENTRIES}


def latest_by_subject() -> dict[str, SchemaEntry]:
    """The newest version of every subject: what producers write."""
    latest: dict[str, SchemaEntry] = {}
    for e in ENTRIES:
        if e.subject not in latest or e.version > latest[e.subject].version:
            latest[e.subject] = e
    return latest


LATEST: dict[str, SchemaEntry] = latest_by_subject()


@cache
def raw_schema(schema_id: int) -> dict[str, Any]:
    """The .avsc as written (with logical types), for tools and the compatibility check."""
    return json.loads(BY_ID[schema_id].path.read_text())


def _strip_logical_types(node: Any) -> Any:
    # Times stay integer microseconds inside stockledger (no datetime objects, no floats);
    # the binary encoding of a logical type equals its underlying type, so this is lossless.
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


@cache
def parsed_schema(schema_id: int) -> Any:
    """fastavro-parsed schema with logical types stripped, cached per id."""
    return fastavro.parse_schema(_strip_logical_types(raw_schema(schema_id)))
