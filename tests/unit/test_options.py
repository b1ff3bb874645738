"""Tests for ledger.options (everlasting-option math, DESIGN.md section 5)."""

from __future__ import annotations

import ast
import inspect
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import options as o
from ledger.options import (
    NANO,
    WAD,
    delta_wad,
    funding_index_delta_micro_usd_wad,
    funding_owed_micro_usd,
    initial_margin_micro_usd,
    intrinsic_micro_usd,
    maintenance_margin_micro_usd,
    mul_nano_ceil,
    mul_nano_floor,
    pool_mark_micro_usd,
    theoretical_price_micro_usd,
    time_value_micro_usd,
    trade_cost_micro_usd,
    u_wad,
)

USD = 1_000_000  # micro-USD per USD
DAY_S = 86_400
WEEK_S = 7 * DAY_S
SIGMA_100 = 1_000_000  # 100 %/year in ppm
K50 = 50_000 * USD


# ----------------------------------------------------------------------------- independent reference


def ref_u(sigma_ppm: int, period_s: int) -> Decimal:
    """u computed independently with 60-digit Decimal arithmetic."""
    with localcontext() as c:
        c.prec = 60
        sigma = Decimal(sigma_ppm) / Decimal(1_000_000)
        t_years = Decimal(period_s) / Decimal(365 * DAY_S)
        return (1 + 8 / (sigma * sigma * t_years)).sqrt()


def ref_v(spot: int, strike: int, sigma_ppm: int, period_s: int) -> Decimal:
    """V (micro-USD, unrounded) computed independently with Decimal power."""
    with localcontext() as c:
        c.prec = 60
        u = ref_u(sigma_ppm, period_s)
        s, k = Decimal(spot), Decimal(strike)
        expo = (1 - u) / 2 if spot >= strike else (1 + u) / 2
        return (k / u) * (s / k) ** expo


def ceil_int(d: Decimal) -> int:
    return int(d.to_integral_value(rounding=ROUND_CEILING))


# ----------------------------------------------------------------------------- worked example


def test_worked_example_u_and_v():
    # DESIGN: T = 7 days, sigma = 100 %, S = K = 50,000 -> u = 20.4485, V = 2,445.16.
    u = Decimal(u_wad(SIGMA_100, WEEK_S)) / Decimal(WAD)
    assert u.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN) == Decimal("20.4485")
    v = time_value_micro_usd(K50, K50, SIGMA_100, WEEK_S)
    # documented precision: micro-USD, rounded up; to the cent it is 2,445.16
    assert (Decimal(v) / USD).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN) == Decimal("2445.16")
    assert v == ceil_int(ref_v(K50, K50, SIGMA_100, WEEK_S))
    assert v == 2_445_162_143


def test_u_wad_matches_reference_to_the_last_unit():
    for sigma, period in [(SIGMA_100, WEEK_S), (800_000, DAY_S), (1_500_000, 30 * DAY_S), (50_000, 3600)]:
        expected = int((ref_u(sigma, period) * WAD).to_integral_value(rounding=ROUND_HALF_EVEN))
        assert u_wad(sigma, period) == expected


def test_call_put_same_time_value_and_parity():
    for spot in (30_000 * USD, 49_999 * USD, K50, 50_001 * USD, 80_000 * USD):
        call = theoretical_price_micro_usd("CALL", spot, K50, SIGMA_100, WEEK_S)
        put = theoretical_price_micro_usd("PUT", spot, K50, SIGMA_100, WEEK_S)
        v = time_value_micro_usd(spot, K50, SIGMA_100, WEEK_S)
        assert call - intrinsic_micro_usd("CALL", spot, K50) == v
        assert put - intrinsic_micro_usd("PUT", spot, K50) == v
        assert call - put == spot - K50  # exact put-call parity: same V


def test_intrinsic():
    assert intrinsic_micro_usd("CALL", 60_000 * USD, K50) == 10_000 * USD
    assert intrinsic_micro_usd("CALL", 40_000 * USD, K50) == 0
    assert intrinsic_micro_usd("CALL", K50, K50) == 0
    assert intrinsic_micro_usd("PUT", 40_000 * USD, K50) == 10_000 * USD
    assert intrinsic_micro_usd("PUT", 60_000 * USD, K50) == 0
    assert intrinsic_micro_usd("PUT", K50, K50) == 0


