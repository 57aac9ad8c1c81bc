"""Checks on a dataset that cost nothing and write nothing: run before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from leanfit.config import DatasetConfig, Experiment
from leanfit.data.fingerprint import list_files
from leanfit.errors import DatasetError

if TYPE_CHECKING:
    from leanfit.data.s3 import S3Listing


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def local_class_files(root: Path) -> dict[str, list[str]]:
    """Relative paths of the files in each class folder, sorted as in the manifest."""
    return {
        p.name: sorted(f.relative_to(root).as_posix() for f in list_files(p))
        for p in class_folders(root)
    }


# Images whose sides differ by more than this ratio count as not square (a 4:3 photo is 1.33)
NOT_SQUARE = 1.15


def shapes_sample(root: Path, n: int = 200) -> tuple[int, int, float]:
    """Of up to `n` of a local image folder's files, spread evenly over it: how many were read
    (their headers only), how many are not square, and the largest ratio of long to short side."""
    from PIL import Image

    files = [root / f for names in local_class_files(root).values() for f in names]
    step = max(1, len(files) // n)
    read = not_square = 0
    widest = 1.0
    for path in files[::step][:n]:
        try:
            with Image.open(path) as im:
                w, h = im.size
        except Exception:  # noqa: BLE001 - an unreadable file is listed by the decoder
            continue
        read += 1
        ratio = max(w, h) / max(1, min(w, h))
        widest = max(widest, ratio)
        not_square += ratio > NOT_SQUARE
    return read, not_square, widest


def check_dataset(experiment: Experiment) -> None:
    """Cheap checks before anything is written: the folder exists and its classes hold files.

    An s3:// folder is listed (no object is read); a local one is walked.
    """
    ds = experiment.dataset
    if ds.source == "imagefolder" and ds.s3_uri is not None:
        from leanfit.data.s3 import list_s3_folder, s3_filesystem

        check_s3_listing(ds, list_s3_folder(s3_filesystem(ds.storage_options), ds.s3_uri))
    elif ds.source == "imagefolder":
        root = experiment.dataset_path()
        if root is None:
            raise DatasetError(
                f"dataset.path: {ds.path!r} is not a local folder; give a folder of class folders"
            )
        if not root.exists():
            raise DatasetError(
                f"dataset.path: folder {str(root)!r} does not exist; check the path "
                "(relative paths start at the experiment file's folder)"
            )
        if not root.is_dir():
            raise DatasetError(
                f"dataset.path: {str(root)!r} is a file; give a folder of class folders"
            )
        check_class_files(ds, str(root), local_class_files(root))
    elif ds.source == "cifar10":
        root = cifar_root(experiment)
        if not (root / "cifar-10-batches-py").is_dir() and not ds.download:
            raise DatasetError(
                f"dataset.path: CIFAR-10 is not in {str(root)!r} (no cifar-10-batches-py folder); "
                "set dataset.download: true where there is network, or copy it there"
            )


def check_s3_listing(ds: DatasetConfig, listing: S3Listing) -> dict[str, list[str]]:
    """The class files of a listed s3:// folder, checked as a local folder's are."""
    if not listing.files and not listing.folders:
        raise DatasetError(
            f"dataset.path: no objects under {listing.uri!r}; check the prefix "
            "(s3://bucket/prefix, with one sub-folder per class below it)"
        )
    return check_class_files(ds, listing.uri, listing.class_files())


def check_class_files(
    ds: DatasetConfig, where: str, found: dict[str, list[str]]
) -> dict[str, list[str]]:
    """The files of the classes to use, by class; empty and missing class folders are refused.

    Empty class folders are dropped when `dataset.empty_classes` is `skip`.
    """
    if ds.classes is not None:
        missing = [c for c in ds.classes if c not in found]
        if missing:
            raise DatasetError(
                f"dataset.classes: no folder for {missing} in {where!r}; found {sorted(found)}"
            )
        found = {c: found[c] for c in ds.classes}
    empty = [name for name, files in found.items() if not files]
    if empty and ds.empty_classes == "error":
        raise DatasetError(
            f"dataset.path: class folder(s) {empty} in {where!r} hold no files; "
            "add images, "
            "remove the folder, or set dataset.empty_classes: skip"
        )
    usable = {name: files for name, files in found.items() if files}
    if len(usable) < 2:
        raise DatasetError(
            f"dataset.path: {where!r} needs at least two class folders with images "
            f"(one sub-folder per class), found {len(usable)}"
        )
    return usable


def cifar_root(experiment: Experiment) -> Path:
    return experiment.dataset_path() or (experiment.work_path() / "data")
