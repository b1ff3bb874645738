"""The rows of the Faust worker's published tables: one account's balances, the pools' figures, and which changed."""

from __future__ import annotations

from typing import Any

from ledger.risk import pool_model_value_micro_usd, pool_nav_micro_usd, share_value_micro_usd_per_share
from ledger.state import AccountState, LedgerState
from streams.step import StepResult

MAIN_POOL = "main"
_USER_KINDS = (":wallet:", ":margin:")


def account_row(acct: AccountState, next_offset: int, at_us: int) -> dict[str, Any]:
    """An AccountCollateral record: the balances the fold holds for one account."""
    return {
        "event_id": f"collateral:{acct.account}:{next_offset}", "occurred_at": at_us, "source": "stockledger",
        "account": acct.account, "next_sequenced_offset": next_offset,
        "margin_nano": {s: q for s, q in acct.margin_nano.items() if q}, "wallet_nano": {s: q for s, q in acct.wallet_nano.items() if q},
        "cash_micro_usd": acct.cash_micro_usd,
        "positions_nano": {s: p.volume_nano for s, p in acct.positions.items() if p.volume_nano},
        "lp_shares_nano": acct.lp_shares_nano, "liquidations": acct.liquidations,
    }


def pool_row(state: LedgerState, next_offset: int, at_us: int) -> dict[str, Any]:
    """A PoolState record: the main pool (with its NAV and share value) and the insurance pool behind it."""
    pool = state.pool
    nav = pool_nav_micro_usd(state)
    return {
        "event_id": f"pool:{MAIN_POOL}:{next_offset}", "occurred_at": at_us, "source": "stockledger", "pool": MAIN_POOL,
        "next_sequenced_offset": next_offset, "tokens_nano": {s: q for s, q in pool.tokens_nano.items() if q},
        "cash_micro_usd": pool.cash_micro_usd, "shares_nano": pool.shares_nano, "nav_micro_usd": nav,
        "share_value_micro_usd": share_value_micro_usd_per_share(pool, nav),
        "insurance_tokens_nano": {s: q for s, q in pool.insurance_tokens_nano.items() if q},
        "insurance_cash_micro_usd": pool.insurance_cash_micro_usd,
        "bad_debt_socialised_micro_usd": pool.bad_debt_socialised_micro_usd,
        "bad_debt_insurance_micro_usd": pool.bad_debt_insurance_micro_usd,
        "model_value_micro_usd": pool_model_value_micro_usd(state), "usd_raised_micro_usd": pool.usd_raised_micro_usd,
        "usd_paid_in_micro_usd": pool.usd_paid_in_micro_usd, "usd_paid_out_micro_usd": pool.usd_paid_out_micro_usd,
        "usd_on_hand_micro_usd": pool.usd_on_hand_micro_usd,
    }


def _accounts_in(name: str, accounts: dict[str, AccountState]) -> list[str]:
    """The account(s) a chart name 'user:<account>:wallet|margin:<asset>' or 'user:<account>:lp' belongs to.

    Account ids and symbols may themselves hold ':', so every split is tried against the known accounts
    (publishing one account too many is harmless; missing one is not).
    """
    if not name.startswith("user:"):
        return []
    rest = name[5:]
    found = [rest[:-3]] if rest.endswith(":lp") and rest[:-3] in accounts else []
    for kind in _USER_KINDS:
        at = rest.find(kind)
        while at > 0:
            if rest[:at] in accounts:
                found.append(rest[:at])
            at = rest.find(kind, at + 1)
    return found


def touched(state: LedgerState, result: StepResult, accounts: set[str]) -> bool:
    """Add the accounts whose balances one step may have changed to `accounts`; True when the step was applied.

    A step changes an account only through postings or on the account it names (a trade moves
    positions); emitted events name the accounts a liquidation touched. The pool's figures (its NAV
    moves with every mark, trade and funding accrual) are re-published after any applied step: one row,
    computed at most once per publish interval.
    """
    out = result.outcome
    if out.rejection is not None or out.duplicate:
        return False
    known = state.accounts
    if result.record is not None and isinstance(result.record.get("account"), str):
        accounts.add(result.record["account"])
    for _, em in out.emitted:
        acct = em.get("account")
        if isinstance(acct, str) and acct in known:
            accounts.add(acct)
    for p in out.postings:
        accounts.update(_accounts_in(p.debit_account, known))
        accounts.update(_accounts_in(p.credit_account, known))
    return True
