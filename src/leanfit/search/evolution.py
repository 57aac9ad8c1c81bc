"""Regularised evolution: tournament selection, one-parameter mutation, the oldest retired.

Real et al. 2019, "Regularized Evolution for Image Classifier Architecture Search" (AAAI;
arXiv:1802.01548), the "aging evolution" that found AmoebaNet.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from leanfit.search.strategy import Feasible, Strategy, check_ask
from leanfit.space.spec import Param, SearchSpace

# Mutations of one tournament winner tried before a fresh tournament, and tournaments tried before
# falling back to a random configuration (in a small, mostly explored space).
MUTATION_TRIES = 10
TOURNAMENT_TRIES = 10
# Step of a numeric mutation, as a fraction of the parameter's (log) range.
NUMERIC_STEP = 0.2


class RegularizedEvolution(Strategy):
    """Aging evolution over a conditional space.

    The population holds the last P configurations told (P = `population_size`), in the order they
    were told. Each proposal samples S members uniformly (S = `sample_size`), takes the best of
    them (the lowest value) as parent, and returns a copy with one parameter mutated. When a new
    result joins the population, the oldest member is retired, whatever its value: this is the
    regularisation of the paper, which favours configurations that stay good when retrained over
    ones that were lucky once. Until the population is full, proposals are random samples.

    A mutation changes exactly one active parameter. A categorical parameter takes another of its
    choices; a number moves by a Gaussian step of 0.2 of its (log) range, reflected into its bounds
    (the paper's operations are all categorical; the step makes learning rates and the like
    refinable). Conditional parameters follow their parent: when the mutated parameter changes
    which of its children are active, the children that become active are sampled and those
    that become inactive are dropped; nothing else changes.

    A configuration told a non-finite value (failed, or over a hard constraint) does not join
    the population, and a member whose value is withdrawn (`mark_seen`) leaves it (told again,
    it joins again, as the youngest). Telling a member again updates its value without changing
    its age. With `feasible`, a child that does not satisfy it is mutated again.

    Under a multi-fidelity scheduler (`every_rung`, the default) each trial is told its latest
    result, at the highest rung it reached, so a promoted trial competes with what more epochs
    made of it. Fitted on the highest rung with enough results instead (BOHB's rule, the
    controller's without `every_rung`), every trial stopped lower left the population whenever
    that rung moved up, and about half the proposals of a 300-trial ASHA search were random
    samples refilling it.

    Args:
        space: the search space.
        seed: seeds every random choice.
        population_size: P, the number of configurations kept.
        sample_size: S, the tournament size; larger is greedier.
        feasible: a predicate every proposal must satisfy (e.g. parameters <= max_params).
        every_rung: be told every trial's latest result (see above), not only those at the
            rung the controller fits on.

    Example:
        >>> from leanfit.space.spec import Param, SearchSpace
        >>> w, d = Param("w", "integer", low=1, high=64), Param("d", "integer", low=1, high=8)
        >>> space = SearchSpace([w, d])
        >>> evo = RegularizedEvolution(space, seed=0, population_size=4, sample_size=2)
        >>> for c in evo.ask(4):
        ...     evo.tell(c, c["w"] + c["d"])
        >>> parent = min(evo.population_configs(), key=lambda c: c["w"] + c["d"])
        >>> child = evo.mutate(parent)
        >>> sum(child[k] != parent[k] for k in parent)
        1
    """

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        population_size: int = 20,
        sample_size: int = 5,
        feasible: Feasible | None = None,
        every_rung: bool = True,
    ) -> None:
        if not isinstance(population_size, int) or population_size < 2:
            raise ValueError(
                f"The value of `population_size` is {population_size}, "
                "but must be `population_size >= 2`"
            )
        if not isinstance(sample_size, int) or not 1 <= sample_size <= population_size:
            raise ValueError(
                f"The value of `sample_size` is {sample_size}, "
                f"but must be `1 <= sample_size <= population_size` ({population_size})"
            )
        if not space.dimensions:
            raise ValueError("the space has no parameter to mutate; every parameter is constant")
        super().__init__(space, seed, feasible)
        self.population_size = population_size
        self.sample_size = sample_size
        self.population: deque[tuple] = deque()
        self._joined: set[tuple] = set()
        # (the controller's name for "each trial at its highest rung")
        self.fidelity_input = every_rung

    def tell(self, config: Mapping[str, Any], value: float, fidelity: float = 1.0) -> None:
        super().tell(config, value, fidelity)
        key = self.identify(config)[1]
        if key in self._joined or not math.isfinite(float(value)):
            return
        self._joined.add(key)
        self.population.append(key)
        if len(self.population) > self.population_size:
            self.population.popleft()

    def withdraw(self, key: tuple) -> None:
        super().withdraw(key)
        self._joined.discard(key)  # (told again, it joins again)
        if key in self.population:
            self.population.remove(key)

    def population_configs(self) -> list[dict[str, Any]]:
        """The members of the population, oldest first."""
        return [self.observations[key].config for key in self.population]

    def ask(self, n: int = 1) -> list[dict[str, Any]]:
        check_ask(n)
        return [self._propose() for _ in range(n)]

    def _propose(self) -> dict[str, Any]:
        if len(self.population) < self.population_size:
            return self.sample_new()
        for _ in range(TOURNAMENT_TRIES):
            contenders = self.rng.sample(list(self.population), self.sample_size)
            parent = min(
                (self.observations[key] for key in contenders), key=lambda o: (o.value, o.order)
            )
            for _ in range(MUTATION_TRIES):
                child = self.mutate(parent.config)
                if self.is_feasible(child) and self.claim(child):
                    return child
        return self.sample_new()

    def mutate(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `config` with one active parameter changed (see `mutate`)."""
        return mutate(self.space, config, self.rng)


def mutate(
    space: SearchSpace, config: Mapping[str, Any], rng, validated: bool = False
) -> dict[str, Any]:
    """A copy of `config` with one active parameter changed, and its conditional children
    sampled or dropped as the change makes them active or inactive. `validated`: `config` is
    already `space.validate`d (a caller mutating one parent many times checks it once)."""
    if not validated:
        config = space.validate(config)
    candidates = [p for p in space.dimensions if p.name in config]
    mutated = rng.choice(candidates)

    def value(p: Param) -> Any:
        if p.name == mutated.name:
            return _mutated_value(p, config[p.name], rng)
        return config.get(p.name, _SAMPLE)

    return _assemble(space, value, rng)


def crossover(
    space: SearchSpace,
    first: Mapping[str, Any],
    second: Mapping[str, Any],
    from_second: Callable[[str], bool],
    rng,
) -> dict[str, Any]:
    """A child of two validated configurations: the parameters `from_second` names (e.g. the
    training hyper-parameters) from `second`, the others (e.g. the architecture) from `first`.
    A conditional parameter that its chosen parent lacks is taken from the other parent when
    that one has it, and sampled otherwise; one the child's values make inactive is dropped."""

    def value(p: Param) -> Any:
        chosen, other = (second, first) if from_second(p.name) else (first, second)
        return chosen[p.name] if p.name in chosen else other.get(p.name, _SAMPLE)

    return _assemble(space, value, rng)


# `_assemble`'s marker for a parameter with no value to take: it is sampled
_SAMPLE = object()


def _assemble(space: SearchSpace, value: Callable[[Param], Any], rng) -> dict[str, Any]:
    """A configuration built down the conditional tree: each parameter the values so far make
    active gets `value(p)`, or a sample where that is `_SAMPLE`; the space's constants last."""
    child: dict[str, Any] = {}
    for p in space.params:
        if space.is_active(p, child):
            v = value(p)
            child[p.name] = p.sample(rng) if v is _SAMPLE else v
    child.update(space.fixed)
    return child


def _mutated_value(p: Param, value: Any, rng) -> Any:
    if p.kind == "categorical":
        others = [c for c in p.choices if not _equal(c, value)]
        return rng.choice(others)
    to_unit, from_unit = _unit_scale(p)
    for _ in range(100):
        u = _reflect(to_unit(value) + rng.gauss(0.0, NUMERIC_STEP))
        new = min(p.high, max(p.low, from_unit(u)))  # exp(log(x)) may overshoot by an ulp
        if p.kind == "integer":
            new = int(round(new))
        if not _equal(new, value):
            return new
    # An integer range of two values, or a step that keeps rounding back: take the neighbour.
    if p.kind == "integer":
        return int(value) + 1 if value < p.high else int(value) - 1
    return p.sample(rng)


def _unit_scale(p: Param):
    """Maps from the parameter's (log) range to [0, 1] and back."""
    if p.log:
        lo, hi = math.log(p.low), math.log(p.high)
        return (lambda v: (math.log(v) - lo) / (hi - lo)), (lambda u: math.exp(lo + u * (hi - lo)))
    lo, hi = float(p.low), float(p.high)
    return (lambda v: (v - lo) / (hi - lo)), (lambda u: lo + u * (hi - lo))


def _reflect(u: float) -> float:
    u = abs(u) % 2.0
    return 2.0 - u if u > 1.0 else u


def _equal(a: Any, b: Any) -> bool:
    # Booleans are not numbers here: a mutation from True must not land on 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b
