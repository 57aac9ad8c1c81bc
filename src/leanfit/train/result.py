"""A trial's budget and what its training returns: plain data, without torch (a search's
controller and its executors read them; `leanfit.train.trainer` trains)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Budget:
    """How much to train: up to `epochs` (absolute), on a fraction of the data, at a resolution."""

    epochs: int
    schedule_epochs: int | None = None  # the schedule's horizon; defaults to `epochs`
    data_fraction: float = 1.0
    resolution: int | None = None  # None: the dataset's own size

    @property
    def horizon(self) -> int:
        return self.schedule_epochs or self.epochs


@dataclass
class TrainResult:
    # "ok"; "stopped": a normal result, ended early by its learning curve (`reason` says why);
    # or "failed"
    status: str
    history: list[dict[str, float]] = field(default_factory=list)
    params: int = 0
    macs: int = 0
    wall_time: float = 0.0
    train_time: float = 0.0
    epochs: int = 0
    reason: str | None = None
    checkpoint: str | None = None

    @property
    def val_accuracy(self) -> float | None:
        return self.history[-1]["val_accuracy"] if self.history else None
