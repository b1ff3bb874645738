"""API route of a proof of reserves: `GET /por/proof`, an account's inclusion proof from `por prove --all`.

A holder gets only the proof of its own account; an auditor any account's. The proofs are files written
by `stockledger por prove --root ROOT --all --out DIR` (one fold for every account) and the root they are
proven against (`por-root.json` in the same directory, if it is there); `serve --por-dir DIR` names the
directory. Nothing here recomputes anything: the proof is what the operator published, and the holder
checks it offline with `stockledger por verify`.
"""


from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from services import strict_json
from services.auth import HOLDER, TokenRecord
from services.por import proof_file_name

router = APIRouter(prefix="/por", tags=["proof of reserves"])
ROOT_FILE = "por-root.json"


def proof_route(reader_dependency: Any) -> None:
    """Register the route with the app's reader dependency (auditor or holder), kept in services.api."""

    @router.get("/proof", summary="An account's proof of reserves inclusion proof, with the root it is proven against "
                "(a holder: its own account only)")
    def get_proof(request: Request, who: Annotated[TokenRecord, reader_dependency],
                  account: Annotated[str | None, Query(max_length=256, description="auditors: which account")] = None
                  ) -> dict[str, Any]:
        if who.role == HOLDER:
            if account is not None and account != who.account:
                raise HTTPException(403, "a holder token reads its own proof only")
            account = who.account
        if not account:
            raise HTTPException(422, "say which account (?account=...)")
        por_dir: Path | None = request.app.state.por_dir
        if por_dir is None:
            raise HTTPException(404, "this server publishes no proofs (start it with --por-dir)")
        try:
            proof = strict_json.read_document(por_dir / proof_file_name(account), "the proof")
        except strict_json.DocumentError:
            raise HTTPException(404, f"no proof for account {account[:60]!r} in the published set") from None
        root_path = por_dir / ROOT_FILE
        root = strict_json.read_document(root_path, "the root") if root_path.exists() else None
        return {"account": account, "proof": proof, "root": root}
