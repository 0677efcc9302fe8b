"""Whether a process id is in use: for pid files and for per-process state left on disk."""

from __future__ import annotations

import os


def pid_exists(pid: int) -> bool:
    """True when a process ``pid`` exists.  Signal 0 sends nothing; a process we may not
    signal (another user's) exists too.  Zombies count as existing (see ``stack.processes``)."""
    if pid <= 0:  # 0 and negatives name process groups, never one process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
