"""The local executor: long-lived workers, isolated from the controller and from each other."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from leanfit.execute.base import RunnerSpec, TrialJob
from leanfit.execute.local import LocalExecutor, WorkerStartError
from leanfit.train.trial import TrialSpec

RUNNER = RunnerSpec("tests.runners:scripted_runner")


def job(name: str, **config) -> TrialJob:
    return TrialJob(TrialSpec(trial_id=name, config=config, epochs=1))


def collect(executor, n: int, timeout: float = 60):
    outcomes, deadline = [], time.monotonic() + timeout
    while len(outcomes) < n and time.monotonic() < deadline:
        outcomes += executor.wait(timeout=deadline - time.monotonic())
    return {o.job.spec.trial_id: o for o in outcomes}


def test_crash_hang_and_bug_affect_only_their_own_trial():
    with LocalExecutor(RUNNER, workers=2, trial_timeout=8) as ex:
        pids_before = {w.process.pid for w in ex._workers}
        ex.submit(job("crash", action="crash"))
        ex.submit(job("hang", action="hang"))
        assert ex.free_slots() == 0
        got = collect(ex, 2)
        assert got["crash"].infrastructure_failure
        assert "died" in got["crash"].result.reason
        assert got["hang"].result.status == "failed" and "timed out" in got["hang"].result.reason
        assert not got["hang"].infrastructure_failure
        assert ex.replaced == 2 and pids_before.isdisjoint(w.process.pid for w in ex._workers)

        ex.submit(job("bug", action="raise"))
        ex.submit(job("fine"))
        got = collect(ex, 2)
        assert got["bug"].result.status == "failed" and "a bug" in got["bug"].result.reason
        assert got["fine"].result.status == "ok"
        assert ex.replaced == 2  # a Python error does not cost a worker


def test_a_result_read_after_its_timeout_is_timed_out_as_if_it_had_been_watched():
    """The controller reads results between its own work (logging, proposals): a trial that
    ran past trial_timeout and whose result was read late was kept (CI: 123 of 249 jobs of a
    0.01-s timeout), by chance of how busy the controller was."""
    with LocalExecutor(RUNNER, workers=2, trial_timeout=0.4) as ex:
        ex.submit(job("warm1"))
        ex.submit(job("warm2"))
        collect(ex, 2)  # both workers are up
        ex.submit(job("slow", action="sleep", seconds=0.8))
        ex.submit(job("quick", action="sleep", seconds=0.05))
        time.sleep(1.5)  # busy elsewhere: both results are in the pipes when read
        got = collect(ex, 2)
        assert got["slow"].result.status == "failed", got["slow"].result
        assert got["slow"].result.reason == "timed out after 0.4 s (executor.trial_timeout)"
        assert not got["slow"].infrastructure_failure
        assert got["quick"].result.status == "ok"
        assert ex.replaced == 0  # the worker finished: it is not replaced


def test_workers_are_reused_across_trials():
    with LocalExecutor(RUNNER, workers=2) as ex:
        pids = {w.process.pid for w in ex._workers}
        for round_ in range(3):
            ex.submit(job(f"a{round_}"))
            ex.submit(job(f"b{round_}"))
            assert len(collect(ex, 2)) == 2
        assert {w.process.pid for w in ex._workers} == pids


def test_trials_run_in_parallel():
    with LocalExecutor(RUNNER, workers=2) as ex:
        ex.submit(job("warm1"))
        ex.submit(job("warm2"))
        collect(ex, 2)  # both workers are up
        start = time.monotonic()
        ex.submit(job("s1", action="sleep", seconds=1.5))
        ex.submit(job("s2", action="sleep", seconds=1.5))
        collect(ex, 2)
        assert time.monotonic() - start < 2.8


def test_an_executor_closed_while_its_workers_start_waits_for_none_and_stops_each(monkeypatch):
    """A search refused at its start (nothing to resume, a budget below what it ran) closes its
    executor while the workers start (they wait for the fork server's imports): close waited
    for every one of them, 1.5-2 s of each such refusal. Now it returns at once, and each
    worker that starts afterwards is stopped as it comes."""
    import threading

    go_on = threading.Event()
    started = []
    start = LocalExecutor._start

    def slow_start(self, index, environ=None):  # a fork server still importing torch
        go_on.wait(30)
        worker = start(self, index, environ)
        started.append(worker)
        return worker

    monkeypatch.setattr(LocalExecutor, "_start", slow_start)
    ex = LocalExecutor(RUNNER, workers=2)
    starter = ex._starter
    ex.close()  # (before: waited here until both had started)
    assert starter.is_alive() and not started
    go_on.set()
    starter.join(30)
    assert not starter.is_alive()
    (worker,) = started  # the first came after the close: stopped, the second never started
    assert worker.process.exitcode is not None and not ex._pool


def test_a_worker_that_cannot_start_stops_the_executor_with_its_reason():
    ex = LocalExecutor(RunnerSpec("tests.runners:scripted_runner", {"fail_start": True}), 1)
    ex.submit(job("x"))
    with pytest.raises(WorkerStartError, match="cannot load the dataset"):
        collect(ex, 1)


def test_a_worker_that_could_not_start_and_is_gone_when_its_job_is_sent_says_why():
    """The job is sent after the worker has already exited with its reason: the pipe is broken,
    and the reason waiting in it is what stops the search. Before, the send's BrokenPipeError
    reached the user (found with an objective defined under `if __name__ == "__main__":`)."""
    ex = LocalExecutor(RunnerSpec("tests.runners:scripted_runner", {"fail_start": True}), 1)
    (worker,) = ex._workers
    worker.process.join(timeout=30)
    assert not worker.process.is_alive()
    with pytest.raises(WorkerStartError, match="cannot load the dataset"):
        ex.submit(job("x"))


WORKER_LEFT_ALONE = """
import multiprocessing as mp, os, sys, time
from leanfit.execute.base import RunnerSpec
from leanfit.execute.local import worker_main
from leanfit.train.trial import TrialSpec

if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    spec = RunnerSpec("tests.runners:scripted_runner")
    worker = ctx.Process(target=worker_main, args=(child, spec, dict(os.environ)))
    worker.start()
    child.close()
    if sys.argv[1:] == ["before-ready"]:  # the controller gone while the worker starts
        parent.close()
        worker.join(30)
        print("exit", worker.exitcode)
        sys.exit()
    assert parent.recv()[0] == "ready"
    parent.send(TrialSpec(trial_id="t", config={}, epochs=1).model_dump())
    time.sleep(2)  # its result is sent, and never read: the controller is "killed" with it unread
    parent.close()
    worker.join(30)
    print("exit", worker.exitcode)
"""


@pytest.mark.parametrize("when", ["result-unread", "before-ready"])
def test_a_worker_whose_controller_is_gone_with_its_result_unread_exits_quietly(tmp_path, when):
    """The controller killed (kill -9) before it read a result: the worker's next read of the
    pipe fails with ConnectionResetError, not EOF. Before, that printed a traceback on the
    user's terminal (seen once in the kill -9 test, which checks for it). Or gone before the
    worker said it was ready (a Ctrl-C in a search's first seconds): its BrokenPipeError's
    traceback came after the command's last line (seen in the start-up stop test)."""
    import subprocess
    import sys

    (tmp_path / "left.py").write_text(WORKER_LEFT_ALONE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), str(tmp_path)])}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "left.py"), when], capture_output=True, text=True,
        timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["exit", "0"]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


