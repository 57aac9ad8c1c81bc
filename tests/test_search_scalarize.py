"""ParEGO scalarisation: the weight set, reaching every Pareto point, hard constraints, failures."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import leanfit.search.scalarize
from leanfit.search.pareto import pareto_front
from leanfit.search.scalarize import ParEGOScalarizer


def test_docstring_example_runs():
    assert doctest.testmod(leanfit.search.scalarize).failed == 0


def test_weight_vectors_are_knowles_simplex_lattice():
    two = ParEGOScalarizer(["minimize", "minimize"]).weight_vectors
    assert len(two) == 11
    assert sorted(two[:, 0].round(10).tolist()) == [i / 10 for i in range(11)]
    three = ParEGOScalarizer(["minimize"] * 3).weight_vectors
    assert len(three) == 15
    assert np.allclose(three.sum(axis=1), 1.0) and np.allclose((three * 4) % 1, 0)


def test_weights_are_drawn_reproducibly_and_cover_the_set():
    draws = [tuple(ParEGOScalarizer(["minimize"] * 2, seed=7).draw_weights()) for _ in range(3)]
    assert len(set(draws)) == 1
    scalarizer = ParEGOScalarizer(["minimize"] * 2, seed=7)
    assert len({tuple(scalarizer.draw_weights()) for _ in range(300)}) == 11


def test_every_weight_picks_a_pareto_point_and_a_concave_front_is_reached():
    # The middle point lies above the line between the ends: no weighted sum ever picks it.
    points = [(0.0, 1.0), (0.6, 0.6), (1.0, 0.0), (0.7, 0.8), (1.0, 1.0)]
    scalarizer = ParEGOScalarizer(["minimize", "minimize"])
    front = pareto_front(points)
    winners = set()
    for weights in scalarizer.weight_vectors:
        values = scalarizer.scalarize(points, weights)
        winners.add(int(np.argmin(values)))
    assert winners <= set(front)
    assert winners == {0, 1, 2}


def test_maximised_accuracy_is_the_same_as_minimised_error():
    maximise = ParEGOScalarizer(["maximize", "minimize"])
    minimise = ParEGOScalarizer(["minimize", "minimize"])
    acc_params = [(0.9, 4.0), (0.95, 4.5), (0.8, 3.0)]
    err_params = [(1 - a, p) for a, p in acc_params]
    weights = [0.3, 0.7]
    assert np.allclose(
        maximise.scalarize(acc_params, weights), minimise.scalarize(err_params, weights)
    )


def test_an_infeasible_result_is_worse_than_every_feasible_one_and_graded():
    scalarizer = ParEGOScalarizer(["minimize", "minimize"])
    objectives = [(0.1, 5.0), (0.5, 3.0), (0.05, 6.0), (math.nan, 7.0), (0.02, 5.5)]
    violation = [0.0, 0.0, 0.3, 1.0, 0.1]  # the fourth was never trained: no error known
    for weights in scalarizer.weight_vectors:
        values = scalarizer.scalarize(objectives, weights, violation)
        assert np.all(np.isfinite(values))
        assert min(values[2], values[3], values[4]) > max(values[0], values[1])
        assert values[3] > values[2] > values[4]


def test_a_failed_result_is_infinite():
    scalarizer = ParEGOScalarizer(["minimize", "minimize"])
    values = scalarizer.scalarize([(0.1, 3.0), (math.nan, 4.0), (0.2, 2.0)], [0.5, 0.5])
    assert math.isinf(values[1]) and np.all(np.isfinite(values[[0, 2]]))


def test_fixed_bounds_keep_a_result_s_value_as_results_arrive():
    fixed = ParEGOScalarizer(["minimize", "minimize"], bounds=[(0.0, 1.0), (2.0, 6.0)])
    first = fixed.scalarize([(0.2, 4.0), (0.1, 5.0)], [0.5, 0.5])
    later = fixed.scalarize([(0.2, 4.0), (0.1, 5.0), (0.0, 2.0)], [0.5, 0.5])
    assert np.allclose(first, later[:2])
    moving = ParEGOScalarizer(["minimize", "minimize"])
    assert not np.allclose(
        moving.scalarize([(0.2, 4.0), (0.1, 5.0)], [0.5, 0.5]),
        moving.scalarize([(0.2, 4.0), (0.1, 5.0), (0.0, 2.0)], [0.5, 0.5])[:2],
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"goals": ["minimize", "up"]}, "The value of a goal is 'up', but must be"),
        ({"goals": ["minimize"], "rho": -1}, "The value of `rho` is -1, but must be `rho >= 0`"),
        ({"goals": ["minimize"], "bounds": [(1, 0)]}, "The value of a bound is (1, 0)"),
    ],
)
def test_constructor_says_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError) as e:
        ParEGOScalarizer(**kwargs)
    assert message in str(e.value)
