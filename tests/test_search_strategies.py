"""Search strategies: valid, never repeated, reproducible proposals; BO beats random; evolution."""

from __future__ import annotations

import doctest
import math
import statistics

import numpy as np
import pytest

import leanfit.search.evolution
import leanfit.search.random_search
import leanfit.search.skopt_strategy
from leanfit.config import StrategyConfig, experiment_from_dict, load_experiment
from leanfit.search.evolution import RegularizedEvolution, crossover
from leanfit.search.factory import make_strategy
from leanfit.search.objectives import SyntheticObjective
from leanfit.search.pareto import hypervolume
from leanfit.search.random_search import RandomSearch
from leanfit.search.skopt_strategy import (
    Frontier,
    SkoptStrategy,
    expected_hypervolume_improvement,
    widest_gap,
)
from leanfit.search.strategy import SpaceExhausted
from leanfit.space.spec import Param, SearchSpace
from tests.support import EXAMPLES

# A conditional space of 5·10 + 2·10 + 10 = 80 configurations ("c" has no child parameter).
SMALL = SearchSpace(
    [
        Param("kind", "categorical", ("a", "b", "c")),
        Param("depth", "integer", low=1, high=5, parent="kind", parent_values=("a",)),
        Param("act", "categorical", ("relu", "gelu"), parent="kind", parent_values=("b",)),
        Param("width", "integer", low=1, high=10),
        Param("lr", "real", low=1e-3, high=1.0, log=True, parent="kind", parent_values=("c",)),
    ]
)
# The same without the real parameter: 5·4 + 2·4 + 4 = 32 configurations, all of them listable.
TINY = SearchSpace(
    [
        Param("kind", "categorical", ("a", "b", "c")),
        Param("depth", "integer", low=1, high=5, parent="kind", parent_values=("a",)),
        Param("act", "categorical", ("relu", "gelu"), parent="kind", parent_values=("b",)),
        Param("width", "categorical", (8, 16, 32, 64)),
    ],
    fixed={"epochs": 3},
)
TINY_SIZE = 32
DIGITS = load_experiment(EXAMPLES / "digits.yaml").search_space()


def toy_value(config) -> float:
    return abs(config["width"] - 6) + config.get("depth", 0) + (config["kind"] == "b")


def strategies(space, seed=0, feasible=None):
    """One of each, with a surrogate that starts after a few random points."""
    bo = {"initial_points": 4, "acquisition_samples": 200, "feasible": feasible}
    return {
        "random": RandomSearch(space, seed=seed, feasible=feasible),
        "evolution": RegularizedEvolution(
            space, seed=seed, population_size=8, sample_size=3, feasible=feasible
        ),
        "skopt-ET": SkoptStrategy(space, seed=seed, surrogate="ET", **bo),
        "skopt-RF": SkoptStrategy(space, seed=seed, surrogate="RF", **bo),
    }


@pytest.mark.parametrize(
    "module",
    [leanfit.search.random_search, leanfit.search.evolution, leanfit.search.skopt_strategy],
)
def test_docstring_examples_run(module):
    assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize("name", ["random", "evolution", "skopt-ET", "skopt-RF"])
def test_proposals_are_valid_and_never_repeat_until_the_space_is_nearly_exhausted(name):
    """TINY has 32 configurations; 30 proposals leave a strategy little room, and batches of 3
    ask for several at once while earlier ones are still pending."""
    strategy = strategies(TINY)[name]
    seen = set()
    while len(seen) < 30:
        batch = strategy.ask(3)
        assert len(batch) == 3
        for config in batch:
            assert TINY.validate(config) == config
            key = TINY.key(config)
            assert key not in seen
            seen.add(key)
        strategy.tell_many(batch, [toy_value(c) for c in batch])


@pytest.mark.parametrize("name", ["random", "evolution"])
def test_three_hundred_proposals_of_a_small_space_are_distinct(name):
    strategy = strategies(SMALL)[name]
    keys = set()
    for _ in range(100):
        batch = strategy.ask(3)
        for config in batch:
            SMALL.validate(config)
            keys.add(SMALL.key(config))
        strategy.tell_many(batch, [toy_value(c) + c.get("lr", 0.0) for c in batch])
    assert len(keys) == 300


