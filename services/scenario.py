"""Scenario generator: a reproducible market (stocks, custody, mints, BTC/ETH crash, weekend, split, dividend, LPs, trades, bad input)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from schemas.codec import encode
from schemas.topics import SUBJECT_ROUTES
from services.archive import ArchiveRow

NANO = 1_000_000_000
MICRO = 1_000_000
SECOND_US = 1_000_000
# Friday 2026-03-06 14:30 UTC: the US market has just opened; the weekend follows.
START_US = 1_772_807_400 * SECOND_US
HEARTBEAT_US = 5 * 60 * SECOND_US  # the oracle re-publishes any mark older than this

STOCKS: dict[str, tuple[str, int, int]] = {  # symbol -> (ISIN, price USD, haircut ppm)
    "TSLA": ("US88160R1014", 250, 300_000),
    "AAPL": ("US0378331005", 190, 200_000),
    "NVDA": ("US67066G1040", 900, 300_000),
    "AMZN": ("US0231351067", 180, 200_000),
    "MSFT": ("US5949181045", 420, 200_000),
    "GOOGL": ("US02079K3059", 165, 200_000),
    "SPY": ("US78462F1030", 510, 150_000),
    "COIN": ("US19260Q1076", 230, 400_000),
}
CRYPTO: dict[str, tuple[int, int]] = {"BTC": (60_000, 700_000), "ETH": (3_000, 850_000)}  # price USD, sigma ppm


@dataclass
class ScenarioConfig:
    """Size and shape of a generated scenario."""

    accounts: int = 2_000
    events: int = 100_000
    seed: int = 7
    days: float = 4.0  # Friday open to Tuesday: a weekend, a split, a dividend, a crash
    bad_input_share_ppm: int = 2_000
    duplicate_share_ppm: int = 10_000


def market_open(t_us: int) -> bool:
    """NYSE regular hours, 14:30-21:00 UTC on weekdays (holidays ignored)."""
    seconds = t_us // SECOND_US
    weekday = (seconds // 86_400 + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    minute = (seconds % 86_400) // 60
    return weekday < 5 and 14 * 60 + 30 <= minute < 21 * 60


@dataclass
class _Market:
    prices_micro: dict[str, int] = field(default_factory=dict)
    multipliers_nano: dict[str, int] = field(default_factory=dict)


class ScenarioBuilder:
    """Builds the event stream; everything random comes from one seeded generator."""

    def __init__(self, cfg: ScenarioConfig):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.t_us = START_US
        self.seq = 0
        self.market = _Market()
        self.sent: list[ArchiveRow] = []  # recent rows, for realistic redeliveries
        self.accounts = [f"acct-{i:06d}" for i in range(cfg.accounts)]
        self.holdings: dict[str, dict[str, int]] = {}
        self.lps: list[str] = []
        self.series: list[str] = []
        self.movement = 0
        self.statement_no = 0
        self.block = 18_000_000
        self.span_us = int(cfg.days * 86_400 * SECOND_US)
        self.last_mark_us: dict[str, int] = {}
        self.custody_nano: dict[str, int] = dict.fromkeys(STOCKS, 0)  # shares the custodian holds, as it reports them
        self.supply_nano: dict[str, int] = dict.fromkeys(STOCKS, 0)  # tokens on chain, as the chain indexer sees them

    # ---- encoding helpers
    def _envelope(self, source: str) -> dict:
        self.seq += 1
        return {"event_id": f"{source}-{self.cfg.seed}-{self.seq:09d}", "occurred_at": self.t_us, "source": source}

    def _row(self, subject: str, source: str, **fields) -> ArchiveRow:
        record = self._envelope(source) | fields
        topic, key_field = SUBJECT_ROUTES[subject]
        row = (topic, str(record[key_field]), encode(subject, record))
        if len(self.sent) < 50_000:
            self.sent.append(row)
        else:
            self.sent[self.rng.randrange(len(self.sent))] = row
        return row

    def _heartbeats(self) -> Iterator[ArchiveRow]:
        for instrument, last in list(self.last_mark_us.items()):
            if self.t_us - last >= HEARTBEAT_US:
                yield self._crypto_mark(instrument) if instrument in CRYPTO else self._stock_mark(instrument)

    def _stock_mark(self, symbol: str) -> ArchiveRow:
        self.last_mark_us[symbol] = self.t_us
        status = "OPEN" if market_open(self.t_us) else "CLOSED"
        return self._row("PriceMark", "oracle", instrument=symbol, price_micro_usd=self.market.prices_micro[symbol],
                         market_status=status, multiplier_nano=self.market.multipliers_nano[symbol], volatility_ppm=0,
                         published_at=self.t_us)

    def _crypto_mark(self, coin: str) -> ArchiveRow:
        self.last_mark_us[coin] = self.t_us
        return self._row("PriceMark", "oracle", instrument=coin, price_micro_usd=self.market.prices_micro[coin],
                         market_status="OPEN", multiplier_nano=NANO, volatility_ppm=CRYPTO[coin][1], published_at=self.t_us)

    # ---- phases
    def setup(self) -> Iterator[ArchiveRow]:
        rng = self.rng
        for symbol, (isin, price, haircut) in STOCKS.items():
            self.market.prices_micro[symbol] = price * MICRO
            self.market.multipliers_nano[symbol] = NANO
            yield self._row("StockListed", "custodian", symbol=symbol, isin=isin, haircut_ppm=haircut)
            yield self._stock_mark(symbol)
        for coin, (price, _) in CRYPTO.items():
            self.market.prices_micro[coin] = price * MICRO
            yield self._crypto_mark(coin)
            for kind in ("CALL", "PUT"):
                for pct in (80, 90, 100, 110, 120):
                    strike = price * pct // 100
                    series_id = f"{coin}-{kind[0]}-{strike}-7D"
                    self.series.append(series_id)
                    yield self._row("SeriesListed", "venue", series_id=series_id, underlying=coin, option_kind=kind,
                                    strike_micro_usd=strike * MICRO, funding_period_s=7 * 86_400)
        # Holders: each account gets tokens of one to three stocks, the custodian receives the shares first.
        symbols = list(STOCKS)
        plan: dict[str, list[tuple[str, int]]] = {}
        demand: dict[str, int] = dict.fromkeys(symbols, 0)
        for account in self.accounts:
            picks = rng.sample(symbols, rng.randint(1, 3))
            value_usd = int(rng.lognormvariate(9.5, 1.0))  # median ~13k USD
            for symbol in picks:
                qty = value_usd * NANO // len(picks) // STOCKS[symbol][1]
                plan.setdefault(account, []).append((symbol, qty))
                demand[symbol] += qty
        for symbol in symbols:
            total = demand[symbol] * 105 // 100 + 1_000 * NANO
            half = total // 2
            for qty, in_transit in ((half, True), (total - half, False)):
                self.movement += 1
                ref = f"MV{self.movement:08d}"
                if in_transit:
                    yield self._row("CustodyMovement", "custodian", symbol=symbol, isin=STOCKS[symbol][0], movement_ref=ref,
                                    direction="DEPOSIT", status="IN_TRANSIT", qty_nano=qty)
                    self._tick(30)
                yield self._row("CustodyMovement", "custodian", symbol=symbol, isin=STOCKS[symbol][0], movement_ref=ref,
                                direction="DEPOSIT", status="SETTLED", qty_nano=qty)
                self.custody_nano[symbol] += qty
            yield from self._statement(symbol)
        for account, legs in plan.items():
            self.holdings[account] = {}
            for symbol, qty in legs:
                self._tick(0.05)
                yield self._row("MintRequest", "issuer", symbol=symbol, account=account, qty_nano=qty)
                self.holdings[account][symbol] = qty
                self.supply_nano[symbol] += qty
            if rng.random() < 0.12:
                self.lps.append(account)
                symbol, qty = legs[0]
                lp_qty = qty * 8 // 10
                self.holdings[account][symbol] -= lp_qty
                yield self._row("LpDeposit", "venue", account=account, symbol=symbol, qty_nano=lp_qty)
            for symbol, _qty in legs:
                deposit = self.holdings[account][symbol] * rng.choice((5, 8, 10)) // 10
                if deposit > 0:
                    self.holdings[account][symbol] -= deposit
                    yield self._row("CollateralDeposit", "venue", account=account, symbol=symbol, qty_nano=deposit)

    def _statement(self, symbol: str) -> Iterator[ArchiveRow]:
        """MT535-style statement of what the custodian holds; a slice is not available (pledged, settling)."""
        self.statement_no += 1
        held = self.custody_nano[symbol]
        navl = held // 50
        yield self._row("HoldingStatement", "custodian", statement_ref=f"ST{self.statement_no:07d}", statement_number=self.statement_no,
                        function="NEW", as_of=self.t_us, completeness="COMPLETE", safekeeping_account="SAFE-001",
                        isin=STOCKS[symbol][0], symbol=symbol, aggr_qty_nano=held, avai_qty_nano=held - navl, navl_qty_nano=navl)

    def _supply(self, symbol: str) -> ArchiveRow:
        self.block += self.rng.randint(1, 50)
        return self._row("SupplyObservation", "chain-indexer", symbol=symbol, chain="ethereum", block_number=self.block,
                         supply_qty_nano=self.supply_nano[symbol])

    def close_of_books(self) -> Iterator[ArchiveRow]:
        """End of the scenario: a statement from the custodian and a supply reading from the chain per symbol."""
        for symbol in STOCKS:
            self._tick(1)
            yield from self._statement(symbol)
            yield self._supply(symbol)

    def _tick(self, seconds: float) -> None:
        self.t_us += int(seconds * SECOND_US)

    def main(self, n_events: int) -> Iterator[ArchiveRow]:
        rng, cfg = self.rng, self.cfg
        dt_s = self.span_us / SECOND_US / max(n_events, 1)
        crash_at = int(n_events * 0.6)
        split_at, dividend_at = int(n_events * 0.35), int(n_events * 0.5)
        accounts_with_margin = self.accounts
        for i in range(n_events):
            self._tick(dt_s)
            yield from self._heartbeats()
            if i == crash_at:
                for coin, drop in (("BTC", 38), ("ETH", 45)):
                    self.market.prices_micro[coin] = self.market.prices_micro[coin] * (100 - drop) // 100
                    yield self._crypto_mark(coin)
                continue
            if i == split_at:
                yield from self._split("NVDA", 3)
                continue
            if i == dividend_at:
                yield from self._dividend("AAPL")
                continue
            r = rng.random() * 1_000_000
            if r < cfg.bad_input_share_ppm:
                yield self._bad_input()
            elif r < cfg.bad_input_share_ppm + cfg.duplicate_share_ppm and self.sent:
                yield self._redeliver()
            elif r < 250_000:
                coin = "BTC" if rng.random() < 0.5 else "ETH"
                px = self.market.prices_micro[coin]
                self.market.prices_micro[coin] = max(MICRO, px + int(px * rng.gauss(0, 0.0015)))
                yield self._crypto_mark(coin)
            elif r < 400_000:
                symbol = rng.choice(list(STOCKS))
                if market_open(self.t_us):
                    px = self.market.prices_micro[symbol]
                    self.market.prices_micro[symbol] = max(MICRO, px + int(px * rng.gauss(0, 0.001)))
                yield self._stock_mark(symbol)
            elif r < 780_000:
                yield self._trade(rng.choice(accounts_with_margin))
            elif r < 850_000:
                yield from self._collateral_move(rng.choice(self.accounts))
            elif r < 880_000 and self.lps:
                yield from self._lp_move(rng.choice(self.lps))
            elif r < 940_000:
                yield from self._new_money(rng.choice(self.accounts))
            elif r < 960_000:
                yield self._supply(rng.choice(list(STOCKS)))
            elif r < 970_000:
                yield from self._statement(rng.choice(list(STOCKS)))
            else:
                yield from self._burn(rng.choice(self.accounts))

    def _trade(self, account: str) -> ArchiveRow:
        rng = self.rng
        series_id = rng.choice(self.series)
        # Traders lean one way (short puts, long calls): the crash then makes some of them insolvent.
        sign = 1 if "-C-" in series_id else -1
        if rng.random() < 0.25:
            sign = -sign
        contracts = rng.choice((1, 2, 5, 10, 20, 50)) * (NANO // 100)
        if series_id.startswith("ETH"):
            contracts *= 10
        return self._row("TradeRequest", "venue", account=account, series_id=series_id, volume_nano=sign * contracts)

    def _collateral_move(self, account: str) -> Iterator[ArchiveRow]:
        rng = self.rng
        holdings = self.holdings.get(account, {})
        symbol = rng.choice(list(holdings) or list(STOCKS))
        qty = rng.randint(1, 20) * NANO // 10
        if rng.random() < 0.5 and holdings.get(symbol, 0) >= qty:
            holdings[symbol] -= qty
            yield self._row("CollateralDeposit", "venue", account=account, symbol=symbol, qty_nano=qty)
            if qty % (5 * NANO // 10) == 0:
                # One token deposit in five also pays USD in (250-1,000 USD, in nano-USD): USD flows both ways.
                # Derived from qty, so no extra draw moves the rest of the week.
                yield self._row("CollateralDeposit", "venue", account=account, symbol="USD", qty_nano=qty * 500 * MICRO // NANO * 1_000)
        elif qty % (4 * NANO // 10) == 0:
            # One withdrawal in four asks for USD instead (400-2,000 USD, in nano-USD): winners' premium cash
            # leaves, the others are refused insufficient_balance. Derived from qty, so no extra draw moves the rest.
            yield self._row("CollateralWithdrawalRequest", "venue", account=account, symbol="USD", qty_nano=qty * 1_000 * MICRO // NANO * 1_000)
        else:
            yield self._row("CollateralWithdrawalRequest", "venue", account=account, symbol=symbol, qty_nano=qty)

    def _lp_move(self, account: str) -> Iterator[ArchiveRow]:
        rng = self.rng
        symbol = rng.choice(list(STOCKS))
        if rng.random() < 0.5:
            yield self._row("LpRedeemRequest", "venue", account=account, shares_nano=rng.randint(10, 2_000) * NANO, payout_symbol=symbol)
        else:
            holdings = self.holdings.get(account, {})
            owned = [s for s, q in holdings.items() if q > NANO]
            if owned:
                symbol = rng.choice(owned)
                qty = holdings[symbol] // 4
                holdings[symbol] -= qty
                yield self._row("LpDeposit", "venue", account=account, symbol=symbol, qty_nano=qty)

    def _new_money(self, account: str) -> Iterator[ArchiveRow]:
        """Shares arrive at the custodian, then tokens are minted; sometimes the mint comes first and is refused."""
        rng = self.rng
        symbol = rng.choice(list(STOCKS))
        qty = rng.randint(1, 200) * NANO
        isin = STOCKS[symbol][0]
        mint_first = rng.random() < 0.1
        if mint_first:
            yield self._row("MintRequest", "issuer", symbol=symbol, account=account, qty_nano=qty * 1_000)
        self.movement += 1
        yield self._row("CustodyMovement", "custodian", symbol=symbol, isin=isin, movement_ref=f"MV{self.movement:08d}",
                        direction="DEPOSIT", status="SETTLED", qty_nano=qty)
        self.custody_nano[symbol] += qty
        yield self._row("MintRequest", "issuer", symbol=symbol, account=account, qty_nano=qty * NANO // self.market.multipliers_nano[symbol])
        tokens = qty * NANO // self.market.multipliers_nano[symbol]
        self.holdings.setdefault(account, {})[symbol] = self.holdings.get(account, {}).get(symbol, 0) + tokens
        self.supply_nano[symbol] += tokens

    def _burn(self, account: str) -> Iterator[ArchiveRow]:
        holdings = self.holdings.get(account, {})
        owned = [s for s, q in holdings.items() if q > 0]
        if owned:
            symbol = self.rng.choice(owned)
            qty = max(1, holdings[symbol] // 10)
            holdings[symbol] -= qty
            yield self._row("Burn", "issuer", symbol=symbol, account=account, qty_nano=qty)
            self.supply_nano[symbol] -= qty

    def _split(self, symbol: str, ratio: int) -> Iterator[ArchiveRow]:
        yield self._row("CorporateAction", "custodian", symbol=symbol, action_ref=f"CA-{symbol}-SPLIT", kind="SPLIT", ratio_num=ratio,
                        ratio_den=1, dividend_micro_usd_per_share=0, withholding_ppm=0, reference_price_micro_usd=0, activation_time=self.t_us)
        self.market.prices_micro[symbol] //= ratio
        base = self.market.multipliers_nano[symbol]
        self.market.multipliers_nano[symbol] *= ratio
        self.custody_nano[symbol] = self.custody_nano[symbol] * self.market.multipliers_nano[symbol] // base  # new shares delivered
        yield self._stock_mark(symbol)
        yield from self._statement(symbol)

    def _dividend(self, symbol: str) -> Iterator[ArchiveRow]:
        price = self.market.prices_micro[symbol]
        div = MICRO  # 1 USD per share, 30 % withheld, reinvested at the current price
        yield self._row("CorporateAction", "custodian", symbol=symbol, action_ref=f"CA-{symbol}-DIV", kind="CASH_DIVIDEND", ratio_num=1,
                        ratio_den=1, dividend_micro_usd_per_share=div, withholding_ppm=300_000, reference_price_micro_usd=price,
                        activation_time=self.t_us)
        mult = self.market.multipliers_nano[symbol]
        self.market.multipliers_nano[symbol] = mult * (price + div * 7 // 10) // price
        self.custody_nano[symbol] = self.custody_nano[symbol] * self.market.multipliers_nano[symbol] // mult  # shares bought
        yield self._stock_mark(symbol)
        yield from self._statement(symbol)

    def _bad_input(self) -> ArchiveRow:
        rng = self.rng
        kind = rng.randrange(4)
        topic = rng.choice(("custody.events", "mint.events", "margin.events", "trade.events", "price.events"))
        if kind == 0:
            return topic, "garbage", rng.randbytes(rng.randint(0, 40))
        if kind == 1:
            return topic, "unknown", b"\x00" + (9_999).to_bytes(4, "big") + rng.randbytes(12)
        if kind == 2:
            topic, key, value = rng.choice(self.sent)
            return topic, key, value[: max(6, len(value) // 2)]
        # Same event id, different content: a producer bug the ledger must refuse.
        topic, key, value = rng.choice(self.sent)
        return topic, key, value[:-1] + bytes([(value[-1] + 2) % 128])

    def _redeliver(self) -> ArchiveRow:
        return self.rng.choice(self.sent)


def generate(cfg: ScenarioConfig) -> Iterator[ArchiveRow]:
    """All rows of a scenario in log order: set-up first, then cfg.events market events."""
    builder = ScenarioBuilder(cfg)
    yield from builder.setup()
    yield from builder.main(cfg.events)
    yield from builder.close_of_books()
