"""A conditional search space and its flat encoding for scikit-optimize.

A parameter is categorical, integer or real (uniform or log) and may exist only when a parent
parameter takes certain values. scikit-optimize knows nothing of conditions, so the tree is
flattened into one `skopt.Space`: an inactive parameter is written at a canonical value (its first
choice, or its lower bound). Two configurations that differ only in inactive parameters are the
same model, and they encode to the same point, so a strategy never proposes one twice.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from leanfit.errors import GenotypeError

Kind = Literal["categorical", "integer", "real"]


@dataclass(frozen=True)
class Param:
    """One dimension of the space; `parent`/`parent_values` make it conditional."""

    name: str
    kind: Kind
    choices: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    parent: str | None = None
    parent_values: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "categorical":
            if not self.choices:
                raise ValueError(f"{self.name}: a categorical parameter needs choices")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"{self.name}: needs low <= high, got {self.low}..{self.high}")
        if self.log and (self.low is None or self.low <= 0):
            raise ValueError(f"{self.name}: a log scale needs low > 0")

    @property
    def constant(self) -> bool:
        """A parameter with one possible value is not a dimension of the search."""
        if self.kind == "categorical":
            return len(self.choices) == 1
        return self.low == self.high

    @property
    def canonical(self) -> Any:
        """The value an inactive parameter is encoded at."""
        return self.choices[0] if self.kind == "categorical" else self.low

    def sample(self, rng: random.Random) -> Any:
        if self.kind == "categorical":
            return rng.choice(self.choices)
        if self.kind == "integer":
            if self.log:
                return int(round(math.exp(rng.uniform(math.log(self.low), math.log(self.high)))))
            return rng.randint(int(self.low), int(self.high))
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return any(_same(value, c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "integer" and int(value) != value:
            return False
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"one of {list(self.choices)}"
        return (
            f"a{'n integer' if self.kind == 'integer' else ' number'} in [{self.low}, {self.high}]"
        )


def _number(text: str) -> Any:
    """The number `text` spells, else `text`."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; a categorical of booleans must not accept 1, nor one of ints accept True.
    return (
        type(a) is type(b)
        and a == b
        or (
            isinstance(a, (int, float))
            and isinstance(b, (int, float))
            and not isinstance(a, bool)
            and not isinstance(b, bool)
            and a == b
        )
    )


