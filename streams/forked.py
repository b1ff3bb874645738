"""Work on the state in a forked child (its hash, a snapshot's bytes): a copy-on-write image of one instant, so the fold never stops for it."""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger.state import LedgerState
from ledger.state_hash import state_hash

log = logging.getLogger("stockledger.fold")

CHILD_TIMEOUT_S = 300.0  # a child that has not answered by then is killed (the work is redone in-process)
_LENGTH = struct.Struct(">Q")  # the child's answer: its length, then the bytes

try:  # CPython's own SHA-256, not OpenSSL's: a lock another thread held at the fork cannot block the child
    from _sha256 import sha256 as builtin_sha256  # type: ignore[import-not-found]  # 3.11
except ImportError:  # pragma: no cover - 3.12 renamed the module
    try:
        from _sha2 import sha256 as builtin_sha256  # type: ignore[import-not-found,no-redef]
    except ImportError:
        builtin_sha256 = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Child:
    """A forked child computing bytes from the state as it was when it was forked."""

    pid: int
    read_fd: int
    started: float


def available() -> bool:
    return hasattr(os, "fork") and builtin_sha256 is not None


def fork_call(work: Callable[..., bytes], *args: Any) -> Child:
    """Fork now; the child writes work(*args) (bytes) to a pipe and exits.

    Only the child reads the state; the parent goes on folding and its writes copy the pages they touch.
    The child does no I/O but the pipe and leaves with os._exit (no atexit, no buffers flushed twice); it
    must not use OpenSSL (builtin_sha256) nor the parent's event loop, sockets or threads.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read_fd)
            # Signals are the parent's to handle: a Ctrl-C is ignored, a SIGTERM (a whole process group or
            # cgroup stopped) ends the child, and none is written to the parent's event loop wakeup fd.
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            answer = work(*args)
            view = memoryview(_LENGTH.pack(len(answer)) + answer)
            while view:
                view = view[os.write(write_fd, view):]
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    return Child(pid, read_fd, time.monotonic())


def collect(child: Child, timeout_s: float = CHILD_TIMEOUT_S) -> bytes | None:
    """Block until the child answers (run it in a thread): its bytes, or None if it failed or timed out."""
    data = bytearray()
    expected: int | None = None
    try:
        deadline = child.started + timeout_s
        while expected is None or len(data) < expected:
            ready, _, _ = select.select([child.read_fd], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                log.warning("the fold's child %d gave no answer in %.0f s: killed", child.pid, timeout_s)
                os.kill(child.pid, signal.SIGKILL)
                break
            chunk = os.read(child.read_fd, 1 << 20)
            if not chunk:
                break
            data += chunk
            if expected is None and len(data) >= _LENGTH.size:
                expected = _LENGTH.size + _LENGTH.unpack_from(data)[0]
    finally:
        os.close(child.read_fd)
        _, status = os.waitpid(child.pid, 0)
    if status != 0 or expected is None or len(data) != expected:
        log.warning("the fold's child %d failed (wait status %d, %d bytes)", child.pid, status, len(data))
        return None
    return bytes(data[_LENGTH.size:])


def hash_work(state: LedgerState) -> bytes:
    """In the child: the hex state hash."""
    return state_hash(state, new_sha256=builtin_sha256).encode()


def fork_hash(state: LedgerState) -> Child:
    return fork_call(hash_work, state)


def collect_hash(child: Child, timeout_s: float = CHILD_TIMEOUT_S) -> str | None:
    answer = collect(child, timeout_s)
    return answer.decode() if answer is not None else None


def snapshot_work(ledger: Any, group: str, next_offset: int) -> bytes:
    """In the child: a snapshot's bytes and manifest (streams.snapshots.image), pickled for the parent."""
    from streams import snapshots

    return pickle.dumps(snapshots.image(ledger, group, next_offset, new_sha256=builtin_sha256), protocol=5)


def collect_snapshot(child: Child, timeout_s: float = CHILD_TIMEOUT_S) -> tuple[bytes, dict[str, Any]] | None:
    answer = collect(child, timeout_s)
    return pickle.loads(answer) if answer is not None else None  # noqa: S301 - our own child's answer
