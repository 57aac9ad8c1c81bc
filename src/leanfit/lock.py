"""One process at a time for a piece of work in a work folder: a search, a pipeline run.

A lock file under the work folder, held with `flock` for as long as the work runs: the OS frees it
when its process ends, `kill -9` included, so a crash never leaves it stuck. The file holds the
holder's process id and start time, for the message that refuses a second process.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from leanfit.errors import LeanfitError


@contextlib.contextmanager
def held_lock(
    path: Path,
    busy: Callable[[str, str], str] | None = None,
    error: Callable[[str, str, str], LeanfitError] | None = None,
) -> Iterator[None]:
    """Hold the lock at `path`, or refuse with `busy(holder's pid, since when)` as the message
    where another process holds it (raised as `error(message, pid, since)`, a LeanfitError by
    default); without `busy`, wait until it is let go. Where locks cannot work (not POSIX, a
    file system without them, as some network mounts are) there is no guard."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # (not through a link: a lock file in a shared /tmp, linked by another user to a file
        # of this one's, had that file truncated and overwritten)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        if path.is_symlink():
            raise LeanfitError(
                f"the lock file {path} is a symbolic link (to {os.readlink(path)}), which leanfit "
                "does not follow: remove the link"
            ) from None
        raise LeanfitError(f"cannot open the lock file {path}: {e.strerror}") from None
    with os.fdopen(fd, "a+") as handle:  # the lock goes with the file's closing
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy is not None else 0))
            locked = True
        except BlockingIOError:  # (only without waiting)
            handle.seek(0)
            pid, since = (handle.read().split() + ["?", "?"])[:2]
            message = busy(pid, since)
            raise (error(message, pid, since) if error else LeanfitError(message)) from None
        except OSError:
            locked = False
        if locked:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
            handle.flush()
        yield
