"""`python -m leanfit.cli ...` for the tests, without paying its imports each time.

A `leanfit` command spends 3-4 s of CPU importing torch, MLflow, scikit-optimize and
scikit-learn before it does anything; the suite runs some hundreds of them on two cores. Each
pytest process starts one helper process (the "zygote") that imports them once and then forks a
process per command, as multiprocessing's fork server does for leanfit's own workers: the
command runs in a process of its own (its pid, working folder, environment, stdin/stdout/stderr,
process group and signal handling as `subprocess.Popen` would have given it), the real
`leanfit.cli` run as `__main__`, the interpreter's own exit at its end (atexit, threads joined).
What differs from a fresh interpreter: the modules are imported already. So a command whose
environment sets something read when Python or those modules start (`PYTHON*`, OpenMP's and
MKL's variables) runs in a fresh interpreter, as does every command when LEANFIT_TEST_FRESH=1 is
set, and tests about a command's start-up itself pass `fresh=True`.

`Command` is the part of `subprocess.Popen` the tests use.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# what is imported once, for every command (the heavy part of `leanfit search`, `run`, `trial`)
PRELOAD = (
    "torch",
    "torch.nn.functional",
    "numpy",
    "sklearn",
    "skopt",
    "skopt.space",
    "mlflow",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
    "sqlalchemy",
    "typer",
    "rich.console",
    "yaml",
    "pydantic",
    "leanfit.config",
    "leanfit.data.sources",
    "leanfit.search.run",
    "leanfit.search.controller",
    "leanfit.execute.local",
    "leanfit.track",
    "matplotlib.figure",  # (the search's report)
    "optuna",  # (the benchmarks' peers; where installed)
)
# read when Python, OpenMP or MKL start: a command whose environment changes them runs fresh
READ_AT_START = ("PYTHON", "OMP_", "KMP_", "MKL_", "LD_", "MALLOC")
# the environment the zygote starts with: set by tests/conftest.py as the session starts (not
# whatever a test has patched when the first command starts it)
START_ENV: dict[str, str] | None = None
# the modules a command may run (`python -m MODULE`): leanfit's, and the tests' probe of what a
# process starts with (tests/probe.py); and the scripts (`python SCRIPT`): the checkout's
MODULES = ("leanfit.cli", "tests.probe")
SCRIPTS = (ROOT / "benchmarks", ROOT / "tests")


# -- the zygote ----------------------------------------------------------------------------------


def _serve(address: str):
    """Import `PRELOAD`, then fork a command for every request until stdin closes. Returns the
    request in the command's process (the caller runs it), never in the zygote."""
    import importlib

    for name in PRELOAD:
        with contextlib.suppress(ImportError):  # (the command imports it itself, if it can)
            importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    # its environment as its imports left it (scikit-learn sets KMP_*): what `serves` compares
    sys.stdout.write(json.dumps(dict(os.environ)) + "\n")
    sys.stdout.flush()
    while True:
        _reap()
        ready, _, _ = select.select([listener, sys.stdin], [], [], 1.0)
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 1024):
            return None  # the tests' process is gone
        if listener not in ready:
            continue
        conn, _ = listener.accept()
        request, fds = _receive(conn)
        pid = os.fork()
        if pid == 0:
            listener.close()
            return _monitor(conn, request, fds)
        conn.close()
        for fd in fds:
            os.close(fd)


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds = b"", []
    while not data.endswith(b"\n"):
        chunk, got, _, _ = socket.recv_fds(conn, 1 << 20, 8)
        if not chunk:
            raise EOFError("the request was cut short")
        data += chunk
        fds += got
    return json.loads(data), fds


