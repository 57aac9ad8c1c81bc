"""Pareto dominance, non-dominated sorting and the exact hypervolume of a set of results.

Every function takes objective vectors with one goal per objective ("minimize" or "maximize") and
works internally on minimisation: a maximised objective is negated. A point dominates another when
it is no worse in every objective and better in at least one; equal points do not dominate each
other, so both stay on the front.

The hypervolume (Zitzler & Thiele 1998, "Multiobjective optimization using evolutionary algorithms
— a comparative case study") is the measure of the region dominated by the points and bounded by a
reference point. It is computed exactly by slicing (HSO, While et al. 2006, "A faster algorithm for
calculating hypervolume"): a sweep in two objectives, and for d objectives slabs along the last one,
each measured in d − 1 objectives. That is O(n log n) for 2 objectives and O(n² log n) for 3, plenty
for the hundreds to thousands of trials of a search.

`params_error_hypervolume` is the one number the benchmarks report for a search: the hypervolume of
(log10 parameters, validation error) with log10 parameters clipped to [2, 4.5] and the reference
point (4.5, 1.0), so its largest possible value is 2.5 (a model of 100 parameters and no error).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Goal = Literal["minimize", "maximize"]

# The benchmark's box: models from 100 to ~31.6k parameters, validation error from 0 to 1.
LOG10_PARAMS_RANGE = (2.0, 4.5)
PARAMS_ERROR_REFERENCE = (4.5, 1.0)


def to_minimization(
    points: Sequence[Sequence[float]], goals: Sequence[Goal] | None = None
) -> np.ndarray:
    """Points as an (n, d) float array in which every objective is minimised.

    `goals` gives "minimize" or "maximize" per objective (all "minimize" when left out).
    """
    array = np.asarray(points, dtype=float)
    if array.ndim == 1 and array.size == 0:
        array = array.reshape(0, len(goals) if goals else 0)
    if array.ndim != 2:
        raise ValueError(f"points must be a list of objective vectors, got shape {array.shape}")
    if goals is None:
        return array
    if len(goals) != array.shape[1]:
        raise ValueError(f"{len(goals)} goals for points with {array.shape[1]} objectives")
    signs = []
    for goal in goals:
        if goal not in ("minimize", "maximize"):
            raise ValueError(f"goal {goal!r} must be 'minimize' or 'maximize'")
        signs.append(1.0 if goal == "minimize" else -1.0)
    return array * np.asarray(signs)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when `a` is no worse than `b` in every (minimised) objective and better in one."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated_sort(
    points: Sequence[Sequence[float]], goals: Sequence[Goal] | None = None
) -> list[list[int]]:
    """Indices of the points by front: front 0 is the Pareto front, front 1 the front of the rest,
    and so on (Deb et al. 2002, "A fast and elitist multiobjective genetic algorithm: NSGA-II").

    Points with a NaN objective belong to no front and are left out.
    """
    array = to_minimization(points, goals)
    valid = [i for i in range(len(array)) if not np.any(np.isnan(array[i]))]
    dominated_by_count = {i: 0 for i in valid}
    dominating: dict[int, list[int]] = {i: [] for i in valid}
    for pos, i in enumerate(valid):
        for j in valid[pos + 1 :]:
            if dominates(array[i], array[j]):
                dominating[i].append(j)
                dominated_by_count[j] += 1
            elif dominates(array[j], array[i]):
                dominating[j].append(i)
                dominated_by_count[i] += 1
    fronts: list[list[int]] = []
    current = [i for i in valid if dominated_by_count[i] == 0]
    while current:
        fronts.append(sorted(current))
        following = []
        for i in current:
            for j in dominating[i]:
                dominated_by_count[j] -= 1
                if dominated_by_count[j] == 0:
                    following.append(j)
        current = following
    return fronts


def pareto_front(
    points: Sequence[Sequence[float]], goals: Sequence[Goal] | None = None
) -> list[int]:
    """Indices, in input order, of the points that no other point dominates."""
    fronts = non_dominated_sort(points, goals)
    return fronts[0] if fronts else []


def hypervolume(
    points: Sequence[Sequence[float]],
    reference: Sequence[float],
    goals: Sequence[Goal] | None = None,
) -> float:
    """The exact hypervolume that the points dominate, bounded by `reference`.

    `reference` is written in the objectives' own units and directions (for a maximised objective,
    a value below every point's). A point that is not strictly better than the reference in every
    objective adds nothing.
    """
    ref = to_minimization([reference], goals)[0]
    if len(points) == 0:
        return 0.0
    array = to_minimization(points, goals)
    if array.shape[1] != ref.shape[0]:
        raise ValueError(f"reference has {ref.shape[0]} objectives, the points {array.shape[1]}")
    return _hypervolume(array[np.all(array < ref, axis=1)], ref)


def _hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(ref[0] - points[:, 0].min())
    if points.shape[1] == 2:
        return _hypervolume_2d(points, ref)
    # Slabs along the last objective: between consecutive values, the points at or below the
    # slab's floor dominate a (d-1)-dimensional region of constant measure.
    order = np.argsort(points[:, -1], kind="stable")
    points = points[order]
    levels = np.append(points[:, -1], ref[-1])
    total = 0.0
    for k in range(len(points)):
        depth = levels[k + 1] - levels[k]
        if depth > 0:
            total += depth * _hypervolume(points[: k + 1, :-1], ref[:-1])
    return float(total)


def _hypervolume_2d(points: np.ndarray, ref: np.ndarray) -> float:
    # Sweep by the first objective; each point adds the strip below the best second value so far.
    order = np.lexsort((points[:, 1], points[:, 0]))
    total, best_y = 0.0, ref[1]
    for x, y in points[order]:
        if y < best_y:
            total += (ref[0] - x) * (best_y - y)
            best_y = y
    return float(total)


def params_error_hypervolume(params: Sequence[float], val_error: Sequence[float]) -> float:
    """The benchmarks' hypervolume of (log10 parameters, validation error).

    log10 of the parameter count is clipped to [2, 4.5] and the error to [0, 1]; the reference point
    is (4.5, 1.0), so a model at or above ~31.6k parameters, or with no better than zero accuracy,
    adds nothing, and the largest possible value is 2.5.
    """
    params = np.asarray(params, dtype=float)
    val_error = np.asarray(val_error, dtype=float)
    if params.shape != val_error.shape:
        raise ValueError(f"{params.size} parameter counts but {val_error.size} errors")
    if np.any(params <= 0):
        raise ValueError("parameter counts must be positive")
    low, high = LOG10_PARAMS_RANGE
    x = np.clip(np.log10(params), low, high)
    y = np.clip(val_error, 0.0, 1.0)
    return hypervolume(np.column_stack([x, y]), PARAMS_ERROR_REFERENCE)
