"""The decided-id index: redeliveries within the horizon are recognised, memory stays bounded beyond it."""

from __future__ import annotations

from ledger_builders import DAY_US, HOUR_US, T0, USD, Ledger, price_mark, stock_listed

from ledger import reasons
from ledger.idempotency import BUCKET_US, DecidedIds


def test_ids_are_forgotten_past_the_horizon_and_memory_stays_bounded():
    ids = DecidedIds()
    horizon = 2 * DAY_US
    for n in range(24 * 10):  # ten days, one id an hour
        ids.remember(f"ev-{n}", b"12345678", T0 + n * HOUR_US, horizon)
        assert len(ids) <= horizon // HOUR_US + BUCKET_US // HOUR_US + 1  # the horizon, plus at most a bucket
    assert "ev-239" in ids and "ev-0" not in ids
    assert ids.too_old(T0 + 239 * HOUR_US - horizon - 1, horizon)
    assert not ids.too_old(T0 + 239 * HOUR_US - horizon, horizon)


def test_a_redelivery_within_the_horizon_is_a_duplicate_and_beyond_it_is_refused():
    lg = Ledger(redelivery_horizon_us=DAY_US)
    lg.ok("StockListed", stock_listed("AAPL"))
    mark = price_mark("AAPL", 200 * USD, at=T0 + HOUR_US)
    lg.ok("PriceMark", mark)
    assert lg.apply("PriceMark", mark).duplicate  # redelivered an hour later: recognised
    lg.ok("PriceMark", price_mark("AAPL", 201 * USD, at=T0 + 3 * DAY_US))
    out = lg.apply("PriceMark", mark)  # two days later its id is forgotten: refused, never applied twice
    assert out.rejection is not None and out.rejection[0] == reasons.BEYOND_REDELIVERY_HORIZON
    assert lg.state.prices["AAPL"].price_micro_usd == 201 * USD
    assert len(lg.state.seen) == 1  # only the latest mark's id is still remembered
