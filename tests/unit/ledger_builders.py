"""Builders for ledger input events (plain dicts with the Avro schema's fields) and test helpers.

Every builder returns a record for one subject; pass it to ``ledger.engine.apply`` with that subject
(``SUBJECT`` below names them).  Defaults: a fresh ``event_id`` from a counter, ``occurred_at`` =
``T0`` unless ``at`` is given, ``source`` naming the usual producer.  Units follow ledger/units.py:
quantities in nano-units, money in micro-USD, ratios in ppm, times in microseconds.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from ledger import chart
from ledger.engine import apply
from ledger.outcome import Outcome, Posting
from ledger.params import RiskParams
from ledger.state import LedgerState
from ledger.state_hash import balances_hash, state_hash

NANO = 1_000_000_000  # nano-units per token / share / contract
USD = 1_000_000  # micro-USD per USD
PPM = 1_000_000
WAD = 10**18
SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
HOUR_US = 3_600 * SECOND_US
DAY_US = 86_400 * SECOND_US
DAY_S = 86_400
WEEK_S = 7 * DAY_S
T0 = 1_700_000_000 * SECOND_US  # 2023-11-14T22:13:20Z, a Tuesday

Record = dict[str, Any]

_ids = itertools.count(1)


def next_id(prefix: str = "ev") -> str:
    return f"{prefix}-{next(_ids)}"


def isin_for(symbol: str) -> str:
    """A stable, well-shaped (not check-digit valid) ISIN for a test symbol."""
    return ("US" + symbol.upper().ljust(9, "0"))[:11] + "0"


def _envelope(prefix: str, source: str, at: int, event_id: str | None) -> Record:
    return {"event_id": event_id or next_id(prefix), "occurred_at": at, "source": source}


def fresh_state(**param_overrides: int) -> LedgerState:
    """An empty ledger with RiskParams defaults, overridden by keyword."""
    return LedgerState(params=RiskParams(**param_overrides))


# ----------------------------------------------------------------------------- custody / issuer


def stock_listed(symbol: str = "AAPL", haircut_ppm: int = 0, *, isin: str | None = None, at: int = T0,
                 event_id: str | None = None) -> Record:
    return _envelope("list", "issuer", at, event_id) | {
        "symbol": symbol, "isin": isin or isin_for(symbol), "haircut_ppm": haircut_ppm}


def custody_movement(symbol: str, qty_nano: int, direction: str = "DEPOSIT", status: str = "SETTLED", *,
                     movement_ref: str | None = None, isin: str | None = None, at: int = T0,
                     event_id: str | None = None) -> Record:
    return _envelope("cust", "custodian", at, event_id) | {
        "symbol": symbol, "isin": isin or isin_for(symbol), "movement_ref": movement_ref or next_id("mv"),
        "direction": direction, "status": status, "qty_nano": qty_nano}


def holding_statement(symbol: str, aggr_qty_nano: int, avai_qty_nano: int, navl_qty_nano: int, *,
                      statement_number: int = 1, statement_ref: str | None = None, function: str = "NEW",
                      safekeeping_account: str = "SAFE-1", completeness: str = "COMPLETE", as_of: int | None = None,
                      isin: str | None = None, at: int = T0, event_id: str | None = None) -> Record:
    return _envelope("stmt", "custodian", at, event_id) | {
        "statement_ref": statement_ref or f"MT535-{statement_number}", "statement_number": statement_number,
        "function": function, "as_of": at if as_of is None else as_of, "completeness": completeness,
        "safekeeping_account": safekeeping_account, "isin": isin or isin_for(symbol), "symbol": symbol,
        "aggr_qty_nano": aggr_qty_nano, "avai_qty_nano": avai_qty_nano, "navl_qty_nano": navl_qty_nano}


def split(symbol: str, ratio_num: int, ratio_den: int = 1, *, activation_time: int | None = None,
          action_ref: str | None = None, at: int = T0, event_id: str | None = None) -> Record:
    """SPLIT when num > den, REVERSE_SPLIT otherwise."""
    return _envelope("ca", "custodian", at, event_id) | {
        "symbol": symbol, "action_ref": action_ref or next_id("split"),
        "kind": "SPLIT" if ratio_num > ratio_den else "REVERSE_SPLIT", "ratio_num": ratio_num, "ratio_den": ratio_den,
        "dividend_micro_usd_per_share": 0, "withholding_ppm": 0, "reference_price_micro_usd": 0,
        "activation_time": at if activation_time is None else activation_time}


def cash_dividend(symbol: str, dividend_micro_usd_per_share: int, withholding_ppm: int, reference_price_micro_usd: int,
                  *, activation_time: int | None = None, action_ref: str | None = None, at: int = T0,
                  event_id: str | None = None) -> Record:
    return _envelope("ca", "custodian", at, event_id) | {
        "symbol": symbol, "action_ref": action_ref or next_id("div"), "kind": "CASH_DIVIDEND", "ratio_num": 0,
        "ratio_den": 0, "dividend_micro_usd_per_share": dividend_micro_usd_per_share,
        "withholding_ppm": withholding_ppm, "reference_price_micro_usd": reference_price_micro_usd,
        "activation_time": at if activation_time is None else activation_time}


def mint(symbol: str, account: str, qty_nano: int, *, at: int = T0, event_id: str | None = None) -> Record:
    return _envelope("mint", "issuer", at, event_id) | {"symbol": symbol, "account": account, "qty_nano": qty_nano}


def burn(symbol: str, account: str, qty_nano: int, *, at: int = T0, event_id: str | None = None) -> Record:
    return _envelope("burn", "issuer", at, event_id) | {"symbol": symbol, "account": account, "qty_nano": qty_nano}


def supply_observation(symbol: str, supply_qty_nano: int, block_number: int, *, chain: str = "ethereum",
                       at: int = T0, event_id: str | None = None) -> Record:
    return _envelope("sup", "issuer", at, event_id) | {
        "symbol": symbol, "chain": chain, "block_number": block_number, "supply_qty_nano": supply_qty_nano}


# ----------------------------------------------------------------------------- oracle / venue


def price_mark(instrument: str, price_micro_usd: int, market_status: str = "OPEN", *, volatility_ppm: int = 0,
               multiplier_nano: int = NANO, published_at: int | None = None, at: int = T0,
               event_id: str | None = None) -> Record:
    """A stock mark (volatility 0) by default; crypto underlyings need volatility_ppm > 0."""
    return _envelope("px", "oracle", at, event_id) | {
        "instrument": instrument, "price_micro_usd": price_micro_usd, "market_status": market_status,
        "multiplier_nano": multiplier_nano, "volatility_ppm": volatility_ppm,
        "published_at": at if published_at is None else published_at}


def crypto_mark(instrument: str, price_micro_usd: int, volatility_ppm: int = PPM, **kw: Any) -> Record:
    return price_mark(instrument, price_micro_usd, "OPEN", volatility_ppm=volatility_ppm, **kw)


def series_listed(series_id: str = "BTC-P-50000", underlying: str = "BTC", option_kind: str = "PUT",
                  strike_micro_usd: int = 50_000 * USD, funding_period_s: int = WEEK_S, *, at: int = T0,
                  event_id: str | None = None) -> Record:
    return _envelope("series", "venue", at, event_id) | {
        "series_id": series_id, "underlying": underlying, "option_kind": option_kind,
        "strike_micro_usd": strike_micro_usd, "funding_period_s": funding_period_s}


def collateral_deposit(account: str, symbol: str, qty_nano: int, *, at: int = T0, event_id: str | None = None) -> Record:
    return _envelope("cdep", "venue", at, event_id) | {"account": account, "symbol": symbol, "qty_nano": qty_nano}


def collateral_withdrawal(account: str, symbol: str, qty_nano: int, *, at: int = T0,
                          event_id: str | None = None) -> Record:
    return _envelope("cwd", "venue", at, event_id) | {"account": account, "symbol": symbol, "qty_nano": qty_nano}


def lp_deposit(account: str, symbol: str, qty_nano: int, *, at: int = T0, event_id: str | None = None) -> Record:
    return _envelope("lpd", "venue", at, event_id) | {"account": account, "symbol": symbol, "qty_nano": qty_nano}


def lp_redeem(account: str, shares_nano: int, payout_symbol: str, *, at: int = T0,
              event_id: str | None = None) -> Record:
    return _envelope("lpr", "venue", at, event_id) | {
        "account": account, "shares_nano": shares_nano, "payout_symbol": payout_symbol}


def trade(account: str, series_id: str, volume_nano: int, *, at: int = T0, event_id: str | None = None) -> Record:
    return _envelope("trade", "venue", at, event_id) | {"account": account, "series_id": series_id, "volume_nano": volume_nano}


SUBJECT = {
    stock_listed: "StockListed", custody_movement: "CustodyMovement", holding_statement: "HoldingStatement",
    split: "CorporateAction", cash_dividend: "CorporateAction", mint: "MintRequest", burn: "Burn",
    supply_observation: "SupplyObservation", price_mark: "PriceMark", crypto_mark: "PriceMark",
    series_listed: "SeriesListed", collateral_deposit: "CollateralDeposit",
    collateral_withdrawal: "CollateralWithdrawalRequest", lp_deposit: "LpDeposit", lp_redeem: "LpRedeemRequest",
    trade: "TradeRequest",
}


# ----------------------------------------------------------------------------- balances from postings


def posting_balances(postings: Iterable[Posting]) -> dict[tuple[str, str], int]:
    """(account, asset) -> balance, each posting moving amount from its debit to its credit account."""
    balances: dict[tuple[str, str], int] = defaultdict(int)
    for p in postings:
        balances[(p.debit_account, p.asset)] -= p.amount_minor
        balances[(p.credit_account, p.asset)] += p.amount_minor
    return {k: v for k, v in balances.items() if v}


def state_balances(state: LedgerState) -> dict[tuple[str, str], int]:
    """The balances the state holds, spelled as chart-of-accounts entries (what postings must sum to)."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for symbol, r in state.reserves.items():
        sh = chart.share_asset(symbol)
        out[(chart.supply(symbol), symbol)] -= r.supply_nano
        out[(chart.custodian(symbol), sh)] += r.shares_held_nano
        out[(chart.custodian_in_transit(symbol), sh)] += sum(abs(q) for q in r.in_transit_refs.values())
        # external world: whatever came in or went out of the custodian
        out[(chart.custody_external(symbol), sh)] -= r.shares_held_nano + sum(abs(q) for q in r.in_transit_refs.values())
    for name, a in state.accounts.items():
        for symbol, q in a.wallet_nano.items():
            out[(chart.wallet(name, symbol), symbol)] += q
        for symbol, q in a.margin_nano.items():
            out[(chart.margin(name, symbol), symbol)] += q
        out[(chart.margin(name, chart.USD), chart.USD)] += a.cash_micro_usd
        out[(chart.lp_shares(name), chart.POOL_SHARE)] += a.lp_shares_nano
    pool = state.pool
    for symbol, q in pool.tokens_nano.items():
        out[(chart.pool_main(symbol), symbol)] += q
    out[(chart.pool_main(chart.USD), chart.USD)] += pool.cash_micro_usd
    out[(chart.pool_shares_issued(), chart.POOL_SHARE)] -= pool.shares_nano
    for symbol, q in pool.insurance_tokens_nano.items():
        out[(chart.pool_insurance(symbol), symbol)] += q
    out[(chart.pool_insurance(chart.USD), chart.USD)] += pool.insurance_cash_micro_usd
    out[(chart.usd_raised(), chart.USD)] -= pool.usd_raised_micro_usd
    out[(chart.usd_paid_out(), chart.USD)] += pool.usd_paid_out_micro_usd - pool.usd_paid_in_micro_usd
    return {k: v for k, v in out.items() if v}


