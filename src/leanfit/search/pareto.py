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

import bisect
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

    Points with a NaN objective belong to no front and are left out. The dominance relation is
    computed as one boolean matrix, in blocks of rows (a search's thousands of trials take
    milliseconds; a pair-by-pair loop took seconds, and the live progress and the report ask
    for the front often).
    """
    array = to_minimization(points, goals)
    valid = np.flatnonzero(~np.isnan(array).any(axis=1))
    if array.shape[1] == 2:
        return [[int(valid[i]) for i in front] for front in _fronts_2d(array[valid])]
    dominance = _dominance(array[valid])  # [i, j]: i dominates j
    count = dominance.sum(axis=0)  # how many points dominate each
    placed = np.zeros(len(valid), dtype=bool)
    fronts: list[list[int]] = []
    current = np.flatnonzero(count == 0)
    while current.size:
        fronts.append([int(valid[i]) for i in current])
        placed[current] = True
        count = count - dominance[current].sum(axis=0)
        current = np.flatnonzero((count == 0) & ~placed)
    return fronts


def nsga2_order(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points (all minimised), best first as NSGA-II selects: by front, and
    within a front by crowding distance, largest first (the two ends of a front have an infinite
    one), then by the first objective, then by index. Points with a NaN objective come last, by
    index. (The first objective decides between the two ends: a rung's ranking puts the
    validation error first, so its most accurate result goes before its smallest, where the
    earlier arrival went first, and a chance-level tiny model took a lone promotion.)

    Example:
        >>> nsga2_order([[3, 3], [1, 4], [2, 2], [4, 1], [2.1, 1.9], [5, 5]])
        [1, 3, 2, 4, 0, 5]
        >>> nsga2_order([[0.9, 2.0], [0.02, 4.0]])  # (a 10%-accurate tiny model arrived first)
        [1, 0]
    """
    fronts = non_dominated_sort(points)
    array = np.asarray(points, dtype=float).reshape(len(points), -1)
    order: list[int] = []
    for front in fronts:
        distance = crowding_distance(array[front])
        order += [
            front[i]
            for i in sorted(
                range(len(front)), key=lambda i: (-distance[i], array[front[i], 0], front[i])
            )
        ]
    placed = set(order)
    return order + [i for i in range(len(points)) if i not in placed]


def crowding_distance(array: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row of one front: over the objectives, the gap
    between its two neighbours along that objective, as a share of the front's range; the
    extremes of each objective get infinity."""
    n, d = array.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(d):
        order = np.argsort(array[:, j], kind="stable")
        values = array[order, j]
        span = values[-1] - values[0]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (values[2:] - values[:-2]) / span
    return distance


def _fronts_2d(array: np.ndarray) -> list[list[int]]:
    """Non-dominated sorting of an (n, 2) array in O(n log n) (Jensen 2003, "Reducing the
    run-time complexity of multiobjective EAs"): in order of the first objective, then the second,
    a point joins the first front whose smallest second objective so far is above its own (those
    minima rise from front to front); equal points share a front. Each front in input order."""
    order = np.lexsort((array[:, 1], array[:, 0]))
    minima: list[float] = []  # per front, the smallest second objective so far
    fronts: list[list[int]] = []
    previous, previous_front = None, -1
    for i in order:
        point = (array[i, 0], array[i, 1])
        # an equal point does not dominate it: the same front
        k = previous_front if point == previous else bisect.bisect_right(minima, point[1])
        if k == len(fronts):
            fronts.append([])
            minima.append(point[1])
        minima[k] = min(minima[k], point[1])
        fronts[k].append(int(i))
        previous, previous_front = point, k
    return [sorted(front) for front in fronts]


def _dominance(array: np.ndarray, block: int = 512) -> np.ndarray:
    """The (n, n) matrix whose [i, j] says whether point i dominates point j (minimisation)."""
    n = len(array)
    out = np.zeros((n, n), dtype=bool)
    for start in range(0, n, block):
        rows = array[start : start + block, None, :]
        no_worse = np.all(rows <= array[None, :, :], axis=2)
        better = np.any(rows < array[None, :, :], axis=2)
        out[start : start + block] = no_worse & better
    return out


def pareto_front(
    points: Sequence[Sequence[float]], goals: Sequence[Goal] | None = None
) -> list[int]:
    """Indices, in input order, of the points that no other point dominates."""
    array = to_minimization(points, goals)
    valid = np.flatnonzero(~np.isnan(array).any(axis=1))
    if array.shape[1] == 2:
        return sorted(int(valid[i]) for i in _front_2d(array[valid]))
    dominated = _dominance(array[valid]).any(axis=0)
    return [int(i) for i in valid[~dominated]]


def _front_2d(array: np.ndarray) -> list[int]:
    """The non-dominated rows of an (n, 2) array, in O(n log n): sorted by the first objective,
    then the second, a point is dominated when an earlier one has a smaller second objective, or
    the same one at a smaller first objective (equal points do not dominate each other)."""
    order = np.lexsort((array[:, 1], array[:, 0]))
    front: list[int] = []
    best_before = np.inf  # the smallest second objective among smaller first objectives
    k = 0
    while k < len(order):
        x = array[order[k], 0]
        group_end = k
        while group_end < len(order) and array[order[group_end], 0] == x:
            group_end += 1
        lowest = array[order[k], 1]  # the group's smallest second objective comes first
        if lowest < best_before:
            front += [int(i) for i in order[k:group_end] if array[i, 1] == lowest]
            best_before = lowest
        k = group_end
    return front


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
