"""The search: strategies that propose, schedulers that budget, objectives, and the Pareto front."""

from leanfit.search.asha import ASHA, Job, Rung, make_rungs
from leanfit.search.evolution import RegularizedEvolution
from leanfit.search.factory import make_strategy
from leanfit.search.hyperband import Hyperband
from leanfit.search.random_search import RandomSearch
from leanfit.search.skopt_strategy import SkoptStrategy
from leanfit.search.strategy import SpaceExhausted, Strategy

__all__ = [
    "ASHA",
    "Hyperband",
    "Job",
    "RandomSearch",
    "RegularizedEvolution",
    "Rung",
    "SkoptStrategy",
    "SpaceExhausted",
    "Strategy",
    "make_rungs",
    "make_strategy",
]
