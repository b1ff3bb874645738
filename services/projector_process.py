"""The projector's DuckDB writer in a process of its own: the consumer's process decodes, this one commits.

A projector that owns its DuckDB file hands each prepared batch (Arrow tables and next offsets) to this process,
which holds the connection and the books (services.projector.LedgerStore) and answers with the rows inserted. In
one process the commit thread and the consumer's thread contended for the GIL: DuckDB takes it to check for
signals while it runs a statement, the legs and the Arrow calls around the statements need it, and each hand-over
cost both threads (bench/audit, BENCHMARKS.md "The projector, third pass"). Here the two sides run on two cores.

Exactly-once is unchanged: rows and offsets are still one DuckDB transaction, and the consumer's process learns the
stored offsets from this process when it starts and after a failed commit. If the consumer's process dies (kill -9),
this one is killed with it (Linux: PR_SET_PDEATHSIG; elsewhere it exits when the pipe closes) and holds no lock
after it: the transaction in flight is committed whole or not at all, as before. PR_SET_PDEATHSIG fires when the
thread that started the process exits: make the Projector on a thread that outlives it (the CLI, the bench and the
tests make it on their main thread; `stockledger serve` shares its connection and starts no writer process).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from services.parent_tie import die_with_parent

START_TIMEOUT_S = 120  # a spawned interpreter importing duckdb and pyarrow on a loaded machine


class WriterGone(RuntimeError):
    """The writer process exited: the projector stops (the batch in flight was committed whole or not at all)."""


class _Rows:
    """A statement's rows, answered by the writer process (what the callers of execute read)."""

    def __init__(self, rows: list[tuple[Any, ...]]):
        self._rows = rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for the next batch instead of returning it to the kernel at once.

    Every batch allocates and frees a few hundred MB (Python objects, Arrow buffers, DuckDB's vectors); with the
    defaults the top of the heap is trimmed and large blocks are unmapped after each batch, and the next batch pays
    the kernel's page faults again (the projector's system CPU was 1.4-2.2 s per 300,000 records against 0.2 s for
    the raw consumer). Measured: 9.5-10.0 vs 10.2-10.5 CPU s (bench/audit, same run). The memory stays with the
    process (its RSS is the peak batch's). No-op where malloc is not glibc's.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: trim the heap's top only beyond 1 GiB free
        libc.mallopt(-2, 256 << 20)  # M_TOP_PAD: grow the heap 256 MiB at a time
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks up to 32 MiB (glibc's maximum) come from the heap


def _serve(conn: Connection, path: str, parent_pid: int) -> None:
    """The writer process: open the file, then answer requests until told to close (or the parent is gone)."""
    die_with_parent(parent_pid)  # a kill -9 leaves no process holding the DuckDB file's lock
    keep_freed_memory()
    import duckdb

    from services.projector import GC_PAUSED, LedgerStore

    try:
        con = duckdb.connect(path)
        # One writer, one insert per table per batch, beside the consumer's process: DuckDB's parallel inserts cost
        # twice the CPU for the same wall time on two cores (measured: 2.2 vs 2.6 CPU s per 200,000 records).
        con.execute("SET threads = 1")
        store = LedgerStore(con)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", exc))
        return
    conn.send(("ok", None))
    failed: BaseException | None = None  # a checkpoint after a write failed: the next write answers with it
    while True:
        try:
            op, args = conn.recv()
        except (EOFError, OSError):  # the parent is gone without a close: the WAL is replayed by the next opener
            os._exit(1)
        try:
            if failed is not None and op == "write":  # not a read's: the projector learns it from its next commit
                exc, failed = failed, None
                raise exc
            if op == "close":
                store.close()
                conn.send(("ok", None))
                return
            if op == "write":
                with GC_PAUSED:
                    value: Any = store.write(*args)
            elif op == "state":
                value = store.state()
            else:  # execute
                value = store.execute(*args).fetchall()
        except BaseException as exc:  # noqa: BLE001 - every failure is the parent's to raise
            try:
                conn.send(("error", exc))
            except Exception:  # noqa: BLE001 - an exception that does not pickle goes as its text
                conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
            continue
        conn.send(("ok", value))
        if op == "write":
            try:
                store.maintain()  # the checkpoint, after the commit's answer (LedgerStore.__init__ says why)
            except BaseException as exc:  # noqa: BLE001 - the next write gets it
                failed = exc


class WriterProcess:
    """The consumer's side: a LedgerStore's methods (state, write, execute, close), each answered by the process.

    Safe to call from two threads (the projector commits on one and may read on the other): one request at a time.
    """

    def __init__(self, path: Path | str):
        ctx = multiprocessing.get_context("spawn")  # not fork: the parent has Kafka and Arrow threads
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, str(path), os.getpid()), name="projector-writer",
                                    daemon=True)
        self._process.start()
        child.close()
        self._lock = threading.Lock()
        self._closed = False
        if not self._conn.poll(START_TIMEOUT_S):
            self._process.kill()
            raise WriterGone(f"the projector's writer process did not open {path} within {START_TIMEOUT_S} s")
        self._answer()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _answer(self) -> Any:
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise WriterGone(f"the projector's writer process exited (code {self._process.exitcode})") from exc
        if status == "error":
            raise value
        return value

    def _send(self, op: str, args: tuple[Any, ...]) -> None:
        if self._closed:
            raise WriterGone("the projector's writer process is closed")
        try:
            self._conn.send((op, args))
        except (BrokenPipeError, OSError) as exc:
            raise WriterGone(f"the projector's writer process exited (code {self._process.exitcode})") from exc
        except BaseException:
            # Interrupted (Ctrl-C) part-way: the pipe may hold part of a request, which the process would take the
            # next request's bytes to complete. No transaction has begun for it: end the process (as a kill -9 of
            # the projector would) rather than leave a close() waiting for an answer that never comes.
            self.kill()
            raise

    def _call(self, op: str, *args: Any) -> Any:
        with self._lock:
            self._send(op, args)
            return self._answer()

    def state(self) -> tuple[dict[tuple[str, int], int], int]:
        return self._call("state")

    def write(self, tables: dict[str, Any], next_offsets: dict[tuple[str, int], int], now_us: int) -> Any:
        """LedgerStore.write in the writer process: its WriteOutcome."""
        return self._call("write", tables, next_offsets, now_us)

    def begin_write(self, tables: dict[str, Any], next_offsets: dict[tuple[str, int], int], now_us: int) -> None:
        """Send a write from this thread; end_write (on any thread) reads its answer. Until then no other request
        goes out.

        Why the caller's thread sends: a batch's tables are ~14 MB, written to the pipe in pieces, and the sending
        thread takes the GIL back after each piece. Sent from the commit thread while the consumer's thread was
        busy in Python, each piece waited up to the GIL's switch interval (5 ms): a batch took about a second to
        leave (bench/audit; BENCHMARKS.md, "The projector, fourth pass"). The consumer's thread sends it in one go
        while the writer process reads.
        """
        self._lock.acquire()
        try:
            self._send("write", (tables, next_offsets, now_us))
        except BaseException:
            self._lock.release()
            raise

    def end_write(self) -> Any:
        """The answer to begin_write: its WriteOutcome (or its error, raised)."""
        try:
            return self._answer()
        finally:
            self._lock.release()

    def execute(self, sql: str, params: Any = None) -> _Rows:
        """A read on the projector's file (no other process may open it while the projector runs)."""
        return _Rows(self._call("execute", sql, params))

    def kill(self) -> None:
        """End the process now (SIGKILL): whatever it had not committed is not (the next opener replays the WAL).
        Needs no lock: a request in flight is answered with WriterGone."""
        self._closed = True
        self._process.kill()
        self._process.join()
        with contextlib.suppress(OSError):
            self._conn.close()

    def close(self) -> None:
        """Close the file (DuckDB checkpoints it) and wait for the process to exit."""
        if self._closed:  # closed, or killed (a request may still hold the lock)
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.send(("close", ()))
                self._answer()
            except (WriterGone, BrokenPipeError, OSError):
                pass  # already gone: nothing to close
            finally:
                self._conn.close()
                self._process.join(timeout=60)
                if self._process.is_alive():
                    self._process.kill()
                    self._process.join()
