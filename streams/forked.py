"""Work on the state in a forked child (its hash, a snapshot's bytes): a copy-on-write image of one instant, so the fold never stops for it."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import pickle
import select
import signal
import struct
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger.state import LedgerState
from ledger.state_hash import state_hash
from services.parent_tie import die_with_parent

log = logging.getLogger("stockledger.fold")

CHILD_TIMEOUT_S = 300.0  # a child that has not answered by then is killed (the work is redone in-process)
_LENGTH = struct.Struct(">Q")  # the child's answer: its length, then the bytes
PIPE_BYTES = 1 << 20  # the answer pipe's capacity (Linux's default pipe-max-size)

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


def fork_call(work: Callable[..., bytes], *args: Any) -> Child | None:
    """Fork now; the child writes work(*args) (bytes) to a pipe and exits. None if the fork failed.

    Only the child reads the state; the parent goes on folding and its writes copy the pages they touch.
    The child must not use OpenSSL (builtin_sha256), the parent's event loop, sockets or threads: another
    thread may have held one of their locks at the fork. It leaves with os._exit (no atexit, no buffers
    flushed twice).
    """
    read_fd, write_fd = os.pipe()
    # The collector thread reads the answer in pipe-sized pieces and must take the GIL back from the busy fold after
    # each one (a switch interval each): 1 MiB pieces, not Linux's default 64 KiB, so a 4 MB snapshot is a few
    # reads, not ~70.
    with contextlib.suppress(OSError, AttributeError):  # F_SETPIPE_SZ: Linux only, capped by pipe-max-size
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError as exc:  # out of memory or processes: the caller does the work itself
        os.close(read_fd)
        os.close(write_fd)
        log.warning("cannot fork the fold's child (%s): working in-process", exc)
        return None
    if pid == 0:  # the child
        _run_child(work, args, read_fd, write_fd, parent)
    os.close(write_fd)
    return Child(pid, read_fd, time.monotonic())


def _run_child(work: Callable[..., bytes], args: tuple, read_fd: int, write_fd: int, parent: int) -> None:
    code = 1
    try:
        # A collection would write every object's GC header: a copy of the parent's whole heap.
        gc.disable()
        os.close(read_fd)
        # Nothing of the parent's but the pipe and stdio: its listening web socket and broker connections
        # must not outlive it in this child.
        os.closerange(3, write_fd)
        os.closerange(write_fd + 1, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)
        # Signals are the parent's to handle: a Ctrl-C is ignored, a SIGTERM (a whole process group or
        # cgroup stopped) ends the child, and none is written to the parent's event loop wakeup fd.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        die_with_parent(parent)  # a kill -9 of the worker takes the child with it
        answer = work(*args)
        view = memoryview(_LENGTH.pack(len(answer)) + answer)
        while view:
            view = view[os.write(write_fd, view):]
        code = 0
    except BaseException:  # noqa: BLE001 - reported on stderr, then the exit code says it failed
        with contextlib.suppress(Exception):
            os.write(2, f"fold child {os.getpid()} failed:\n{traceback.format_exc()}".encode())
    finally:
        os._exit(code)


def collect(child: Child, timeout_s: float = CHILD_TIMEOUT_S) -> bytes | None:
    """Block until the child answers (run it in a thread): its bytes, or None if it failed or timed out.

    Always closes the pipe and reaps the child, whatever goes wrong.
    """
    data = bytearray()
    expected: int | None = None
    try:
        poller = select.poll()
        poller.register(child.read_fd, select.POLLIN)
        deadline = child.started + timeout_s
        while expected is None or len(data) < expected:
            if not poller.poll(max(deadline - time.monotonic(), 0) * 1000):
                log.warning("the fold's child %d gave no answer in %.0f s: killed", child.pid, timeout_s)
                os.kill(child.pid, signal.SIGKILL)
                break
            chunk = os.read(child.read_fd, 1 << 20)
            if not chunk:
                break
            data += chunk
            if expected is None and len(data) >= _LENGTH.size:
                expected = _LENGTH.size + _LENGTH.unpack_from(data)[0]
    except Exception as exc:  # noqa: BLE001 - any failure here is the child's failure: the caller falls back
        log.warning("reading the fold's child %d failed: %r", child.pid, exc)
        kill(child)
        expected = None
    finally:
        os.close(child.read_fd)
        try:
            _, status = os.waitpid(child.pid, 0)
        except ChildProcessError:  # reaped elsewhere
            status = -1
    if status != 0 or expected is None or len(data) != expected:
        log.warning("the fold's child %d failed (wait status %d, %d bytes)", child.pid, status, len(data))
        return None
    return bytes(memoryview(data)[_LENGTH.size:])


def kill(child: Child) -> None:
    """Stop a child whose answer is no longer wanted (its collector still reaps it)."""
    with contextlib.suppress(OSError):
        os.kill(child.pid, signal.SIGKILL)


def answer_of(child: Child, decode: Callable[[bytes], Any]) -> asyncio.Future:
    """Collect the child's answer in a thread from now on (so it is reaped even if nobody awaits it)."""

    def run() -> Any:
        answer = collect(child)
        if answer is None:
            return None
        try:
            return decode(answer)
        except Exception as exc:  # noqa: BLE001 - a garbled answer is a failed child
            log.warning("the fold's child %d answered garbage: %r", child.pid, exc)
            return None

    return asyncio.get_running_loop().run_in_executor(None, run)


def hash_work(state: LedgerState) -> bytes:
    """In the child: the hex state hash."""
    return state_hash(state, new_sha256=builtin_sha256).encode()


def snapshot_work(ledger: Any, group: str, next_offset: int, log_size: int, log_root: str) -> bytes:
    """In the child: a snapshot's bytes and manifest (streams.snapshots.image), pickled for the parent.

    The Merkle log's root comes from the parent (it hashes with OpenSSL, which the child must not use).
    """
    from streams import snapshots

    return pickle.dumps(snapshots.image(ledger, group, next_offset, new_sha256=builtin_sha256,
                                        log_head=(log_size, log_root)), protocol=5)


def unpickle(answer: bytes) -> Any:
    return pickle.loads(answer)  # noqa: S301 - our own child's answer