def account_balance(postings: Iterable[Posting], account: str, asset: str) -> int:
    return posting_balances(postings).get((account, asset), 0)


def assert_postings_well_formed(postings: Iterable[Posting]) -> None:
    """Each posting moves a positive integer amount between two different accounts."""
    for p in postings:
        assert type(p.amount_minor) is int and p.amount_minor > 0, p
        assert p.debit_account != p.credit_account, p


# ----------------------------------------------------------------------------- a ledger under test


class Ledger:
    """A state plus everything applied to it; ``ok`` / ``rejected`` assert the outcome."""

    def __init__(self, **param_overrides: int) -> None:
        self.state = fresh_state(**param_overrides)
        self.outcomes: list[Outcome] = []
        self.postings: list[Posting] = []
        self.inputs: list[tuple[str, Record]] = []

    def apply(self, subject: str, record: Record) -> Outcome:
        out = apply(self.state, subject, record)
        self.inputs.append((subject, record))
        self.outcomes.append(out)
        if out.rejection is None and not out.duplicate:
            assert_postings_well_formed(out.postings)
            self.postings.extend(out.postings)
        return out

    def ok(self, subject: str, record: Record) -> Outcome:
        out = self.apply(subject, record)
        assert out.rejection is None, out.rejection
        assert not out.duplicate
        return out

    def rejected(self, subject: str, record: Record, reason: str) -> Outcome:
        before = balances_hash(self.state)
        out = self.apply(subject, record)
        assert out.rejection is not None and out.rejection[0] == reason, out.rejection
        assert out.postings == []
        # A rejection changes nothing but the decided ids (a rule's rejection is remembered as final).
        assert balances_hash(self.state) == before, "a rejection must leave the state as it was"
        return out

    def hash(self) -> str:
        return state_hash(self.state)

    def balance(self, account: str, asset: str) -> int:
        """Balance of a chart account rebuilt from every posting applied so far."""
        return account_balance(self.postings, account, asset)

    # Short forms used by most tests -------------------------------------------------------------

    def list_stock(self, symbol: str = "AAPL", haircut_ppm: int = 0, **kw: Any) -> Outcome:
        return self.ok("StockListed", stock_listed(symbol, haircut_ppm, **kw))

    def deposit_shares(self, symbol: str, qty_nano: int, **kw: Any) -> Outcome:
        return self.ok("CustodyMovement", custody_movement(symbol, qty_nano, **kw))

    def mint(self, symbol: str, account: str, qty_nano: int, **kw: Any) -> Outcome:
        return self.ok("MintRequest", mint(symbol, account, qty_nano, **kw))

    def fund(self, account: str, symbol: str, qty_nano: int, *, margin: bool = True, **kw: Any) -> None:
        """Custody deposit, mint to the account and (by default) move the tokens into margin."""
        self.deposit_shares(symbol, qty_nano, **kw)
        self.mint(symbol, account, qty_nano, **kw)
        if margin:
            self.ok("CollateralDeposit", collateral_deposit(account, symbol, qty_nano, **kw))

    def mark(self, instrument: str, price_micro_usd: int, market_status: str = "OPEN", **kw: Any) -> Outcome:
        return self.ok("PriceMark", price_mark(instrument, price_micro_usd, market_status, **kw))

    def crypto(self, instrument: str, price_micro_usd: int, volatility_ppm: int = PPM, **kw: Any) -> Outcome:
        return self.ok("PriceMark", crypto_mark(instrument, price_micro_usd, volatility_ppm, **kw))

    def emitted(self, out: Outcome, subject: str) -> list[Record]:
        return [r for s, r in out.emitted if s == subject]


