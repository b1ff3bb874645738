"""Reserve rules per symbol: custody movements, holding statements, burns, supply observations, listings."""

from __future__ import annotations

from ledger_builders import (
    NANO,
    T0,
    Ledger,
    burn,
    custody_movement,
    holding_statement,
    mint,
    split,
    stock_listed,
    supply_observation,
)

from ledger import reasons


def listed(symbol: str = "AAPL") -> Ledger:
    lg = Ledger()
    lg.list_stock(symbol)
    return lg


# ----------------------------------------------------------------------------- listing


def test_stock_listing_rules():
    lg = Ledger()
    lg.ok("StockListed", stock_listed("AAPL", 150_000))
    assert lg.state.reserves["AAPL"].haircut_ppm == 150_000
    lg.rejected("StockListed", stock_listed("AAPL", 0), reasons.ALREADY_LISTED)
    lg.rejected("StockListed", stock_listed("MSFT", 1_000_000), reasons.MALFORMED)  # 100 % haircut
    lg.rejected("StockListed", stock_listed("MSFT", -1), reasons.MALFORMED)


# ----------------------------------------------------------------------------- custody movements


def test_in_transit_deposit_counts_only_once_settled_and_the_clearing_account_returns_to_zero():
    lg = listed()
    reserve = lg.state.reserves["AAPL"]
    out = lg.ok("CustodyMovement", custody_movement("AAPL", 7 * NANO, status="IN_TRANSIT", movement_ref="D-1"))
    assert [(p.debit_account, p.credit_account, p.asset) for p in out.postings] == [
        ("external:custody:AAPL", "custodian:AAPL:in_transit", "SH:AAPL")
    ]
    assert reserve.shares_held_nano == 0 and reserve.shares_in_transit_nano == 7 * NANO
    assert lg.balance("custodian:AAPL:in_transit", "SH:AAPL") == 7 * NANO
    # not yet held: nothing can be minted against it
    lg.rejected("MintRequest", mint("AAPL", "alice", 1), reasons.INSUFFICIENT_RESERVE)
    # the same movement cannot go in transit twice, nor settle with another quantity
    lg.rejected("CustodyMovement", custody_movement("AAPL", 7 * NANO, status="IN_TRANSIT", movement_ref="D-1"),
                reasons.MALFORMED)
    lg.rejected("CustodyMovement", custody_movement("AAPL", 6 * NANO, movement_ref="D-1"), reasons.MALFORMED)

    lg.ok("CustodyMovement", custody_movement("AAPL", 7 * NANO, movement_ref="D-1"))
    assert reserve.shares_held_nano == 7 * NANO and reserve.shares_in_transit_nano == 0
    assert reserve.in_transit_refs == {}
    assert lg.balance("custodian:AAPL:in_transit", "SH:AAPL") == 0
    assert lg.balance("custodian:AAPL", "SH:AAPL") == 7 * NANO
    assert lg.balance("external:custody:AAPL", "SH:AAPL") == -7 * NANO
    lg.mint("AAPL", "alice", 7 * NANO)


def test_settled_deposit_without_transit_goes_straight_to_the_custodian():
    lg = listed()
    out = lg.ok("CustodyMovement", custody_movement("AAPL", 3 * NANO))
    assert [(p.debit_account, p.credit_account, p.amount_minor) for p in out.postings] == [
        ("external:custody:AAPL", "custodian:AAPL", 3 * NANO)
    ]
    assert lg.state.reserves["AAPL"].shares_held_nano == 3 * NANO


def test_custody_rejections():
    lg = listed()
    lg.rejected("CustodyMovement", custody_movement("AAPL", 0), reasons.NON_POSITIVE_AMOUNT)
    lg.rejected("CustodyMovement", custody_movement("AAPL", -NANO), reasons.NON_POSITIVE_AMOUNT)
    lg.rejected("CustodyMovement", custody_movement("MSFT", NANO), reasons.UNKNOWN_SYMBOL)


def test_withdrawal_lowers_the_reserve_at_once_and_its_transit_clears():
    lg = listed()
    reserve = lg.state.reserves["AAPL"]
    lg.deposit_shares("AAPL", 10 * NANO)
    lg.ok("CustodyMovement", custody_movement("AAPL", 4 * NANO, "WITHDRAWAL", "IN_TRANSIT", movement_ref="W-1"))
    assert reserve.shares_held_nano == 6 * NANO  # the shares are no longer ours to count
    assert lg.balance("custodian:AAPL:in_transit", "SH:AAPL") == 4 * NANO
    lg.rejected("CustodyMovement", custody_movement("AAPL", 3 * NANO, "WITHDRAWAL", movement_ref="W-1"), reasons.MALFORMED)
    lg.rejected("CustodyMovement", custody_movement("AAPL", 4 * NANO, "WITHDRAWAL", "IN_TRANSIT", movement_ref="W-1"),
                reasons.MALFORMED)
    lg.ok("CustodyMovement", custody_movement("AAPL", 4 * NANO, "WITHDRAWAL", movement_ref="W-1"))
    assert reserve.shares_held_nano == 6 * NANO  # settling does not lower it twice
    assert reserve.in_transit_refs == {}
    assert lg.balance("custodian:AAPL:in_transit", "SH:AAPL") == 0
    assert lg.balance("custodian:AAPL", "SH:AAPL") == 6 * NANO
    # a settled withdrawal with no transit leg
    out = lg.ok("CustodyMovement", custody_movement("AAPL", 1 * NANO, "WITHDRAWAL"))
    assert [(p.debit_account, p.credit_account) for p in out.postings] == [("custodian:AAPL", "external:custody:AAPL")]
    assert reserve.shares_held_nano == 5 * NANO


