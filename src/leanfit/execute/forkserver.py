"""The workers' fork server, and how their processes start; imports nothing heavy (no torch).

`leanfit search` starts the fork server as soon as it knows the search runs here, before it
imports the controller (torch, MLflow, plotting: seconds), so that the server imports torch and
the trainer for the workers meanwhile (see `leanfit.execute.local`).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
from multiprocessing import spawn as mp_spawn

# What the fork server imports once for every worker: the executor's module, torch, the trainer,
# the runners, what they load data with. None of it initialises CUDA.
PRELOAD = [
    "leanfit.execute.local",
    "leanfit.train.trial",
    "leanfit.execute.runners",
    "leanfit.data.sources",
]
# ... and where the workers train (not a dry run's synthetic objective): torch's compiler
# front end, which torch imports on the first optimiser made (`Optimizer.__init__` is wrapped to
# keep the compiler out), 1-1.3 s here. Each worker's first trial paid it, counted against its
# trial_timeout and in its wall time; the server pays it once for them all.
TRAINING_PRELOAD = [*PRELOAD, "torch._dynamo"]
WORKER_NAME = "leanfit-worker-"


def _without_main(get_preparation_data):
    """`multiprocessing.spawn.get_preparation_data`, less the main module for leanfit's workers.

    A worker runs `worker_main` and a runner named by its import path, so it needs nothing from
    the program that started the search; yet `multiprocessing` imports that program's main module
    anew in every spawned or forked-from-server child, which costs its imports (seconds for a
    script that imports a benchmark's peers) and runs a script's search again in each worker if
    it lacks an `if __name__ == "__main__"` guard. Other processes are left as they are."""

    def prepare(name):
        data = get_preparation_data(name)
        if str(name).startswith(WORKER_NAME):
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
        return data

    prepare.leanfit = True
    return prepare


if not getattr(mp_spawn.get_preparation_data, "leanfit", False):
    mp_spawn.get_preparation_data = _without_main(mp_spawn.get_preparation_data)


def worker_context(training: bool = True) -> mp.context.BaseContext:
    """The fork server preloaded with `TRAINING_PRELOAD` (`PRELOAD` where the workers will
    not train) where there is one, else spawn."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    # no effect once this process's server is running: the first call's choice stays
    ctx.set_forkserver_preload(TRAINING_PRELOAD if training else PRELOAD)
    return ctx


def start_fork_server(training: bool = True) -> None:
    """Start the workers' fork server now (it returns at once): the server imports torch while
    this process goes on with its own start, instead of before the first worker can fork.

    The server is started with SIGTERM and SIGINT ignored (`multiprocessing` has it ignore
    SIGINT only after its imports): a SIGTERM to the whole process group (`kill -- -PGID`,
    systemd) killed it, and the controller, which reads its workers' exit codes through it,
    then took each busy worker for dead (exit code 255) in the middle of its orderly stop. It
    still ends with the controller (its pipe's EOF). `training`: the workers will train (see
    `TRAINING_PRELOAD`)."""
    ctx = worker_context(training)
    if ctx.get_start_method() == "forkserver":
        import signal
        import threading
        from multiprocessing import forkserver

        _end_server_at_exit()
        if threading.current_thread() is not threading.main_thread():
            forkserver.ensure_running()  # a signal's handling can only change in the main thread
            return
        # an ignored signal stays so across the server's exec, and Python then installs no
        # handler of its own: a Ctrl-C while the server imported torch (its first 2 s) printed
        # its traceback (multiprocessing has it ignore SIGINT only once its imports are done)
        # ... and blocked meanwhile, as multiprocessing starts its resource tracker: a stop that
        # came to this process while they were ignored was lost (a search told to stop in its
        # first second ran to its end, exit 0); blocked, it waits, and comes once this
        # process's own handlers are back. The server unblocks them (still ignored) as it
        # imports this module (`_unblock_in_the_server`).
        # (multiprocessing's resource tracker starts first, with this process's handlers in
        # place: its start unblocks them at its end, which would deliver the stop as ignored)
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
        stops = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        try:
            if stops & signal.sigpending():  # (ignoring a pending signal would discard it)
                return
            before = {s: signal.signal(s, signal.SIG_IGN) for s in stops}
            try:
                forkserver.ensure_running()
            finally:
                for s, handler in before.items():
                    signal.signal(s, handler)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


@functools.cache
def _end_server_at_exit() -> None:
    """Have the fork server ended when this process exits, not left to end by itself (once).

    It ends once it reads its pipe's EOF, but only after its imports (torch, 1.5-3 s): a
    command that ended sooner (a search refused at its start, a short search) held whatever
    reads its output until then, since the server holds the command's stdout and stderr
    (`leanfit search ... | tee log`, `$(leanfit ...)`, a test's pipes: a refused search's
    output ended 2.5 s in, for a refusal decided in 0.4). Its workers are stopped by then (the
    executor's close)."""
    import atexit

    atexit.register(_end_server)


def _end_server() -> None:
    import contextlib
    import os
    import signal
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid is None:
        return
    with contextlib.suppress(OSError):  # (ChildProcessError: another's, or reaped already)
        if os.waitpid(pid, os.WNOHANG)[0] == 0:
            os.kill(pid, signal.SIGKILL)  # (it ignores SIGTERM: see start_fork_server)
            os.waitpid(pid, 0)


def _unblock_in_the_server() -> None:
    """In the fork server, started by `start_fork_server` with SIGTERM and SIGINT blocked and
    ignored: unblock them (they stay ignored), so that its workers, and what they start, get
    the usual signal mask. Nothing elsewhere (a process that blocks them but handles them)."""
    import signal

    stops = {signal.SIGTERM, signal.SIGINT}
    if not hasattr(signal, "pthread_sigmask") or not stops <= signal.pthread_sigmask(
        signal.SIG_BLOCK, set()
    ):
        return
    if all(signal.getsignal(s) is signal.SIG_IGN for s in stops):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


_unblock_in_the_server()
