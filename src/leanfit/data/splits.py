"""Stratified, seeded splits and subsets.

Subsets are nested: for one seed, the 25% subset lies inside the 50% subset, so a trial promoted to
more data keeps the images it has already seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Splits:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _class_perms(labels: np.ndarray, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]


def make_splits(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Train/validation/test indices with each class in the same proportions in every split."""
    train, val, test = [], [], []
    for idx in _class_perms(np.asarray(labels), seed):
        n = len(idx)
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        if n - n_test - n_val < 1:  # a tiny class still gets one training image
            n_val = max(0, n - n_test - 1)
        test.append(idx[:n_test])
        val.append(idx[n_test : n_test + n_val])
        train.append(idx[n_test + n_val :])
    return Splits(*(np.sort(np.concatenate(s)).astype(np.int64) for s in (train, val, test)))


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions (into `labels`) of a stratified `fraction` of it; nested across fractions."""
    if fraction >= 1.0:
        return np.arange(len(labels))
    parts = [idx[: max(1, math.ceil(len(idx) * fraction))] for idx in _class_perms(labels, seed)]
    return np.sort(np.concatenate(parts)).astype(np.int64)