@pytest.mark.parametrize("name", ["random", "evolution", "skopt-ET"])
def test_with_a_constraint_every_proposal_satisfies_it(name):
    def narrow(config):
        return config["width"] <= 4

    strategy = strategies(SMALL, feasible=narrow)[name]
    for _ in range(8):
        batch = strategy.ask(3)
        assert all(narrow(c) and SMALL.validate(c) == c for c in batch)
        strategy.tell_many(batch, [toy_value(c) for c in batch])


def test_a_constraint_nothing_satisfies_says_so():
    strategy = RandomSearch(SMALL, feasible=lambda config: config["width"] > 10)
    with pytest.raises(SpaceExhausted, match="satisfies the constraints") as raised:
        strategy.ask()
    assert raised.value.infeasible  # an error for the search, not the end of a small space


def test_an_exhausted_space_says_so():
    strategy = RandomSearch(TINY, seed=1)
    for _ in range(TINY_SIZE):
        strategy.ask()
    with pytest.raises(SpaceExhausted, match="exhausted; widen it or lower budget.trials") as e:
        strategy.ask()
    assert not e.value.infeasible


@pytest.mark.parametrize("name", ["random", "evolution", "skopt-ET"])
def test_configurations_told_by_someone_else_are_not_proposed(name):
    """A warm start tells past results first: the strategy proposes only what is left."""
    strategy = strategies(TINY)[name]
    everything = {TINY.key(TINY.sample(s)): TINY.sample(s) for s in range(2000)}
    assert len(everything) == TINY_SIZE
    left = list(everything)[:2]
    told = [c for k, c in everything.items() if k not in left]
    strategy.tell_many(told, [toy_value(c) for c in told])
    assert sorted(TINY.key(c) for c in strategy.ask(2)) == sorted(left)


@pytest.mark.parametrize("name", ["random", "evolution", "skopt-ET"])
def test_same_seed_same_proposals_other_seed_other_proposals(name):
    def run(seed):
        strategy = strategies(SMALL, seed)[name]
        proposals = []
        for _ in range(6):
            batch = strategy.ask(2)
            strategy.tell_many(batch, [toy_value(c) + c.get("lr", 0.0) for c in batch])
            proposals += batch
        return proposals

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_gp_surrogate_proposes_valid_new_configurations():
    strategy = SkoptStrategy(SMALL, seed=0, surrogate="GP", initial_points=3)
    first = strategy.ask(3)
    strategy.tell_many(first, [toy_value(c) for c in first])
    batch = strategy.ask(3)
    assert all(SMALL.validate(c) == c for c in batch)
    assert len({SMALL.key(c) for c in first + batch}) == 6


def test_a_proposals_remembered_point_does_not_keep_its_candidates_alive():
    """Each proposal kept a view of its row of the acquisition's candidate matrix, and with it
    the whole matrix: a 3,000-trial search's controller grew by 0.35 MB a job, to 2 GB."""
    strategy = SkoptStrategy(DIGITS, seed=0, surrogate="ET", initial_points=3)
    first = strategy.ask(3)
    strategy.tell_many(first, [0.5, 0.4, 0.3])
    for config in strategy.ask(2):
        row = strategy._rows[DIGITS.key(config)]
        assert row.base is None or row.base.size == row.size, "a view of a larger matrix"