def test_gpus_are_pinned_per_worker(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    spec = RunnerSpec("tests.runners:scripted_runner")
    with LocalExecutor(spec, workers=2, gpus=[0, 1]) as ex:
        ex.submit(job("w0", action="env"))
        ex.submit(job("w1", action="env"))
        seen = {o.result.reason for o in collect(ex, 2).values()}
        assert seen == {"0", "1"}
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"  # the controller's own is untouched


def test_a_worker_sees_the_controllers_environment_of_its_start(monkeypatch):
    # Workers fork from a server started once per process, with the environment of then; each
    # must still see the controller's environment of the moment it starts, as a spawned one would.
    monkeypatch.setenv("LEANFIT_TEST_ENV", "before")
    with LocalExecutor(RUNNER, workers=1) as ex:
        ex.submit(job("first", action="env", variable="LEANFIT_TEST_ENV"))
        assert collect(ex, 1)["first"].result.reason == "before"
    monkeypatch.setenv("LEANFIT_TEST_ENV", "after")
    with LocalExecutor(RUNNER, workers=1) as ex:
        ex.submit(job("second", action="env", variable="LEANFIT_TEST_ENV"))
        assert collect(ex, 1)["second"].result.reason == "after"
        monkeypatch.setenv("LEANFIT_TEST_ENV", "replaced")
        ex.submit(job("crash", action="crash"))
        assert collect(ex, 1)["crash"].infrastructure_failure
        ex.submit(job("third", action="env", variable="LEANFIT_TEST_ENV"))
        assert collect(ex, 1)["third"].result.reason == "replaced"


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(),
    reason="no fork server on this platform (Windows): workers are spawned there, nothing preloads",
)
def test_workers_fork_from_a_server_that_has_imported_torch():
    # N workers share one torch import, and a crashed worker's replacement needs none
    with LocalExecutor(RUNNER, workers=2) as ex:
        ex.submit(job("a", action="preloaded"))
        ex.submit(job("b", action="preloaded"))
        assert {o.result.reason for o in collect(ex, 2).values()} == {"True"}
        ex.submit(job("crash", action="crash"))
        collect(ex, 1)
        ex.submit(job("c", action="preloaded"))
        assert collect(ex, 1)["c"].result.reason == "True"


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_ctrl_c_does_not_kill_a_worker_mid_trial(name):
    """A terminal's Ctrl-C reaches every process of the group, and so may SIGTERM (`kill --
    -PGID`, systemd); the controller stops the search, a worker must not die of it mid-trial
    (read as a crash) nor between trials."""
    import signal

    signum = getattr(signal, name)
    with LocalExecutor(RUNNER, workers=1) as ex:
        ex.submit(job("warm"))
        assert collect(ex, 1)["warm"].result.status == "ok"
        (worker,) = ex._workers
        ex.submit(job("busy", action="sleep", seconds=1.0))
        time.sleep(0.4)
        os.kill(worker.process.pid, signum)  # mid-trial
        busy = collect(ex, 1)["busy"]
        assert not busy.infrastructure_failure and busy.result.status == "ok", busy
        os.kill(worker.process.pid, signum)  # idle, waiting for a job
        time.sleep(0.2)
        ex.submit(job("after"))
        assert collect(ex, 1)["after"].result.status == "ok"
        assert ex._workers[0] is worker, "the same worker, not a replacement"


