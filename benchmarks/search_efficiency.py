"""Search efficiency: leanfit against four peers, side by side, at equal compute (issue #3).

The methods, all on the space of examples/digits.yaml (5 blocks, 51 conditional parameters, its
20k-parameter hard budget) and all on 2 workers:

- leanfit: its own search (skopt ET + EI over the flat encoding, ParEGO weights, ASHA rungs of 2, 6
  and 10 epochs, the initial design over model size), as the experiment file sets it.
- random: random search at full fidelity (10 epochs), sampling under the hard budget.
- gp_minimize: scikit-optimize's `gp_minimize` at full fidelity: its Gaussian process
  (`cook_estimator("GP", noise="gaussian")`), gp_hedge, 10 random initial points, 10,000
  acquisition samples, the hard budget as its `space_constraint`. `gp_minimize` is a sequential
  loop; to keep both workers busy, each proposal fits a fresh `Optimizer` with these settings on
  every result plus the running configurations at the best value seen (skopt's constant liar,
  "cl_min"): one GP fit per proposal, as in the sequential loop.
- tpe_hyperband: Optuna TPESampler(multivariate=True, group=True, constant_liar=True) with
  HyperbandPruner(min_resource=1, max_resource=10, reduction_factor=3), reporting every epoch.
- nsga2: Optuna NSGAIISampler (population 50) on (validation accuracy, log10 parameters), full
  fidelity.

TPE with a pruner and gp_minimize optimise one number: here the hypervolume that one result
dominates on its own in the benchmark's box, (4.5 - log10 params) x accuracy, the largest share of
the benchmark's measure one configuration can earn (no weight chosen with the target in mind).
Both Optuna samplers get the hard budget through `trial.set_constraint`; a configuration over it is
told at once, untrained, so it costs a proposal and no training. The Optuna search space follows
the conditional tree (a block's module, then that module's parameters).

Parts:

- synthetic: `leanfit.search.objectives.SyntheticObjective` (a known optimum, realistic learning
  curves) on a simulated clock, so that 20 seeds x 5 methods x 10 minutes take far less: a job
  costs the seconds real training takes on this machine (`JOB_SECONDS` + epochs x
  (`EPOCH_SECONDS` + `EPOCH_SECONDS_PER_MAC` x MACs), measured with run_trial on digits, one torch
  thread per worker), 2 simulated workers run jobs asynchronously, and each method's own work
  (proposals, surrogate fits, tells) advances its clock by the CPU seconds it really took (one
  BLAS thread), so a slow surrogate costs what it would cost. leanfit runs its real
  `SearchController`, strategy and ASHA through a simulated executor; the peers run their real
  ask/tell code. Its time-to-target asks for 97% of the best accuracy any model of <= 1,000
  parameters can reach there (the synthetic capacity curve caps those at ~0.82, so 97% itself
  is out of reach).
- real: real training on digits (the trainer of `leanfit trial`), each method for `--minutes` of
  wall time, from before its worker processes start to its last result. leanfit runs as
  `leanfit search` does (2 `LocalExecutor` workers, MLflow logging; the tracking database is
  created before the clock starts, as a user's already is); random and gp_minimize run their jobs
  on the same `LocalExecutor`; the Optuna methods run as Optuna runs in parallel: 2 processes
  sharing one journal storage, each training in-process and reporting every epoch.
- overhead: `leanfit search` itself (MLflow, 2 worker processes) with trials that sleep a digits
  epoch's time per epoch instead of training, for 100 and 1,000 trials: the share of the 2 workers'
  wall time not spent inside trials (proposals, surrogate fits, process starts, imports, data
  loading, logging, the report), and the cost of one proposal.

Figures: the hypervolume of each method's results over (log10 params in [2, 4.5], validation error)
at 2, 5 and 10 minutes (each trial at its latest result); the time to the first result with >= 97%
validation accuracy at <= 1,000 parameters, and its ratios between methods; medians and min-max
over seeds.

    python benchmarks/search_efficiency.py --part synthetic --seeds 20 --jobs 2
    # one method's seeds added beside an earlier file's (gp_minimize: about 9 CPU minutes a seed)
    python benchmarks/search_efficiency.py --part synthetic --seeds 20 --jobs 2 --resume \
        --out benchmarks/results/search_efficiency-synthetic.json
    python benchmarks/search_efficiency.py --part real --seeds 3 --minutes 2
    # the 2.5-hour real comparison over several sittings: runs only what the file lacks
    python benchmarks/search_efficiency.py --part real --seeds 3 --minutes 10 --resume
    # random search past the budget, up to 10 times leanfit's time to the target in each seed
    python benchmarks/search_efficiency.py --part real --seeds 3 --minutes 10 --resume \
        --methods leanfit,random --random-horizon 10x
    # the same for seeds 5 and 4 only, in that order, beside the file's seeds 0-2
    python benchmarks/search_efficiency.py --part real --seeds 6 --only-seeds 5,4 --minutes 10 \
        --resume --methods leanfit,random --random-horizon 10x
    python benchmarks/search_efficiency.py --part overhead --trials 100,1000
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import math
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from leanfit.config import Experiment, experiment_from_dict, load_experiment
from leanfit.execute.base import Executor, JobOutcome, TrialJob
from leanfit.execute.local import LocalExecutor
from leanfit.search.controller import SearchController, within_budget
from leanfit.search.factory import make_strategy
from leanfit.search.objectives import A_FLOOR, A_TOP, CAPACITY_SCALE, SyntheticObjective
from leanfit.search.pareto import LOG10_PARAMS_RANGE, params_error_hypervolume
from leanfit.search.random_search import RandomSearch
from leanfit.search.run import make_scheduler, model_cost, run_search, runner_for
from leanfit.space.spec import SearchSpace
from leanfit.train.trainer import TrainResult
from leanfit.train.trial import TrialSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_throughput import cpu_model, git_commit, provenance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("leanfit", "random", "gp_minimize", "tpe_hyperband", "nsga2")
WORKERS = 2
CHECKPOINTS = (120.0, 300.0, 600.0)  # seconds at which each front's hypervolume is read
TARGET_ACCURACY = 0.97
TARGET_PARAMS = 1_000
# What a job costs on this machine (2 cores, one torch thread per worker, digits at 16x16): model
# build, data and checkpoint per job, and per epoch a constant plus a part growing with MACs;
# least squares over 14 random configurations of the space trained with run_trial.
JOB_SECONDS = 0.04
EPOCH_SECONDS = 0.28
EPOCH_SECONDS_PER_MAC = 2.5e-7
GP_INITIAL_POINTS = 10  # gp_minimize's defaults from here on
GP_ACQUISITION_SAMPLES = 10_000


@dataclass(frozen=True)
class Report:
    """A result as it became available: `seconds` after the method started."""

    seconds: float
    trial: int
    params: int
    accuracy: float
    epochs: int


# -- figures ---------------------------------------------------------------------------------


def box_share(params: int, accuracy: float) -> float:
    """The hypervolume one result dominates alone in the benchmark's box (the single objective of
    TPE and gp_minimize): (4.5 - log10 params, clipped to [2, 4.5]) x accuracy."""
    low, high = LOG10_PARAMS_RANGE
    x = min(max(math.log10(max(1, params)), low), high)
    return (high - x) * min(max(accuracy, 0.0), 1.0)


def hypervolume_at(log: list[Report], seconds: float) -> float:
    """Hypervolume of the results available at `seconds`, each trial at its latest result."""
    latest: dict[int, Report] = {}
    for r in log:
        if r.seconds <= seconds and (r.trial not in latest or r.epochs > latest[r.trial].epochs):
            latest[r.trial] = r
    if not latest:
        return 0.0
    rows = list(latest.values())
    return params_error_hypervolume([r.params for r in rows], [1 - r.accuracy for r in rows])


def time_to_target(log: list[Report], accuracy: float, max_params: int) -> float | None:
    """Seconds to the first result at >= `accuracy` with <= `max_params` (None: not reached)."""
    hits = [r.seconds for r in log if r.accuracy >= accuracy and r.params <= max_params]
    return min(hits) if hits else None


def figures(log: list[Report], budget: float, target: float) -> dict[str, Any]:
    hypervolumes = {
        f"{int(t // 60)}min": hypervolume_at(log, t) if t <= budget + 1e-9 else None
        for t in CHECKPOINTS
    }
    hypervolumes["end"] = hypervolume_at(log, budget)
    return {
        "hypervolume": hypervolumes,
        "time_to_target": time_to_target(log, target, TARGET_PARAMS),
        "results": len(log),
        "trials": len({r.trial for r in log}),
        "best_accuracy_at_1000_params": max(
            (r.accuracy for r in log if r.params <= TARGET_PARAMS), default=None
        ),
    }


def synthetic_target() -> float:
    """97% of the best accuracy a model of <= 1,000 parameters can reach on the synthetic
    objective (its capacity curve at 10^3 parameters, best hyper-parameters, no noise)."""
    cap = A_TOP - (A_TOP - A_FLOOR) * math.exp(-(math.log10(TARGET_PARAMS) - 2.0) / CAPACITY_SCALE)
    return TARGET_ACCURACY * cap


def epoch_seconds(macs: int) -> float:
    return EPOCH_SECONDS + EPOCH_SECONDS_PER_MAC * macs


# -- the peers: ask/tell behind one small interface --------------------------------------------


class Peer(ABC):
    """A peer method: `ask` a feasible configuration, `report` epochs (pruning peers), `tell`."""

    prunes = False

    @abstractmethod
    def ask(self) -> tuple[Any, dict[str, Any]]:
        """A feasible configuration and the handle to report and tell it with."""

    def report(self, handle: Any, epoch: int, accuracy: float) -> bool:
        """Whether the trial goes on after this epoch."""
        return True

    @abstractmethod
    def tell(self, handle: Any, accuracy: float | None, epochs: int, pruned: bool = False):
        """The trial's final accuracy (None: failed) after `epochs`."""


