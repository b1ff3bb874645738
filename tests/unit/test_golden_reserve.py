"""Golden reserve scenarios: secure mint and its cure, a 3-for-1 split, a reinvested net dividend.

Every expected amount is worked out by hand below (integer expressions with the reasoning in comments).
"""

from __future__ import annotations

from ledger_builders import (
    DAY_US,
    NANO,
    T0,
    USD,
    Ledger,
    cash_dividend,
    custody_movement,
    mint,
    split,
)

from ledger import reasons


def _outcome(lg: Ledger, out) -> dict:
    (record,) = lg.emitted(out, "RequestOutcome")
    return record


def test_secure_mint_rejected_then_cured_by_a_custody_deposit():
    lg = Ledger()
    lg.list_stock("AAPL")
    lg.deposit_shares("AAPL", 10 * NANO)  # custodian holds 10 shares
    lg.mint("AAPL", "alice", 10 * NANO)  # 10 tokens x 1 share/token = 10 shares: exactly covered

    # 5 more tokens: (10 + 5) tokens x 1.0 share/token = 15 shares needed > 10 held.
    request = mint("AAPL", "alice", 5 * NANO, at=T0 + 1)
    out = lg.rejected("MintRequest", request, reasons.INSUFFICIENT_RESERVE)
    answer = _outcome(lg, out)
    assert answer["decision"] == "REJECTED"
    assert answer["reason"] == reasons.INSUFFICIENT_RESERVE
    assert answer["request_event_id"] == request["event_id"]
    assert answer["request_kind"] == "MINT" and answer["key"] == "AAPL"
    assert answer["inputs"] == {
        "shares_held_nano": 10 * NANO,
        "supply_nano": 10 * NANO,
        "multiplier_nano": 1 * NANO,
        "qty_nano": 5 * NANO,
        "shares_needed_nano": (10 + 5) * NANO,
    }
    reserve = lg.state.reserves["AAPL"]
    assert reserve.supply_nano == 10 * NANO
    assert lg.state.accounts["alice"].wallet_nano["AAPL"] == 10 * NANO

    # Cure: the custodian receives 5 more shares; the same mint (a new request) now fits exactly.
    lg.deposit_shares("AAPL", 5 * NANO, at=T0 + 2)
    out = lg.ok("MintRequest", mint("AAPL", "alice", 5 * NANO, at=T0 + 3))
    answer = _outcome(lg, out)
    assert answer["decision"] == "APPROVED" and answer["reason"] is None
    assert answer["inputs"] == {
        "shares_held_nano": (10 + 5) * NANO,
        "supply_nano": 10 * NANO,
        "multiplier_nano": 1 * NANO,
        "qty_nano": 5 * NANO,
        "shares_needed_nano": 15 * NANO,
    }
    assert [(p.debit_account, p.credit_account, p.asset, p.amount_minor) for p in out.postings] == [
        ("supply:AAPL", "user:alice:wallet:AAPL", "AAPL", 5 * NANO)
    ]
    assert reserve.supply_nano == 15 * NANO
    assert reserve.shares_held_nano == 15 * NANO
    assert lg.state.accounts["alice"].wallet_nano["AAPL"] == 15 * NANO
    # Rebuilt from postings: 15 tokens left supply, 15 shares reached the custodian.
    assert lg.balance("supply:AAPL", "AAPL") == -15 * NANO
    assert lg.balance("user:alice:wallet:AAPL", "AAPL") == 15 * NANO
    assert lg.balance("custodian:AAPL", "SH:AAPL") == 15 * NANO


