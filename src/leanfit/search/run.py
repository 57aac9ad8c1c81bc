"""`leanfit search`: an experiment file in, a Pareto front, a report and MLflow runs out.

This module wires the experiment's settings to the pieces (strategy, scheduler, executor,
controller, MLflow) and owns what the user sees; the search logic itself is in the controller.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanfit import stopping
from leanfit.config import HYPERPARAMETER_DEFAULTS, Experiment
from leanfit.errors import LeanfitError
from leanfit.execute.base import Executor, JobOutcome, RunnerSpec, TrialJob
from leanfit.report.pareto import ReportPoint, plot_pareto, prewarm, write_html
from leanfit.search.asha import ASHA
from leanfit.search.controller import (
    PriorTrial,
    SearchController,
    Trial,
    failure_text,
    within_budget,
)
from leanfit.search.factory import make_strategy
from leanfit.search.hyperband import Hyperband
from leanfit.track.runs import server_watched
from leanfit.track.search import (
    SearchLog,
    search_key,
    search_keys,
    search_settings,
    why_not_resumable,
)


def make_scheduler(experiment: Experiment):
    """ASHA, Hyperband, or (scheduler none) every trial straight to the full budget."""
    b, s = experiment.budget, experiment.scheduler
    fidelity = {
        "min_data_fraction": b.min_data_fraction,
        "min_resolution": b.min_resolution,
        "full_resolution": experiment.dataset.image_size if b.min_resolution else None,
    }
    if s.name == "hyperband":
        return Hyperband(b.min_epochs, b.max_epochs, s.eta, **fidelity)
    if s.name == "none":
        return ASHA(b.max_epochs, b.max_epochs, s.eta)
    return ASHA(b.min_epochs, b.max_epochs, s.eta, **fidelity)


def model_cost(channels: int, image_size: int, num_classes: int):
    """Parameters and MACs of a configuration, computed without building it."""
    from leanfit.models.cost import architecture_cost

    return lambda config: architecture_cost(config, channels, image_size, num_classes)


def dataset_cost(experiment: Experiment, dataset):
    """`model_cost` of the experiment's models on its loaded dataset."""
    return model_cost(dataset.channels, experiment.dataset.image_size, dataset.num_classes)


# How a search refused by another controller of it goes on (`search_lock`); the pipeline's
# search step says it in its own words (`steps.in_pipeline_words`)
GO_ON_AFTER_THE_OTHER = (
    "and go on with it by running again with --resume (the pipeline's search step resumes by "
    "itself)"
)


def search_lock(experiment: Experiment, key: str):
    """One controller at a time for a search (`key`): a second `leanfit search`, `--resume` or
    pipeline search step of the same settings and data in the same work folder is refused while
    one runs (two controllers would tell and run the same trials twice). The workers, forked from
    the fork server, never hold the lock."""
    from leanfit.lock import held_lock

    def busy(pid: str, since: str) -> str:
        return (
            f"a search of these settings and data ({experiment.name!r}) is running now in "
            f"{experiment.work_path()} (process {pid}, since {since}): wait for it to end, or "
            f"stop it (Ctrl-C where it runs, or `kill {pid}`) {GO_ON_AFTER_THE_OTHER}"
        )

    return held_lock(experiment.work_path() / "searches" / f"{key}.lock", busy)


@contextlib.contextmanager
def stop_on_interrupt(controller: SearchController):
    """Ctrl-C (or SIGTERM: `kill PID`, a Kubernetes pod's deletion) stops the search at the
    controller's next turn (within a second), where its MLflow records are whole: an interrupt
    raised anywhere could land inside a database transaction and leave it locked, so the search
    could not even be marked as interrupted. A second signal interrupts at once. Only in the main
    thread, and not for a signal that is ignored (SIGINT in a background job) nor a SIGTERM
    that the program handles its own way: nothing changes there."""

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame) -> None:
        stopping.note(signum)
        if controller.stop_requested:
            raise KeyboardInterrupt
        controller.stop_requested = True
        stopping.ask()  # (a trial training in this process stops at its next report)

    previous = {}
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, handler)
    if stopping.terminate_is_ours():  # not a program's own SIGTERM handling
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        stopping.ask(False)
        for signum, before in previous.items():
            signal.signal(signum, before)


# How to make leanfit's own space's models smaller (a space of one's own: its `space=`)
SMALLER_MODELS = "narrower widths, skip blocks"


def check_budgets_reachable(
    experiment: Experiment, space, cost, draws: int = 1000, smaller: str = SMALLER_MODELS
) -> None:
    """Refuse hard budgets (`objectives.max_params`, `max_macs`) that no model of the space meets,
    before anything is started or written: says the smallest model drawn, so the user knows how
    far off the budget is. Returns at the first model that fits (a few draws, normally). `cost`:
    a configuration's (parameters, MACs)."""
    feasible = within_budget(experiment.objectives, cost)
    if feasible is None:
        return
    from leanfit.search.strategy import shrink_into

    rng = random.Random(0)
    drawn = []
    for _ in range(draws):
        config = space.sample(rng)
        if feasible(config):
            return
        drawn.append((feasible.excess(config), config))
    # none drawn fits: shrunk into it, as the search's proposals are (the least over first)
    drawn.sort(key=lambda d: d[0])
    for _, config in drawn[:20]:
        if shrink_into(space, config, feasible.excess, rng) is not None:
            return
    smallest = min(cost(config) for _, config in drawn)
    o = experiment.objectives
    limits = " and ".join(
        f"{name} {value:,}"
        for name, value in (("max_params", o.max_params), ("max_macs", o.max_macs))
        if value
    )
    params, macs = smallest
    size = f"{params:,} parameters" + (f" and {macs:,} MACs" if o.max_macs else "")
    raise LeanfitError(
        f"objectives: no model of the search space fits {limits} (none of {draws:,} random "
        f"configurations, nor the 20 nearest made smaller one parameter at a time; the smallest "
        f"drawn has {size}); raise the limit or make the space's models smaller ({smaller})"
    )


# Fewer steps an epoch than this, at the smallest batch the space draws, and the search is told:
# a network learns little from a handful of steps an epoch at any learning rate
FEW_STEPS = 8