def test_expected_hypervolume_improvement_by_hand_and_by_sampling():
    # One front point (1, 0.5), reference (3, 1): by hand, a certain result of error 0.25 adds
    # (3 - 2) x (0.5 - 0.25) at size 2; at size 0 it also gets [0, 1) x (1 - 0.25); 0.6 adds none.
    certain = expected_hypervolume_improvement(
        np.array([2.0, 0.0, 2.0]), np.array([0.25, 0.25, 0.6]), np.zeros(3), [(1.0, 0.5)], (3, 1)
    )
    assert certain == pytest.approx([0.25, 1.25, 0.0])

    # Uncertain errors, a front with a dominated point and one beyond the reference: against the
    # exact hypervolume of the front with a sampled result added.
    front = [(1.0, 0.6), (2.0, 0.3), (2.5, 0.35), (3.0, 0.1), (4.5, 0.05)]
    reference = (4.0, 1.0)
    sizes, mean, std = np.array([0.5, 1.5, 2.2, 3.5]), np.array([0.5, 0.4, 0.2, 0.2]), 0.15
    exact = expected_hypervolume_improvement(sizes, mean, np.full(4, std), front, reference)
    rng = np.random.default_rng(0)
    base = hypervolume(front, reference)
    for size, m, e in zip(sizes, mean, exact, strict=True):
        draws = rng.normal(m, std, 4000)
        sampled = np.mean([hypervolume([*front, (size, y)], reference) - base for y in draws])
        assert e == pytest.approx(sampled, rel=0.03, abs=1e-3)


def test_ehvi_proposes_where_the_front_gains_most_and_a_batch_spreads_out():
    """On a space whose size (width) is known and whose error falls with width, the front has
    its widest gap at the small end: EHVI proposes there, all of a batch, each a new one."""
    sizes = {w: math.log10(w) for w in range(1, 11)}
    strategy = SkoptStrategy(SMALL, seed=0, surrogate="ET", initial_points=4)
    strategy.use_frontier(Frontier(lambda c: sizes[c["width"]], (math.log10(11), 1.0)))
    told = [{"kind": "c", "width": w, "lr": 0.1} for w in (6, 7, 8, 9, 10)] + [
        {"kind": "a", "depth": d, "width": w} for d, w in ((1, 6), (2, 8), (3, 10))
    ]
    strategy.tell_many(told, [0.9 / c["width"] for c in told])
    batch = strategy.ask(3)
    widths = [c["width"] for c in batch]
    assert max(widths) <= 5, widths  # the empty small end, not the crowded large one
    assert len({SMALL.key(c) for c in batch}) == 3
    assert all(SMALL.validate(c) == c for c in batch)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_gap_proposal_fills_the_widest_gap_in_size_along_the_front(seed):
    """The front holds widths 1, 2, 9 and 10; widths 3-8 were tried, but with worse errors.
    EHVI over every candidate improves the small end; a gap proposal fills widths 3-8, the
    widest stretch of size the front skips."""
    sizes = {w: math.log10(w) for w in range(1, 11)}
    frontier = Frontier(lambda c: sizes[c["width"]], (math.log10(11), 1.0))
    told = [{"kind": "c", "width": w, "lr": 0.1} for w in (1, 2, 9, 10)]
    told += [{"kind": "a", "depth": d, "width": w} for d in (1, 2, 3) for w in range(3, 9)]
    values = [0.9 / c["width"] if c["kind"] == "c" else 0.95 for c in told]
    widths = {}
    for gap in (False, True):
        strategy = SkoptStrategy(SMALL, seed=seed, surrogate="ET", initial_points=4)
        strategy.use_frontier(frontier, widest_gap=gap)
        strategy.tell_many(told, values)
        widths[gap] = [c["width"] for c in strategy.ask(3)]
    assert all(3 <= w <= 8 for w in widths[True]), widths
    assert not any(3 <= w <= 8 for w in widths[False]), widths
    assert widest_gap([(sizes[c["width"]], v) for c, v in zip(told, values, strict=True)]) == (
        sizes[2],
        sizes[9],
    )


def test_failed_results_are_ranked_last_and_do_not_stop_the_surrogate():
    strategy = SkoptStrategy(SMALL, seed=0, surrogate="ET", initial_points=4)
    batch = strategy.ask(6)
    strategy.tell_many(batch, [math.inf, math.nan, 3.0, 1.0, 2.0, math.inf])
    assert [o.value for o in strategy.ranked()[:3]] == [1.0, 2.0, 3.0]
    assert all(SMALL.validate(c) == c for c in strategy.ask(2))