class RandomPeer(Peer):
    def __init__(self, space: SearchSpace, feasible, seed: int):
        self.strategy = RandomSearch(space, seed=seed, feasible=feasible)

    def ask(self):
        return None, self.strategy.ask(1)[0]

    def tell(self, handle, accuracy, epochs, pruned=False):
        pass  # the strategy remembers what it proposed; random search learns nothing


class GpMinimizePeer(Peer):
    """gp_minimize's model and acquisition, asked asynchronously with a constant liar."""

    def __init__(self, space: SearchSpace, feasible, cost, seed: int):
        from skopt.space import Space
        from skopt.utils import normalize_dimensions

        self.space = space
        self.cost = cost
        self.dims = normalize_dimensions(space.to_skopt().dimensions)

        def constraint(point) -> bool:
            return bool(feasible(space.decode(point)))

        self.constraint = constraint
        self.sampler = Space(self.dims, constraint=constraint)
        self.rng = np.random.RandomState(seed)
        self.xs: list[list[Any]] = []
        self.ys: list[float] = []
        self.known: dict[tuple, float] = {}
        self.pending: dict[int, tuple[list[Any], tuple, int]] = {}
        self._next = 0

    def _model_point(self) -> list[Any]:
        from skopt import Optimizer
        from skopt.space import Space
        from skopt.utils import cook_estimator

        estimator = cook_estimator(
            "GP",
            space=Space(self.dims),
            random_state=self.rng.randint(0, 2**31 - 1),
            noise="gaussian",
        )
        optimizer = Optimizer(
            self.dims,
            estimator,
            n_initial_points=0,
            acq_func="gp_hedge",
            acq_optimizer="auto",
            acq_optimizer_kwargs={
                "n_points": GP_ACQUISITION_SAMPLES,
                "n_restarts_optimizer": 5,
                "n_jobs": 1,
            },
            acq_func_kwargs={"xi": 0.01, "kappa": 1.96},
            space_constraint=self.constraint,
            random_state=self.rng.randint(0, 2**31 - 1),
        )
        pending = [point for point, _, _ in self.pending.values()]
        lie = min(self.ys)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimizer.tell(self.xs + pending, self.ys + [lie] * len(pending))
            return optimizer.ask()

    def ask(self):
        busy = {key for _, key, _ in self.pending.values()}
        for attempt in range(100):
            if len(self.ys) + len(self.pending) < GP_INITIAL_POINTS or attempt > 10:
                point = self.sampler.rvs(1, random_state=self.rng)[0]
            else:
                point = self._model_point()
            config = self.space.decode(point)
            key = self.space.key(config)
            if key in self.known:  # a repeat: told its known value, not trained again
                self.xs.append(point)
                self.ys.append(self.known[key])
                continue
            if key in busy:
                continue
            handle, self._next = self._next, self._next + 1
            self.pending[handle] = (point, key, self.cost(config)[0])
            return handle, config
        raise RuntimeError("gp_minimize proposed 100 known configurations in a row")

    def tell(self, handle, accuracy, epochs, pruned=False):
        point, key, params = self.pending.pop(handle)
        value = -box_share(params, accuracy if accuracy is not None else 0.0)
        self.xs.append(point)
        self.ys.append(value)
        self.known[key] = value