def test_secure_mint_rounds_the_shares_needed_up():
    lg = Ledger()
    lg.list_stock("AAPL")
    lg.ok("CorporateAction", cash_dividend("AAPL", 1 * USD, 0, 3 * USD))  # multiplier x (3 + 1) / 3
    # multiplier = 1_000_000_000 * 4_000_000 // 3_000_000 = 1_333_333_333 (floor)
    assert lg.state.reserves["AAPL"].multiplier_at(T0) == 1_333_333_333
    # one nano-token claims 1.333333333 nano-shares: the custodian must hold 2 (ceil), 1 is not enough
    lg.deposit_shares("AAPL", 1)
    lg.rejected("MintRequest", mint("AAPL", "alice", 1), reasons.INSUFFICIENT_RESERVE)
    lg.deposit_shares("AAPL", 1)
    out = lg.ok("MintRequest", mint("AAPL", "alice", 1))
    assert _outcome(lg, out)["inputs"]["shares_needed_nano"] == 2  # ceil(1 * 1_333_333_333 / 1e9)


def test_three_for_one_split():
    lg = Ledger()
    lg.list_stock("AAPL")
    lg.deposit_shares("AAPL", 10 * NANO)
    lg.mint("AAPL", "alice", 10 * NANO)
    reserve = lg.state.reserves["AAPL"]

    activation = T0 + DAY_US
    lg.ok("CorporateAction", split("AAPL", 3, 1, activation_time=activation, at=T0 + 1))
    # shares per token: 1.0 -> 3.0 (1e9 * 3 // 1), from the activation time on
    assert reserve.multiplier_at(activation - 1) == 1 * NANO
    assert reserve.multiplier_at(activation) == 3 * NANO
    # No holder balance is rewritten: alice still holds 10 tokens, supply is still 10 tokens.
    assert lg.state.accounts["alice"].wallet_nano["AAPL"] == 10 * NANO
    assert reserve.supply_nano == 10 * NANO
    # 10 tokens now claim 10 x 3 = 30 shares; the custodian's 10 pre-split shares became 30: the
    # corporate action books the 20 new shares it created (external -> custodian), by hand 10 x 3 // 1.
    assert reserve.supply_nano * reserve.multiplier_at(activation) // NANO == 30 * NANO
    assert reserve.shares_held_nano == 30 * NANO
    assert lg.balance("custodian:AAPL", "SH:AAPL") == 30 * NANO

    # A mint after the split needs 3 shares per token: 1 more token needs (10 + 1) x 3 = 33 shares.
    out = lg.rejected("MintRequest", mint("AAPL", "bob", 1 * NANO, at=activation + 1), reasons.INSUFFICIENT_RESERVE)
    assert _outcome(lg, out)["inputs"]["shares_needed_nano"] == (10 + 1) * 3 * NANO
    assert _outcome(lg, out)["inputs"]["multiplier_nano"] == 3 * NANO
    lg.deposit_shares("AAPL", 3 * NANO, at=activation + 2)  # 30 + 3 = 33 shares
    out = lg.ok("MintRequest", mint("AAPL", "bob", 1 * NANO, at=activation + 3))
    assert _outcome(lg, out)["inputs"]["shares_needed_nano"] == 33 * NANO
    assert reserve.supply_nano == 11 * NANO
    assert reserve.supply_nano * 3 == reserve.shares_held_nano  # fully reserved, no slack


def test_split_ratio_must_match_its_kind():
    lg = Ledger()
    lg.list_stock("AAPL")
    bad = split("AAPL", 3, 1) | {"kind": "REVERSE_SPLIT"}
    lg.rejected("CorporateAction", bad, reasons.MALFORMED)
    # a 1-for-4 reverse split: multiplier 1e9 * 1 // 4 = 250_000_000 shares per token (floor)
    lg.ok("CorporateAction", split("AAPL", 1, 4))
    assert lg.state.reserves["AAPL"].multiplier_at(T0) == 250_000_000