def test_the_surrogate_is_fitted_on_the_best_and_the_most_recent_results():
    strategy = SkoptStrategy(SMALL, seed=0, surrogate="ET", max_observations=10)
    configs = RandomSearch(SMALL, seed=5).ask(50)
    values = [10.0 + i for i in range(50)]
    values[10:15] = [0.0, 1.0, 2.0, 3.0, 4.0]
    strategy.tell_many(configs, values)
    fitted = strategy.fitting_set()
    assert len(fitted) == 10
    assert sorted(o.value for o in fitted[:5]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert sorted(o.order for o in fitted[5:]) == [45, 46, 47, 48, 49]


@pytest.mark.parametrize("surrogate", ["ET", "GP"])
def test_with_the_fidelity_as_an_input_the_full_budget_optimum_is_sought(surrogate):
    """Many cheap results favour x near 0.2, a few full-budget ones x near 0.8: a surrogate that
    knows each value's fidelity proposes near 0.8; one that does not is drawn to 0.2."""
    line = SearchSpace([Param("x", "real", low=0.0, high=1.0)])
    xs = np.linspace(0.0, 1.0, 41)
    near = {True: 0, False: 0}
    for fidelity_input in (True, False):
        for seed in range(3):
            strategy = SkoptStrategy(line, seed=seed, surrogate=surrogate, initial_points=2,
                                     acquisition="LCB", fidelity_input=fidelity_input)  # fmt: skip
            for x in xs:  # cheap: a rung of a fifth of the budget
                strategy.tell({"x": float(x)}, (x - 0.2) ** 2 - 1.0, fidelity=0.2)
            for x in xs[::4]:  # the full budget
                strategy.tell({"x": float(x) * 0.98 + 0.01}, (x - 0.8) ** 2, fidelity=1.0)
            (proposal,) = strategy.ask(1)
            near[fidelity_input] += abs(proposal["x"] - 0.8) < 0.15
    assert near[True] == 3, near
    assert near[False] == 0, near
    assert [o.fidelity for o in strategy.observations.values()][-1] == 1.0


@pytest.mark.parametrize("surrogate", ["ET", "GP"])
def test_candidates_are_transformed_exactly_as_skopt_does(surrogate):
    """The surrogate's inputs come from a per-dimension lookup, not skopt's own transform."""
    strategy = SkoptStrategy(DIGITS, seed=0, surrogate=surrogate)
    configs = RandomSearch(DIGITS, seed=3).ask(200)
    points = [DIGITS.encode(c) for c in configs]
    expected = np.asarray(strategy.fit_space.transform(points), dtype=float)
    assert np.array_equal(strategy._transform(points), expected)


def test_the_candidate_pool_is_renewed_bounded_and_never_offers_a_known_configuration():
    feasible = lambda c: c["width"] <= 8  # noqa: E731
    strategy = SkoptStrategy(SMALL, seed=0, initial_points=4, acquisition_samples=16,
                             local_samples=4, feasible=feasible)  # fmt: skip
    seen_pools = []
    for _ in range(12):
        (config,) = strategy.ask()
        assert feasible(config)
        strategy.tell(config, toy_value(config))
        seen_pools.append(set(strategy._pool))
        assert len(strategy._pool) <= 16
        assert not set(strategy._pool) & set(strategy.observations)
    assert seen_pools[-1] != seen_pools[4]  # renewed, not a fixed sample


@pytest.mark.parametrize("renewal", [1.0, 0.5])
def test_each_ask_replaces_that_share_of_the_candidate_pool(renewal):
    strategy = SkoptStrategy(DIGITS, seed=0, initial_points=2, acquisition_samples=16,
                             local_samples=4, renewal=renewal)  # fmt: skip
    before: set = set()
    for i in range(8):
        (config,) = strategy.ask()
        strategy.tell(config, float(i % 3))
        pool = set(strategy._pool)
        if before:
            assert len(pool) >= 15  # full, less the proposal when it came from the pool
            assert len(pool & before) <= round(16 * (1 - renewal))
        before = pool
    assert before


def test_telling_again_replaces_the_value():
    strategy = RandomSearch(SMALL, seed=0)
    a, b = strategy.ask(2)
    strategy.tell_many([a, b], [1.0, 2.0])
    strategy.tell(a, 3.0)  # e.g. the trial reached a higher rung
    assert [o.value for o in strategy.ranked()] == [2.0, 3.0]


@pytest.mark.parametrize("name", ["random", "evolution", "skopt-ET"])
def test_revalue_sets_every_value_at_once_and_none_means_seen_not_fitted(name):
    """The controller re-scalarises every result before each proposal; a trial stopped below
    the rung the strategy is fitted on is known but has no value to learn from."""
    strategy = strategies(TINY)[name]
    configs = strategy.ask(8)
    keys = [TINY.key(c) for c in configs]
    strategy.tell_many(configs, [float(i) for i in range(8)])
    new = {k: (None if i < 3 else 10.0 - i) for i, k in enumerate(keys[:6])}
    strategy.revalue(new, dict(zip(keys, configs, strict=True)))
    values = {o.key: o.value for o in strategy.observations.values()}
    assert values == {keys[3]: 7.0, keys[4]: 6.0, keys[5]: 5.0, keys[6]: 6.0, keys[7]: 7.0}
    if isinstance(strategy, RegularizedEvolution):
        assert set(strategy.population) == set(values)
    proposed = {TINY.key(c) for c in strategy.ask(TINY_SIZE - 8)}
    assert not proposed & set(keys)  # seen configurations are never proposed again
    assert len(proposed) == TINY_SIZE - 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"surrogate": "GBRT"}, "The value of `surrogate` is 'GBRT', but must be one of"),
        ({"acquisition": "UCB"}, "The value of `acquisition` is 'UCB', but must be one of"),
        ({"initial_points": 0}, "The value of `initial_points` is 0, but must be"),
        ({"max_observations": 1}, "The value of `max_observations` is 1, but must be"),
    ],
)
def test_skopt_constructor_says_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("`", ".").replace("(", ".")):
        SkoptStrategy(SMALL, **kwargs)


