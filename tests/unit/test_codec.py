"""Confluent wire format codec: round trips of every subject, and every kind of bad input.

Bad bytes must raise DecodeError (never anything else) with reason 'malformed' or 'unknown_schema' and a
message naming the problem. Also checks schemas/samples.py, which the round trips use.
"""

from __future__ import annotations

import io
import struct
from collections import Counter

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import catalog, codec
from schemas.codec import HEADER_SIZE, DecodeError
from schemas.models import MODELS, from_record
from schemas.samples import ACCOUNTS, CRYPTO, SUBJECTS, SYMBOLS, sample_records
from schemas.topics import SUBJECT_ROUTES, TOPICS_BY_NAME

SAMPLES = sample_records(len(SUBJECTS) * 3, seed=11)
ONE_PER_SUBJECT: dict[str, dict] = {}
for _topic, _key, _subject, _record in SAMPLES:
    ONE_PER_SUBJECT.setdefault(_subject, _record)
ONE_PER_SUBJECT["ArchiveRecord"] = {
    "topic": SAMPLES[0][0],
    "key": SAMPLES[0][1],
    "value": codec.encode(SAMPLES[0][2], SAMPLES[0][3]),
    "source_partition": 3,
    "source_offset": 1_200,
    "timestamp_ms": 1_773_000_000_000,
}
# A batch of the sequencer has no key field (its Kafka key is constant): sampled here, not routed.
ONE_PER_SUBJECT["SequencedBatch"] = {"records": [
    {k: ONE_PER_SUBJECT["SequencedRecord"][k] for k in ("topic", "partition", "offset", "timestamp_ms", "key", "value")},
    {"topic": "price.events", "partition": 2, "offset": 7, "timestamp_ms": 1_773_000_000_001, "key": None, "value": b""},
]}
ALL_SUBJECTS = [e.subject for e in sorted(catalog.LATEST.values(), key=lambda e: e.schema_id)]
VALID_IDS = sorted(catalog.BY_ID)


def _framed(subject: str) -> bytes:
    return codec.encode(subject, ONE_PER_SUBJECT[subject])