def test_reinvested_net_dividend_raises_the_multiplier():
    lg = Ledger()
    lg.list_stock("AAPL")
    lg.deposit_shares("AAPL", 100 * NANO)
    lg.mint("AAPL", "alice", 100 * NANO)
    reserve = lg.state.reserves["AAPL"]

    # 1 USD per share, 30 % withheld, reference price 100 USD:
    #   net dividend = 1_000_000 * (1_000_000 - 300_000) // 1_000_000 = 700_000 micro-USD per share
    #   multiplier   = 1_000_000_000 * (100_000_000 + 700_000) // 100_000_000 = 1_007_000_000
    lg.ok("CorporateAction", cash_dividend("AAPL", 1 * USD, 300_000, 100 * USD, at=T0 + 1))
    assert reserve.multipliers[-1] == (T0 + 1, 1_007_000_000)

    # Again: 0.33 USD per share, 15 % withheld, reference price 123.45 USD (the floor now bites):
    #   net = 330_000 * 850_000 // 1_000_000 = 280_500 micro-USD
    #   new = 1_007_000_000 * (123_450_000 + 280_500) // 123_450_000
    #       = 124_596_613_500_000_000 // 123_450_000 = 1_009_288_080  (remainder 24_000_000 dropped)
    lg.ok("CorporateAction", cash_dividend("AAPL", 330_000, 150_000, 123_450_000, at=T0 + 2))
    assert 1_007_000_000 * (123_450_000 + 280_500) == 124_596_613_500_000_000
    assert 1_009_288_080 * 123_450_000 + 24_000_000 == 124_596_613_500_000_000
    assert reserve.multiplier_at(T0 + 2) == 1_009_288_080
    assert reserve.multiplier_at(T0 + 1) == 1_007_000_000

    # The custodian's holding is booked by the same factors (the reinvested shares were bought):
    #   100e9 x 1_007_000_000 // 1_000_000_000 = 100_700_000_000
    #   100_700_000_000 x 1_009_288_080 // 1_007_000_000 = 100 x 1_009_288_080 = 100_928_808_000
    held = 100 * NANO * 1_007_000_000 // NANO * 1_009_288_080 // 1_007_000_000
    assert held == 100_928_808_000 == reserve.shares_held_nano
    assert lg.balance("custodian:AAPL", "SH:AAPL") == held
    # 100 tokens now claim 100e9 x 1_009_288_080 / 1e9 = 100_928_808_000 nano-shares: exactly covered.
    needed = 100 * 1_009_288_080
    assert needed == held
    # One more nano-token: (100e9 + 1) x 1_009_288_080 / 1e9 = 100_928_808_001.009288080 -> ceil
    # 100_928_808_002 nano-shares, 2 more than held.
    lg.rejected("MintRequest", mint("AAPL", "alice", 1, at=T0 + 3), reasons.INSUFFICIENT_RESERVE)
    lg.deposit_shares("AAPL", 2, at=T0 + 4)
    out = lg.ok("MintRequest", mint("AAPL", "alice", 1, at=T0 + 5))
    assert _outcome(lg, out)["inputs"]["shares_needed_nano"] == 100_928_808_002 == held + 2


def test_dividend_with_bad_inputs_is_rejected():
    lg = Ledger()
    lg.list_stock("AAPL")
    lg.rejected("CorporateAction", cash_dividend("AAPL", 0, 0, 100 * USD), reasons.NON_POSITIVE_AMOUNT)
    lg.rejected("CorporateAction", cash_dividend("AAPL", 1 * USD, 0, 0), reasons.NON_POSITIVE_AMOUNT)
    lg.rejected("CorporateAction", cash_dividend("NOPE", 1 * USD, 0, 100 * USD), reasons.UNKNOWN_SYMBOL)
    lg.ok("CorporateAction", cash_dividend("AAPL", 1 * USD, 0, 100 * USD, action_ref="D1", at=T0 + 10))
    # the same action twice, or an action activating before the last one
    lg.rejected("CorporateAction", cash_dividend("AAPL", 1 * USD, 0, 100 * USD, action_ref="D1", at=T0 + 20),
                reasons.MALFORMED)
    lg.rejected("CorporateAction", split("AAPL", 2, 1, activation_time=T0 + 5), reasons.MALFORMED)


def test_custody_deposit_with_unknown_symbol_is_rejected():
    lg = Ledger()
    lg.rejected("CustodyMovement", custody_movement("AAPL", NANO), reasons.UNKNOWN_SYMBOL)
