"""Rich tables that summarise a ledger state: counts, reserves, pools, liquidations, hash."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ledger.pool import pnl_per_share_micro_usd
from ledger.risk import pool_nav_micro_usd, share_value_micro_usd_per_share, token_unit
from ledger.state import LedgerState
from services.replay import ReplayResult

NANO = 1_000_000_000


def usd(micro: int) -> str:
    """micro-USD as a dollar string; display only, the ledger never holds floats."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), 1_000_000)
    return f"{sign}{whole:,}.{frac // 10_000:02d}"


def qty(nano: int) -> str:
    sign = "-" if nano < 0 else ""
    whole, frac = divmod(abs(nano), NANO)
    return f"{sign}{whole:,}.{frac // 1_000_000:03d}"


def counts_table(result: ReplayResult) -> Table:
    t = Table(title="Records in = applied + duplicates + rejected")
    for col in ("topic", "in", "applied", "duplicates", "rejected"):
        t.add_column(col, justify="right" if col != "topic" else "left")
    for topic in sorted(result.records_in):
        t.add_row(topic, f"{result.records_in[topic]:,}", f"{result.applied.get(topic, 0):,}",
                  f"{result.duplicates.get(topic, 0):,}", f"{result.rejected.get(topic, 0):,}")
    return t


def reasons_table(rejected_by_reason: dict[str, int]) -> Table:
    t = Table(title="Rejected by reason")
    t.add_column("reason")
    t.add_column("count", justify="right")
    for reason, n in sorted(rejected_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
        t.add_row(reason, f"{n:,}")
    return t


def reserves_table(state: LedgerState, at_us: int) -> Table:
    t = Table(title="Reserves per symbol (secure mint: shares held >= supply x multiplier)")
    for col in ("symbol", "shares held", "in transit", "supply", "multiplier", "needed", "ratio", "verdict"):
        t.add_column(col, justify="left" if col in ("symbol", "verdict") else "right")
    for symbol, r in sorted(state.reserves.items()):
        mult = r.multiplier_at(at_us)
        needed = -((-r.supply_nano * mult) // NANO)
        ratio = f"{r.shares_held_nano * 10_000 // needed / 100:.2f}%" if needed else "n/a"
        verdict = "[green]covered[/]" if r.shares_held_nano >= needed else "[red]UNDER-RESERVED[/]"
        t.add_row(symbol, qty(r.shares_held_nano), qty(r.shares_in_transit_nano), qty(r.supply_nano),
                  f"{mult / NANO:.6f}", qty(needed), ratio, verdict)
    return t


def pools_table(state: LedgerState, at_us: int) -> Table:
    pool = state.pool
    nav = pool_nav_micro_usd(state)
    insurance = pool.insurance_cash_micro_usd
    for symbol, q in pool.insurance_tokens_nano.items():
        price, mult = token_unit(state, symbol, at_us)
        insurance += q * mult * price // (NANO * NANO)
    t = Table(title="Pools")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("main pool NAV (USD)", usd(nav))
    t.add_row("pool shares", qty(pool.shares_nano))
    t.add_row("share value (USD)", usd(share_value_micro_usd_per_share(pool, nav)))
    # every flow: premiums, fees, funding, mark-to-market, liquidation bonus and penalty, socialised losses
    t.add_row("PnL per share since the first deposit (USD)", usd(pnl_per_share_micro_usd(state, nav)))
    t.add_row("insurance fund (USD)", usd(insurance))
    t.add_row("bad debt covered by insurance (USD)", usd(pool.bad_debt_insurance_micro_usd))
    t.add_row("bad debt socialised to LPs (USD)", usd(pool.bad_debt_socialised_micro_usd))
    return t


def liquidations_table(state: LedgerState) -> Table:
    c = state.counters
    t = Table(title="Liquidations")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("liquidations", f"{c.liquidations:,}")
    t.add_row("penalties to insurance (USD)", usd(c.penalties_micro_usd))
    t.add_row("bad debt (USD)", usd(c.bad_debt_micro_usd))
    return t


ECONOMICS_RULES = (  # (counter, what it counts): each venue-economics rule the fold applied (README "Venue economics")
    ("lp_redemption", "LP redemptions paid at the model value (no value moved between LPs)"),
    ("capacity_im", "trades refused pool_capacity: IM capacity"),
    ("capacity_delta", "trades refused pool_capacity: net-delta cap"),
    ("capacity_stress", "trades refused pool_capacity: stress limit"),
    ("partial_liquidation", "partial liquidations (close factor or price-shift limit, cured)"),
    ("backstop", "liquidations finished by the pool's backstop"),
    ("usd_deposit", "USD deposits (users paying USD in)"),
    ("usd_withdrawal", "USD withdrawals paid"),
    ("settlement_sale", "settlements (pool tokens redeemed and sold for USD)"),
    ("pause_window", "corporate-action pause windows opened"),
    ("adl_step", "auto-deleveraging steps (a winner reduced at the mark)"),
)


def economics_table(state: LedgerState) -> Table:
    pool = state.pool
    t = Table(title="Venue economics: rules applied")
    t.add_column("rule")
    t.add_column("count", justify="right")
    for key, label in ECONOMICS_RULES:
        t.add_row(label, f"{state.counters.economics.get(key, 0):,}")
    t.add_row("recovered by auto-deleveraging (USD)", usd(state.counters.economics.get("adl_recovered_micro_usd", 0)))
    t.add_row("USD on hand (raised + paid in - paid out, USD)", usd(pool.usd_on_hand_micro_usd))
    return t


def last_event_time(state: LedgerState) -> int:
    """The latest effective time the state has seen (prices are published throughout)."""
    return max((p.occurred_at_us for p in state.prices.values()), default=0)


def print_state(console: Console, state: LedgerState) -> None:
    """Reserves, pools, liquidations and the hash of a state (no delivery counts)."""
    at = last_event_time(state)
    console.print(reserves_table(state, at))
    console.print(pools_table(state, at))
    console.print(liquidations_table(state))
    console.print(economics_table(state))
    from ledger.state_hash import state_hash

    console.print(f"[bold]state hash[/] {state_hash(state)}")


def print_summary(console: Console, result: ReplayResult) -> None:
    state = result.state
    at = last_event_time(state)
    console.print(counts_table(result))
    console.print(reasons_table(result.rejected_by_reason))
    console.print(reserves_table(state, at))
    console.print(pools_table(state, at))
    console.print(liquidations_table(state))
    console.print(economics_table(state))
    console.print(f"postings: {result.postings:,}   emitted: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result.emitted_by_subject.items())))
    console.print(f"[bold]state hash[/] {result.hash()}")