@dataclass
class SearchSpace:
    """Parameters in an order where every parent comes before its children, plus fixed values."""

    params: list[Param]
    fixed: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: dict[str, Param] = {}
        for p in self.params:
            if p.name in seen or p.name in self.fixed:
                raise ValueError(f"parameter {p.name!r} is defined twice")
            if p.parent is not None and p.parent not in seen:
                raise ValueError(f"{p.name}: parent {p.parent!r} must be defined before it")
            seen[p.name] = p
        self._by_name = seen

    def __getitem__(self, name: str) -> Param:
        return self._by_name[name]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def dimensions(self) -> list[Param]:
        """The parameters that the flat encoding searches over (constants are left out)."""
        return [p for p in self.params if not p.constant]

    def is_active(self, param: Param, values: Mapping[str, Any]) -> bool:
        if param.parent is None:
            return True
        parent = self._by_name[param.parent]
        if not self.is_active(parent, values) or param.parent not in values:
            return False
        return any(_same(values[param.parent], v) for v in param.parent_values)

    def _active_in_order(self, param: Param, built: Mapping[str, Any]) -> bool:
        """`is_active` for a configuration built in the space's order from active parameters
        only: the parent was decided already, so no walk up the tree (decode runs this for
        every acquisition sample of every proposal)."""
        if param.parent is None:
            return True
        if param.parent not in built:
            return False
        value = built[param.parent]
        return any(_same(value, v) for v in param.parent_values)

    def sample(self, rng: random.Random | int) -> dict[str, Any]:
        """A random valid configuration: active parameters only, plus the fixed values."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        config: dict[str, Any] = {}
        for p in self.params:
            if self._active_in_order(p, config):
                config[p.name] = p.sample(rng)
        config.update(self.fixed)
        return config

    def validate(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Check a configuration against the space; return it with only its active parameters.

        Values for inactive parameters are dropped (they do not change the model); a missing
        active parameter, an unknown name or an out-of-range value is an error.
        """
        known = set(self._by_name) | set(self.fixed)
        unknown = sorted(set(config) - known)
        if unknown:
            raise GenotypeError(f"unknown parameter(s) {unknown}; the space has {sorted(known)}")
        clean: dict[str, Any] = {}
        for p in self.params:
            if not self._active_in_order(p, clean):
                continue
            if p.name not in config:
                if p.constant:
                    clean[p.name] = p.canonical
                    continue
                raise GenotypeError(f"{p.name}: missing; it must be {p.describe()}")
            value = config[p.name]
            if not p.contains(value):
                quoted = (  # '16' for 16: written in quotes, it is text, which no number is
                    "; it is written in quotes: write it without them"
                    if isinstance(value, str) and p.contains(_number(value))
                    else ""
                )
                raise GenotypeError(f"{p.name}: {value!r} is not {p.describe()}{quoted}")
            clean[p.name] = int(value) if p.kind == "integer" else value
        for name, value in self.fixed.items():
            if name in config and config[name] != value:
                raise GenotypeError(
                    f"{name}: fixed at {value!r} in this space, got {config[name]!r}"
                )
            clean[name] = value
        return clean

    # -- the flat encoding -------------------------------------------------------------------

    def to_skopt(self):
        """One flat `skopt.space.Space` with a dimension per non-constant parameter."""
        from skopt.space import Categorical, Integer, Real, Space

        dims = []
        for p in self.dimensions:
            if p.kind == "categorical":
                dims.append(Categorical(list(p.choices), name=p.name))
            elif p.kind == "integer":
                prior = "log-uniform" if p.log else "uniform"
                dims.append(Integer(int(p.low), int(p.high), prior=prior, name=p.name))
            else:
                prior = "log-uniform" if p.log else "uniform"
                dims.append(Real(float(p.low), float(p.high), prior=prior, name=p.name))
        return Space(dims)

    def encode(self, config: Mapping[str, Any]) -> list[Any]:
        """The flat point of a configuration; inactive parameters at their canonical value."""
        config = self.validate(config)
        return [config.get(p.name, p.canonical) for p in self.dimensions]

    def decode(self, point: Sequence[Any]) -> dict[str, Any]:
        """The configuration of a flat point: active parameters only, plus the fixed values."""
        dims = self.dimensions
        if len(point) != len(dims):
            raise ValueError(f"point has {len(point)} values, the space {len(dims)} dimensions")
        raw = {p.name: _plain(v) for p, v in zip(dims, point, strict=True)}
        config: dict[str, Any] = {}
        for p in self.params:
            if self._active_in_order(p, config):
                config[p.name] = p.canonical if p.constant else raw[p.name]
        config.update(self.fixed)
        return config

    def canonicalize(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The one representative of a configuration's equivalence class."""
        return self.decode(self.encode(config))

    def key(self, config: Mapping[str, Any]) -> tuple:
        """A hashable identity: equal effective configurations have equal keys."""
        return self.point_key(self.encode(config))

    def point(self, config: Mapping[str, Any]) -> list[Any]:
        """`encode` for a configuration the space built itself (`sample`, `decode`, a mutation
        that keeps only active parameters), without validating it again: a strategy encodes
        hundreds of its own candidates per proposal."""
        return [config.get(p.name, p.canonical) for p in self.dimensions]

    @staticmethod
    def point_key(point: Sequence[Any]) -> tuple:
        """`key` of an encoded point."""
        return tuple(_round(v) for v in point)


def _plain(value: Any) -> Any:
    """numpy scalars from skopt back to Python values."""
    return value.item() if hasattr(value, "item") else value


def _round(value: Any) -> Any:
    return round(value, 12) if isinstance(value, float) else value
