"""ASHA: asynchronous successive halving, the scheduler that decides each trial's budget.

Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning" (MLSys; arXiv:1810.05934).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from leanfit.search.pareto import nsga2_order

# What a rung ranks: a scalar, or a vector of objectives, all minimised.
Value = float | tuple[float, ...]


@dataclass(frozen=True)
class Rung:
    """One budget of the ladder: train to `epochs` on `data_fraction` of the training images at
    `resolution` pixels (None: the dataset's own image size)."""

    index: int
    epochs: int
    data_fraction: float = 1.0
    resolution: int | None = None


@dataclass(frozen=True)
class Job:
    """Work for a free worker: train trial `trial_id` up to `rung`.

    A new trial has `from_rung` None and starts from scratch; a promotion has the rung it was
    recorded at, and the worker resumes from that rung's checkpoint (`from_epochs` epochs done)
    instead of starting again. `bracket` is the ASHA bracket the trial belongs to (its minimum
    early-stopping rate; always 0 without Hyperband): keep it with the trial to restore a search.
    """

    trial_id: int
    rung: Rung
    from_rung: Rung | None = None
    bracket: int = 0

    @property
    def from_epochs(self) -> int:
        return 0 if self.from_rung is None else self.from_rung.epochs

    @property
    def to_epochs(self) -> int:
        return self.rung.epochs

    @property
    def is_promotion(self) -> bool:
        return self.from_rung is not None


def make_rungs(
    min_epochs: int,
    max_epochs: int,
    eta: int = 3,
    *,
    min_data_fraction: float = 1.0,
    min_resolution: int | None = None,
    full_resolution: int | None = None,
) -> tuple[Rung, ...]:
    """The rung ladder r·η^k (r = `min_epochs`) below `max_epochs`, then `max_epochs` itself.

    The last rung is always `max_epochs`, even when it is not r·η^k: with r=1, η=3 and 10 epochs
    the rungs are 1, 3, 9 and 10. The optional fidelities grow geometrically with the epochs, from
    `min_data_fraction` and `min_resolution` at the first rung to the full data and
    `full_resolution` at the last: a rung at t = log(e/r) / log(max_epochs/r) of the way up gets
    `min_data_fraction`^(1-t) of the data and `min_resolution`^(1-t)·`full_resolution`^t pixels.
    """
    _check_ladder(min_epochs, max_epochs, eta, min_data_fraction, min_resolution, full_resolution)
    epochs = []
    e = min_epochs
    while e < max_epochs:
        epochs.append(e)
        e *= eta
    epochs.append(max_epochs)
    span = math.log(max_epochs / min_epochs)
    rungs = []
    for k, e in enumerate(epochs):
        t = math.log(e / min_epochs) / span if span > 0 else 1.0
        last = k == len(epochs) - 1
        fraction = 1.0 if last else min_data_fraction ** (1.0 - t)
        resolution = None
        if min_resolution is not None and full_resolution is not None:
            resolution = full_resolution
            if not last:
                resolution = round(min_resolution ** (1.0 - t) * full_resolution**t)
        rungs.append(Rung(k, e, fraction, resolution))
    return tuple(rungs)


def _check_ladder(min_epochs, max_epochs, eta, min_data_fraction, min_resolution, full_resolution):
    if not isinstance(min_epochs, int) or min_epochs < 1:
        raise ValueError(
            f"The value of `min_epochs` is {min_epochs}, but must be `min_epochs >= 1`"
        )
    if not isinstance(max_epochs, int) or max_epochs < min_epochs:
        raise ValueError(
            f"The value of `max_epochs` is {max_epochs}, "
            f"but must be `max_epochs >= min_epochs` ({min_epochs})"
        )
    if not isinstance(eta, int) or eta < 2:
        raise ValueError(f"The value of `eta` is {eta}, but must be an integer `eta >= 2`")
    if not 0 < min_data_fraction <= 1:
        raise ValueError(
            f"The value of `min_data_fraction` is {min_data_fraction}, "
            "but must be `0 < min_data_fraction <= 1`"
        )
    if min_resolution is not None:
        if full_resolution is None:
            raise ValueError(
                "`min_resolution` is set but `full_resolution` is not; "
                "give the dataset's image size as `full_resolution`"
            )
        if not 1 <= min_resolution <= full_resolution:
            raise ValueError(
                f"The value of `min_resolution` is {min_resolution}, "
                f"but must be `1 <= min_resolution <= full_resolution` ({full_resolution})"
            )


class ASHA:
    """Asynchronous successive halving (ASHA).

    The budget grows along a ladder of rungs r·η^k up to R (see `make_rungs`; r = `min_epochs`,
    R = `max_epochs`, η = `eta`). Whenever a worker frees up, `next_job` looks for a promotion,
    from the highest rung down: a trial recorded at rung k is promoted to rung k+1 when it is among
    the best ⌊n_k/η⌋ of the n_k results recorded at rung k so far and has not been promoted yet.
    If no trial qualifies, the worker starts a new configuration at the bottom rung. No rung ever
    waits for a full cohort, so workers are never idle (Algorithm 2 of the paper), and about one
    trial in η moves up each rung. A promotion carries the rung to resume from, so a trial trains
    only the epochs between two rungs.

    `min_early_stopping_rate` is the paper's s: new trials start at rung s of the ladder instead
    of 0. Hyperband runs one ASHA per s (see `leanfit.search.hyperband`).

    Results are recorded with `record(trial_id, rung_index, value)`, where `value` is a scalar to
    MINIMISE, compared only with the other values recorded at the same rung, or a vector of
    objectives, all minimised. Vectors are ranked as NSGA-II selects (MO-ASHA; Schmucker et al.
    2021, "Multi-objective Asynchronous Successive Halving", arXiv:2106.12639): by non-dominated
    front, then by crowding distance (`pareto.nsga2_order`), so the top 1/η spread along the
    rung's front. A scalar must be comparable over the whole search: validation error, or a
    scalarisation with fixed weights and fixed bounds — not the random per-proposal weights that
    ParEGO uses to ask. A failed result (`value` None, or any NaN or inf in it) counts among the
    rung's results, ranked below every successful one, and is never promoted.

    Args:
        min_epochs: r, the epochs of the first rung.
        max_epochs: R, the epochs of the last rung; a trial there is complete.
        eta: η, the reduction factor: 1/η of each rung's results are promoted.
        min_data_fraction: fraction of the training data at the first rung (1: no data fidelity).
        min_resolution: image size at the first rung (None: no resolution fidelity).
        full_resolution: the dataset's image size, needed with `min_resolution`.
        min_early_stopping_rate: s, the rung of the ladder where new trials start.

    Example:
        >>> asha = ASHA(min_epochs=1, max_epochs=9, eta=3)
        >>> [r.epochs for r in asha.rungs]
        [1, 3, 9]
        >>> jobs = [asha.next_job() for _ in range(3)]
        >>> for job, error in zip(jobs, [0.5, 0.2, 0.4]):
        ...     asha.record(job.trial_id, job.rung.index, error)
        >>> job = asha.next_job()
        >>> job.trial_id, job.from_epochs, job.to_epochs
        (1, 1, 3)
    """

    def __init__(
        self,
        min_epochs: int,
        max_epochs: int,
        eta: int = 3,
        *,
        min_data_fraction: float = 1.0,
        min_resolution: int | None = None,
        full_resolution: int | None = None,
        min_early_stopping_rate: int = 0,
    ) -> None:
        ladder = make_rungs(
            min_epochs,
            max_epochs,
            eta,
            min_data_fraction=min_data_fraction,
            min_resolution=min_resolution,
            full_resolution=full_resolution,
        )
        if not isinstance(min_early_stopping_rate, int) or not (
            0 <= min_early_stopping_rate < len(ladder)
        ):
            raise ValueError(
                f"The value of `min_early_stopping_rate` is {min_early_stopping_rate}, "
                f"but must be `0 <= min_early_stopping_rate < {len(ladder)}` "
                f"(the number of rungs from {min_epochs} to {max_epochs} epochs)"
            )
        self.eta = eta
        self.bracket = min_early_stopping_rate
        self.ladder = ladder
        self.rungs: tuple[Rung, ...] = ladder[min_early_stopping_rate:]
        # Per rung of this bracket: trial id -> (value, failed, arrival order).
        self._results: list[dict[int, tuple[Value, bool, int]]] = [{} for _ in self.rungs]
        self._order: list[list[int] | None] = [None for _ in self.rungs]  # _ranked, kept
        self._promoted: list[set[int]] = [set() for _ in self.rungs]
        self._trials: set[int] = set()
        self._arrivals = 0
        self._next_id = 0

    # -- jobs ----------------------------------------------------------------------------------

    def next_job(self, allow_new: bool = True, finishing: bool = False) -> Job | None:
        """The next job for a free worker: a promotion if one is due, else a new trial at the
        bottom rung; None when no promotion is due and `allow_new` is False (the trial budget is
        spent, or the search is winding down). `finishing`: no new trial will start again, so
        promotions round the top 1/η of a rung up (see `promotion`)."""
        job = self.promotion(finishing)
        if job is not None or not allow_new:
            return job
        return self.start_trial()

    def promotion(self, finishing: bool = False) -> Job | None:
        """Promote the best unpromoted trial in the top 1/η of the highest rung that has one.

        While new trials come, the top 1/η of n results is the best floor(n/η): a rung of fewer
        than η waits for more. `finishing` (no more will come: the trial budget is spent, or a
        small space searched whole) rounds it up, as synchronous successive halving does, so
        the best of every rung goes on to the top: 6 trials in rungs of 1, 3 and 9 epochs give
        2 at 3 epochs and 1 at 9, not 2 and none."""
        for k in range(len(self.rungs) - 2, -1, -1):
            ranked = self._ranked(k)
            top = -(-len(ranked) // self.eta) if finishing else len(ranked) // self.eta
            for trial_id in ranked[:top]:
                value, failed, _ = self._results[k][trial_id]
                if failed:
                    break
                if trial_id not in self._promoted[k]:
                    self._promoted[k].add(trial_id)
                    return Job(trial_id, self.rungs[k + 1], self.rungs[k], self.bracket)
        return None

    def start_trial(self, trial_id: int | None = None) -> Job:
        """A new trial at the bottom rung; its id is the next free one unless given."""
        if trial_id is None:
            trial_id = self._next_id
        elif trial_id in self._trials:
            raise ValueError(f"trial {trial_id} has already started")
        self._trials.add(trial_id)
        self._next_id = max(self._next_id, trial_id + 1)
        return Job(trial_id, self.rungs[0], None, self.bracket)

    # -- results -------------------------------------------------------------------------------

    def record(
        self, trial_id: int, rung_index: int, value: Value | None, bracket: int | None = None
    ) -> None:
        """Record a trial's result at a rung of the ladder (`Rung.index`); lower is better.

        `value` None, NaN or inf records a failure. A trial that is unknown (a search being
        restored) is added, and a result at a rung above the bottom one marks the trial as
        promoted from the rung below, so that it is not promoted twice.
        """
        if bracket is not None and bracket != self.bracket:
            raise ValueError(
                f"trial {trial_id} is in bracket {bracket}, this ASHA is {self.bracket}"
            )
        k = rung_index - self.bracket
        if not 0 <= k < len(self.rungs):
            raise ValueError(
                f"rung {rung_index} is not a rung of this bracket "
                f"({self.rungs[0].index} to {self.rungs[-1].index})"
            )
        if trial_id in self._results[k]:
            raise ValueError(f"trial {trial_id} already has a result at rung {rung_index}")
        if value is None:
            failed = True
        elif isinstance(value, (int, float)):
            failed, value = not math.isfinite(value), float(value)
        else:
            value = tuple(float(v) for v in value)
            failed = not all(math.isfinite(v) for v in value)
        # every successful value of a rung is of one kind: one of them tells which
        other = next((v for v, bad, _ in self._results[k].values() if not bad), None)
        mixed = other is not None and isinstance(other, tuple) != isinstance(value, tuple)
        if not failed and mixed:
            raise ValueError(f"rung {rung_index} mixes scalar and vector values")
        self._results[k][trial_id] = (math.inf if failed else value, failed, self._arrivals)
        self._order[k] = None
        self._arrivals += 1
        self._trials.add(trial_id)
        self._next_id = max(self._next_id, trial_id + 1)
        if k > 0:
            self._promoted[k - 1].add(trial_id)

    def mark_started(self, trial_id: int, rung_index: int, bracket: int | None = None) -> None:
        """A search being restored had a job of this trial running at this rung: the trial is
        known (its id is never handed out again) and is not promoted to this rung a second time.
        """
        k = rung_index - self.bracket
        if not 0 <= k < len(self.rungs):
            raise ValueError(f"rung {rung_index} is not a rung of this bracket")
        self._trials.add(trial_id)
        self._next_id = max(self._next_id, trial_id + 1)
        if k > 0:
            self._promoted[k - 1].add(trial_id)

    def hold(self, trial_id: int, rung_index: int, bracket: int | None = None) -> None:
        """Never promote the trial from this rung, where it has its result: it was stopped
        there (its learning curve could not reach the top; `leanfit.train.curve`). Its result
        still counts among the rung's, so it can take one of the top 1/η places without moving
        up: ASHA never promotes more than it would have."""
        k = rung_index - self.bracket
        if trial_id not in (self._results[k] if 0 <= k < len(self.rungs) else {}):
            raise ValueError(f"trial {trial_id} has no result at rung {rung_index} to hold")
        self._promoted[k].add(trial_id)

    def results(self, rung_index: int) -> dict[int, Value | None]:
        """The values recorded at a rung, by trial id, best first; None for a failure."""
        k = rung_index - self.bracket
        return {
            t: None if self._results[k][t][1] else self._results[k][t][0] for t in self._ranked(k)
        }

    def _ranked(self, k: int) -> list[int]:
        """The rung's trials best first (kept until the rung's next result)."""
        if self._order[k] is None:
            self._order[k] = self._rank(self._results[k])
        return self._order[k]

    @staticmethod
    def _rank(results: dict[int, tuple[Value, bool, int]]) -> list[int]:
        # Failures last; ties go to the earlier result, so the order never depends on dict order.
        by_arrival = sorted(results, key=lambda t: results[t][2])
        ok = [t for t in by_arrival if not results[t][1]]
        failed = [t for t in by_arrival if results[t][1]]
        if ok and isinstance(results[ok[0]][0], tuple):
            return [ok[i] for i in nsga2_order([results[t][0] for t in ok])] + failed
        return sorted(ok, key=lambda t: results[t][0]) + failed
