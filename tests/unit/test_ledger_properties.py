"""Property tests of the fold over generated event sequences (DESIGN.md section 9).

The strategy draws compact operations over 2 listed stocks (and one unlisted), 4 trading accounts plus
an LP, one BTC put and one BTC call, and BTC marks that include a crash and small moves; about a third of the
operations are invalid on purpose (unknown names, zero or oversized amounts, stale marks, duplicates
and conflicting duplicates).  The invariants:

* every applied event's postings move a positive integer amount and net to zero per asset;
* supply x multiplier <= shares held (rounded up as in reserve._shares_needed) after every applied
  event, unless a custody withdrawal or a corporate action (facts) broke it; while broken, every
  mint is rejected;
* no wallet, margin, pool or insurance token balance and no LP share balance is ever negative;
* balances rebuilt by summing every posting equal the state's balances (value is conserved);
* a rejected event leaves every balance unchanged (only its id is remembered as decided), a duplicate
  the whole state hash;
* replaying the same sequence, with or without redeliveries of any event at any later point (a
  decision is final, applied or rejected), gives the same state hash;
* after every applied price mark, no account exposed to that instrument is left liquidatable.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st
from ledger_builders import (
    MINUTE_US,
    NANO,
    SECOND_US,
    T0,
    USD,
    burn,
    cash_dividend,
    collateral_deposit,
    collateral_withdrawal,
    crypto_mark,
    custody_movement,
    fresh_state,
    holding_statement,
    lp_deposit,
    lp_redeem,
    mint,
    posting_balances,
    price_mark,
    series_listed,
    split,
    state_balances,
    stock_listed,
    supply_observation,
    trade,
)

from ledger.engine import apply
from ledger.risk import account_health, is_liquidatable
from ledger.state import LedgerState
from ledger.state_hash import balances_hash, state_hash

SYMBOLS = ("AAPL", "MSFT")
ANY_SYMBOL = SYMBOLS + ("TSLA",)  # TSLA is never listed
ACCOUNTS = ("a", "b", "c", "d")
ANY_ACCOUNT = ACCOUNTS + ("lp", "ghost")  # ghost never gets a balance
SERIES = ("BTC-P-50000", "BTC-C-50000")
ANY_SERIES = SERIES + ("ETH-C-1",)
QTY = (0, 1, NANO // 10, NANO, 5 * NANO, 10 * NANO, 30 * NANO, 10_000 * NANO)
VOLUME = (0, NANO // 10, -NANO // 10, NANO, -NANO, 3 * NANO, -3 * NANO)
BTC = tuple(p * USD for p in (50_000, 49_900, 49_000, 45_000, 40_000, 30_000, 15_000, 52_000, 60_000, 80_000))
STOCK = tuple(p * USD // 10 for p in (2_000, 1_900, 1_500, 1_000, 300, 2_200, 0))  # includes 0
STATUS = ("OPEN", "OPEN", "OPEN", "CLOSED", "HALTED")
DT = (0, SECOND_US, MINUTE_US, 20 * MINUTE_US, 24 * 60 * MINUTE_US)
LP_TOKENS = 200 * NANO  # 40_000 USD: room for a few contracts of net exposure, so capacity can bind
PARAMS = {"pool_alpha_ppm": 20_000}  # a gentler DPMM lean for the small pool

Event = tuple[str, dict[str, Any]]


def setup_events() -> list[Event]:
    """Listings, first marks, series, an LP with 200 AAPL in the pool, and funded trading accounts."""
    evs: list[Event] = [
        ("StockListed", stock_listed("AAPL", 100_000, event_id="s-aapl")),
        ("StockListed", stock_listed("MSFT", 200_000, event_id="s-msft")),
        ("PriceMark", price_mark("AAPL", 200 * USD, event_id="s-px-aapl")),
        ("PriceMark", price_mark("MSFT", 400 * USD, event_id="s-px-msft")),
        ("PriceMark", crypto_mark("BTC", 50_000 * USD, event_id="s-px-btc")),
        ("SeriesListed", series_listed(SERIES[0], event_id="s-series-p")),
        ("SeriesListed", series_listed(SERIES[1], option_kind="CALL", event_id="s-series-c")),
        ("CustodyMovement", custody_movement("AAPL", 2 * LP_TOKENS, event_id="s-cust-lp")),
        ("MintRequest", mint("AAPL", "lp", 2 * LP_TOKENS, event_id="s-mint-lp")),
        ("LpDeposit", lp_deposit("lp", "AAPL", LP_TOKENS, event_id="s-lpd")),
    ]
    for account in ACCOUNTS:
        for symbol, qty in (("AAPL", 60 * NANO), ("MSFT", 20 * NANO)):
            evs += [
                ("CustodyMovement", custody_movement(symbol, qty, event_id=f"s-cust-{account}-{symbol}")),
                ("MintRequest", mint(symbol, account, qty, event_id=f"s-mint-{account}-{symbol}")),
                ("CollateralDeposit", collateral_deposit(account, symbol, qty // 2, event_id=f"s-cdep-{account}-{symbol}")),
            ]
    return evs


# ----------------------------------------------------------------------------- operations

sym, any_sym = st.sampled_from(SYMBOLS), st.sampled_from(ANY_SYMBOL)
acct, any_acct = st.sampled_from(ACCOUNTS), st.sampled_from(ANY_ACCOUNT)
qty, vol = st.sampled_from(QTY), st.sampled_from(VOLUME)

VALID_TRADE = st.tuples(st.just("trade"), acct, st.sampled_from(SERIES), vol)
BTC_MARK = st.tuples(st.just("btc"), st.sampled_from(BTC), st.booleans())
BTC_NUDGE = st.tuples(st.just("nudge"), st.sampled_from((-60 * USD, -11 * USD, -4 * USD, 11 * USD, 60 * USD)))
STOCK_NUDGE = st.tuples(st.just("snudge"), sym, st.sampled_from((-5 * USD, -USD, -USD // 10, USD)))
STOCK_MARK = st.tuples(st.just("stock"), sym, st.sampled_from(STOCK), st.sampled_from(STATUS))
OPS = st.one_of(  # trades and marks drawn more often than the rest
    st.tuples(st.just("trade"), any_acct, st.sampled_from(ANY_SERIES), vol),
    VALID_TRADE, VALID_TRADE, VALID_TRADE, VALID_TRADE,
    BTC_MARK, BTC_MARK, BTC_NUDGE, BTC_NUDGE,
    STOCK_MARK, STOCK_NUDGE,
    st.tuples(st.just("advance"), st.sampled_from(DT)),
    st.tuples(st.just("mint"), any_sym, any_acct, qty),
    st.tuples(st.just("burn"), any_sym, any_acct, qty),
    st.tuples(st.just("cdep"), acct, any_sym, qty),
    st.tuples(st.just("cwd"), any_acct, sym, qty),
    st.tuples(st.just("usdw"), any_acct, st.sampled_from((1, USD, 10 * USD, 100 * USD, 10**6 * USD))),  # micro-USD
    st.tuples(st.just("usdd"), any_acct, st.sampled_from((1, USD, 500 * USD, 10**5 * USD))),  # micro-USD paid in
    st.tuples(st.just("lpd"), st.sampled_from(ACCOUNTS + ("lp",)), sym, qty),
    st.tuples(st.just("lpr"), st.sampled_from(("lp", "a", "ghost")), st.sampled_from((0, NANO, 1_000 * NANO, 30_000 * NANO, 10**9 * NANO)), sym),
    st.tuples(st.just("custody"), any_sym, qty, st.sampled_from(("DEPOSIT", "WITHDRAWAL")), st.booleans()),
    st.tuples(st.just("settle"), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("corp"), sym, st.sampled_from(("split", "dividend"))),
    st.tuples(st.just("stmt"), sym, st.integers(0, 3), st.booleans()),
    st.tuples(st.just("supply"), sym, st.integers(0, 3)),
    st.tuples(st.just("dup"), st.integers(0, 10_000)),
    st.tuples(st.just("conflict"), st.integers(0, 10_000)),
)


def materialize(ops: list[tuple]) -> list[Event]:
    """Turn operations into records with ids and times; deterministic in the operations alone."""
    evs = setup_events()
    t = T0
    pending: list[tuple[str, str, int, str]] = []  # (symbol, ref, qty, direction) in transit
    btc = 50_000 * USD  # the last BTC price drawn, for small moves (series reprice only past a threshold)
    stock = {"AAPL": 200 * USD, "MSFT": 400 * USD}  # last stock prices, for small moves
    for n, op in enumerate(ops):
        kind, args = op[0], op[1:]
        t += SECOND_US
        eid = f"op-{n}"
        if kind == "advance":
            t += args[0]
            continue
        if kind == "trade":
            evs.append(("TradeRequest", trade(args[0], args[1], args[2], at=t, event_id=eid)))
        elif kind == "nudge":
            btc += args[0]
            evs.append(("PriceMark", crypto_mark("BTC", btc, at=t, event_id=eid)))
        elif kind == "btc":
            price, stale = args
            btc = price if not stale else btc
            published = t - 10 * MINUTE_US if stale else t  # an out-of-order mark when older than the last
            evs.append(("PriceMark", crypto_mark("BTC", price, at=t, published_at=published, event_id=eid)))
        elif kind == "stock":
            evs.append(("PriceMark", price_mark(args[0], args[1], args[2], at=t, event_id=eid)))
            stock[args[0]] = args[1] or stock[args[0]]
        elif kind == "snudge":
            stock[args[0]] = max(stock[args[0]] + args[1], 1)
            evs.append(("PriceMark", price_mark(args[0], stock[args[0]], at=t, event_id=eid)))
        elif kind == "mint":
            evs.append(("MintRequest", mint(args[0], args[1], args[2], at=t, event_id=eid)))
        elif kind == "burn":
            evs.append(("Burn", burn(args[0], args[1], args[2], at=t, event_id=eid)))
        elif kind == "cdep":
            evs.append(("CollateralDeposit", collateral_deposit(args[0], args[1], args[2], at=t, event_id=eid)))
        elif kind == "cwd":
            evs.append(("CollateralWithdrawalRequest", collateral_withdrawal(args[0], args[1], args[2], at=t, event_id=eid)))
        elif kind == "usdw":  # a USD withdrawal: qty_nano in nano-USD
            evs.append(("CollateralWithdrawalRequest", collateral_withdrawal(args[0], "USD", args[1] * 1_000, at=t, event_id=eid)))
        elif kind == "usdd":  # a USD deposit: qty_nano in nano-USD
            evs.append(("CollateralDeposit", collateral_deposit(args[0], "USD", args[1] * 1_000, at=t, event_id=eid)))
        elif kind == "lpd":
            evs.append(("LpDeposit", lp_deposit(args[0], args[1], args[2], at=t, event_id=eid)))
        elif kind == "lpr":
            evs.append(("LpRedeemRequest", lp_redeem(args[0], args[1], args[2], at=t, event_id=eid)))
        elif kind == "custody":
            symbol, q, direction, in_transit = args
            ref = f"ref-{n}"
            status = "IN_TRANSIT" if in_transit else "SETTLED"
            if in_transit:
                pending.append((symbol, ref, q, direction))
            evs.append(("CustodyMovement", custody_movement(symbol, q, direction, status, movement_ref=ref, at=t, event_id=eid)))
        elif kind == "settle":
            if not pending:
                continue
            symbol, ref, q, direction = pending.pop(args[0] % len(pending))
            q = q if args[1] else q + 1  # sometimes settle a different quantity (malformed)
            evs.append(("CustodyMovement", custody_movement(symbol, q, direction, movement_ref=ref, at=t, event_id=eid)))
        elif kind == "corp":
            symbol, what = args
            record = (split(symbol, 2, 1, at=t, event_id=eid, action_ref=f"ca-{n}") if what == "split"
                      else cash_dividend(symbol, 1 * USD, 300_000, 100 * USD, at=t, event_id=eid, action_ref=f"ca-{n}"))
            evs.append(("CorporateAction", record))
        elif kind == "stmt":
            symbol, number, valid = args
            navl = 0 if valid else 1
            evs.append(("HoldingStatement", holding_statement(symbol, 10 * NANO, 10 * NANO - navl * 2, navl,
                                                              statement_number=number, at=t, event_id=eid)))
        elif kind == "supply":
            evs.append(("SupplyObservation", supply_observation(args[0], 5 * NANO, args[1], at=t, event_id=eid)))
        elif kind in ("dup", "conflict"):
            subject, record = evs[args[0] % len(evs)]
            if kind == "conflict":
                record = record | {"source": "someone-else"}
            evs.append((subject, record))
    return evs


EVENTS = st.lists(OPS, min_size=25, max_size=60).map(materialize)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- checks


def shares_needed(supply_nano: int, multiplier_nano: int) -> int:
    return -((-supply_nano * multiplier_nano) // NANO)  # as reserve._shares_needed: rounded up


def reserve_ok(state: LedgerState, symbol: str, at_us: int) -> bool:
    r = state.reserves[symbol]
    return shares_needed(r.supply_nano, r.multiplier_at(at_us)) <= r.shares_held_nano


def assert_non_negative(state: LedgerState) -> None:
    for name, a in state.accounts.items():
        assert all(q >= 0 for q in a.wallet_nano.values()), (name, a.wallet_nano)
        assert all(q >= 0 for q in a.margin_nano.values()), (name, a.margin_nano)
        assert a.lp_shares_nano >= 0, (name, a.lp_shares_nano)
    pool = state.pool
    assert all(q >= 0 for q in pool.tokens_nano.values()), pool.tokens_nano
    assert all(q >= 0 for q in pool.insurance_tokens_nano.values()), pool.insurance_tokens_nano
    assert pool.shares_nano >= 0 and pool.insurance_cash_micro_usd >= 0


def run(events: list[Event]) -> LedgerState:
    state = fresh_state(**PARAMS)
    for subject, record in events:
        apply(state, subject, record)
    return state


# ----------------------------------------------------------------------------- properties


@SETTINGS
@given(EVENTS)
def test_every_applied_event_keeps_the_books(events):
    state = fresh_state(**PARAMS)
    postings = []
    now = T0
    for subject, record in events:
        now = max(now, record["occurred_at"])
        symbol = record.get("symbol")
        held_before = symbol in state.reserves and reserve_ok(state, symbol, now)
        out = apply(state, subject, record)
        if out.rejection is not None or out.duplicate:
            assert out.postings == []
            continue
        for p in out.postings:
            assert type(p.amount_minor) is int and p.amount_minor > 0, p
            assert p.debit_account != p.credit_account, p
        per_asset: dict[str, int] = {}
        for (_, asset), amount in posting_balances(out.postings).items():
            per_asset[asset] = per_asset.get(asset, 0) + amount
        assert set(per_asset.values()) <= {0}, (subject, per_asset)
        postings.extend(out.postings)

        # secure mint: a reserve that held keeps holding, except after a custody withdrawal or a
        # corporate action (facts); a reserve that did not hold approves no mint
        if subject == "MintRequest":
            assert held_before, f"mint approved on an under-reserved {symbol}"
        breaks = subject == "CorporateAction" or (subject == "CustodyMovement" and record["direction"] == "WITHDRAWAL")
        if held_before and not breaks:
            assert reserve_ok(state, symbol, now), (subject, record, state.reserves[symbol])

        assert_non_negative(state)
        assert posting_balances(postings) == state_balances(state), subject
        # Every USD flow between accounts nets to zero: the internal USD balances add up to exactly what came
        # in (settlement sales, users' USD deposits) less what winners took out, and that is never negative
        # (no USD paid unbacked).
        pool = state.pool
        internal_usd = sum(a.cash_micro_usd for a in state.accounts.values()) + pool.cash_micro_usd + pool.insurance_cash_micro_usd
        assert internal_usd == pool.usd_on_hand_micro_usd >= 0, (subject, internal_usd, pool.usd_on_hand_micro_usd)


@settings(SETTINGS, max_examples=75)  # hashes the whole state before every event
@given(EVENTS)
def test_rejections_and_duplicates_leave_the_state_hash_unchanged(events):
    state = fresh_state(**PARAMS)
    for subject, record in events:
        before, balances_before = state_hash(state), balances_hash(state)
        out = apply(state, subject, record)
        if out.duplicate:
            assert state_hash(state) == before, subject
        if out.rejection is not None or out.duplicate:
            assert balances_hash(state) == balances_before, (subject, out.rejection)
            assert out.postings == []
            assert [s for s, _ in out.emitted] in ([], ["RequestOutcome"])


@SETTINGS
@given(EVENTS, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10)), max_size=8))
def test_replay_gives_the_same_hash_with_or_without_redeliveries(events, redeliver):
    state = fresh_state(**PARAMS)
    for s, r in events:
        apply(state, s, r)
    assert state_hash(run(events)) == state_hash(state)
    # Redeliver any event, applied or rejected, at any later point: a decision is final.
    slots: dict[int, list[Event]] = {}
    for k, delay in redeliver:
        i = k % len(events)
        at = min(i + delay, len(events) - 1)
        slots.setdefault(at, []).append(events[i])
    with_dups = [e for n, original in enumerate(events) for e in [original, *slots.get(n, [])]]
    assert len(with_dups) == len(events) + len(redeliver)
    assert state_hash(run(with_dups)) == state_hash(state)


@SETTINGS
@given(EVENTS)
def test_no_exposed_account_is_left_liquidatable_after_a_mark(events):
    state = fresh_state(**PARAMS)
    closest = 10**15
    for subject, record in events:
        out = apply(state, subject, record)
        if subject != "PriceMark" or out.rejection is not None or out.duplicate:
            continue
        at = record["occurred_at"]
        liquidated = {ev["account"] for kind, ev in out.emitted if kind == "LiquidationExecuted"}
        for name in sorted(state.exposure.get(record["instrument"], ())):
            acct = state.accounts[name]
            health = account_health(state, acct, at)
            # No exception: a liquidation the price-shift limit stops short is finished by the backstop (DESIGN section 5)
            assert not is_liquidatable(health, bool(acct.positions)), (name, name in liquidated, record, health)
            if acct.positions:  # steer the search towards accounts close to their maintenance margin
                closest = min(closest, health.equity_micro_usd - health.maintenance_micro_usd)
        steps: dict[str, dict[str, int]] = {}
        for kind, ev in out.emitted:
            if kind == "BadDebtCovered":
                steps.setdefault(ev["account"], {})[ev["step"]] = ev["amount_micro_usd"]
        for kind, ev in out.emitted:
            if kind != "LiquidationExecuted":
                continue
            acct = state.accounts[ev["account"]]
            if acct.positions:  # partial (close factor or shift limit) and cured: no debt was settled
                assert ev["debt_micro_usd"] == 0 and ev["shortfall_micro_usd"] == 0, ev
                continue
            assert acct.cash_micro_usd >= 0, ev  # closed, debt cleared
            if ev["shortfall_micro_usd"]:
                paid = steps[ev["account"]]
                assert paid["INSURANCE"] + paid["LP_SOCIALISED"] == ev["shortfall_micro_usd"], (ev, paid)
                assert paid["ACCOUNT_MARGIN"] + ev["shortfall_micro_usd"] == ev["debt_micro_usd"], (ev, paid)
                assert acct.margin_nano == {}  # every token went before anyone else paid
            else:
                assert ev["account"] not in steps
    target(-min(closest, 10**15) / USD, label="smallest margin buffer (USD)")


@SETTINGS
@given(EVENTS)
def test_a_trade_leaves_its_series_marked_at_the_lean_of_the_state_it_committed(events):
    """The trade hands its capacity check's lean to the refresh instead of working it out again: the mark
    must equal the DPMM mark at the lean recomputed from the state after the trade."""
    from ledger import options
    from ledger.risk import lean_liquidity_now

    state = fresh_state(**PARAMS)
    for subject, record in events:
        out = apply(state, subject, record)
        if subject != "TradeRequest" or out.rejection is not None or out.duplicate:
            continue
        if any(kind == "LiquidationExecuted" for kind, _ in out.emitted):
            continue  # a liquidation in the same sweep refreshes again, on a pool it has changed
        series = state.series[record["series_id"]]
        expected = options.pool_mark_micro_usd(series.theo_micro_usd, series.spot_micro_usd, series.delta_wad,
                                               state.params.pool_alpha_ppm, lean_liquidity_now(state), series.net_volume_nano)
        assert series.mark_micro_usd == expected, record


@SETTINGS
@given(EVENTS)
def test_no_user_without_a_position_absorbs_a_loss(events):
    """An account that never held an option position keeps every token and USD it has, whatever others do:
    only its own requests (and facts about it: mints, burns) change its wallet, margin and cash."""
    state = fresh_state(**PARAMS)
    ever_positioned: set[str] = set()
    for subject, record in events:
        before = {name: (dict(a.wallet_nano), dict(a.margin_nano), a.cash_micro_usd) for name, a in state.accounts.items()}
        out = apply(state, subject, record)
        if out.rejection is not None or out.duplicate:
            continue
        for name, acct in state.accounts.items():
            if acct.positions:
                ever_positioned.add(name)
            if name in ever_positioned or name not in before or record.get("account") == name:
                continue
            assert (acct.wallet_nano, acct.margin_nano, acct.cash_micro_usd) == before[name], (subject, name)
