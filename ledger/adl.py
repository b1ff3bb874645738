"""Auto-deleveraging: when insurance and the pool's equity cannot absorb a bad debt, profitable traders' positions are reduced at the mark and give up the part of their profit the pool cannot pay."""

from __future__ import annotations

from typing import Any

from ledger import chart
from ledger.market import accrue_funding
from ledger.outcome import Outcome, derived_event_id
from ledger.quotes import quote
from ledger.risk import account_health, pool_model_value_micro_usd
from ledger.state import AccountState, LedgerState
from ledger.trading import close_against_pool, settle_funding
from ledger.units import NANO, PPM, div_ceil
from ledger.watch_index import recheck


def deficit_micro_usd(state: LedgerState, socialised_micro_usd: int) -> int:
    """The part of a loss just socialised to the LPs that took the pool's model value below zero (what ADL recovers).

    The LPs' equity is the model value shares are priced on (ledger.pool): while it is >= 0 the LPs
    absorbed the loss; below zero they could not, and the rest (at most what this event socialised) is
    taken from profitable traders.
    """
    if socialised_micro_usd <= 0:
        return 0
    return min(socialised_micro_usd, max(0, -pool_model_value_micro_usd(state)))


def ranking(state: LedgerState, at_us: int, exclude: str) -> list[tuple[int, str, int, int, int]]:
    """Profitable traders, first to be deleveraged first: (score_ppm, account, claim, equity, notional), best first.

    claim = equity - collateral = cash + positions at theo - funding owed: what the pool owes the account
    in USD (its profit against the pool; the ledger keeps no entry price per position). Hyperliquid sorts
    by (mark / entry) x (notional / account value), profit times leverage; here score = (claim / equity) x
    (notional / equity), notional = sum of |volume| x spot. Only accounts with a position, a positive claim
    and positive equity take part: a user without a position never absorbs a loss. Ties by account name.
    """
    ranked: list[tuple[int, str, int, int, int]] = []
    for name in sorted(state.accounts):
        acct = state.accounts[name]
        if name == exclude or not acct.positions:
            continue
        health = account_health(state, acct, at_us)
        claim = health.equity_micro_usd - health.collateral_micro_usd
        equity = health.equity_micro_usd
        if claim <= 0 or equity <= 0:
            continue
        notional = sum(abs(pos.volume_nano) * quote(state, state.series[sid]).spot_micro_usd // NANO
                       for sid, pos in acct.positions.items())
        score = claim * notional * PPM // (equity * equity)
        ranked.append((score, name, claim, equity, notional))
    ranked.sort(key=lambda r: (-r[0], r[1]))
    return ranked


def _reduce(state: LedgerState, acct: AccountState, fraction_ppm: int, at_us: int, trigger_id: str, out: Outcome) -> list[dict[str, Any]]:
    """Close fraction_ppm (rounded up) of every position at the mark (theo, rounded against the account)."""
    closed: list[dict[str, Any]] = []
    for series_id in sorted(acct.positions):
        series = state.series[series_id]
        accrue_funding(series, at_us)
        settle_funding(state, acct, series, out)
        volume = acct.positions[series_id].volume_nano
        size = div_ceil(abs(volume) * fraction_ppm, PPM)
        part = size if volume > 0 else -size
        theo = quote(state, series).theo_micro_usd
        value = theo * part // NANO  # floor: a long receives no more, a short pays no less
        close_against_pool(state, series, acct, part, value, at_us, trigger_id, out)
        closed.append({"series_id": series_id, "volume_nano": part, "mark_micro_usd": theo, "value_micro_usd": value})
    return closed


def auto_deleverage(state: LedgerState, at_us: int, trigger_id: str, bankrupt: str, deficit: int, out: Outcome) -> list[str]:
    """Recover deficit micro-USD from the ranked traders, one AutoDeleveraged event per step; returns who was deleveraged.

    Each step reduces the first-ranked trader's positions by the share of its claim the deficit needs
    (all of them if the claim is smaller), at the mark, then takes the haircut: the deficit left, at
    most its claim and its equity above maintenance margin after the reduction, so it is never left
    under margin (the surveillance invariant); its cash may turn negative where its remaining positions
    carry the profit (a debt they secure, as after any trade). What no trader can cover stays with the LPs.
    """
    pool = state.pool
    deleveraged: list[str] = []
    for rank, (score, name, claim, equity, notional) in enumerate(ranking(state, at_us, bankrupt), start=1):
        if deficit <= 0:
            break
        acct = state.accounts[name]
        fraction = min(PPM, div_ceil(deficit * PPM, claim))
        model_before = pool_model_value_micro_usd(state)
        closed = _reduce(state, acct, fraction, at_us, trigger_id, out)
        after = account_health(state, acct, at_us)
        haircut = max(0, min(deficit, after.equity_micro_usd - after.collateral_micro_usd,
                             after.equity_micro_usd - after.maintenance_micro_usd))
        if haircut:
            acct.cash_micro_usd -= haircut
            pool.cash_micro_usd += haircut
            out.post(chart.margin(name, chart.USD), chart.pool_main(chart.USD), chart.USD, haircut)
        out.emit("AutoDeleveraged", {
            "event_id": derived_event_id("adl", trigger_id, rank), "occurred_at": at_us, "source": "stockledger",
            "account": name, "trigger_event_id": trigger_id, "bankrupt_account": bankrupt, "rank": rank,
            "score_ppm": score, "claim_micro_usd": claim, "equity_micro_usd": equity, "notional_micro_usd": notional,
            "pool_model_value_micro_usd": model_before, "deficit_before_micro_usd": deficit, "fraction_ppm": fraction,
            "closed_positions": closed, "haircut_micro_usd": haircut, "deficit_after_micro_usd": deficit - haircut,
        })
        deficit -= haircut
        state.counters.count("adl_step")
        state.counters.economics["adl_recovered_micro_usd"] = state.counters.economics.get("adl_recovered_micro_usd", 0) + haircut
        recheck(state, name)  # its cash and positions changed: re-valued (and re-armed) at the next sweep
        deleveraged.append(name)
    return deleveraged
