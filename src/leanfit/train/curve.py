"""Learning-curve extrapolation: stop a run whose validation accuracy cannot reach a threshold.

Domhan, Springenberg & Hutter 2015, "Speeding up Automatic Hyperparameter Optimization of Deep
Neural Networks by Extrapolation of Learning Curves" (IJCAI) extrapolate a partial learning curve
with a weighted ensemble of eleven parametric families sampled by MCMC, and stop a run when it is
unlikely to beat the best one so far. This module keeps the idea and drops the cost. It fits two
of their families,

    exp3:  acc(t) = c − b·exp(−k·t)
    pow3:  acc(t) = c − b·t^(−k)

(t in epochs), each for a grid of rates k, by least squares in (c, b) — linear once k is fixed,
so there is no optimiser to diverge — under b ≥ 0 (the curve rises) and c ≤ 1 (no accuracy above
100%), and once more with c = 1, the most optimistic asymptote. Every fitted curve whose RMS
residual is within the noise (`tolerance`, or twice the best fit's residual when the points are
noisier) is plausible, and the prediction is the highest of the plausible curves at the target
epoch: a run stops only when no curve of either family that explains its points gets there. The
points are the running maximum of the accuracy, so a dip (the warm restart of a promotion, noise)
raises the prediction, never lowers it. It costs well under a millisecond an epoch.

tests/test_curve.py checks how often it is too low on noisy synthetic curves of both families.

Example:
    >>> stop = CurveStop(below=0.9, epochs=20)
    >>> history = [{"epoch": e, "val_accuracy": a} for e, a in [(1, 0.5), (2, 0.6), (3, 0.62)]]
    >>> stop.reason(history) is not None  # flattening out far below 0.9
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# A curve is fitted once the run has this many points (epochs) at its fidelity.
MIN_POINTS = 3
# RMS residual, in accuracy, within which a fitted curve explains the points (at least).
CURVE_TOLERANCE = 0.01
# Added to the prediction before it is compared with the threshold.
CURVE_MARGIN = 0.01
# The rates k tried for each family: from almost linear growth to a curve flat after one epoch.
_RATES = np.geomspace(0.01, 5.0, 64)[:, None]


def accuracy_noise(images: int) -> float:
    """The largest standard error of an accuracy measured on `images` images (at 50%), the
    tolerance of a curve fitted to accuracies on that many images: 0.026 for 360, 0.005 for
    10,000."""
    return 0.5 / max(1, images) ** 0.5


def _exp3(t: np.ndarray) -> np.ndarray:
    return np.exp(-_RATES * t)


def _pow3(t: np.ndarray) -> np.ndarray:
    return t ** (-_RATES)


def _fit(f: np.ndarray, y: np.ndarray, f_at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares y ≈ c − b·f for each row of `f`, with b ≥ 0 and c ≤ 1; and the same with
    c = 1, the most optimistic asymptote. The predictions c − b·f_at and RMS residuals of both,
    the best fits first.

    The problem is a convex quadratic in (c, b), so its minimum is the unconstrained one when that
    is feasible, else the best one on the edge c = 1 or on the edge b = 0.
    """
    n = len(f)
    f_mean = f.mean(axis=1, keepdims=True)
    y_mean = y.mean()
    var = ((f - f_mean) ** 2).sum(axis=1)
    cov = ((f - f_mean) * (y - y_mean)).sum(axis=1)
    b_free = -cov / np.maximum(var, 1e-300)
    c_free = y_mean + b_free * f_mean[:, 0]
    b_top = np.maximum(0.0, ((1.0 - y) * f).sum(axis=1) / (f**2).sum(axis=1))
    edges = [
        (np.ones(n), b_top, np.ones(n, dtype=bool)),
        (np.full(n, min(1.0, y_mean)), np.zeros(n), np.ones(n, dtype=bool)),
    ]
    best_sse = np.full(n, np.inf)
    best_pred = np.zeros(n)
    for c, b, feasible in [(c_free, b_free, (b_free >= 0) & (c_free <= 1)), *edges]:
        sse = ((y - (c[:, None] - b[:, None] * f)) ** 2).sum(axis=1)
        better = feasible & (sse < best_sse)
        best_sse = np.where(better, sse, best_sse)
        best_pred = np.where(better, c - b * f_at, best_pred)
    top_sse = ((y - (1.0 - b_top[:, None] * f)) ** 2).sum(axis=1)
    predictions = np.concatenate([best_pred, 1.0 - b_top * f_at])
    return predictions, np.sqrt(np.concatenate([best_sse, top_sse]) / y.size)


