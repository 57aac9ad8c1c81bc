"""ParEGO's random scalarisations: several objectives made into the one value a strategy minimises.

Knowles 2006, "ParEGO: A Hybrid Algorithm With On-Line Landscape Approximation for Expensive
Multiobjective Optimization Problems" (IEEE Transactions on Evolutionary Computation 10(1)).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

import numpy as np

from leanfit.search.pareto import Goal, to_minimization

# Knowles's s, the divisions of the weight simplex: 11 vectors for 2 objectives, 15 for 3.
DEFAULT_DIVISIONS = {1: 1, 2: 10, 3: 4}


class ParEGOScalarizer:
    """The augmented Chebyshev function of ParEGO, with a weight vector drawn per proposal.

    Each objective j is turned into one to minimise and normalised to f_j in [0, 1], by `bounds`
    when given, else by the smallest and largest value among the feasible results scalarised
    together. For a weight vector λ, drawn uniformly from the s + 1 choose k − 1 vectors whose
    entries are multiples of 1/s and sum to 1, a result's scalar is

        f_λ = max_j (λ_j · f_j) + ρ · Σ_j λ_j · f_j        (ρ = 0.05)

    Its minimum for one λ is a Pareto-optimal point, and the Chebyshev max (unlike a weighted sum)
    reaches points in concave parts of the front; a new λ per proposal spreads the proposals over
    the front. The controller's loop, per proposal (or batch):

        weights = scalarizer.draw_weights()
        values = scalarizer.scalarize(objectives_of_every_result, weights, violations)
        strategy.tell_many(configs_of_every_result, values)   # replaces the old values
        configs = strategy.ask(n)

    Give the parameter count as log10(params), so that normalisation is not decided by the few
    largest models.

    A hard constraint (`max_params`, `max_macs`) is not a penalty: a result with violation > 0
    (e.g. log10(params / max_params)) is given max(1 + ρ, the largest feasible scalar) + 1 +
    violation: worse than every feasible result whatever the weights (1 + ρ is the largest scalar
    of a normalised result), and worse the further it is over the limit, which lets a surrogate
    learn where the boundary is. Since the parameter count is known before training, the
    controller can tell an infeasible configuration this way without training it, and ask again
    — or, better, give the strategy the constraint as `feasible` so that it never proposes one
    (see `leanfit.search.strategy`); results told by a warm start may still be infeasible.
    A result whose objectives are not finite (a failed trial) is given inf, which every strategy
    ranks last.

    To rank results at an ASHA rung, use fixed `bounds` and `equal_weights()`, never drawn
    weights: the values recorded at a rung must stay comparable over the whole search.

    Args:
        goals: "minimize" or "maximize", one per objective.
        seed: seeds the draws of weight vectors.
        rho: ρ, the weight of the augmentation term (ParEGO uses 0.05).
        divisions: s, the divisions of the weight simplex (default: 10 for 2 objectives, 4 for 3,
            3 beyond).
        bounds: (low, high) per objective in its own units, for a normalisation that does not
            move with the results (values outside are not clipped).

    Example:
        >>> s = ParEGOScalarizer(["minimize", "minimize"], seed=0)
        >>> s.scalarize([[0.1, 3.0], [0.3, 2.0], [0.2, 2.5]], weights=[0.5, 0.5]).round(3).tolist()
        [0.525, 0.525, 0.275]
    """

    def __init__(
        self,
        goals: Sequence[Goal],
        seed: int = 0,
        rho: float = 0.05,
        divisions: int | None = None,
        bounds: Sequence[tuple[float, float]] | None = None,
    ) -> None:
        if len(goals) < 1:
            raise ValueError("The value of `goals` is empty, but must name at least one goal")
        for goal in goals:
            if goal not in ("minimize", "maximize"):
                raise ValueError(
                    f"The value of a goal is {goal!r}, but must be 'minimize' or 'maximize'"
                )
        if not rho >= 0:
            raise ValueError(f"The value of `rho` is {rho}, but must be `rho >= 0`")
        if divisions is None:
            divisions = DEFAULT_DIVISIONS.get(len(goals), 3)
        if not isinstance(divisions, int) or divisions < 1:
            raise ValueError(
                f"The value of `divisions` is {divisions}, but must be `divisions >= 1`"
            )
        if bounds is not None:
            if len(bounds) != len(goals):
                raise ValueError(
                    f"The value of `bounds` has {len(bounds)} entries, "
                    f"but must have one (low, high) per goal ({len(goals)})"
                )
            for low, high in bounds:
                if not low < high:
                    raise ValueError(
                        f"The value of a bound is ({low}, {high}), but must be `low < high`"
                    )
        self.goals = tuple(goals)
        self.rho = rho
        self.bounds = None if bounds is None else tuple((float(a), float(b)) for a, b in bounds)
        self.weight_vectors = _simplex_lattice(len(goals), divisions)
        self._rng = random.Random(seed)

    def draw_weights(self) -> np.ndarray:
        """One of the weight vectors, uniformly at random."""
        return self.weight_vectors[self._rng.randrange(len(self.weight_vectors))].copy()

    def equal_weights(self) -> np.ndarray:
        return np.full(len(self.goals), 1.0 / len(self.goals))

    def scalarize(
        self,
        objectives: Sequence[Sequence[float]],
        weights: Sequence[float],
        violation: Sequence[float] | None = None,
    ) -> np.ndarray:
        """The scalar to minimise of each result (one row of `objectives` per result).

        `violation` is how far each result is over its hard constraints (0 or less: feasible).
        """
        weights = np.asarray(weights, dtype=float)
        if weights.shape != (len(self.goals),):
            raise ValueError(f"{weights.size} weights for {len(self.goals)} objectives")
        if len(objectives) == 0:
            return np.zeros(0)
        f = to_minimization(objectives, self.goals)
        violation = np.zeros(len(f)) if violation is None else np.asarray(violation, dtype=float)
        if violation.shape != (len(f),):
            raise ValueError(f"{violation.size} violations for {len(f)} results")
        finite = np.all(np.isfinite(f), axis=1)
        feasible = finite & ~(violation > 0)
        low, high = self._normalisation(f[feasible])
        with np.errstate(invalid="ignore"):
            unit = (f - low) / np.where(high > low, high - low, 1.0)
        weighted = np.where(np.isfinite(unit), unit, 0.0) * weights
        values = weighted.max(axis=1) + self.rho * weighted.sum(axis=1)
        worst_feasible = max([1.0 + self.rho, *values[feasible].tolist()])
        values = np.where(finite, values, math.inf)
        # An infeasible result needs no finite objectives: it may never have been trained.
        return np.where(violation > 0, worst_feasible + 1.0 + violation, values)

    def _normalisation(self, feasible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.bounds is not None:
            lows, highs = zip(*self.bounds, strict=True)
            corners = to_minimization([lows, highs], self.goals)
            return corners.min(axis=0), corners.max(axis=0)
        if len(feasible) == 0:
            return np.zeros(len(self.goals)), np.ones(len(self.goals))
        return feasible.min(axis=0), feasible.max(axis=0)


def _simplex_lattice(k: int, s: int) -> np.ndarray:
    """Every vector of k multiples of 1/s that sum to 1."""
    rows = [c for c in itertools.product(range(s + 1), repeat=k) if sum(c) == s]
    return np.asarray(rows, dtype=float) / s
