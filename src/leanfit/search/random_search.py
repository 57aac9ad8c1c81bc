"""Random search: seeded independent samples of the space, never the same configuration twice.

Bergstra & Bengio 2012, "Random Search for Hyper-Parameter Optimization" (JMLR): the baseline any
other strategy must beat, and a strong one when few parameters matter.
"""

from __future__ import annotations

from typing import Any

from leanfit.search.strategy import Feasible, Strategy, check_ask
from leanfit.space.spec import SearchSpace


class RandomSearch(Strategy):
    """Sample every configuration from the space's own distribution (conditional parameters only
    when active), drawing again when a sample is not new or not `feasible`; values told are
    recorded only so that told configurations are not proposed.

    Example:
        >>> from leanfit.space.spec import Param, SearchSpace
        >>> space = SearchSpace([Param("width", "categorical", (8, 16, 32))])
        >>> sorted(c["width"] for c in RandomSearch(space, seed=0).ask(3))
        [8, 16, 32]
    """

    def __init__(self, space: SearchSpace, seed: int = 0, feasible: Feasible | None = None) -> None:
        super().__init__(space, seed, feasible)

    def ask(self, n: int = 1) -> list[dict[str, Any]]:
        check_ask(n)
        return [self.sample_new() for _ in range(n)]
