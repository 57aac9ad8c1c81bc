"""Local executor: N long-lived worker processes, isolated from the controller.

A worker pays the start-up costs once (Python, torch, MLflow, the data) and then trains one trial
after another. A trial that crashes its worker (segfault, out-of-memory kill) or hangs past the
per-trial timeout takes only its own worker down: the worker is replaced and the outcome says what
happened. With GPUs, each worker sees one (CUDA_VISIBLE_DEVICES), round-robin.

Workers are forked from a fork server that has imported torch and leanfit's trainer once
(`multiprocessing`'s "forkserver" start method with a preload), so N workers pay one torch import
between them instead of N at once, and a crashed worker's replacement is ready in a fraction of a
second. The server imports torch without initialising CUDA, and each worker takes the controller's
environment of the moment it starts (CUDA_VISIBLE_DEVICES included) before it builds its runner,
as a spawned process would. Where there is no fork server (not POSIX), workers are spawned.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from leanfit.errors import failure_reason
from leanfit.execute.base import Executor, JobOutcome, RunnerSpec, TrialJob
from leanfit.execute.forkserver import WORKER_NAME, worker_context
from leanfit.train.result import TrainResult
from leanfit.train.trial import TrialSpec

IMPORTED_IN = os.getpid()  # in a forked worker: the fork server's, which imported all this


def worker_main(conn: Connection, runner_spec: RunnerSpec, environ: dict[str, str]) -> None:
    """A worker's life: build the runner once, then run every spec it is sent.

    `environ` is the controller's environment when the worker started: a forked worker would
    otherwise see the fork server's, from when that started."""
    os.environ.clear()
    os.environ.update(environ)
    # Ctrl-C reaches the terminal's whole process group, and SIGTERM may too (`kill -- -PGID`,
    # systemd): the controller handles it (it stops the search where its records are whole,
    # then stops the workers, killing a busy one); a worker must not die of it mid-trial, which
    # would read as a crash, nor print its traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    lock = threading.Lock()  # the runner's threads may print while this one sends a result

    def send(message) -> None:
        with lock:
            conn.send(message)

    sys.stdout = _Relayed(send, "stdout", sys.stdout)
    sys.stderr = _Relayed(send, "stderr", sys.stderr)
    try:
        runner = runner_spec.build()
    except BaseException:  # noqa: BLE001 - reported to the controller, which stops the search
        _drain()
        started = ("fatal", traceback.format_exc())
    else:
        started = ("ready", time.monotonic())  # the system's monotonic clock, as the controller's
    try:
        send(started)
    except (BrokenPipeError, ConnectionResetError):
        # the controller is gone (a stop while this worker started: it ended before it heard
        # from the worker, whose traceback then came after the command's last line)
        return
    if started[0] == "fatal":
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, ConnectionResetError, KeyboardInterrupt):
            # the controller is gone: its end of the pipe closed (EOF) or reset under a read
            # (a kill -9 mid-message), which printed a traceback on the user's terminal
            return
        if message is None:
            # Exit at once: the interpreter's teardown (torch, its thread pools) takes about a
            # second, which the search would wait for. Results and checkpoints are already out.
            sys.__stdout__.flush()
            sys.__stderr__.flush()
            os._exit(0)
        spec = TrialSpec.model_validate(message)
        began = time.monotonic()
        try:
            result = runner(spec)
        except Exception as e:  # noqa: BLE001 - a bug in one trial fails that trial only
            reason = failure_reason(e, traceback.format_exc(limit=6), spec.own_folders)
            result = TrainResult(status="failed", reason=reason)
        except (SystemExit, KeyboardInterrupt) as e:
            # raised by the trial's own code (sys.exit(3), a KeyboardInterrupt of its own: the
            # worker ignores Ctrl-C): its failure, said as such; it ended the worker, which was
            # then "worker process died (exit code 3)", with a traceback on the terminal
            code = f"({e.code})" if isinstance(e, SystemExit) and e.code is not None else ""
            result = TrainResult(
                status="failed",
                reason=f"{type(e).__name__}{code} raised in the trial: the worker goes on",
            )
        _drain()  # what it printed comes before its result
        try:
            # how long the job took by the worker's own clock: the controller, busy logging, may
            # read the result later than its trial_timeout, and still times it out as it ran
            send(("result", (result, time.monotonic() - began)))
        except (BrokenPipeError, ConnectionResetError):
            # the controller is gone (killed): no one to tell, and its terminal is no place for
            # a worker's traceback; the result's checkpoint is written, and a resumed search
            # runs the job again from the one before
            return


def _timed_out(seconds: float) -> TrainResult:
    return TrainResult("failed", reason=f"timed out after {seconds:g} s (executor.trial_timeout)")


