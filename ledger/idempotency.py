"""Decided ids: which event ids were applied, with a digest of their content, kept for a bounded redelivery horizon."""

from __future__ import annotations

import hashlib

ID_KEY_BYTES = 16  # blake2b of the event id: a fixed-size key however long producers make their ids
DIGEST_BYTES = 8  # of the content digest kept per id: enough to tell a redelivery from a reuse
BUCKET_US = 3_600 * 1_000_000  # ids expire an hour-bucket at a time


def id_key(event_id: str) -> bytes:
    return hashlib.blake2b(event_id.encode(), digest_size=ID_KEY_BYTES).digest()


class DecidedIds:
    """Event id -> content digest for every decided event (applied, or rejected by a rule) within the horizon.

    A decision is final: a redelivery of a decided id is a no-op, whatever the state has become since.
    The clock is the latest effective time applied. Ids whose event time falls more than the horizon
    behind it are forgotten an hour at a time, so memory is bounded by the event rate times the
    horizon, not by the history. An event older than the horizon cannot be told from a redelivery of
    a forgotten one, so the engine refuses it (`beyond_redelivery_horizon`); redelivery of the same
    Kafka record is also caught by its source offset, and producers retry within minutes.
    """

    __slots__ = ("digests", "buckets", "clock_us")

    def __init__(self) -> None:
        self.digests: dict[bytes, bytes] = {}
        self.buckets: dict[int, list[bytes]] = {}  # hour of event time -> ids applied with it
        self.clock_us = 0

    def __len__(self) -> int:
        return len(self.digests)

    def __contains__(self, event_id: str) -> bool:
        return id_key(event_id) in self.digests

    def get(self, event_id: str) -> bytes | None:
        return self.digests.get(id_key(event_id))

    def too_old(self, at_us: int, horizon_us: int) -> bool:
        """Whether an event at this time is beyond the horizon (its id may have been forgotten)."""
        return at_us < self.clock_us - horizon_us

    def remember(self, event_id: str, digest: bytes, at_us: int, horizon_us: int, advance_clock: bool = True) -> None:
        """Keep a decided id; an applied event advances the clock, a rejected one (advance_clock=False) does not."""
        key = id_key(event_id)
        self.digests[key] = digest[:DIGEST_BYTES]
        bucket = at_us // BUCKET_US
        ids = self.buckets.get(bucket)
        if ids is None:
            ids = self.buckets[bucket] = []
        ids.append(key)
        if advance_clock and at_us > self.clock_us:
            oldest = (self.clock_us - horizon_us) // BUCKET_US
            self.clock_us = at_us
            if (at_us - horizon_us) // BUCKET_US > oldest:
                self._expire(horizon_us)

    def _expire(self, horizon_us: int) -> None:
        # A bucket goes once all of it is past the horizon: ids are kept at least the horizon, at most an hour more.
        limit = (self.clock_us - horizon_us) // BUCKET_US
        for bucket in [b for b in self.buckets if b < limit]:
            for key in self.buckets.pop(bucket):
                self.digests.pop(key, None)

    def canonical(self) -> list:
        return list(self.canonical_parts())

    def canonical_parts(self):
        """The canonical form in pieces (ledger.state_hash streams them): clock, buckets, then every id."""
        yield self.clock_us
        for bucket in sorted(self.buckets):
            yield bucket, sorted(k.hex() for k in self.buckets[bucket])
        digests = self.digests
        for key in sorted(digests):
            yield key.hex(), digests[key].hex()
