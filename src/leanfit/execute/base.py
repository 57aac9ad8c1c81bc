"""The executor interface: where trials run is the executor's business, not the controller's.

The controller submits `TrialJob`s while `free_slots()` says there is room and collects
`JobOutcome`s with `wait()`. An outcome is either the trial's own result (trained, or failed on its
own: NaN loss, invalid configuration, timeout) or an infrastructure failure (the worker process
died, the pod was evicted), which the controller retries from the job's last checkpoint.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from leanfit.train.result import TrainResult
from leanfit.train.trial import TrialSpec

# A trial runner: trains (or evaluates) one spec and returns its result.
Runner = Callable[[TrialSpec], TrainResult]


@dataclass(frozen=True)
class RunnerSpec:
    """How a worker builds its runner once: `module:function` called with `kwargs`.

    Picklable, so it can cross into a worker process; the function pays the start-up costs
    (imports, loading data) once per worker and returns the runner.
    """

    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Runner:
        module, _, name = self.factory.partition(":")
        return getattr(importlib.import_module(module), name)(**self.kwargs)


@dataclass
class TrialJob:
    spec: TrialSpec
    rung: int = 0
    attempt: int = 0  # how many times it was retried after infrastructure failures
    resume_lost: bool = False  # the checkpoint its promotion was to go on from was gone


@dataclass
class JobOutcome:
    job: TrialJob
    result: TrainResult
    infrastructure_failure: bool = False
    worker: str = ""


class Executor(ABC):
    @abstractmethod
    def free_slots(self) -> int:
        """How many more jobs can start now."""

    @abstractmethod
    def submit(self, job: TrialJob) -> None:
        """Start a job; only call while `free_slots()` > 0."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> list[JobOutcome]:
        """Outcomes that finished since the last call; waits up to `timeout` for the first."""

    @abstractmethod
    def running(self) -> list[TrialJob]:
        """Jobs started and not yet reported."""

    def not_started(self) -> int:
        """How many of the running jobs have not started yet (a pod waiting for a node or its
        image); 0 where a job starts as it is submitted."""
        return 0

    def attach(self, search_run_id: str) -> int:
        """The search run the jobs are for, once it is open (the executor starts before it).
        Where jobs outlive their controller (Kubernetes Jobs after a `kill -9`), those an earlier
        controller of this search left running are stopped: a resumed search runs them again
        from their checkpoints, and two copies wrote the same one. How many were stopped."""
        return 0

    @abstractmethod
    def close(self) -> None:
        """Stop every worker; running jobs are abandoned (their checkpoints stay)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