def _monitor(conn: socket.socket, request: dict, fds: list[int]):
    """In a process between the zygote and the command: fork the command, say its pid, wait
    for it and say how it ended (the tests' process is not its parent, and cannot wait for it)."""
    sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)  # (the zygote's: the command's)
    started, ready = os.pipe()
    pid = os.fork()
    if pid == 0:
        conn.close()
        os.close(started)
        signal.signal(signal.SIGINT, sigint)
        request = _become(request, fds)
        os.close(ready)  # (as Popen returns once its child has run its preexec_fn)
        return request
    os.close(ready)
    for fd in fds:
        os.close(fd)
    try:
        os.read(started, 1)  # its end closed: its process group and signals are set
        os.close(started)
        conn.sendall(f"pid {pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
    finally:
        os._exit(0)


def _become(request: dict, fds: list[int]) -> dict:
    """The command's process, as `subprocess.Popen` would have started it."""
    if request["setsid"]:
        os.setsid()
    if request["sigint"]:  # (a fresh Python puts this handler on a SIGINT it finds not ignored)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.stdout.flush()
    sys.stderr.flush()
    for target, fd in enumerate(fds):  # (stdin, stdout, stderr)
        os.dup2(fd, target)
    for fd in set(fds):
        os.close(fd)
    _new_stdio()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    import numpy as np

    np.random.seed()  # (its global generator was seeded once, in the zygote)
    sys.argv = request["argv"]
    # as `python -m` and `python SCRIPT` put it
    script = request.get("script")
    sys.path[0] = os.getcwd() if script is None else os.path.dirname(os.path.abspath(script))
    return request


def _new_stdio() -> None:
    """sys.stdin, stdout and stderr made anew over the command's descriptors, as Python's start
    makes them (the zygote's were made over its own pipes, and know them); a logging handler
    that wrote to the zygote's stream writes to the command's."""
    import io
    import logging

    made = {}
    # -u or PYTHONUNBUFFERED, as the zygote's own start had them (and so the command's)
    unbuffered = sys.__stdout__.write_through
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        old = getattr(sys, name)
        raw = io.FileIO(fd, "rb" if fd == 0 else "wb", closefd=False)
        if fd == 0:
            buffered = io.BufferedReader(raw)
        else:
            buffered = raw if unbuffered else io.BufferedWriter(raw)
        stream = io.TextIOWrapper(
            buffered, encoding=old.encoding, errors=old.errors, newline="\n",
            line_buffering=not unbuffered and fd > 0 and (fd == 2 or raw.isatty()),
            write_through=unbuffered,
        )  # fmt: skip
        made[id(old)] = stream
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in made:
                handler.setStream(made[id(handler.stream)])


# -- the tests' side -----------------------------------------------------------------------------


class _Zygote:
    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="leanfit-zygote-")
        self.address = os.path.join(self.folder, "socket")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.zygote", self.address],
            cwd=ROOT, env=START_ENV if START_ENV is not None else dict(os.environ),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError(f"the tests' zygote did not start (exit {self.proc.wait()})")
        self.env = json.loads(ready)  # its environment as its imports left it
        atexit.register(self.close)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        with contextlib.suppress(OSError):
            os.unlink(self.address)
            os.rmdir(self.folder)

    def serves(self, env: dict) -> bool:
        """Whether a command of environment `env` can start from it (see READ_AT_START)."""
        if self.proc.poll() is not None:
            return False
        names = {n for n in set(env) | set(self.env) if n.startswith(READ_AT_START)}
        # what its own imports set (scikit-learn's KMP_*) a fresh command's imports set too:
        # a command without it is served (it ran fresh unless the tests' process had imported
        # scikit-learn before: every command of a test file run alone, twice as slow)
        theirs = {n for n in self.env if n not in (START_ENV or {})}
        return all(env.get(n) == self.env.get(n) or (n in theirs and n not in env) for n in names)


_zygote: _Zygote | None = None
_lock = threading.Lock()


def _the_zygote() -> _Zygote:
    global _zygote
    with _lock:
        if _zygote is None or _zygote.proc.poll() is not None:
            _zygote = _Zygote()
        return _zygote


