"""API bearer tokens: made by `stockledger token create`, stored only as SHA-256 hashes, each with one role.

Roles: ``auditor`` (every read, exports, snapshots), ``operator`` (health and progress), ``holder`` (an
account holder: only the balances and history of accounts ``user:<account>:...`` and their own PoR
proof). A token is ``slt_<id>_<secret>``: the id finds the record, the hash of the whole token is
compared in constant time. Tokens carry 256 bits of randomness, so an unsalted fast hash is enough (a
stolen file gives no token back); the file is still written 0600.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

AUDITOR = "auditor"
OPERATOR = "operator"
HOLDER = "holder"
ROLES = (AUDITOR, OPERATOR, HOLDER)
TOKEN_PREFIX = "slt"
_TOKEN = re.compile(rf"^{TOKEN_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class TokenError(ValueError):
    """A bad role, account, token id or token file; never carries a token."""


@dataclass(frozen=True)
class TokenRecord:
    id: str
    role: str
    account: str | None  # holder tokens only: the account id, e.g. acct-0001
    sha256: str
    label: str
    created_at_us: int

    def owns(self, ledger_account: str) -> bool:
        """Whether a ledger account (user:<account>:wallet:AAPL, user:<account>:lp, ...) is this holder's."""
        if self.role != HOLDER or self.account is None:
            return False
        return ledger_account.startswith(f"user:{self.account}:")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The token file, re-read when it changes (a token made or revoked takes effect without a restart)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._records: dict[str, TokenRecord] = {}

    def _load(self) -> dict[str, TokenRecord]:
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._seen, self._records = None, {}
                return self._records
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise TokenError(f"{self.path} is readable by others; chmod 600 {self.path}")
            key = (st.st_mtime_ns, st.st_size)
            if key != self._seen:
                doc = json.loads(self.path.read_text(encoding="utf-8"))
                self._records = {r["id"]: TokenRecord(**r) for r in doc.get("tokens", [])}
                self._seen = key
            return self._records

    def records(self) -> list[TokenRecord]:
        return sorted(self._load().values(), key=lambda r: r.created_at_us)

    def authenticate(self, token: str) -> TokenRecord | None:
        """The record of a presented token, or None (unknown, revoked or malformed)."""
        m = _TOKEN.match(token)
        if m is None:
            return None
        record = self._load().get(m.group(1))
        if record is None or not hmac.compare_digest(record.sha256, _digest(token)):
            return None
        return record

    def _write(self, records: list[TokenRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"tokens": [asdict(r) for r in records]}, out, indent=2)
            out.write("\n")
        os.replace(tmp, self.path)

    def create(self, role: str, account: str | None = None, label: str = "") -> tuple[TokenRecord, str]:
        """A new token; the token itself is returned once and never stored."""
        if role not in ROLES:
            raise TokenError(f"unknown role {role!r}; one of: {', '.join(ROLES)}")
        if (role == HOLDER) != (account is not None):
            raise TokenError("an account is given with the holder role, and only with it")
        if account is not None and not _ACCOUNT.match(account):
            raise TokenError(f"account {account!r}: letters, digits, '.', '_' or '-' (e.g. acct-0001)")
        token_id = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
        record = TokenRecord(token_id, role, account, _digest(token), label, time.time_ns() // 1000)
        self._write([*self.records(), record])
        return record, token

    def revoke(self, token_id: str) -> TokenRecord:
        records = self.records()
        doomed = next((r for r in records if r.id == token_id), None)
        if doomed is None:
            raise TokenError(f"no token with id {token_id!r} in {self.path}")
        self._write([r for r in records if r.id != token_id])
        return doomed


class RateLimiter:
    """At most `per_minute` calls per key in any sliding 60 s window."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._calls: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def retry_after_s(self, key: str, now: float | None = None) -> int:
        """0 and the call is counted, or the seconds to wait before the next call is allowed."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._calls.get(key, []) if now - t < 60.0]
            if len(recent) >= self.per_minute:
                self._calls[key] = recent
                return max(1, int(60.0 - (now - recent[0])) + 1)
            recent.append(now)
            self._calls[key] = recent
            return 0