def few_steps_notice(space, images: int) -> str | None:
    """What to tell a user whose search data is small for its batch sizes (a folder of a few
    hundred images at the default batch of 128), or None."""
    param = next((p for p in space.params if p.name == "batch_size"), None)
    if param is not None:
        smallest = min(param.choices) if param.kind == "categorical" else param.low
    else:
        smallest = space.fixed.get("batch_size", HYPERPARAMETER_DEFAULTS["batch_size"])
    smallest = int(smallest)
    steps = images // max(1, min(smallest, images))
    if steps >= FEW_STEPS:
        return None
    # smaller batches to search, where they give more steps (none below 4: no more to gain)
    smaller = [b for b in (4, 8, 16, 32) if b < smallest]
    fix = (
        f"search smaller batches (space.hyperparameters.batch_size: {smaller[-3:]}) or give it "
        "more images"
        if smaller and images // smaller[0] > steps
        else "give it more images"
    )
    return (
        f"note: the search trains on {images:,} images, {steps} step(s) an epoch at batch_size "
        f"{smallest} (the smallest it draws): too few to learn much; {fix}"
    )


# A validation split smaller than this makes one image a point or more of validation accuracy
SMALL_VALIDATION = 100


def split_notices(dataset, plan) -> list[str]:
    """What to tell a user of the validation and test splits: a validation split of a few dozen
    images (a small val/ folder, a small dataset), by which the search ranks models in steps of
    one image; a class with no images in a split given as a folder."""
    notes = []
    val = len(plan.splits.val)
    if 0 < val < SMALL_VALIDATION:
        if (folder := dataset.split_folder("val")) is not None:
            where = f" ({folder}/)"
            fix = f"put more images in {folder}/, or remove it to draw "
            fix += "dataset.val_fraction of the training images"
        else:
            where, fix = "", "raise dataset.val_fraction or add images"
        notes.append(
            f"note: the validation split{where} has {val} images, so one image is "
            f"{100 / val:.1f} points of validation accuracy, by which the search ranks models "
            f"and the final models are chosen; {fix}"
        )
    notes += unmeasured_notices(dataset, plan) + duplicate_notices(dataset, plan)
    for role, idx in (("val", plan.splits.val), ("test", plan.splits.test)):
        if (folder := dataset.split_folder(role)) is None:
            continue
        present = set(dataset.labels[idx].tolist())
        absent = [c for i, c in enumerate(dataset.classes) if i not in present]
        if absent:
            notes.append(
                f"note: {folder}/ has no images of {', '.join(absent)}; its accuracy says "
                f"nothing of them (add a folder of each to {folder}/)"
            )
    return notes


def duplicate_notices(dataset, plan, shown: int = 3) -> list[str]:
    """The same picture twice, as the model sees it (the same pixels once decoded): under two
    classes, which no model can get both right; or in training and in the validation or test
    split, whose figure it flatters. Each said with its first few files."""
    import numpy as np

    from leanfit.data.sources import image_keys

    keys = image_keys(dataset.images)
    order = np.argsort(keys, kind="stable")  # (copies side by side, each group by index)
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    groups = [g for g in np.split(order, bounds) if len(g) > 1]
    if not groups:
        return []
    labels = dataset.labels.numpy()
    role = np.full(len(keys), "training", dtype=object)
    role[plan.splits.val] = "validation"
    role[plan.splits.test] = "test"
    clashes, leaks = [], []
    for group in groups:
        first = int(group[0])
        clashes += [(first, int(i)) for i in group[1:] if labels[i] != labels[first]]
        trained = {int(labels[i]): int(i) for i in group[::-1] if role[i] == "training"}
        leaks += [
            (int(i), trained[int(labels[i])])
            for i in group
            if role[i] != "training" and int(labels[i]) in trained
        ]

    def named(pairs, roles: bool = False) -> str:
        said = (lambda i: f"{dataset.name_of(i)} ({role[i]})") if roles else dataset.name_of
        listed = [f"{said(a)} = {said(b)}" for a, b in pairs[:shown]]
        more = f", and {len(pairs) - shown} more" if len(pairs) > shown else ""
        return "; ".join(listed) + more

    notes = []
    if clashes:
        notes.append(
            f"note: {len(clashes)} image(s) are the same picture as an image of another class "
            f"({named(clashes)}): no model can get both right; remove the wrong copy"
        )
    if leaks:
        notes.append(
            f"note: {len(leaks)} image(s) of the validation or test split are copies of "
            f"training images ({named(leaks, roles=True)}): those figures flatter the model; "
            "remove the copies"
        )
    return notes


def unmeasured_notices(dataset, plan) -> list[str]:
    """Classes too small for the drawn validation or test split to get an image of them (a
    class of one or two images is all in training): no figure of that split measures them."""
    drawn = [
        (name, set(dataset.labels[idx].tolist()))
        for role, name, idx in (
            ("val", "validation", plan.splits.val),
            ("test", "test", plan.splits.test),
        )  # fmt: skip
        if len(idx) and dataset.split_folder(role) is None
    ]
    missing: dict[str, list[str]] = {}
    for i, c in enumerate(dataset.classes):
        if not_in := [name for name, present in drawn if i not in present]:
            missing.setdefault(" or ".join(not_in), []).append(c)
    notes = []
    for splits, classes in missing.items():
        counts = [int((dataset.labels == dataset.classes.index(c)).sum()) for c in classes]
        shown = [f"{c!r} ({n} image{'s' * (n != 1)})" for c, n in zip(classes, counts, strict=True)]
        more = f" and {len(classes) - 5} more" if len(classes) > 5 else ""
        them = "them" if len(classes) > 1 else "it"
        notes.append(
            f"note: class{'es' * (len(classes) > 1)} {', '.join(shown[:5])}{more} got no "
            f"{splits} image: too few to draw one, so no {splits} accuracy measures {them}; "
            "add images"
        )
    return notes


def crowded_notice(executor: Executor | None, workers: int) -> str | None:
    """More local CPU workers than cores: each trains on one thread and they take turns, so
    every trial takes as many times longer, and the search chooses from fewer finished results
    at a time for no more trained in all."""
    cores = usable_cores()
    if getattr(executor, "gpus", None) != [] or workers <= cores:  # (GPU workers, Kubernetes)
        return None
    return (
        f"note: {workers} workers on {cores} CPU core(s): they share the cores, so each trial "
        f"takes about {workers / cores:.0f} times as long and the search learns from fewer "
        f"finished trials at a time; --workers {cores} trains as much, sooner"
    )


