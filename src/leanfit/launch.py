"""`leanfit run` and `leanfit compile`: the pipeline on this machine with `kfp.local`, or as YAML.

A run on data and settings that a finished pipeline run has already seen does nothing (it says so
and shows that run's result); a step that fails ends the run with the step's own message.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from leanfit.config import Experiment
from leanfit.errors import LeanfitError
from leanfit.steps import (
    ERROR_FILE_ENV,
    FINAL_REPORT,
    PARENT_ENV,
    pipeline_arguments,
    pipeline_keys,
    without_tracking_password,
)


class PipelineBusy(LeanfitError):
    """A pipeline run of the same settings and data is running now in another process."""

    def __init__(self, message: str, pid: str, since: str):
        super().__init__(message)
        self.pid, self.since = pid, since


@dataclass
class PipelineOutcome:
    ran: bool  # False: a finished run had the same settings and data, nothing ran
    run_id: str
    digest: str
    result: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None
    log: Path | None = None


def run_locally(experiment: Experiment, force: bool = False, log=print) -> PipelineOutcome:
    """Run the whole pipeline here with kfp.local (one subprocess per step)."""
    from leanfit.data.sources import load_dataset
    from leanfit.lock import held_lock
    from leanfit.track.pipeline import (
        champion_now,
        close_dead_pipeline_runs,
        find_pipeline_runs,
        run_result,
    )

    dataset = load_dataset(experiment)
    # its key, and the key the version before made for the same settings and data (found only)
    key, *older = pipeline_keys(experiment, dataset.digest)
    work = experiment.work_path()

    def busy(pid: str, since: str) -> str:
        return (
            f"a pipeline run of these settings and data ({experiment.name!r}) is running now in "
            f"{work} (process {pid}, since {since}): wait for it to end, or stop it (Ctrl-C where "
            f"it runs, or `kill {pid}`); `leanfit run` then goes on with its search"
        )

    # one pipeline run of a key at a time in this work folder (a second is refused); whether it
    # is done is asked once the lock is held, so another run cannot finish in between
    with held_lock(work / "kfp" / f"{key}.lock", busy, PipelineBusy):
        for run_id in close_dead_pipeline_runs(experiment, key):
            log(f"  pipeline run {run_id} had ended without saying so (killed): marked KILLED")
        if not force:
            done = find_pipeline_runs(experiment, key=[key, *older], status="FINISHED")
            since = later_run_on_other_data(experiment, dataset.digest) if done else None
            # (the registry read only where the run would be said up to date)
            champion, gone = (
                champion_now(experiment, done[0]) if done and since is None else (None, None)
            )
            if done and since is None and gone is None:
                run = done[0]
                result = run_result(run)
                if champion is not None:  # (as it is now: `leanfit promote` may have moved it)
                    result["champion_version"] = champion
                report = Path(result["report"]) if "report" in result else None
                return PipelineOutcome(
                    False, run.info.run_id, dataset.digest, result,
                    report if report is not None and report.exists() else None,
                )  # fmt: skip
            if done and since is None:
                log(
                    f"  {gone}: running again to register its model (that run's search and "
                    "final training are reused)"
                )
            elif done:
                # the data went back to what an earlier run saw (a bad change rolled back), and
                # the champion may have been chosen on other data since: judged again on this
                # data (the search and the final training are that run's, reused). Said up to
                # date, a watcher saw "dataset changed" at every check for good, and the
                # champion it showed was the old run's.
                log(
                    f"  the data is back to what pipeline run {done[0].info.run_id} ran on "
                    f"(digest {dataset.digest[:12]}), but pipeline run {since} ran on other data "
                    "since: running again to judge the champion on this data (that run's search "
                    "and final training are reused)"
                )
        return _run_pipeline(experiment, key, dataset.digest, log)


def later_run_on_other_data(experiment: Experiment, digest: str) -> str | None:
    """The latest finished pipeline run of this experiment, where it ran on other data than
    `digest` (None where the latest ran on this data)."""
    from leanfit.track.pipeline import TAG_DIGEST, find_pipeline_runs

    latest = find_pipeline_runs(experiment, status="FINISHED")
    if latest and latest[0].data.tags.get(TAG_DIGEST) != digest:
        return latest[0].info.run_id
    return None


def _run_pipeline(experiment: Experiment, key: str, digest: str, log) -> PipelineOutcome:
    import kfp.local

    from leanfit.pipelines.automl import build_pipeline
    from leanfit.track.pipeline import find_pipeline_runs, mark_pipeline_ended, run_result

    work = experiment.work_path()
    root = work / "kfp"
    error_file = root / f"{key}-error.json"
    error_file.unlink(missing_ok=True)
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    pipeline = build_pipeline(experiment)
    # (the password, if any, reaches the steps in their environment, not in the log)
    arguments, secret_env = without_tracking_password(pipeline_arguments(experiment))
    log_file = root / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}.log"

    told: list[int] = []  # the processes a stop was passed on to

    def end_started(message: str, status: str) -> None:
        started = find_pipeline_runs(experiment, key=key, status="RUNNING")
        if started:
            mark_pipeline_ended(experiment, started[0].info.run_id, message, status)

    try:
        # the steps (kfp.local's subprocesses) inherit where to write a failure's message
        # ... and this process's ID: each stops with it (a `kill -9` of it left one running)
        steps_env = mock.patch.dict(
            os.environ,
            {ERROR_FILE_ENV: str(error_file), PARENT_ENV: str(os.getpid()), **secret_env},
        )
        with shown_and_logged(log_file, log), steps_env, _stops_told_to_steps(told):
            pipeline(**arguments)
    except KeyboardInterrupt:
        # The steps run in process groups of their own (`steps.run_step`), so a stop reaches
        # them from here alone, once, whatever it was: Ctrl-C at the terminal, or SIGINT or
        # SIGTERM to this process alone (`kill PID`; before, `kill -INT PID` left the search
        # running unasked until kfp.local closed its output, then FAILED with a trial RUNNING).
        # They stop as at Ctrl-C, the search with its records whole (KILLED). kfp.local gives
        # a step a quarter of a second; wait for it, or a `leanfit run` typed at once would
        # meet a search that is still stopping. A second stop is passed on too: leave now.
        from leanfit import stopping

        steps = told or _descendants(os.getpid())
        if not told:  # (a stop raised here otherwise: from a thread, or with no handler of ours)
            _tell(steps)
        log("  stopping: the running step is recording where it stopped (Ctrl-C again: leave now)")
        try:
            wait_for_children(STOP_SECONDS, steps)
        except KeyboardInterrupt:  # (the pipeline's run is still closed: it takes a moment)
            _tell(steps)
        how = "SIGTERM" if stopping.terminated() else "Ctrl-C"
        with contextlib.suppress(Exception):
            end_started(f"interrupted ({how}); full log: {log_file}", "KILLED")
        raise
    except Exception as e:  # kfp.local reports a failed task as RuntimeError
        message = _step_error(error_file) or (
            f"{type(e).__name__}: {_ANSI.sub('', str(e))} (full log: {log_file})"
        )
        with contextlib.suppress(Exception):  # the tracking server may be what failed
            end_started(message, "FAILED")
        raise LeanfitError(message) from None
    done = find_pipeline_runs(experiment, key=key, status="FINISHED")
    if not done:
        raise LeanfitError("the pipeline ended without a finished run in MLflow; see its log")
    run = done[0]
    report = _latest(root, "evaluate-register", FINAL_REPORT)
    return PipelineOutcome(True, run.info.run_id, digest, run_result(run), report, log_file)


# How long an interrupted `leanfit run` waits for its steps to stop (the search stops at its
# controller's next turn, then closes its workers)
STOP_SECONDS = 60.0


@contextlib.contextmanager
def _stops_told_to_steps(told: list[int]) -> Iterator[None]:
    """While kfp.local runs the steps: a stop (Ctrl-C, or SIGINT or SIGTERM to this process) is
    passed on to the running steps (listed in `told`) at once, then acts here as Ctrl-C. From
    the handling of the exception below it came a quarter of a second later, once kfp.local had
    closed the step's output: a line the stopping search wrote then left it FAILED."""
    import threading

    from leanfit import stopping

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    telling = threading.RLock()

    def tell_steps() -> None:  # once, from the main thread's handler or the watcher's thread
        with telling:
            if not told:
                told.extend(_descendants(os.getpid()))
                _tell(told)

    def handler(signum, frame) -> None:
        stopping.note(signum)
        tell_steps()
        raise KeyboardInterrupt

    before = {}
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # (not in a background job)
        before[signal.SIGINT] = signal.signal(signal.SIGINT, handler)
    if stopping.terminate_is_ours():
        before[signal.SIGTERM] = signal.signal(signal.SIGTERM, handler)
    watcher = None
    if hasattr(signal, "SIGTSTP") and signal.getsignal(signal.SIGTSTP) is signal.SIG_DFL:
        # (the steps' process groups are not the terminal's: Ctrl-Z paused this process alone,
        # and its steps trained on)
        watcher = _SignalWatcher(stops=set(before), tell_steps=tell_steps)
        if watcher.started():
            before[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, lambda signum, frame: None)
            before[signal.SIGCONT] = signal.signal(signal.SIGCONT, lambda signum, frame: None)
        else:  # (its descriptors already closed)
            watcher = None
    try:
        yield
    finally:
        for signum, previous in before.items():
            signal.signal(signum, previous)
        if watcher is not None:
            watcher.stop()


