"""The search controller: the ask/tell loop that ties strategy, scheduler and executor together.

    while budget left:
        while a worker is free:
            job = scheduler.next_job()                 # a promotion, or a new trial
            config = trial's config, or strategy.ask() # new trials only
            executor.submit(job)                       # resumes from the lower rung's checkpoint
        for outcome in executor.wait():
            scheduler.record(...); strategy.tell(...)  # every result is told back

It optimises anything that reports metrics at budgets: real training (`leanfit.execute.runners`)
or a synthetic objective, through the same executor interface. Its state can be rebuilt from the
records of a previous run (`restore`), which is how `leanfit search --resume` continues a search
killed half-way.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from leanfit.config import ObjectivesConfig
from leanfit.errors import DISK_FULL, LeanfitError
from leanfit.execute.base import Executor, JobOutcome, TrialJob
from leanfit.search.asha import Job, Rung
from leanfit.search.pareto import LOG10_PARAMS_RANGE, hypervolume, pareto_front
from leanfit.search.scalarize import ParEGOScalarizer
from leanfit.search.skopt_strategy import Frontier
from leanfit.search.strategy import SpaceExhausted, Strategy
from leanfit.space.spec import SearchSpace
from leanfit.train.curve import CurveStop
from leanfit.train.trial import TrialSpec

# Fixed bounds of the scalars (see SearchController._fixed_bounds): error in [0, 1], and
# log10(params) from 100 parameters, log10(MACs) from 1,000, to the budget.
RUNG_LOG10_PARAMS_LOW = 2.0
RUNG_LOG10_MACS_LOW = 3.0
# Told at once for a proposal over a hard budget; the next re-scalarisation puts it in its place.
INFEASIBLE_VALUE = 10.0
# EHVI's error axis is log10(error), floored here (0.1%: a validation split may be all right).
EHVI_ERROR_FLOOR = 1e-3
# A search whose first this many trial jobs (of one run of it) all fail stops there: one error
# repeated (a bug in an objective function, every model out of GPU memory, a broken dataset)
# would otherwise spend the whole budget, hours of it, on nothing (Katib's maxFailedTrialCount).
FAIL_FAST_JOBS = 10  # executor.fail_fast's default
FAIL_FAST_HINT = " (executor.fail_fast: how many failed jobs stop a search, 0 for never)"
# A search whose jobs mostly fail (not all: fail_fast does not stop it) says so once, when at
# least this many of its jobs have ended and this share of them failed: it ran its whole
# budget with only the progress line's failed count to show for it (a trial_timeout that only
# the quickest trials fit in)
MOSTLY_FAILING_JOBS = 20
MOSTLY_FAILING = 0.5


def ehvi_error(error: float) -> float:
    """The validation error on EHVI's axis: log10, so that halving the error is worth the same
    at 2% as at 40%.

    On the error itself, the improvements within reach are largest among the tiniest models (a
    few hundred parameters, 40% error) and EHVI spent most trials there: on the synthetic
    benchmark's seed 0, 787 of 1,046 below about 180 parameters. On the log scale the accurate
    end of the front weighs as much, which is where this product's users look (a model of a
    thousand parameters at 98%, not one of a hundred at 60%). Over 20 synthetic seeds this
    reached the benchmark's small-model target in a median 73 s instead of 233 s, with the same
    median hypervolume (which the benchmark measures on the error itself).
    """
    return math.log10(max(error, EHVI_ERROR_FLOOR))


# How the controller names a trial's checkpoints (`_job`): a path read back from MLflow is taken
# as one (to resume from, and to delete once superseded) only where it is named so, so a tag
# edited to name another file never has it deleted (or loaded)
TRIAL_CHECKPOINT = re.compile(r"trial-\d{5,}-rung-\d+\.pt")


def is_trial_checkpoint(path: str | None) -> bool:
    return path is not None and TRIAL_CHECKPOINT.fullmatch(Path(path).name) is not None


def within_budget(
    objectives: ObjectivesConfig, cost: Callable[[Mapping[str, Any]], tuple[int, int]]
) -> Callable[[Mapping[str, Any]], bool] | None:
    """The hard budgets as a predicate a strategy can sample and optimise under (None: none);
    its `excess` says how far over them a configuration is (above 0: over; the larger share)."""
    if not objectives.max_params and not objectives.max_macs:
        return None
    limits = [(i, float(limit)) for i, limit in enumerate(
        (objectives.max_params, objectives.max_macs)) if limit]  # fmt: skip

    def excess(config: Mapping[str, Any]) -> float:
        sizes = cost(config)
        return max(sizes[i] / limit - 1.0 for i, limit in limits)

    def feasible(config: Mapping[str, Any]) -> bool:
        return excess(config) <= 0

    feasible.excess = excess  # type: ignore[attr-defined]
    return feasible


class Scheduler(Protocol):
    rungs: tuple[Rung, ...]

    def next_job(self, allow_new: bool = True, finishing: bool = False) -> Job | None: ...

    def record(
        self, trial_id: int, rung_index: int, value: float | tuple[float, ...] | None, bracket=None
    ) -> None: ...

    def mark_started(self, trial_id: int, rung_index: int, bracket=None) -> None: ...

    def hold(self, trial_id: int, rung_index: int, bracket=None) -> None: ...


class SearchEvents(Protocol):
    """Where the controller reports what happens (MLflow in practice; nothing in tests)."""

    def job_started(self, trial: Trial, job: TrialJob) -> str | None: ...

    def job_finished(self, trial: Trial, job: TrialJob, outcome: JobOutcome, ref: str | None): ...


@dataclass
class Trial:
    """One configuration and what it has reported at each rung."""

    trial_id: int
    config: dict[str, Any]
    key: tuple
    params: int
    macs: int
    bracket: int = 0
    results: dict[int, dict[str, float]] = field(default_factory=dict)  # rung -> metrics
    failed: str | None = None  # the reason, once a job of it failed for good
    checkpoints: dict[int, str] = field(default_factory=dict)  # rung -> checkpoint path
    infeasible: bool = False  # over a hard constraint: never trained
    curve_stopped: bool = False  # its learning curve stopped it: never promoted again

    @property
    def top_rung(self) -> int | None:
        return max(self.results) if self.results else None

    @property
    def val_accuracy(self) -> float | None:
        top = self.top_rung
        return None if top is None else self.results[top]["val_accuracy"]


@dataclass
class PriorTrial:
    """A result of an earlier search (on earlier data): what a warm start learns from."""

    config: dict[str, Any]
    params: int
    macs: int
    val_accuracy: float


@dataclass
class WorkerTime:
    """When one worker was busy, on the controller's clock: from its first job's submission
    to its last result, and the sum of its jobs' durations (submission to result)."""

    first_submitted: float
    last_finished: float
    busy: float = 0.0