def test_ask_needs_a_positive_count():
    with pytest.raises(ValueError, match="The value of `n` is 0, but must be an integer `n >= 1`"):
        RandomSearch(SMALL).ask(0)


# -- Bayesian optimisation against random search ----------------------------------------------

# One fixed architecture and three continuous hyper-parameters: the small continuous space a GP
# is meant for. Noise-free synthetic accuracy after 9 epochs.
HP_SPACE = experiment_from_dict(
    {
        "name": "hp",
        "dataset": {"source": "digits"},
        "space": {
            "architecture": {
                "blocks": 2,
                "modules": ["conv"],
                "stem_width": [8],
                "width": [32],
                "kernel": [3],
                "stride": [1],
                "repeats": [1],
                "activation": ["relu"],
            },
            "hyperparameters": {
                "lr": {"low": 1e-4, "high": 1.0, "log": True},
                "weight_decay": {"low": 1e-6, "high": 1e-1, "log": True},
                "momentum": {"low": 0.5, "high": 0.99},
            },
        },
    }
).search_space()


def best_error(strategy, objective, trials=16) -> float:
    best = 1.0
    for _ in range(trials):
        (config,) = strategy.ask()
        error = 1.0 - objective.evaluate(config, 9).val_accuracy
        strategy.tell(config, error)
        best = min(best, error)
    return best


def test_bayesian_optimisation_beats_random_search_on_the_synthetic_objective():
    objective = SyntheticObjective(HP_SPACE, noise=0.0)
    # The best error of 400 random configurations stands in for the optimum.
    optimum = best_error(RandomSearch(HP_SPACE, seed=99), objective, trials=400)
    seeds = range(5)
    random_regret = statistics.median(
        best_error(RandomSearch(HP_SPACE, seed=s), objective) - optimum for s in seeds
    )
    bo_regret = statistics.median(
        best_error(SkoptStrategy(HP_SPACE, seed=s, surrogate="GP", initial_points=6), objective)
        - optimum
        for s in seeds
    )
    assert bo_regret < 0.5 * random_regret


