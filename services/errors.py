"""The one error handler of the CLI (one line, non-zero exit, traceback only with --debug) and of the API (4xx with a message)."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

DEBUG_FLAG = "--debug"
MESSAGE_MAX_CHARS = 300  # a message echoes at most this much of a bad value
EXIT_ERROR = 2  # bad input, a missing or busy file, an unreachable broker
EXIT_BUG = 3  # the core stopped on a bug (RuleError): the message names the record
EXIT_INTERRUPTED = 130


class InputError(Exception):
    """Bad input a person can fix (a file that is not an archive, a truncated one): one line, EXIT_ERROR."""


def one_line(exc: BaseException, max_chars: int = MESSAGE_MAX_CHARS) -> str:
    """A single bounded line that says what went wrong, whatever the exception."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    elif isinstance(exc, RecursionError):
        text = "input nested too deeply"
    else:
        text = str(exc).strip() or type(exc).__name__
        if isinstance(exc, EOFError | KeyError | IndexError | RecursionError | MemoryError | OverflowError):
            text = f"{type(exc).__name__}: {text}"
    text = " ".join(text.split())  # one line
    return text if len(text) <= max_chars else f"{text[:max_chars]}... ({len(text):,} chars)"


def is_bug(exc: BaseException) -> bool:
    from ledger.engine import RuleError
    from services.replay import ReplayHalted
    from streams.step import FoldHalted

    return isinstance(exc, RuleError | ReplayHalted | FoldHalted)


def run(command: click.Command | Any, argv: Sequence[str] | None = None, prog_name: str = "stockledger") -> int:
    """Run a Typer/Click app; every exception becomes one line on stderr and an exit code (EXIT_*)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args or os.environ.get("STOCKLEDGER_DEBUG") == "1"
    if DEBUG_FLAG in args:  # accepted anywhere on the line; the root command declares it (for --help)
        args = [DEBUG_FLAG] + [a for a in args if a != DEBUG_FLAG]
    try:
        result = command(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as usage:
        usage.show()
        return usage.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt) as stop:
        cause = stop.__cause__ or stop.__context__
        if isinstance(stop, KeyboardInterrupt) or isinstance(cause, KeyboardInterrupt) or cause is None:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        return _report(cause, debug)  # click turns an EOFError (a truncated file) into Abort: it is an error
    except Exception as exc:  # noqa: BLE001 - the one place where an error becomes a message
        return _report(exc, debug)
    return result if isinstance(result, int) else 0


def _report(exc: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(exc)
    bug = is_bug(exc)
    hint = "" if debug else f" (run with {DEBUG_FLAG} for the traceback)"
    print(f"{'bug' if bug else 'error'}: {one_line(exc)}{hint if bug else ''}", file=sys.stderr)
    return EXIT_BUG if bug else EXIT_ERROR


def http_error(exc: Exception) -> tuple[int, str]:
    """(status, message) for an API error: bad request input is a 4xx, never a 500 with a traceback."""
    if isinstance(exc, ValueError | OverflowError | RecursionError | KeyError):
        return 400, one_line(exc)
    return 500, "internal error"
