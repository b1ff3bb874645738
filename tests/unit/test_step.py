"""The one step and the batched sequenced log: old single-record logs and batches fold alike; gaps stop the fold."""

from __future__ import annotations

import pytest

from ledger.state_hash import state_hash
from schemas.codec import encode
from services.replay import replay
from services.scenario import ScenarioConfig, generate
from streams.fold import fold_sequenced, sequenced_entries
from streams.step import Entry, Ledger


def _rows():
    return list(generate(ScenarioConfig(accounts=30, events=1_200, seed=4)))


def _sequenced(rows, first_offset=0):
    return [{"topic": t, "partition": 0, "offset": first_offset + i, "timestamp_ms": 1_773_000_000_000 + i,
             "key": k.encode(), "value": v} for i, (t, k, v) in enumerate(rows)]


def test_a_log_of_single_records_and_a_log_of_batches_fold_to_the_same_state_and_log():
    recs = _sequenced(_rows())
    single, batched = Ledger(), Ledger()
    for offset, r in enumerate(recs):
        fold_sequenced(single, offset, offset, encode("SequencedRecord", r))
    for offset, start in enumerate(range(0, len(recs), 500)):
        fold_sequenced(batched, offset, offset, encode("SequencedBatch", {"records": recs[start:start + 500]}))
    assert state_hash(single.state) == state_hash(batched.state)
    assert single.state.log.root() == batched.state.log.root() and batched.state.log.size == len(recs)
    assert single.counts.as_dict() == batched.counts.as_dict()


def test_the_replay_is_the_same_step():
    rows = _rows()
    by_hand = Ledger()
    outputs = [by_hand.step(Entry(*row)).outputs for row in rows]
    seen: list = []
    result = replay(rows, sink=lambda n, entry, res: seen.append(res.outputs))
    assert result.hash() == state_hash(by_hand.state) and seen == outputs
    assert result.state.log.root() == by_hand.state.log.root()


def test_a_gap_in_the_sequenced_topic_stops_the_fold():
    recs = _sequenced(_rows()[:3])
    ledger = Ledger()
    fold_sequenced(ledger, 0, 0, encode("SequencedBatch", {"records": recs[:1]}))
    with pytest.raises(RuntimeError, match="gap"):
        fold_sequenced(ledger, 2, 1, encode("SequencedBatch", {"records": recs[1:]}))


def test_entries_keep_their_source_coordinates_and_redeliveries_are_duplicates():
    recs = _sequenced(_rows()[:50])
    batch = encode("SequencedBatch", {"records": recs + recs[:5]})  # a sequencer crash re-sent five
    entries = sequenced_entries(batch)
    assert entries[0] == Entry(recs[0]["topic"], recs[0]["key"], recs[0]["value"], 0, 0, recs[0]["timestamp_ms"])
    ledger = Ledger()
    results = fold_sequenced(ledger, 0, 0, batch)
    assert all(r.outcome.duplicate and r.outputs == [] for r in results[-5:])
    assert ledger.state.log.size == 55  # every entry is logged, a redelivery too