# -- regularised evolution --------------------------------------------------------------------


def descendants(space: SearchSpace, name: str) -> set[str]:
    children = {p.name for p in space.params if p.parent == name}
    return children.union(*(descendants(space, c) for c in children))


def mutated_parameter(space: SearchSpace, parent: dict, child: dict) -> str | None:
    """The one parameter a mutation changed, or None if `child` is not such a mutation."""
    changed = [k for k in parent if k in child and parent[k] != child[k]]
    if len(changed) != 1:
        return None
    appeared_or_gone = set(parent) ^ set(child)
    return changed[0] if appeared_or_gone <= descendants(space, changed[0]) else None


def test_a_mutation_changes_one_active_parameter_and_only_its_conditional_children():
    evolution = RegularizedEvolution(DIGITS, seed=0)
    mutated = set()
    for seed in range(300):
        parent = DIGITS.sample(seed)
        child = evolution.mutate(parent)
        assert DIGITS.validate(child) == child
        name = mutated_parameter(DIGITS, parent, child)
        assert name is not None
        mutated.add(name.split(".")[-1])
    # Block types, block parameters and hyper-parameters all get mutated.
    assert {"type", "width", "lr", "optimizer"} <= mutated


def test_a_crossover_joins_one_parents_architecture_with_the_others_training_settings():
    import random

    from leanfit.config import HYPERPARAMETER_DEFAULTS

    training = HYPERPARAMETER_DEFAULTS.__contains__
    rng = random.Random(0)
    optimizers = set()
    for seed in range(200):
        first, second = (DIGITS.validate(DIGITS.sample(2 * seed + k)) for k in (0, 1))
        child = crossover(DIGITS, first, second, training, rng)
        assert DIGITS.validate(child) == child
        for name, value in child.items():
            parent = second if training(name) else first
            if name in parent:  # what the chosen parent has, it gives
                assert value == parent[name], name
        # the architecture is the first parent's, the training settings the second's
        assert {k: v for k, v in child.items() if not training(k)} == {
            k: v for k, v in first.items() if not training(k)
        }
        assert {k: v for k, v in child.items() if training(k)} == {
            k: v for k, v in second.items() if training(k)
        }
        optimizers.add(child["optimizer"])
    assert optimizers == {"sgd", "adamw"}


def test_a_crossover_fills_a_conditional_parameter_its_parent_lacks_from_the_other():
    import random

    # "lr" is chosen from the second parent, but only the first has it (kind c)
    first = SMALL.validate({"kind": "c", "width": 3, "lr": 0.1})
    second = SMALL.validate({"kind": "a", "depth": 2, "width": 9})
    child = crossover(SMALL, first, second, lambda name: name in ("lr", "width"), random.Random(0))
    assert child == {"kind": "c", "width": 9, "lr": 0.1}
    # "depth" comes with kind a, which neither parent's chosen group has: it is sampled
    child = crossover(SMALL, second, first, lambda name: name == "depth", random.Random(0))
    assert child["kind"] == "a" and child["depth"] == 2  # the other parent lacks it: kept
    child = crossover(
        SMALL,
        SMALL.validate({"kind": "b", "act": "gelu", "width": 1}),
        second,
        lambda name: name == "kind",
        random.Random(1),
    )
    assert child["kind"] == "a" and 1 <= child["depth"] <= 5 and "act" not in child


