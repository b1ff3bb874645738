"""State types per key: reserve per symbol, price per instrument, series, account, pools, ledger."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.idempotency import DecidedIds
from ledger.merkle_log import Frontier
from ledger.params import RiskParams
from ledger.units import MULTIPLIER_ONE_NANO
from ledger.watch_index import Surveillance


@dataclass(slots=True)
class Statement:
    """The latest MT535 statement line kept per (safekeeping account, symbol)."""

    statement_ref: str
    statement_number: int
    as_of_us: int
    aggr_qty_nano: int
    avai_qty_nano: int
    navl_qty_nano: int


@dataclass(slots=True)
class ReserveState:
    """Shares at the custodian vs tokens in circulation for one symbol."""

    symbol: str
    isin: str
    haircut_ppm: int
    shares_held_nano: int = 0
    shares_in_transit_nano: int = 0  # deposits instructed, not yet settled
    supply_nano: int = 0
    # (activation_time_us, multiplier_nano), sorted by activation; as-of lookups pick the last <= t
    multipliers: list[tuple[int, int]] = field(default_factory=lambda: [(0, MULTIPLIER_ONE_NANO)])
    in_transit_refs: dict[str, int] = field(default_factory=dict)  # movement_ref -> signed qty
    statements: dict[str, Statement] = field(default_factory=dict)  # safekeeping account -> latest
    observed_supply_nano: int | None = None
    observed_block: int = 0
    corporate_actions: dict[str, int] = field(default_factory=dict)  # action_ref -> activation
    # A corporate action's pause window (DESIGN section 5): the activation time of the action recorded last,
    # from its record until the first open-market mark at or after it carries the ledger's new multiplier;
    # None outside a window. While set, the symbol counts with the closed-market add-on and takes no LP flow.
    paused_for_activation_us: int | None = None

    def multiplier_at(self, t_us: int) -> int:
        """Shares per token (nano) in force at effective time t."""
        current = self.multipliers[0][1]
        for activation_us, multiplier_nano in self.multipliers:
            if activation_us > t_us:
                break
            current = multiplier_nano
        return current


@dataclass(slots=True)
class PriceState:
    """Latest oracle mark of an instrument."""

    price_micro_usd: int
    market_status: str
    multiplier_nano: int
    volatility_ppm: int
    published_at_us: int
    occurred_at_us: int
    # What the oracle's report said, when multiplier_nano is not it: multiplier_nano is the multiplier the
    # price is paired with, carried over from the last mark while a closed market's price stays frozen (a
    # weekend split flips the oracle's multiplier before the price adjusts). 0: the same as multiplier_nano.
    oracle_multiplier_nano: int = 0


@dataclass(slots=True)
class SeriesState:
    """One everlasting option series: listing, pool net volume, cumulative funding, and the pool's last quote.

    Traders' positions are valued at the live quote (ledger.quotes: the latest oracle spot); the
    fields from spot_micro_usd on are the series as last *refreshed* (at each trade or liquidation
    on it, and on the refresh schedule): the pool's mark, which sets the funding premium in force,
    and the figures the pool's own side (lean liquidity, NAV, capacity) is computed from.
    """

    series_id: str
    underlying: str
    option_kind: str
    strike_micro_usd: int
    funding_period_s: int
    net_volume_nano: int = 0  # traders' net position; the pool holds the opposite
    entry_index_sum: int = 0  # sum over positions of volume_nano x entry funding index
    cum_funding_micro_usd_wad: int = 0  # cumulative funding per contract, micro-USD x 1e18
    last_funding_us: int = 0
    spot_micro_usd: int = 0  # 0 until the underlying has a price: the series cannot trade yet
    theo_micro_usd: int = 0
    intrinsic_micro_usd: int = 0
    mark_micro_usd: int = 0  # the pool's leaned quote; mark - intrinsic is the funding premium in force
    delta_wad: int = 0
    volatility_ppm: int = 0
    priced_at_us: int = 0  # when the fields above were last refreshed
    mm_micro_usd: int = 0  # maintenance margin per contract of the pool's side (it holds -net) at the refresh spot
    im_micro_usd: int = 0  # initial margin per contract of the pool's side at the refresh spot


@dataclass(slots=True)
class Position:
    """An account's position in one series and the funding index it last settled at."""

    volume_nano: int
    entry_funding_micro_usd_wad: int