def test_withdrawal_below_supply_is_recorded_and_blocks_mints_until_cured():
    lg = listed()
    reserve = lg.state.reserves["AAPL"]
    lg.deposit_shares("AAPL", 10 * NANO)
    lg.mint("AAPL", "alice", 10 * NANO)
    # a fact: recorded even though 10 tokens now claim 10 shares and only 8 are held
    lg.ok("CustodyMovement", custody_movement("AAPL", 2 * NANO, "WITHDRAWAL"))
    assert reserve.shares_held_nano == 8 * NANO < reserve.supply_nano
    lg.rejected("MintRequest", mint("AAPL", "alice", 1), reasons.INSUFFICIENT_RESERVE)
    # burns are still fine and cure it: 8 tokens against 8 shares
    lg.ok("Burn", burn("AAPL", "alice", 2 * NANO))
    assert reserve.supply_nano == 8 * NANO
    lg.rejected("MintRequest", mint("AAPL", "alice", 1), reasons.INSUFFICIENT_RESERVE)
    lg.deposit_shares("AAPL", 1)
    lg.ok("MintRequest", mint("AAPL", "alice", 1))


# ----------------------------------------------------------------------------- holding statements


def test_holding_statement_is_kept_per_safekeeping_account():
    lg = listed()
    lg.ok("HoldingStatement", holding_statement("AAPL", 10 * NANO, 8 * NANO, 2 * NANO, statement_number=1))
    lg.ok("HoldingStatement", holding_statement("AAPL", 5 * NANO, 5 * NANO, 0, statement_number=1,
                                                safekeeping_account="SAFE-2", statement_ref="B-1"))
    statements = lg.state.reserves["AAPL"].statements
    assert set(statements) == {"SAFE-1", "SAFE-2"}
    assert (statements["SAFE-1"].aggr_qty_nano, statements["SAFE-1"].avai_qty_nano,
            statements["SAFE-1"].navl_qty_nano) == (10 * NANO, 8 * NANO, 2 * NANO)
    lg.ok("HoldingStatement", holding_statement("AAPL", 11 * NANO, 11 * NANO, 0, statement_number=2))
    assert statements["SAFE-1"].statement_number == 2 and statements["SAFE-1"].aggr_qty_nano == 11 * NANO


def test_holding_statement_validation():
    lg = listed()
    # AVAI + NAVL must equal AGGR: 8 + 1 != 10
    lg.rejected("HoldingStatement", holding_statement("AAPL", 10 * NANO, 8 * NANO, 1 * NANO), reasons.INVALID_STATEMENT)
    lg.rejected("HoldingStatement", holding_statement("AAPL", 10 * NANO, 11 * NANO, -1 * NANO), reasons.INVALID_STATEMENT)
    lg.rejected("HoldingStatement", holding_statement("AAPL", 1, 1, 0, isin="US0000000000"), reasons.INVALID_STATEMENT)
    lg.rejected("HoldingStatement", holding_statement("MSFT", 1, 1, 0), reasons.UNKNOWN_SYMBOL)
    lg.ok("HoldingStatement", holding_statement("AAPL", 10 * NANO, 10 * NANO, 0, statement_number=5))
    # an older or repeated statement number is rejected
    lg.rejected("HoldingStatement", holding_statement("AAPL", 9 * NANO, 9 * NANO, 0, statement_number=4),
                reasons.INVALID_STATEMENT)
    lg.rejected("HoldingStatement", holding_statement("AAPL", 9 * NANO, 9 * NANO, 0, statement_number=5,
                                                      statement_ref="other"), reasons.INVALID_STATEMENT)


def test_holding_statement_cancel():
    lg = listed()
    lg.ok("HoldingStatement", holding_statement("AAPL", 10 * NANO, 10 * NANO, 0, statement_number=3, statement_ref="S-3"))
    lg.rejected("HoldingStatement", holding_statement("AAPL", 10 * NANO, 10 * NANO, 0, statement_number=3,
                                                      statement_ref="S-2", function="CANCEL"), reasons.INVALID_STATEMENT)
    lg.rejected("HoldingStatement", holding_statement("AAPL", 10 * NANO, 10 * NANO, 0, statement_number=3, statement_ref="S-3",
                                                      function="CANCEL", safekeeping_account="SAFE-9"),
                reasons.INVALID_STATEMENT)
    lg.ok("HoldingStatement", holding_statement("AAPL", 10 * NANO, 10 * NANO, 0, statement_number=3, statement_ref="S-3",
                                                function="CANCEL"))
    assert lg.state.reserves["AAPL"].statements == {}
    lg.ok("HoldingStatement", holding_statement("AAPL", 12 * NANO, 12 * NANO, 0, statement_number=4))
    assert lg.state.reserves["AAPL"].statements["SAFE-1"].aggr_qty_nano == 12 * NANO


