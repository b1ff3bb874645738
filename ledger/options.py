"""Everlasting-option math (DESIGN.md section 5): pure, deterministic, integer fixed point.

No floats anywhere, no I/O, no clock.  Transcendental functions (sqrt, ln, exp) run in Python's
``decimal`` module under one module-private, fixed ``Context`` (prec=40, ROUND_HALF_EVEN, traps on
InvalidOperation / DivisionByZero / Overflow), which libmpdec evaluates identically on every
platform; everything else is exact integer arithmetic.  Every public function returns ``int``.

Units (always part of the name):
  * ``*_micro_usd``   prices and money, 1 USD = 1_000_000
  * ``*_nano``        sizes / volumes in nano-contracts, 1 contract = NANO = 1_000_000_000
  * ``sigma_ppm``     annualised volatility, 1_000_000 = 100 %/year
  * ``*_ppm``         ratios, 1_000_000 = 1
  * ``funding_period_s`` the funding period T in seconds; a year is 365 days (YEAR_S)
  * ``dt_us``         time deltas in microseconds
  * ``*_wad``         dimensionless reals scaled by WAD = 10**18
  * funding index     micro-USD per contract scaled by WAD (``*_micro_usd_wad``)
Option kind: the strings "CALL" / "PUT".

Rounding (the one place it is documented for this module):
  * ``time_value_micro_usd`` (V): UP (ceiling), and never below 1 micro-USD: V is strictly positive
    in exact math (a decimal underflow for absurd inputs cannot make an option free).
    Hence ``theoretical_price = intrinsic + V`` >= intrinsic + 1.
  * ``u_wad``: half-even (informational; internal math uses the unrounded u).
  * ``delta_wad``: AWAY FROM ZERO (call: ceiling, put: floor), so |delta| is never understated
    (conservative for margin and for the DPMM spread); call in [1, WAD], put in [-WAD, -1].
  * ``pool_mark_micro_usd``: half-even, then clamped at >= 0.
  * ``trade_cost_micro_usd``: ceiling of the signed cost, i.e. against the trader (a buyer pays
    a little more, a seller receives a little less).
  * ``funding_index_delta_micro_usd_wad``: half-even (error <= 0.5e-18 micro-USD per contract).
  * ``funding_owed_micro_usd``: ceiling of the signed amount owed (a long pays rounded up, a short
    receives rounded down), i.e. against the user.
  * ``maintenance_margin_micro_usd`` / ``initial_margin_micro_usd``: UP (ceiling).
  * ``mul_nano_ceil`` / ``mul_nano_floor``: as named.
Intermediate transcendental results are never rounded to integers before the final quantisation;
margin uses the unrounded V and delta.

Inputs are validated cheaply and raise ``ValueError`` on a programming error (the fold rejects bad
events before calling).  ``pool_mark_micro_usd`` / ``trade_cost_micro_usd`` never raise for a pool
with no liquidity: see ``_lean_coefficient``.
"""

from __future__ import annotations

from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from fractions import Fraction
from functools import lru_cache
from math import isqrt

__all__ = [
    "CALL",
    "PUT",
    "WAD",
    "NANO",
    "PPM",
    "MICRO_USD",
    "YEAR_S",
    "u_wad",
    "time_value_micro_usd",
    "intrinsic_micro_usd",
    "theoretical_price_micro_usd",
    "delta_wad",
    "pool_mark_micro_usd",
    "trade_cost_micro_usd",
    "funding_index_delta_micro_usd_wad",
    "funding_owed_micro_usd",
    "maintenance_margin_micro_usd",
    "initial_margin_micro_usd",
    "mul_nano_ceil",
    "mul_nano_floor",
    "series_figures",
    "slope_bound_ppm",
    "local_slope_bound_ppm",
    "local_slope_parts_ppm",
    "time_value_cap_micro_usd",
    "stressed_figures",
    "time_value_slope_ppm",
]

CALL = "CALL"
PUT = "PUT"
WAD = 10**18
NANO = 10**9  # nano-contracts per contract
PPM = 10**6
MICRO_USD = 10**6  # micro-USD per USD
YEAR_S = 365 * 24 * 3600
US_PER_S = 10**6

_CTX = Context(
    prec=40,
    rounding=ROUND_HALF_EVEN,
    Emax=999_999,
    Emin=-999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)
_D0 = Decimal(0)
_D1 = Decimal(1)
_D2 = Decimal(2)
_D8 = Decimal(8)
_DWAD = Decimal(WAD)
_KINDS = (CALL, PUT)
# 8 / (sigma^2 * T_years) = _EIGHT_NUM / (sigma_ppm^2 * funding_period_s), exactly.
_EIGHT_NUM = 8 * PPM * PPM * YEAR_S


# ----------------------------------------------------------------------------- validation helpers


def _check_int(name: str, value: object) -> None:
    if type(value) is not int:
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")


def _check_pos(name: str, value: object) -> None:
    if type(value) is not int or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_nonneg(name: str, value: object) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def _check_kind(kind: object) -> None:
    if kind not in _KINDS:
        raise ValueError(f"kind must be 'CALL' or 'PUT', got {kind!r}")