class MlflowEvents:
    """Logs each trial job as a nested run of the search run."""

    def __init__(self, log: SearchLog, digest: str):
        self.log = log
        self.digest = digest

    def job_started(self, trial: Trial, job: TrialJob) -> str:
        spec = job.spec
        budget = {
            "epochs": spec.epochs,
            "data_fraction": spec.data_fraction,
            "resolution": spec.resolution,
        }
        # only a promotion resumes, and always from the rung just below
        from_rung = job.rung - 1 if spec.resume_from else None
        return self.log.job_started(
            trial.trial_id,
            job.rung,
            trial.bracket,
            from_rung,
            trial.config,
            budget,
            spec.checkpoint_to,
            spec.resume_from,
            job.attempt,
            self.digest,
        )

    def job_finished(self, trial: Trial, job: TrialJob, outcome: JobOutcome, ref: str | None):
        if ref is None:
            return
        result = outcome.result
        if result is not None and not result.params and trial.params:
            # (a Python objective's or a dry run's job: its size is the search's to count)
            result.params, result.macs = trial.params, trial.macs
        self.log.job_finished(ref, result, infrastructure=outcome.infrastructure_failure)


@dataclass
class SearchOutcome:
    controller: SearchController
    search_run_id: str
    report_html: Path
    report_plot: Path
    resumed_jobs: int
    reused: bool = False  # a finished search of the same settings and data, read back, not run


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: $OMP_NUM_THREADS where it is set (as torch honours it),
    else the CPUs it is allowed to run on (`taskset`, a cpuset), not all the machine's, and no
    more than its container's CPU limit (a Kubernetes pod's `limits.cpu`: a cgroup quota, which
    the CPU list does not show; a search step limited to 4 CPUs on a 64-core node would give its
    workers 32 threads each, throttled)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup)
    return max(1, min(cores, int(limit))) if limit is not None else cores


