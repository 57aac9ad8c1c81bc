"""Inline executor: runs each trial in the controller's own process, one at a time.

For cheap objectives (synthetic benchmarks, tests) where a process per worker costs more than the
trial. No isolation: a crash in a trial is a crash of the search.
"""

from __future__ import annotations

from leanfit.execute.base import Executor, JobOutcome, Runner, RunnerSpec, TrialJob


class InlineExecutor(Executor):
    """`runner`: how to build it, or the runner itself (a function of this process's that no
    worker could import)."""

    def __init__(self, runner: RunnerSpec | Runner):
        self._runner = runner.build() if isinstance(runner, RunnerSpec) else runner
        self._queue: list[TrialJob] = []

    def free_slots(self) -> int:
        return 0 if self._queue else 1

    def submit(self, job: TrialJob) -> None:
        self._queue.append(job)

    def running(self) -> list[TrialJob]:
        return list(self._queue)

    def wait(self, timeout: float | None = None) -> list[JobOutcome]:
        outcomes = [JobOutcome(job, self._runner(job.spec), worker="inline") for job in self._queue]
        self._queue.clear()
        return outcomes

    def close(self) -> None:
        self._queue.clear()