def _check_market(spot_micro_usd: int, strike_micro_usd: int, sigma_ppm: int, funding_period_s: int) -> None:
    _check_pos("spot_micro_usd", spot_micro_usd)
    _check_pos("strike_micro_usd", strike_micro_usd)
    _check_pos("sigma_ppm", sigma_ppm)
    _check_pos("funding_period_s", funding_period_s)


def _ceil_div(num: int, den: int) -> int:
    return -((-num) // den)


def _half_even_div(num: int, den: int) -> int:
    """Integer num/den rounded half-even (den > 0)."""
    q, r = divmod(num, den)
    twice = 2 * r
    if twice > den or (twice == den and q & 1):
        q += 1
    return q


def _to_int(value: Decimal, rounding: str) -> int:
    return int(value.to_integral_value(rounding=rounding, context=_CTX))


# ----------------------------------------------------------------------------- Decimal core (cached)


@lru_cache(maxsize=1024)
def _u_parts(sigma_ppm: int, funding_period_s: int) -> tuple[Decimal, Decimal]:
    """(u, u^2 - 1) as Decimals for one (sigma, period); u^2 - 1 = 8/(sigma^2 T_years) exactly."""
    u2m1 = _CTX.divide(Decimal(_EIGHT_NUM), Decimal(sigma_ppm * sigma_ppm * funding_period_s))
    u = _CTX.sqrt(_CTX.add(u2m1, _D1))
    return u, u2m1


@lru_cache(maxsize=16384)
def _ln_exact(n: int) -> Decimal:
    """Natural log of a positive int under the module context (correctly rounded, cached)."""
    return Decimal(n).ln(_CTX)


_LN_TOP_BITS = 11
_LN_SERIES_EPS = Decimal("1e-46")


@lru_cache(maxsize=4096)
def _ln(n: int) -> Decimal:
    """Natural log of a positive int: ln(n0) + 2 atanh((n - n0)/(n + n0)), n0 = n's top 11 bits.

    Every new oracle spot needs one ln, and libmpdec's ln costs about ten times this: ln(n0) comes
    from a small cache (spots share their top bits) and the series, with |z| <= 2^-12, reaches 1e-46
    in at most seven terms. Deterministic like the rest (one fixed context); within a few units of the
    40th digit of the correctly rounded value, far below a micro-USD of any price (tested).
    """
    shift = n.bit_length() - _LN_TOP_BITS
    if shift <= 0:
        return _ln_exact(n)
    n0 = (n >> shift) << shift
    base = _ln_exact(n0)
    if n0 == n:
        return base
    z = _CTX.divide(Decimal(n - n0), Decimal(n + n0))
    z2 = _CTX.multiply(z, z)
    total, power, k = z, z, 1
    while True:
        power = _CTX.multiply(power, z2)
        k += 2
        term = _CTX.divide(power, Decimal(k))
        if term < _LN_SERIES_EPS:
            break
        total = _CTX.add(total, term)
    return _CTX.add(base, _CTX.multiply(_D2, total))


@lru_cache(maxsize=4096)
def _strike_consts(ctx: Context, strike_micro_usd: int, sigma_ppm: int, funding_period_s: int) -> tuple[Decimal, Decimal, Decimal]:
    """(K/u, exponent at or above the strike (1 - u)/2, below it (1 + u)/2) under ctx for one (strike, sigma, period).

    They do not move with the spot, so a new spot pays for its ln and exp only (the same operations in the
    same context as computing them afresh: the figures are identical). ctx: _CTX, or _CTX_STRESS for the
    stressed figures (both module singletons, so keying on them is keying on the precision).
    """
    u, _ = _u_parts(sigma_ppm, funding_period_s)
    return ctx.divide(Decimal(strike_micro_usd), u), ctx.divide(ctx.subtract(_D1, u), _D2), ctx.divide(ctx.add(_D1, u), _D2)


@lru_cache(maxsize=8192)
def _core(
    spot_micro_usd: int, strike_micro_usd: int, sigma_ppm: int, funding_period_s: int
) -> tuple[Decimal, Decimal]:
    """(V in micro-USD, dV/dS) as unrounded Decimals: at most one exp and two (cached) ln per call."""
    k_over_u, above, below = _strike_consts(_CTX, strike_micro_usd, sigma_ppm, funding_period_s)
    if spot_micro_usd == strike_micro_usd:  # S >= K branch
        return k_over_u, _CTX.divide(_CTX.multiply(above, k_over_u), Decimal(strike_micro_usd))
    exponent = above if spot_micro_usd > strike_micro_usd else below
    # ln(S/K) = ln S - ln K, each cached: one price event moves S for every strike of an underlying,
    # so a series update costs one exp (the ln of the new spot is shared across strikes).
    log_ratio = _CTX.subtract(_ln(spot_micro_usd), _ln(strike_micro_usd))
    # exponent * ln(S/K) <= 0 on both branches, so exp never overflows (it may underflow to 0).
    value = _CTX.multiply(k_over_u, _CTX.multiply(exponent, log_ratio).exp(_CTX))
    # d/dS [(K/u)(S/K)^a] = a * V / S
    return value, _CTX.divide(_CTX.multiply(exponent, value), Decimal(spot_micro_usd))


def _delta_dec(kind: str, spot_micro_usd: int, strike_micro_usd: int, dv_ds: Decimal) -> Decimal:
    if kind == CALL:
        return _CTX.add(_D1, dv_ds) if spot_micro_usd >= strike_micro_usd else dv_ds
    return dv_ds if spot_micro_usd >= strike_micro_usd else _CTX.subtract(dv_ds, _D1)


def _mm_dec(
    kind: str, spot_micro_usd: int, strike_micro_usd: int, sigma_ppm: int, funding_period_s: int, mmr_ppm: int
) -> Decimal:
    value, dv_ds = _core(spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s)
    _, u2m1 = _u_parts(sigma_ppm, funding_period_s)
    return _mm_of(value, _delta_dec(kind, spot_micro_usd, strike_micro_usd, dv_ds), spot_micro_usd, u2m1, mmr_ppm)


@lru_cache(maxsize=64)
def _mmr_parts(mmr_ppm: int) -> tuple[Decimal, Decimal]:
    """(mmr, mmr^2) as Decimals."""
    mmr = _CTX.divide(Decimal(mmr_ppm), Decimal(PPM))
    return mmr, _CTX.multiply(mmr, mmr)


def _mm_of(value: Decimal, delta: Decimal, spot_micro_usd: int, u2m1: Decimal, mmr_ppm: int) -> Decimal:
    """Deri's MM per contract, unrounded: |delta| S mmr + (u^2 - 1)/8 V mmr^2."""
    mmr, mmr2 = _mmr_parts(mmr_ppm)
    term_delta = _CTX.multiply(_CTX.multiply(delta.copy_abs(), Decimal(spot_micro_usd)), mmr)
    term_gamma = _CTX.multiply(_CTX.divide(_CTX.multiply(u2m1, value), _D8), mmr2)
    return _CTX.add(term_delta, term_gamma)


# ----------------------------------------------------------------------------- pricing


def u_wad(sigma_ppm: int, funding_period_s: int) -> int:
    """u = sqrt(1 + 8/(sigma^2 T_years)) as a WAD int, rounded half-even."""
    _check_pos("sigma_ppm", sigma_ppm)
    _check_pos("funding_period_s", funding_period_s)
    u, _ = _u_parts(sigma_ppm, funding_period_s)
    return _to_int(_CTX.multiply(u, _DWAD), ROUND_HALF_EVEN)


def time_value_micro_usd(
    spot_micro_usd: int, strike_micro_usd: int, sigma_ppm: int, funding_period_s: int
) -> int:
    """Deri time value V (same for call and put) in micro-USD per contract, rounded UP, >= 1."""
    _check_market(spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s)
    value, _ = _core(spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s)
    return max(1, _to_int(value, ROUND_CEILING))


def intrinsic_micro_usd(kind: str, spot_micro_usd: int, strike_micro_usd: int) -> int:
    """Intrinsic value max(S-K,0) (CALL) / max(K-S,0) (PUT) in micro-USD per contract, exact."""
    _check_kind(kind)
    _check_pos("spot_micro_usd", spot_micro_usd)
    _check_pos("strike_micro_usd", strike_micro_usd)
    diff = spot_micro_usd - strike_micro_usd if kind == CALL else strike_micro_usd - spot_micro_usd
    return diff if diff > 0 else 0


def theoretical_price_micro_usd(
    kind: str, spot_micro_usd: int, strike_micro_usd: int, sigma_ppm: int, funding_period_s: int
) -> int:
    """Theoretical price = intrinsic + V in micro-USD per contract (V rounded UP, so >= intrinsic + 1)."""
    _check_kind(kind)
    _check_market(spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s)
    value, _ = _core(spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s)
    diff = spot_micro_usd - strike_micro_usd if kind == CALL else strike_micro_usd - spot_micro_usd
    return (diff if diff > 0 else 0) + max(1, _to_int(value, ROUND_CEILING))


def delta_wad(
    kind: str, spot_micro_usd: int, strike_micro_usd: int, sigma_ppm: int, funding_period_s: int
) -> int:
    """Signed dTheo/dS as WAD, rounded away from zero: CALL in [1, WAD], PUT in [-WAD, -1]."""
    _check_kind(kind)
    _check_market(spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s)
    _, dv_ds = _core(spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s)
    return _round_delta(kind, _delta_dec(kind, spot_micro_usd, strike_micro_usd, dv_ds))


def _round_delta(kind: str, delta: Decimal) -> int:
    """Delta as WAD, away from zero: CALL in [1, WAD], PUT in [-WAD, -1]."""
    scaled = _CTX.multiply(delta, _DWAD)
    if kind == CALL:
        return min(WAD, max(1, _to_int(scaled, ROUND_CEILING)))
    return max(-WAD, min(-1, _to_int(scaled, ROUND_FLOOR)))


# ----------------------------------------------------------------------------- pool (DPMM)


def _lean_coefficient(
    theo_micro_usd: int, spot_micro_usd: int, delta_wad: int, alpha_ppm: int, liquidity_micro_usd: int
) -> tuple[int, int]:
    """(P, Q) with theo*k per nano-contract = P/Q micro-USD, so mark(n) = theo + P*n/Q.

    Deri: k = S^2/theo * |delta| * alpha / liquidity (per contract); theo cancels in theo*k, so
    P/Q = S^2 |delta| alpha / liquidity, exact in integers (no division by theo).
    Documented cap: when liquidity_micro_usd <= 0 (empty / drained pool) k is taken as alpha per
    contract (mark = theo * (1 + alpha * N_contracts)), i.e. as if the pool held exactly
    S^2 |delta| / theo of liquidity; no division by zero and no exception inside the fold.
    """
    if liquidity_micro_usd > 0:
        p = spot_micro_usd * spot_micro_usd * abs(delta_wad) * alpha_ppm
        return p, liquidity_micro_usd * WAD * PPM * NANO
    return theo_micro_usd * alpha_ppm, PPM * NANO


def _check_pool(
    theo_micro_usd: int, spot_micro_usd: int, delta: int, alpha_ppm: int, liquidity_micro_usd: int
) -> None:
    _check_nonneg("theo_micro_usd", theo_micro_usd)
    _check_pos("spot_micro_usd", spot_micro_usd)
    _check_int("delta_wad", delta)
    if not -WAD <= delta <= WAD:
        raise ValueError(f"delta_wad must be within [-WAD, WAD], got {delta}")
    _check_nonneg("alpha_ppm", alpha_ppm)
    _check_int("liquidity_micro_usd", liquidity_micro_usd)


def pool_mark_micro_usd(
    theo_micro_usd: int,
    spot_micro_usd: int,
    delta_wad: int,
    alpha_ppm: int,
    liquidity_micro_usd: int,
    net_volume_nano: int,
) -> int:
    """DPMM mark = theo*(1 + k*N) in micro-USD per contract, half-even, clamped at >= 0 (N = traders' net, >0 long)."""
    _check_pool(theo_micro_usd, spot_micro_usd, delta_wad, alpha_ppm, liquidity_micro_usd)
    _check_int("net_volume_nano", net_volume_nano)
    p, q = _lean_coefficient(theo_micro_usd, spot_micro_usd, delta_wad, alpha_ppm, liquidity_micro_usd)
    mark = _half_even_div(theo_micro_usd * q + p * net_volume_nano, q)
    return mark if mark > 0 else 0


def trade_cost_micro_usd(
    theo_micro_usd: int,
    spot_micro_usd: int,
    delta_wad: int,
    alpha_ppm: int,
    liquidity_micro_usd: int,
    net_volume_nano: int,
    trade_volume_nano: int,
) -> int:
    """Signed cost theo*(dV + k((N+dV)^2-N^2)/2) in micro-USD (>0: trader pays), ceiling (against the trader).

    The cost is the exact integral of the (clamped at >= 0) mark over the traders' net volume from
    N to N+dV, so it equals Deri's formula whenever the mark stays >= 0 along the trade, and a
    trader never pays to sell (nor is paid to buy) in a region where the clamp binds.
    """
    _check_pool(theo_micro_usd, spot_micro_usd, delta_wad, alpha_ppm, liquidity_micro_usd)
    _check_int("net_volume_nano", net_volume_nano)
    _check_int("trade_volume_nano", trade_volume_nano)
    p, q = _lean_coefficient(theo_micro_usd, spot_micro_usd, delta_wad, alpha_ppm, liquidity_micro_usd)
    a = net_volume_nano
    b = net_volume_nano + trade_volume_nano
    tq = theo_micro_usd * q
    if tq + p * a >= 0 and tq + p * b >= 0:
        # Unclamped (common) case, exact in integers:
        # cost = [theo*(b-a) + P*(b^2-a^2)/(2Q)] / NANO
        num = 2 * tq * (b - a) + p * (b * b - a * a)
        return _ceil_div(num, 2 * q * NANO)
    # Clamped: mark(n) = theo + P n / Q hits 0 at n0 = -theo*Q/P (P > 0 here since theo*Q >= 0).
    n0 = Fraction(-tq, p)

    def antiderivative(n: int) -> Fraction:
        x = n if n > n0 else n0
        return theo_micro_usd * x + Fraction(p, 2 * q) * x * x

    cost_per_nano = antiderivative(b) - antiderivative(a)  # micro-USD * NANO
    return _ceil_div(cost_per_nano.numerator, cost_per_nano.denominator * NANO)


# ----------------------------------------------------------------------------- funding


def funding_index_delta_micro_usd_wad(
    mark_micro_usd: int, intrinsic_micro_usd: int, dt_us: int, funding_period_s: int
) -> int:
    """Increment of the cumulative funding index, (mark - intrinsic)*dt/T, in micro-USD*WAD per contract, half-even."""
    _check_int("mark_micro_usd", mark_micro_usd)
    _check_int("intrinsic_micro_usd", intrinsic_micro_usd)
    _check_nonneg("dt_us", dt_us)
    _check_pos("funding_period_s", funding_period_s)
    return _half_even_div((mark_micro_usd - intrinsic_micro_usd) * dt_us * WAD, funding_period_s * US_PER_S)


def funding_owed_micro_usd(
    volume_nano: int, cum_index_now_micro_usd_wad: int, cum_index_at_entry_micro_usd_wad: int
) -> int:
    """Funding owed by a position = volume*(cumF_now - cumF_entry) in micro-USD (>0: pays), ceiling (against the user)."""
    _check_int("volume_nano", volume_nano)
    _check_int("cum_index_now_micro_usd_wad", cum_index_now_micro_usd_wad)
    _check_int("cum_index_at_entry_micro_usd_wad", cum_index_at_entry_micro_usd_wad)
    return _ceil_div(
        volume_nano * (cum_index_now_micro_usd_wad - cum_index_at_entry_micro_usd_wad), NANO * WAD
    )


# ----------------------------------------------------------------------------- margin


def maintenance_margin_micro_usd(
    kind: str, spot_micro_usd: int, strike_micro_usd: int, sigma_ppm: int, funding_period_s: int, mmr_ppm: int
) -> int:
    """MM per contract = |delta|*S*mmr + (u^2-1)*V/8*mmr^2 in micro-USD, rounded UP (unrounded delta and V)."""
    _check_kind(kind)
    _check_market(spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s)
    _check_nonneg("mmr_ppm", mmr_ppm)
    mm = _mm_dec(kind, spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s, mmr_ppm)
    return _to_int(mm, ROUND_CEILING)


def initial_margin_micro_usd(
    kind: str,
    spot_micro_usd: int,
    strike_micro_usd: int,
    sigma_ppm: int,
    funding_period_s: int,
    mmr_ppm: int,
    imr_ppm: int,
    min_initial_margin_ratio_ppm: int,
) -> int:
    """IM per contract = max(S*min_imr, MM*imr/mmr) in micro-USD, rounded UP; needs 0 < mmr_ppm <= imr_ppm."""
    _check_kind(kind)
    _check_market(spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s)
    _check_pos("mmr_ppm", mmr_ppm)
    _check_pos("imr_ppm", imr_ppm)
    _check_nonneg("min_initial_margin_ratio_ppm", min_initial_margin_ratio_ppm)
    if imr_ppm < mmr_ppm:
        raise ValueError(f"imr_ppm ({imr_ppm}) must be >= mmr_ppm ({mmr_ppm}) so that IM >= MM")
    mm = _mm_dec(kind, spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s, mmr_ppm)
    return _im_from_mm(mm, spot_micro_usd, mmr_ppm, imr_ppm, min_initial_margin_ratio_ppm)


def _im_from_mm(mm: Decimal, spot_micro_usd: int, mmr_ppm: int, imr_ppm: int, min_initial_margin_ratio_ppm: int) -> int:
    """max(S x min_imr, MM x imr/mmr), rounded up."""
    im_from_mm = _CTX.divide(_CTX.multiply(mm, Decimal(imr_ppm)), Decimal(mmr_ppm))
    floor_num = spot_micro_usd * min_initial_margin_ratio_ppm  # exact: S*min_imr = floor_num / PPM
    return max(_ceil_div(floor_num, PPM), _to_int(im_from_mm, ROUND_CEILING))


# ----------------------------------------------------------------------------- size scaling


def mul_nano_ceil(per_contract_micro_usd: int, size_nano: int) -> int:
    """per_contract_micro_usd * size_nano / NANO in micro-USD, rounded UP (toward +inf)."""
    _check_int("per_contract_micro_usd", per_contract_micro_usd)
    _check_int("size_nano", size_nano)
    return _ceil_div(per_contract_micro_usd * size_nano, NANO)


def mul_nano_floor(per_contract_micro_usd: int, size_nano: int) -> int:
    """per_contract_micro_usd * size_nano / NANO in micro-USD, rounded DOWN (toward -inf)."""
    _check_int("per_contract_micro_usd", per_contract_micro_usd)
    _check_int("size_nano", size_nano)
    return (per_contract_micro_usd * size_nano) // NANO


# ----------------------------------------------------------------------------- one pass per series


def series_figures(
    kind: str,
    spot_micro_usd: int,
    strike_micro_usd: int,
    sigma_ppm: int,
    funding_period_s: int,
    mmr_ppm: int,
    imr_ppm: int,
    min_initial_margin_ratio_ppm: int,
) -> tuple[int, int, int, int, int]:
    """(intrinsic, theo, delta_wad, MM, IM) per contract in one pass, each exactly as its function above.

    The ledger values every position it re-checks at the latest oracle spot, so this is what a
    quote costs: one (cached) V and dV/dS shared by the call and the put of a strike, and one
    margin term shared by MM and IM, instead of four separate walks through the Decimal maths.
    """
    _check_kind(kind)
    _check_market(spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s)
    if not 0 < mmr_ppm <= imr_ppm or min_initial_margin_ratio_ppm < 0:
        raise ValueError("margin ratios need 0 < mmr_ppm <= imr_ppm and min_initial_margin_ratio_ppm >= 0")
    return series_figures_unchecked(kind, spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s, mmr_ppm, imr_ppm,
                                    min_initial_margin_ratio_ppm)


def series_figures_unchecked(kind: str, spot_micro_usd: int, strike_micro_usd: int, sigma_ppm: int, funding_period_s: int,
                             mmr_ppm: int, imr_ppm: int, min_initial_margin_ratio_ppm: int) -> tuple[int, int, int, int, int]:
    """series_figures without the argument checks, for ledger.quotes, whose arguments come from listed series and
    checked prices (a fresh quote is the fold's largest single cost: the checks were a tenth of it)."""
    value, dv_ds = _core(spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s)
    diff = spot_micro_usd - strike_micro_usd if kind == CALL else strike_micro_usd - spot_micro_usd
    intrinsic = diff if diff > 0 else 0
    theo = intrinsic + max(1, _to_int(value, ROUND_CEILING))
    delta_dec = _delta_dec(kind, spot_micro_usd, strike_micro_usd, dv_ds)
    mm = _mm_of(value, delta_dec, spot_micro_usd, _u_parts(sigma_ppm, funding_period_s)[1], mmr_ppm)
    im = _im_from_mm(mm, spot_micro_usd, mmr_ppm, imr_ppm, min_initial_margin_ratio_ppm)
    return intrinsic, theo, _round_delta(kind, delta_dec), _to_int(mm, ROUND_CEILING), im


# The stressed figures (a short's margin floor) only need an upper bound good to a micro-USD: computed under a
# shorter fixed context (24 digits: exp costs less than half of 40 digits) and rounded up with one unit to
# spare, so they never fall below the exact value; as deterministic as the main context.
_CTX_STRESS = Context(prec=24, rounding=ROUND_HALF_EVEN, Emax=999_999, Emin=-999_999,
                      traps=[InvalidOperation, DivisionByZero, Overflow])


def stressed_figures(kind: str, spot_micro_usd: int, strike_micro_usd: int, sigma_ppm: int, funding_period_s: int,
                     move_ppm: int, vol_shock_ppm: int) -> tuple[int, int, int, int]:
    """(stressed spot, stressed sigma, theo, delta_wad) after an adverse move for a *short* and a volatility shock.

    Adverse for a short call is a rise, for a short put a fall: spot x (1 +/- move), rounded up for a call,
    down for a put (never below 1); sigma x (1 + shock) rounded up. theo is an upper bound on the exact
    theoretical price there (rounded up, one micro-USD to spare), delta_wad is at least as far from zero
    as the exact delta (one wad to spare): both are only used as bounds.
    """
    _check_kind(kind)
    _check_market(spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s)
    return stressed_figures_unchecked(kind, spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s, move_ppm, vol_shock_ppm)


def stressed_figures_unchecked(kind: str, spot_micro_usd: int, strike_micro_usd: int, sigma_ppm: int, funding_period_s: int,
                               move_ppm: int, vol_shock_ppm: int) -> tuple[int, int, int, int]:
    """stressed_figures without the argument checks (for ledger.quotes, as series_figures_unchecked)."""
    if kind == CALL:
        spot = _ceil_div(spot_micro_usd * (PPM + move_ppm), PPM)
    else:
        spot = max(1, spot_micro_usd * (PPM - move_ppm) // PPM)
    sigma = _ceil_div(sigma_ppm * (PPM + vol_shock_ppm), PPM)
    k_over_u, at_or_above, below = _strike_consts(_CTX_STRESS, strike_micro_usd, sigma, funding_period_s)
    ctx = _CTX_STRESS
    exponent = at_or_above if spot >= strike_micro_usd else below
    value = ctx.multiply(k_over_u, ctx.multiply(exponent, ctx.subtract(_ln(spot), _ln(strike_micro_usd))).exp(ctx))
    dv_ds = ctx.divide(ctx.multiply(exponent, value), Decimal(spot))
    diff = spot - strike_micro_usd if kind == CALL else strike_micro_usd - spot
    theo = (diff if diff > 0 else 0) + max(1, int(value.to_integral_value(rounding=ROUND_CEILING, context=ctx)) + 1)
    delta = _round_delta(kind, _delta_dec(kind, spot, strike_micro_usd, dv_ds))
    delta = min(WAD, delta + 1) if kind == CALL else max(-WAD, delta - 1)
    return spot, sigma, theo, delta


@lru_cache(maxsize=1024)
def _move_factor(sigma_ppm: int, funding_period_s: int, move_ppm: int, above_strike: bool) -> Decimal:
    """(1 + move)^a with a = (1 - u)/2 above the strike, (1 + u)/2 below: V(S (1 + move)) = V(S) x this on one side."""
    u, _ = _u_parts(sigma_ppm, funding_period_s)
    exponent = _CTX.divide(_CTX.subtract(_D1, u) if above_strike else _CTX.add(_D1, u), _D2)
    base = _CTX.divide(Decimal(PPM + move_ppm), Decimal(PPM))
    return _CTX.multiply(exponent, base.ln(_CTX)).exp(_CTX)


def moved_theo_micro_usd(kind: str, spot_micro_usd: int, strike_micro_usd: int, sigma_ppm: int, funding_period_s: int,
                         move_ppm: int) -> int:
    """theo at spot x (1 + move_ppm / 1e6) (move > -1e6), spot rounded down for the intrinsic.

    V is a power of S on each side of the strike, V(S(1 + m)) = V(S) (1 + m)^a, so when the move stays on
    the spot's side it costs a multiplication of the spot's (cached) V by a cached factor instead of an ln
    and an exp (the pool's stress limit values every series at two moved spots at each trade); a move
    across the strike falls back to theoretical_price_micro_usd. Agrees with it to within a micro-USD.
    """
    moved = max(spot_micro_usd * (PPM + move_ppm) // PPM, 1)
    above = spot_micro_usd >= strike_micro_usd
    if above != (moved >= strike_micro_usd) or spot_micro_usd == strike_micro_usd:
        return theoretical_price_micro_usd(kind, moved, strike_micro_usd, sigma_ppm, funding_period_s)
    _check_kind(kind)
    _check_market(spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s)
    value, _ = _core(spot_micro_usd, strike_micro_usd, sigma_ppm, funding_period_s)
    try:
        value = _CTX.multiply(value, _move_factor(sigma_ppm, funding_period_s, move_ppm, above))
    except Overflow:
        # A move towards the strike multiplies V by (1 + m)^-|a|, which passes the context's range once u is in the
        # millions (a volatility x period far below any market's: 25 ppm on an hourly series); the direct formula
        # at the moved spot never overflows. Such inputs raised here before, so no recorded figure changes.
        return theoretical_price_micro_usd(kind, moved, strike_micro_usd, sigma_ppm, funding_period_s)
    diff = moved - strike_micro_usd if kind == CALL else strike_micro_usd - moved
    return (diff if diff > 0 else 0) + max(1, _to_int(value, ROUND_CEILING))


@lru_cache(maxsize=1024)
def _u_ppm_up(sigma_ppm: int, funding_period_s: int) -> int:
    """An integer strictly above u x 1e6 (for bounds that grow with u)."""
    den = sigma_ppm * sigma_ppm * funding_period_s
    return isqrt(_ceil_div((den + _EIGHT_NUM) * PPM * PPM, den)) + 1


@lru_cache(maxsize=1024)
def _window_factor_ppm(sigma_ppm: int, funding_period_s: int, window_ppm: int) -> int | None:
    """(1 - w)^(-(u+1)/2) x 1e6 rounded up: how much (S/K)^(a-1) (so V/S and S x gamma) can grow within +-w.

    None when that exceeds e^_WINDOW_EXPONENT_MAX (a volatility and period so low that u is in the thousands):
    the local bounds would then be above the global ones for any V >= 1 micro-USD and spot within the limits,
    so the callers use the global ones, as they would have; worked out, the power overflowed the context
    (an oracle volatility of 1 ppm on a one-hour series stopped the fold) or built a 700,000-digit integer.
    """
    u = _CTX.divide(Decimal(_u_ppm_up(sigma_ppm, funding_period_s)), Decimal(PPM))
    base = _CTX.divide(Decimal(PPM - window_ppm), Decimal(PPM))
    exponent = _CTX.divide(-(u + _D1), _D2)
    if _CTX.multiply(exponent, base.ln(_CTX)) > _WINDOW_EXPONENT_MAX:
        return None
    factor = _CTX.power(base, exponent)
    return _to_int(_CTX.multiply(factor, Decimal(PPM)), ROUND_CEILING) + 1


# e^60 ~ 1e26: with V/S >= 1e-12 / 1.4 (V >= 1 micro-USD, a spot within the limits, stressed by up to 40 %) the
# local V/S bound is then above 1e14 ppm, and every local slope far above its global bound.
_WINDOW_EXPONENT_MAX = Decimal(60)


def time_value_cap_micro_usd(strike_micro_usd: int, sigma_ppm: int, funding_period_s: int) -> int:
    """K/u rounded up: V's value at the strike, its largest over every spot (V/S = (S/K)^(a-1)/u peaks there)."""
    _check_pos("strike_micro_usd", strike_micro_usd)
    return _ceil_div(strike_micro_usd * PPM, _u_ppm_up(sigma_ppm, funding_period_s) - 1)


def local_slope_parts_ppm(spot_micro_usd: int, sigma_ppm: int, funding_period_s: int, mmr_ppm: int, time_value_micro_usd: int,
                          delta_wad: int, window_ppm: int) -> tuple[int, int]:
    """(|delta| bound, |dMM/dS| bound) in ppm per contract, for spots within +-window of this one.

    Within the window V/S (and so S x gamma = (u^2-1)/4 x V/S and |dV/dS| <= (u+1)/2 x V/S) grows by at
    most (1 - w)^(-(u+1)/2) (it is monotone on each side of the strike and peaks there); |delta| grows by
    at most w/(1-w) x the largest S x gamma. Far from the money this is many times below the global bound
    (slope_bound_parts_ppm), which is returned instead when it is lower. The parts are kept apart because
    theo moves a position one way only (a call's delta is >= 0, a put's <= 0 at every spot), while MM may
    rise on either side. time_value_micro_usd must not be below V (the quote's theo - intrinsic is).
    """
    den, factor, u_ppm = _window_consts(sigma_ppm, funding_period_s, window_ppm)  # u^2 - 1 = _EIGHT_NUM / den, exactly
    if factor is None:  # no local bound below the global one (_window_factor_ppm)
        return slope_bound_parts_ppm(sigma_ppm, funding_period_s, mmr_ppm)
    v_over_s_ppm = _ceil_div(time_value_micro_usd * PPM * factor, spot_micro_usd * PPM)  # V/S x F, ppm
    s_gamma_ppm = _ceil_div(_EIGHT_NUM * v_over_s_ppm, 4 * den)
    dv_ds_ppm = _ceil_div((u_ppm + PPM) * v_over_s_ppm, 2 * PPM)
    delta_ppm = min(PPM, _ceil_div(abs(delta_wad), WAD // PPM) + _ceil_div(window_ppm * s_gamma_ppm, PPM - window_ppm))
    mm_ppm = (_ceil_div(delta_ppm * mmr_ppm, PPM) + _ceil_div(mmr_ppm * s_gamma_ppm, PPM)
              + _ceil_div(mmr_ppm * mmr_ppm * _EIGHT_NUM * dv_ds_ppm, 8 * den * PPM * PPM))
    everywhere = slope_bound_parts_ppm(sigma_ppm, funding_period_s, mmr_ppm)
    return (delta_ppm, mm_ppm) if delta_ppm + mm_ppm <= everywhere[0] + everywhere[1] else everywhere


@lru_cache(maxsize=1024)
def _window_consts(sigma_ppm: int, funding_period_s: int, window_ppm: int) -> tuple[int, int | None, int]:
    """(sigma^2 T in ppm^2 s, the window factor, u_ppm rounded up) for the local slope bounds: one lookup per quote."""
    return sigma_ppm * sigma_ppm * funding_period_s, _window_factor_ppm(sigma_ppm, funding_period_s, window_ppm), _u_ppm_up(sigma_ppm, funding_period_s)


def time_value_slope_ppm(spot_micro_usd: int, sigma_ppm: int, funding_period_s: int, time_value_micro_usd: int,
                         window_ppm: int) -> int:
    """Bound in ppm on |dV/dS| per contract for spots within +-window of this one, never above 1 (PPM).

    |dV/dS| = |a| V/S <= (u+1)/2 x V/S, and V/S grows by at most the window factor within the window (as in
    local_slope_parts_ppm); everywhere V/S <= 1/u, so |dV/dS| <= (u+1)/(2u) <= 1. time_value_micro_usd must
    not be below V.
    """
    _, factor, u_ppm = _window_consts(sigma_ppm, funding_period_s, window_ppm)
    if factor is None:  # as local_slope_parts_ppm: the bound everywhere
        return PPM
    v_over_s_ppm = _ceil_div(time_value_micro_usd * PPM * factor, spot_micro_usd * PPM)
    return min(PPM, _ceil_div((u_ppm + PPM) * v_over_s_ppm, 2 * PPM))


def local_slope_bound_ppm(spot_micro_usd: int, sigma_ppm: int, funding_period_s: int, mmr_ppm: int, time_value_micro_usd: int,
                          delta_wad: int, window_ppm: int) -> int:
    """Bound on |d(theo - MM)/dS| per contract within +-window of this spot: the two parts together."""
    return sum(local_slope_parts_ppm(spot_micro_usd, sigma_ppm, funding_period_s, mmr_ppm, time_value_micro_usd, delta_wad, window_ppm))


@lru_cache(maxsize=1024)
def slope_bound_parts_ppm(sigma_ppm: int, funding_period_s: int, mmr_ppm: int) -> tuple[int, int]:
    """(|delta| bound, |dMM/dS| bound) in ppm over every spot: (1, slope_bound_ppm - 1)."""
    return PPM, slope_bound_ppm(sigma_ppm, funding_period_s, mmr_ppm) - PPM


@lru_cache(maxsize=1024)
def slope_bound_ppm(sigma_ppm: int, funding_period_s: int, mmr_ppm: int) -> int:
    """An upper bound, in ppm, on |d(theo - MM)/dS| per contract over every spot (for the risk triggers).

    With a = (1 -/+ u)/2 on either side of the strike, V/S = (S/K)^(a-1)/u <= 1/u, so
    S x gamma = a(a-1) V/S <= (u^2-1)/(4u) and |dV/dS| = |a| V/S <= (u+1)/(2u). Hence
    |delta| <= 1, |d(|delta| S mmr)/dS| <= mmr (1 + (u^2-1)/(4u)) and
    |d((u^2-1)/8 V mmr^2)/dS| <= mmr^2 (u^2-1)(u+1)/(16u). Every term grows with u, so an upper
    bound on u (an integer square root rounded up) gives an upper bound on the slope; the sum is
    rounded up once more. A trigger set this far from the spot can never be jumped over.
    """
    _check_pos("sigma_ppm", sigma_ppm)
    _check_pos("funding_period_s", funding_period_s)
    _check_nonneg("mmr_ppm", mmr_ppm)
    den = sigma_ppm * sigma_ppm * funding_period_s
    u2_scaled = _ceil_div((den + _EIGHT_NUM) * PPM * PPM, den)  # u^2 x 1e12, rounded up
    u_ppm = isqrt(u2_scaled) + 1  # > u x 1e6
    # (u^2-1)/(4u) <= (u_ppm^2 - 1e12) / (4 u_ppm 1e6); (u^2-1)(u+1)/(16u) likewise with (u_ppm + 1e6)
    u2m1 = u_ppm * u_ppm - PPM * PPM  # (u^2 - 1) x 1e12, an upper bound
    gamma_term = _ceil_div(mmr_ppm * (PPM * PPM + _ceil_div(u2m1, 4 * u_ppm) * PPM), PPM * PPM)
    vega_term = _ceil_div(mmr_ppm * mmr_ppm * u2m1 * (u_ppm + PPM), 16 * u_ppm * PPM * PPM * PPM)
    return PPM + gamma_term + vega_term