class _Relayed(io.TextIOBase):
    """A worker's `sys.stdout` or `sys.stderr`: what a trial prints (a user's objective, a
    library's warning) goes to the controller, which writes it to its own, above its live
    progress line; written to the terminal from the worker, it was written over that line.
    Output below Python (a C library writing to its file descriptor) still goes straight out."""

    def __init__(self, send: Callable[[Any], None], name: str, original) -> None:
        self._send, self._name, self._original = send, name, original
        self._pending = ""  # sent by whole lines, so two workers' lines do not mix

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            whole, _, self._pending = self._pending.rpartition("\n")
            self._out(whole + "\n")
        return len(text)

    def flush(self) -> None:
        """Nothing: a line goes when it is whole (`print(..., end="", flush=True)` then the
        rest of the line, a common pattern, put two workers' halves on one line)."""

    def drain(self) -> None:
        """What is left of a line: sent at the end of a trial."""
        if self._pending:
            text, self._pending = self._pending, ""
            self._out(text)

    @property
    def buffer(self) -> _RelayedBytes:
        return _RelayedBytes(self)

    def _out(self, text: str) -> None:
        try:
            self._send(("output", (self._name, text)))
        except (OSError, ValueError):  # the controller is gone: as before
            self._original.write(text)

    def fileno(self) -> int:
        return self._original.fileno()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return getattr(self._original, "encoding", None) or "utf-8"


class _RelayedBytes(io.RawIOBase):
    """`sys.stdout.buffer` of a `_Relayed`: bytes written there are relayed as text."""

    def __init__(self, text: _Relayed) -> None:
        self._text = text

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._text.write(bytes(data).decode(self._text.encoding, errors="replace"))
        return len(data)


def _drain() -> None:
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, _Relayed):
            stream.drain()


def _write_output(payload: tuple[str, str]) -> None:
    """A worker's output, written by the controller (see `_Relayed`)."""
    name, text = payload
    stream = sys.stderr if name == "stderr" else sys.stdout
    with contextlib.suppress(OSError, ValueError):
        stream.write(text)
        if text.endswith("\n"):
            stream.flush()


@dataclass
class _Worker:
    index: int
    process: mp.process.BaseProcess
    conn: Connection
    job: TrialJob | None = None
    started: float = 0.0
    ready: bool = False


class WorkerStartError(RuntimeError):
    """A worker could not build its runner: every trial would fail the same way."""


def _stop(worker: _Worker) -> None:
    """An idle worker told to end, and waited for (killed after 2 s)."""
    with contextlib.suppress(OSError):  # a dead worker's pipe is already closed
        worker.conn.send(None)
    _reap(worker)


def _reap(worker: _Worker) -> None:
    """A worker told to end (or killed) waited for: killed if still there after 2 s."""
    worker.process.join(timeout=2)
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join(timeout=5)
    worker.conn.close()