def _decode_error(data: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    return info.value


# ------------------------------------------------------------------------------------- round trips


def test_every_subject_has_a_sample():
    assert set(ONE_PER_SUBJECT) == set(catalog.LATEST)


@pytest.mark.parametrize("subject", ALL_SUBJECTS)
def test_round_trip_every_subject(subject):
    record = ONE_PER_SUBJECT[subject]
    data = codec.encode(subject, record)
    assert codec.decode(data) == (subject, record)
    assert from_record(subject, codec.decode(data)[1]) == MODELS[subject].model_validate(record)


@pytest.mark.parametrize("subject", ALL_SUBJECTS)
def test_wire_layout(subject):
    """Byte 0 is magic 0, bytes 1-4 the big-endian schema id, the rest the schemaless Avro body."""
    entry = catalog.LATEST[subject]
    record = ONE_PER_SUBJECT[subject]
    data = codec.encode(subject, record)
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == entry.schema_id
    assert codec.peek_schema_id(data) == entry.schema_id
    body = io.BytesIO()
    fastavro.schemaless_writer(body, catalog.parsed_schema(entry.schema_id), record)
    assert data[HEADER_SIZE:] == body.getvalue()


@pytest.mark.parametrize("entry", catalog.ENTRIES, ids=lambda e: f"{e.subject}.v{e.version}")
def test_encode_with_id_frames_each_version(entry):
    record = ONE_PER_SUBJECT[entry.subject]
    data = codec.encode_with_id(entry.schema_id, record)
    assert codec.peek_schema_id(data) == entry.schema_id
    # An older version carries the fields it has (ArchiveRecord v1 has no source coordinates).
    fields = [f["name"] for f in catalog.raw_schema(entry.schema_id)["fields"]]
    assert codec.decode(data) == (entry.subject, {k: record[k] for k in fields})


def test_timestamps_stay_integer_microseconds():
    subject, record = codec.decode(_framed("PriceMark"))
    assert type(record["occurred_at"]) is int and type(record["published_at"]) is int
    assert record["occurred_at"] == ONE_PER_SUBJECT["PriceMark"]["occurred_at"]


# --------------------------------------------------------------------------------------- bad input


def test_empty_bytes():
    err = _decode_error(b"")
    assert err.reason == "malformed"
    assert "0 bytes" in str(err) and "5-byte header" in str(err)
    assert err.schema_id is None


def test_none():
    err = _decode_error(None)  # type: ignore[arg-type]
    assert err.reason == "malformed" and "0 bytes" in str(err)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_shorter_than_header(n):
    err = _decode_error(b"\x00" * n)
    assert err.reason == "malformed"
    assert f"record of {n} bytes" in err.detail and "5-byte header" in err.detail


@pytest.mark.parametrize("magic", [1, 2, 0x7F, 0x80, 0xFF])
def test_wrong_magic_byte(magic):
    data = bytes([magic]) + _framed("Burn")[1:]
    err = _decode_error(data)
    assert err.reason == "malformed"
    assert f"magic byte is {magic}, expected 0" in err.detail


@pytest.mark.parametrize("schema_id", [0, max(VALID_IDS) + 1, 1_000, 2**31, 2**32 - 1])
def test_unknown_schema_id(schema_id):
    data = b"\x00" + struct.pack(">I", schema_id) + _framed("Burn")[HEADER_SIZE:]
    err = _decode_error(data)
    assert err.reason == "unknown_schema"
    assert err.schema_id == schema_id
    assert f"schema id {schema_id} is not in the catalog" in err.detail


def test_header_only():
    err = _decode_error(_framed("Burn")[:HEADER_SIZE])
    assert err.reason == "malformed"
    assert "truncated" in err.detail and "Burn" in err.detail
    assert err.schema_id == catalog.LATEST["Burn"].schema_id


def test_truncated_body():
    data = _framed("PostingBatch")
    err = _decode_error(data[:-1])
    assert err.reason == "malformed"
    assert "truncated" in err.detail and "PostingBatch" in err.detail
    assert err.schema_id == catalog.LATEST["PostingBatch"].schema_id


@pytest.mark.parametrize("subject", ALL_SUBJECTS)
def test_every_truncation_point_is_malformed(subject):
    data = _framed(subject)
    for cut in range(HEADER_SIZE, len(data)):
        err = _decode_error(data[:cut])
        assert err.reason == "malformed", cut
        assert subject in err.detail, cut
        assert err.schema_id == catalog.LATEST[subject].schema_id


@pytest.mark.parametrize("extra", [b"\x00", b"\x00\x00\x00", b"garbage"])
def test_trailing_bytes(extra):
    err = _decode_error(_framed("TradeRequest") + extra)
    assert err.reason == "malformed"
    assert f"{len(extra)} trailing bytes after the TradeRequest body" in err.detail


def test_garbage_body_names_the_subject():
    # a string whose declared length is negative cannot be read
    header = _framed("ArchiveRecord")[:HEADER_SIZE]
    err = _decode_error(header + b"\x03")
    assert err.reason == "malformed"
    assert "ArchiveRecord" in err.detail


def test_decode_error_attributes():
    err = _decode_error(b"\x00\x00\x00\x00\x00")
    assert isinstance(err, Exception)
    assert str(err) == f"{err.reason}: {err.detail}"


@settings(max_examples=1500, deadline=None)
@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_decode_error(data):
    try:
        subject, record = codec.decode(data)
    except DecodeError as err:
        assert err.reason in ("malformed", "unknown_schema")
        assert err.detail
    else:
        assert subject in catalog.LATEST and isinstance(record, dict)


@settings(max_examples=3000, deadline=None)
@given(schema_id=st.sampled_from(VALID_IDS), body=st.binary(max_size=96))
def test_garbage_after_a_valid_header_raises_only_decode_error(schema_id, body):
    data = b"\x00" + struct.pack(">I", schema_id) + body
    subject = catalog.BY_ID[schema_id].subject
    try:
        decoded_subject, record = codec.decode(data)
    except DecodeError as err:
        assert err.reason == "malformed"
        assert err.schema_id == schema_id
        assert subject in err.detail
    else:
        assert decoded_subject == subject and isinstance(record, dict)


@settings(max_examples=500, deadline=None)
@given(subject=st.sampled_from(ALL_SUBJECTS), data=st.data())
def test_flipped_bytes_in_a_valid_record_raise_only_decode_error(subject, data):
    raw = bytearray(_framed(subject))
    position = data.draw(st.integers(HEADER_SIZE, len(raw) - 1))
    raw[position] = data.draw(st.integers(0, 255))
    try:
        codec.decode(bytes(raw))
    except DecodeError as err:
        assert err.reason == "malformed" and subject in err.detail


# ------------------------------------------------------------------------------------------ samples


def test_samples_are_deterministic():
    assert sample_records(200, seed=5) == sample_records(200, seed=5)
    assert sample_records(200, seed=5) != sample_records(200, seed=6)
    assert sample_records(50, seed=5) == sample_records(200, seed=5)[:50]
    assert sample_records(0, seed=1) == []


def test_samples_cover_every_subject_except_archive_record_and_batches_evenly():
    assert set(SUBJECTS) == set(catalog.LATEST) - {"ArchiveRecord", "SequencedBatch"}
    assert {s for _, _, s, _ in sample_records(len(SUBJECTS), seed=1)} == set(SUBJECTS)
    counts = Counter(s for _, _, s, _ in sample_records(len(SUBJECTS) * 10 + 3, seed=2))
    assert set(counts.values()) <= {10, 11}


def test_samples_are_valid_and_routed():
    expected_key_field = {
        "CustodyMovement": "symbol",
        "HoldingStatement": "symbol",
        "CorporateAction": "symbol",
        "StockListed": "symbol",
        "MintRequest": "symbol",
        "Burn": "symbol",
        "SupplyObservation": "symbol",
        "PriceMark": "instrument",
        "SeriesListed": "underlying",
        "CollateralDeposit": "account",
        "CollateralWithdrawalRequest": "account",
        "LpDeposit": "account",
        "LpRedeemRequest": "account",
        "TradeRequest": "account",
        "RequestOutcome": "key",
        "LiquidationTriggered": "account",
        "LiquidationExecuted": "account",
        "BadDebtCovered": "account",
        "AutoDeleveraged": "account",
        "SeriesState": "series_id",
        "PostingBatch": "cause_event_id",
        "Rejection": "source_topic",
        "SequencedRecord": "topic",
        "FoldCheckpoint": "worker_id",
        "TreeHead": "event_id",
        "SnapshotChunk": "group",
        "SnapshotManifest": "group",
        "AccountCollateral": "account",
        "PoolState": "pool",
    }
    expected_topic = {
        "CustodyMovement": "custody.events",
        "HoldingStatement": "custody.events",
        "CorporateAction": "custody.events",
        "StockListed": "custody.events",
        "MintRequest": "mint.events",
        "Burn": "mint.events",
        "SupplyObservation": "mint.events",
        "PriceMark": "price.events",
        "SeriesListed": "price.events",
        "CollateralDeposit": "margin.events",
        "CollateralWithdrawalRequest": "margin.events",
        "LpDeposit": "margin.events",
        "LpRedeemRequest": "margin.events",
        "TradeRequest": "trade.events",
        "RequestOutcome": "request.outcomes",
        "LiquidationTriggered": "liquidation.events",
        "LiquidationExecuted": "liquidation.events",
        "BadDebtCovered": "liquidation.events",
        "AutoDeleveraged": "liquidation.events",
        "SeriesState": "series.state",
        "PostingBatch": "ledger.postings",
        "Rejection": "ledger.rejections",
        "SequencedRecord": "ledger.sequenced",
        "FoldCheckpoint": "ledger.checkpoints",
        "TreeHead": "ledger.tree_heads",
        "SnapshotChunk": "ledger.snapshots",
        "SnapshotManifest": "ledger.snapshots",
        "AccountCollateral": "ledger.collateral",
        "PoolState": "ledger.pools",
    }
    assert {s: r for s, r in SUBJECT_ROUTES.items() if s in SUBJECTS} == {
        s: (expected_topic[s], expected_key_field[s]) for s in SUBJECTS
    }
    event_ids = set()
    for topic, key, subject, record in sample_records(2_000, seed=3):
        assert topic == expected_topic[subject] and topic in TOPICS_BY_NAME
        assert key == record[expected_key_field[subject]] and isinstance(key, str) and key
        MODELS[subject].model_validate(record)
        assert codec.decode(codec.encode(subject, record)) == (subject, record)
        if subject in ("SequencedRecord", "SnapshotChunk"):  # wrappers: identified by where they belong
            continue
        assert record["event_id"] not in event_ids
        event_ids.add(record["event_id"])


def test_samples_look_real():
    records = sample_records(3_000, seed=4)
    by_subject: dict[str, list[dict]] = {}
    for _, _, subject, record in records:
        by_subject.setdefault(subject, []).append(record)
    assert {r["instrument"] for r in by_subject["PriceMark"]} == set(SYMBOLS) | set(CRYPTO)
    assert {r["symbol"] for r in by_subject["CustodyMovement"]} == set(SYMBOLS)
    assert {r["account"] for r in by_subject["TradeRequest"]} <= set(ACCOUNTS)
    for r in by_subject["PriceMark"]:
        usd = r["price_micro_usd"] / 1e6
        assert (10_000 < usd < 200_000) if r["instrument"] == "BTC" else (1 < usd < 10_000)
        assert r["published_at"] <= r["occurred_at"]
    for r in by_subject["HoldingStatement"]:
        assert r["avai_qty_nano"] + r["navl_qty_nano"] == r["aggr_qty_nano"]
    for r in by_subject["RequestOutcome"]:
        assert (r["reason"] is None) == (r["decision"] == "APPROVED")
    for r in by_subject["PostingBatch"]:
        assert r["postings"] and all(p["amount_minor"] > 0 for p in r["postings"])
    for r in by_subject["Rejection"]:
        if r["reason"] in ("malformed", "unknown_schema"):
            assert _decode_error(r["original"]).reason == r["reason"]
        else:
            subject, inner = codec.decode(r["original"])
            assert (
                inner["event_id"] == r["cause_event_id"]
                and r["schema_id"] == catalog.LATEST[subject].schema_id
            )
    times = [r["occurred_at"] for _, _, _, r in records if "occurred_at" in r]
    assert times == sorted(times)