def test_bo_crossover_candidates_join_the_best_results_and_proposals_never_repeat():
    from leanfit.config import HYPERPARAMETER_DEFAULTS

    def split(config):
        arch = {k: v for k, v in config.items() if k not in HYPERPARAMETER_DEFAULTS}
        return arch, {k: v for k, v in config.items() if k in HYPERPARAMETER_DEFAULTS}

    objective = SyntheticObjective(DIGITS, seed=0)
    crossed = SkoptStrategy(
        DIGITS,
        seed=0,
        initial_points=10,
        acquisition_samples=50,
        local_samples=0,
        crossover_samples=200,
        crossover_group=HYPERPARAMETER_DEFAULTS.__contains__,
    )
    seen = set()
    for _ in range(20):
        (config,) = crossed.ask()
        assert DIGITS.key(config) not in seen and DIGITS.validate(config) == config
        seen.add(DIGITS.key(config))
        crossed.tell(config, 1.0 - objective.asymptote(config))
    best = [split(o.config) for o in crossed.fitting_set()[: crossed.local_parents]]
    _, candidates, _ = crossed._candidates(crossed.fitting_set())
    children = [c for c in candidates if any(split(c)[0] == a for a, _ in best)]
    children = [c for c in children if any(split(c)[1] == h for _, h in best)]
    # every ordered pair of the 5 best that makes a new configuration: up to 5 x 4
    assert 12 <= len(children) <= 20
    assert not any(DIGITS.key(c) in seen for c in children)
    # without a group to split by, there is no crossover
    assert SkoptStrategy(DIGITS, crossover_samples=50).crossover_samples == 0
    with pytest.raises(ValueError, match="crossover_samples"):
        SkoptStrategy(DIGITS, crossover_samples=-1)


def test_the_population_stays_bounded_and_the_oldest_is_retired_whatever_its_value():
    evolution = RegularizedEvolution(SMALL, seed=0, population_size=5, sample_size=2)
    configs = RandomSearch(SMALL, seed=1).ask(12)
    evolution.tell(configs[0], 0.0)  # the best result ever, told first
    for config in configs[1:]:
        evolution.tell(config, 1.0)
    assert len(evolution.population) == 5
    assert evolution.population_configs() == [SMALL.canonicalize(c) for c in configs[-5:]]
    evolution.tell(configs[1], math.inf)  # a failure never joins
    assert len(evolution.population) == 5


def test_a_member_withdrawn_and_told_again_joins_the_population_again():
    """(A trial marked as seen, then told when promoted, was lost to the population for good.)"""
    evolution = RegularizedEvolution(SMALL, seed=0, population_size=3, sample_size=2)
    configs = RandomSearch(SMALL, seed=1).ask(3)
    evolution.tell_many(configs, [1.0, 2.0, 3.0])
    evolution.mark_seen(configs[0])
    assert len(evolution.population) == 2
    evolution.tell(configs[0], 0.5)
    assert evolution.population_configs()[-1] == SMALL.canonicalize(configs[0])  # the youngest
    assert len(evolution.population) == 3


def test_a_full_tournament_mutates_the_best_member():
    evolution = RegularizedEvolution(SMALL, seed=0, population_size=4, sample_size=4)
    configs = RandomSearch(SMALL, seed=2).ask(4)
    evolution.tell_many(configs, [3.0, 0.5, 2.0, 1.0])
    best = SMALL.canonicalize(configs[1])
    for child in evolution.ask(5):
        assert mutated_parameter(SMALL, best, child) is not None


def test_evolution_constructor_says_what_is_wrong():
    with pytest.raises(ValueError, match="The value of `sample_size` is 9, but must be"):
        RegularizedEvolution(SMALL, population_size=5, sample_size=9)


# -- the factory ------------------------------------------------------------------------------


def test_make_strategy_follows_the_experiment_file():
    strategy = make_strategy(
        SMALL, StrategyConfig(name="skopt", surrogate="RF", acquisition="LCB", initial_points=7)
    )
    assert isinstance(strategy, SkoptStrategy)
    assert (strategy.surrogate, strategy.acquisition, strategy.initial_points) == ("RF", "LCB", 7)
    assert isinstance(make_strategy(SMALL, StrategyConfig(name="random")), RandomSearch)
    evolution = make_strategy(SMALL, StrategyConfig(name="evolution", seed=3), seed=8)
    assert isinstance(evolution, RegularizedEvolution) and evolution.seed == 8
    assert evolution.fidelity_input  # (each trial at its highest rung: `fit_on: all_rungs`)
    bohb = make_strategy(SMALL, StrategyConfig(name="evolution", fit_on="top_rung"))
    assert not bohb.fidelity_input
