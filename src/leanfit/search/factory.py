"""Build the strategy an experiment file names: `make_strategy(space, experiment.strategy)`."""

from __future__ import annotations

from collections.abc import Callable

from leanfit.config import HYPERPARAMETER_DEFAULTS, StrategyConfig
from leanfit.search.evolution import RegularizedEvolution
from leanfit.search.random_search import RandomSearch
from leanfit.search.skopt_strategy import SkoptStrategy
from leanfit.search.strategy import Feasible, Strategy
from leanfit.space.spec import SearchSpace


def make_strategy(
    space: SearchSpace,
    config: StrategyConfig,
    seed: int | None = None,
    feasible: Feasible | None = None,
    crossover_group: Callable[[str], bool] = HYPERPARAMETER_DEFAULTS.__contains__,
) -> Strategy:
    """The strategy of `config` over `space`, seeded by `seed` (default: `config.seed`), that
    proposes only configurations satisfying `feasible` when it is given. `crossover_group` names
    the parameters a crossover child takes from its second parent (default: leanfit's training
    hyper-parameters; a space of one's own has its own, see `OwnSpace.crossover_group`).

    "skopt" uses `config.surrogate`, `config.acquisition` and `config.initial_points`; "random"
    uses only the seed, "evolution" the seed and `config.fit_on` (it keeps its default population
    and sample sizes).
    """
    seed = config.seed if seed is None else seed
    if config.name == "skopt":
        return SkoptStrategy(
            space,
            seed=seed,
            surrogate=config.surrogate,
            acquisition=config.acquisition,
            initial_points=config.initial_points,
            feasible=feasible,
            fidelity_input=config.fit_on == "all_rungs",
            crossover_samples=config.crossover_samples,
            crossover_group=crossover_group,
        )
    if config.name == "random":
        return RandomSearch(space, seed=seed, feasible=feasible)
    if config.name == "evolution":
        return RegularizedEvolution(
            space, seed=seed, feasible=feasible, every_rung=config.fit_on == "all_rungs"
        )
    raise ValueError(f"unknown strategy {config.name!r}")
