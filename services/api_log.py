"""API routes of the Merkle log (`/log/...`): the latest signed head and proofs, the same documents the CLI writes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse

from services import log_proofs

router = APIRouter(prefix="/log", tags=["merkle log"])


def _cursor(request: Request):
    cur = request.app.state.connection().cursor()
    try:
        yield cur
    finally:
        cur.close()


Cur = Annotated[Any, Depends(_cursor)]
SIZE_MAX = (1 << 63) - 1


def _run(fn, *args):
    try:
        return fn(*args)
    except log_proofs.LogError as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/head", response_class=PlainTextResponse, summary="The latest signed checkpoint (C2SP signed note)")
def get_head(cur: Cur, size: Annotated[int | None, Query(ge=0, le=SIZE_MAX)] = None) -> str:
    return _run(log_proofs.head, cur, size).note


@router.get("/inclusion", summary="Inclusion proof of one input record against a signed head (verify with `log verify`)")
def get_inclusion(
    cur: Cur,
    event_id: Annotated[str | None, Query(max_length=512, description="input, posting batch or outcome event id")] = None,
    leaf: Annotated[int | None, Query(ge=0, le=SIZE_MAX)] = None,
    size: Annotated[int | None, Query(ge=1, le=SIZE_MAX, description="head size (default latest)")] = None,
) -> dict[str, Any]:
    if (event_id is None) == (leaf is None):
        raise HTTPException(422, "give exactly one of event_id and leaf")
    index = leaf if leaf is not None else _run(lambda: log_proofs.find_leaf(cur, event_id=event_id))
    return _run(log_proofs.inclusion_document, cur, index, _run(log_proofs.head, cur, size))


@router.get("/consistency", summary="Consistency proof between two signed heads")
def get_consistency(cur: Cur, old: Annotated[int, Query(ge=0, le=SIZE_MAX)],
                    new: Annotated[int | None, Query(ge=0, le=SIZE_MAX)] = None) -> dict[str, Any]:
    return _run(log_proofs.consistency_document, cur, _run(log_proofs.head, cur, old), _run(log_proofs.head, cur, new))