def optimistic_accuracy(
    epochs: Sequence[float],
    accuracies: Sequence[float],
    at_epoch: float,
    tolerance: float = CURVE_TOLERANCE,
) -> float | None:
    """The highest accuracy at `at_epoch` among the exp3 and pow3 curves that explain the points
    (`accuracies` after `epochs`, counted from 1) within `tolerance` RMS, or within twice the best
    fit's when no curve gets that close; never below the best accuracy already reached. None with
    fewer than `MIN_POINTS` points."""
    if len(epochs) != len(accuracies):
        raise ValueError(f"{len(epochs)} epochs but {len(accuracies)} accuracies")
    if len(epochs) < MIN_POINTS:
        return None
    t = np.asarray(epochs, dtype=float)
    if np.any(t <= 0) or np.any(np.diff(t) <= 0):
        raise ValueError(f"epochs must be positive and increasing, got {list(epochs)}")
    y = np.maximum.accumulate(np.asarray(accuracies, dtype=float))
    at = np.array([float(at_epoch)])
    fits = [_fit(family(t), y, family(at)[:, 0]) for family in (_exp3, _pow3)]
    predictions = np.concatenate([p for p, _ in fits])
    rms = np.concatenate([r for _, r in fits])
    plausible = rms <= max(tolerance, 2.0 * float(rms.min()))
    return float(max(predictions[plausible].max(), y[-1]))


@dataclass(frozen=True)
class CurveStop:
    """Stop a run once its learning curve cannot reach `below` validation accuracy by `epochs`.

    Args:
        below: the accuracy to reach (in a search: the best that a finished trial with no more
            parameters reached at the top rung, so a run that cannot reach it would be dominated).
        epochs: the epoch the curve is extrapolated to (in a search: the top rung's).
        first_epoch: the curve is fitted on the epochs after this one only (those trained at the
            full data fraction and resolution; a curve at a lower fidelity ends lower).
    """

    below: float
    epochs: int
    first_epoch: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.below <= 1.0:
            raise ValueError(f"The value of `below` is {self.below}, but must be in [0, 1]")
        if self.epochs < 1:
            raise ValueError(f"The value of `epochs` is {self.epochs}, but must be `epochs >= 1`")
        if not 0 <= self.first_epoch < self.epochs:
            raise ValueError(
                f"The value of `first_epoch` is {self.first_epoch}, "
                f"but must be `0 <= first_epoch < epochs` ({self.epochs})"
            )

    def reason(
        self, history: Sequence[Mapping[str, float]], tolerance: float = CURVE_TOLERANCE
    ) -> str | None:
        """Why the run should stop after the last epoch of `history` (its records, each with
        "epoch" and "val_accuracy"), or None to go on; `tolerance` as in `optimistic_accuracy`.
        A run at `epochs` is never stopped: its accuracy there is known, not predicted."""
        points = [
            (int(r["epoch"]), float(r["val_accuracy"]))
            for r in history
            if int(r["epoch"]) > self.first_epoch
        ]
        if not points or points[-1][0] >= self.epochs:
            return None
        epochs, accuracies = zip(*points, strict=True)
        predicted = optimistic_accuracy(epochs, accuracies, self.epochs, tolerance)
        if predicted is None or predicted + CURVE_MARGIN >= self.below:
            return None
        return (
            f"learning curve: at most {predicted:.4f} validation accuracy by epoch {self.epochs} "
            f"(extrapolated from epochs {epochs[0]}-{epochs[-1]}), below the {self.below:.4f} "
            "to reach"
        )
