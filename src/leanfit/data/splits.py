"""Splits and subsets.

Two ways to split: a stratified, seeded shuffle (`make_splits`: each class in exactly its
proportions, drawn again whenever the dataset changes), or each image by its own key, its file's
content or its pixels (`stable_splits`: an image stays in its split as the dataset grows, shrinks
or is relabelled, and copies share a split; each class in its proportions only on average).

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
        n_val, n_test = _targets(len(idx), val_fraction, test_fraction)
        test.append(idx[:n_test])
        val.append(idx[n_test : n_test + n_val])
        train.append(idx[n_test + n_val :])
    return Splits(*(np.sort(np.concatenate(s)).astype(np.int64) for s in (train, val, test)))


def _targets(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of a class of `n` images the validation and test splits take (a tiny class
    still keeps one training image)."""
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if n - n_test - n_val < 1:
        n_val = max(0, n - n_test - 1)
    return n_val, n_test


def place_of(keys: np.ndarray, seed: int) -> np.ndarray:
    """Each image's place in [0, 1), from its 64-bit key and the seed alone: uniform, and
    the same whatever other images the dataset holds (splitmix64 of the key and the seed)."""
    x = np.asarray(keys, dtype=np.uint64) ^ np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def stable_splits(
    keys: np.ndarray, labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> Splits:
    """Train/validation/test indices where each image's split follows from its own key (`keys`:
    its file's content, or its pixels; `LoadedDataset.split_keys`) and the seed: an image placed
    below `test_fraction` is a test image, one above 1 - `val_fraction` a validation image, so
    adding or removing other images, or changing one fraction, never moves it (nor any image of
    the other held-out split), and copies (one key) share their split. Each class gets its
    proportions on average, not exactly; only where a class would have none of a split the
    shuffle gives it (or no training image) are its images placed nearest that split moved into
    it, copies together, which a growing class can undo."""
    labels, keys = np.asarray(labels), np.asarray(keys)
    place = place_of(keys, seed)
    role = np.where(place < test_fraction, 2, np.where(place >= 1.0 - val_fraction, 1, 0))

    def move(idx: np.ndarray, pool: np.ndarray, nearest, to: int) -> None:
        """The image of `pool` placed nearest split `to`, and its copies in the class."""
        role[idx[keys[idx] == keys[pool[nearest(place[pool])]]]] = to

    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        targets = dict(zip((1, 2), _targets(len(idx), val_fraction, test_fraction), strict=True))
        # (train 0, val 1, test 2; a missing split takes the image placed nearest to it, from
        # the training images where that leaves one, else from the other held-out split's
        # surplus; a class of 3 with two placed in validation got no test image)
        for want, other, nearest in ((2, 1, np.argmin), (1, 2, np.argmax)):
            if not targets[want] or (role[idx] == want).any():
                continue
            train, spare = idx[role[idx] == 0], idx[role[idx] == other]
            if len(np.unique(keys[train])) > 1:
                move(idx, train, nearest, want)
            elif len(spare) > targets[other]:
                move(idx, spare, nearest, want)
        if not (role[idx] == 0).any():
            val, test = idx[role[idx] == 1], idx[role[idx] == 2]
            if len(val) >= len(test):
                move(idx, val, np.argmin, 0)
            else:
                move(idx, test, np.argmax, 0)
    return Splits(*(np.flatnonzero(role == r).astype(np.int64) for r in (0, 1, 2)))


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions (into `labels`) of a stratified `fraction` of it; nested across fractions."""
    if fraction >= 1.0:
        return np.arange(len(labels))
    parts = [idx[: max(1, math.ceil(len(idx) * fraction))] for idx in _class_perms(labels, seed)]
    return np.sort(np.concatenate(parts)).astype(np.int64)


@dataclass(frozen=True)
class DataPlan:
    """Which images each part of the work sees: the splits, and the search's training subset.

    The pipeline's subset step writes it once; the search and the final training read it, so
    every step uses the same images, and a dataset that changed under them is noticed.
    """

    digest: str  # the dataset's digest these indices refer to
    splits: Splits
    search: np.ndarray  # indices (into the dataset) of the search's training images

    def check(self, digest: str) -> None:
        """Refuse a dataset whose digest is not the one this plan was made for."""
        if digest != self.digest:
            from leanfit.errors import DatasetError

            raise DatasetError(
                f"dataset: its digest is now {digest[:12]}, but the pipeline's data plan was "
                f"made for {self.digest[:12]}; the data changed while the pipeline ran: "
                "run it again"
            )

    def outside(self, images: int) -> str | None:
        """What in this plan names no image of a dataset of `images` images, if anything."""
        parts = {"train": self.splits.train, "val": self.splits.val, "test": self.splits.test}
        for name, part in {**parts, "search": self.search}.items():
            wrong = part[(part < 0) | (part >= images)]
            if len(wrong):
                first = int(wrong[0])
                return f"{name} names image {first}, the dataset has {images} (0 to {images - 1})"
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            if both := np.intersect1d(parts[a], parts[b]).size:
                return f"{a} and {b} share {both} image{'s' * (both != 1)}"
        return None

    def save(self, path) -> None:
        import json
        import os
        from pathlib import Path

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {
            "digest": self.digest,
            "train": self.splits.train.tolist(),
            "val": self.splits.val.tolist(),
            "test": self.splits.test.tolist(),
            "search": self.search.tolist(),
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(blob))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> DataPlan:
        import json
        from pathlib import Path

        blob = json.loads(Path(path).read_text())
        parts = ("train", "val", "test", "search")
        if not isinstance(blob, dict) or not isinstance(blob["digest"], str):
            raise ValueError("no dataset digest in it")
        for k in parts:  # (an edited file ended in a traceback, or trained on nothing)
            numbers = blob[k]
            if not isinstance(numbers, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in numbers
            ):
                raise ValueError(f"{k}: not a list of image numbers")
        if not blob["train"]:
            raise ValueError("train: no image")
        arrays = {k: np.asarray(blob[k], dtype=np.int64) for k in parts}
        splits = Splits(arrays["train"], arrays["val"], arrays["test"])
        return cls(blob["digest"], splits, arrays["search"])