class _SignalWatcher:
    """Ctrl-Z pauses the steps' process groups with this process, and `fg` or `bg` lets them go
    on with it; a stop (`stops`: SIGINT, SIGTERM) is passed on to them (`tell_steps`) at once:
    from a thread of its own, told of each signal by the interpreter's wakeup file descriptor.
    A Python signal handler runs in the main thread at its next bytecode, and the main thread
    waits in kfp.local's read of the step's output: when another thread took the signal, the
    handler waited for the step's next line, and that of `fg` for good, the step being paused
    (once in the suite a search step stayed stopped after `fg`; counted with
    `benchmarks/pause_stress.py`: 7 and 18 of 5,000 loaded pauses before, none after). The main
    thread's handler of a stop still raises KeyboardInterrupt there when it runs."""

    def __init__(self, stops: set[int], tell_steps) -> None:
        self.stops, self.tell_steps = stops, tell_steps
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.write_end, False)
        self.previous = -1
        self.thread = None

    def started(self) -> bool:
        """Watching (False where the wakeup descriptor is another's: then nothing is done)."""
        import threading

        self.previous = signal.set_wakeup_fd(self.write_end, warn_on_full_buffer=False)
        if self.previous != -1:
            signal.set_wakeup_fd(self.previous)
            self._close()
            return False
        self.thread = threading.Thread(target=self._watch, name="leanfit-pause", daemon=True)
        self.thread.start()
        return True

    def stop(self) -> None:
        """Stop watching (only once `started`)."""
        signal.set_wakeup_fd(self.previous)
        with contextlib.suppress(OSError):
            os.write(self.write_end, b"\0")  # (no signal is numbered 0)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():  # (else two descriptors are left: never closed under it)
            self._close()

    def _close(self) -> None:
        for fd in (self.read_end, self.write_end):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _watch(self) -> None:
        import threading

        while True:
            try:
                got = os.read(self.read_end, 64)
            except OSError:  # (closed: stop() gave up waiting)
                return
            for signum in got:
                if signum == 0:
                    return
                if signum == signal.SIGTSTP:
                    groups = _step_groups()
                    for group in groups:
                        with contextlib.suppress(OSError):
                            os.killpg(group, signal.SIGSTOP)
                    # (sent to this thread, which stops before it goes on: sent to the
                    # process, it may be taken by the main thread, and this one went on for
                    # a moment, enough to let the steps go again)
                    signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
                    _go_on(groups)  # here this process was continued: its steps go with it
                elif signum == signal.SIGCONT:  # (one that did not follow our Ctrl-Z)
                    _go_on([])
                elif signum in self.stops:
                    self.tell_steps()


