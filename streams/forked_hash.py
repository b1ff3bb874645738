"""The state hash computed in a forked child: a copy-on-write image of the state at one instant, so the fold never stops for it."""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from dataclasses import dataclass

from ledger.state import LedgerState
from ledger.state_hash import state_hash

log = logging.getLogger("stockledger.fold")

HEX_DIGEST_CHARS = 64
CHILD_TIMEOUT_S = 120.0  # a child that has not answered by then is killed (the hash is retried, in-process)

try:  # CPython's own SHA-256, not OpenSSL's: a lock another thread held at the fork cannot block the child
    from _sha256 import sha256 as _builtin_sha256  # type: ignore[import-not-found]  # 3.11
except ImportError:  # pragma: no cover - 3.12 renamed the module
    try:
        from _sha2 import sha256 as _builtin_sha256  # type: ignore[import-not-found,no-redef]
    except ImportError:
        _builtin_sha256 = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Child:
    """A forked child hashing the state as it was when it was forked."""

    pid: int
    read_fd: int
    started: float


def available() -> bool:
    return hasattr(os, "fork") and _builtin_sha256 is not None


def fork_hash(state: LedgerState) -> Child:
    """Fork now; the child writes the hex hash of the state as of this instant to a pipe and exits.

    Only the child reads the state; the parent goes on folding and its writes copy the pages they touch.
    The child does no I/O but the pipe and leaves with os._exit (no atexit, no buffers flushed twice).
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read_fd)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle
            os.write(write_fd, state_hash(state, new_sha256=_builtin_sha256).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    return Child(pid, read_fd, time.monotonic())


def collect(child: Child, timeout_s: float = CHILD_TIMEOUT_S) -> str | None:
    """Block until the child answers (run it in a thread): the hex hash, or None if it failed or timed out."""
    data = b""
    try:
        deadline = child.started + timeout_s
        while len(data) < HEX_DIGEST_CHARS:
            ready, _, _ = select.select([child.read_fd], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                log.warning("the state hash child %d gave no answer in %.0f s: killed", child.pid, timeout_s)
                os.kill(child.pid, signal.SIGKILL)
                break
            chunk = os.read(child.read_fd, HEX_DIGEST_CHARS)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(child.read_fd)
        _, status = os.waitpid(child.pid, 0)
    if status != 0 or len(data) != HEX_DIGEST_CHARS:
        log.warning("the state hash child %d failed (wait status %d, %d bytes)", child.pid, status, len(data))
        return None
    return data.decode()
