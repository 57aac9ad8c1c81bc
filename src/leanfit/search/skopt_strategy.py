"""Bayesian optimisation with scikit-optimize over the flat encoding of a conditional space.

Snoek et al. 2012, "Practical Bayesian Optimization of Machine Learning Algorithms" (NeurIPS) for
the surrogate-and-acquisition loop and the batch of pending points; Ginsbourger et al. 2010,
"Kriging is well-suited to parallelize optimization" for the constant liar; Hutter et al. 2011,
"Sequential Model-Based Optimization for General Algorithm Configuration" (SMAC) for random
forests as surrogates of conditional, mixed spaces.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from leanfit.search.strategy import Feasible, Observation, Strategy, check_ask
from leanfit.space.spec import SearchSpace

SURROGATES = ("GP", "RF", "ET")
ACQUISITIONS = ("EI", "LCB", "PI", "gp_hedge")
# Observations a surrogate is fitted on, by default: a GP's fit grows as n³ in the points (and here
# with the one-hot width of the space), a forest's as n log n.
DEFAULT_MAX_OBSERVATIONS = {"GP": 60, "RF": 200, "ET": 200}


class SkoptStrategy(Strategy):
    """scikit-optimize's `Optimizer` (surrogate + acquisition) behind the leanfit ask/tell.

    The first `initial_points` proposals are random samples of the space. After that, each `ask`
    fits a fresh `skopt.Optimizer` over `space.to_skopt()` on at most `max_observations` told
    results — the best half of that number and the most recent rest — plus every pending
    configuration at the constant-liar value, then asks it. Fitting on a bounded set keeps a
    proposal's cost flat however long the search runs (thousands of trials), and fitting afresh
    makes `tell` free, so the controller can re-tell every result with new scalarisation weights
    before each ask (ParEGO) at no cost. A batch `ask(n)` is skopt's `ask(n_points=n,
    strategy="cl_min")`: after each point the model is refitted with the point told the minimum
    value seen (the "constant liar"), which pushes the next point elsewhere; the same lie stands
    in for the pending configurations, which running trials have not reported yet.

    A non-finite value (a failed trial, a configuration over a hard constraint) is fitted as the
    worst finite value plus half the range of the values (plus 1 when they are all equal), so the
    surrogate learns to avoid such regions without an infinite target. A proposal that decodes to
    a configuration already told or pending (the flat encoding can differ only in inactive
    parameters) is replaced by a new random sample.

    With `feasible`, the acquisition is evaluated only at random points that satisfy it (skopt's
    `space_constraint`; a GP then optimises the acquisition by sampling instead of L-BFGS), so a
    proposal is feasible without a trial or a proposal spent on infeasible ones.

    `gp_hedge` chooses among EI, LCB and PI by the gains of each one's past proposals; since the
    optimizer is rebuilt for each ask, it draws among the three uniformly here.

    Args:
        space: the search space.
        seed: seeds the initial samples, the surrogate and the acquisition optimiser.
        surrogate: "ET" or "RF" (forests, for conditional and mixed spaces) or "GP" (small,
            continuous spaces).
        acquisition: "EI", "LCB", "PI" or "gp_hedge".
        initial_points: random proposals before the surrogate is used.
        max_observations: K, the most told results a surrogate is fitted on (default 60 for GP,
            200 for forests).
        acquisition_samples: random points of the space at which the acquisition is evaluated
            (skopt's `n_points`; for a GP, the starting points of L-BFGS are picked among them).
        feasible: a predicate every proposal must satisfy (e.g. parameters <= max_params).

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
        if not space.dimensions:
            raise ValueError("the space has no dimension to search; every parameter is constant")
        super().__init__(space, seed, feasible)
        self.surrogate = surrogate
        self.acquisition = acquisition
        self.initial_points = initial_points
        self.max_observations = max_observations or DEFAULT_MAX_OBSERVATIONS[surrogate]
        self.acquisition_samples = acquisition_samples
        self.skopt_space = space.to_skopt()
        self._np_rng = np.random.RandomState(seed)
        self._points: dict[tuple, list[Any]] = {}

    def tell(self, config: Mapping[str, Any], value: float) -> None:
        super().tell(config, value)
        key = self.identify(config)[1]
        if key not in self._points:
            self._points[key] = self.space.encode(config)

    def ask(self, n: int = 1) -> list[dict[str, Any]]:
        check_ask(n)
        if len(self.observations) < self.initial_points:
            return [self.sample_new() for _ in range(n)]
        fitted = self.fitting_set()
        xs = [self._points[o.key] for o in fitted]
        ys = _fitting_values([o.value for o in fitted])
        lie = min(ys)
        xs += [self.space.encode(config) for config in self.pending.values()]
        ys += [lie] * (len(xs) - len(ys))
        # The surrogate's matrices are small: BLAS/OpenMP threads only add overhead, and with
        # trials training on the same cores they make a proposal several times slower.
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            # skopt warns when a proposal repeats a point; duplicates are handled below.
            warnings.simplefilter("ignore")
            optimizer = self._optimizer()
            optimizer.tell(xs, ys)
            proposals = []
            for i in range(n):
                config = self.space.decode(optimizer.ask())
                if not (self.is_feasible(config) and self.claim(config)):
                    config = self.sample_new()
                proposals.append(config)
                if i < n - 1:
                    optimizer.tell(self.space.encode(config), lie)
        return proposals

    def fitting_set(self) -> list[Observation]:
        """The told results the surrogate is fitted on: the best K/2, then the most recent."""
        ranked = self.ranked()
        if len(ranked) <= self.max_observations:
            return ranked
        chosen = ranked[: self.max_observations // 2]
        taken = {o.order for o in chosen}
        recent = sorted(
            (o for o in self.observations.values() if o.order not in taken),
            key=lambda o: -o.order,
        )
        return chosen + recent[: self.max_observations - len(chosen)]

    def _optimizer(self):
        from skopt import Optimizer

        constraint = None
        if self.feasible is not None:

            def constraint(point) -> bool:
                return self.is_feasible(self.space.decode(point))

        return Optimizer(
            self.skopt_space,
            base_estimator=self.surrogate,
            n_initial_points=0,
            acq_func=self.acquisition,
            acq_optimizer_kwargs={"n_points": self.acquisition_samples},
            space_constraint=constraint,
            random_state=int(self._np_rng.randint(0, 2**31 - 1)),
        )


def _fitting_values(values: list[float]) -> list[float]:
    """Non-finite values replaced by a finite value worse than every finite one."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return [1.0] * len(values)
    worst, best = max(finite), min(finite)
    penalty = worst + (0.5 * (worst - best) if worst > best else 1.0)
    return [v if math.isfinite(v) else penalty for v in values]