def failure_text(error: str, trial_ids: list[int]) -> str:
    """`3 x ValueError: ... (trial 1, 6, 11)`: one error and the trials it failed."""
    which = ", ".join(str(i) for i in trial_ids[:5]) + (", ..." if len(trial_ids) > 5 else "")
    return f"{len(trial_ids)} x {error} (trial {which})"


class SearchFailed(LeanfitError):
    """Every trial job of the search failed: it stopped, and says with which error."""


class DiskFull(LeanfitError):
    """A job could not write for lack of disk space, a file-size limit or a folder that cannot
    be written (`leanfit.errors.write_refused`): the search stopped, the job to run again."""


@dataclass
class SearchStats:
    jobs_done: int = 0
    jobs_failed: int = 0
    retries: int = 0
    infeasible: int = 0
    curve_stopped: int = 0  # jobs stopped by their learning curve (counted in jobs_done too)
    # promotions whose lower rung's checkpoint was gone, trained from the start instead
    from_scratch: int = 0
    # checkpoints a finished search deleted (files, bytes): its trials' off the Pareto front
    pruned: tuple[int, int] = (0, 0)
    propose_seconds: float = 0.0
    # the new configurations there were when the strategy found no more (a small, discrete
    # space searched whole): no new trials after that, promotions go on; None while there are
    exhausted: int | None = None
    # what its warm start took from an earlier search, as the report says it (None: none)
    warm_start: str | None = None
    started: float = field(default_factory=time.monotonic)
    workers: dict[str, WorkerTime] = field(default_factory=dict)  # by the executor's names


def written_twice(job_run_id: str, trial_id: int, what: str) -> str:
    """Why a search run whose records two controllers wrote at once cannot be read as one."""
    return (
        f"search: trial {trial_id} has {what} in this search's records (its job run "
        f"{job_run_id}): two controllers wrote this search at once (one stopped for over a "
        "minute while a --resume at another place took it over, before leanfit checked for "
        "that), and it cannot be read as one search; run the search again without --resume, "
        "or read its runs in MLflow"
    )