def test_theo_by_hand_spot_above_strike():
    spot = 55_000 * USD
    with localcontext() as c:
        c.prec = 60
        # u^2 = 1 + 8 / (1^2 * 7/365) = 1 + 2920/7
        u = (Decimal(1) + Decimal(2920) / Decimal(7)).sqrt()
        v = (Decimal(K50) / u) * (Decimal(55) / Decimal(50)) ** ((1 - u) / 2)
        expected = 5_000 * USD + ceil_int(v)
    assert theoretical_price_micro_usd("CALL", spot, K50, SIGMA_100, WEEK_S) == expected
    assert theoretical_price_micro_usd("PUT", spot, K50, SIGMA_100, WEEK_S) == expected - 5_000 * USD


def test_theo_by_hand_spot_below_strike():
    spot = 45_000 * USD
    with localcontext() as c:
        c.prec = 60
        u = (Decimal(1) + Decimal(2920) / Decimal(7)).sqrt()
        v = (Decimal(K50) / u) * (Decimal(45) / Decimal(50)) ** ((1 + u) / 2)
        expected_v = ceil_int(v)
    assert theoretical_price_micro_usd("CALL", spot, K50, SIGMA_100, WEEK_S) == expected_v
    assert theoretical_price_micro_usd("PUT", spot, K50, SIGMA_100, WEEK_S) == 5_000 * USD + expected_v


# ----------------------------------------------------------------------------- delta


@pytest.mark.parametrize("spot_usd", [30_000, 45_000, 49_990, 50_000, 50_010, 55_000, 80_000])
def test_delta_signs_and_finite_difference(spot_usd):
    spot = spot_usd * USD
    h = 10 * USD
    for kind in ("CALL", "PUT"):
        d = delta_wad(kind, spot, K50, SIGMA_100, WEEK_S)
        if kind == "CALL":
            assert 0 < d <= WAD
        else:
            assert -WAD <= d < 0
        up = theoretical_price_micro_usd(kind, spot + h, K50, SIGMA_100, WEEK_S)
        dn = theoretical_price_micro_usd(kind, spot - h, K50, SIGMA_100, WEEK_S)
        fd = Decimal(up - dn) / Decimal(2 * h)
        assert abs(Decimal(d) / WAD - fd) < Decimal("0.0002"), (kind, spot_usd, d, fd)
    # call delta - put delta = 1 (same V); each rounded away from zero by < 1 WAD unit
    dc = delta_wad("CALL", spot, K50, SIGMA_100, WEEK_S)
    dp = delta_wad("PUT", spot, K50, SIGMA_100, WEEK_S)
    assert WAD <= dc - dp <= WAD + 2


def test_delta_at_the_money_closed_form():
    # at S = K: call delta = (u + 1) / (2u), put delta = (1 - u) / (2u)
    u = ref_u(SIGMA_100, WEEK_S)
    with localcontext() as c:
        c.prec = 60
        call = ((u + 1) / (2 * u) * WAD).to_integral_value(rounding=ROUND_CEILING)
    assert delta_wad("CALL", K50, K50, SIGMA_100, WEEK_S) == int(call)
    assert delta_wad("PUT", K50, K50, SIGMA_100, WEEK_S) in (int(call) - WAD, int(call) - WAD - 1)


def test_decimal_underflow_keeps_option_non_free():
    # sigma = 1 ppm, T = 1 s: u ~ 1.6e10, (S/K)^((1-u)/2) underflows the Decimal context to 0
    assert time_value_micro_usd(2 * K50, K50, 1, 1) == 1
    assert theoretical_price_micro_usd("CALL", 2 * K50, K50, 1, 1) == K50 + 1
    assert delta_wad("PUT", 2 * K50, K50, 1, 1) == -1
    assert delta_wad("CALL", 2 * K50, K50, 1, 1) == WAD
    assert maintenance_margin_micro_usd("CALL", 2 * K50, K50, 1, 1, 50_000) == 5_000 * USD


def test_delta_deep_otm_still_nonzero():
    assert delta_wad("CALL", 10_000 * USD, K50, SIGMA_100, WEEK_S) >= 1
    assert delta_wad("PUT", 500_000 * USD, K50, SIGMA_100, WEEK_S) <= -1
    assert delta_wad("CALL", 500_000 * USD, K50, SIGMA_100, WEEK_S) <= WAD


# ----------------------------------------------------------------------------- pool mark and cost

THEO = 2_445_162_143
DELTA = 524_451_621_423_310_630
ALPHA = 1_000  # 0.1 %
LIQ = 10_000_000 * USD


