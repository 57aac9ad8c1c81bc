"""Ctrl-C and SIGTERM stop a command the same way: where its records are whole, saying how to go on.

SIGTERM is how a process is asked to stop by `kill PID` (which leanfit's own message about a
search running elsewhere suggests), by Kubernetes when it deletes a pod, by `docker stop` and by
systemd. Its default action ends a process at once: a search's MLflow run stayed RUNNING, with no
word on the terminal. A command now takes it as it takes Ctrl-C (`KeyboardInterrupt`, then a
search's orderly stop), and exits 143 (128 + 15), as a shell reports a process ended by SIGTERM,
instead of Ctrl-C's 130. Imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

_received: list[int] = []  # the stop signals this process has had, in order


_asked: list[bool] = []  # a search's orderly stop asked for, while it runs (`ask`)


def note(signum: int) -> None:
    """Remember a stop signal, for the exit code and the message's first word."""
    _received.append(signum)


def ask(asked: bool = True) -> None:
    """Say that the running search was asked to stop (a first Ctrl-C), or (False) that it is
    over: a trial training in this very process (`leanfit.optimize(workers=0)`) stops at its
    next report instead of training its whole rung first."""
    _asked[:] = [True] if asked else []


def asked() -> bool:
    """Whether the search running in this process was asked to stop."""
    return bool(_asked)


def _raise_interrupt(signum, frame) -> None:
    note(signum)
    raise KeyboardInterrupt


def terminate_as_interrupt() -> None:
    """From now on SIGTERM raises `KeyboardInterrupt` in the main thread, as Ctrl-C does; not
    where SIGTERM is ignored or handled already (the process's parent chose that)."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupt)


def terminate_is_ours() -> bool:
    """Whether SIGTERM does what it does by default or what `terminate_as_interrupt` made it
    do: a search may then take it as Ctrl-C (not where a program has its own handling)."""
    return signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, _raise_interrupt)


def terminated() -> bool:
    """Whether the last stop signal was SIGTERM (not Ctrl-C)."""
    return bool(_received) and _received[-1] == signal.SIGTERM


def output_gone() -> bool:
    """Whether the command was stopped because its output's reader went away (`| head`): the
    first cause, whatever stop it then took (`leanfit run` stops its steps as at Ctrl-C)."""
    return signal.SIGPIPE in _received


def to_devnull(fd: int) -> None:
    """Point `fd` at /dev/null, its reader gone (`| head`): what is still written there, a last
    flush included, goes nowhere instead of raising BrokenPipeError again."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)


def exit_code() -> int:
    """128 + the stopping signal: 143 for SIGTERM, 141 for a pipe closed by its reader (as a
    shell reports a command SIGPIPE ended), 130 for Ctrl-C (and for an interrupt that came
    with no signal)."""
    if terminated():
        return 128 + signal.SIGTERM
    return 128 + (signal.SIGPIPE if output_gone() else signal.SIGINT)


def said(message: str) -> str:
    """`message` with its leading "interrupted" made "terminated (SIGTERM)", or said of a
    closed pipe, where that was the stop."""
    if message.startswith("interrupted"):
        if terminated():
            return "terminated (SIGTERM)" + message[len("interrupted") :]
        if output_gone():
            return (
                "stopped: its output's reader went away (a pipe closed, as by `| head`)"
                + message[len("interrupted") :]
            )
    return message


def sleep(seconds: float) -> None:
    """`time.sleep` that Ctrl-C and SIGTERM end within a quarter of a second. The kernel hands a
    signal sent to the process to any of its threads that does not block it (torch's, MLflow's
    and SQLAlchemy's are several); Python runs the handler in the main thread, but only once
    that thread next runs Python code, and a main thread asleep in `time.sleep` for the whole
    span is woken only by a signal handed to it. `leanfit watch --interval 1h` sent Ctrl-C while
    waiting for its next check went on waiting, about one time in two here."""
    import time

    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.25))


@contextlib.contextmanager
def held_off() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait for the end of the block, then act as they would have: for work
    that a stop in its middle would leave broken for good (MLflow creating a new database's
    tables, 3 to 8 s: an interrupt there left a half-made database that no later command could
    open). In the main thread only (where handlers live); elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    held = [s for s, h in before.items() if h not in (signal.SIG_IGN, None)]
    for s in held:
        signal.signal(s, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        for s in held:
            signal.signal(s, before[s])
        for s in dict.fromkeys(got):  # each once, now that it can act
            os.kill(os.getpid(), s)


def run_script(main, kept: str) -> None:
    """A script's `main()`, where Ctrl-C (SIGTERM too) ends it with `kept` (what is kept, how
    to go on) and exit 130 (143), and leanfit's own refusal (a missing experiment file, a
    search whose every trial failed) in its one line and exit 2, not a traceback and exit 1.
    For the benchmark scripts."""
    import sys

    from leanfit.errors import LeanfitError

    terminate_as_interrupt()
    try:
        code = main()
    except KeyboardInterrupt:
        print(said(f"interrupted: {kept}"), file=sys.stderr)
        raise SystemExit(exit_code()) from None
    except LeanfitError as e:
        print(f"error: {e}; {kept}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(code if isinstance(code, int) else 0)
