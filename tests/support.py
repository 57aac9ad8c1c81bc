"""Test helpers: experiment files, folders of real image files, the CLI as a user runs it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from tests import zygote

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_cli(
    *args: str, cwd: Path, env: dict | None = None, timeout: int = 300, fresh: bool = False
):
    """`leanfit ARGS` in a process of its own, as a user would run it (forked by the tests'
    zygote, see `tests.zygote`; `fresh`: in a fresh interpreter)."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(env or {})
    return zygote.run(
        [sys.executable, "-m", "leanfit.cli", *args],
        cwd=cwd, env=full_env, timeout=timeout, fresh=fresh,
    )  # fmt: skip


def foreground_job() -> None:
    """In the child before it runs: its own process group, and SIGINT as a terminal's foreground
    job has it. Run from a shell's background job (`make test &`), the tests inherit SIGINT
    ignored, and so would the command: it rightly leaves an ignored SIGINT alone."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ctrl_c_when(
    seen: str, *args: str, cwd: Path, timeout: int = 120, stdin: str | None = None
) -> tuple[int, str]:
    """`leanfit ARGS` as a terminal's foreground job, sent Ctrl-C once a line of its output
    holds `seen`: its exit code and what it wrote to stderr. `stdin`: piped to it."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = zygote.popen(
        [sys.executable, "-m", "leanfit.cli", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=None if stdin is None else subprocess.PIPE,
        preexec_fn=foreground_job,  # (pytest-xdist's workers ignore SIGINT, and so would it)
    )  # fmt: skip
    if stdin is not None:
        proc.stdin.write(stdin)
        proc.stdin.close()
        proc.stdin = None  # (communicate() would flush it)
    for line in proc.stdout:
        if seen in line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def start_foreground(*args: str, cwd: Path, fresh: bool = False) -> subprocess.Popen:
    """`leanfit ARGS` as a terminal's foreground job (SIGINT as Ctrl-C gives it), its output
    piped, not waited for. `fresh`: in a fresh interpreter (see `tests.zygote`)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return zygote.popen(
        [sys.executable, "-m", "leanfit.cli", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=foreground_job, fresh=fresh,
    )  # fmt: skip


def wait_for_first_run(proc: subprocess.Popen, database: Path, timeout: float = 120) -> None:
    """Until the tracking database `database` holds a run (its row, as MLflow's first call
    writes it), or `proc` ends."""
    import sqlite3
    import time

    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with sqlite3.connect(database, timeout=0.01) as db:
                if db.execute("select count(*) from runs").fetchone()[0]:
                    return
        except sqlite3.Error:
            pass
        time.sleep(0.005)


def digits_config(**overrides) -> dict:
    """examples/digits.yaml as a dict, with top-level sections overridden."""
    data = yaml.safe_load((EXAMPLES / "digits.yaml").read_text())
    data.update(overrides)
    return data


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_image_folder(root: Path, classes: dict[str, int], size: int = 12, seed: int = 0) -> Path:
    """Real PNG and JPEG files, one folder per class; each class has its own brightness pattern."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            base = np.zeros((size, size, 3), dtype=np.uint8)
            base[:, : (c + 1) * size // (len(classes) + 1)] = 200
            noise = rng.integers(0, 40, size=base.shape, dtype=np.uint8)
            img = Image.fromarray(np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8))
            ext = "png" if i % 2 == 0 else "jpg"
            img.save(folder / f"img{i:03d}.{ext}")
    return root


def without_permission_bypass() -> list[str]:
    """A command prefix under which file permissions bite: the tests run as root here, which
    reads and writes whatever chmod forbids; setpriv drops root's capabilities that override
    them (none needed for another user). Skipped, saying why, as root without setpriv."""
    import os
    import shutil

    import pytest

    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux) to drop its override of file "
                    "permissions, which this test needs to bite")  # fmt: skip
    caps = "-dac_override,-dac_read_search,-fowner"
    return ["setpriv", "--bounding-set", caps, "--inh-caps", caps, "--"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1, in its own process group so it stops cleanly."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> MlflowServer:
        import time
        import urllib.request

        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
            "--artifacts-destination", str(self.folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        log = open(self.folder / "server.log", "w")  # noqa: SIM115 - closed with the process
        # without MLflow 3's job runner (huey consumers for its GenAI jobs, which leanfit never
        # submits): healthy in about 11 s instead of 18-21 here, and a few processes fewer
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=log, start_new_session=True, env=env
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.folder / "server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout} s")

    def stop(self) -> None:
        import signal

        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Gate:
    """A TCP gate on 127.0.0.1 in front of a server: closed, its port refuses connections and
    the ones open are cut, as a client sees a server whose process has stopped; opened again,
    it forwards on the same port. A server's outage without the server's restart (a real
    `mlflow server` takes 11 s or more to start, twice per stop)."""

    def __init__(self, target_port: int):
        import threading

        self.target = target_port
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self._listener = None
        self._open: list = []
        self._lock = threading.Lock()
        self._cut_answer_to: bytes | None = None

    def cut_answer_to(self, request: bytes) -> None:
        """The next request holding `request` (b"/runs/create") reaches the server, which
        does it; its answer is lost, the connection cut (as when the server stops right after)."""
        self._cut_answer_to = request

    def open(self) -> Gate:
        import socket
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, server):  # (Nagle's delay, with the peer's delayed ACK: 40 ms
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request, or more)
            with self._lock:
                self._open += [client, server]
            cut = threading.Event()  # this connection's next answer is lost
            for a, b, asks in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(a, b, asks, cut), daemon=True).start()

    def _pump(self, a, b, asks: bool, cut) -> None:
        import socket

        try:
            while data := a.recv(65536):
                if asks and self._cut_answer_to is not None and self._cut_answer_to in data:
                    self._cut_answer_to = None
                    cut.set()
                if not asks and cut.is_set():
                    break  # the server did it; its answer is dropped
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        import socket

        listener, self._listener = self._listener, None
        if listener is not None:
            listener.shutdown(socket.SHUT_RDWR)  # (wakes the thread in accept)
            listener.close()
        with self._lock:
            cut, self._open = self._open, []
        for s in cut:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def finished_records(controller, status_of=lambda trial, rung: "ok") -> list:
    """The job records an earlier run of `controller` would have left in MLflow: one per trial
    and rung with a result, with the status `status_of(trial, rung)`."""
    from leanfit.track.search import JobRecord

    return [
        JobRecord(
            "r",
            t.trial_id,
            rung,
            0,
            None,
            t.config,
            {},
            status_of(t, rung),
            metrics,
            t.checkpoints.get(rung),
            None,
            None,
            0,
        )  # fmt: skip
        for t in controller.trials.values()
        for rung, metrics in t.results.items()
    ]


class Planted:
    """What a file planted in a shared work folder could hold: code that unpickling runs (it
    creates the file `marker`)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))
