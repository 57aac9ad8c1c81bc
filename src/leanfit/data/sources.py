"""Dataset sources: digits (bundled with scikit-learn), an image folder, CIFAR-10.

Each is decoded once into a uint8 tensor [N, C, H, W] at the configured size and cached under the
work folder, keyed by the dataset's digest: a second load of unchanged data reads one file.
Unreadable or corrupt image files are skipped, counted and listed, never fatal.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from leanfit.config import Experiment
from leanfit.data.check import check_dataset, cifar_root, class_folders
from leanfit.data.fingerprint import fingerprint_bytes, fingerprint_folder, list_files
from leanfit.data.splits import Splits, make_splits
from leanfit.errors import DatasetError

CACHE_VERSION = 1


@dataclass
class LoadedDataset:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: list[str]
    digest: str
    source: str  # where it came from, for MLflow
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    predefined_test: np.ndarray | None = None  # indices of an official test split, if any

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def splits(self, val_fraction: float, test_fraction: float, seed: int) -> Splits:
        labels = self.labels.numpy()
        if self.predefined_test is None:
            return make_splits(labels, val_fraction, test_fraction, seed)
        rest = np.setdiff1d(np.arange(len(labels)), self.predefined_test)
        inner = make_splits(labels[rest], val_fraction, 0.0, seed)
        return Splits(rest[inner.train], rest[inner.val], np.sort(self.predefined_test))


def load_dataset(experiment: Experiment) -> LoadedDataset:
    """Decode the experiment's dataset (or read it from the cache)."""
    check_dataset(experiment)
    ds = experiment.dataset
    if ds.source == "digits":
        return _load_digits(ds.image_size, ds.num_channels)
    cache_dir = experiment.work_path() / "cache"
    if ds.source == "imagefolder":
        root = experiment.dataset_path()
        digest = fingerprint_folder(root, cache_dir / f"manifest-{_path_key(root)}.json")
        key = f"{digest[:20]}-{ds.image_size}-{ds.num_channels}-{_classes_key(ds.classes)}"
        return _cached(
            cache_dir / f"images-{key}.pt",
            lambda: _decode_folder(root, ds.classes, ds.image_size, ds.num_channels, digest),
        )
    return _load_cifar10(experiment, cache_dir)


def _path_key(path: Path) -> str:
    return fingerprint_bytes(str(path).encode())[:16]


def _classes_key(classes: list[str] | None) -> str:
    return "all" if classes is None else fingerprint_bytes("\0".join(classes).encode())[:8]


def _cached(path: Path, build) -> LoadedDataset:
    if path.exists():
        try:
            blob = torch.load(path, weights_only=False)
            if blob.get("version") == CACHE_VERSION:
                return blob["dataset"]
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            pass
    dataset = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"version": CACHE_VERSION, "dataset": dataset}, tmp)
    os.replace(tmp, path)
    return dataset


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch [N, C, H, W] to size x size (antialiased), staying uint8."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for chunk in images.split(4096):
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _load_digits(size: int, channels: int) -> LoadedDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = np.asarray(bunch.images, dtype=np.float32)  # values 0..16
    images = torch.from_numpy(np.round(raw * (255.0 / 16.0)).astype(np.uint8))[:, None]
    images = resize_uint8(images, size)
    if channels == 3:
        images = images.expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    digest = fingerprint_bytes(b"sklearn-digits", raw.tobytes(), labels.numpy().tobytes())
    return LoadedDataset(
        images, labels, [str(i) for i in range(10)], digest, "sklearn.datasets.load_digits"
    )


def _decode_one(path: Path, size: int, channels: int) -> np.ndarray | str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {e}"
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _decode_folder(
    root: Path, classes: list[str] | None, size: int, channels: int, digest: str
) -> LoadedDataset:
    folders = {p.name: p for p in class_folders(root)}
    names = classes if classes is not None else sorted(folders)
    files = [(path, c) for c in names for path in list_files(folders[c])]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        decoded = list(pool.map(lambda fc: _decode_one(fc[0], size, channels), files))
    arrays, labels, skipped = [], [], []
    for (path, c), arr in zip(files, decoded, strict=True):
        if isinstance(arr, str):
            skipped.append((path.relative_to(root).as_posix(), arr))
        else:
            arrays.append(arr)
            labels.append(c)
    present = [c for c in names if c in set(labels)]
    if len(present) < 2:
        raise DatasetError(
            f"dataset.path: {str(root)!r} has readable images in {len(present)} class folder(s); "
            "at least two are needed"
        )
    index = {c: i for i, c in enumerate(present)}
    images = torch.from_numpy(np.stack(arrays))
    y = torch.tensor([index[c] for c in labels], dtype=torch.int64)
    return LoadedDataset(images, y, present, digest, root.as_uri(), skipped)


def _load_cifar10(experiment: Experiment, cache_dir: Path) -> LoadedDataset:
    from torchvision.datasets import CIFAR10

    ds = experiment.dataset
    root = cifar_root(experiment)
    try:
        train = CIFAR10(str(root), train=True, download=ds.download)
        test = CIFAR10(str(root), train=False, download=False)
    except (RuntimeError, OSError) as e:
        raise DatasetError(
            f"dataset: CIFAR-10 could not be read or downloaded into {str(root)!r} ({e}); "
            "copy cifar-10-batches-py there or allow the download"
        ) from None
    digest = fingerprint_folder(root / "cifar-10-batches-py")
    key = f"{digest[:20]}-{ds.image_size}-{ds.num_channels}"

    def build() -> LoadedDataset:
        x = np.concatenate([train.data, test.data]).transpose(0, 3, 1, 2)
        images = resize_uint8(torch.from_numpy(np.ascontiguousarray(x)), ds.image_size)
        if ds.num_channels == 1:
            images = images.float().mean(1, keepdim=True).round().to(torch.uint8)
        labels = torch.tensor(list(train.targets) + list(test.targets), dtype=torch.int64)
        n = len(train.targets)
        test_idx = np.arange(n, n + len(test.targets))
        return LoadedDataset(
            images,
            labels,
            list(train.classes),
            digest,
            (root / "cifar-10-batches-py").as_uri(),
            predefined_test=test_idx,
        )

    return _cached(cache_dir / f"images-cifar10-{key}.pt", build)