def test_mark_leans_with_net_volume():
    m0 = pool_mark_micro_usd(THEO, K50, DELTA, ALPHA, LIQ, 0)
    assert m0 == THEO
    m_long = pool_mark_micro_usd(THEO, K50, DELTA, ALPHA, LIQ, 10 * NANO)
    m_short = pool_mark_micro_usd(THEO, K50, DELTA, ALPHA, LIQ, -10 * NANO)
    assert m_short < m0 < m_long
    # by hand: k = S^2/theo * |delta| * alpha / L; mark = theo (1 + k N)
    with localcontext() as c:
        c.prec = 60
        k = Decimal(K50) ** 2 / THEO * (Decimal(DELTA) / WAD) * Decimal("0.001") / LIQ
        expected = Decimal(THEO) * (1 + k * 10)
    assert abs(Decimal(m_long) - expected) <= Decimal("0.5")


def test_mark_clamped_at_zero():
    assert pool_mark_micro_usd(THEO, K50, DELTA, ALPHA, LIQ, -(10**9) * NANO) == 0


def test_zero_or_negative_liquidity_uses_alpha_cap_without_raising():
    for liq in (0, -5):
        m = pool_mark_micro_usd(THEO, K50, DELTA, ALPHA, liq, 2 * NANO)
        # documented cap: k = alpha per contract -> mark = theo * (1 + alpha * N)
        assert m == round(Decimal(THEO) * (1 + Decimal("0.001") * 2))
        cost = trade_cost_micro_usd(THEO, K50, DELTA, ALPHA, liq, 0, NANO)
        assert cost == ceil_int(Decimal(THEO) * (1 + Decimal("0.001") / 2))


def test_trade_cost_by_hand_and_rounding_against_trader():
    n, dv = 3 * NANO, 2 * NANO
    with localcontext() as c:
        c.prec = 60
        k = Decimal(K50) ** 2 / THEO * (Decimal(DELTA) / WAD) * Decimal("0.001") / LIQ
        exact = Decimal(THEO) * (2 + k * ((3 + 2) ** 2 - 3**2) / 2)
    buy = trade_cost_micro_usd(THEO, K50, DELTA, ALPHA, LIQ, n, dv)
    assert buy == ceil_int(exact)
    sell = trade_cost_micro_usd(THEO, K50, DELTA, ALPHA, LIQ, n + dv, -dv)
    assert sell == ceil_int(-exact)  # trader receives floor(|exact|)
    assert buy + sell >= 0


def test_trade_cost_zero_size_is_zero():
    assert trade_cost_micro_usd(THEO, K50, DELTA, ALPHA, LIQ, 5 * NANO, 0) == 0


def test_trader_never_pays_to_sell_when_mark_clamped():
    # far below the zero-crossing of the mark, selling more yields nothing and costs nothing
    n = -(10**9) * NANO
    assert trade_cost_micro_usd(THEO, K50, DELTA, ALPHA, LIQ, n, -NANO) == 0
    assert trade_cost_micro_usd(THEO, K50, DELTA, ALPHA, LIQ, n, NANO) == 0


volumes = st.integers(min_value=-1_000 * NANO, max_value=1_000 * NANO)


@settings(max_examples=300, deadline=None)
@given(
    n=volumes,
    dv=volumes,
    liq=st.integers(min_value=-10 * USD, max_value=10**9 * USD),
    alpha=st.integers(min_value=0, max_value=100_000),
)
def test_round_trip_is_never_free_money(n, dv, liq, alpha):
    # open dV at N, then close it at the updated state N + dV
    open_cost = trade_cost_micro_usd(THEO, K50, DELTA, alpha, liq, n, dv)
    close_cost = trade_cost_micro_usd(THEO, K50, DELTA, alpha, liq, n + dv, -dv)
    assert open_cost + close_cost >= 0
    # open dV and close it against an unchanged N (e.g. others traded in between): convexity
    close_same_n = trade_cost_micro_usd(THEO, K50, DELTA, alpha, liq, n, -dv)
    assert open_cost + close_same_n >= 0
    # buying never pays the trader, selling never charges the trader
    if dv > 0:
        assert open_cost >= 0
    elif dv < 0:
        assert open_cost <= 0


# ----------------------------------------------------------------------------- funding


