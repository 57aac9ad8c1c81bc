"""The ask/tell interface every search strategy implements, and the bookkeeping they share.

A strategy proposes configurations of a `SearchSpace` (`ask`) and learns from their results
(`tell`), as scikit-optimize's `Optimizer` does. The value told is one scalar to MINIMISE: the
controller turns metrics into it (e.g. `leanfit.search.scalarize`). A non-finite value (inf, NaN)
means the configuration failed or violates a hard constraint; every strategy ranks it below every
finite value. A configuration is never proposed twice: not while it is pending (asked, not told
yet), not after it was told, whatever the caller told it, nor once marked as seen.

A hard constraint that can be checked before training (`max_params`: the parameter count follows
from the genotype) can also be given to a strategy as `feasible`, a predicate on configurations:
then it proposes only configurations that satisfy it, and no trial or proposal is spent on the
others.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from leanfit.errors import LeanfitError
from leanfit.space.spec import SearchSpace

# Random draws tried for one new configuration before the space counts as exhausted.
MAX_DRAWS = 1000
# Under a tight hard budget (fewer than one random draw in REPAIR_AFTER fits it), an infeasible
# draw is shrunk into it (`shrink_into`), at most REPAIRS times for one new configuration.
REPAIR_AFTER = 50
REPAIRS = 50

Feasible = Callable[[dict[str, Any]], bool]


class SpaceExhausted(LeanfitError):
    """Every configuration of the search space (or nearly) has been proposed already; or, with
    `infeasible`, none of the draws satisfies the hard constraints."""

    def __init__(self, message: str, infeasible: bool = False) -> None:
        super().__init__(message)
        self.infeasible = infeasible


@dataclass
class Observation:
    """A told configuration, its key in the space, its latest value, when it was first told
    (0 = the first configuration told), and the fidelity the value was measured at (1 = the full
    budget; a multi-fidelity surrogate takes it as an input, the others ignore it)."""

    config: dict[str, Any]
    key: tuple
    value: float
    order: int
    fidelity: float = 1.0


class Strategy(ABC):
    """Propose configurations of `space` and learn from their values (lower is better).

    `ask(n)` returns n new configurations at once (one per free worker); `tell(config, value)`
    records a result. Telling a configuration again replaces its value (e.g. when its trial
    reaches a higher rung, or when the controller re-scalarises every result with new weights);
    telling one that was never asked (a warm start, a search being restored) is allowed. Every
    asked configuration should be told eventually, with a non-finite value if its trial failed;
    until then it counts as pending. With `feasible`, every proposal satisfies it.
    """

    def __init__(self, space: SearchSpace, seed: int = 0, feasible: Feasible | None = None) -> None:
        if feasible is not None and not callable(feasible):
            raise ValueError(
                f"The value of `feasible` is {feasible!r}, but must be a function of a "
                "configuration that returns True when it satisfies the constraints, or None"
            )
        self.space = space
        self.seed = seed
        self.feasible = feasible
        self.rng = random.Random(seed)
        self.observations: dict[tuple, Observation] = {}
        self.pending: dict[tuple, dict[str, Any]] = {}
        # Known to the search but without a value to learn from: never proposed, never fitted.
        self.seen: dict[tuple, dict[str, Any]] = {}
        self._tells = 0
        self._identities: dict[tuple, tuple[dict[str, Any], tuple]] = {}

    @abstractmethod
    def ask(self, n: int = 1) -> list[dict[str, Any]]:
        """`n` configurations never proposed nor told before, valid in the space."""

    def tell(self, config: Mapping[str, Any], value: float, fidelity: float = 1.0) -> None:
        """Record the value (to minimise) of a configuration, measured at `fidelity` (in (0, 1],
        1 = the full budget); non-finite means failed."""
        config, key = self.identify(config)
        self.pending.pop(key, None)
        self.seen.pop(key, None)
        known = self.observations.get(key)
        if known is not None:
            known.value = float(value)
            known.fidelity = float(fidelity)
            return
        self.observations[key] = Observation(config, key, float(value), self._tells, fidelity)
        self._tells += 1

    def tell_many(self, configs: Iterable[Mapping[str, Any]], values: Iterable[float]) -> None:
        """`tell` each configuration its value, in order."""
        configs, values = list(configs), list(values)
        if len(configs) != len(values):
            raise ValueError(f"{len(configs)} configurations but {len(values)} values")
        for config, value in zip(configs, values, strict=True):
            self.tell(config, value)

    def mark_seen(self, config: Mapping[str, Any]) -> None:
        """Record a configuration without a value to learn from (e.g. a trial stopped below the
        rung the strategy is fitted on): it is never proposed again, and a value it had is
        withdrawn."""
        config, key = self.identify(config)
        self.pending.pop(key, None)
        if key in self.observations:
            self.withdraw(key)
        self.seen[key] = config

    def revalue(
        self,
        values: Mapping[tuple, float | None],
        configs: Mapping[tuple, Mapping[str, Any]],
        fidelities: Mapping[tuple, float] | None = None,
    ) -> None:
        """Set many values at once, by key (`space.key`); `configs` gives each key's configuration
        and `fidelities` the fidelity of its value (1 where it is left out).

        A number is told as by `tell`; None marks the configuration as seen (`mark_seen`).
        Configurations left out keep their state (a pending one stays pending). The controller
        calls this before each proposal with every result re-scalarised under new weights.
        """
        fidelities = fidelities or {}
        for key, value in values.items():
            if value is None:
                self.mark_seen(configs[key])
            else:
                self.tell(configs[key], value, fidelities.get(key, 1.0))

    # -- shared by the strategies --------------------------------------------------------------

    def withdraw(self, key: tuple) -> None:
        """Forget the value told for a key (the configuration stays known through `seen`)."""
        del self.observations[key]

    def identify(self, config: Mapping[str, Any]) -> tuple[dict[str, Any], tuple]:
        """The canonical form of a configuration and its key in the space (validated once).

        Re-telling every result with new weights before each proposal (ParEGO) tells the same
        configurations over and over: remembering them keeps that loop cheap.
        """
        try:
            # The type is part of the identity: True == 1, but they are not the same value here.
            raw = tuple(sorted((k, type(v).__name__, v) for k, v in config.items()))
            known = self._identities.get(raw)
        except TypeError:  # an unhashable value: nothing to remember it by
            raw, known = None, None
        if known is None:
            canonical = self.space.canonicalize(config)
            known = (canonical, self.space.key(canonical))
            if raw is not None:
                self._identities[raw] = known
        return dict(known[0]), known[1]

    def claim(self, config: Mapping[str, Any]) -> bool:
        """Mark a configuration as pending; False (and nothing marked) if it is not new."""
        key = self.space.key(config)
        if self.known(key):
            return False
        self.pending[key] = dict(config)
        return True

    def known(self, key: tuple) -> bool:
        """Whether a key is pending, told or seen: not to be proposed again."""
        return key in self.pending or key in self.observations or key in self.seen

    def is_feasible(self, config: Mapping[str, Any]) -> bool:
        return self.feasible is None or bool(self.feasible(dict(config)))

    def sample_new(self) -> dict[str, Any]:
        """A random configuration that is new and feasible, claimed as pending. Where almost no
        random draw is feasible (a `max_params` near the space's smallest models) and `feasible`
        says how far over a configuration is (`excess`), draws are shrunk into the budget."""
        infeasible = repaired = shrunk_any = 0
        excess = getattr(self.feasible, "excess", None)
        for _ in range(MAX_DRAWS):
            config = self.space.sample(self.rng)
            if not self.is_feasible(config):
                infeasible += 1
                if excess is None or infeasible < REPAIR_AFTER or repaired >= REPAIRS:
                    continue
                repaired += 1
                shrunk = shrink_into(self.space, config, excess, self.rng)
                shrunk_any += shrunk is not None
                if shrunk is None or not self.claim(shrunk):
                    continue
                return shrunk
            if self.claim(config):
                return config
        if infeasible == MAX_DRAWS and not shrunk_any:  # (none fits, not even made smaller)
            raise SpaceExhausted(
                f"none of {MAX_DRAWS} random configurations satisfies the constraints "
                "(e.g. objectives.max_params); loosen them or make the space's models smaller",
                infeasible=True,
            )
        known = len(self.observations) + len(self.pending) + len(self.seen)
        raise SpaceExhausted(
            f"no new configuration in {MAX_DRAWS} random draws after {known} "
            "configurations: the search space is "
            "(nearly) exhausted; widen it or lower budget.trials"
        )

    def ranked(self) -> list[Observation]:
        """Told observations, best first; non-finite values last, ties to the earlier told."""
        return sorted(self.observations.values(), key=lambda o: (_rank_value(o.value), o.order))


# One-parameter mutations tried at each step of `shrink_into`, and its steps at most.
SHRINK_MUTANTS = 8
SHRINK_STEPS = 200


def shrink_into(
    space: SearchSpace, config: Mapping[str, Any], excess: Callable[[dict[str, Any]], float], rng
) -> dict[str, Any] | None:
    """`config` brought under a hard budget by one-parameter mutations (`evolution.mutate`, so
    conditional parameters stay consistent): at each step the mutant of the least `excess` (how
    far over the budget: above 0 is over) of a few, where it is less than now. The parameters the
    budget does not care about keep their random values. None where no step gets under it."""
    from leanfit.search.evolution import mutate

    current = space.validate(config)
    over = excess(current)
    for _ in range(SHRINK_STEPS):
        if over <= 0:
            return current
        mutants = [mutate(space, current, rng, validated=True) for _ in range(SHRINK_MUTANTS)]
        scored = [excess(m) for m in mutants]
        best = min(range(len(mutants)), key=scored.__getitem__)
        if scored[best] < over:
            current, over = mutants[best], scored[best]
    return current if over <= 0 else None


def _rank_value(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def check_ask(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"The value of `n` is {n!r}, but must be an integer `n >= 1`")