FORK_SERVER_SIGTERM = """
import os, signal, time
from multiprocessing import forkserver
from leanfit.execute.forkserver import start_fork_server, worker_context

start_fork_server()
worker = worker_context().Process(target=time.sleep, args=(1.0,))
worker.start()  # busy for a second
os.kill(forkserver._forkserver._forkserver_pid, signal.SIGTERM)
worker.join(30)  # its exit code comes through the server: 255 if the server died
print(worker.exitcode, signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
"""


def test_the_fork_server_outlives_a_sigterm_to_the_process_group():
    """A SIGTERM to the search's whole process group killed the workers' fork server, through
    which the controller reads its workers' exit codes: each busy worker then read as dead (exit
    code 255) during the search's orderly stop. The server ignores it; the controller's own
    handling of SIGTERM is left as it was."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FORK_SERVER_SIGTERM], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "True"], done.stdout + done.stderr


FORK_SERVER_STOP_WHILE_STARTING = """
import os, signal, time
from multiprocessing import forkserver
from leanfit.execute.forkserver import start_fork_server, worker_context

def status(pid):  # the signals blocked and ignored, as the kernel has them
    lines = dict(line.split(":\\t") for line in open(f"/proc/{pid}/status").read().splitlines()
                 if ":\\t" in line)
    bit = 1 << (signal.SIGTERM - 1)
    return bool(int(lines["SigBlk"], 16) & bit), bool(int(lines["SigIgn"], 16) & bit)

got = []
signal.signal(signal.SIGTERM, lambda *_: got.append("stop"))
real = forkserver.ensure_running

def ensure_running():  # the stop comes while the server starts
    os.kill(os.getpid(), signal.SIGTERM)
    real()

