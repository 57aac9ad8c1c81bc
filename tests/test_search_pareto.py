"""Pareto fronts and hypervolumes, against examples worked out by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from leanfit.search.pareto import (
    dominates,
    hypervolume,
    non_dominated_sort,
    params_error_hypervolume,
    pareto_front,
)

# Minimise both. B dominates D, and D dominates E; A, B and C trade off.
A, B, C, D, E = (1, 5), (2, 3), (4, 1), (3, 4), (5, 5)
POINTS = [A, B, C, D, E]


def test_front_and_fronts_of_a_hand_checked_example():
    assert pareto_front(POINTS) == [0, 1, 2]
    assert non_dominated_sort(POINTS) == [[0, 1, 2], [3], [4]]


def test_maximised_objectives_are_negated():
    """(accuracy up, parameters down) gives the same front as (error down, parameters down)."""
    accuracy_params = [(1 - e / 10, p) for e, p in POINTS]
    assert pareto_front(accuracy_params, ["maximize", "minimize"]) == [0, 1, 2]
    assert pareto_front(accuracy_params, ["minimize", "minimize"]) != [0, 1, 2]


def test_equal_points_do_not_dominate_each_other():
    assert not dominates((1, 1), (1, 1))
    assert pareto_front([(1, 1), (1, 1), (2, 2)]) == [0, 1]


def test_a_failed_result_belongs_to_no_front():
    assert non_dominated_sort([(1, 2), (float("nan"), 0), (2, 1)]) == [[0, 2]]


def test_two_objective_hypervolume_of_a_hand_checked_example():
    # Slices of the dominated region, reference (6, 6): y in [5,6] from x=1 (5), y in [3,5] from
    # x=2 (8), y in [1,3] from x=4 (4). The dominated points D and E add nothing.
    assert hypervolume(POINTS, (6, 6)) == pytest.approx(17.0)
    assert hypervolume([A, B, C], (6, 6)) == pytest.approx(17.0)


def test_points_outside_the_reference_add_nothing():
    assert hypervolume([(7, 0), (0, 6)], (6, 6)) == 0.0
    assert hypervolume([], (6, 6)) == 0.0


def test_hypervolume_with_a_maximised_objective():
    # Accuracy 0.9 with 3 (log) params and accuracy 0.5 with 1: reference accuracy 0, params 4.
    assert hypervolume([(0.9, 3), (0.5, 1)], (0.0, 4), ["maximize", "minimize"]) == pytest.approx(
        0.9 * 1 + 0.5 * 2
    )


def test_three_objective_hypervolume_of_a_hand_checked_example():
    # Boxes to (2,2,2): 2·2·1 and 1·1·2 that overlap in the unit cube [1,2]³.
    assert hypervolume([(0, 0, 1), (1, 1, 0)], (2, 2, 2)) == pytest.approx(5.0)


@pytest.mark.parametrize("seed", range(5))
def test_three_objective_hypervolume_matches_inclusion_exclusion(seed):
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 1, size=(5, 3))
    ref = np.ones(3)
    exact = 0.0
    for r in range(1, len(points) + 1):
        for subset in itertools.combinations(points, r):
            corner = np.max(subset, axis=0)
            exact += (-1) ** (r + 1) * np.prod(ref - corner)
    assert hypervolume(points, ref) == pytest.approx(exact)


def test_benchmark_hypervolume_of_params_and_error():
    # log10 params 3 and 4 against the reference (4.5, 1.0): 1.5·0.9 + 0.5·0.05.
    assert params_error_hypervolume([1_000, 10_000], [0.1, 0.05]) == pytest.approx(1.375)
    # log10 params are clipped to [2, 4.5]: a tiny perfect model fills the box, a huge one adds 0.
    assert params_error_hypervolume([10], [0.0]) == pytest.approx(2.5)
    assert params_error_hypervolume([10**6], [0.0]) == 0.0


@pytest.mark.parametrize("dims", [2, 3])
def test_fronts_match_a_pair_by_pair_check_with_ties_and_failures(dims):
    """The sweep (2 objectives) and the dominance matrix (3) against the definition itself."""
    rng = np.random.default_rng(dims)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        points = rng.integers(0, 4, (n, dims)).astype(float)  # small integers: many ties
        if rng.random() < 0.3:
            points[rng.integers(0, n), rng.integers(0, dims)] = np.nan
        valid = [i for i in range(n) if not np.isnan(points[i]).any()]
        expected = [i for i in valid if not any(dominates(points[j], points[i]) for j in valid)]
        assert pareto_front(points.tolist()) == expected
        fronts = non_dominated_sort(points.tolist())
        assert (fronts[0] if fronts else []) == expected
        assert sorted(itertools.chain(*fronts)) == valid  # every valid point in exactly one front
        for a, b in itertools.pairwise(fronts):  # each point of a front is dominated by the last
            assert all(any(dominates(points[i], points[j]) for i in a) for j in b)
        for front in fronts:  # and by none of its own front
            assert not any(dominates(points[i], points[j]) for i in front for j in front)


def test_the_plot_says_what_a_dots_size_means(tmp_path, monkeypatch):
    """A dot's size is the epochs its trial was trained to: the legend says so (before, sizes
    went unexplained), with at most three sizes shown where there are many rungs."""
    from matplotlib.figure import Figure

    from leanfit.report.pareto import ReportPoint, plot_pareto

    drawn = []
    save = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig), save(fig, *a, **k))
    )

    def labels(epochs):
        points = [
            ReportPoint(i, 100 * (i + 1), 0, 0.5 + 0.01 * i, e, {}, on_front=i % 2 == 0)
            for i, e in enumerate(epochs)
        ]
        plot_pareto(points, tmp_path / "p.png", "t", max_params=1000)
        return [t.get_text() for t in drawn[-1].axes[0].get_legend().get_texts()]

    assert labels([2, 6, 10, 2, 6]) == [
        "2 epochs", "6 epochs", "10 epochs", "Pareto front", "max_params 1,000",
    ]  # fmt: skip
    assert labels([1, 3, 9, 27, 81])[:3] == ["1 epoch", "9 epochs", "81 epochs"]
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")