class Command:
    """A command forked by the zygote: the part of `subprocess.Popen`'s interface the tests use."""

    def __init__(self, argv, zygote, *, cwd, env, stdin, stdout, stderr, text, setsid, sigint):
        self.args = argv
        self.returncode: int | None = None
        self._readers: dict[str, threading.Thread] = {}
        self._read: dict[str, bytes | str] = {}
        theirs = []  # (ends given to the command, closed here once sent)

        def end(how, target, writing):
            if how == subprocess.PIPE:
                r, w = os.pipe()
                keep, give = (r, w) if writing else (w, r)
                theirs.append(give)
                mode = ("r" if writing else "w") + ("" if text else "b")
                return open(keep, mode, **({"encoding": "utf-8"} if text else {})), give
            if how == subprocess.DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR)
                theirs.append(fd)
                return None, fd
            if how is None:
                return None, target  # inherited, as Popen's default
            fd = how if isinstance(how, int) else how.fileno()
            return None, fd

        self.stdin, fd0 = end(stdin if stdin is not None else subprocess.DEVNULL, 0, False)
        self.stdout, fd1 = end(stdout, 1, True)
        if stderr == subprocess.STDOUT:
            self.stderr, fd2 = None, fd1
        else:
            self.stderr, fd2 = end(stderr, 2, True)
        given = [fd0, fd1, fd2]
        request = {
            **(
                {"module": argv[2], "argv": [argv[2], *argv[3:]]}  # (runpy puts its file first)
                if argv[1] == "-m"
                else {"script": str(argv[1]), "argv": [str(a) for a in argv[1:]]}
            ),
            "cwd": str(cwd if cwd is not None else os.getcwd()),
            "env": dict(env if env is not None else os.environ),
            "setsid": setsid,
            "sigint": sigint,
        }
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._conn.connect(zygote.address)
            socket.send_fds(self._conn, [json.dumps(request).encode() + b"\n"], given)
        finally:
            for fd in theirs:
                os.close(fd)
        self._buffer = b""
        line = self._line(None)
        if line is None or not line.startswith("pid "):
            raise RuntimeError(f"the tests' zygote started no command: {line!r}")
        self.pid = int(line.split()[1])

    def _line(self, timeout: float | None) -> str | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._conn], [], [], left)
            if not ready:
                return None
            chunk = self._conn.recv(4096)
            if not chunk:
                return "exit -9"  # (the zygote's monitor died: say it as a kill)
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def _ended(self, timeout: float | None) -> bool:
        """Whether the command has ended (its exit read from the monitor) within `timeout`."""
        if self.returncode is None:
            line = self._line(timeout)
            if line is None:
                return False
            self.returncode = int(line.split()[1])
            self._conn.close()
        return True

    def poll(self) -> int | None:
        self._ended(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, input=None, timeout: float | None = None):
        if self.stdin is not None:
            if input:
                self.stdin.write(input)
            self.stdin.close()
            self.stdin = None
        deadline = None if timeout is None else time.monotonic() + timeout
        for name in ("stdout", "stderr"):
            stream = getattr(self, name)
            # (one the test closed, its reader gone, is left alone, as Popen.communicate does)
            if stream is not None and not stream.closed and name not in self._readers:
                thread = threading.Thread(target=self._drain, args=(name, stream), daemon=True)
                self._readers[name] = thread
                thread.start()
        for thread in self._readers.values():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self._read.get("stdout"), self._read.get("stderr")

    def _drain(self, name: str, stream) -> None:
        self._read[name] = stream.read()
        stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for stream in (self.stdout, self.stderr, self.stdin):
            if stream is not None and not stream.closed:
                stream.close()
        self.wait()


def _forkable(argv: list) -> bool:
    """`python -m MODULE ...` of `MODULES`, or `python SCRIPT ...` of a script in `SCRIPTS`."""
    if len(argv) < 2 or argv[0] != sys.executable:
        return False
    if argv[1] == "-m":
        return len(argv) >= 3 and argv[2] in MODULES
    script = Path(argv[1])
    return script.suffix == ".py" and script.is_absolute() and script.parent in SCRIPTS


def popen(
    argv, *, cwd=None, env=None, stdin=None, stdout=None, stderr=None, text=False,
    preexec_fn=None, start_new_session=False, fresh=False,
):  # fmt: skip
    """`subprocess.Popen(argv, ...)`; `python -m leanfit.cli ...` (or a script of the
    checkout's, see `_forkable`) forked by the zygote where it can be (see the module's doc),
    else a fresh process."""
    from tests.support import foreground_job

    kwargs = dict(cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr, text=text)
    forkable = (
        not fresh
        and os.environ.get("LEANFIT_TEST_FRESH") != "1"
        and _forkable(list(argv))
        and preexec_fn in (None, foreground_job)
    )
    if forkable:
        zygote = _the_zygote()
        if zygote.serves(dict(env if env is not None else os.environ)):
            setsid = start_new_session or preexec_fn is foreground_job
            sigint = preexec_fn is foreground_job
            return Command(list(argv), zygote, setsid=setsid, sigint=sigint, **kwargs)
    return subprocess.Popen(
        argv, preexec_fn=preexec_fn, start_new_session=start_new_session, **kwargs
    )


def run(argv, *, cwd=None, env=None, timeout=None, fresh=False) -> subprocess.CompletedProcess:
    """`subprocess.run(argv, capture_output=True, text=True, ...)` through `popen`."""
    proc = popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        fresh=fresh,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _exit(code) -> None:
    """The end of a command that ended by itself or by sys.exit, as the interpreter's own exit
    does it (its other threads waited for, atexit, its streams flushed), less the teardown of
    every module: the zygote's preloaded torch, MLflow and scikit-learn took 2 s of every
    script's end (`leanfit`'s own end skips it the same way)."""
    import atexit
    import threading

    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # (closed, or its reader gone)
            stream.flush()
    os._exit((code or 0) & 0xFF)


if __name__ == "__main__":
    _request = _serve(sys.argv[1])
    if _request is None:
        sys.exit(0)
    import runpy

    # any other exception: the interpreter's own handling (its traceback, exit 1 or SIGINT)
    try:
        if "script" in _request:
            runpy.run_path(_request["script"], run_name="__main__")
        else:
            runpy.run_module(_request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        _exit(e.code)
    _exit(0)