class LocalExecutor(Executor):
    """Runs trials on `workers` local processes.

    Args:
        runner: how each worker builds its runner (see `RunnerSpec`).
        workers: number of worker processes (>= 1).
        trial_timeout: seconds a trial may run before its worker is killed (None: no limit).
        gpus: GPU indices to spread workers over; None or [] for none.
    """

    def __init__(
        self,
        runner: RunnerSpec,
        workers: int,
        trial_timeout: float | None = None,
        gpus: list[int] | None = None,
    ):
        if workers < 1:
            raise ValueError(f"The value of `workers` is {workers}, but must be `workers >= 1`.")
        if trial_timeout is not None and trial_timeout <= 0:
            raise ValueError(f"The value of `trial_timeout` is {trial_timeout}, but must be > 0.")
        self.runner = runner
        self.trial_timeout = trial_timeout
        self.gpus = list(gpus or [])
        self._ctx = worker_context()
        self.replaced = 0  # workers restarted after a crash or a timeout
        # when each worker (by name) first became ready, on time.monotonic() (one clock for all
        # processes on Linux and macOS), as the worker read it
        self.ready_at: dict[str, float] = {}
        # A forked worker's start waits for the fork server to have imported torch (a second or
        # more): the workers start in a thread, so the controller meanwhile goes on with its own
        # start (its imports, the data, the search run) and the two overlap. Every use of the
        # workers waits for that thread first.
        self._pool: list[_Worker] = []
        self._start_error: BaseException | None = None
        self._pool_lock = threading.Lock()
        self._closed = False  # closed while the workers started: the starter stops the rest
        environ = dict(os.environ)
        self._starter: threading.Thread | None = threading.Thread(
            target=self._start_all, args=(workers, environ), name="leanfit-worker-start",
            daemon=True,
        )  # fmt: skip
        self._starter.start()

    def _start_all(self, workers: int, environ: dict[str, str]) -> None:
        try:
            for i in range(workers):
                worker = self._start(i, environ)
                with self._pool_lock:
                    if not self._closed:
                        self._pool.append(worker)
                        continue
                _stop(worker)  # the executor was closed meanwhile
                return
        except BaseException as e:  # noqa: BLE001 - raised again where the workers are used
            self._start_error = e

    @property
    def _workers(self) -> list[_Worker]:
        """The workers, once they have all been started."""
        if self._starter is not None:
            self._starter.join()
            self._starter = None
            if self._start_error is not None:
                raise self._start_error
        return self._pool

    def _start(self, index: int, environ: dict[str, str] | None = None) -> _Worker:
        parent, child = self._ctx.Pipe()
        environ = dict(os.environ if environ is None else environ)
        if self.gpus:  # set in the worker before anything there initialises CUDA
            environ["CUDA_VISIBLE_DEVICES"] = str(self.gpus[index % len(self.gpus)])
        process = self._ctx.Process(
            target=worker_main,
            args=(child, self.runner, environ),
            name=f"{WORKER_NAME}{index}",
        )
        process.daemon = True
        process.start()
        child.close()
        return _Worker(index, process, parent)

    def _replace(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=10)
        worker.conn.close()
        self._workers[worker.index] = self._start(worker.index)
        self.replaced += 1

    def free_slots(self) -> int:
        return sum(1 for w in self._workers if w.job is None)

    def running(self) -> list[TrialJob]:
        return [w.job for w in self._workers if w.job is not None]

    def submit(self, job: TrialJob) -> None:
        worker = next((w for w in self._workers if w.job is None), None)
        if worker is None:
            raise RuntimeError("no free worker: call submit() only while free_slots() > 0")
        try:
            worker.conn.send(job.spec.model_dump())
        except (BrokenPipeError, ConnectionResetError):
            # The worker is gone. One that could not start left its reason in the pipe: every
            # trial would fail alike, so the search stops with it. Otherwise `wait` finds the
            # process dead and fails this job as an infrastructure failure (retried).
            with contextlib.suppress(OSError):
                while worker.conn.poll():
                    try:
                        kind, payload = worker.conn.recv()
                    except EOFError:
                        break
                    if kind == "output":  # what it printed before it failed
                        _write_output(payload)
                    elif kind == "fatal":
                        self.close()
                        raise WorkerStartError(
                            f"a trial worker could not start:\n{payload}"
                        ) from None
        worker.job, worker.started = job, time.monotonic()

    def wait(self, timeout: float | None = None) -> list[JobOutcome]:
        deadline = None if timeout is None else time.monotonic() + timeout
        outcomes: list[JobOutcome] = []
        while not outcomes:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self.trial_timeout is not None:
                busy = [w.started + self.trial_timeout for w in self._workers if w.job]
                if busy:
                    until_timeout = max(0.0, min(busy) - time.monotonic())
                    left = until_timeout if left is None else min(left, until_timeout)
            handles = [w.conn for w in self._workers] + [w.process.sentinel for w in self._workers]
            ready = set(wait(handles, timeout=left))
            for worker in list(self._workers):
                outcomes += self._check(worker, ready)
            if deadline is not None and time.monotonic() >= deadline:
                break
        return outcomes

    def _check(self, worker: _Worker, ready: set) -> list[JobOutcome]:
        name = f"worker-{worker.index}"
        if worker.conn in ready:
            try:
                kind, payload = worker.conn.recv()
            except (EOFError, OSError):
                kind, payload = "died", None
            if kind == "output":
                _write_output(payload)
                return []
            if kind == "ready":
                worker.ready = True
                self.ready_at.setdefault(name, float(payload))
                return []
            if kind == "fatal":
                self.close()
                raise WorkerStartError(f"a trial worker could not start:\n{payload}")
            if kind == "result" and worker.job is not None:
                job, worker.job = worker.job, None
                result, took = payload
                if self.trial_timeout is not None and took > self.trial_timeout:
                    # it ran past its timeout while the controller was busy elsewhere (logging,
                    # a proposal): timed out as if it had been watched, not kept by chance
                    # (a 0.01-s timeout let 123 of 249 jobs through on a loaded machine)
                    return [JobOutcome(job, _timed_out(self.trial_timeout), False, name)]
                return [JobOutcome(job, result, worker=name)]
        if not worker.process.is_alive():
            job, worker.job = worker.job, None
            code = worker.process.exitcode
            self._replace(worker)
            if job is None:
                return []
            reason = f"worker process died (exit code {code}) while running the trial"
            return [JobOutcome(job, TrainResult("failed", reason=reason), True, name)]
        if (
            worker.job is not None
            and self.trial_timeout is not None
            and time.monotonic() - worker.started > self.trial_timeout
        ):
            job, worker.job = worker.job, None
            self._replace(worker)
            return [JobOutcome(job, _timed_out(self.trial_timeout), False, name)]
        return []

    def close(self) -> None:
        if self._starter is not None:
            # closed before first use (a search refused at its start: nothing to resume, a
            # budget below what it ran): the workers already started are stopped here, the
            # starter stops any it starts from now on. It waited for them all: 1.5-2 s of each
            # refusal, while the fork server imported torch for workers that would never train
            with self._pool_lock:
                self._closed = True
            self._starter = None
        for worker in self._pool:
            if worker.job is not None:
                # its job is abandoned (a wall-time budget's end, an interrupt): its last
                # checkpoint is whole (written aside, then renamed), so it is stopped at once
                # instead of after a join's timeout
                worker.process.kill()
                continue
            with contextlib.suppress(OSError):  # a dead worker's pipe is already closed
                worker.conn.send(None)
        for worker in self._pool:  # (all told first: their ends overlap)
            _reap(worker)