forkserver.ensure_running = ensure_running
start_fork_server()
time.sleep(0.2)
print("controller", got, status(os.getpid()))
worker = worker_context().Process(target=time.sleep, args=(0.5,))
worker.start()  # forked by the server once its imports are done
print("server", status(forkserver._forkserver._forkserver_pid))
print("worker", status(worker.pid))
worker.join(30)
"""


def test_a_stop_that_comes_while_the_fork_server_starts_is_not_lost():
    """A SIGTERM (or Ctrl-C) that came while the fork server was being started, its stops
    ignored so that the server would ignore them: lost, and the search ran to its end (a stop in
    a search's first second, exit 0, seen once in the suite). Now blocked meanwhile, it comes
    once the controller's handler is back; the server ignores it and blocks nothing, nor do the
    workers it forks."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FORK_SERVER_STOP_WHILE_STARTING], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "controller ['stop'] (False, False)",  # delivered, and nothing left blocked
        "server (False, True)",  # ignored, not blocked
        "worker (False, True)",  # (a worker ignores it too, of its own: see worker_main)
    ], done.stdout + done.stderr


def test_workers_do_not_import_the_program_that_started_them(tmp_path):
    """A script that drives the executor at its top level, with no `if __name__ == "__main__"`
    guard: multiprocessing would import it again in each worker (its imports paid again, its
    search started again there); leanfit's workers need nothing from it and skip it."""
    script = tmp_path / "drive.py"
    script.write_text(
        f"""
import os, pathlib
pathlib.Path({str(tmp_path)!r}, f"imported-by-{{os.getpid()}}").touch()
from leanfit.execute.base import RunnerSpec, TrialJob
from leanfit.execute.local import LocalExecutor
from leanfit.train.trial import TrialSpec

with LocalExecutor(RunnerSpec("tests.runners:scripted_runner"), workers=2) as ex:
    for name in ("a", "b"):
        ex.submit(TrialJob(TrialSpec(trial_id=name, config={{}}, epochs=1)))
    done = []
    while len(done) < 2:
        done += ex.wait(timeout=30)
print("statuses", sorted(o.result.status for o in done))
"""
    )
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, str(script)], cwd=root, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": root},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "statuses ['ok', 'ok']" in result.stdout
    assert len(list(tmp_path.glob("imported-by-*"))) == 1  # the script's own process only


def test_a_worker_trains_with_the_cores_the_search_may_use(monkeypatch):
    """Threads a training worker: the cores this process may run on (taskset, a container's
    cpuset), split between the workers, or $OMP_NUM_THREADS where the user set it."""
    from leanfit.config import load_experiment
    from leanfit.search.run import runner_for, usable_cores
    from tests.support import EXAMPLES

    experiment = load_experiment(EXAMPLES / "digits.yaml")
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert usable_cores() == 6 and runner_for(experiment, 2).kwargs["threads"] == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})  # as `taskset -c N` starts it
        assert usable_cores() == 1 and runner_for(experiment, 2).kwargs["threads"] == 1
    finally:
        os.sched_setaffinity(0, allowed)
    none = Path(os.devnull)  # no cgroup quota here: what the machine's cgroup says aside
    assert usable_cores(none) == len(allowed)
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a count: the allowed cores
    assert usable_cores(none) == len(allowed)


def test_a_container_cpu_limit_caps_the_cores(tmp_path, monkeypatch):
    """A Kubernetes pod's `limits.cpu` is a cgroup quota, which the CPU list does not show: a
    search step limited to 4 CPUs on a 64-core node would give its workers 32 threads each.
    cgroup v2's cpu.max and v1's CFS quota cap the cores; no quota, or one above the CPU list,
    leaves them; $OMP_NUM_THREADS still wins."""
    from leanfit.search.run import cgroup_cpu_limit, usable_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    allowed = len(os.sched_getaffinity(0))
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("50000 100000\n")  # half a CPU: one thread
    assert cgroup_cpu_limit(v2) == 0.5 and usable_cores(v2) == 1
    (v2 / "cpu.max").write_text(f"{100000 * (allowed + 8)} 100000\n")
    assert usable_cores(v2) == allowed
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(v2) is None and usable_cores(v2) == allowed
    v1 = tmp_path / "v1" / "cpu,cpuacct"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1.parent) == 1.0 and usable_cores(v1.parent) == 1
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(v1.parent) is None
    (v2 / "cpu.max").write_text("garbage\n")
    assert cgroup_cpu_limit(v2) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    (v2 / "cpu.max").write_text("100000 100000\n")
    assert usable_cores(v2) == 3