def test_funding_long_pays_when_mark_above_intrinsic():
    spot = 55_000 * USD
    intrinsic = intrinsic_micro_usd("CALL", spot, K50)
    mark = intrinsic + 3_000 * USD
    d_index = funding_index_delta_micro_usd_wad(mark, intrinsic, 3_600 * 1_000_000, WEEK_S)
    # (mark - intrinsic) * dt / T = 3000 USD / 168 per contract
    assert d_index == round(Decimal(3_000 * USD) * WAD / 168)
    assert d_index > 0
    long_owes = funding_owed_micro_usd(2 * NANO, d_index, 0)
    short_owes = funding_owed_micro_usd(-2 * NANO, d_index, 0)
    assert long_owes > 0 > short_owes
    exact = Decimal(2 * 3_000 * USD) / 168
    assert long_owes == ceil_int(exact)  # long pays rounded up
    assert -short_owes == int(exact)  # short receives rounded down
    assert long_owes + short_owes >= 0  # the venue never loses on rounding


def test_funding_shorts_pay_when_mark_below_intrinsic():
    d_index = funding_index_delta_micro_usd_wad(90 * USD, 100 * USD, 1_000_000, 60)
    assert d_index < 0
    assert funding_owed_micro_usd(NANO, d_index, 0) < 0  # long receives
    assert funding_owed_micro_usd(-NANO, d_index, 0) > 0  # short pays
    # a sub-micro-USD receipt rounds down to nothing, a sub-micro-USD payment rounds up to 1
    tiny = funding_index_delta_micro_usd_wad(90, 100, 1_000_000, 60)  # -1/6 micro-USD per contract
    assert funding_owed_micro_usd(NANO, tiny, 0) == 0
    assert funding_owed_micro_usd(-NANO, tiny, 0) == 1


def test_funding_index_is_additive_in_time():
    a = funding_index_delta_micro_usd_wad(123_456_789, 100_000_000, 1_000_000, WEEK_S)
    b = funding_index_delta_micro_usd_wad(123_456_789, 100_000_000, 2_000_000, WEEK_S)
    assert abs(2 * a - b) <= 1
    assert funding_index_delta_micro_usd_wad(123_456_789, 100_000_000, 0, WEEK_S) == 0


# ----------------------------------------------------------------------------- margin


def test_maintenance_and_initial_margin_by_hand():
    spot = 55_000 * USD
    mmr, imr, min_imr = 50_000, 100_000, 10_000  # 5 %, 10 %, 1 %
    with localcontext() as c:
        c.prec = 60
        u = (Decimal(1) + Decimal(2920) / Decimal(7)).sqrt()
        v = (Decimal(K50) / u) * (Decimal(55) / Decimal(50)) ** ((1 - u) / 2)
        a = (1 - u) / 2
        delta_call = 1 + a * v / spot
        mmr_d = Decimal("0.05")
        mm = abs(delta_call) * spot * mmr_d + (u * u - 1) * v / 8 * mmr_d * mmr_d
        im = max(spot * Decimal("0.01"), mm * Decimal("0.10") / mmr_d)
        mm_put = abs(delta_call - 1) * spot * mmr_d + (u * u - 1) * v / 8 * mmr_d * mmr_d
        im_put = max(spot * Decimal("0.01"), mm_put * Decimal("0.10") / mmr_d)
    assert maintenance_margin_micro_usd("CALL", spot, K50, SIGMA_100, WEEK_S, mmr) == ceil_int(mm)
    assert initial_margin_micro_usd("CALL", spot, K50, SIGMA_100, WEEK_S, mmr, imr, min_imr) == ceil_int(im)
    assert ceil_int(im) == ceil_int(2 * mm)  # MM branch binds for the ITM call
    assert maintenance_margin_micro_usd("PUT", spot, K50, SIGMA_100, WEEK_S, mmr) == ceil_int(mm_put)
    assert initial_margin_micro_usd("PUT", spot, K50, SIGMA_100, WEEK_S, mmr, imr, min_imr) == ceil_int(
        im_put
    )
    # a deep-OTM put (S = 80,000) hits the S * min_initial_margin_ratio floor: 1 % of 80,000 = 800 USD
    far = 80_000 * USD
    assert maintenance_margin_micro_usd("PUT", far, K50, SIGMA_100, WEEK_S, mmr) < 400 * USD
    assert initial_margin_micro_usd("PUT", far, K50, SIGMA_100, WEEK_S, mmr, imr, min_imr) == 800 * USD


def test_initial_margin_requires_imr_at_least_mmr():
    with pytest.raises(ValueError):
        initial_margin_micro_usd("CALL", K50, K50, SIGMA_100, WEEK_S, 100_000, 50_000, 0)
    with pytest.raises(ValueError):
        initial_margin_micro_usd("CALL", K50, K50, SIGMA_100, WEEK_S, 0, 50_000, 0)


