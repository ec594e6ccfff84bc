"""Process liveness, shared by the job framework (is a job's owner still alive on
this host?) and the local stack launcher."""

from __future__ import annotations

import contextlib
import os


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie child of ours."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True