# ----------------------------------------------------------------------------- a ready options desk


def desk(*, haircut_ppm: int = 100_000, stock_price_micro_usd: int = 200 * USD, lp_tokens_nano: int = 10_000 * NANO,
         btc_micro_usd: int = 50_000 * USD, series: tuple[Record, ...] | None = None, at: int = T0,
         **param_overrides: int) -> Ledger:
    """AAPL listed (haircut) and marked OPEN, an LP ("lp") who deposited lp_tokens_nano AAPL into the
    main pool, BTC marked with 100 % volatility, and by default one weekly put series BTC-P-50000."""
    lg = Ledger(**param_overrides)
    lg.list_stock("AAPL", haircut_ppm, at=at)
    lg.mark("AAPL", stock_price_micro_usd, at=at)
    if lp_tokens_nano:
        lg.fund("lp", "AAPL", lp_tokens_nano, margin=False, at=at)
        lg.ok("LpDeposit", lp_deposit("lp", "AAPL", lp_tokens_nano, at=at))
    lg.crypto("BTC", btc_micro_usd, at=at)
    for record in series if series is not None else (series_listed(at=at),):
        lg.ok("SeriesListed", record)
    return lg


# ----------------------------------------------------------------------------- margins worked by hand


def short_margins(kind: str, spot: int, strike: int, sigma: int, period_s: int, params: RiskParams | None = None) -> tuple[int, int]:
    """(MM, IM) per contract of a *short*, from the option functions and DESIGN section 5's rule, not from
    the ledger's quote: floor share of spot + theo at the adverse stress move and shocked volatility -
    intrinsic now; IM = max(spot x min_imr, MM x imr / mmr)."""
    from ledger import options  # local: the builders stay importable without the option maths

    p = params or RiskParams()
    mmr, imr = p.maintenance_margin_ratio_ppm, p.initial_margin_ratio_ppm
    if kind == "CALL":
        s_spot = -((-spot * (PPM + p.short_stress_move_ppm)) // PPM)
    else:
        s_spot = max(1, spot * (PPM - p.short_stress_move_ppm) // PPM)
    s_sigma = -((-sigma * (PPM + p.short_vol_shock_ppm)) // PPM)
    # the ledger takes the stressed theo as a bound, one micro-USD above the exact one (ledger.options.stressed_figures)
    stressed = options.theoretical_price_micro_usd(kind, s_spot, strike, s_sigma, period_s) + 1
    mm = -((-spot * p.short_floor_ppm) // PPM) + stressed - options.intrinsic_micro_usd(kind, spot, strike)
    return mm, max(-((-spot * p.min_initial_margin_ratio_ppm) // PPM), -((-mm * imr) // mmr))


def long_margins(kind: str, spot: int, strike: int, sigma: int, period_s: int, params: RiskParams | None = None) -> tuple[int, int]:
    """(MM, IM) per contract of a *long*: Deri's figures capped at theo (the most a long can lose)."""
    from ledger import options

    p = params or RiskParams()
    mmr, imr = p.maintenance_margin_ratio_ppm, p.initial_margin_ratio_ppm
    theo = options.theoretical_price_micro_usd(kind, spot, strike, sigma, period_s)
    return (min(options.maintenance_margin_micro_usd(kind, spot, strike, sigma, period_s, mmr), theo),
            min(options.initial_margin_micro_usd(kind, spot, strike, sigma, period_s, mmr, imr, p.min_initial_margin_ratio_ppm), theo))
