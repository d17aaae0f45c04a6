"""Host processes named by pid, without mistaking a recycled pid for the one we started."""

from __future__ import annotations

import os
import signal
import time

__all__ = ["alive", "kill_verified", "start_time"]


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        if fields[0] == b"Z":  # a zombie has finished: it is not alive
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def alive(pid: int | None, started: int | None) -> bool:
    """True if ``pid`` runs and is the same process that started at ``started`` ticks."""
    if not pid or pid <= 0:
        return False
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def kill_verified(pid: int | None, started: int | None, sig: int = signal.SIGKILL, wait: float = 2.0) -> None:
    """Signal the process if it is still the one we know, then wait up to ``wait`` s for it to go."""
    if not alive(pid, started):
        return
    assert pid is not None
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while alive(pid, started) and time.monotonic() < deadline:
        time.sleep(0.01)