def _go_on(groups: Sequence[int]) -> None:
    for group in dict.fromkeys([*groups, *_step_groups()]):
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGCONT)


def _step_groups() -> list[int]:
    """The process groups of the running steps (each step leads its own, its workers in it)."""
    groups = []
    for pid in _descendants(os.getpid()):
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:
                groups.append(pid)
    return groups


def _tell(steps: Sequence[int]) -> None:
    """Send Ctrl-C's SIGINT to each of `steps` that still runs (a search's workers ignore it:
    their controller stops them)."""
    for pid in steps:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGINT)


def wait_for_children(timeout: float, descendants: Sequence[int] = ()) -> None:
    """Wait until this process has no child processes left, nor any of `descendants` (a step
    outlives its `sh -c` parent), or `timeout` seconds."""
    deadline = time.monotonic() + timeout
    children = True
    while time.monotonic() < deadline:
        if children:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children, pid = False, 0  # none left
            if pid:
                continue
        if not children and not [p for p in descendants if _alive(p)]:
            return
        time.sleep(0.05)


def _descendants(root: int) -> list[int]:
    """The processes below `root` (its children, theirs, ...), read from /proc; none where
    there is no /proc (macOS: a SIGTERM's steps are then not told, as before)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (name) state ppid ...": the name may hold spaces and parentheses
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (not gone, nor a zombie waiting for its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK = re.compile(r"(Executing task|Task) '([^']+)'(?: finished with status (\w+))?")


def _shown(line: str) -> str | None:
    """What a user sees of kfp.local's output: leanfit's own lines and each task's start and end."""
    line = _ANSI.sub("", line).rstrip()
    stripped = line.strip()
    if stripped.startswith("[leanfit] "):
        return "    " + stripped[len("[leanfit] ") :]
    if stripped.startswith("leanfit: step"):
        return "    " + stripped
    m = _TASK.search(line)
    if m and m.group(1) == "Executing task":
        return f"  {m.group(2)} ..."
    if m and m.group(3):
        return f"  {m.group(2)}: {m.group(3).lower()}"
    return None


