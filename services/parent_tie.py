"""A child process that must not outlive its parent: killed with it (Linux PR_SET_PDEATHSIG), checked at start."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies; exit now if the parent is already gone.

    PR_SET_PDEATHSIG fires when the thread that started this process ends, so the parent starts it from a
    thread that lives as long as it does (its main or event-loop thread). Elsewhere than Linux the call is a
    no-op and the caller's own check (a closed pipe, the parent pid) has to do.
    """
    with contextlib.suppress(OSError, AttributeError):  # no libc prctl: not Linux
        if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            print(f"PR_SET_PDEATHSIG failed (errno {ctypes.get_errno()}): this process may outlive its parent",
                  file=sys.stderr, flush=True)
    if os.getppid() != parent_pid:  # it died before the line above: nobody is left to stop this one
        os._exit(1)
