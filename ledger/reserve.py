"""Reserve rules per symbol: custody movements, statements, corporate actions, secure mint, burns."""

from __future__ import annotations

from typing import Any

from ledger import chart, limits, reasons
from ledger.outcome import Outcome, derived_event_id
from ledger.reasons import Rejected
from ledger.state import AccountState, LedgerState, ReserveState, Statement
from ledger.units import NANO, PPM
from ledger.watch_index import recheck_step_exposed


def _reserve(state: LedgerState, symbol: str) -> ReserveState:
    reserve = state.reserves.get(symbol)
    if reserve is None:
        raise Rejected(reasons.UNKNOWN_SYMBOL, f"symbol {symbol!r} is not listed")
    return reserve


def _positive(qty: int, what: str) -> None:
    if qty <= 0:
        raise Rejected(reasons.NON_POSITIVE_AMOUNT, f"{what} must be > 0, got {qty}")


def apply_stock_listed(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    symbol = ev["symbol"]
    if symbol in state.reserves:
        raise Rejected(reasons.ALREADY_LISTED, f"{symbol} is already listed")
    # One namespace of instruments: a marked crypto underlying (or one with series) cannot become a stock,
    # or its marks would count as stock marks and never reprice its series.
    if symbol in state.prices or symbol in state.series_by_underlying:
        raise Rejected(reasons.ALREADY_LISTED, f"{symbol} is already a crypto underlying")
    if not 0 <= ev["haircut_ppm"] < PPM:
        raise Rejected(reasons.MALFORMED, f"haircut_ppm {ev['haircut_ppm']} outside [0, 1e6)")
    state.reserves[symbol] = ReserveState(symbol=symbol, isin=ev["isin"], haircut_ppm=ev["haircut_ppm"])


def apply_custody_movement(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    reserve = _reserve(state, ev["symbol"])
    qty, ref, symbol = ev["qty_nano"], ev["movement_ref"], ev["symbol"]
    _positive(qty, "qty_nano")
    asset = chart.share_asset(symbol)
    pending = reserve.in_transit_refs.get(ref)
    if ev["direction"] == "DEPOSIT":
        limits.require_within(reserve.shares_held_nano + reserve.shares_in_transit_nano + qty, limits.RESERVE_MAX_NANO,
                              f"{symbol}'s custodian holding (held + in transit, nano)")
        if ev["status"] == "IN_TRANSIT":
            if pending is not None:
                raise Rejected(reasons.MALFORMED, f"movement {ref} is already in transit")
            reserve.in_transit_refs[ref] = qty
            reserve.shares_in_transit_nano += qty
            out.post(chart.custody_external(symbol), chart.custodian_in_transit(symbol), asset, qty)
            return
        if pending is not None:  # settlement of an in-transit leg clears the clearing account
            if pending != qty:
                raise Rejected(reasons.MALFORMED, f"movement {ref} settles {qty} but {pending} was in transit")
            del reserve.in_transit_refs[ref]
            reserve.shares_in_transit_nano -= qty
            out.post(chart.custodian_in_transit(symbol), chart.custodian(symbol), asset, qty)
        else:
            out.post(chart.custody_external(symbol), chart.custodian(symbol), asset, qty)
        reserve.shares_held_nano += qty
        return
    # A withdrawal lowers the reserve at once, even in transit: the shares are no longer ours to count.
    if ev["status"] == "SETTLED" and pending is not None:
        if pending != -qty:
            raise Rejected(reasons.MALFORMED, f"withdrawal {ref} settles {qty} but {-pending} was instructed")
        del reserve.in_transit_refs[ref]
        out.post(chart.custodian_in_transit(symbol), chart.custody_external(symbol), asset, qty)
        return
    if pending is not None:
        raise Rejected(reasons.MALFORMED, f"movement {ref} is already in transit")
    # A withdrawal is a fact: it is recorded even if it leaves the tokens under-reserved; proof of
    # reserves and reconciliation flag it, and secure mint refuses new tokens until it is cured.
    # But no custodian delivers shares it does not hold: that withdrawal cannot be a fact.
    if qty > reserve.shares_held_nano:
        raise Rejected(reasons.INSUFFICIENT_BALANCE, f"the custodian holds {reserve.shares_held_nano} nano {symbol} shares, "
                                                     f"the withdrawal takes {qty}")
    reserve.shares_held_nano -= qty
    if ev["status"] == "IN_TRANSIT":
        reserve.in_transit_refs[ref] = -qty
        out.post(chart.custodian(symbol), chart.custodian_in_transit(symbol), asset, qty)
    else:
        out.post(chart.custodian(symbol), chart.custody_external(symbol), asset, qty)


def _shares_needed(supply_nano: int, multiplier_nano: int) -> int:
    # Rounded up: the reserve must cover every fraction of a share the tokens claim.
    return -((-supply_nano * multiplier_nano) // NANO)


def apply_holding_statement(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    reserve = _reserve(state, ev["symbol"])
    if ev["avai_qty_nano"] + ev["navl_qty_nano"] != ev["aggr_qty_nano"] or min(
        ev["aggr_qty_nano"], ev["avai_qty_nano"], ev["navl_qty_nano"]
    ) < 0:
        raise Rejected(reasons.INVALID_STATEMENT, "AVAI + NAVL must equal AGGR, all >= 0")
    if ev["isin"] != reserve.isin:
        raise Rejected(reasons.INVALID_STATEMENT, f"ISIN {ev['isin']} does not match {reserve.symbol}'s {reserve.isin}")
    key = ev["safekeeping_account"]
    current = reserve.statements.get(key)
    if ev["function"] == "CANCEL":
        if current is None or current.statement_ref != ev["statement_ref"]:
            raise Rejected(reasons.INVALID_STATEMENT, f"cancel of unknown statement {ev['statement_ref']}")
        del reserve.statements[key]
        return
    if current is not None and ev["statement_number"] <= current.statement_number:
        raise Rejected(reasons.INVALID_STATEMENT, f"statement {ev['statement_number']} is not newer than {current.statement_number}")
    reserve.statements[key] = Statement(
        ev["statement_ref"], ev["statement_number"], ev["as_of"], ev["aggr_qty_nano"], ev["avai_qty_nano"], ev["navl_qty_nano"]
    )


def apply_corporate_action(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    reserve = _reserve(state, ev["symbol"])
    if ev["action_ref"] in reserve.corporate_actions:
        raise Rejected(reasons.MALFORMED, f"corporate action {ev['action_ref']} already applied")
    activation = ev["activation_time"]
    if activation < reserve.multipliers[-1][0]:
        raise Rejected(reasons.MALFORMED, "corporate actions must activate in time order")
    base = reserve.multipliers[-1][1]
    kind = ev["kind"]
    if kind in ("SPLIT", "REVERSE_SPLIT"):
        num, den = ev["ratio_num"], ev["ratio_den"]
        if num <= 0 or den <= 0 or (kind == "SPLIT") != (num > den):
            raise Rejected(reasons.MALFORMED, f"{kind} ratio {num}/{den} is not valid")
        new = base * num // den  # floor: the token claims no more shares than the action grants
    else:
        div, price, wh = ev["dividend_micro_usd_per_share"], ev["reference_price_micro_usd"], ev["withholding_ppm"]
        if div <= 0 or price <= 0 or not 0 <= wh < PPM:
            raise Rejected(reasons.NON_POSITIVE_AMOUNT, "dividend and reference price must be > 0")
        net_div = div * (PPM - wh) // PPM
        # Net dividend reinvested in shares: multiplier x (1 + net_div / price), rounded down.
        new = base * (price + net_div) // price
    # Bounded below, a floored multiplier loses at most 1e-6 of itself and never reaches 0 (tokens
    # backed by no share); bounded above, what it multiplies stays representable.
    if not limits.MULTIPLIER_MIN_NANO <= new <= limits.MULTIPLIER_MAX_NANO:
        raise Rejected(reasons.BEYOND_LIMIT, f"{kind} would make the multiplier {new} nano shares per token, outside "
                                             f"[{limits.MULTIPLIER_MIN_NANO}, {limits.MULTIPLIER_MAX_NANO}]")
    held_after = reserve.shares_held_nano * new // base
    limits.require_within(held_after + reserve.shares_in_transit_nano, limits.RESERVE_MAX_NANO,
                          f"{reserve.symbol}'s custodian holding (held + in transit, nano)")
    reserve.multipliers.append((activation, new))
    reserve.corporate_actions[ev["action_ref"]] = activation
    # The pause window opens: until an open-market mark at or after the activation carries the new
    # multiplier, the oracle's price and multiplier may disagree, so the symbol counts with the closed-market
    # add-on (ledger.risk) and takes no LP flow (ledger.pool). The add-on stepped up: re-value who did not budget it.
    was_paused = reserve.paused_for_activation_us is not None
    reserve.paused_for_activation_us = activation
    state.counters.count("pause_window")
    price = state.prices.get(reserve.symbol)
    if not was_paused and price is not None and price.market_status == "OPEN":
        recheck_step_exposed(state.surveillance, reserve.symbol, state.surveillance.pending)
    # The custodian's holding changes by the same factor (a split delivers new shares, a reinvested
    # dividend buys them), so the reserve keeps covering supply x multiplier. Booked when the action is
    # recorded; the custodian's next statement confirms it and reconciliation flags any difference.
    out.post(chart.custody_external(reserve.symbol), chart.custodian(reserve.symbol), chart.share_asset(reserve.symbol),
             held_after - reserve.shares_held_nano)
    reserve.shares_held_nano = held_after


def _account(state: LedgerState, account: str) -> AccountState:
    acct = state.accounts.get(account)
    if acct is None:
        acct = AccountState(account=account)
        state.accounts[account] = acct
    return acct


def apply_mint_request(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    symbol, qty, account = ev["symbol"], ev["qty_nano"], ev["account"]
    reserve = _reserve(state, symbol)
    _positive(qty, "qty_nano")
    t = ev["occurred_at"]
    # Tokens minted now claim every multiplier recorded from their effective time on (a request dated
    # before a recorded split still yields post-split tokens): check against the largest of them.
    mult = max([reserve.multiplier_at(t)] + [m for activation, m in reserve.multipliers if activation > t])
    needed = _shares_needed(reserve.supply_nano + qty, mult)
    inputs = {
        "shares_held_nano": reserve.shares_held_nano,
        "supply_nano": reserve.supply_nano,
        "multiplier_nano": mult,
        "qty_nano": qty,
        "shares_needed_nano": needed,
    }
    limits.require_within(reserve.supply_nano + qty, limits.RESERVE_MAX_NANO, f"{symbol}'s token supply (nano)")
    limits.require_fits(inputs)
    if needed > reserve.shares_held_nano:
        raise Rejected(
            reasons.INSUFFICIENT_RESERVE,
            f"(supply {reserve.supply_nano} + {qty}) x multiplier {mult} needs {needed} shares, custodian holds {reserve.shares_held_nano}",
            inputs,
        )
    reserve.supply_nano += qty
    acct = _account(state, account)
    acct.wallet_nano[symbol] = acct.wallet_nano.get(symbol, 0) + qty
    out.post(chart.supply(symbol), chart.wallet(account, symbol), symbol, qty)
    out.emit("RequestOutcome", request_outcome(ev, "MINT", symbol, None, inputs))


def apply_burn(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    symbol, qty = ev["symbol"], ev["qty_nano"]
    reserve = _reserve(state, symbol)
    _positive(qty, "qty_nano")
    acct = state.accounts.get(ev["account"])
    if acct is None:
        raise Rejected(reasons.UNKNOWN_ACCOUNT, f"account {ev['account']!r} has no balances")
    held = acct.wallet_nano.get(symbol, 0)
    if held < qty:
        raise Rejected(reasons.INSUFFICIENT_BALANCE, f"wallet holds {held} {symbol}, burn needs {qty}")
    acct.wallet_nano[symbol] = held - qty
    reserve.supply_nano -= qty
    out.post(chart.wallet(ev["account"], symbol), chart.supply(symbol), symbol, qty)


def apply_supply_observation(state: LedgerState, ev: dict[str, Any], out: Outcome) -> None:
    reserve = _reserve(state, ev["symbol"])
    if ev["supply_qty_nano"] < 0:
        raise Rejected(reasons.MALFORMED, "observed supply is negative")
    if ev["block_number"] < reserve.observed_block:
        raise Rejected(reasons.MALFORMED, f"block {ev['block_number']} is older than {reserve.observed_block}")
    reserve.observed_supply_nano = ev["supply_qty_nano"]
    reserve.observed_block = ev["block_number"]


def request_outcome(
    ev: dict[str, Any], kind: str, key: str, reason: str | None, inputs: dict[str, int]
) -> dict[str, Any]:
    """The answer to a request, with its deterministic id and every input it used."""
    return {
        "event_id": derived_event_id("outcome", ev["event_id"]),
        "occurred_at": ev["occurred_at"],
        "source": "stockledger",
        "request_event_id": ev["event_id"],
        "request_kind": kind,
        "key": key,
        "decision": "APPROVED" if reason is None else "REJECTED",
        "reason": reason,
        "inputs": dict(inputs),
    }