def suggest_config(trial, space: SearchSpace) -> dict[str, Any]:
    """A configuration of `space` drawn through Optuna's define-by-run API, following the tree:
    a parameter is suggested only when its parent makes it active."""
    config: dict[str, Any] = {}
    for p in space.params:
        if not space.is_active(p, config):
            continue
        if p.constant:
            config[p.name] = p.canonical
        elif p.kind == "categorical":
            config[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "integer":
            config[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        else:
            config[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)
    config.update(space.fixed)
    return config


def optuna_study(kind: str, seed: int, storage=None, name: str | None = None, load=False):
    """The peer's study: TPE + Hyperband on the box share, or NSGA-II on two objectives."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if kind == "tpe_hyperband":
        sampler = optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True
        )
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=10, reduction_factor=3)
        settings = {"sampler": sampler, "pruner": pruner}
        directions = ["maximize"]
    else:
        settings = {"sampler": optuna.samplers.NSGAIISampler(seed=seed)}
        directions = ["maximize", "minimize"]
    if load:
        return optuna.load_study(study_name=name, storage=storage, **settings)
    return optuna.create_study(directions=directions, storage=storage, study_name=name, **settings)


class OptunaPeer(Peer):
    def __init__(self, kind: str, space: SearchSpace, cost, max_params: int, study):
        self.kind = kind
        self.prunes = kind == "tpe_hyperband"
        self.space = space
        self.cost = cost
        self.max_params = max_params
        self.study = study
        self.params: dict[int, int] = {}

    def values(self, params: int, accuracy: float):
        if self.kind == "tpe_hyperband":
            return box_share(params, accuracy)
        return [accuracy, math.log10(params)]

    def ask(self):
        while True:
            trial = self.study.ask()
            config = suggest_config(trial, self.space)
            params = self.cost(config)[0]
            over = math.log10(params / self.max_params)
            trial.set_constraint("max_params", over)
            if over > 0:  # over the hard budget: told at once, never trained
                self.study.tell(trial, self.values(params, 0.0))
                continue
            self.params[trial.number] = params
            return trial, config

    def report(self, trial, epoch, accuracy):
        trial.report(box_share(self.params[trial.number], accuracy), epoch)
        return not trial.should_prune()

    def tell(self, trial, accuracy, epochs, pruned=False):
        from optuna.trial import TrialState

        if accuracy is None:
            self.study.tell(trial, state=TrialState.FAIL)
        elif pruned:
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, self.values(self.params[trial.number], accuracy))


def make_peer(method: str, experiment: Experiment, seed: int) -> Peer:
    space = experiment.search_space()
    cost = model_cost(experiment.dataset.num_channels, experiment.dataset.image_size, 10)
    feasible = within_budget(experiment.objectives, cost)
    if method == "random":
        return RandomPeer(space, feasible, seed)
    if method == "gp_minimize":
        return GpMinimizePeer(space, feasible, cost, seed)
    study = optuna_study(method, seed)
    return OptunaPeer(method, space, cost, experiment.objectives.max_params, study)


# -- synthetic: a simulated clock --------------------------------------------------------------


class SimClock:
    """Simulated seconds: the CPU time of the method's own work, plus the training it waits for."""

    def __init__(self) -> None:
        self._base = 0.0
        self._cpu = time.process_time()
        self.charged = 0.0  # CPU seconds of the method's own work, in all

    def __call__(self) -> float:
        return self._base + time.process_time() - self._cpu

    def advance_to(self, t: float) -> None:
        now = self()
        self.charged += time.process_time() - self._cpu
        self._base, self._cpu = max(now, t), time.process_time()

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        """Work that stands in for training (the objective itself) is not charged."""
        start = time.process_time()
        try:
            yield
        finally:
            self._cpu += time.process_time() - start


class SimulatedExecutor(Executor):
    """`WORKERS` simulated workers: a job ends `job_seconds` of simulated time after it starts."""

    def __init__(self, objective: SyntheticObjective, clock: SimClock):
        self.objective = objective
        self.clock = clock
        self.log: list[Report] = []
        self._queue: list[tuple[float, int, JobOutcome]] = []
        self._epochs_at: dict[str, int] = {}  # checkpoint -> epochs it holds
        self._seq = 0

    def free_slots(self) -> int:
        return WORKERS - len(self._queue)

    def running(self) -> list[TrialJob]:
        return [outcome.job for _, _, outcome in self._queue]

    def submit(self, job: TrialJob) -> None:
        spec = job.spec
        with self.clock.excluded():
            start = self._epochs_at.get(spec.resume_from, 0) if spec.resume_from else 0
            r = self.objective.evaluate(
                spec.config, spec.epochs, start, spec.data_fraction, spec.resolution
            )
            history = [{"epoch": spec.epochs, "val_accuracy": r.val_accuracy}]
            result = TrainResult("ok", history, r.params, r.macs, epochs=spec.epochs)
            result.checkpoint = spec.checkpoint_to
            self._epochs_at[spec.checkpoint_to] = spec.epochs
            seconds = JOB_SECONDS + (spec.epochs - start) * epoch_seconds(r.macs)
        finish = self.clock() + seconds
        heapq.heappush(self._queue, (finish, self._seq, JobOutcome(job, result, worker="sim")))
        self._seq += 1

    def wait(self, timeout: float | None = None) -> list[JobOutcome]:
        if not self._queue:
            return []
        now = self.clock()
        if timeout is not None and self._queue[0][0] > now + timeout:
            self.clock.advance_to(now + timeout)
            return []
        self.clock.advance_to(self._queue[0][0])
        done = []
        while self._queue and self._queue[0][0] <= self.clock():
            finish, _, outcome = heapq.heappop(self._queue)
            self._record(finish, outcome)
            done.append(outcome)
        return done

    def _record(self, finish: float, outcome: JobOutcome) -> None:
        r = outcome.result
        trial = int(outcome.job.spec.trial_id.split("-")[1])
        self.log.append(Report(finish, trial, r.params, r.val_accuracy, r.epochs))

    def flush(self, budget: float) -> None:
        """Results that exist by the end of the budget but were not collected yet."""
        for finish, _, outcome in self._queue:
            if finish <= budget:
                self._record(finish, outcome)
        self._queue.clear()

    def close(self) -> None:
        pass


def simulate_leanfit(experiment: Experiment, objective, budget: float, seed: int, work: Path):
    clock = SimClock()
    executor = SimulatedExecutor(objective, clock)
    space = experiment.search_space()
    feasible = within_budget(experiment.objectives, objective.cost)
    controller = SearchController(
        space=space,
        strategy=make_strategy(space, experiment.strategy, seed=seed, feasible=feasible),
        scheduler=make_scheduler(experiment),
        executor=executor,
        objectives=experiment.objectives,
        cost=objective.cost,
        checkpoint_dir=work,  # nothing is written: the simulated jobs keep no files
        wall_time=budget,
        seed=seed,
        initial_design=experiment.strategy.initial_points,
        clock=clock,
        ehvi_share=experiment.ehvi_share(),
        gap_share=experiment.gap_share(),
        rung_rank=experiment.scheduler.rank,
    )
    controller.run()
    executor.flush(budget)
    clock.advance_to(clock())
    stats = {"jobs": controller.stats.jobs_done, "method_cpu_seconds": clock.charged}
    return executor.log, stats


@dataclass
class _SimTrial:
    handle: Any
    trial: int
    curve: tuple[float, ...]
    params: int
    epoch_seconds: float
    epoch: int = 0


def simulate_peer(
    peer: Peer,
    objective,
    budget: float,
    full_epochs: int,
    clock: SimClock,
    horizon: float | None = None,
):
    """The peer's ask/tell loop on `WORKERS` simulated workers; a pruning peer hears each epoch.

    With `horizon` (> budget) it goes on past the budget until its first result at the target
    (`synthetic_target()` at <= `TARGET_PARAMS`) or the horizon, only to time that target."""
    queue: list[tuple[float, int, _SimTrial]] = []
    log: list[Report] = []
    trials = jobs = 0
    target = synthetic_target()
    reached = False
    end = max(budget, horizon or 0.0)
    started_by_budget = 0  # trials started within the budget (all of them without a horizon)
    while True:
        if reached and clock() >= budget:
            break
        while len(queue) < WORKERS and clock() < end:
            handle, config = peer.ask()
            with clock.excluded():
                r = objective.evaluate(config, full_epochs)
            sim = _SimTrial(handle, trials, r.curve, r.params, epoch_seconds(r.macs))
            sim.epoch = 1 if peer.prunes else full_epochs
            heapq.heappush(
                queue, (clock() + JOB_SECONDS + sim.epoch * sim.epoch_seconds, jobs, sim)
            )
            trials += 1
            jobs += 1
            started_by_budget += clock() < budget
        if not queue or queue[0][0] > end:
            break
        finish, _, sim = heapq.heappop(queue)
        clock.advance_to(finish)
        accuracy = sim.curve[sim.epoch - 1]
        log.append(Report(finish, sim.trial, sim.params, accuracy, sim.epoch))
        reached = reached or (
            horizon is not None and accuracy >= target and sim.params <= TARGET_PARAMS
        )
        if sim.epoch < full_epochs and peer.report(sim.handle, sim.epoch, accuracy):
            sim.epoch += 1
            heapq.heappush(queue, (finish + sim.epoch_seconds, jobs, sim))
            jobs += 1
            continue
        peer.tell(sim.handle, accuracy, sim.epoch, pruned=sim.epoch < full_epochs)
    clock.advance_to(clock())
    return log, {"jobs": started_by_budget, "method_cpu_seconds": clock.charged}


def synthetic_seed(
    method: str, seed: int, budget: float, experiment_data: dict, random_horizon: float = 0.0
) -> dict:
    """One method, one seed, on the synthetic objective (run in a worker process).

    With `random_horizon` (seconds, > budget), random search goes on past the budget until it
    reaches the target, to time it where it does not within the budget (a few CPU seconds: its
    proposals cost nothing); the row's figures stay those of the budget, the time past it is
    `beyond_budget`."""
    experiment = experiment_from_dict(experiment_data, ROOT / "examples")
    experiment = experiment.model_copy(
        update={"strategy": experiment.strategy.model_copy(update={"seed": seed})}
    )
    ds = experiment.dataset
    objective = SyntheticObjective(
        experiment.search_space(), ds.num_channels, ds.image_size, 10, seed=seed
    )
    horizon = random_horizon if method == "random" and random_horizon > budget else None
    with threadpool_limits(limits=1), tempfile.TemporaryDirectory() as work:
        if method == "leanfit":
            log, stats = simulate_leanfit(experiment, objective, budget, seed, Path(work))
        else:
            clock = SimClock()  # the peer's construction counts too
            peer = make_peer(method, experiment, seed)
            log, stats = simulate_peer(
                peer, objective, budget, experiment.budget.max_epochs, clock, horizon
            )
    row = {"method": method, "seed": seed}
    if horizon is not None:
        row["beyond_budget"] = {
            "horizon_seconds": horizon,
            "time_to_target": time_to_target(log, synthetic_target(), TARGET_PARAMS),
            "trials": len({r.trial for r in log}),
        }
        log = [r for r in log if r.seconds <= budget]
    return {**row, **figures(log, budget, synthetic_target()), **stats}


# -- real training -----------------------------------------------------------------------------


def isolated(experiment: Experiment, work: Path, seed: int) -> Experiment:
    """The experiment with its own work folder and tracking database, seeded."""
    return experiment.model_copy(
        update={
            "work_dir": str(work / ".leanfit"),
            "tracking": experiment.tracking.model_copy(update={"uri": f"sqlite:///{work}/m.db"}),
            "strategy": experiment.strategy.model_copy(update={"seed": seed}),
        }
    )


def real_leanfit(experiment: Experiment, budget: float, work: Path) -> tuple[list[Report], dict]:
    from leanfit.track import TrialLogger

    TrialLogger(experiment.tracking_uri(), experiment.experiment_name())  # creates the database
    t0 = time.time()
    outcome = run_search(experiment, workers=WORKERS, wall_time=budget)
    controller = outcome.controller
    client = TrialLogger(experiment.tracking_uri(), experiment.experiment_name()).client
    runs = client.search_runs(
        [client.get_experiment_by_name(experiment.experiment_name()).experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{outcome.search_run_id}'",
        max_results=10_000,
    )
    rungs = {r.index: r.epochs for r in controller.scheduler.rungs}
    log = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        if "val_accuracy" not in metrics or run.info.end_time is None:
            continue
        trial = controller.trials[int(tags["leanfit.trial_id"])]
        epochs = rungs[int(tags["leanfit.rung"])]
        seconds = run.info.end_time / 1000 - t0
        log.append(Report(seconds, trial.trial_id, trial.params, metrics["val_accuracy"], epochs))
    stats = {
        "jobs": controller.stats.jobs_done,
        "proposal_seconds": controller.stats.propose_seconds,
    }
    return log, stats


def real_peer_on_workers(
    method: str, experiment: Experiment, budget: float, seed: int, horizon: float | None = None
) -> tuple[list[Report], dict]:
    """random and gp_minimize: full-fidelity jobs on the same `LocalExecutor` leanfit uses.

    With `horizon` (seconds, > budget) it goes on past the budget until its first result at the
    target (>= `TARGET_ACCURACY` at <= `TARGET_PARAMS`) or the horizon, only to time that target;
    the log then holds the results past the budget too."""
    t0 = time.time()
    end = t0 + max(budget, horizon or 0.0)
    reached = False

    def stop_at() -> float:  # past the budget only while the target is not reached
        return t0 + budget if reached else end

    peer = make_peer(method, experiment, seed)
    epochs = experiment.budget.max_epochs
    log: list[Report] = []
    handles: dict[str, tuple[Any, int]] = {}
    propose = 0.0
    started_by_budget = 0  # trials started within the budget (all of them without a horizon)
    runner = runner_for(experiment, WORKERS)
    with LocalExecutor(runner, WORKERS, experiment.executor.trial_timeout) as executor:
        while time.time() < stop_at():
            while executor.free_slots() > 0 and time.time() < stop_at():
                started = time.perf_counter()
                with threadpool_limits(limits=1):
                    handle, config = peer.ask()
                propose += time.perf_counter() - started
                n = len(handles)
                spec = TrialSpec(
                    trial_id=f"trial-{n:05d}-rung-0",
                    config=config,
                    epochs=epochs,
                    seed=seed * 100_003 + n,
                )
                handles[spec.trial_id] = (handle, n)
                started_by_budget += time.time() < t0 + budget
                executor.submit(TrialJob(spec))
            for outcome in executor.wait(timeout=max(0.0, min(1.0, stop_at() - time.time()))):
                seconds = time.time() - t0
                handle, n = handles[outcome.job.spec.trial_id]
                r = outcome.result
                ok = r.status == "ok" and r.history
                if ok and seconds <= end - t0:
                    log.append(Report(seconds, n, r.params, r.val_accuracy, epochs))
                    hit = r.val_accuracy >= TARGET_ACCURACY and r.params <= TARGET_PARAMS
                    reached = reached or (horizon is not None and hit)
                started = time.perf_counter()
                with threadpool_limits(limits=1):
                    peer.tell(handle, r.val_accuracy if ok else None, epochs)
                propose += time.perf_counter() - started
        ran = time.time() - t0
    stats = {"jobs": started_by_budget, "proposal_seconds": propose}
    if horizon is not None:
        stats["ran_seconds"] = ran  # the horizon, or less where it reached the target
    return log, stats


class _OutOfTime(Exception):
    pass


def optuna_worker(
    kind: str,
    seed: int,
    storage_path: str,
    experiment_data: dict,
    base_dir: str,
    t0: float,
    budget: float,
    log_path: str,
) -> None:
    """One of the Optuna processes: samples, trains in-process and reports every epoch."""
    import optuna
    import torch
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from leanfit.data.sources import load_dataset
    from leanfit.train.trial import run_trial, train_data

    torch.set_num_threads(1)
    experiment = experiment_from_dict(experiment_data, base_dir)
    data = train_data(experiment, load_dataset(experiment), for_search=True)
    storage = JournalStorage(JournalFileBackend(storage_path))
    study = optuna_study(kind, seed, storage, "peer", load=True)
    space = experiment.search_space()
    cost = model_cost(experiment.dataset.num_channels, experiment.dataset.image_size, 10)
    peer = OptunaPeer(kind, space, cost, experiment.objectives.max_params, study)
    epochs = experiment.budget.max_epochs
    with open(log_path, "a") as log:
        while time.time() - t0 < budget:
            with threadpool_limits(limits=1):
                trial, config = peer.ask()
            params = peer.params[trial.number]
            last = {"epoch": 0, "accuracy": 0.0}

            def on_epoch(record, trial=trial, params=params, last=last):
                seconds = time.time() - t0
                if seconds > budget:
                    raise _OutOfTime
                last.update(epoch=record["epoch"], accuracy=record["val_accuracy"])
                if peer.prunes or record["epoch"] == epochs:
                    row = [seconds, trial.number, params, record["val_accuracy"], record["epoch"]]
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                if peer.prunes and not peer.report(trial, record["epoch"], record["val_accuracy"]):
                    raise optuna.TrialPruned

            spec = TrialSpec(
                trial_id=f"trial-{trial.number:05d}-rung-0",
                config=config,
                epochs=epochs,
                seed=seed * 100_003 + trial.number,
            )
            try:
                result = run_trial(experiment, spec, data, on_epoch=on_epoch)
            except optuna.TrialPruned:
                peer.tell(trial, last["accuracy"], last["epoch"], pruned=True)
                continue
            except _OutOfTime:
                return
            ok = result.status == "ok" and result.history
            peer.tell(trial, result.val_accuracy if ok else None, epochs)


def real_optuna(
    kind: str, experiment: Experiment, budget: float, seed: int, work: Path
) -> tuple[list[Report], dict]:
    """Optuna's own parallel setup: `WORKERS` processes sharing one journal storage."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage_path = str(work / "optuna.journal")
    optuna_study(kind, seed, JournalStorage(JournalFileBackend(storage_path)), "peer")
    data = experiment.model_dump(mode="json", exclude={"base_dir"})
    ctx = mp.get_context("spawn")
    t0 = time.time()
    logs = [work / f"optuna-{i}.jsonl" for i in range(WORKERS)]
    base = str(experiment.base_dir)
    processes = [
        ctx.Process(
            target=optuna_worker,
            args=(kind, seed * 100 + i, storage_path, data, base, t0, budget, str(logs[i])),
            daemon=True,
        )
        for i in range(WORKERS)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=max(1.0, t0 + budget + 30 - time.time()))
        if p.is_alive():
            p.kill()
            p.join()
    log = []
    for path in logs:
        if path.exists():
            for line in path.read_text().splitlines():
                seconds, trial, params, accuracy, epochs = json.loads(line)
                if seconds <= budget:
                    log.append(Report(seconds, trial, params, accuracy, epochs))
    return log, {"jobs": len({r.trial for r in log})}


def real_seed(
    method: str, seed: int, budget: float, experiment: Experiment, past: dict | None = None
) -> dict:
    """One method, one seed, trained for real. `past` (random search only): the row's
    `beyond_budget` record so far, `{"spec", "horizon_seconds"}` (see `real_horizon`); with a
    horizon random goes on past the budget to time the target, and the row's figures stay
    those of the budget."""
    horizon = (past or {}).get("horizon_seconds")
    with tempfile.TemporaryDirectory(prefix="leanfit-search-efficiency-") as folder:
        work = Path(folder)
        exp = isolated(experiment, work, seed)
        if method == "leanfit":
            log, stats = real_leanfit(exp, budget, work)
        elif method in ("random", "gp_minimize"):
            log, stats = real_peer_on_workers(method, exp, budget, seed, horizon)
        else:
            log, stats = real_optuna(method, exp, budget, seed, work)
    row: dict[str, Any] = {"method": method, "seed": seed}
    ran = stats.pop("ran_seconds", None)
    if past is not None:
        row["beyond_budget"] = {
            **past,
            "time_to_target": time_to_target(log, TARGET_ACCURACY, TARGET_PARAMS),
            "trials": len({r.trial for r in log}),
            "seconds": max((r.seconds for r in log), default=0.0),  # of its last result
            "ran_seconds": ran,
        }
        log = [r for r in log if r.seconds <= budget]
    return {**row, **figures(log, budget, TARGET_ACCURACY), **stats}


def real_horizon(args: argparse.Namespace, rows: list[dict], seed: int) -> dict | None:
    """Random search's horizon past the budget in `seed` (`--random-horizon`), None without
    one: minutes, or a multiple of leanfit's time to the target in the same seed ("10x": random
    goes on to 10 times leanfit's time; not reaching the target by then shows that leanfit was
    at least 10 times sooner). Where leanfit has no time to the target in that seed, the horizon
    is None and random stops at the budget."""
    spec = horizon_spec(args)
    if args.random_horizon:
        return {"spec": spec, "horizon_seconds": args.random_horizon * 60}
    if not spec:
        return None
    mine = next(
        (r["time_to_target"] for r in rows if (r["method"], r["seed"]) == ("leanfit", seed)), None
    )
    if mine is None:
        return {"spec": spec, "horizon_seconds": None, "why": "leanfit has no time to the target"}
    horizon = max(args.minutes * 60, args.random_horizon_times * mine)
    return {"spec": spec, "horizon_seconds": horizon}


# -- overhead ----------------------------------------------------------------------------------


def overhead_run(experiment: Experiment, trials: int, sleep: float, work: Path) -> dict:
    """`leanfit search` over `trials` trials that sleep `sleep` seconds per epoch."""
    from leanfit.track import TrialLogger

    exp = isolated(experiment, work, 0)
    exp = exp.model_copy(update={"budget": exp.budget.model_copy(update={"wall_time": None})})
    started = time.perf_counter()
    TrialLogger(exp.tracking_uri(), exp.experiment_name())
    tracking_init = time.perf_counter() - started
    progress: list[tuple[int, float]] = []
    run_ended = [0.0]

    def on_progress(c: SearchController) -> None:
        progress.append((c.n_new, c.stats.propose_seconds))
        run_ended[0] = time.monotonic()  # its last call is at the end of the controller's run

    # time.monotonic: the controller's clock, so that its workers' times compare
    started, cpu_started = time.monotonic(), time.process_time()
    outcome = run_search(
        exp, workers=WORKERS, max_trials=trials, synthetic_sleep=sleep, on_progress=on_progress
    )
    ended = time.monotonic()
    wall = ended - started
    controller_cpu = time.process_time() - cpu_started
    c = outcome.controller
    rungs = {r.index: r.epochs for r in c.scheduler.rungs}
    epochs = sum(rungs[t.top_rung] for t in c.trials.values() if t.results)
    training = epochs * sleep  # seconds inside trials, over both workers
    late = [p for p in progress if p[0] >= 0.9 * trials]
    last_tenth = None
    if late and progress[-1][0] > late[0][0]:
        last_tenth = (progress[-1][1] - late[0][1]) / (progress[-1][0] - late[0][0])
    return {
        "trials": len(c.trials),
        "jobs": c.stats.jobs_done,
        "epochs_trained": epochs,
        "sleep_per_epoch": sleep,
        "wall_seconds": wall,
        "training_seconds_per_worker": training / WORKERS,
        "non_training_share": 1 - training / (WORKERS * wall),
        "proposal_seconds": c.stats.propose_seconds,
        # Proposals are made while the workers train: with real training on the same cores,
        # the controller's CPU time is what it takes from them.
        "controller_cpu_seconds": controller_cpu,
        "controller_cpu_share_of_workers": controller_cpu / (WORKERS * wall),
        "proposal_share_of_wall": c.stats.propose_seconds / wall,
        "seconds_per_proposal": c.stats.propose_seconds / max(1, c.n_new),
        "seconds_per_proposal_last_tenth": last_tenth,
        "tracking_database_creation_seconds": tracking_init,
        "outside_training_per_worker": where_outside_training(
            outcome.controller, started, run_ended[0], ended, training
        ),
    }


def overhead_command_run(experiment: Experiment, trials: int, sleep: float, work: Path) -> dict:
    """`leanfit search FILE --synthetic SLEEP --trials N` as a user types it, timed from the
    command's start to its exit: Python's start, the controller's imports and the printed table
    included. The training time is read back from the search's MLflow runs (each job's epochs
    beyond the rung it resumed from)."""
    import yaml

    from leanfit.track import TrialLogger
    from leanfit.track.search import TAG_BUDGET, TAG_FROM_RUNG, TAG_KIND

    exp = isolated(experiment, work, 0)
    exp = exp.model_copy(update={"budget": exp.budget.model_copy(update={"wall_time": None})})
    logger = TrialLogger(exp.tracking_uri(), exp.experiment_name())  # the database, as a user's
    file = work / "experiment.yaml"
    file.write_text(yaml.safe_dump(exp.model_dump(mode="json", exclude={"base_dir"})))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-m", "leanfit.cli", "search", str(file), "--synthetic",
               str(sleep), "--trials", str(trials), "--workers", str(WORKERS)]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"leanfit search failed:\n{done.stderr[-3000:]}")
    rungs = {r.index: r.epochs for r in make_scheduler(exp).rungs}
    client = logger.client
    runs = client.search_runs(
        [logger.experiment_id], f"tags.`{TAG_KIND}` = 'trial'", max_results=50_000
    )
    epochs = 0
    for run in runs:
        budget = json.loads(run.data.tags[TAG_BUDGET])["epochs"]
        from_rung = run.data.tags.get(TAG_FROM_RUNG, "")
        epochs += budget - (rungs[int(from_rung)] if from_rung else 0)
    training = epochs * sleep
    return {
        "trials": trials,
        "jobs": len(runs),
        "epochs_trained": epochs,
        "wall_seconds": wall,
        "training_seconds_per_worker": training / WORKERS,
        "non_training_share": 1 - training / (WORKERS * wall),
        "command": f"leanfit search FILE --synthetic {sleep} --trials {trials} --workers {WORKERS}",
    }


def where_outside_training(
    c: SearchController, started: float, run_ended: float, ended: float, training: float
) -> dict[str, float]:
    """Where a worker's wall time outside training went, in seconds, averaged over the workers
    (they add up to the wall time less the training time a worker):

    - before_first_job: the search's own start (worker processes, its imports, the data, the
      MLflow run) until the worker is given its first job;
    - worker_start: that first job waiting for the worker to be ready (importing torch, when
      the worker is not ready by then);
    - in_jobs: the rest of the jobs' time beyond their epochs (messages, the runner's work);
    - between_jobs: from a result to the worker's next job (proposals, bookkeeping);
    - tail: from the worker's last result to the end of the search loop (no job left for it);
    - after: the end of the loop to the return (the workers stopped, the report, MLflow).
    """
    times = c.stats.workers
    ready = getattr(c.executor, "ready_at", {})
    worker_start = sum(max(0.0, ready.get(n, w.first_submitted) - w.first_submitted)
                       for n, w in times.items())  # fmt: skip
    busy = sum(w.busy for w in times.values())
    parts = {
        "before_first_job": sum(w.first_submitted - started for w in times.values()),
        "worker_start": worker_start,
        "in_jobs": busy - training - worker_start,
        "between_jobs": sum(w.last_finished - w.first_submitted - w.busy for w in times.values()),
        "tail": sum(run_ended - w.last_finished for w in times.values()),
        "after": (ended - run_ended) * len(times),
    }
    return {k: v / max(1, len(times)) for k, v in parts.items()}


# -- summaries and output -----------------------------------------------------------------------


def spread(values: list[float | None]) -> dict[str, Any]:
    have = [v for v in values if v is not None]
    if not have:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": statistics.median(have),
        "min": min(have),
        "max": max(have),
        "n": len(have),
    }


def summarise(rows: list[dict], methods: list[str], budget: float) -> dict[str, Any]:
    """Medians and ranges over the seeds that every method has finished."""
    seeds = sorted({r["seed"] for r in rows})
    complete = [s for s in seeds if all(any(r["seed"] == s and r["method"] == m for r in rows)
                                        for m in methods)]  # fmt: skip
    rows = [r for r in rows if r["seed"] in complete]
    by = {
        m: sorted((r for r in rows if r["method"] == m), key=lambda r: r["seed"]) for m in methods
    }
    out: dict[str, Any] = {"seeds": complete, "methods": {}, "time_ratios": {}}
    for m, mine in by.items():
        ttt = [r["time_to_target"] for r in mine]
        reached = [t for t in ttt if t is not None]
        # Censored: an unreached target counts as later than any time, so the median is finite
        # only when more than half of the seeds reached it.
        censored = sorted(t if t is not None else math.inf for t in ttt)
        median = statistics.median(censored) if censored else None
        out["methods"][m] = {
            "hypervolume": {
                k: spread([r["hypervolume"][k] for r in mine]) for k in mine[0]["hypervolume"]
            }
            if mine
            else {},
            "time_to_target": {
                "median": None if median is None or math.isinf(median) else median,
                "median_censored": median is not None and math.isinf(median),
                "reached": len(reached),
                "seeds": len(mine),
                "min": min(reached, default=None),
                "max": max(reached, default=None),
            },
            "trials": spread([r["trials"] for r in mine]),
            "jobs": spread([r.get("jobs") for r in mine]),
        }
    for a in methods:
        for b in methods:
            if a == b:
                continue
            per_seed = []
            for ra, rb in zip(by[a], by[b], strict=False):
                ta, tb = ra["time_to_target"], rb["time_to_target"]
                if ta is not None and tb is not None:
                    per_seed.append({"ratio": tb / ta, "bound": "exact"})
                elif ta is not None:  # b did not reach it within the budget: b/a > budget/ta
                    per_seed.append({"ratio": budget / ta, "bound": "at least"})
                elif tb is not None:
                    per_seed.append({"ratio": tb / budget, "bound": "at most"})
                else:
                    per_seed.append({"ratio": None, "bound": "neither reached"})
            exact = [p["ratio"] for p in per_seed if p["bound"] == "exact"]
            out["time_ratios"][f"{b}/{a}"] = {
                "per_seed": per_seed,
                "median_where_both_reached": statistics.median(exact) if exact else None,
            }
    return out


def format_spread(s: dict[str, Any], fmt: str = "{:.3f}") -> str:
    if s.get("median") is None:
        return "-"
    return f"{fmt.format(s['median'])} [{fmt.format(s['min'])}-{fmt.format(s['max'])}]"


def print_table(title: str, summary: dict[str, Any], methods: list[str]) -> None:
    print(f"\n{title}")
    cols = list(next(iter(summary["methods"].values()))["hypervolume"])
    header = f"{'method':<14}" + "".join(f"{'HV ' + c:>24}" for c in cols)
    print(header + f"{'time to target (s)':>30}{'trials':>22}")
    for m in methods:
        s = summary["methods"][m]
        t = s["time_to_target"]
        if t["median"] is not None:
            ttt = f"{t['median']:.0f} ({t['reached']}/{t['seeds']} reached)"
        else:
            ttt = f"> budget ({t['reached']}/{t['seeds']} reached)"
        hv = "".join(f"{format_spread(s['hypervolume'][c]):>24}" for c in cols)
        trials = format_spread(s["trials"], "{:.0f}")
        print(f"{m:<14}{hv}{ttt:>30}{trials:>22}")
    print("\ntime to target, column / row (median over seeds where both reached; n = such seeds)")
    print(f"{'':<14}" + "".join(f"{m:>16}" for m in methods))
    for a in methods:
        cells = []
        for b in methods:
            if a == b:
                cells.append(f"{'-':>16}")
                continue
            r = summary["time_ratios"][f"{b}/{a}"]
            n = sum(1 for p in r["per_seed"] if p["bound"] == "exact")
            med = r["median_where_both_reached"]
            cells.append(f"{'-' if med is None else f'{med:.2f} (n={n})':>16}")
        print(f"{a:<14}" + "".join(cells))


def machine() -> dict[str, Any]:
    import optuna
    import skopt
    import torch

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "scikit-optimize": skopt.__version__,
    }


def result_path(out: Path, part: str) -> Path:
    """`--out` a folder: the part's file in it; a `.json` file (one part only): that file."""
    return out if out.suffix == ".json" else out / f"search_efficiency-{part}.json"