@contextlib.contextmanager
def shown_and_logged(log_file: Path, show):
    """Send everything written to stdout and stderr (ours and the steps' subprocesses') to
    `log_file`, and pass the lines worth reading to `show`."""
    import sys
    import threading

    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    saved = os.dup(1), os.dup(2)
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    out = os.fdopen(os.dup(saved[0]), "w", buffering=1)

    def pump() -> None:
        read = True  # whether the lines shown have a reader
        with open(log_file, "w") as log, os.fdopen(read_end, errors="replace") as lines:
            for line in lines:
                log.write(line)
                log.flush()
                text = _shown(line)
                if text is not None and read:
                    try:
                        show(text, file=out)
                    except BrokenPipeError:
                        # the reader went away (`leanfit run ... | head`): the pipeline stops
                        # as at Ctrl-C, exit 141 (it failed, exit 2, its run FAILED); the log
                        # file keeps every line
                        import signal

                        from leanfit import stopping

                        read = False
                        # (what this process prints after, once fd 1 is put back: nowhere)
                        stopping.to_devnull(saved[0])
                        stopping.note(signal.SIGPIPE)
                        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        thread.join(timeout=10)
        for fd in saved:
            os.close(fd)
        with contextlib.suppress(OSError):  # (its reader gone: the last flush fails)
            out.close()


def _step_error(path: Path) -> str | None:
    if not path.exists():
        return None
    error = json.loads(path.read_text())
    return f"step {error['step']!r} {'' if error.get('stopped') else 'failed: '}{error['message']}"


def _latest(root: Path, task: str, output: str) -> Path | None:
    found = sorted(root.glob(f"*/{task}/{output}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def compile_pipeline(experiment: Experiment, path: Path) -> Path:
    """The pipeline YAML for a cluster: the experiment as the default of its parameter."""
    from kfp import compiler

    from leanfit.errors import hide_password
    from leanfit.pipelines.automl import build_pipeline

    uri = experiment.tracking.uri
    if uri and hide_password(uri) != uri:
        raise LeanfitError(
            f"tracking.uri: {hide_password(uri)} holds a password, which the compiled pipeline "
            "would carry in plain text as its parameter's default (KFP shows it to anyone who "
            "can read the pipeline); write the URI without it, and put the user name and "
            "password in the Kubernetes secret "
            f"{experiment.executor.kubernetes.secret!r} (executor.kubernetes.secret) as "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD: every step reads them there"
        )
    mount = experiment.executor.kubernetes.mount_path
    data = experiment.model_dump(mode="json")
    if not os.path.isabs(experiment.work_dir):  # on the cluster, the work folder is on the PVC
        data["work_dir"] = f"{mount}/{experiment.work_dir.strip('./') or 'leanfit'}"
    params = {"experiment": json.dumps(data, sort_keys=True), "base_dir": mount}
    path = Path(path)
    if path.suffix not in (".yaml", ".yml"):
        raise LeanfitError(f"-o: {path} must end in .yaml or .yml (KFP reads pipelines as YAML)")
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    quiet = logging.getLogger("kfp")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stderr(io.StringIO()):
            compiler.Compiler().compile(
                build_pipeline(experiment), str(tmp), pipeline_parameters=params
            )
        os.replace(tmp, path)
    except OSError as e:  # a folder that cannot be written: said, and no half-written file left
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise LeanfitError(
            f"-o: cannot write {path} ({e.strerror or e}); give a path in a folder you can write"
        ) from None
    finally:
        quiet.setLevel(level)
    return path


def submit_experiment(
    experiment: Experiment,
    host: str,
    kfp_experiment: str | None = None,
    recurring_cron: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    timeout: float = 30.0,
    option: str = "--host",
):
    """Compile the experiment's pipeline and run it on a KFP host (once, or on a schedule);
    `option`: how the user gave the host, for the messages."""
    from leanfit.pipelines.automl import PIPELINE_NAME
    from leanfit.trigger.submit import submit_pipeline

    package = compile_pipeline(
        experiment, experiment.work_path() / "pipelines" / f"{experiment.name}-pipeline.yaml"
    )
    return submit_pipeline(
        package,
        host,
        pipeline_name=f"{PIPELINE_NAME}-{experiment.name}",
        experiment=kfp_experiment or experiment.experiment_name(),
        arguments={},
        run_name=f"{experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        recurring_cron=recurring_cron,
        namespace=namespace,
        existing_token=token,
        timeout=timeout,
        option=option,
    )
