"""What applying one event yields: postings, emitted events, and a rejection or none."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Posting(NamedTuple):
    """One double-entry leg pair: amount of asset moves from debit_account to credit_account."""

    debit_account: str
    credit_account: str
    asset: str
    amount_minor: int


@dataclass(slots=True)
class Outcome:
    """Result of apply(); state changes only when rejection is None."""

    event_id: str
    subject: str
    postings: list[Posting] = field(default_factory=list)
    emitted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (subject, record)
    rejection: tuple[str, str] | None = None  # (reason, detail)
    duplicate: bool = False

    def post(self, debit_account: str, credit_account: str, asset: str, amount_minor: int) -> None:
        """Record a movement; negative amounts flip direction, zero is dropped (postings are positive)."""
        if amount_minor > 0:
            self.postings.append(Posting(debit_account, credit_account, asset, amount_minor))
        elif amount_minor < 0:
            self.postings.append(Posting(credit_account, debit_account, asset, -amount_minor))

    def emit(self, subject: str, record: dict[str, Any]) -> None:
        self.emitted.append((subject, record))


def derived_event_id(kind: str, cause_event_id: str, n: int = 0) -> str:
    """Deterministic id of an event the ledger emits, from its cause, so re-emission is recognised."""
    return f"{kind}:{cause_event_id}" if n == 0 else f"{kind}:{cause_event_id}:{n}"