def save(out: Path, name: str, result: dict, quiet: bool = False) -> Path:
    path = result_path(out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    if not quiet:
        print(f"saved {path}")
    return path


def shown(path: Path) -> str:
    """A path relative to the repository where it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def space_text(args: argparse.Namespace) -> str:
    return f"{shown(args.experiment)} (5 blocks in examples/digits.yaml, max_params 20k)"


def common(args: argparse.Namespace, part: str, experiment: Experiment) -> dict[str, Any]:
    return {
        **provenance("search_efficiency"),
        "part": part,
        "machine": machine(),
        "space": space_text(args),
        "leanfit_strategy": experiment.strategy.model_dump(mode="json"),
        "peers": PEERS,
    }


PEERS = {
    "random": "leanfit RandomSearch (rejection sampling under max_params), 10 epochs a trial",
    "gp_minimize": "scikit-optimize gp_minimize's GP (cook_estimator GP, noise gaussian), "
    "gp_hedge, 10 random initial points, n_points 10000, space_constraint = max_params; a fresh "
    "Optimizer per proposal with running points at min(y) (cl_min); minimises -box share; "
    "10 epochs a trial",
    "tpe_hyperband": "Optuna TPESampler(multivariate=True, group=True, constant_liar=True) + "
    "HyperbandPruner(min_resource=1, max_resource=10, reduction_factor=3); maximises the box "
    "share, reported every epoch; max_params via trial.set_constraint",
    "nsga2": "Optuna NSGAIISampler(population_size=50) on (val accuracy max, log10 params min), "
    "10 epochs a trial; max_params via trial.set_constraint",
}


def run_synthetic(args, experiment: Experiment, methods: list[str], partial) -> dict:
    budget = args.minutes * 60
    seeds = 20 if args.seeds is None else args.seeds
    data = experiment.model_dump(mode="json", exclude={"base_dir"})
    path = result_path(args.out or RESULTS, "synthetic")
    rows = (
        earlier_rows(path, budget, methods, seeds, "synthetic", space_text(args))
        if args.resume
        else []
    )
    horizon = args.random_horizon * 60
    if horizon:  # a random row run without this horizon is run again with it
        rows = [r for r in rows if r["method"] != "random" or has_horizon(r, horizon)]
    done = {(r["method"], r["seed"]) for r in rows}
    tasks = [
        (m, s, budget, data, horizon) for s in range(seeds) for m in methods if (m, s) not in done
    ]

    def finished(row: dict) -> None:
        rows.append({**row, "git_commit": git_commit()})
        print(_progress(row), flush=True)
        partial(
            {"budget_seconds": budget, "rows": rows, "summary": summarise(rows, methods, budget)}
        )

    if args.jobs > 1 and tasks:
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            for row in pool.map(synthetic_seed, *zip(*tasks, strict=True)):
                finished(row)
    else:
        for task in tasks:
            finished(synthetic_seed(*task))
    summary = summarise(rows, methods, budget)
    print_table(
        f"synthetic objective, {seeds} seeds, {args.minutes:g} simulated minutes, target "
        f">= {synthetic_target():.4f} val accuracy at <= {TARGET_PARAMS:,} params",
        summary,
        methods,
    )
    if horizon and {"leanfit", "random"} <= set(methods):
        summary["random_past_the_budget"] = random_past_the_budget(rows, summary["seeds"], horizon)
        print_random_past_the_budget(summary["random_past_the_budget"])
    return {
        "budget_seconds": budget,
        "seeds": seeds,
        "target_accuracy": synthetic_target(),
        "target_params": TARGET_PARAMS,
        "cost_model": {
            "job_seconds": JOB_SECONDS,
            "epoch_seconds": EPOCH_SECONDS,
            "epoch_seconds_per_mac": EPOCH_SECONDS_PER_MAC,
            "workers": WORKERS,
            "method_time": "CPU seconds of each method's own work (one BLAS thread)",
        },
        "rows": rows,
        "summary": summary,
    }


def horizon_spec(args: argparse.Namespace) -> str | None:
    """`--random-horizon` as the rows record it ("60 min", "10x"), None without one."""
    if args.random_horizon:
        return f"{args.random_horizon:g} min"
    if args.random_horizon_times:
        return f"{args.random_horizon_times:g}x"
    return None


def has_horizon(row: dict, horizon: float) -> bool:
    return row.get("beyond_budget", {}).get("horizon_seconds") == horizon


def has_spec(row: dict, spec: str) -> bool:
    return row.get("beyond_budget", {}).get("spec") == spec


def random_past_the_budget(rows: list[dict], seeds: list[int], horizon: float | str) -> dict:
    """leanfit's time to the target against random search's, random timed past the budget up to
    `horizon` (`--random-horizon`: seconds, or as the real part records it, "60 min" or "10x"):
    per seed random / leanfit, exact where both reached it, a lower bound (the row's own horizon
    / leanfit) where random did not reach it even then."""
    by = {(r["method"], r["seed"]): r for r in rows}
    per_seed = []
    for seed in seeds:
        mine = by[("leanfit", seed)]["time_to_target"]
        # over the whole run to the horizon: the same as within the budget where reached there
        past = by[("random", seed)]["beyond_budget"]
        theirs, reach = past["time_to_target"], past["horizon_seconds"]
        entry: dict[str, Any] = {"seed": seed, "leanfit": mine, "random": theirs}
        if reach is not None:
            entry["horizon_seconds"] = reach
        if mine is None:
            entry.update(ratio=None, bound="leanfit did not reach it")
        elif theirs is None and reach is None:
            entry.update(ratio=None, bound="random was not run past the budget")
        elif theirs is None:
            entry.update(ratio=reach / mine, bound="at least")
        else:
            entry.update(ratio=theirs / mine, bound="exact")
        per_seed.append(entry)
    ratios = [p["ratio"] for p in per_seed if p["ratio"] is not None]
    randoms = sorted(math.inf if p["random"] is None else p["random"] for p in per_seed)
    leanfits = sorted(math.inf if p["leanfit"] is None else p["leanfit"] for p in per_seed)
    median_random = statistics.median(randoms) if randoms else None
    median_leanfit = statistics.median(leanfits) if leanfits else None
    return {
        # seconds for one horizon over all seeds; else each seed's own, under per_seed
        "horizon_seconds": horizon if isinstance(horizon, (int, float)) else None,
        "horizon": horizon if isinstance(horizon, str) else f"{horizon / 60:g} min",
        "random_reached": sum(p["random"] is not None for p in per_seed),
        "seeds": len(per_seed),
        "per_seed": per_seed,
        # a lower bound where a bound is among them (each bound is at most the true ratio)
        "median_ratio": statistics.median(ratios) if ratios else None,
        "seeds_at_least_10x": sum(r >= 10 for r in ratios),
        "median_time_random": None if median_random in (None, math.inf) else median_random,
        "median_time_leanfit": None if median_leanfit in (None, math.inf) else median_leanfit,
    }


def print_random_past_the_budget(r: dict[str, Any]) -> None:
    h = r["horizon"]
    up_to = f"{h[:-1]} times leanfit's time to the target in each seed" if h.endswith("x") else h
    print(
        f"\nrandom search timed past the budget, up to {up_to}: "
        f"reached the target in {r['random_reached']} of {r['seeds']} seeds"
    )
    for p in r["per_seed"]:
        ratio = "-" if p["ratio"] is None else f"{p['ratio']:.1f}x"
        bound = "" if p["bound"] == "exact" else f" ({p['bound']})"
        rnd = "not reached" if p["random"] is None else f"{p['random']:.0f} s"
        lf = "not reached" if p["leanfit"] is None else f"{p['leanfit']:.0f} s"
        print(f"  seed {p['seed']:>2}: leanfit {lf:>12}, random {rnd:>12}: {ratio}{bound}")
    med = r["median_ratio"]
    print(
        f"  median random / leanfit per seed: {'-' if med is None else f'{med:.1f}x'}; "
        f"at least 10x in {r['seeds_at_least_10x']} of {r['seeds']} seeds"
    )


def _progress(row: dict) -> str:
    hv = " ".join(f"{v:.3f}" if v is not None else "-" for v in row["hypervolume"].values())
    ttt = row["time_to_target"]
    cpu = row.get("method_cpu_seconds", row.get("proposal_seconds", 0.0))
    return (
        f"  {row['method']:<14} seed {row['seed']:>2}: HV {hv}  target "
        f"{'-' if ttt is None else f'{ttt:.0f} s'}  trials {row['trials']}  "
        f"method's own time {cpu:.1f} s"
    )


def earlier_rows(
    path: Path, budget: float, methods: list[str], seeds: int, part: str, experiment: str
) -> list[dict]:
    """The rows of an earlier, unfinished run of the part at the same budget (`--resume`):
    each (method, seed) it finished is kept, with the commit and load it ran at, and not run
    again; rows of other methods or seeds stay in the file too, out of this run's summary. A
    file of another budget is refused (exit 2), since its figures would not compare."""
    if not path.exists():
        return []
    try:
        earlier = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        print(f"--resume: {path} is not a result file ({e}); move it away", file=sys.stderr)
        raise SystemExit(2) from e
    if not isinstance(earlier, dict) or not all(
        isinstance(r, dict) and {"method", "seed"} <= set(r) for r in earlier.get("rows", [])
    ):
        print(
            f"--resume: {path} is not a result file of this script; move it away", file=sys.stderr
        )
        raise SystemExit(2)
    for what, theirs, ours in (
        ("part", earlier.get("part"), part),
        ("experiment", earlier.get("space"), experiment),
    ):
        if theirs not in (None, ours):  # (its rows would be mixed into this part's figures)
            print(
                f"--resume: {path} holds the {what} {theirs!r}, not {ours!r}: give its own "
                "--out, or move the file away",
                file=sys.stderr,
            )
            raise SystemExit(2)
    if earlier.get("budget_seconds") not in (None, budget):
        print(
            f"--resume: {path} was run at {earlier['budget_seconds']:g} s a method, not "
            f"{budget:g} s: give the same --minutes, or move the file away",
            file=sys.stderr,
        )
        raise SystemExit(2)
    commit = earlier.get("git_commit")
    # every row is kept, also of methods and seeds not asked for now: the file is rewritten
    rows = [{"git_commit": commit, **r} for r in earlier.get("rows", [])]
    for r in rows:
        if r["method"] in methods and r["seed"] < seeds:
            print(f"  kept from {path.name} (commit {str(r['git_commit'])[:7]}):" + _progress(r))
    return rows


def run_real(args, experiment: Experiment, methods: list[str], partial) -> dict:
    budget = args.minutes * 60
    seeds = 3 if args.seeds is None else args.seeds
    path = result_path(args.out or RESULTS, "real")
    rows = (
        earlier_rows(path, budget, methods, seeds, "real", space_text(args)) if args.resume else []
    )
    spec = horizon_spec(args)
    if spec:  # a random row run without this horizon is run again with it
        rows = [r for r in rows if r["method"] != "random" or has_spec(r, spec)]
    done = {(r["method"], r["seed"]) for r in rows}
    for seed in args.only_seeds or range(seeds):
        for m in methods:  # interleaved: every method once per seed, in turn (leanfit first)
            if (m, seed) in done:
                continue
            load_before = os.getloadavg()
            past = real_horizon(args, rows, seed) if m == "random" else None
            if past and past["horizon_seconds"]:
                print(
                    f"  random seed {seed}: on past the budget up to "
                    f"{past['horizon_seconds']:.0f} s ({past['spec']}) unless it reaches the "
                    "target sooner",
                    flush=True,
                )
            row = real_seed(m, seed, budget, experiment, past)
            row.update(git_commit=git_commit(), load_before=load_before, load_after=os.getloadavg())
            rows.append(row)
            print(_progress(rows[-1]), flush=True)
            partial(
                {
                    "budget_seconds": budget,
                    "rows": rows,
                    "summary": summarise(rows, methods, budget),
                }
            )
    summary = summarise(rows, methods, budget)
    print_table(
        f"real training on digits, {seeds} seeds, {args.minutes:g} minutes per method, target "
        f">= {TARGET_ACCURACY} val accuracy at <= {TARGET_PARAMS:,} params",
        summary,
        methods,
    )
    if spec and {"leanfit", "random"} <= set(methods):
        summary["random_past_the_budget"] = random_past_the_budget(rows, summary["seeds"], spec)
        print_random_past_the_budget(summary["random_past_the_budget"])
    return {
        "budget_seconds": budget,
        "seeds": seeds,
        "target_accuracy": TARGET_ACCURACY,
        "target_params": TARGET_PARAMS,
        "workers": WORKERS,
        "note": "each row has the load average before and after it (load_before, load_after) "
        "and the commit it ran at",
        "rows": rows,
        "summary": summary,
    }


def run_overhead(args, experiment: Experiment, partial) -> dict:
    rows = []
    for trials in [int(t) for t in args.trials.split(",")]:
        with tempfile.TemporaryDirectory(prefix="leanfit-overhead-") as folder:
            row = overhead_run(experiment, trials, args.sleep, Path(folder))
        rows.append(row)
        partial({"rows": rows})
        print(
            f"  {trials} trials: wall {row['wall_seconds']:.1f} s, non-training share "
            f"{row['non_training_share']:.2%}, proposals {row['proposal_share_of_wall']:.2%} "
            f"of wall, {row['seconds_per_proposal'] * 1e3:.1f} ms a proposal, controller CPU "
            f"{row['controller_cpu_share_of_workers']:.2%} of the workers' cores",
            flush=True,
        )
    print(f"\nleanfit search overhead, 2 workers, trials sleeping {args.sleep} s per epoch")
    print(
        f"{'trials':>7}{'wall s':>9}{'not training':>14}{'proposals':>11}{'ms/proposal':>13}"
        f"{'controller CPU':>16}"
    )
    for r in rows:
        print(
            f"{r['trials']:>7}{r['wall_seconds']:>9.1f}{r['non_training_share']:>14.2%}"
            f"{r['proposal_share_of_wall']:>11.2%}{r['seconds_per_proposal'] * 1e3:>13.1f}"
            f"{r['controller_cpu_share_of_workers']:>16.2%}"
        )
    commands = []
    for trials in [int(t) for t in args.command_trials.split(",") if t.strip()]:
        with tempfile.TemporaryDirectory(prefix="leanfit-overhead-command-") as folder:
            commands.append(overhead_command_run(experiment, trials, args.sleep, Path(folder)))
        partial({"rows": rows, "command_rows": commands})
    if commands:
        print("\nthe same as a command, from its start to its exit (Python, imports, the table)")
        print(f"{'trials':>7}{'wall s':>9}{'not training':>14}")
        for r in commands:
            print(f"{r['trials']:>7}{r['wall_seconds']:>9.1f}{r['non_training_share']:>14.2%}")
    print("\nwhere a worker's time outside training went, seconds (mean of the workers)")
    names = list(rows[0]["outside_training_per_worker"]) if rows else []
    print(f"{'trials':>7}" + "".join(f"{n:>18}" for n in names))
    for r in rows:
        parts = r["outside_training_per_worker"]
        print(f"{r['trials']:>7}" + "".join(f"{parts[n]:>18.2f}" for n in names))
    return {
        "workers": WORKERS,
        "sleep_per_epoch": args.sleep,
        "rows": rows,
        "command_rows": commands,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("synthetic", "real", "overhead", "all"), default="all")
    parser.add_argument("--seeds", type=int, default=None, help="default 20 synthetic, 3 real")
    parser.add_argument(
        "--only-seeds",
        default="",
        help="real part: run just these of the --seeds seeds, in this order (5,4), the others "
        "kept by --resume or left out; the summary covers the seeds every method has finished",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="budget per method and seed")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--jobs", type=int, default=1, help="processes for the synthetic part")
    parser.add_argument(
        "--random-horizon",
        default="0",
        help="random search goes on past --minutes until it reaches the target, to time it where "
        "it does not within the budget (its other figures stay those of the budget): up to this "
        "many minutes (simulated in the synthetic part), or, in the real part, 'Nx': up to N "
        "times leanfit's time to the target in the same seed, the least that shows leanfit N "
        "times sooner where random does not reach it (0: off)",
    )
    parser.add_argument("--trials", default="100,1000", help="overhead: trial counts")
    parser.add_argument("--sleep", type=float, default=0.3, help="overhead: seconds per epoch")
    parser.add_argument(
        "--command-trials",
        default="100",
        help="overhead: trial counts also run as a `leanfit search` command (empty: none)",
    )
    parser.add_argument(
        "--experiment",
        type=Path,
        default=ROOT / "examples" / "digits.yaml",
        help="the experiment file whose space, budget and leanfit settings are compared",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="a folder (default benchmarks/results), where each part saves "
        "search_efficiency-PART.json, or a .json file for the one --part run",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="real and synthetic parts: keep the (method, seed) rows an earlier run saved in "
        "--out and run only the others (a 3-seed real run takes 2.5 hours; gp_minimize about "
        "9 CPU minutes a synthetic seed)",
    )
    args = parser.parse_args(argv)
    if args.out is not None and args.out.suffix == ".json" and args.part == "all":
        parser.error(f"--out {args.out}: a .json file holds one part; give --part too, or a folder")
    text = args.random_horizon.strip().lower()
    times = text.endswith("x")
    try:
        value = float(text[:-1] if times else text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (times and value <= 1):
        parser.error(
            f"--random-horizon {args.random_horizon}: give minutes (60) or, in the real part, a "
            "multiple of leanfit's time to the target greater than 1 (10x)"
        )
    if times and args.part != "real":
        parser.error(
            f"--random-horizon {args.random_horizon}: a multiple of leanfit's time is for "
            "--part real (its seeds run leanfit first); give minutes for the synthetic part"
        )
    args.random_horizon, args.random_horizon_times = (0.0, value) if times else (value, 0.0)
    if args.random_horizon and args.random_horizon <= args.minutes:
        parser.error(
            f"--random-horizon {args.random_horizon:g}: give more minutes than --minutes "
            f"({args.minutes:g}), or 0 for none"
        )
    if args.seeds is not None and args.seeds < 1:
        parser.error(
            f"--seeds {args.seeds}: give 1 or more (or leave it out: 20 synthetic, 3 real)"
        )
    if not args.minutes > 0:
        parser.error(f"--minutes {args.minutes:g}: give a budget above 0, e.g. 10")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give 1 or more processes")
    if not args.sleep >= 0:
        parser.error(f"--sleep {args.sleep:g}: give 0 or more seconds an epoch")
    for option, text in (("--trials", args.trials), ("--command-trials", args.command_trials)):
        counts = [t.strip() for t in text.split(",") if t.strip()]
        if any(not t.isdigit() or int(t) < 1 for t in counts) or (
            option == "--trials" and not counts
        ):
            parser.error(f"{option} {text!r}: give trial counts of 1 or more, e.g. 100,1000")
    args.only_seeds = only_seeds(parser, args)
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        parser.error(f"--methods: unknown {sorted(unknown)}; choose from {list(METHODS)}")
    return args


def only_seeds(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[int]:
    """`--only-seeds 5,4`: the real part's seeds to run, in order (a 10x random seed can take
    an hour: the one that matters first)."""
    if not args.only_seeds.strip():
        return []
    if args.part != "real":
        parser.error(
            f"--only-seeds {args.only_seeds}: for --part real; leave it out for the others"
        )
    try:
        seeds = [int(s) for s in args.only_seeds.split(",")]
    except ValueError:
        seeds = []
    count = 3 if args.seeds is None else args.seeds
    if not seeds or len(set(seeds)) < len(seeds) or not all(0 <= s < count for s in seeds):
        parser.error(
            f"--only-seeds {args.only_seeds}: give distinct seed numbers from 0 to {count - 1}, "
            "separated by commas (5,4), and --seeds above the largest"
        )
    return seeds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    methods = [m for m in METHODS if m in args.methods.split(",")]
    experiment = load_experiment(args.experiment)
    out = args.out or RESULTS
    parts = ("synthetic", "real", "overhead") if args.part == "all" else (args.part,)
    saved = {}
    for part in parts:
        result = common(args, part, experiment)

        def partial(figures: dict, result=result, part=part) -> None:
            """Saved as they come (marked unfinished): a long run stopped early keeps them."""
            save(out, part, {**result, "finished": False, **figures}, quiet=True)

        runs = {"synthetic": run_synthetic, "real": run_real}
        if part in runs:
            result.update(runs[part](args, experiment, methods, partial))
        else:
            result.update(run_overhead(args, experiment, partial))
        result["finished"] = True
        result["machine"]["load_average_after"] = os.getloadavg()
        saved[part] = str(save(out, part, result))
    return saved


if __name__ == "__main__":
    from leanfit.stopping import run_script

    run_script(
        main,
        "the rows finished are saved, marked unfinished; the same command with --resume runs "
        "the rest",
    )
