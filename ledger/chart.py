"""Chart of accounts and asset names; the only place account strings are spelled."""

from __future__ import annotations

USD = "USD"
POOL_SHARE = "LP:main"


def share_asset(symbol: str) -> str:
    """Shares held at the custodian are a different asset from the tokens that represent them."""
    return f"SH:{symbol}"


def custody_external(symbol: str) -> str:
    return f"external:custody:{symbol}"


def custodian(symbol: str) -> str:
    return f"custodian:{symbol}"


def custodian_in_transit(symbol: str) -> str:
    """Clearing account: must return to zero once every in-transit movement settles."""
    return f"custodian:{symbol}:in_transit"


def supply(symbol: str) -> str:
    return f"supply:{symbol}"


def wallet(account: str, asset: str) -> str:
    return f"user:{account}:wallet:{asset}"


def margin(account: str, asset: str) -> str:
    return f"user:{account}:margin:{asset}"


def lp_shares(account: str) -> str:
    return f"user:{account}:lp"


def pool_main(asset: str) -> str:
    return f"pool:main:{asset}"


def pool_shares_issued() -> str:
    return "pool:main:shares_issued"


def pool_insurance(asset: str) -> str:
    return f"pool:insurance:{asset}"


def usd_raised() -> str:
    """USD that came into the venue from selling the shares behind redeemed pool tokens (ledger.settlement)."""
    return "external:settlement:USD"


def usd_paid_out() -> str:
    """The venue's bank account for users' USD: withdrawals leave through it, USD deposits come in through it."""
    return "external:bank:USD"


def is_user_account(name: str) -> bool:
    return name.startswith("user:")