def test_holding_statements_post_nothing():
    lg = listed()
    out = lg.ok("HoldingStatement", holding_statement("AAPL", 10 * NANO, 10 * NANO, 0))
    assert out.postings == [] and out.emitted == []


# ----------------------------------------------------------------------------- mints and burns


def test_mint_rejections():
    lg = listed()
    lg.deposit_shares("AAPL", 10 * NANO)
    lg.rejected("MintRequest", mint("MSFT", "alice", NANO), reasons.UNKNOWN_SYMBOL)
    lg.rejected("MintRequest", mint("AAPL", "alice", 0), reasons.NON_POSITIVE_AMOUNT)
    lg.rejected("MintRequest", mint("AAPL", "alice", -NANO), reasons.NON_POSITIVE_AMOUNT)
    assert "alice" not in lg.state.accounts  # a rejected mint opens no account


def test_burn_reduces_supply_and_the_wallet():
    lg = listed()
    reserve = lg.state.reserves["AAPL"]
    lg.fund("alice", "AAPL", 10 * NANO, margin=False)
    out = lg.ok("Burn", burn("AAPL", "alice", 4 * NANO))
    assert [(p.debit_account, p.credit_account, p.asset, p.amount_minor) for p in out.postings] == [
        ("user:alice:wallet:AAPL", "supply:AAPL", "AAPL", 4 * NANO)
    ]
    assert reserve.supply_nano == 6 * NANO
    assert reserve.shares_held_nano == 10 * NANO  # the custodian still holds the shares until withdrawn
    assert lg.state.accounts["alice"].wallet_nano["AAPL"] == 6 * NANO
    assert lg.balance("supply:AAPL", "AAPL") == -6 * NANO


def test_burn_rejections():
    lg = listed()
    lg.fund("alice", "AAPL", 10 * NANO)  # all 10 moved into margin: the wallet is empty
    lg.rejected("Burn", burn("AAPL", "alice", 1), reasons.INSUFFICIENT_BALANCE)
    lg.rejected("Burn", burn("AAPL", "bob", 1), reasons.UNKNOWN_ACCOUNT)
    lg.rejected("Burn", burn("AAPL", "alice", 0), reasons.NON_POSITIVE_AMOUNT)
    lg.rejected("Burn", burn("MSFT", "alice", 1), reasons.UNKNOWN_SYMBOL)


# ----------------------------------------------------------------------------- supply observations


def test_supply_observation_is_recorded_in_block_order():
    lg = listed()
    reserve = lg.state.reserves["AAPL"]
    assert reserve.observed_supply_nano is None
    out = lg.ok("SupplyObservation", supply_observation("AAPL", 5 * NANO, 100))
    assert out.postings == []
    assert (reserve.observed_supply_nano, reserve.observed_block) == (5 * NANO, 100)
    lg.ok("SupplyObservation", supply_observation("AAPL", 6 * NANO, 100, at=T0 + 1))  # same block, re-read
    assert reserve.observed_supply_nano == 6 * NANO
    lg.rejected("SupplyObservation", supply_observation("AAPL", 7 * NANO, 99), reasons.MALFORMED)
    lg.rejected("SupplyObservation", supply_observation("AAPL", -1, 101), reasons.MALFORMED)
    lg.rejected("SupplyObservation", supply_observation("MSFT", 1, 1), reasons.UNKNOWN_SYMBOL)
    lg.ok("SupplyObservation", supply_observation("AAPL", 0, 101))
    assert (reserve.observed_supply_nano, reserve.observed_block) == (0, 101)
    assert reserve.supply_nano == 0  # an observation is compared by reconciliation, never booked


def test_late_mint_dated_before_a_recorded_split_is_checked_against_the_split_multiplier():
    """Tokens minted now claim the multiplier in force now: a request dated before a recorded split
    must not be approved against the pre-split multiplier (it would leave the reserve short)."""
    lg = listed()
    reserve = lg.state.reserves["AAPL"]
    lg.deposit_shares("AAPL", 10 * NANO)
    lg.mint("AAPL", "alice", 10 * NANO)
    activation = T0 + 1_000
    lg.ok("CorporateAction", split("AAPL", 2, 1, at=activation))  # books the custodian's 10 new shares
    assert reserve.shares_held_nano == 20 * NANO == reserve.supply_nano * 2
    # dated before the split, delivered after it: 5 more tokens would claim (10 + 5) x 2 = 30 shares
    out = lg.rejected("MintRequest", mint("AAPL", "bob", 5 * NANO, at=activation - 1), reasons.INSUFFICIENT_RESERVE)
    (answer,) = lg.emitted(out, "RequestOutcome")
    assert answer["inputs"]["multiplier_nano"] == 2 * NANO
    assert answer["inputs"]["shares_needed_nano"] == 30 * NANO