@dataclass(slots=True)
class AccountState:
    """Wallet, margin collateral, USD cash, option positions and LP shares of one account."""

    account: str
    wallet_nano: dict[str, int] = field(default_factory=dict)
    margin_nano: dict[str, int] = field(default_factory=dict)
    cash_micro_usd: int = 0  # may be negative while secured by collateral (a debt to the pool)
    positions: dict[str, Position] = field(default_factory=dict)
    lp_shares_nano: int = 0
    liquidations: int = 0


@dataclass(slots=True)
class PoolState:
    """Main liquidity pool (counterparty of every trade) and the insurance pool behind it."""

    tokens_nano: dict[str, int] = field(default_factory=dict)
    cash_micro_usd: int = 0
    shares_nano: int = 0
    # Cumulative PnL per whole pool share (micro-USD scaled by 1e9) up to the last LP flow: the NAV change
    # of every interval between flows over the shares of that interval (ledger.pool.close_pnl_interval),
    # so every flow counts: premiums, fees, funding, mark-to-market, liquidation bonus, socialised losses.
    pnl_per_share_index: int = 0
    nav_after_flow_micro_usd: int = 0  # the NAV (oracle) right after the last LP deposit or redemption
    insurance_tokens_nano: dict[str, int] = field(default_factory=dict)
    insurance_cash_micro_usd: int = 0
    bad_debt_socialised_micro_usd: int = 0
    bad_debt_insurance_micro_usd: int = 0
    # USD that came in (selling the shares behind redeemed pool tokens; users paying USD in) and went out
    # (winners' withdrawals), ledger.settlement: the venue holds the difference; every other USD balance is a
    # claim between accounts, so the internal USD balances add up to exactly that (a property test checks it).
    usd_raised_micro_usd: int = 0
    usd_paid_out_micro_usd: int = 0
    usd_paid_in_micro_usd: int = 0

    @property
    def usd_on_hand_micro_usd(self) -> int:
        """USD the venue actually holds."""
        return self.usd_raised_micro_usd + self.usd_paid_in_micro_usd - self.usd_paid_out_micro_usd


@dataclass(slots=True)
class Counters:
    """What went in and out, for the summary and the records-in = applied + rejected check."""

    applied: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    liquidations: int = 0
    penalties_micro_usd: int = 0
    bad_debt_micro_usd: int = 0
    # How often each venue-economics rule acted (the demo's report): LP redemptions, capacity
    # rejections per limit, partial liquidations, backstops, USD withdrawals and settlement sales, pause windows.
    economics: dict[str, int] = field(default_factory=dict)

    def count(self, rule: str) -> None:
        self.economics[rule] = self.economics.get(rule, 0) + 1


@dataclass(slots=True)
class LedgerState:
    """Everything the fold knows; the canonical hash is taken over all of it but the counters."""

    params: RiskParams = field(default_factory=RiskParams)
    reserves: dict[str, ReserveState] = field(default_factory=dict)
    prices: dict[str, PriceState] = field(default_factory=dict)
    series: dict[str, SeriesState] = field(default_factory=dict)
    series_by_underlying: dict[str, list[str]] = field(default_factory=dict)
    accounts: dict[str, AccountState] = field(default_factory=dict)
    pool: PoolState = field(default_factory=PoolState)
    seen: DecidedIds = field(default_factory=DecidedIds)  # applied event ids -> content digests, within the horizon
    # instrument -> accounts whose equity moves with it (collateral holders, position holders)
    exposure: dict[str, dict[str, None]] = field(default_factory=dict)
    stale_prices: dict[str, None] = field(default_factory=dict)  # stocks whose mark is past the staleness limit
    counters: Counters = field(default_factory=Counters)
    # "topic:partition" -> last source offset applied: delivery bookkeeping that makes a redelivered
    # record a no-op. Like the counters it is not a ledger fact, so the state hash leaves it out.
    source_offsets: dict[str, int] = field(default_factory=dict)
    # Which accounts to re-value after an event (ledger.surveillance): derived, so not hashed either.
    surveillance: Surveillance = field(default_factory=Surveillance)
    # The Merkle log of every entry folded, in order (ledger.merkle_log, leaves from ledger.log_entry):
    # history, not a ledger fact, so the state hash leaves it out; checkpoints publish its root.
    log: Frontier = field(default_factory=Frontier)
