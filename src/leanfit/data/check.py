"""Checks on a dataset that cost nothing and write nothing: run before any work starts."""

from __future__ import annotations

from pathlib import Path

from leanfit.config import Experiment
from leanfit.data.fingerprint import list_files
from leanfit.errors import DatasetError


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_dataset(experiment: Experiment) -> None:
    """Cheap checks before anything is written: the folder exists and its classes hold files."""
    ds = experiment.dataset
    if ds.source == "imagefolder":
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
        folders = {p.name: p for p in class_folders(root)}
        if ds.classes is not None:
            missing = [c for c in ds.classes if c not in folders]
            if missing:
                raise DatasetError(
                    f"dataset.classes: no folder for {missing} in {str(root)!r}; "
                    f"found {sorted(folders)}"
                )
            folders = {c: folders[c] for c in ds.classes}
        empty = [name for name, p in folders.items() if not list_files(p)]
        if empty and ds.empty_classes == "error":
            raise DatasetError(
                f"dataset.path: class folder(s) {empty} in {str(root)!r} hold no files; "
                "add images, "
                "remove the folder, or set dataset.empty_classes: skip"
            )
        usable = len(folders) - len(empty)
        if usable < 2:
            raise DatasetError(
                f"dataset.path: {str(root)!r} needs at least two class folders with images "
                f"(one sub-folder per class), found {usable}"
            )
    elif ds.source == "cifar10":
        root = cifar_root(experiment)
        if not (root / "cifar-10-batches-py").is_dir() and not ds.download:
            raise DatasetError(
                f"dataset.path: CIFAR-10 is not in {str(root)!r} (no cifar-10-batches-py folder); "
                "set dataset.download: true where there is network, or copy it there"
            )


def cifar_root(experiment: Experiment) -> Path:
    return experiment.dataset_path() or (experiment.work_path() / "data")