class SearchController:
    """Runs a multi-objective, multi-fidelity search.

    Args:
        space: the search space.
        strategy: proposes new configurations (ask/tell; the value told is minimised).
        scheduler: ASHA or Hyperband: which trial runs next, to which rung.
        executor: where trials run.
        objectives: the objectives and hard constraints of the experiment file.
        cost: parameters and MACs of a configuration, known before training.
        checkpoint_dir: where trial checkpoints go (one per trial and rung).
        wall_time: seconds the search may run (None: no limit).
        max_trials: new configurations to start at most (None: no limit).
        fail_fast: stop (`SearchFailed`) once this many jobs have failed and none has
            finished (0: never before the end).
        retries: times a job is retried after an infrastructure failure.
        seed: seeds the ParEGO weights and the trials' training seeds.
        events: receives every job start and finish (MLflow logging).
        initial_design: the first new trials are spread evenly over log10(parameters) instead of
            being drawn from the space's prior, which piles up around mid-sized models and rarely
            reaches the small end of the front (0: off).
        clock: the seconds that the wall-time budget counts (a simulated clock in benchmarks).
        ehvi_share: the share of proposals that maximise the expected hypervolume improvement of
            the front over (log10 size, validation error) (two objectives; a strategy with
            `use_frontier`); the others minimise a ParEGO scalarisation with drawn weights.
        gap_share: the share of proposals (part of `ehvi_share`) that are EHVI's among candidates
            inside the widest gap in size between neighbours on the front.
        rung_rank: how a rung's results are ranked for promotion: "pareto", by non-dominated
            sorting of the objectives (MO-ASHA), or "scalar", by an equal-weight scalarisation.
        curve_stop: stop a job whose learning curve, extrapolated to the top rung's epochs,
            cannot reach the accuracy that a finished trial no larger reached there (see
            `_curve_stop`); it keeps its result at the epochs it reached and is never promoted.
        size_range: the log10 parameter counts the hypervolume is measured over, and the
            scalarisation and EHVI scale sizes by (a space of one's own, whose models may be
            far larger than leanfit's); None: leanfit's, 2 to 4.5 for the hypervolume and 2 to
            the budget (or 6.5) for the proposals.
    """

    def __init__(
        self,
        space: SearchSpace,
        strategy: Strategy,
        scheduler: Scheduler,
        executor: Executor,
        objectives: ObjectivesConfig,
        cost: Callable[[Mapping[str, Any]], tuple[int, int]],
        checkpoint_dir: str | Path,
        wall_time: float | None = None,
        max_trials: int | None = None,
        fail_fast: int = FAIL_FAST_JOBS,
        retries: int = 2,
        seed: int = 0,
        events: SearchEvents | None = None,
        initial_design: int = 0,
        clock: Callable[[], float] = time.monotonic,
        ehvi_share: float = 0.0,
        gap_share: float = 0.0,
        rung_rank: Literal["pareto", "scalar"] = "pareto",
        curve_stop: bool = False,
        size_range: tuple[float, float] | None = None,
    ):
        if wall_time is None and max_trials is None:
            raise ValueError("give `wall_time` or `max_trials`: a search needs a budget")
        self.space = space
        self.strategy = strategy
        self.scheduler = scheduler
        self.executor = executor
        self.objectives = objectives
        self.cost = cost
        if size_range is not None and not size_range[0] < size_range[1]:
            raise ValueError(f"size_range {size_range}: give (low, high) with low < high")
        self.size_range = size_range
        self.checkpoint_dir = Path(checkpoint_dir)
        self.wall_time = wall_time
        self.max_trials = max_trials
        self.fail_fast = fail_fast
        # set by an interrupt handler (`leanfit.search.run`): the loop stops at its next turn
        self.stop_requested = False
        # told, once, that most jobs fail (set by `leanfit.search.run`: the user's console)
        self.on_notice: Callable[[str], None] | None = None
        self._said_failing = False
        self.retries = retries
        self.seed = seed
        self.events = events
        self.trials: dict[int, Trial] = {}
        self.by_key: dict[tuple, Trial] = {}
        self.clock = clock
        self.stats = SearchStats(started=clock())
        self._refs: dict[int, str | None] = {}  # id(job) -> the events' handle (MLflow run id)
        # (job, None) started or (job, outcome) finished, not yet given to `events`
        self._unlogged: list[tuple[TrialJob, JobOutcome | None]] = []
        self._pending: list[TrialJob] = []  # jobs to (re)submit before asking for new ones
        self._submitted: dict[int, float] = {}  # id(job) -> when it was submitted
        goals = [t.goal for t in objectives.targets]
        # One scalarizer, normalised by fixed bounds, not by the results' own range: drawn weights
        # for the strategy, equal ones to rank a rung, and the weights mean the same over the
        # whole search. On the synthetic benchmark (leanfit alone, 10 seeds) fixed bounds for the
        # strategy gave a larger hypervolume at 10 minutes in 8 of 10 seeds than the range of the
        # results at the fitted rung (median 1.801 against 1.776).
        self.scalarizer = ParEGOScalarizer(goals, seed=seed, bounds=self._fixed_bounds())
        # EHVI proposals: the strategy is told the validation error itself, and measures the
        # front by the size objective
        self.ehvi_share = ehvi_share if hasattr(strategy, "use_frontier") else 0.0
        self._frontier = self._make_frontier() if self.ehvi_share > 0 else None
        if rung_rank not in ("pareto", "scalar"):
            raise ValueError(f"rung_rank is {rung_rank!r}; use 'pareto' or 'scalar'")
        self.rung_rank = rung_rank
        self.curve_stop = curve_stop
        if not 0.0 <= gap_share <= ehvi_share:
            raise ValueError(f"gap_share ({gap_share}) must be in [0, ehvi_share ({ehvi_share})]")
        # of the EHVI proposals, the share made in the front's widest gap
        self._gap_ratio = gap_share / self.ehvi_share if self.ehvi_share > 0 else 0.0
        self.n_new = 0
        self.initial_design = initial_design
        self._design_rng = np.random.default_rng(seed)
        self._size_range: tuple[float, float] | None = None
        self._hypervolume_range: tuple[float, float] | None = None
        self.prior: dict[tuple, PriorTrial] = {}  # key -> an earlier search's result
        self._recheck: list[dict[str, Any]] = []  # prior configurations to run first
        # the next new configuration, proposed while every worker was busy
        self._ahead: tuple[dict[str, Any], tuple, int, int] | None = None

    def warm_start(self, prior: list[PriorTrial], recheck: int) -> int:
        """Start from an earlier search: its results are told to the strategy (re-scalarised
        with the others before every proposal, until a configuration has a result of its own
        here), and its best `recheck` configurations — the Pareto front first, then the most
        accurate — are the first new trials, so they are checked on the new data at low fidelity.
        They replace the initial design, and take at most half of a budget in trials. Returns
        the number of rechecks queued."""
        if self.max_trials is not None:
            recheck = min(recheck, self.max_trials // 2)
        for p in prior:
            if self.violation(p.params, p.macs) > 0:
                continue
            canonical = self.space.canonicalize(p.config)
            key = self.space.key(canonical)
            self.prior[key] = PriorTrial(canonical, p.params, p.macs, p.val_accuracy)
        ranked = list(self.prior.items())
        points = [[p.val_accuracy, math.log10(max(1, p.params))] for _, p in ranked]
        front = set(pareto_front(points, ["maximize", "minimize"])) if points else set()
        order = sorted(
            range(len(ranked)), key=lambda i: (i not in front, -ranked[i][1].val_accuracy)
        )
        self._recheck = [ranked[i][1].config for i in order if ranked[i][0] not in self.by_key][
            :recheck
        ]
        self.initial_design = 0
        return len(self._recheck)

    # -- objectives --------------------------------------------------------------------------

    def _fixed_bounds(self) -> list[tuple[float, float]]:
        """Accuracy in [0, 1]; log10 params from 100 to the budget (10^6.5 without one); log10
        MACs from 1,000 to the budget (10^9 without one)."""
        o = self.objectives
        bounds = []
        for target in o.targets:
            if target.metric == "val_accuracy":
                bounds.append((0.0, 1.0))
                continue
            low, budget, default = {
                "params": (RUNG_LOG10_PARAMS_LOW, o.max_params, 6.5),
                "macs": (RUNG_LOG10_MACS_LOW, o.max_macs, 9.0),
            }[target.metric]
            if target.metric == "params" and self.size_range is not None:
                low, default = self.size_range
            high = math.log10(budget) if budget else default
            bounds.append((low, max(high, low + 1)))
        return bounds

    def _make_frontier(self) -> Frontier:
        """EHVI's front: (log10 size, log10 validation error), sizes clipped to the fixed bounds
        (see `ehvi_error` for the error's scale)."""
        metric = self.objectives.size_metric()
        if metric is None:
            raise ValueError(
                "EHVI proposals need two objectives, val_accuracy and params or macs; "
                f"these are {[t.metric for t in self.objectives.targets]}"
            )
        metrics = [t.metric for t in self.objectives.targets]
        low, high = self._fixed_bounds()[metrics.index(metric)]
        which = 0 if metric == "params" else 1  # cost() gives (params, MACs)

        def size_of(config: Mapping[str, Any]) -> float:
            return min(max(math.log10(max(1, self.cost(config)[which])), low), high)

        return Frontier(size_of, (high, ehvi_error(1.0)))

    def objective_vector(self, trial: Trial, metrics: Mapping[str, float] | None) -> list[float]:
        """The trial's objectives in the units the scalarisation uses (log10 for counts)."""
        out = []
        for target in self.objectives.targets:
            if target.metric == "val_accuracy":
                out.append(math.nan if metrics is None else float(metrics["val_accuracy"]))
            elif target.metric == "params":
                out.append(math.log10(max(1, trial.params)))
            else:
                out.append(math.log10(max(1, trial.macs)))
        return out

    def violation(self, params: int, macs: int) -> float:
        """How far a configuration is over its hard budgets (log10 ratio; <= 0 is feasible)."""
        over = [-1.0]
        if self.objectives.max_params:
            over.append(math.log10(params / self.objectives.max_params))
        if self.objectives.max_macs:
            over.append(math.log10(max(1, macs) / self.objectives.max_macs))
        return max(over)

    # -- the loop ------------------------------------------------------------------------------

    def run(self, on_progress: Callable[[SearchController], None] | None = None) -> None:
        """Run until the budget is spent; jobs still running then are abandoned."""
        deadline = None if self.wall_time is None else self.stats.started + self.wall_time
        last_report = 0.0
        # (a resumed search counts its own run's jobs: the failures before a fix do not stop it)
        before = (self.stats.jobs_done, self.stats.jobs_failed)
        try:
            while True:
                if self.stop_requested:  # an interrupt, acted on where the records are whole
                    raise KeyboardInterrupt
                now = self.clock()
                if deadline is not None and now >= deadline:
                    break
                self._fill()
                self._log_events()
                # the progress after the workers got their jobs: just after a job ends (below),
                # "running" counted its worker out, and a log showed "running 1" of 2 throughout
                if on_progress is not None and self.clock() - last_report >= 0.5:
                    on_progress(self)
                    last_report = self.clock()
                finished = self.executor.wait(timeout=0)
                if finished:
                    # Jobs that ended while the events were logged: their workers get new jobs
                    # before the next proposal, not after it (jobs of equal length end together).
                    for outcome in finished:
                        self._handle(outcome)
                    self._check_failing(before, self.fail_fast)
                    continue
                if not self.executor.running():
                    break  # nothing runs and nothing can start: the trial budget is spent
                self._propose_ahead()
                wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - now))
                for outcome in self.executor.wait(timeout=wait):
                    self._handle(outcome)
                self._check_failing(before, self.fail_fast)
        finally:
            self._log_events()  # what finished before an interrupt is kept
        if on_progress is not None:
            on_progress(self)
        # a budget that ended with failures alone (a small one, or executor.fail_fast: 0), over
        # the whole search: a resumed one that ran nothing after every job failed ended FINISHED
        self._check_failing(before if self.stats.jobs_done else (0, 0), 1, ended=True)

    def _check_failing(self, before: tuple[int, int], jobs: int, ended: bool = False) -> None:
        """Stop (`SearchFailed`) if this run's first `jobs` finished jobs, or more, all failed;
        `ended`: the budget is spent, so the search is not stopped early but ends a failure."""
        done, failed = self.stats.jobs_done - before[0], self.stats.jobs_failed - before[1]
        if not ended:
            self._notice_failing(done, failed, resumed=before != (0, 0))
        if done or failed < jobs or jobs == 0:
            return
        (error, ids), *others = self.failure_groups()
        # the next errors too: they are often the same mistake with another value in it
        also = "".join(f"; {failure_text(e, i)}" for e, i in others[:2])
        if rest := sum(len(i) for _, i in others[2:]):
            also += f"; and {rest} with other errors"
        # (at its budget's end fail_fast did not stop it: naming it would only confuse)
        how, hint = ("", "") if ended else (", so it stopped", FAIL_FAST_HINT)
        raise SearchFailed(
            f"every trial job of the search failed ({failed}){how}: "
            f"{failure_text(error, ids)}{also}. Fix that and run it again (`--resume` goes on with "
            f"it); each trial's MLflow run holds its whole error{hint}"
        )

    def _notice_failing(self, done: int, failed: int, resumed: bool = False) -> None:
        # (with none done, fail_fast stops it: unless it is 0, and the budget ran out in silence)
        if self._said_failing or self.on_notice is None or (not done and self.fail_fast):
            return
        if done + failed < MOSTLY_FAILING_JOBS or failed < MOSTLY_FAILING * (done + failed):
            return
        self._said_failing = True
        (error, ids), *_ = self.failure_groups() or [("failed", [])]
        since = "since it was resumed" if resumed else "so far"
        self.on_notice(
            f"{failed} of this search's {done + failed} jobs {since} failed; its commonest "
            f"error: {failure_text(error, ids)}. It goes on (only a search whose every job "
            "fails stops); Ctrl-C stops it where it is, and --resume goes on with it after a fix"
        )

    def failure_groups(self) -> list[tuple[str, list[int]]]:
        """The trials that failed for good, by error (its first line), the commonest first."""
        by_error: dict[str, list[int]] = {}
        for trial in sorted(self.trials.values(), key=lambda t: t.trial_id):
            if trial.failed is not None:
                text = trial.failed.strip()
                first = text.splitlines()[0][:300] if text else "failed"
                by_error.setdefault(first, []).append(trial.trial_id)
        return sorted(by_error.items(), key=lambda kv: (-len(kv[1]), kv[1][0]))

    def _fill(self) -> None:
        while self.executor.free_slots() > 0:
            if self._pending:
                self._submit(self._pending.pop(0))
                continue
            allow_new = self.max_trials is None or self.n_new < self.max_trials
            allow_new = allow_new and self.stats.exhausted is None
            # a promotion if one is due; else a new trial, once there is a configuration for it;
            # with no new trial to come, the promotions of a search that is finishing
            job = self.scheduler.next_job(allow_new=False, finishing=not allow_new)
            if job is None and allow_new:
                if self._ready_to_propose():
                    job = self.scheduler.next_job(allow_new=True)
                else:
                    job = self.scheduler.next_job(allow_new=False, finishing=True)
            if job is None:
                return
            if job.is_promotion:
                trial = self.trials[job.trial_id]
                resume = trial.checkpoints.get(job.from_rung.index)
            else:
                trial = self._new_trial(job)
                resume = None
            self._submit(self._job(trial, job.rung, resume))

    def _job(self, trial: Trial, rung: Rung, resume: str | None, attempt: int = 0) -> TrialJob:
        # The work folder was cleaned, or the search resumed where its checkpoints are not: the
        # job trains this rung's epochs from the start (the promotion loses its inherited
        # weights) instead of failing the trial. Counted when it starts (a report's read-back
        # queues the running jobs too, and never runs them).
        # (a path read back from MLflow not named as a trial's checkpoint is not taken either)
        lost = resume is not None and not (is_trial_checkpoint(resume) and Path(resume).exists())
        if lost:
            resume = None
        checkpoint = self.checkpoint_dir / f"trial-{trial.trial_id:05d}-rung-{rung.index}.pt"
        spec = TrialSpec(
            trial_id=f"trial-{trial.trial_id:05d}-rung-{rung.index}",
            config=trial.config,
            epochs=rung.epochs,
            # Each rung anneals to its own end: a low rung's result is then a finished (short)
            # training, far more predictive than a snapshot at peak learning rate; a promotion
            # resumes the weights and anneals again over the longer horizon (a warm restart).
            schedule_epochs=rung.epochs,
            data_fraction=rung.data_fraction,
            resolution=rung.resolution,
            seed=self.seed * 100_003 + trial.trial_id,
            resume_from=resume,
            checkpoint_to=str(checkpoint),
            curve_stop=self._curve_stop(trial, rung),
        )
        return TrialJob(spec, rung=rung.index, attempt=attempt, resume_lost=lost)

    def _curve_stop(self, trial: Trial, rung: Rung) -> CurveStop | None:
        """The learning-curve stop of a job of `trial` at `rung`, or None (`curve_stop` off).

        "The top", for several objectives, is the front: the job stops when even an optimistic
        extrapolation of its validation accuracy to the top rung's epochs stays below the best
        accuracy reached at the top rung by a finished trial that is no worse on every other
        objective (no more parameters, no more MACs), since it would end dominated. None when
        no such trial exists yet. Only epochs at the top rung's data fraction and resolution
        are fitted (a curve at a lower fidelity ends lower), and a job at a lower one has none.
        """
        goals = {t.metric: t.goal for t in self.objectives.targets}
        if not self.curve_stop or goals.get("val_accuracy") != "maximize":
            return None
        top = max(self.scheduler.rungs, key=lambda r: r.index)

        def full_fidelity(r: Rung) -> bool:
            return r.data_fraction >= top.data_fraction and r.resolution == top.resolution

        if not full_fidelity(rung):
            return None
        sizes = [(m, g) for m, g in goals.items() if m != "val_accuracy"]

        def no_worse(other: Trial) -> bool:
            for metric, goal in sizes:
                mine, theirs = getattr(trial, metric), getattr(other, metric)
                if (theirs > mine) if goal == "minimize" else (theirs < mine):
                    return False
            return True

        reached = [
            t.results[top.index]["val_accuracy"]
            for t in self.trials.values()
            if t is not trial and top.index in t.results and not t.curve_stopped and no_worse(t)
        ]
        if not reached:
            return None
        # the epochs the trial trained at a lower fidelity, on the rungs below this one
        lower_rungs = [r for r in self.scheduler.rungs if r.index < rung.index]
        first_epoch = max((r.epochs for r in lower_rungs if not full_fidelity(r)), default=0)
        return CurveStop(max(reached), top.epochs, first_epoch)

    def _submit(self, job: TrialJob) -> None:
        self.executor.submit(job)
        self.stats.from_scratch += job.resume_lost
        self._submitted[id(job)] = self.clock()
        self._unlogged.append((job, None))

    def _log_events(self) -> None:
        """Log the jobs that finished and started since the last call, in that order. The loop
        calls it after refilling the workers, so that no worker waits for the tracking store
        (tens of milliseconds a job with sqlite)."""
        unlogged, self._unlogged = self._unlogged, []
        for job, outcome in unlogged:
            trial = self.trial_of(job)
            if self.events is not None:
                if outcome is None:
                    self._refs[id(job)] = self.events.job_started(trial, job)
                else:
                    self.events.job_finished(trial, job, outcome, self._refs.pop(id(job), None))
            done = outcome is not None and outcome.result.checkpoint
            if done and trial.checkpoints.get(job.rung) == outcome.result.checkpoint:
                # only now that its finish is on record: a `kill -9` before this resumes the
                # job from them (its run is still RUNNING); deleted at `_handle`, the job ran
                # again from scratch, its inherited weights lost
                self._drop_superseded(trial, job.rung)

    def _time_worker(self, outcome: JobOutcome) -> None:
        submitted = self._submitted.pop(id(outcome.job), None)
        if submitted is None or not outcome.worker:
            return
        now = self.clock()
        times = self.stats.workers.setdefault(outcome.worker, WorkerTime(submitted, now))
        times.first_submitted = min(times.first_submitted, submitted)
        times.last_finished = max(times.last_finished, now)
        times.busy += now - submitted

    def trial_of(self, job: TrialJob) -> Trial:
        return self.trials[int(job.spec.trial_id.split("-")[1])]

    def _new_trial(self, job: Job) -> Trial:
        """A trial of the configuration proposed ahead, or of a new proposal."""
        self.n_new += 1
        proposal, self._ahead = self._ahead, None
        config, key, params, macs = proposal or self._propose(self.n_new)
        trial = Trial(job.trial_id, config, key, params, macs, bracket=job.bracket)
        self.trials[job.trial_id] = trial
        self.by_key[key] = trial
        return trial

    def _ready_to_propose(self) -> bool:
        """Propose the next new configuration now (unless it was, ahead); False when the space
        has none left. A small, discrete space searched whole ends the new trials, not the
        search: the trials still running and their promotions go on."""
        if self.stats.exhausted is not None:
            return False
        if self._ahead is None:
            try:
                self._ahead = self._propose(self.n_new + 1)
            except SpaceExhausted as e:
                if e.infeasible and not self.n_new:
                    raise
                # (none left under the hard budget, after some were: as a space searched whole)
                self.stats.exhausted = self.n_new
                return False
        return True

    def _propose_ahead(self) -> None:
        """While every worker is busy, propose the next new configuration, so that a worker that
        finishes gets its next job without waiting for the surrogate (asynchronous BO: the
        proposal misses at most the results that arrive meanwhile, as with pending trials)."""
        if self._ahead is not None or self.executor.free_slots() > 0:
            return
        if self.max_trials is not None and self.n_new >= self.max_trials:
            return
        self._ready_to_propose()

    def _propose(self, index: int) -> tuple[dict[str, Any], tuple, int, int]:
        """Ask the strategy for the `index`-th new configuration; ones over a hard budget are
        told, not trained. Returns it with its key, parameters and MACs."""
        t0 = time.perf_counter()
        # EHVI for an even `ehvi_share` of the proposals (every other one at 0.5)
        ehvi = _nth_of_share(index, self.ehvi_share)
        # ... and of those, a `_gap_ratio` share in the widest gap (the k-th EHVI proposal's turn)
        gap = ehvi and _nth_of_share(math.floor(index * self.ehvi_share), self._gap_ratio)
        self._retell(ehvi, gap)
        for _ in range(1000):
            if self._recheck:
                config = self._recheck.pop(0)
            else:
                config = self._design_point(index) if index <= self.initial_design else None
                config = config or self.strategy.ask(1)[0]
            params, macs = self.cost(config)
            key = self.space.key(config)
            violation = self.violation(params, macs)
            if violation > 0:
                trial = Trial(-1, config, key, params, macs, infeasible=True)
                self.stats.infeasible += 1
                self.by_key[key] = trial  # re-told at every ask, never trained
                # worse than any feasible scalar (those stay below 1 + rho); re-scaled later
                self.strategy.tell(config, math.inf if ehvi else INFEASIBLE_VALUE + violation)
                continue
            self.stats.propose_seconds += time.perf_counter() - t0
            return config, key, params, macs
        raise RuntimeError("1000 proposals in a row were over the hard budget; loosen max_params")

    def _design_point(self, index: int) -> dict[str, Any] | None:
        """A new configuration whose size falls in the next slot of an even grid over
        log10(parameters), by rejection sampling from the space (sizes cost microseconds)."""
        if self._size_range is None:
            sizes = [
                math.log10(max(1, self.cost(self.space.sample(int(s)))[0]))
                for s in self._design_rng.integers(0, 2**31, 2000)
            ]
            high = max(sizes)
            if self.objectives.max_params:
                high = min(high, math.log10(self.objectives.max_params))
            self._size_range = (min(sizes), high)
        low, high = self._size_range
        # golden-ratio sequence: every prefix of the design is spread over the whole range
        u = (index * 0.6180339887) % 1.0
        width = (high - low) / max(2, self.initial_design)
        target = low + u * (high - low - width)
        for _ in range(5000):
            config = self.space.sample(int(self._design_rng.integers(0, 2**31)))
            size = math.log10(max(1, self.cost(config)[0]))
            if target <= size <= target + width and self.strategy.claim(config):
                return config
        return None

    def _fit_rung(self) -> int:
        """BOHB's rule: fit on the highest rung with enough results to model."""
        needed = max(len(self.space.dimensions) // 4, 8)
        counts: dict[int, int] = {}
        for trial in self.trials.values():
            for rung in trial.results:
                counts[rung] = counts.get(rung, 0) + 1
        usable = [r for r, n in counts.items() if n >= needed]
        return max(usable) if usable else min(counts, default=0)

    def _retell(self, ehvi: bool = False, gap: bool = False) -> None:
        """Re-scalarise every result with fresh ParEGO weights and tell them all to the strategy;
        for an EHVI proposal (`ehvi`), tell the validation errors instead (`gap`: one in the
        front's widest gap in size).

        Configurations with a result at the fitted rung are told their value; failed and
        over-budget ones are told as such; the rest are marked as seen (never proposed again)
        without a value to fit.
        """
        if not self.by_key and not self.prior:
            return
        rung = self._fit_rung()
        multi = getattr(self.strategy, "fidelity_input", False)
        trials = list(self.by_key.values())
        # an earlier search's results count until the configuration has a result of its own
        priors = [(k, p) for k, p in self.prior.items() if k not in self.by_key]
        # A surrogate that takes the fidelity as an input learns from every result, each at its
        # trial's highest rung; the others from the results at the fitted rung only (BOHB).
        at = {t.key: (t.top_rung if multi else rung) for t in trials}
        objectives = [self.objective_vector(t, t.results.get(at[t.key])) for t in trials]
        objectives += [self._prior_vector(p) for _, p in priors]
        violations = [self.violation(t.params, t.macs) for t in trials]
        violations += [self.violation(p.params, p.macs) for _, p in priors]
        if ehvi:  # the error itself (log10); failed and over-budget results are not fitted
            acc = [t.metric for t in self.objectives.targets].index("val_accuracy")
            values = np.array(
                [
                    ehvi_error(1.0 - v[acc])
                    if violation <= 0 and math.isfinite(v[acc])
                    else math.inf
                    for v, violation in zip(objectives, violations, strict=True)
                ]
            )
        else:
            weights = self.scalarizer.draw_weights()
            values = self.scalarizer.scalarize(objectives, weights, violations)
        updates: dict[tuple, float | None] = {}
        fidelities: dict[tuple, float] = {}
        for trial, value in zip(trials, values[: len(trials)], strict=True):
            if trial.failed is not None:
                # inf, at the budget it failed at: one that failed when promoted (its loss NaN
                # with more epochs) was told its lower rung's value, as a full budget's
                updates[trial.key] = math.inf
                failed_at = max(trial.results, default=-1) + 1
                fidelities[trial.key] = self._budget_shares.get(failed_at, 1.0)
            elif trial.infeasible or at[trial.key] in trial.results:
                updates[trial.key] = float(value)  # the over-budget penalty, or its result
                if at[trial.key] is not None:
                    fidelities[trial.key] = self._budget_shares[at[trial.key]]
            elif trial.results:
                updates[trial.key] = None  # stopped below the fitted rung: seen, not fitted
            # a trial with no result yet stays pending: the strategy's constant liar covers it
        for (key, _), value in zip(priors, values[len(trials) :], strict=True):
            updates[key] = float(value)
        configs = {t.key: t.config for t in trials} | {k: p.config for k, p in priors}
        self.strategy.revalue(updates, configs, fidelities)
        if self._frontier is not None:
            self.strategy.use_frontier(self._frontier if ehvi else None, widest_gap=gap)

    @functools.cached_property
    def _budget_shares(self) -> dict[int, float]:
        """Each rung's budget as a share of the top rung's: epochs x data fraction x pixels."""
        top = max(self.scheduler.rungs, key=lambda r: r.index)

        def cost(rung: Rung) -> float:
            pixels = (rung.resolution / top.resolution) ** 2 if top.resolution else 1.0
            return rung.epochs * rung.data_fraction * pixels

        return {r.index: cost(r) / cost(top) for r in self.scheduler.rungs}

    def _prior_vector(self, prior: PriorTrial) -> list[float]:
        out = []
        for target in self.objectives.targets:
            if target.metric == "val_accuracy":
                out.append(prior.val_accuracy)
            else:
                count = prior.params if target.metric == "params" else prior.macs
                out.append(math.log10(max(1, count)))
        return out

    def _handle(self, outcome: JobOutcome) -> None:
        job, result = outcome.job, outcome.result
        if result.status == "failed" and (result.reason or "").startswith(DISK_FULL):
            # not the trial's failure, and every job would meet it (a full disk, a file-size
            # limit, a checkpoint folder that cannot be written): the search stops with the
            # job's MLflow run left running, so that a resumed search runs it again
            raise DiskFull(
                f"{result.reason.removeprefix(DISK_FULL)}, then resume the search (`leanfit "
                "search FILE --resume`, or leanfit.optimize(..., resume=True)): the finished "
                "trials are kept, and this job runs again"
            )
        trial = self.trial_of(job)
        self._unlogged.append((job, outcome))
        self._time_worker(outcome)
        if outcome.infrastructure_failure and job.attempt < self.retries:
            self.stats.retries += 1
            # Retry from the job's own resume point: the lower rung's checkpoint.
            self._pending.append(
                self._job(
                    trial,
                    self._rung(job.rung),
                    job.spec.resume_from,
                    attempt=job.attempt + 1,
                )
            )
            return
        stopped = result.status == "stopped"  # by its learning curve: a result, not a failure
        if result.status in ("ok", "stopped") and result.history:
            metrics = dict(result.history[-1])
            trial.results[job.rung] = metrics
            if result.checkpoint:  # (the lower rungs' are deleted once this is logged)
                trial.checkpoints[job.rung] = result.checkpoint
            value = self.rung_value(trial, metrics)
            self.stats.jobs_done += 1
            self.stats.curve_stopped += stopped
        else:
            trial.failed = result.reason or "failed"
            value = None
            self.stats.jobs_failed += 1
        self.scheduler.record(trial.trial_id, job.rung, value, trial.bracket)
        if stopped and result.history:
            trial.curve_stopped = True
            self.scheduler.hold(trial.trial_id, job.rung, trial.bracket)

    def prune_checkpoints(self, keep: set[int]) -> tuple[int, int]:
        """Delete the checkpoints of every trial not in `keep` (a finished search: nothing is
        promoted again); how many files and bytes were freed."""
        files = size = 0
        for trial in self.trials.values():
            if trial.trial_id in keep:
                continue
            for rung, path in list(trial.checkpoints.items()):
                with contextlib.suppress(OSError):  # already gone, or not ours to delete
                    if not is_trial_checkpoint(path):
                        raise FileNotFoundError(path)
                    found = Path(path).stat().st_size
                    Path(path).unlink()
                    files, size = files + 1, size + found
                del trial.checkpoints[rung]
        return files, size

    def _drop_superseded(self, trial: Trial, rung: int) -> None:
        """Delete the checkpoints of `trial`'s rungs below `rung`: a trial is only ever promoted
        from its highest finished rung, so no job resumes from them again. A search keeps one
        checkpoint a trial, not one a job (a third fewer files at eta = 3)."""
        for lower in [r for r in trial.checkpoints if r < rung]:
            if is_trial_checkpoint(trial.checkpoints[lower]):
                with contextlib.suppress(OSError):  # already gone, or not ours to delete
                    Path(trial.checkpoints[lower]).unlink(missing_ok=True)
            del trial.checkpoints[lower]

    def _rung(self, index: int) -> Rung:
        return next(r for r in self.scheduler.rungs if r.index == index)

    def rung_value(self, trial: Trial, metrics: Mapping[str, float]) -> float | tuple[float, ...]:
        """What ranks a result among its rung. With `rung_rank` "pareto" and several objectives,
        the objectives themselves, minimised (log10 validation error, as EHVI sees it, and log10
        sizes), which the scheduler ranks by non-dominated sorting; else a scalar: equal weights,
        fixed bounds."""
        vector = self.objective_vector(trial, metrics)
        if self.rung_rank == "pareto" and len(vector) > 1:
            goals = [t.metric for t in self.objectives.targets]
            ranked = [
                (metric != "val_accuracy", ehvi_error(1.0 - v) if metric == "val_accuracy" else v)
                for v, metric in zip(vector, goals, strict=True)
            ]
            # the error first, whatever the file's order: it breaks ties between the front's ends
            return tuple(v for _, v in sorted(ranked, key=lambda r: r[0]))
        return float(self.scalarizer.scalarize([vector], self.scalarizer.equal_weights())[0])

    # -- restoring -----------------------------------------------------------------------------

    def restore(self, records: list, retry_failed: bool = False) -> int:
        """Rebuild the state from the job records of an earlier run of this search.

        Finished jobs are recorded and told again; jobs that were running are queued to run
        again from their resume point. `retry_failed`: the failed jobs too, once (a search whose
        every job failed, resumed after a fix: it ran nothing, and ended FINISHED with an empty
        front). Returns the number of jobs queued again.
        """
        names = getattr(self.scheduler, "bracket_names", None)
        if names is not None and (stray := {r.bracket for r in records} - {None, *names}):
            raise LeanfitError(
                f"this search's trials ran in Hyperband bracket(s) starting at rung "
                f"{', '.join(map(str, sorted(stray)))}, which this version of leanfit does not "
                f"run (its brackets start at rungs {', '.join(map(str, names))}: Li et al.'s "
                "⌊log_η(R/r)⌋ + 1); run it again without --resume, or give it another name"
            )
        for rec in sorted(records, key=lambda r: (r.trial_id, r.rung, r.attempt)):
            trial = self.trials.get(rec.trial_id)
            if trial is not None and trial.key != self.space.key(rec.config):
                raise LeanfitError(written_twice(rec.run_id, rec.trial_id, "two configurations"))
            if trial is None:
                params, macs = self.cost(rec.config)
                trial = Trial(
                    rec.trial_id,
                    self.space.canonicalize(rec.config),
                    self.space.key(rec.config),
                    params,
                    macs,
                    bracket=rec.bracket,
                )
                self.trials[rec.trial_id] = trial
                self.by_key[trial.key] = trial
                self.n_new += 1
            if rec.status in ("running", "infrastructure", "abandoned", "interrupted"):
                continue
            if rec.status in ("ok", "stopped"):
                metrics = {k: v for k, v in rec.metrics.items()}
                trial.results[rec.rung] = metrics
                if rec.checkpoint and is_trial_checkpoint(rec.checkpoint):
                    trial.checkpoints[rec.rung] = rec.checkpoint
                value = self.rung_value(trial, metrics)
                try:
                    self.scheduler.record(trial.trial_id, rec.rung, value, trial.bracket)
                except ValueError as e:  # (a second result at the rung: see written_twice)
                    if "already has a result" not in str(e):
                        raise
                    raise LeanfitError(
                        written_twice(rec.run_id, rec.trial_id, f"two results at rung {rec.rung}")
                    ) from None
                # the counts the user sees cover the whole search, not just this run of it
                self.stats.jobs_done += 1
                if rec.status == "stopped":
                    trial.curve_stopped = True
                    self.stats.curve_stopped += 1
                    self.scheduler.hold(trial.trial_id, rec.rung, trial.bracket)
            elif rec.status == "failed" and not _retried(rec, records) and not retry_failed:
                trial.failed = rec.reason or "failed"
                self.stats.jobs_failed += 1
                self.scheduler.record(trial.trial_id, rec.rung, None, trial.bracket)
        queued: set[tuple[int, int]] = set()
        for rec in records:
            # a job the search was running when it was stopped (its run still RUNNING after a
            # kill, closed as interrupted after Ctrl-C or by the resume before, or abandoned at
            # the end of its budget, which a larger one now goes on from), or whose
            # infrastructure failed: run again, once, unless a later attempt of it exists. (An
            # abandoned trial was left out: its number went to a new configuration, and the
            # report then gave one trial the size of one and the accuracy of the other.)
            again = ("running", "infrastructure", "interrupted", "abandoned")
            again += ("failed",) if retry_failed else ()
            if rec.status in again and not _retried(rec, records):
                trial = self.trials[rec.trial_id]
                done = rec.rung in trial.results or trial.failed
                if done or (trial.trial_id, rec.rung) in queued:
                    continue
                attempt = rec.attempt + (rec.status in ("infrastructure", "failed"))
                if attempt > self.retries and rec.status != "failed":
                    trial.failed = rec.reason or "infrastructure failures"
                    self.scheduler.record(trial.trial_id, rec.rung, None, trial.bracket)
                    continue
                job = self._job(trial, self._rung(rec.rung), rec.resume_from, attempt)
                self.scheduler.mark_started(trial.trial_id, rec.rung, trial.bracket)
                self._pending.append(job)
                queued.add((trial.trial_id, rec.rung))
        return len(queued)

    def refs_of(self, jobs: list[TrialJob]) -> list[str]:
        """The events' handles (MLflow run ids) of running jobs."""
        return [ref for job in jobs if (ref := self._refs.get(id(job))) is not None]

    # -- what the user sees ---------------------------------------------------------------------

    def scored(self) -> list[Trial]:
        """The trials with a result that stands: none of their jobs failed. One that failed
        when promoted (its loss NaN with more epochs) keeps its lower rung's figures, and is
        no model to pick: it was on the front, and a finalist of the pipeline."""
        return [t for t in self.trials.values() if t.results and t.failed is None]

    def front(self) -> list[Trial]:
        """The Pareto front over the objectives, each trial at its highest rung (`scored`)."""
        done = self.scored()
        if not done:
            return []
        points = [self.objective_vector(t, t.results[t.top_rung]) for t in done]
        goals = [target.goal for target in self.objectives.targets]
        return sorted((done[i] for i in pareto_front(points, goals)), key=lambda t: t.params)

    def hypervolume_range(self) -> tuple[float, float]:
        """The log10 parameter counts the hypervolume is measured over: a space of one's own's
        `size_range`; leanfit's, 2 to 4.5 (the benchmarks' range, where a small model lives),
        or up to the hard budget where that is larger (to half a decade, outwards), or without
        one to the largest of 500 random models of the space: a model larger than the top of
        the range would add nothing, however accurate."""
        if self.size_range is not None:
            return self.size_range
        if self._hypervolume_range is None:
            low, high = LOG10_PARAMS_RANGE
            top = self.objectives.max_params
            if not top:
                rng = np.random.default_rng(0)
                top = max(
                    self.cost(self.space.sample(int(s)))[0] for s in rng.integers(0, 2**31, 500)
                )
            if math.log10(max(1, top)) > high:
                high = math.ceil(2 * math.log10(top) - 1e-9) / 2
            self._hypervolume_range = (low, high)
        return self._hypervolume_range

    def hypervolume_label(self) -> str:
        if not self._sized_targets():
            return "hypervolume (best validation accuracy: one objective)"
        low, high = self.hypervolume_range()
        return f"hypervolume (log10 params {low:g}-{high:g} x error)"

    def _sized_targets(self) -> bool:
        return any(t.metric in ("params", "macs") for t in self.objectives.targets)

    def hypervolume(self) -> float:
        """Hypervolume of the front over (log10 params in `hypervolume_range`, by default
        [2, 4.5], validation error); with accuracy the only objective, the best accuracy (the
        volume one objective dominates)."""
        done = self.scored()
        if not done:
            return 0.0
        if not self._sized_targets():
            return max(t.val_accuracy for t in done)
        low, high = self.hypervolume_range()
        pts = np.array(
            [[min(max(math.log10(max(1, t.params)), low), high), 1 - t.val_accuracy] for t in done]
        )
        return hypervolume(pts, [high, 1.0])

    def best_accuracy(self) -> float | None:
        accs = [t.val_accuracy for t in self.scored()]
        return max(accs) if accs else None

    def budget_left(self) -> float | None:
        if self.wall_time is None:
            return None
        return max(0.0, self.stats.started + self.wall_time - self.clock())

    def budget_left_text(self) -> str:
        """What is left of the budget, as the progress says it: seconds, new trials, or both
        ("-" without either)."""
        parts = []
        if (left := self.budget_left()) is not None:
            parts.append(f"{left:.0f} s")
        if self.max_trials is not None:
            new = 0 if self.stats.exhausted is not None else self.max_trials - self.n_new
            parts.append(f"{max(0, new):,} new trials")
        return ", ".join(parts) or "-"


def _nth_of_share(index: int, share: float) -> bool:
    """Whether the `index`-th of a sequence (from 1) is one of an even `share` of it: at 0.5
    every other one, at 0.25 every fourth."""
    return math.floor(index * share) > math.floor((index - 1) * share)


def _retried(rec, records) -> bool:
    return any(
        r.trial_id == rec.trial_id and r.rung == rec.rung and r.attempt > rec.attempt
        for r in records
    )