def cgroup_cpu_limit(root: Path) -> float | None:
    """The CPUs a cgroup quota allows this process (cgroup v2's `cpu.max`, or v1's CFS quota
    and period), or None where there is none or it cannot be read."""
    try:
        if (root / "cpu.max").is_file():
            quota, period = (root / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else float(quota) / float(period)
        for v1 in ("cpu", "cpu,cpuacct"):
            folder = root / v1
            if (folder / "cpu.cfs_quota_us").is_file():
                quota = float((folder / "cpu.cfs_quota_us").read_text())
                period = float((folder / "cpu.cfs_period_us").read_text())
                return None if quota <= 0 else quota / period
    except (OSError, ValueError, ZeroDivisionError):
        return None
    return None


def runner_for(
    experiment: Experiment,
    workers: int,
    synthetic_sleep: float | None = None,
    plan_file: str | None = None,
    objective: Callable | None = None,
) -> RunnerSpec:
    """Real training, or (with `synthetic_sleep`) the synthetic objective taking that many
    seconds per epoch: the whole search machinery in seconds, for a dry run; or a Python
    objective function (`leanfit.optimize`), found by its import path in each worker."""
    if objective is not None:
        from leanfit.objective import target_of

        threads = max(1, usable_cores() // max(1, workers))  # as training's: no oversubscription
        return RunnerSpec(
            "leanfit.objective:function_runner",
            {"target": target_of(objective), "threads": threads},
        )
    exp = experiment.model_dump(mode="json", exclude={"base_dir"})
    if synthetic_sleep is not None:
        return RunnerSpec(
            "leanfit.execute.runners:synthetic_runner",
            {"experiment": exp, "base_dir": str(experiment.base_dir),
             "sleep_per_epoch": synthetic_sleep},
        )  # fmt: skip
    threads = max(1, usable_cores() // workers)
    return RunnerSpec(
        "leanfit.execute.runners:training_runner",
        {
            "experiment": exp,
            "base_dir": str(experiment.base_dir),
            "threads": threads,
            "plan_file": plan_file,
        },
    )


@dataclass(frozen=True)
class Optimised:
    """What a search optimises: real training (the default), the synthetic objective of a dry
    run (`synthetic_sleep`: seconds an epoch), or a Python function (`leanfit.optimize`)."""

    synthetic_sleep: float | None = None
    function: Callable | None = None
    # a function's space of its own, instead of the file's (leanfit.optimize(space=...)), and
    # its models' (parameters, MACs): `leanfit.objective.OwnSpace`
    own: Any = None

    def __post_init__(self) -> None:
        if self.synthetic_sleep is not None and self.function is not None:
            raise ValueError("give a Python objective or a synthetic sleep, not both")
        if self.own is not None and self.function is None:
            raise ValueError("a space of one's own is searched with a Python objective")

    @property
    def identity(self) -> str | None:
        """What names it in a search's key and its `leanfit.objective` tag; None: training."""
        if self.function is not None:
            from leanfit.objective import identity_of

            named = identity_of(self.function)
            return named if self.own is None else f"{named} (space {self.own.digest})"
        return None if self.synthetic_sleep is None else "synthetic"


@dataclass
class Problem:
    """What a search is over: its space, its models' (parameters, MACs), its data's digest, and
    the data (None for a space of one's own, whose objective brings its data)."""

    space: Any
    cost: Callable[[Mapping[str, Any]], tuple[int, int]]
    digest: str
    dataset: Any = None
    size_range: tuple[float, float] | None = None  # a space of one's own: see SearchController
    # which parameters a crossover child takes from its second parent: leanfit's training
    # hyper-parameters, or a space of one's own's (`OwnSpace.crossover_group`)
    crossover_group: Callable[[str], bool] = HYPERPARAMETER_DEFAULTS.__contains__


def problem_of(experiment: Experiment, what: Optimised) -> Problem:
    if what.own is not None:
        own = what.own
        return Problem(
            own.space,
            own.cost,
            own.digest,
            size_range=own.size_range(),
            crossover_group=own.crossover_group(experiment.strategy.seed),
        )
    from leanfit.data.sources import load_dataset

    dataset = load_dataset(experiment)
    cost = dataset_cost(experiment, dataset)
    return Problem(experiment.search_space(), cost, dataset.digest, dataset)


def make_executor(
    experiment: Experiment, workers: int, what: Optimised, plan_file: str | None = None
) -> Executor:
    ex = experiment.executor
    if what.function is not None and workers == 0:
        from leanfit.execute.inline import InlineExecutor
        from leanfit.objective import in_process_runner

        # in this process: the function needs no import path
        return InlineExecutor(in_process_runner(what.function))
    if ex.kind == "kubernetes":
        if what.synthetic_sleep is not None:
            raise LeanfitError(
                "--synthetic: a dry run trains nothing and runs in local workers; "
                "set executor.kind: local for it"
            )
        if what.function is not None:
            raise LeanfitError(
                "executor.kind: kubernetes runs `leanfit trial` in its Jobs, which cannot call a "
                "Python objective function; set executor.kind: local for leanfit.optimize"
            )
        from leanfit.execute.kubernetes import KubernetesExecutor

        # one Job per trial job, at most executor.kubernetes.max_in_flight at once (not workers)
        return KubernetesExecutor(experiment, plan_file=plan_file)
    from leanfit.execute.forkserver import start_fork_server
    from leanfit.execute.local import LocalExecutor

    # it imports torch for the workers while this process looks for GPUs
    start_fork_server(training=what.synthetic_sleep is None)
    gpus = _visible_gpus() if what.synthetic_sleep is None else []
    runner = runner_for(experiment, workers, what.synthetic_sleep, plan_file, what.function)
    return LocalExecutor(runner, workers, ex.trial_timeout, gpus=gpus)


def _visible_gpus() -> list[int]:
    if not _gpu_device_files():
        return []  # without asking torch: its import alone takes 1.5-2 s of the search's start
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def _gpu_device_files() -> bool:
    """Whether this machine may have a GPU for torch.cuda: on Linux a CUDA or ROCm GPU is used
    through its device files (/dev/nvidia0, a Jetson's /dev/nvhost-*, ROCm's /dev/kfd, WSL's
    /dev/dxg), so where there are none torch finds none either. Elsewhere: ask torch."""
    import glob
    import sys

    if not sys.platform.startswith("linux") or not os.path.isdir("/dev"):
        return True
    return bool(glob.glob("/dev/nv*") or glob.glob("/dev/kfd") or glob.glob("/dev/dxg"))


def run_search(
    experiment: Experiment,
    resume: bool | str = False,
    workers: int | None = None,
    wall_time: float | None = None,
    max_trials: int | None = None,
    on_progress=None,
    synthetic_sleep: float | None = None,
    plan_file: str | None = None,
    parent_run_id: str | None = None,
    reuse_finished: bool = False,
    tags: Mapping[str, str] | None = None,
    on_notice: Callable[[str], None] | None = None,
    objective: Callable | None = None,
    own_space: Any = None,
) -> SearchOutcome:
    """Run (or resume) the experiment's search; returns the controller with its results.

    `resume="auto"` resumes an unfinished search of the same settings and data if there is one;
    `reuse_finished` returns a finished one as it is, without training anything (the pipeline's
    second run on unchanged data). `plan_file` is the pipeline's data plan; `tags` go on a
    new search run. `on_notice` is told what the user should know before the results (the
    dataset's unreadable files). `objective`: a Python function searched instead of training
    (see `leanfit.objective`); `workers=0` runs it in this process; `own_space`: its space of
    its own (`leanfit.objective.OwnSpace`) instead of the file's space and data.
    """
    what = Optimised(synthetic_sleep, objective, own_space)
    wall = wall_time if wall_time is not None else experiment.budget.wall_time
    trials = max_trials if max_trials is not None else experiment.budget.trials
    if wall is None and trials is None:
        raise LeanfitError("budget: give budget.wall_time or budget.trials (or --wall-time)")
    n_workers = workers if workers is not None else experiment.executor.workers
    if n_workers == 0 and what.function is None:
        raise LeanfitError("workers: 0 runs a Python objective in this process; give 1 or more")
    # `held` (the search's lock) is let go after `stack` (the workers), which the search closes
    # before it writes its report
    with contextlib.ExitStack() as held, contextlib.ExitStack() as stack:
        # The workers start first: they import torch and load the data while this process
        # loads it and opens the search run (a second or two of every search's wall time).
        executor = None
        opened: list[str] = []  # the search run, once it is open
        try:
            if not reuse_finished:
                executor = stack.enter_context(
                    make_executor(experiment, n_workers, what, plan_file)
                )
            with server_watched(experiment.tracking_uri(), on_notice):
                return _search(
                    experiment, resume, executor, stack, held, n_workers, wall, trials,
                    on_progress, what, plan_file, parent_run_id, reuse_finished, tags, on_notice,
                    opened,
                )  # fmt: skip
        except KeyboardInterrupt as e:
            # what the interrupt's message may say: a search stopped before its run opened
            # has no trial in MLflow, and nothing that --resume could go on with
            e.search_run_id = opened[0] if opened else None
            raise
        except Exception as e:
            if opened and (deleted := deleted_meanwhile(experiment, opened[0], e)) is not None:
                raise LeanfitError(deleted) from None
            raise


def deleted_meanwhile(experiment: Experiment, run_id: str, e: Exception) -> str | None:
    """What to say where a search ended because its run or its experiment was deleted in MLflow
    while it ran (the MLflow UI's Delete): MLflow refuses to write to a deleted run, and the
    search ended in its traceback. None for any other error."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from leanfit.errors import causes

    refused = [str(c) for c in causes(e) if "must be in the 'active' state" in str(c)]
    if not refused:
        return None
    client = MlflowClient(experiment.tracking_uri())
    named = re.search(r"The run (\w+) must be in the 'active' state", refused[0])
    if named and named[1] != run_id:
        try:
            run = client.get_run(named[1])
        except MlflowException:
            run = None
        if run is not None:
            found = client.get_experiment(run.info.experiment_id)
            if found.lifecycle_stage != "deleted":
                return (
                    f"tracking: the run {named[1]} ({run.info.run_name}) of this search was "
                    "deleted in MLflow while it ran, and the search stopped: `leanfit search "
                    "--resume` of this file goes on, and runs that job again"
                )
    try:
        run = client.get_run(run_id)
        found = client.get_experiment(run.info.experiment_id)
    except MlflowException:  # (purged meanwhile too)
        return (
            f"tracking: the search run {run_id} was deleted in MLflow while the search ran, and "
            "purged: its finished trials are gone; run `leanfit search` again to start afresh"
        )
    again = "`leanfit search --resume` of this file goes on from the trials it finished"
    if found.lifecycle_stage == "deleted":
        from leanfit.track.runs import deleted_experiment

        return deleted_experiment(found, experiment.tracking_uri(), " while the search ran")
    return (
        f"tracking: the search run {run_id} was deleted in MLflow while the search ran (it can "
        f"be written no more): restore it (`mlflow runs restore --run-id {run_id}`, or in the "
        f"MLflow UI) and {again}; or run `leanfit search` without --resume to start afresh"
    )


def _search(
    experiment: Experiment,
    resume: bool | str,
    executor: Executor | None,
    stack: contextlib.ExitStack,
    held: contextlib.ExitStack,
    n_workers: int,
    wall: float | None,
    trials: int | None,
    on_progress,
    what: Optimised,
    plan_file: str | None,
    parent_run_id: str | None,
    reuse_finished: bool,
    tags: Mapping[str, str] | None,
    on_notice: Callable[[str], None] | None,
    opened: list[str],
) -> SearchOutcome:
    from leanfit.track import TrialLogger
    from leanfit.track.pipeline import work_place
    from leanfit.track.runs import missing_sqlite_database

    problem = problem_of(experiment, what)
    dataset, space = problem.dataset, problem.space
    if dataset is not None and on_notice is not None and plan_file is None:
        # (a pipeline's search, given the plan of its subset step: its fingerprint step has
        # listed them)
        from leanfit.data.sources import dataset_notices  # (torch: not for a function's search)

        for notice in dataset_notices(dataset):
            on_notice(notice)
    # its key, and the key the version before made for the same search (found, not made)
    identity = what.identity  # (part of its key, tagged on its run)
    key, *older = search_keys(experiment, problem.digest, identity)
    check_budgets_reachable(
        experiment,
        space,
        problem.cost,
        smaller=SMALLER_MODELS if problem.dataset is not None else "space=",
    )
    if on_notice is not None and what.function is None:  # (a function brings its own data)
        from leanfit.data.splits import DataPlan
        from leanfit.train.trial import data_plan

        plan = DataPlan.load(plan_file) if plan_file else data_plan(experiment, dataset)
        few = few_steps_notice(space, len(plan.search))
        for notice in ([few] if few else []) + split_notices(dataset, plan):
            on_notice(notice)
    crowded = crowded_notice(executor, n_workers) if what.synthetic_sleep is None else None
    if on_notice is not None and crowded is not None:
        on_notice(crowded)
    uri = experiment.tracking_uri()
    database = missing_sqlite_database(uri)
    if resume is True and database is not None:
        raise LeanfitError(
            f"--resume: no tracking database at {database} (tracking URI {uri}), so no search "
            "to resume; run without --resume to start one, or give the file's tracking URI"
        )
    held.enter_context(search_lock(experiment, key))
    logger = TrialLogger(uri, experiment.experiment_name())

    latest = None
    if reuse_finished or resume == "auto":
        latest = SearchLog.find_latest(logger, [key, *older])
    extended = None  # a finished search given a larger budget now: it goes on
    if reuse_finished and latest is not None and latest[1] == "FINISHED":
        short = latest[0].budget_short_of(wall, trials)
        if short is None:
            deleted = latest[0].deleted_notice("the finished search is reused")
            if deleted is not None and on_notice is not None:
                on_notice(deleted)
            return _read_back(experiment, latest[0], problem, wall, trials, identity)
        extended = latest[0]
        if on_notice is not None:
            on_notice(smaller_budget_notice(extended, short))
    if resume == "auto":
        resume = extended is not None or (latest is not None and latest[1] != "FINISHED")
    if resume:
        log = extended or SearchLog.find_resumable(logger, [key, *older])
        if log is None:
            why = why_not_resumable(logger, experiment, problem.digest, identity)
            if why is None:  # the search of this file and data may have finished: say so
                finished = latest or SearchLog.find_latest(logger, [key, *older])
                short = None
                if finished is not None and finished[1] == "FINISHED":
                    short = finished[0].budget_short_of(wall, trials)
                    if short is None:
                        raise LeanfitError(
                            f"--resume: the search of this experiment file and data finished "
                            f"(run {finished[0].run_id} in {experiment.tracking_uri()}); "
                            "`leanfit report FILE` shows its front; give it a larger budget "
                            "(--wall-time, --trials) to go on with it, or run without --resume "
                            "to start another"
                        )
                    # a finished search given more: it goes on
                    log = extended = finished[0]
                    if on_notice is not None:
                        on_notice(smaller_budget_notice(extended, short))
        if log is None:
            raise LeanfitError(
                f"--resume: no unfinished search of this experiment file and data in "
                f"{experiment.tracking_uri()}"
                + (f"; {why}" if why else "")
                + "; run without --resume to start a new one"
            )
        if trials is not None and extended is None:
            started = len({r.trial_id for r in log.records()})
            if started > trials:  # (it would end, FINISHED, with no way to go on to its own)
                raise LeanfitError(
                    f"budget: a trial budget of {trials} is below the {started} trials the "
                    "search being resumed has started; give a larger one (--trials or "
                    "budget.trials) to go on with it"
                )
        elsewhere = log.running_elsewhere(work_place(experiment), HEARD_WITHIN_SECONDS)
        if elsewhere is not None:  # (two controllers wrote one search: its trials twice)
            where, ago = elsewhere
            raise LeanfitError(
                f"--resume: the search {log.run_id} is running now at {where} (heard from "
                f"{ago:.0f} s ago), another work folder or machine: wait for it to end, or "
                f"stop it there; one killed there can be resumed {HEARD_WITHIN_SECONDS:.0f} s "
                "after it stopped"
            )
        records = log.records()  # (read first: a run it cannot read leaves the search as it was)
        log.check_artifacts(stored_settings(experiment), new=False)
        log.reopen()
    else:
        records = []
        earlier = None
        if on_notice is not None and not reuse_finished:
            earlier = earlier_search_notice(logger, [key, *older], work_place(experiment))
        if earlier is not None:
            on_notice(earlier)
        settings = {"experiment": experiment.name, "search_key": key, "workers": n_workers}
        settings.update(_flat_settings(experiment))
        # the budget it was given (--wall-time, --trials); budget.* stay the file's, which
        # `leanfit report` finds its search by when the file's budget has changed since
        settings.update({"search.wall_time": wall, "search.trials": trials})
        # a stop while MLflow opens the run (several calls) waits for it: a stop in between
        # left the run RUNNING, and said no search had started
        with stopping.held_off():
            log = SearchLog.start(
                logger,
                f"search-{experiment.name}",
                key,
                settings,
                dataset,
                experiment.dataset.source,
                digest=problem.digest,
                parent_run_id=parent_run_id,
                settings_key=search_key(experiment, None),
                extra_tags=tags,
                settings_json=json.dumps(search_settings(experiment), sort_keys=True),
                objective=identity,
            )
            _opened(log, opened, stack)
        log.check_artifacts(stored_settings(experiment), new=True)
    if not opened:  # (a search resumed)
        _opened(log, opened, stack)
    log.record_budget(wall, trials)
    elapsed_before = log.elapsed(records) if resume else 0.0
    if resume and on_notice is not None and (deleted := log.deleted_notice("it goes on")):
        on_notice(deleted)
    if resume and on_notice is not None:
        before = log.place()
        if before is not None and before != work_place(experiment):
            # (it went on without a word, and said the front's checkpoints were all here)
            on_notice(
                f"this search ran at {before} before, now at {work_place(experiment)}: new "
                "checkpoints go in this work folder; those of its earlier trials stay there (a "
                "promotion whose checkpoint cannot be read from here trains from the start)"
            )
    log.mark_place(work_place(experiment), elapsed_before, 0)
    if wall is not None:
        wall = max(0.0, wall - elapsed_before)

    work = experiment.work_path() / "searches" / log.run_id
    controller = _controller(experiment, problem, log, work, wall, trials)
    resumed = 0
    if resume:
        # every job of it failed (fail_fast stopped it, or its budget ran out): resumed after a
        # fix, as its error said, its failed jobs run again
        retry = any(r.status == "failed" for r in records) and not any(
            r.status in ("ok", "stopped") for r in records
        )
        resumed = controller.restore(records, retry_failed=retry)
        # (said below, not as "cut short", as the resumed line says of the others)
        retried, resumed = (resumed, 0) if retry else (0, resumed)
        log.mark_interrupted([r.run_id for r in records if r.status == "running"])
        log.close_finished(records)
        if parent_run_id is not None and extended is None:
            # a pipeline run that goes on with it (the one it was started by was killed):
            # nested under it. A finished search given more stays under the pipeline run whose
            # result came from it; the new one names it (`TAG_SEARCH_RUN`, steps.search)
            log.client.set_tag(log.run_id, "mlflow.parentRunId", parent_run_id)
        if on_notice is not None and extended is None:
            on_notice(
                f"resuming the unfinished search {log.run_id}: {len(controller.trials)} trials "
                f"started before, {controller.stats.jobs_done} jobs finished"
            )
        if retried and on_notice is not None:
            on_notice(f"every job of it had failed: its {retried} failed job(s) run again")
    if experiment.strategy.warm_start:
        warm_start(experiment, controller, logger, log, problem.digest, not resume, identity)
        if controller.stats.warm_start and not resume and on_notice is not None:
            on_notice(f"warm start {controller.stats.warm_start}")
    if executor is None:
        executor = stack.enter_context(make_executor(experiment, n_workers, what, plan_file))
    left = executor.attach(log.run_id)  # (Jobs a killed controller of this search left running)
    if left and on_notice is not None:
        on_notice(
            f"deleted {left} trial Job(s) an earlier controller of this search left running "
            "(it was killed); their jobs run again from their checkpoints"
        )
    started = time.monotonic()
    status = "FAILED"
    prewarmed = False
    logged_at = started

    def progress(c: SearchController) -> None:
        # The report's plotting library is imported while the trials run, once the first job
        # has finished (the workers' and scikit-optimize's imports are done by then).
        nonlocal prewarmed, logged_at
        if not prewarmed and c.stats.jobs_done:
            prewarm()
            prewarmed = True
        now = time.monotonic()
        if now - logged_at >= LIVE_METRICS_SECONDS:
            # the MLflow UI follows the search, and a search killed with -9 is resumed with
            # the rest of its wall time, not all of it again
            logged_at = now
            log.log_live(elapsed_before + now - started, search_metrics(c), c.stats.jobs_done)
        if on_progress is not None:
            on_progress(c)

    try:
        controller.executor = executor
        controller.on_notice = on_notice
        with stop_on_interrupt(controller):
            controller.run(progress)
        abandoned = controller.refs_of(executor.running())
        keep = checkpoints_kept(controller, executor.running())
        stack.close()  # the workers stop before the report is written
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        from leanfit.track.runs import release_interrupted_writes

        release_interrupted_writes()  # (a second Ctrl-C may have landed inside a write)
        # the jobs it stopped: closed as interrupted (they stayed RUNNING in MLflow until a
        # --resume, which runs them again from their checkpoints, as it runs these)
        with contextlib.suppress(Exception):
            log.mark_interrupted(controller.refs_of(executor.running()))
        raise
    finally:
        # at the latest step the live figures used (jobs finished): MLflow shows a metric's
        # value at its highest step, which at step 0 was the last 15-s figure, not this one
        if log.taken_over is None:  # (resumed elsewhere meanwhile: its run is the other's now)
            log.log_elapsed(elapsed_before + time.monotonic() - started, controller.stats.jobs_done)
            if status != "FINISHED":
                log.set_status(status)
    # every job ended: its report written and the run closed FINISHED before a stop acts (a
    # stop here left the run RUNNING and no report, and said --resume would go on)
    with stopping.held_off():
        log.abandon(abandoned)
        if experiment.scheduler.keep_checkpoints == "front":
            controller.stats.pruned = controller.prune_checkpoints(keep)
        try:
            plot, page = write_report(
                experiment, controller, work / "report", log.run_id, objective=identity
            )
            log.log_report([plot, page], search_metrics(controller), controller.stats.jobs_done)
        except Exception as e:
            _report_failed(log, e, work)
        log.set_status("FINISHED")
    return SearchOutcome(controller, log.run_id, page, plot, resumed)


def _report_failed(log: SearchLog, e: Exception, work: Path) -> None:
    """A search whose report could not be written after all its training: its run closed
    FAILED, so that `--resume` finds it and writes the report (it was left RUNNING, with a
    traceback); a full disk, a file-size limit or a work folder that cannot be written said in
    one line (`leanfit.errors.write_refused`). Raises."""
    from leanfit.errors import write_refused

    with contextlib.suppress(Exception):  # (a tracking store that fails as well: said below)
        log.set_status("FAILED")
    refused = write_refused(e, [work])
    if refused is None:
        raise e
    raise LeanfitError(
        f"the search's report could not be written: {refused}, then resume the search "
        "(`leanfit search FILE --resume`, or leanfit.optimize(..., resume=True)): every trial "
        "is kept, and the resume writes the report"
    ) from None


def _opened(log: SearchLog, opened: list[str], stack: contextlib.ExitStack) -> None:
    """The search run is open: said to an interrupt's message (`opened`), and a stop from here
    until the trials run closes it KILLED (it stayed RUNNING)."""
    opened.append(log.run_id)
    stack.push(_killed_if_stopped(log))


def _killed_if_stopped(log: SearchLog):
    """An exit callback for the search's ExitStack: a stop (Ctrl-C, SIGTERM) before the trials
    run, or while they run, closes the search run KILLED (between its opening and the trials it
    stayed RUNNING). The stack is closed before the report, so a finished search is left be."""

    def on_exit(kind, error, traceback) -> bool:
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            with contextlib.suppress(Exception):
                log.set_status("KILLED")
        return False  # (the stop goes on)

    return on_exit


def checkpoints_kept(controller: SearchController, cut_short: list[TrialJob]) -> set[int]:
    """The trials whose checkpoints a finished search keeps (`keep_checkpoints: front`): the
    Pareto models', and those of the jobs its budget's end cut short, which run again from them
    if it is given more (a promotion cut short trained from scratch then)."""
    return {t.trial_id for t in controller.front()} | {
        controller.trial_of(job).trial_id for job in cut_short
    }


def stored_settings(experiment: Experiment) -> dict:
    """The experiment's settings as a search stores them (`experiment.yaml`): the tracking
    URI's password left out (it was stored whole), as the pipeline's parameters leave it."""
    from leanfit.errors import settings_without_password

    return settings_without_password(experiment.model_dump(mode="json"))


def earlier_search_notice(logger, keys: list[str], place: str) -> str | None:
    """What a new search (not `--resume`) says of an earlier one of the same file and data: one
    running now in another work folder or machine (`place`: this one's); one left unfinished,
    which `--resume` would go on with; or one finished, whose first trials this one repeats."""
    if (left := SearchLog.find_resumable(logger, keys)) is not None:
        if (elsewhere := left.running_elsewhere(place, HEARD_WITHIN_SECONDS)) is not None:
            # (it was said to be left unfinished, and `--resume` of it is refused meanwhile)
            where, ago = elsewhere
            return (
                f"the search {left.run_id} of this experiment file and data is running now at "
                f"{where} (heard from {ago:.0f} s ago); this starts another beside it, whose "
                "first trials are the same (the same strategy.seed)"
            )
        done = sum(r.status in ("ok", "stopped") for r in left.records())
        return (
            f"the search {left.run_id} of this experiment file and data was left unfinished "
            f"({done} jobs finished); this starts a new one. To go on with that one instead, "
            "stop this and run again with --resume"
        )
    ended = SearchLog.find_latest(logger, keys)
    if ended is None or ended[1] != "FINISHED":
        return None
    return (
        f"the search {ended[0].run_id} of this experiment file and data finished before; this "
        "starts another from nothing, whose first trials are the same (the same strategy.seed). "
        "To search further instead, stop this and run again with --resume and a larger budget "
        "(--trials, --wall-time)"
    )


def smaller_budget_notice(log: SearchLog, short: str) -> str:
    """What a finished search given a larger budget says as it goes on."""
    return (
        f"the finished search {log.run_id} of these settings and data ran with a smaller budget "
        f"({short}); it goes on to this one"
    )


# how often a running search logs its elapsed time and front's figures to its MLflow run
LIVE_METRICS_SECONDS = 15.0
# A RUNNING search in another place heard from within this long is running there (it logs
# every LIVE_METRICS_SECONDS): not resumed from here
HEARD_WITHIN_SECONDS = 4 * LIVE_METRICS_SECONDS


def search_metrics(controller: SearchController) -> dict[str, float]:
    """The search run's metrics: logged as it goes, and at its end."""
    best = controller.best_accuracy()
    return {
        "hypervolume": controller.hypervolume(),
        "trials": len(controller.trials),
        "pareto_models": len(controller.front()),
        "best_val_accuracy": best if best is not None else float("nan"),
    }


def warm_start(
    experiment: Experiment,
    controller: SearchController,
    logger,
    log: SearchLog,
    digest: str,
    announce: bool = True,
    objective: str | None = None,
) -> int:
    """Start from the last finished search with these settings on other data, if there is one.

    Each of its trials counts with its result at its highest rung; parameters and MACs are
    counted again for the data as it is now (a new class changes the head). Returns the number
    of results told.
    """
    # (an image folder's search of the splits drawn the other way, on this data too: the first
    # search of stable splits started cold beside the shuffled one before it)
    flipped = experiment.dataset.model_copy(
        update={"split": "shuffled" if experiment.dataset.stable_splits else "stable"}
    )
    other_splits = search_keys(experiment.model_copy(update={"dataset": flipped}), None)
    source = SearchLog.find_warm_start(
        logger, search_keys(experiment, None), digest, objective, other_splits
    )
    if source is None:
        return 0
    best: dict[int, Any] = {}
    for rec in source.records():
        usable = rec.status in ("ok", "stopped") and "val_accuracy" in rec.metrics
        if usable and (rec.trial_id not in best or rec.rung > best[rec.trial_id].rung):
            best[rec.trial_id] = rec
    prior = []
    for rec in best.values():
        params, macs = controller.cost(rec.config)
        prior.append(PriorTrial(rec.config, params, macs, float(rec.metrics["val_accuracy"])))
    rechecked = controller.warm_start(prior, experiment.strategy.warm_recheck)
    where = (
        "on this data with its splits drawn the other way (dataset.split)"
        if source.same_data
        else "on earlier data"
    )
    controller.stats.warm_start = warm_start_text(source.run_id, len(prior), rechecked, where)
    if announce:
        log.log_warm_start(source.run_id, len(prior), rechecked)
    return len(prior)


def warm_start_text(
    source_run_id: str, told: int, rechecked: int, where: str = "on earlier data"
) -> str:
    return (
        f"from the finished search {source_run_id} {where}: its {told} results are told "
        f"to the strategy, and its {rechecked} best configuration"
        f"{'s are' if rechecked != 1 else ' is'} the first trial{'s' * (rechecked != 1)}, "
        "trained again on this data"
    )


def _read_back(
    experiment: Experiment,
    log: SearchLog,
    problem: Problem,
    wall: float | None,
    trials: int | None,
    objective: str | None,
) -> SearchOutcome:
    """A finished search rebuilt from MLflow, with its report written again; nothing trains
    (the budget only satisfies the controller: it runs nothing)."""
    work = experiment.work_path() / "searches" / log.run_id
    controller = _controller(experiment, problem, log, work, wall, trials)
    controller.restore(log.records())
    plot, page = write_report(
        experiment, controller, work / "report", log.run_id, "finished", objective
    )
    return SearchOutcome(controller, log.run_id, page, plot, 0, reused=True)


def _controller(
    experiment: Experiment,
    problem: Problem,
    log: SearchLog,
    work: Path,
    wall: float | None,
    trials: int | None,
) -> SearchController:
    space, cost = problem.space, problem.cost
    feasible = within_budget(experiment.objectives, cost)
    return SearchController(
        space=space,
        strategy=make_strategy(
            space,
            experiment.strategy,
            feasible=feasible,
            crossover_group=problem.crossover_group,
        ),
        scheduler=make_scheduler(experiment),
        executor=_NoExecutor(),
        objectives=experiment.objectives,
        cost=cost,
        checkpoint_dir=work / "checkpoints",
        wall_time=wall,
        max_trials=trials,
        retries=experiment.executor.retries,
        fail_fast=experiment.executor.fail_fast,
        seed=experiment.strategy.seed,
        events=MlflowEvents(log, problem.digest),
        initial_design=experiment.strategy.initial_points,
        ehvi_share=experiment.ehvi_share(),
        gap_share=experiment.gap_share(),
        rung_rank=experiment.scheduler.rank,
        curve_stop=experiment.scheduler.curve_stop,
        size_range=problem.size_range,
    )


def _flat_settings(experiment: Experiment) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section in ("budget", "strategy", "scheduler"):
        for k, v in getattr(experiment, section).model_dump(mode="json").items():
            out[f"{section}.{k}"] = v
    out["objectives.max_params"] = experiment.objectives.max_params
    return out


def report_points(controller: SearchController) -> list[ReportPoint]:
    front = {t.trial_id for t in controller.front()}
    rungs = {r.index: r.epochs for r in controller.scheduler.rungs}
    return [
        ReportPoint(
            t.trial_id,
            t.params,
            t.macs,
            t.val_accuracy,
            rungs.get(t.top_rung, 0),
            t.config,
            on_front=t.trial_id in front,
        )
        for t in sorted(controller.trials.values(), key=lambda t: t.trial_id)
        if t.results
    ]


def write_report(
    experiment: Experiment,
    controller: SearchController,
    folder: Path,
    run_id: str,
    state: str = "finished",
    objective: str | None = None,
) -> tuple[Path, Path]:
    """The Pareto plot and page; `state`: the search's, as the page says it (a page written
    of a search still running, or killed, says so, and when it was written). `objective`: what
    it optimised where not real training (`TAG_OBJECTIVE`), which the page and plot say: a dry
    run's made-up accuracies looked like trained models' there."""
    from datetime import datetime

    from leanfit.track.search import objective_text

    points = report_points(controller)
    title = f"leanfit search: {experiment.name}"
    if objective == "synthetic":
        title += " (dry run: no model trained)"
    plot = plot_pareto(points, folder / "pareto.png", title, experiment.objectives.max_params)
    written = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    summary = {"search": state, "written": written, **summary_of(controller)}
    if objective is not None:
        summary = {"optimised": f"{objective_text(objective)}, not real training", **summary}
    summary["MLflow search run"] = run_id
    more = ""
    if failures := failure_lines(controller):
        import html

        items = "".join(f"<li>{html.escape(line.strip())}</li>" for line in failures[1:])
        more = f"<h2>Failed trials</h2><p>{html.escape(failures[0])}</p><ul>{items}</ul>"
    page = write_html(points, plot, folder / "report.html", title, summary, more)
    return plot, page


def exhausted_line(controller: SearchController) -> str | None:
    """What to tell a user whose search ran out of new configurations before its budget (a
    small, discrete space searched whole), or None."""
    n = controller.stats.exhausted
    if n is None:
        return None
    return (
        f"the search space has no configuration left to try: all {n:,} were trained (and "
        "promoted as the scheduler chose); widen the space to search further"
    )


def summary_of(controller: SearchController) -> dict[str, Any]:
    s = controller.stats
    best = controller.best_accuracy()
    return {
        "trials": len(controller.trials),
        "jobs finished": s.jobs_done,
        "jobs failed": s.jobs_failed,
        "retries after infrastructure failures": s.retries,
        "proposals over the hard budget (not trained)": s.infeasible,
        **(
            {"jobs stopped by their learning curve": s.curve_stopped}
            if controller.curve_stop
            else {}
        ),
        **(
            {"promotions trained from the start (their checkpoint was gone)": s.from_scratch}
            if s.from_scratch
            else {}
        ),
        **(
            {
                "checkpoints deleted at the end (trials off the Pareto front)": (
                    f"{s.pruned[0]:,} ({s.pruned[1] / 2**20:.1f} MiB)"
                )
            }
            if s.pruned[0]
            else {}
        ),
        **({"warm start": s.warm_start} if s.warm_start else {}),
        **(
            {"new configurations left in the space": f"none after {s.exhausted:,} (all tried)"}
            if s.exhausted is not None
            else {}
        ),
        "best validation accuracy": "-" if best is None else f"{best:.4f}",
        "Pareto models": len(controller.front()),
        controller.hypervolume_label(): f"{controller.hypervolume():.4f}",
    }


class _NoExecutor(Executor):
    """Placeholder until the real executor is started (restoring needs no workers)."""

    def free_slots(self) -> int:
        return 0

    def submit(self, job: TrialJob) -> None:
        raise RuntimeError("the executor has not started")

    def wait(self, timeout: float | None = None) -> list[JobOutcome]:
        return []

    def running(self) -> list[TrialJob]:
        return []

    def close(self) -> None:
        pass


def failure_lines(controller: SearchController, shown: int = 3) -> list[str]:
    """The trials that failed for good, by error (its first line), the commonest first: what a
    user sees of them at the end of a search, where before only a count was shown."""
    ranked = controller.failure_groups()
    if not ranked:
        return []
    count = sum(len(ids) for _, ids in ranked)
    lines = [f"{count} trial(s) failed; each one's MLflow run holds its whole error:"]
    lines += [f"  {failure_text(error, ids)}" for error, ids in ranked[:shown]]
    if len(ranked) > shown:
        rest = sum(len(ids) for _, ids in ranked[shown:])
        lines.append(f"  {rest} with {len(ranked) - shown} other error(s)")
    return lines


def front_table(controller: SearchController) -> list[Mapping[str, Any]]:
    rungs = {r.index: r.epochs for r in controller.scheduler.rungs}
    return [
        {
            "trial": t.trial_id,
            "params": t.params,
            "macs": t.macs,
            "val_accuracy": t.val_accuracy,
            "epochs": rungs.get(t.top_rung, 0),
        }
        for t in controller.front()
    ]
