"""Bayesian optimisation with scikit-optimize over the flat encoding of a conditional space.

Snoek et al. 2012, "Practical Bayesian Optimization of Machine Learning Algorithms" (NeurIPS) for
the surrogate-and-acquisition loop and the batch of pending points; Ginsbourger et al. 2010,
"Kriging is well-suited to parallelize optimization" for the constant liar; Hutter et al. 2011,
"Sequential Model-Based Optimization for General Algorithm Configuration" (SMAC) for random
forests as surrogates of conditional, mixed spaces.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from leanfit.search.evolution import crossover, mutate
from leanfit.search.strategy import Feasible, Observation, Strategy, check_ask
from leanfit.space.spec import SearchSpace

SURROGATES = ("GP", "RF", "ET")
ACQUISITIONS = ("EI", "LCB", "PI", "gp_hedge")


@dataclass(frozen=True)
class Frontier:
    """What EHVI improves: a front over (size, value), both minimised, where the size of a
    configuration is known before it is trained (log10 parameters) and only the value (the
    validation error) is predicted. `reference` is the (size, value) corner the hypervolume is
    measured from: nothing at or beyond it counts."""

    size_of: Callable[[Mapping[str, Any]], float]
    reference: tuple[float, float]


# Observations a surrogate is fitted on, by default: a GP's fit grows as n³ in the points (and here
# with the one-hot width of the space), a forest's as n log n.
DEFAULT_MAX_OBSERVATIONS = {"GP": 60, "RF": 200, "ET": 200}


class SkoptStrategy(Strategy):
    """Bayesian optimisation with scikit-optimize's surrogates and acquisition functions behind
    the leanfit ask/tell.

    The first `initial_points` proposals are random samples of the space. After that, each `ask`
    fits a fresh skopt surrogate (`cook_estimator`: an extra-trees or random forest of `trees`
    trees, or skopt's GP on the space scaled to [0, 1]) on skopt's transform of the flat points of
    at most `max_observations` told results — the best half of that number and the most recent
    rest — plus every pending configuration at the constant-liar value, and proposes the
    candidate with the best acquisition value (skopt's `_gaussian_acquisition`: EI, LCB or PI).
    Fitting on a bounded set keeps a proposal's cost flat however long the search runs
    (thousands of trials), and fitting afresh makes `tell` free, so the controller can re-tell
    every result with new scalarisation weights before each ask (ParEGO) at no cost. A batch
    `ask(n)` is skopt's `strategy="cl_min"`: after each point the model is refitted with the point
    told the minimum value seen (the "constant liar"), which pushes the next point elsewhere; the
    same lie stands in for the pending configurations, which running trials have not reported.

    The candidates are `acquisition_samples` random feasible configurations of the space (skopt's
    `n_points` with `acq_optimizer="sampling"`), kept as a pool: each ask drops the known ones
    and a share `renewal` of the rest (the oldest), and tops it up with fresh samples. By default
    (0) only what is proposed is replaced. On the synthetic benchmark (median hypervolume at 10
    minutes) renewing a tenth at each ask was no better (1.77 over 6 seeds, against 1.81 for an
    earlier rule that renewed the whole pool after a local candidate won; this default: 1.812 over
    20 seeds), and renewing all of it doubles a proposal's cost. Plus `local_samples`
    one-parameter changes of the `local_parents` best results (the local search of SMAC). They
    are drawn with the space's own
    sampler, checked against `feasible` and transformed with a per-dimension lookup table
    instead of going through skopt's `Optimizer`, whose sampling under a constraint (decoding
    every point) and one-hot transformers made up most of a proposal's cost: 0.37 s at 200
    results in the digits space, against about 0.1 s now. Every candidate is new and feasible,
    so every proposal is too.

    With `fidelity_input`, each result's fidelity (`Observation.fidelity`: its budget as a share
    of the full one) is a last input column of the surrogate, and the candidates are scored at
    fidelity 1: the model learns from every trial, however early it was stopped, what it would
    reach on the full budget (in the manner of multi-fidelity BO that models the budget as an
    input, e.g. Klein et al. 2017, "Fast Bayesian Optimization of Machine Learning
    Hyperparameters on Large Datasets" (FABOLAS), rather than BOHB's one model per budget). EI
    and PI improve on the best value fitted, whatever its fidelity (with ParEGO scalars a low
    rung's values are the worse ones).

    A non-finite value (a failed trial, a configuration over a hard constraint) is fitted as the
    worst finite value plus half the range of the values (plus 1 when they are all equal), so the
    surrogate learns to avoid such regions without an infinite target.

    With a `Frontier` (`use_frontier`, which the controller calls before the proposals it wants so
    made), the acquisition is EHVI instead: two objectives, one of them a size known before
    training, and the strategy told the other's value itself (the controller tells log10 of the
    validation error, `controller.ehvi_error`), not a scalarisation. It proposes the candidate whose
    result is expected to add most hypervolume to the front of every result so far: the size is
    exact, the error is the surrogate's normal prediction, so the expectation is a sum of
    one-dimensional expected improvements over the steps of the front
    (`expected_hypervolume_improvement`; Emmerich et al. 2006, "Single- and multiobjective
    evolutionary optimization assisted by Gaussian random field metamodels", for EHVI). Pending
    configurations, and each point already chosen for the batch, join the front at their predicted
    error (the "Kriging believer"). The surrogate is fitted on the first fronts (non-dominated
    sorting of (size, value)) and then the most recent results, and the local candidates are
    neighbours of the whole front, so that they spread along it.

    `use_frontier(frontier, widest_gap=True)` makes the next EHVI proposals gap proposals: the
    candidates are only those whose size falls strictly inside the widest interval of size
    between neighbours on the front (pending configurations included, at their predicted error),
    so a stretch of sizes the front skips gets trials of its own instead of waiting until EHVI
    rates it above the stretches already well covered (`widest_gap`).

    `gp_hedge` draws among EI, LCB and PI uniformly at each ask (the surrogate is rebuilt for each
    ask, so there are no past gains to weigh them by).

    Args:
        space: the search space.
        seed: seeds the initial samples, the candidates, the surrogate.
        surrogate: "ET" or "RF" (forests, for conditional and mixed spaces) or "GP" (small,
            continuous spaces).
        acquisition: "EI", "LCB", "PI" or "gp_hedge".
        initial_points: random proposals before the surrogate is used.
        max_observations: K, the most told results a surrogate is fitted on (default 60 for GP,
            200 for forests).
        acquisition_samples: random candidates at which the acquisition is evaluated.
        feasible: a predicate every proposal must satisfy (e.g. parameters <= max_params).
        trees: trees of a forest surrogate (skopt's default is 100; SMAC uses 10).
        local_parents: the best results whose neighbours are candidates.
        local_samples: neighbours of those among the candidates at each ask.
        crossover_samples: children of two of those parents among the candidates at each ask:
            the parameters `crossover_group` names (e.g. the training hyper-parameters) from one,
            the rest (the architecture) from the other (`leanfit.search.evolution.crossover`),
            so that settings that train one size well are tried on the others.
        crossover_group: which parameters a child takes from its second parent (None: no
            crossover).
        renewal: the share of the pool replaced by fresh samples at each ask (0: the pool only
            loses what is proposed or becomes known, and is topped up).
        fidelity_input: fit on results of every fidelity, with the fidelity as an input.

    Example:
        >>> from leanfit.space.spec import Param, SearchSpace
        >>> space = SearchSpace([Param("x", "real", low=-2.0, high=2.0)])
        >>> bo = SkoptStrategy(space, seed=0, surrogate="ET", initial_points=5)
        >>> for _ in range(15):
        ...     (config,) = bo.ask()
        ...     bo.tell(config, (config["x"] - 1.0) ** 2)
        >>> round(bo.ranked()[0].config["x"])
        1
    """

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        surrogate: str = "ET",
        acquisition: str = "EI",
        initial_points: int = 10,
        max_observations: int | None = None,
        acquisition_samples: int = 500,
        feasible: Feasible | None = None,
        trees: int = 32,
        local_parents: int = 5,
        local_samples: int = 50,
        crossover_samples: int = 0,
        crossover_group: Callable[[str], bool] | None = None,
        renewal: float = 0.0,
        fidelity_input: bool = False,
    ) -> None:
        if surrogate not in SURROGATES:
            raise ValueError(
                f"The value of `surrogate` is {surrogate!r}, but must be one of {list(SURROGATES)}"
            )
        if acquisition not in ACQUISITIONS:
            raise ValueError(
                f"The value of `acquisition` is {acquisition!r}, "
                f"but must be one of {list(ACQUISITIONS)}"
            )
        if not isinstance(initial_points, int) or initial_points < 1:
            raise ValueError(
                f"The value of `initial_points` is {initial_points}, "
                "but must be `initial_points >= 1`"
            )
        if max_observations is not None and (
            not isinstance(max_observations, int) or max_observations < 2
        ):
            raise ValueError(
                f"The value of `max_observations` is {max_observations}, "
                "but must be `max_observations >= 2` or None"
            )
        if not isinstance(acquisition_samples, int) or acquisition_samples < 1:
            raise ValueError(
                f"The value of `acquisition_samples` is {acquisition_samples}, "
                "but must be `acquisition_samples >= 1`"
            )
        if not isinstance(crossover_samples, int) or crossover_samples < 0:
            raise ValueError(
                f"The value of `crossover_samples` is {crossover_samples}, "
                "but must be `crossover_samples >= 0`"
            )
        if not 0 <= renewal <= 1:
            raise ValueError(
                f"The value of `renewal` is {renewal}, but must be `0 <= renewal <= 1`"
            )
        if not space.dimensions:
            raise ValueError("the space has no dimension to search; every parameter is constant")
        super().__init__(space, seed, feasible)
        self.surrogate = surrogate
        self.acquisition = acquisition
        self.initial_points = initial_points
        self.max_observations = max_observations or DEFAULT_MAX_OBSERVATIONS[surrogate]
        self.acquisition_samples = acquisition_samples
        self.trees = trees
        self.local_parents = local_parents
        self.local_samples = local_samples
        self.crossover_samples = crossover_samples if crossover_group is not None else 0
        self.crossover_group = crossover_group
        self.renewal = renewal
        self.fidelity_input = fidelity_input
        # Importing scikit-optimize (scipy.stats, scikit-learn) takes a second or two, and the
        # initial random proposals do not need it: it is imported in a thread, and whatever
        # needs it first waits for that (`skopt_space`, `fit_space`). A search's first trials
        # start that much sooner.
        self._spaces: tuple[Any, Any] | None = None
        self._spaces_error: BaseException | None = None
        # Not a daemon: a search that ends before the import does waits for it at exit, rather
        # than the interpreter finalising under an import in progress.
        self._spaces_thread: threading.Thread | None = threading.Thread(
            target=self._build_spaces, name="leanfit-skopt-import"
        )
        self._spaces_thread.start()
        self._np_rng = np.random.RandomState(seed)
        self._rows: dict[tuple, np.ndarray] = {}  # key -> transformed point
        self._onehot: list[dict | None] | None = None  # per dimension: category -> one-hot row
        self._pool: dict[tuple, tuple[dict[str, Any], np.ndarray]] = {}  # random candidates
        self.frontier: Frontier | None = None  # set: the next asks are EHVI's
        self.widest_gap = False  # set with it: EHVI among candidates in the front's widest gap
        self._sizes: dict[tuple, float] = {}  # key -> size on the frontier

    def _build_spaces(self) -> None:
        try:
            skopt_space = self.space.to_skopt()
            # skopt's Optimizer fits a GP on the space scaled to [0, 1]; forests on its own
            # transform
            fit_space = skopt_space
            if self.surrogate == "GP":
                from skopt.space import Space
                from skopt.utils import normalize_dimensions

                fit_space = Space(normalize_dimensions(skopt_space.dimensions))
            import skopt.acquisition  # noqa: F401 - what the first fit needs, imported now
            import skopt.learning  # noqa: F401

            self._spaces = (skopt_space, fit_space)
        except BaseException as e:  # noqa: BLE001 - raised again where the space is used
            self._spaces_error = e

    def _built_spaces(self) -> tuple[Any, Any]:
        thread = self._spaces_thread
        if thread is not None:
            thread.join()
            self._spaces_thread = None
        if self._spaces_error is not None:
            raise self._spaces_error
        assert self._spaces is not None
        return self._spaces

    @property
    def skopt_space(self):
        """The space as one flat `skopt.space.Space`."""
        return self._built_spaces()[0]

    @property
    def fit_space(self):
        """The space whose transform the surrogate is fitted on."""
        return self._built_spaces()[1]

    def use_frontier(self, frontier: Frontier | None, widest_gap: bool = False) -> None:
        """Propose by EHVI on this frontier (its sizes and reference point) until it is taken
        back with None; the values told meanwhile must be the second objective itself. With
        `widest_gap`, only among candidates inside the front's widest gap in size."""
        if frontier is not self.frontier and frontier is not None:
            self._sizes = {}
        self.frontier = frontier
        self.widest_gap = widest_gap and frontier is not None

    def ask(self, n: int = 1) -> list[dict[str, Any]]:
        check_ask(n)
        if len(self.observations) < self.initial_points:
            return [self.sample_new() for _ in range(n)]
        if self.frontier is not None:
            return self._ask_ehvi(n)
        fitted = self.fitting_set()
        ys = _fitting_values([o.value for o in fitted])
        lie = min(ys)
        rows = [self._row(o.key, o.config, o.fidelity) for o in fitted]
        rows += [self._row(key, config) for key, config in self.pending.items()]
        ys += [lie] * (len(rows) - len(ys))
        # The surrogate's matrices are small: BLAS/OpenMP threads only add overhead, and with
        # trials training on the same cores they make a proposal several times slower.
        from skopt.acquisition import _gaussian_acquisition as gaussian_acquisition

        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter("ignore")  # sklearn and skopt warn on near-duplicate points
            keys, configs, candidates = self._candidates(fitted)
            taken = np.zeros(len(keys), dtype=bool)
            proposals: list[dict[str, Any]] = []
            for _ in range(n):
                if taken.all():
                    config = self.sample_new()
                    row = self._row(self.space.key(config), config)
                else:
                    model = self._fit(np.vstack(rows), np.asarray(ys))
                    values = gaussian_acquisition(
                        X=candidates, model=model, y_opt=min(ys), acq_func=self._acq_func()
                    )
                    best = int(np.argmin(np.where(taken, np.inf, values)))
                    taken[best] = True
                    row = candidates[best]
                    config = self._take(keys[best], configs[best], row)
                proposals.append(config)
                rows.append(row)  # the constant liar for the next point of the batch
                ys.append(lie)
        return proposals

    def _ask_ehvi(self, n: int) -> list[dict[str, Any]]:
        assert self.frontier is not None
        fitted = self.fitting_set()
        ys = _fitting_values([o.value for o in fitted])
        front = [
            (self._size(o.key, o.config), o.value)
            for o in self.observations.values()
            if math.isfinite(o.value)
        ]
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter("ignore")
            model = self._fit(
                np.vstack([self._row(o.key, o.config, o.fidelity) for o in fitted]),
                np.asarray(ys),
            )
            if self.pending:  # the believer: pending configurations at their predicted error
                rows = [self._row(key, config) for key, config in self.pending.items()]
                predicted = model.predict(np.vstack(rows))
                pending_sizes = [self._size(key, config) for key, config in self.pending.items()]
                front += list(zip(pending_sizes, predicted.tolist(), strict=True))
            keys, configs, candidates = self._candidates(fitted)
            proposals: list[dict[str, Any]] = []
            if keys:
                mean, std = model.predict(candidates, return_std=True)
                sizes = np.asarray([self._size(k, c) for k, c in zip(keys, configs, strict=True)])
                taken = np.zeros(len(keys), dtype=bool)
                gap = widest_gap(front) if self.widest_gap else None
                if gap is not None:
                    outside = (sizes <= gap[0]) | (sizes >= gap[1])
                    if not outside.all():  # none inside: EHVI over all of them
                        taken |= outside
            for _ in range(n):
                if not keys or taken.all():
                    proposals.append(self.sample_new())
                    continue
                gain = expected_hypervolume_improvement(
                    sizes, mean, std, front, self.frontier.reference
                )
                best = int(np.argmax(np.where(taken, -np.inf, gain)))
                taken[best] = True
                config = self._take(keys[best], configs[best], candidates[best])
                front.append((float(sizes[best]), float(mean[best])))
                proposals.append(config)
        return proposals

    def _take(self, key: tuple, config: dict[str, Any], row: np.ndarray) -> dict[str, Any]:
        """Propose a candidate: claimed, its point remembered, out of the pool."""
        self.claim(config)
        # a copy: a row of the candidates' matrix is a view that kept the whole matrix alive,
        # one a proposal (0.3-0.6 MB each: a 3,000-trial search's controller grew to 2 GB)
        self._rows[key] = row[: row.size - self.fidelity_input].copy()
        self._pool.pop(key, None)
        return config

    def _size(self, key: tuple, config: Mapping[str, Any]) -> float:
        size = self._sizes.get(key)
        if size is None:
            assert self.frontier is not None
            size = self._sizes[key] = float(self.frontier.size_of(config))
        return size

    def fitting_set(self) -> list[Observation]:
        """The told results the surrogate is fitted on: the best K/2, then the most recent.

        With EHVI, "best" is by non-dominated sorting of (size, value): the first fronts."""
        ranked = self.ranked()
        if self.frontier is not None and len(ranked) > self.max_observations:
            from leanfit.search.pareto import pareto_front

            # peel fronts off (an O(n log n) sweep each) until they hold the best half
            rest = [o for o in ranked if math.isfinite(o.value)]
            layered: list[Observation] = []
            while rest and len(layered) < self.max_observations // 2:
                front = set(pareto_front([[self._size(o.key, o.config), o.value] for o in rest]))
                layered += [rest[i] for i in sorted(front)]
                rest = [o for i, o in enumerate(rest) if i not in front]
            ranked = layered + rest + [o for o in ranked if not math.isfinite(o.value)]
        if len(ranked) <= self.max_observations:
            return ranked
        chosen = ranked[: self.max_observations // 2]
        taken = {o.order for o in chosen}
        recent = sorted(
            (o for o in self.observations.values() if o.order not in taken),
            key=lambda o: -o.order,
        )
        return chosen + recent[: self.max_observations - len(chosen)]

    # -- the acquisition's candidates, and the surrogate --------------------------------------

    def _candidates(self, fitted: list[Observation]) -> tuple[list, list, np.ndarray]:
        """The points at which the acquisition is evaluated: random feasible configurations
        (the pool, renewed by `renewal` at each ask) plus one-parameter changes of the best
        results so far (a local search, as SMAC does). Known and pending configurations are
        left out."""
        for key in [k for k in self._pool if self.known(k)]:
            del self._pool[key]
        # Keep at most (1 - renewal) of a full pool: the oldest go first (dicts keep their order).
        keep = self.acquisition_samples - round(self.acquisition_samples * self.renewal)
        for key in list(self._pool)[: max(0, len(self._pool) - keep)]:
            del self._pool[key]
        fresh = self._draw(
            lambda: self.space.sample(self.rng),
            self.acquisition_samples - len(self._pool),
            4 * self.acquisition_samples,
            self._pool,
        )
        parents = [
            self.space.validate(o.config) for o in self._parents(fitted) if math.isfinite(o.value)
        ]
        local = self._draw(
            lambda: mutate(self.space, self.rng.choice(parents), self.rng, validated=True),
            self.local_samples,
            4 * self.local_samples if parents else 0,
            self._pool.keys() | fresh.keys(),
        )
        if self.crossover_samples and len(parents) >= 2:

            def child() -> dict[str, Any]:
                first, second = self.rng.sample(parents, 2)
                return crossover(self.space, first, second, self.crossover_group, self.rng)

            local |= self._draw(
                child,
                self.crossover_samples,
                4 * self.crossover_samples,
                self._pool.keys() | fresh.keys() | local.keys(),
            )
        added = fresh | local
        rows = self._transform([point for _, point in added.values()]) if added else []
        new_rows = dict(zip(added, rows, strict=True))
        for key, (config, _) in fresh.items():
            self._pool[key] = (config, new_rows[key])
        keys = list(self._pool) + list(local)
        if not keys:
            return [], [], np.empty((0, 0))
        configs = [c for c, _ in self._pool.values()] + [c for c, _ in local.values()]
        matrix = np.vstack([r for _, r in self._pool.values()] + [new_rows[k] for k in local])
        if self.fidelity_input:  # the acquisition asks what each would reach at full budget
            matrix = np.hstack([matrix, np.ones((len(keys), 1))])
        return keys, configs, matrix

    def _parents(self, fitted: list[Observation]) -> list[Observation]:
        """The results whose neighbours are candidates: the best `local_parents`; with EHVI,
        every result on the front of (size, value), so the neighbours spread along it."""
        if self.frontier is None:
            return fitted[: self.local_parents]
        from leanfit.search.pareto import pareto_front

        finite = [o for o in self.observations.values() if math.isfinite(o.value)]
        points = [[self._size(o.key, o.config), o.value] for o in finite]
        return [finite[i] for i in pareto_front(points)] if finite else []

    def _draw(
        self, make, count: int, tries: int, taken
    ) -> dict[tuple, tuple[dict[str, Any], list[Any]]]:
        """Up to `count` new feasible configurations from at most `tries` calls of `make()`,
        none of them in `taken`, by key, with their flat points."""
        out: dict[tuple, tuple[dict[str, Any], list[Any]]] = {}
        for _ in range(tries):
            if len(out) >= count:
                break
            config = make()
            point = self.space.point(config)
            key = self.space.point_key(point)
            new = key not in taken and key not in out and not self.known(key)
            if new and self.is_feasible(config):
                out[key] = (config, point)
        return out

    def _transform(self, points: list[list[Any]]) -> np.ndarray:
        """skopt's `Space.transform` of flat points, column by column, with
        each categorical dimension's one-hot rows looked up in a table (skopt's LabelBinarizer
        costs about a millisecond per dimension and call, whatever the number of points)."""
        from skopt.space import Categorical

        if self._onehot is None:
            self._onehot = [
                {v: r for v, r in zip(d.categories, d.transform(list(d.categories)), strict=True)}
                if isinstance(d, Categorical)
                else None
                for d in self.fit_space.dimensions
            ]
        columns = []
        for j, (dim, table) in enumerate(zip(self.fit_space.dimensions, self._onehot, strict=True)):
            values = [point[j] for point in points]
            if table is None:
                part = np.asarray(dim.transform(values), dtype=float).reshape(len(points), -1)
            else:
                part = np.asarray([table[v] for v in values], dtype=float).reshape(len(points), -1)
            columns.append(part)
        return np.hstack(columns)

    def _row(self, key: tuple, config: Mapping[str, Any], fidelity: float = 1.0) -> np.ndarray:
        """A configuration's point as the surrogate sees it (skopt's transform, remembered),
        with the fidelity of its value as a last column when the surrogate takes it as input."""
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = self._transform([self.space.encode(config)])[0]
        return np.append(row, fidelity) if self.fidelity_input else row

    def _fit(self, x: np.ndarray, y: np.ndarray):
        from skopt.utils import cook_estimator

        kwargs: dict[str, Any] = {"random_state": int(self._np_rng.randint(0, 2**31 - 1))}
        if self.surrogate != "GP":
            kwargs.update(n_estimators=self.trees, n_jobs=1)
        space = self.skopt_space
        if self.fidelity_input:  # a GP's kernel has a length scale per input
            from skopt.space import Real, Space

            space = Space([*space.dimensions, Real(0.0, 1.0, name="fidelity")])
        model = cook_estimator(self.surrogate, space=space, **kwargs)
        model.fit(x, y)
        return model

    def _acq_func(self) -> str:
        if self.acquisition == "gp_hedge":
            return str(self._np_rng.choice(["EI", "LCB", "PI"]))
        return self.acquisition


def widest_gap(points: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """The widest open interval of size between neighbours on the front of `points`, pairs of
    (size, value) both minimised; None with fewer than two sizes on the front.

    Example:
        >>> widest_gap([(2.0, -0.3), (2.5, -0.8), (3.4, -1.0), (3.6, -1.2), (3.0, -0.5)])
        (2.5, 3.4)
    """
    from leanfit.search.pareto import pareto_front

    sizes = sorted({points[i][0] for i in pareto_front([list(p) for p in points])})
    if len(sizes) < 2:
        return None
    i = max(range(len(sizes) - 1), key=lambda i: sizes[i + 1] - sizes[i])
    return sizes[i], sizes[i + 1]


def expected_hypervolume_improvement(
    sizes: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    front: Sequence[tuple[float, float]],
    reference: tuple[float, float],
) -> np.ndarray:
    """The expected hypervolume that each candidate adds to a two-objective front (both
    minimised), when its first objective is known exactly (`sizes`) and its second is normal
    with `mean` and `std`.

    Above a candidate's size the front is a staircase: between consecutive front points (and the
    reference) the value to beat is a constant t_k, over a width w_k. A result of value y adds
    sum_k w_k * max(0, t_k - y), so the expectation is sum_k w_k * EI(t_k), with the closed-form
    expected improvement EI(t) = (t - mean) * Phi(z) + std * phi(z), z = (t - mean) / std.

    Example:
        >>> # an empty front: the whole box above the candidate, (3 - 1) x (1 - 0.25)
        >>> float(expected_hypervolume_improvement(
        ...     np.array([1.0]), np.array([0.25]), np.array([1e-9]), [], (3.0, 1.0))[0])
        1.5
    """
    from scipy.stats import norm

    size_ref, value_ref = reference
    stairs: list[tuple[float, float]] = []
    best = value_ref
    for size, value in sorted(p for p in front if p[0] < size_ref and p[1] < value_ref):
        if value < best:
            stairs.append((size, value))
            best = value
    edges = np.array([-np.inf, *(s for s, _ in stairs), size_ref])
    thresholds = np.array([value_ref, *(v for _, v in stairs)])
    starts = np.maximum(edges[:-1][None, :], np.asarray(sizes, dtype=float)[:, None])
    widths = np.clip(edges[1:][None, :] - starts, 0.0, None)
    std = np.maximum(np.asarray(std, dtype=float), 1e-12)[:, None]
    gap = thresholds[None, :] - np.asarray(mean, dtype=float)[:, None]
    z = gap / std
    improvement = gap * norm.cdf(z) + std * norm.pdf(z)
    return (widths * improvement).sum(axis=1)


def _fitting_values(values: list[float]) -> list[float]:
    """Non-finite values replaced by a finite value worse than every finite one."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return [1.0] * len(values)
    worst, best = max(finite), min(finite)
    penalty = worst + (0.5 * (worst - best) if worst > best else 1.0)
    return [v if math.isfinite(v) else penalty for v in values]
