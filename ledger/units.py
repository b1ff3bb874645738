"""Fixed-point units and the one rounding rule: always in the venue's favour, never the user's.

Quantities of tokens, shares, pool shares and option contracts are in nano-units (1e-9).
USD values and prices are in micro-USD (1e-6); cumulative funding in pico-USD (1e-12) per contract.
Ratios are in parts per million (ppm); the shares-per-token multiplier is in nano (1e9 = 1.0).
Times are integer microseconds since the Unix epoch.

Rounding: every division names its direction. What a user receives or is credited with is
rounded down (floor); what a user pays, owes or must hold as margin is rounded up (ceil).
"""

from __future__ import annotations

NANO = 1_000_000_000
MICRO = 1_000_000
PICO_PER_MICRO = 1_000_000
PPM = 1_000_000
MULTIPLIER_ONE_NANO = NANO
SECOND_US = 1_000_000
DAY_US = 86_400 * SECOND_US


def div_floor(numerator: int, denominator: int) -> int:
    """Floor division (towards minus infinity): for amounts a user receives."""
    return numerator // denominator


def div_ceil(numerator: int, denominator: int) -> int:
    """Ceiling division: for amounts a user pays or must hold."""
    return -((-numerator) // denominator)


def token_value_micro_usd_floor(qty_nano: int, price_micro_usd: int, multiplier_nano: int) -> int:
    """Value of tokens (qty x shares-per-token x price), rounded down: what the holder is credited."""
    return (qty_nano * multiplier_nano * price_micro_usd) // (NANO * NANO)


def tokens_for_value_nano_ceil(value_micro_usd: int, price_micro_usd: int, multiplier_nano: int) -> int:
    """Tokens worth a USD value, rounded up: what is taken from a user to cover a debt."""
    return div_ceil(value_micro_usd * NANO * NANO, multiplier_nano * price_micro_usd)


def tokens_for_value_nano_floor(value_micro_usd: int, price_micro_usd: int, multiplier_nano: int) -> int:
    """Tokens worth a USD value, rounded down: what is paid out to a user."""
    return (value_micro_usd * NANO * NANO) // (multiplier_nano * price_micro_usd)


def apply_ppm_floor(value: int, ppm: int) -> int:
    """value x ppm / 1e6, rounded down."""
    return (value * ppm) // PPM


def apply_ppm_ceil(value: int, ppm: int) -> int:
    """value x ppm / 1e6, rounded up."""
    return div_ceil(value * ppm, PPM)
