"""Hostile input (issue 13): a test per defect class of the probe, each failing on the code before its fix."""

from __future__ import annotations

import pytest
from ledger_builders import (
    DAY_US,
    HOUR_US,
    MINUTE_US,
    NANO,
    T0,
    USD,
    Ledger,
    burn,
    collateral_deposit,
    collateral_withdrawal,
    crypto_mark,
    custody_movement,
    desk,
    holding_statement,
    lp_deposit,
    lp_redeem,
    mint,
    price_mark,
    series_listed,
    split,
    stock_listed,
    supply_observation,
    trade,
)

from ledger import limits, reasons
from ledger.engine import RuleError, apply
from ledger.outcome import Outcome
from ledger.state_hash import balances_hash, state_hash
from schemas.codec import encode
from schemas.topics import SUBJECT_ROUTES
from streams.step import Entry
from streams.step import Ledger as StepLedger

SERIES = "BTC-P-50000"


def valid_records() -> dict[str, dict]:
    """One record of every input subject that the trading desk below applies (or rejects by a rule)."""
    return {
        "StockListed": stock_listed("MSFT"),
        "CustodyMovement": custody_movement("AAPL", NANO),
        "HoldingStatement": holding_statement("AAPL", 10 * NANO, 10 * NANO, 0),
        "CorporateAction": split("AAPL", 2, 1, activation_time=T0 + HOUR_US),
        "MintRequest": mint("AAPL", "alice", NANO),
        "Burn": burn("AAPL", "alice", NANO),
        "SupplyObservation": supply_observation("AAPL", NANO, 5),
        "PriceMark": price_mark("AAPL", 201 * USD),
        "SeriesListed": series_listed("BTC-C-60000", option_kind="CALL", strike_micro_usd=60_000 * USD),
        "CollateralDeposit": collateral_deposit("alice", "AAPL", NANO),
        "CollateralWithdrawalRequest": collateral_withdrawal("alice", "AAPL", NANO),
        "LpDeposit": lp_deposit("alice", "AAPL", NANO),
        "LpRedeemRequest": lp_redeem("lp", NANO, "AAPL"),
        "TradeRequest": trade("alice", SERIES, -NANO // 10),
    }


def trading_desk() -> Ledger:
    lg = desk()
    lg.fund("alice", "AAPL", 100 * NANO)
    lg.fund("alice", "AAPL", 10 * NANO, margin=False)
    lg.deposit_shares("AAPL", 10 * NANO)
    return lg


def fold_and_encode(lg: Ledger, subject: str, record: dict, offset: int) -> Outcome:
    """What the worker does with one record: decode, fold, encode every output (the step that looped)."""
    topic = SUBJECT_ROUTES[subject][0]
    return StepLedger(state=lg.state).step(Entry(topic, b"k", encode(subject, record), 0, offset)).outcome


INT_FIELDS = [(subject, name, limit) for subject, fields in limits.FIELDS.items()
              for name, limit in (fields | {"occurred_at": limits.TIME}).items() if isinstance(limit, limits.Int)]


# ----------------------------------------------------------------------------- class 1: poison records


@pytest.mark.parametrize("subject,name,limit", INT_FIELDS, ids=[f"{s}.{n}" for s, n, _ in INT_FIELDS])
def test_a_field_beyond_its_limit_is_refused_and_every_output_encodes(subject, name, limit):
    lg = trading_desk()
    for n, value in enumerate((2**63 - 1, -(2**63), limit.hi + 1, limit.lo - 1)):
        if limit.lo == -(2**31) and abs(value) >= 2**31:
            continue  # an Avro int: the codec itself refuses it (class 11)
        before = balances_hash(lg.state)
        record = valid_records()[subject] | {name: value, "event_id": f"poison-{n}"}
        out = fold_and_encode(lg, subject, record, n)
        assert out.rejection is not None and out.rejection[0] == reasons.BEYOND_LIMIT, (value, out.rejection)
        assert balances_hash(lg.state) == before


@pytest.mark.parametrize("subject,name,limit", INT_FIELDS, ids=[f"{s}.{n}" for s, n, _ in INT_FIELDS])
def test_a_field_at_its_limit_is_applied_or_rejected_and_every_output_encodes(subject, name, limit):
    for value in (limit.hi, limit.lo):
        lg = trading_desk()
        record = valid_records()[subject] | {name: value}
        out = fold_and_encode(lg, subject, record, 1)  # raises on an unencodable output or a rule's bug
        assert out.rejection is None or out.rejection[0] != reasons.BEYOND_LIMIT or name not in out.rejection[1]
        if limit is not limits.TIME:  # (a mark dated 2099 makes later marks stale: folded, but rejected)
            assert fold_and_encode(lg, "PriceMark", price_mark("AAPL", 202 * USD, at=T0 + MINUTE_US), 2).rejection is None


def test_the_poison_mint_of_the_probe_is_refused_and_the_next_record_is_folded():
    lg = trading_desk()
    out = fold_and_encode(lg, "MintRequest", mint("AAPL", "alice", 2**63 - 1, event_id="M-poison"), 1)
    assert out.rejection[0] == reasons.BEYOND_LIMIT
    (answer,) = [r for s, r in out.emitted if s == "RequestOutcome"]
    assert answer["event_id"].startswith("outcome:M-poison:beyond_limit:")
    assert fold_and_encode(lg, "MintRequest", mint("AAPL", "alice", NANO), 2).rejection is None


def test_holdings_and_supply_cannot_grow_past_their_limits():
    lg = Ledger()
    lg.list_stock("AAPL")
    for _ in range(limits.RESERVE_MAX_NANO // limits.QTY_MAX_NANO):
        lg.deposit_shares("AAPL", limits.QTY_MAX_NANO)
    lg.rejected("CustodyMovement", custody_movement("AAPL", 1), reasons.BEYOND_LIMIT)
    lg.ok("CorporateAction", split("AAPL", 1, 2))  # half a share per token: the holding halves too
    for _ in range(limits.RESERVE_MAX_NANO // limits.QTY_MAX_NANO):
        lg.mint("AAPL", "alice", limits.QTY_MAX_NANO)
    lg.rejected("MintRequest", mint("AAPL", "alice", 1), reasons.BEYOND_LIMIT)


# ----------------------------------------------------------------------------- class 2: unbacked mints


def test_a_reverse_split_that_would_round_the_multiplier_to_zero_is_rejected_and_mints_stay_backed():
    lg = Ledger()
    lg.list_stock("AAPL")
    lg.deposit_shares("AAPL", NANO)
    lg.rejected("CorporateAction", split("AAPL", 1, 1_000_000, activation_time=T0 + 1), reasons.BEYOND_LIMIT)
    lg.rejected("CorporateAction", split("AAPL", 1, 1_001), reasons.BEYOND_LIMIT)  # below 1/1000 share per token
    lg.ok("CorporateAction", split("AAPL", 1, 1_000, at=T0 + 2))  # exactly the floor: 1e6 nano shares per token
    assert lg.state.reserves["AAPL"].multipliers[-1][1] == limits.MULTIPLIER_MIN_NANO
    # 1 share held after the split (the holding moved with the multiplier) backs at most 1,000 tokens... of 1e-3 share
    lg.rejected("MintRequest", mint("AAPL", "alice", 2 * NANO, at=T0 + 3), reasons.INSUFFICIENT_RESERVE)


def test_repeated_splits_cannot_push_the_multiplier_past_its_ceiling():
    lg = Ledger()
    lg.list_stock("AAPL")
    lg.ok("CorporateAction", split("AAPL", 1_000, 1))
    lg.rejected("CorporateAction", split("AAPL", 2, 1, at=T0 + 1), reasons.BEYOND_LIMIT)


# ----------------------------------------------------------------------------- class 4: times


@pytest.mark.parametrize("at", [limits.TIME_MAX_US, 2**62, limits.TIME_MIN_US - 1, 0, -1])
def test_event_times_outside_the_window_are_refused(at):
    lg = trading_desk()
    lg.rejected("PriceMark", crypto_mark("BTC", 10 * USD, at=at), reasons.BEYOND_LIMIT)
    lg.rejected("HoldingStatement", holding_statement("AAPL", NANO, NANO, 0, as_of=at), reasons.BEYOND_LIMIT)
    lg.rejected("PriceMark", price_mark("AAPL", 10 * USD, published_at=at), reasons.BEYOND_LIMIT)
    lg.rejected("CorporateAction", split("AAPL", 2, 1, activation_time=at), reasons.BEYOND_LIMIT)


# ----------------------------------------------------------------------------- class 5: back-dated requests


def test_a_back_dated_lp_deposit_is_checked_against_a_fresh_price_both_ways():
    lg = desk(at=T0 + DAY_US)
    lg.fund("alice", "AAPL", 10 * NANO, margin=False, at=T0 + DAY_US)
    lg.rejected("LpDeposit", lp_deposit("alice", "AAPL", NANO, at=T0 + DAY_US - HOUR_US), reasons.STALE_PRICE)
    lg.ok("LpDeposit", lp_deposit("alice", "AAPL", NANO, at=T0 + DAY_US - MINUTE_US))


def test_a_back_dated_trade_is_checked_against_a_fresh_price_both_ways():
    lg = desk(at=T0 + DAY_US)
    lg.fund("alice", "AAPL", 100 * NANO, at=T0 + DAY_US)
    lg.rejected("TradeRequest", trade("alice", SERIES, -NANO // 10, at=T0 + DAY_US - HOUR_US), reasons.STALE_PRICE)


# ----------------------------------------------------------------------------- class 6: instrument namespace


def test_a_crypto_underlying_cannot_be_listed_as_a_stock():
    lg = trading_desk()
    lg.rejected("StockListed", stock_listed("BTC"), reasons.ALREADY_LISTED)


def test_a_marked_crypto_instrument_without_series_cannot_be_listed_as_a_stock_either():
    lg = Ledger()
    lg.crypto("ETH", 3_000 * USD)
    lg.rejected("StockListed", stock_listed("ETH"), reasons.ALREADY_LISTED)


# ----------------------------------------------------------------------------- class 7: decisions are final


def test_a_redelivered_rejected_trade_is_not_decided_again_after_the_state_changed():
    lg = desk()
    lg.fund("alice", "AAPL", 2 * NANO)  # too little margin to sell a put
    request = trade("alice", SERIES, -NANO, at=T0 + 1)
    first = lg.rejected("TradeRequest", request, reasons.INSUFFICIENT_MARGIN)
    lg.fund("alice", "AAPL", 100 * NANO, at=T0 + 2)  # now it would pass
    before = lg.hash()
    again = lg.apply("TradeRequest", dict(request))
    assert again.duplicate and again.rejection is None and again.emitted == [] and lg.hash() == before
    (answer,) = lg.emitted(first, "RequestOutcome")
    assert answer["decision"] == "REJECTED" and answer["event_id"] == f"outcome:{request['event_id']}"


def test_a_changed_reuse_of_an_approved_id_gets_an_answer_id_of_its_own():
    lg = Ledger()
    lg.list_stock("AAPL")
    lg.deposit_shares("AAPL", 10 * NANO)
    approved = lg.mint("AAPL", "alice", NANO, event_id="M-1")
    reused = lg.rejected("MintRequest", mint("AAPL", "alice", 2 * NANO, event_id="M-1"), reasons.CONFLICTING_DUPLICATE)
    (a,) = lg.emitted(approved, "RequestOutcome")
    (b,) = lg.emitted(reused, "RequestOutcome")
    assert a["event_id"] == "outcome:M-1" and b["event_id"] != a["event_id"]
    # the same reuse again is answered with the same id and the same content
    assert lg.emitted(lg.apply("MintRequest", mint("AAPL", "alice", 2 * NANO, event_id="M-1")), "RequestOutcome") == [b]


def test_redelivering_every_rejected_request_of_a_scenario_changes_no_balance_and_no_outcome():
    from ledger.engine import REQUEST_KINDS
    from ledger.state import LedgerState
    from services.scenario import ScenarioConfig, generate
    from streams.step import decode_input

    rows = list(generate(ScenarioConfig(accounts=40, events=3_000, seed=11)))
    state = LedgerState()
    outcomes: dict[str, dict] = {}
    rejected: list[tuple[str, dict]] = []
    redelivered: list[tuple[str, dict]] = []

    def fold(subject: str, record: dict) -> Outcome:
        out = apply(state, subject, record)
        for s, em in out.emitted:
            if s == "RequestOutcome":
                assert outcomes.setdefault(em["event_id"], em) == em, em["event_id"]  # no id with two contents
        return out

    for n, (_, _, value) in enumerate(rows):
        decoded = decode_input(value)
        if decoded[0] is None:
            continue
        subject, record = decoded
        out = fold(subject, record)
        if out.rejection is not None and subject in REQUEST_KINDS:
            rejected.append((subject, record))
        if n % 7 == 0 and rejected:  # redeliver every rejected request so far, later, when the state moved on
            redelivered.extend(rejected)
            for s, r in rejected:
                fold(s, dict(r))
            rejected = []
    reference = LedgerState()
    for _, _, value in rows:
        decoded = decode_input(value)
        if decoded[0] is not None:
            apply(reference, *decoded)
    assert len(redelivered) > 20
    assert state_hash(state) == state_hash(reference)


# ----------------------------------------------------------------------------- class 11: smaller


def test_a_custody_withdrawal_above_the_holding_is_not_a_fact():
    lg = Ledger()
    lg.list_stock("AAPL")
    lg.deposit_shares("AAPL", 5 * NANO)
    lg.rejected("CustodyMovement", custody_movement("AAPL", 6 * NANO, "WITHDRAWAL"), reasons.INSUFFICIENT_BALANCE)
    assert lg.state.reserves["AAPL"].shares_held_nano == 5 * NANO


@pytest.mark.parametrize("subject,field", [("MintRequest", "account"), ("MintRequest", "symbol"), ("StockListed", "symbol"),
                                           ("TradeRequest", "account"), ("PriceMark", "instrument"), ("MintRequest", "event_id")])
def test_empty_names_and_ids_are_malformed(subject, field):
    lg = trading_desk()
    lg.rejected(subject, valid_records()[subject] | {field: ""}, reasons.MALFORMED)


def test_an_overlong_name_is_refused_and_not_echoed_in_full():
    lg = trading_desk()
    out = lg.rejected("MintRequest", mint("x" * 10_000_000, "alice", NANO), reasons.BEYOND_LIMIT)
    assert len(out.rejection[1]) < 200
    (answer,) = lg.emitted(out, "RequestOutcome")
    assert answer["key"] == ""


# ----------------------------------------------------------------------------- class 12: the engine masks no bug


def test_a_bug_in_a_rule_stops_the_fold_instead_of_counting_as_malformed(monkeypatch):
    from ledger import engine

    def buggy(state, ev, out):
        state.reserves["AAPL"].supply_nano += 1  # a partial change, then a bug
        raise KeyError("oops")

    lg = trading_desk()
    monkeypatch.setitem(engine.RULES, "Burn", buggy)
    with pytest.raises(RuleError, match="Burn .*KeyError"):
        lg.apply("Burn", burn("AAPL", "alice", NANO))


def test_a_record_missing_a_field_is_malformed_at_the_edge_before_any_rule():
    lg = trading_desk()
    record = {k: v for k, v in trade("alice", SERIES, -NANO).items() if k != "series_id"}
    out = lg.rejected("TradeRequest", record, reasons.MALFORMED)
    assert "series_id" in out.rejection[1]
    lg.rejected("TradeRequest", trade("alice", SERIES, -NANO) | {"volume_nano": "1"}, reasons.MALFORMED)


def test_a_bug_on_a_record_halts_the_worker_fold_and_the_replay_naming_the_record(monkeypatch):
    from ledger import engine
    from services.replay import ReplayHalted, replay
    from streams.step import FoldHalted

    def buggy(state, ev, out):
        raise TypeError("boom")

    lg = trading_desk()
    monkeypatch.setitem(engine.RULES, "Burn", buggy)
    record = burn("AAPL", "alice", NANO, event_id="B-1")
    with pytest.raises(FoldHalted, match=r"mint.events\[3\]@42\): Burn 'B-1': rule raised TypeError: boom"):
        StepLedger(state=lg.state).step(Entry("mint.events", None, encode("Burn", record), 3, 42))
    rows = [("custody.events", "AAPL", encode("StockListed", stock_listed("AAPL"))), ("mint.events", "AAPL", encode("Burn", record))]
    with pytest.raises(ReplayHalted, match=r"entry 1 \(mint.events\)"):
        replay(rows)


def test_the_codec_refuses_an_avro_int_wider_than_32_bits():
    import io
    import json
    import struct

    import fastavro

    from schemas.catalog import LATEST, _strip_logical_types, raw_schema
    from schemas.codec import DecodeError, decode

    schema_id = LATEST["HoldingStatement"].schema_id
    as_long = json.loads(json.dumps(raw_schema(schema_id)))
    for f in as_long["fields"]:
        if f["name"] == "statement_number":
            f["type"] = "long"  # the same bytes a non-Avro writer would produce for 2^40
    buf = io.BytesIO()
    buf.write(struct.pack(">BI", 0, schema_id))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(_strip_logical_types(as_long)),
                               holding_statement("AAPL", NANO, NANO, 0, statement_number=2**40))
    with pytest.raises(DecodeError, match="statement_number does not fit"):
        decode(buf.getvalue())


def test_a_derived_integer_beyond_an_avro_long_is_named_by_its_path_wherever_it_sits():
    """The fold's last check before it hands out records: every int of every emitted record, flat or nested in
    maps and arrays, must fit an Avro long; the first that does not is named by its path (the check skips the
    common in-range fields without building a path, so a nested or boundary value must still be caught)."""
    from ledger.engine import unrepresentable_output

    def first_unfit(record: dict) -> str | None:
        out = Outcome("e1", "TradeRequest")
        out.emit("RequestOutcome", record)
        return unrepresentable_output(out)

    big, small = limits.LONG_MAX + 1, limits.LONG_MIN - 1
    fine = {"a": limits.LONG_MAX, "b": limits.LONG_MIN, "s": "x" * 10, "n": None, "t": True,
            "m": {"x": 1, "y": [1, 2, {"z": -5}]}}
    assert first_unfit(fine) is None
    assert first_unfit({**fine, "a": big}) == f"RequestOutcome.a = {big}"
    assert first_unfit({**fine, "m": {"x": small}}) == f"RequestOutcome.m.x = {small}"
    assert first_unfit({**fine, "m": {"x": 1, "y": [1, {"z": big}]}}) == f"RequestOutcome.m.y[1].z = {big}"
    assert first_unfit({**fine, "l": [0, 1, big]}) == f"RequestOutcome.l[2] = {big}"
    out = Outcome("e1", "TradeRequest")
    out.post("a", "b", "USD", big)
    assert unrepresentable_output(out) == f"posting amount {big}"


@pytest.mark.parametrize(("volatility_ppm", "period_s"), [(1, 3_600), (25, 3_600), (2, 7 * 86_400), (1_700, 1), (69, 1), (1, 1),
                                                          (10 * 10**6, 10 * 366 * 86_400)])
def test_a_volatility_and_period_at_the_ends_of_their_limits_are_folded_not_a_crash(volatility_ppm, period_s):
    """Valid for the limits, so they must never stop the fold: the local slope bounds' window factor
    (1 - w)^-((u+1)/2) overflowed the Decimal context for a 1 ppm oracle volatility on a one-hour series (u in
    the tens of millions), which raised RuleError on the trade and on every later valuation of the series."""
    series = (series_listed("BTC-C-50000", option_kind="CALL", funding_period_s=period_s),
              series_listed("BTC-P-50000", funding_period_s=period_s))
    lg = desk(series=series)
    lg.fund("alice", "AAPL", 100 * NANO)
    # At the strike, then far from it on both sides (a +/-40 % stress move that stays on the spot's side of the
    # strike multiplies V by (1 + m)^a, which overflowed too: second review), trades both ways at each.
    for k, price in enumerate((50_000, 100_000, 25_000, 50_000)):
        lg.ok("PriceMark", crypto_mark("BTC", price * USD, volatility_ppm, at=T0 + 10 * k + 1))
        for i, series_id in enumerate(("BTC-C-50000", "BTC-P-50000")):
            for volume in (NANO // 100, -NANO // 1000):
                lg.apply("TradeRequest", trade("alice", series_id, volume, at=T0 + 10 * k + 2 + i))  # approved or rejected, never raised
    assert any(s == "TradeRequest" and o.rejection is None for (s, _), o in zip(lg.inputs, lg.outcomes, strict=True))
