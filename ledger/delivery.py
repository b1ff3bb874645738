"""Delivery semantics: at-least-once input made effectively-once (source offsets, then event ids)."""

from __future__ import annotations

from typing import Any

from ledger.engine import apply
from ledger.outcome import Outcome
from ledger.state import LedgerState


def already_applied(state: LedgerState, topic: str, partition: int, offset: int) -> bool:
    """A record at or below the last applied offset of its source partition is a redelivery."""
    return offset <= state.source_offsets.get(f"{topic}:{partition}", -1)


def apply_delivered(state: LedgerState, topic: str, partition: int | None, offset: int | None,
                    decoded: tuple[str, dict[str, Any]] | tuple[None, tuple[str, str]]) -> Outcome:
    """Apply one source record (decoded by the shell, or the decode failure as (reason, detail)).

    The source offset is recorded whatever the outcome, so a redelivered rejection is not counted twice.
    A record without source coordinates (an archive row that never went through Kafka) is deduplicated
    by its event id only.
    """
    if partition is not None and offset is not None and already_applied(state, topic, partition, offset):
        out = Outcome("", "")
        out.duplicate = True
        return out
    subject, payload = decoded
    if subject is None:
        out = Outcome("", "", rejection=payload)  # type: ignore[arg-type]
        reason = payload[0]
        state.counters.rejected[reason] = state.counters.rejected.get(reason, 0) + 1
    else:
        out = apply(state, subject, payload)  # type: ignore[arg-type]
    if partition is not None and offset is not None:
        state.source_offsets[f"{topic}:{partition}"] = offset
    return out
