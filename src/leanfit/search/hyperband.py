"""Hyperband: several ASHA brackets, each starting new trials at a different rung.

Li et al. 2018, "Hyperband: A Novel Bandit-Based Approach to Hyperparameter Optimization" (JMLR),
run asynchronously as in Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning".
"""

from __future__ import annotations

import math
from typing import Literal

from leanfit.search.asha import ASHA, Job, Rung, Value, make_rungs


class Hyperband:
    """Asynchronous Hyperband: one ASHA per bracket, brackets differing in where trials start.

    Successive halving bets that a trial's early rungs predict its last one; when they do not (a
    large learning rate that starts fast and ends badly), aggressive early stopping throws good
    configurations away. Hyperband hedges that bet by running s_max + 1 brackets over the same rung
    ladder (see `leanfit.search.asha.make_rungs`), s_max = ⌊log_η(R/r)⌋: bracket s < s_max is an
    ASHA whose new trials start at rung s, so bracket 0 is the most aggressive, and the last
    bracket is plain random search at the full budget (the ladder's last rung). A trial competes
    only with trials of its own bracket. Where R is not r·η^k (r = 1, R = 10, η = 3: rungs 1, 3,
    9 and 10) the ladder's extra last rung starts no bracket of its own: one starting at 9 epochs
    would only promote to 10, a near copy of the full-budget bracket (the paper has 3 brackets
    there, and so has this; before, 4).

    `next_job` first looks for a promotion in any bracket (brackets in order), and otherwise
    starts a new trial in the bracket chosen by `assignment`:

    - "weighted" (the paper's allocation): bracket s receives new trials in proportion to
      n_s = ⌈(s_max + 1)/(h + 1) · η^h⌉, where h = s_max − s is the number of halvings it makes,
      so every bracket spends about the same budget;
    - "round_robin": every bracket receives the same number of new trials.

    Results are recorded with `record` as for ASHA (a scalar to minimise, None, NaN or inf
    for a failure); trial ids are unique across brackets and a job carries its bracket.

    Args:
        min_epochs: r, the epochs of the first rung.
        max_epochs: R, the epochs of the last rung.
        eta: η, the reduction factor of every bracket.
        min_data_fraction: fraction of the training data at the first rung (1: no data fidelity).
        min_resolution: image size at the first rung (None: no resolution fidelity).
        full_resolution: the dataset's image size, needed with `min_resolution`.
        assignment: "weighted" or "round_robin", how new trials are spread over the brackets.

    Example:
        >>> hb = Hyperband(min_epochs=1, max_epochs=9, eta=3)
        >>> [[r.epochs for r in b.rungs] for b in hb.brackets]
        [[1, 3, 9], [3, 9], [9]]
        >>> [hb.next_job().bracket for _ in range(6)]
        [0, 1, 2, 0, 1, 0]
        >>> [[r.epochs for r in b.rungs] for b in Hyperband(1, 10, 3).brackets]
        [[1, 3, 9, 10], [3, 9, 10], [10]]
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
        assignment: Literal["weighted", "round_robin"] = "weighted",
    ) -> None:
        if assignment not in ("weighted", "round_robin"):
            raise ValueError(
                f"The value of `assignment` is {assignment!r}, "
                "but must be 'weighted' or 'round_robin'"
            )
        fidelity = {
            "min_data_fraction": min_data_fraction,
            "min_resolution": min_resolution,
            "full_resolution": full_resolution,
        }
        self.eta = eta
        self.ladder: tuple[Rung, ...] = make_rungs(min_epochs, max_epochs, eta, **fidelity)
        top = len(self.ladder) - 1
        # s_max = ⌊log_η(R/r)⌋: the last rung's index where it is r·η^k, one less where it is an
        # extra rung at R (each bracket's rungs are taken from the ladder, so those end at R)
        s_max = top if self.ladder[top].epochs == min_epochs * eta**top else top - 1
        starts = [*range(s_max), top]  # where each bracket's new trials start
        self.brackets: tuple[ASHA, ...] = tuple(
            ASHA(min_epochs, max_epochs, eta, **fidelity, min_early_stopping_rate=s) for s in starts
        )
        if assignment == "weighted":
            self.weights = tuple(
                math.ceil((s_max + 1) / (s_max - s + 1) * eta ** (s_max - s))
                for s in range(s_max + 1)
            )
        else:
            self.weights = (1,) * (s_max + 1)
        self._started = [0] * len(self.brackets)
        # a bracket is named by the rung its new trials start at (its jobs carry that name), and
        # kept by its place in `brackets`
        self._place = {b.bracket: i for i, b in enumerate(self.brackets)}
        self._bracket_of: dict[int, int] = {}
        self._next_id = 0

    @property
    def rungs(self) -> tuple[Rung, ...]:
        """The whole ladder; bracket s uses its rungs from s up."""
        return self.ladder

    def next_job(self, allow_new: bool = True, finishing: bool = False) -> Job | None:
        """A promotion in any bracket if one is due, else a new trial in the bracket whose share
        of new trials lags most behind its weight; None when nothing is due and `allow_new` is
        False. `finishing`: as `ASHA.promotion`'s."""
        for bracket in self.brackets:
            job = bracket.promotion(finishing)
            if job is not None:
                return job
        if not allow_new:
            return None
        s = min(range(len(self.brackets)), key=lambda b: (self._started[b] / self.weights[b], b))
        trial_id = self._next_id
        self._next_id += 1
        self._started[s] += 1
        self._bracket_of[trial_id] = s
        return self.brackets[s].start_trial(trial_id)

    def record(
        self, trial_id: int, rung_index: int, value: Value | None, bracket: int | None = None
    ) -> None:
        """Record a result as `ASHA.record` does. A trial this object has not started (a search
        being restored) needs its `bracket`, the one its jobs carried."""
        known = self._adopt(trial_id, bracket)
        self.brackets[known].record(trial_id, rung_index, value)

    def mark_started(self, trial_id: int, rung_index: int, bracket: int | None = None) -> None:
        """As `ASHA.mark_started`, for a trial of `bracket` (needed if not started here)."""
        self.brackets[self._adopt(trial_id, bracket)].mark_started(trial_id, rung_index)

    def hold(self, trial_id: int, rung_index: int, bracket: int | None = None) -> None:
        """As `ASHA.hold`: never promote the trial from this rung."""
        self.brackets[self._adopt(trial_id, bracket)].hold(trial_id, rung_index)

    def _adopt(self, trial_id: int, bracket: int | None) -> int:
        """The place in `brackets` of a trial's bracket, registering a trial this object has not
        started (a restore) in `bracket` (its name: the rung its trials start at)."""
        known = self._bracket_of.get(trial_id)
        if known is None:
            if bracket is None:
                raise ValueError(
                    f"trial {trial_id} was not started here; give the bracket its jobs carried"
                )
            if bracket not in self._place:
                raise ValueError(
                    f"bracket {bracket} does not exist (the brackets start at rungs "
                    f"{', '.join(str(b) for b in self._place)})"
                )
            known = self._bracket_of[trial_id] = self._place[bracket]
            self._started[known] += 1
            self._next_id = max(self._next_id, trial_id + 1)
        elif bracket is not None and bracket != self.brackets[known].bracket:
            raise ValueError(
                f"trial {trial_id} is in bracket {self.brackets[known].bracket}, not {bracket}"
            )
        return known

    @property
    def bracket_names(self) -> tuple[int, ...]:
        """The brackets by name: the rung each one's new trials start at."""
        return tuple(self._place)

    def bracket_of(self, trial_id: int) -> int:
        """A trial's bracket, by its name (the rung its trials start at)."""
        return self.brackets[self._bracket_of[trial_id]].bracket

    def results(self, rung_index: int) -> dict[int, Value | None]:
        """The values recorded at a rung of the ladder in every bracket, best first."""
        merged: dict[int, Value | None] = {}
        for bracket in self.brackets:
            if bracket.bracket <= rung_index:
                merged.update(bracket.results(rung_index))
        return dict(sorted(merged.items(), key=lambda kv: (kv[1] is None, kv[1] or 0.0)))
