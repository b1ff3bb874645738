"""schemas.posting_reader: the same values as fastavro (codec.decode) for every PostingBatch, None for anything else.

The reader is the projector's hot path; whatever it does not read, codec.decode does (and reports), so the one
property that matters is: when the reader returns values, they are exactly codec.decode's.
"""

from __future__ import annotations

import io

import duckdb
import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import catalog, codec, posting_reader
from schemas.codec import DecodeError
from schemas.posting_reader import read_posting_batch
from schemas.samples import sample_records
from services.projector import BatchWriter, InRecord

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
PB_ID = catalog.LATEST["PostingBatch"].schema_id


def expected(record: dict) -> tuple:
    """What the reader must return, from a record as fastavro decodes it."""
    flat = tuple(v for p in record["postings"] for v in (p["debit_account"], p["credit_account"], p["asset"],
                                                          p["amount_minor"]))
    return (record["event_id"], record["occurred_at"], record["source"], record["cause_event_id"],
            record["cause_kind"], flat)


def fastavro_values(data: bytes) -> tuple:
    subject, record = codec.decode(data)
    assert subject == "PostingBatch"
    return expected(record)


def body(record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, catalog.parsed_schema(PB_ID), record)
    return buf.getvalue()


def zigzag(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def avro_string(s: str) -> bytes:
    raw = s.encode()
    return zigzag(len(raw)) + raw


def record(postings: int = 2, **over) -> dict:
    rec = {"event_id": "post:venue-1", "occurred_at": 1_735_689_600_000_000, "source": "stockledger",
           "cause_event_id": "venue-1", "cause_kind": "TradeRequest",
           "postings": [{"debit_account": f"user:a{i}:margin:USD", "credit_account": "pool:main:USD", "asset": "USD",
                         "amount_minor": 1_000 * (i + 1)} for i in range(postings)]}
    return rec | over


text = st.text(max_size=90)  # lengths past 63 bytes take a two-byte varint; any code point, including astral ones
longs = st.one_of(st.integers(LONG_MIN, LONG_MAX), st.sampled_from([0, -1, 1, 63, 64, -64, -65, LONG_MIN, LONG_MAX]))
posting = st.fixed_dictionaries({"debit_account": text, "credit_account": text, "asset": text, "amount_minor": longs})
batches = st.fixed_dictionaries({"event_id": text, "occurred_at": longs, "source": text, "cause_event_id": text,
                                 "cause_kind": text, "postings": st.lists(posting, max_size=8)})


@settings(max_examples=400, deadline=None)
@given(batches)
def test_every_posting_batch_reads_as_fastavro_decodes_it(rec):
    data = codec.encode("PostingBatch", rec)
    assert read_posting_batch(data) == fastavro_values(data) == expected(rec)


def test_the_sample_posting_batches_and_edge_values_read_as_fastavro_decodes_them():
    samples = [r for _t, _k, s, r in sample_records(400, seed=3) if s == "PostingBatch"]
    assert samples
    edge = [record(0), record(1, occurred_at=LONG_MIN), record(3, occurred_at=LONG_MAX, event_id="", source="é" * 40),
            record(2, cause_kind="x" * 64, cause_event_id="🦆" * 20)]
    edge[1]["postings"][0]["amount_minor"] = LONG_MAX
    for rec in samples + edge:
        data = codec.encode("PostingBatch", rec)
        assert read_posting_batch(data) == fastavro_values(data) == expected(rec)


def posting_bytes(rec: dict) -> tuple[bytes, list[bytes]]:
    """The record's bytes before its postings array, and each posting's own bytes."""
    head = body(rec | {"postings": []})[:-1]  # up to the empty array's terminating 0
    return head, [body(rec | {"postings": [p]})[len(head) + 1:-1] for p in rec["postings"]]


def in_blocks(rec: dict) -> bytes:
    """The record framed with its postings in blocks of one (valid Avro; fastavro writes one block)."""
    head, legs = posting_bytes(rec)
    return codec._HEADER.pack(0, PB_ID) + head + b"".join(zigzag(1) + leg for leg in legs) + b"\x00"


def test_postings_written_in_several_blocks_or_with_block_sizes_read_as_fastavro_reads_them():
    rec = record(3)
    head, legs = posting_bytes(rec)
    several = head + zigzag(2) + legs[0] + legs[1] + zigzag(1) + legs[2] + b"\x00"
    sized = head + zigzag(-3) + zigzag(sum(map(len, legs))) + b"".join(legs) + b"\x00"
    for data in (codec._HEADER.pack(0, PB_ID) + several, codec._HEADER.pack(0, PB_ID) + sized, in_blocks(rec)):
        assert read_posting_batch(data) == fastavro_values(data) == expected(rec)


def test_other_subjects_and_other_ids_are_left_to_codec_decode():
    for _t, _k, subject, rec in sample_records(200, seed=5):
        if subject != "PostingBatch":
            assert read_posting_batch(codec.encode(subject, rec)) is None, subject
    assert read_posting_batch(b"") is None
    assert read_posting_batch(codec._HEADER.pack(1, PB_ID) + body(record())) is None  # wrong magic byte


def test_the_reader_knows_only_the_layout_it_walks():
    assert posting_reader.SCHEMA_ID == PB_ID
    changed = catalog.raw_schema(PB_ID) | {"fields": [*catalog.raw_schema(PB_ID)["fields"], {"name": "memo", "type": "string"}]}
    assert posting_reader._layout(changed) != posting_reader._LAYOUT


def malformed() -> list[bytes]:
    good = codec.encode("PostingBatch", record(2, event_id="e" * 70))  # a two-byte string length too
    header = codec._HEADER.pack(0, PB_ID)
    bad_utf8 = header + b"\x04\xff\xfe" + good[5 + 1 + 70 + 1:]
    return [good[:n] for n in range(5, len(good))] + [  # every truncation
        good + b"\x00",  # trailing bytes
        bad_utf8,  # not UTF-8
        header + avro_string("e")[:1] + b"\x81",  # string length -1
        header + avro_string("e") + b"\xff" * 11 + b"\x01",  # a varint beyond 64 bits
        header + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f",  # an over-long string length
    ]


@pytest.mark.parametrize("data", malformed())
def test_what_the_reader_refuses_codec_decode_reports(data):
    assert read_posting_batch(data) is None
    with pytest.raises(DecodeError):
        codec.decode(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_bytes_read_as_codec_decode_reads_them_or_not_at_all(data):
    good = codec.encode("PostingBatch", data.draw(batches))
    pos = data.draw(st.integers(5, len(good) - 1))
    corrupt = good[:pos] + bytes([data.draw(st.integers(0, 255))]) + good[pos + 1:]
    values = read_posting_batch(corrupt)
    if values is not None:  # whatever the reader accepts, fastavro decodes to the same values
        assert values == fastavro_values(corrupt)


def test_the_projector_stores_fast_read_and_fastavro_decoded_batches_alike():
    con = duckdb.connect()
    writer = BatchWriter(con)
    recs = [record(2, event_id=f"post:{i}", cause_event_id=f"c{i}") for i in range(4)]
    values = [codec.encode("PostingBatch", r) for r in recs]
    # The second record in two blocks (still read fast), the third with trailing bytes (codec.decode reports it).
    values[1] = in_blocks(recs[1])
    values[2] += b"\x00"
    records = [InRecord("ledger.postings", 0, i, 1_700_000_000_000 + i, None, v) for i, v in enumerate(values)]
    writer.commit(writer.prepare(records))
    stored = con.execute("SELECT event_id, leg, debit_account, credit_account, asset, amount_minor::BIGINT, "
                         "occurred_at_us, source, cause_event_id, cause_kind FROM postings ORDER BY event_id, leg").fetchall()
    want = [(r["event_id"], i, p["debit_account"], p["credit_account"], p["asset"], p["amount_minor"], r["occurred_at"],
             r["source"], r["cause_event_id"], r["cause_kind"]) for r in (recs[0], recs[1], recs[3])
            for i, p in enumerate(r["postings"])]
    assert stored == want
    assert con.execute("SELECT reason, \"offset\" FROM projector_errors").fetchall() == [("malformed", 2)]
    assert con.execute("SELECT event_id, legs FROM posting_batches ORDER BY 1").fetchall() == [
        ("post:0", 2), ("post:1", 2), ("post:3", 2)]