# ----------------------------------------------------------------------------- helpers and validation


def test_mul_nano_rounding():
    assert mul_nano_ceil(1_000_001, NANO // 2) == 500_001
    assert mul_nano_floor(1_000_001, NANO // 2) == 500_000
    assert mul_nano_ceil(-1_000_001, NANO // 2) == -500_000
    assert mul_nano_floor(-1_000_001, NANO // 2) == -500_001
    assert mul_nano_ceil(7, 3 * NANO) == mul_nano_floor(7, 3 * NANO) == 21


@pytest.mark.parametrize(
    "args",
    [
        ("CALL", 0, K50, SIGMA_100, WEEK_S),
        ("CALL", K50, 0, SIGMA_100, WEEK_S),
        ("CALL", K50, K50, 0, WEEK_S),
        ("CALL", K50, K50, SIGMA_100, 0),
        ("call", K50, K50, SIGMA_100, WEEK_S),
        ("CALL", 50_000.0, K50, SIGMA_100, WEEK_S),
        ("CALL", K50, K50, True, WEEK_S),
    ],
)
def test_invalid_inputs_raise_value_error(args):
    with pytest.raises(ValueError):
        theoretical_price_micro_usd(*args)
    with pytest.raises(ValueError):
        delta_wad(*args)


def test_pool_functions_validate_delta_and_types():
    with pytest.raises(ValueError):
        pool_mark_micro_usd(THEO, K50, 2 * WAD, ALPHA, LIQ, 0)
    with pytest.raises(ValueError):
        trade_cost_micro_usd(THEO, K50, DELTA, ALPHA, LIQ, 0, 1.5)


def test_module_has_no_float_literals_or_true_division():
    tree = ast.parse(inspect.getsource(o))
    for node in ast.walk(tree):
        assert not (isinstance(node, ast.Constant) and isinstance(node.value, float)), ast.dump(node)
        assert not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)), ast.dump(node)
        assert not (isinstance(node, ast.Name) and node.id == "float")


# ----------------------------------------------------------------------------- properties

kinds = st.sampled_from(["CALL", "PUT"])
prices = st.integers(min_value=1 * USD, max_value=10_000_000 * USD)
sigmas = st.integers(min_value=10_000, max_value=5_000_000)  # 1 % .. 500 %
periods = st.integers(min_value=3_600, max_value=365 * DAY_S)


@settings(max_examples=300, deadline=None)
@given(kind=kinds, spot=prices, strike=prices, sigma=sigmas, period=periods)
def test_properties_of_pricing(kind, spot, strike, sigma, period):
    o._core.cache_clear()
    theo = theoretical_price_micro_usd(kind, spot, strike, sigma, period)
    o._core.cache_clear()
    o._u_parts.cache_clear()
    o._ln.cache_clear()
    assert theoretical_price_micro_usd(kind, spot, strike, sigma, period) == theo  # deterministic
    v = time_value_micro_usd(spot, strike, sigma, period)
    intrinsic = intrinsic_micro_usd(kind, spot, strike)
    d = delta_wad(kind, spot, strike, sigma, period)
    mm = maintenance_margin_micro_usd(kind, spot, strike, sigma, period, 50_000)
    im = initial_margin_micro_usd(kind, spot, strike, sigma, period, 50_000, 100_000, 10_000)
    for x in (theo, v, intrinsic, d, mm, im, u_wad(sigma, period)):
        assert type(x) is int
    assert v > 0
    assert theo >= intrinsic
    assert theo == intrinsic + v
    assert (0 < d <= WAD) if kind == "CALL" else (-WAD <= d < 0)
    assert im >= mm >= 0
    assert u_wad(sigma, period) > WAD


@settings(max_examples=300, deadline=None)
@given(
    spot=prices,
    bump=st.integers(min_value=1, max_value=1_000_000 * USD),
    strike=prices,
    sigma=sigmas,
    period=periods,
)
def test_call_theo_monotone_in_spot_put_antitone(spot, bump, strike, sigma, period):
    lo = theoretical_price_micro_usd("CALL", spot, strike, sigma, period)
    hi = theoretical_price_micro_usd("CALL", spot + bump, strike, sigma, period)
    assert hi >= lo
    lo_p = theoretical_price_micro_usd("PUT", spot, strike, sigma, period)
    hi_p = theoretical_price_micro_usd("PUT", spot + bump, strike, sigma, period)
    assert hi_p <= lo_p


@settings(max_examples=200, deadline=None)
@given(
    kind=kinds,
    spot=st.integers(min_value=1, max_value=10**15),
    strike=st.integers(min_value=1, max_value=10**15),
    sigma=st.integers(min_value=1, max_value=10**9),
    period=st.integers(min_value=1, max_value=10 * 365 * DAY_S),
)
def test_extreme_inputs_never_crash(kind, spot, strike, sigma, period):
    theo = theoretical_price_micro_usd(kind, spot, strike, sigma, period)
    assert theo >= intrinsic_micro_usd(kind, spot, strike) + 1
    d = delta_wad(kind, spot, strike, sigma, period)
    assert -WAD <= d <= WAD and d != 0
    assert maintenance_margin_micro_usd(kind, spot, strike, sigma, period, 50_000) >= 0


@settings(max_examples=200, deadline=None)
@given(kind=kinds, spot=prices, strike=prices, sigma=sigmas, period=periods)
def test_series_figures_equal_the_functions_one_by_one(kind, spot, strike, sigma, period):
    """The quote's one-pass figures are exactly the separate functions' (a second path through the maths)."""
    assert o.series_figures(kind, spot, strike, sigma, period, 100_000, 150_000, 20_000) == (
        intrinsic_micro_usd(kind, spot, strike),
        theoretical_price_micro_usd(kind, spot, strike, sigma, period),
        delta_wad(kind, spot, strike, sigma, period),
        maintenance_margin_micro_usd(kind, spot, strike, sigma, period, 100_000),
        initial_margin_micro_usd(kind, spot, strike, sigma, period, 100_000, 150_000, 20_000),
    )


@settings(max_examples=150, deadline=None)
@given(sigma=st.integers(min_value=1_000, max_value=20_000), period=st.integers(min_value=60, max_value=3_600),
       spot=st.integers(min_value=1, max_value=14 * 10**11), time_value=st.integers(min_value=1, max_value=10**12),
       delta=st.integers(min_value=-WAD, max_value=WAD), mmr=st.integers(min_value=0, max_value=1_000_000))
def test_local_slope_bounds_skip_a_window_factor_beyond_reach_with_the_figures_it_would_have_given(sigma, period, spot, time_value, delta, mmr):
    """Where (1 - w)^-((u+1)/2) exceeds e^60 the factor is not worked out (it overflowed the context further out)
    and the global bounds are returned: exactly what the local formula gives with the factor worked out, for every
    V >= 1 micro-USD and spot within the limits (u here between ~3,000 and ~700,000, where it still computes)."""
    window = 20_000
    u = o._CTX.divide(Decimal(o._u_ppm_up(sigma, period)), Decimal(1_000_000))
    base = o._CTX.divide(Decimal(1_000_000 - window), Decimal(1_000_000))
    exponent = o._CTX.divide(-(u + 1), 2)
    if o._CTX.multiply(exponent, base.ln(o._CTX)) <= o._WINDOW_EXPONENT_MAX:
        return  # the factor is worked out as before: nothing skipped
    factor = o._to_int(o._CTX.multiply(o._CTX.power(base, exponent), Decimal(1_000_000)), ROUND_CEILING) + 1
    den = sigma * sigma * period
    c = lambda n, d: -((-n) // d)  # noqa: E731
    v = c(time_value * 1_000_000 * factor, spot * 1_000_000)
    s_gamma = c(o._EIGHT_NUM * v, 4 * den)
    u_ppm = o._u_ppm_up(sigma, period)
    dv_ds = c((u_ppm + 1_000_000) * v, 2_000_000)
    delta_ppm = min(1_000_000, c(abs(delta), WAD // 1_000_000) + c(window * s_gamma, 1_000_000 - window))
    mm_ppm = c(delta_ppm * mmr, 1_000_000) + c(mmr * s_gamma, 1_000_000) + c(mmr * mmr * o._EIGHT_NUM * dv_ds, 8 * den * 10**12)
    everywhere = o.slope_bound_parts_ppm(sigma, period, mmr)
    worked_out = (delta_ppm, mm_ppm) if delta_ppm + mm_ppm <= sum(everywhere) else everywhere
    assert o.local_slope_parts_ppm(spot, sigma, period, mmr, time_value, delta, window) == worked_out
    assert o.time_value_slope_ppm(spot, sigma, period, time_value, window) == min(1_000_000, dv_ds)
