"""Checks on a dataset that cost nothing and write nothing: run before any work starts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from leanfit.config import DatasetConfig, Experiment
from leanfit.data.fingerprint import ignored, list_files, open_regular
from leanfit.errors import DatasetError, has_unshown

if TYPE_CHECKING:
    from leanfit.data.s3 import S3Listing


def _is_dir(path: Path) -> bool:
    """Whether a path is a folder or a link to one (False where that cannot be told)."""
    try:
        return path.is_dir()
    except OSError:  # (a link into a folder this user cannot read)
        return False


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if not ignored(p.name) and _is_dir(p))


def local_class_files(root: Path) -> dict[str, list[str]]:
    """Relative paths of the files in each class folder, sorted as in the manifest, from one
    walk of the folder, the manifest's: a class folder this user cannot read, or a link to a
    folder read already as another class, holds itself (`closed_classes`)."""
    found: dict[str, list[str]] = {p.name: [] for p in class_folders(root)}
    for f in list_files(root):
        rel = f.relative_to(root).as_posix()
        top = rel.partition("/")[0]
        if top in found:
            found[top].append(rel)
    return {name: sorted(files) for name, files in found.items()}


CLOSED_FOLDER = "a folder this user cannot read (permission denied)"
LINKED_TWICE = "a link to a folder read already as another class"


def closed_classes(root: Path, found: dict[str, list[str]]) -> dict[str, str]:
    """The class folders of `local_class_files` that could not be read, and why."""
    return {
        name: LINKED_TWICE if os.access(root / name, os.R_OK | os.X_OK) else CLOSED_FOLDER
        for name, files in found.items()
        if files == [name]
    }


def folder_files(experiment: Experiment, root: Path) -> dict[str, list[str]] | ClassFiles:
    """A local folder's files by class folder, or by the class its labels CSV gives them."""
    labels = experiment.labels_path()
    if labels is None:
        return local_class_files(root)
    return labelled_files(root, labels, experiment.dataset.label_columns)


# Images whose sides differ by more than this ratio count as not square (a 4:3 photo is 1.33)
NOT_SQUARE = 1.15


def shapes_sample(root: Path, n: int = 200) -> tuple[int, int, float]:
    """Of up to `n` of a local image folder's files, spread evenly over it: how many were read
    (their headers only), how many are not square, and the largest ratio of long to short side."""
    from PIL import Image

    from leanfit.data.sources import prepare_pillow

    prepare_pillow()
    files = list_files(root)  # (its class folders', or all of a folder labelled by a CSV)
    step = max(1, len(files) // n)
    read = not_square = 0
    widest = 1.0
    for path in files[::step][:n]:
        try:  # (never opening a named pipe: it blocks until something writes to it)
            with open_regular(path) as stream, Image.open(stream) as im:
                w, h = im.size
        except Exception:  # noqa: BLE001 - an unreadable file is listed by the decoder
            continue
        read += 1
        ratio = max(w, h) / max(1, min(w, h))
        widest = max(widest, ratio)
        not_square += ratio > NOT_SQUARE
    return read, not_square, widest


def check_dataset(experiment: Experiment) -> ClassFiles | None:
    """Cheap checks before anything is written: the folder exists and its classes hold files.

    An s3:// folder is listed (no object is read); a local one is walked, and its files by class,
    as checked, are returned for the load to decode (None for the other sources).
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
                + (" (unpack the archive and give its folder)" if _is_archive(root) else "")
            )
        if not os.access(root, os.R_OK | os.X_OK):
            raise DatasetError(
                f"dataset.path: folder {str(root)!r} cannot be read by this user (permission "
                "denied); make it readable (chmod -R u+rX), or run as a user who can read it"
            )
        found = folder_files(experiment, root)
        if isinstance(found, ClassFiles):
            return check_class_files(ds, str(root), found)
        # a README or a stray copy beside the class folders: no image of any class. Listed as
        # the files not used are, and left out of the digest with them: it changed the digest,
        # and each edit of it ran the whole pipeline again, with nothing said
        top = sorted(p.name for p in root.iterdir() if not ignored(p.name) and not _is_dir(p))
        if not found and top:
            raise DatasetError(
                f"dataset.path: {str(root)!r} holds {len(top):,} file(s) and no class folders, "
                "as one class's folder does; give the folder above it (one sub-folder per class)"
            )
        closed = closed_classes(root, found)
        if closed and ds.empty_classes == "error":
            named = ", ".join(f"{name!r} ({why})" for name, why in closed.items())
            raise DatasetError(
                f"dataset.path: class folder(s) {named} in {str(root)!r} cannot be read; make "
                "them readable (chmod -R u+rX), remove them, or set dataset.empty_classes: skip"
            )
        checked = check_class_files(
            ds, str(root), {name: [] if name in closed else f for name, f in found.items()}
        )
        checked.dropped = [(name, closed.get(name, why)) for name, why in checked.dropped]
        checked.unused += [(name, OUTSIDE) for name in top]
        return checked
    elif ds.source == "cifar10":
        root = cifar_root(experiment)
        if not (root / "cifar-10-batches-py").is_dir() and not ds.download:
            raise DatasetError(
                f"dataset.path: CIFAR-10 is not in {str(root)!r} (no cifar-10-batches-py folder); "
                "set dataset.download: true where there is network, or copy it there"
            )
    return None


def check_s3_listing(ds: DatasetConfig, listing: S3Listing) -> ClassFiles:
    """The class files of a listed s3:// folder, checked as a local folder's are."""
    if not listing.files and not listing.folders:
        raise DatasetError(
            f"dataset.path: no objects under {listing.uri!r}; check the prefix "
            "(s3://bucket/prefix, with one sub-folder per class below it)"
        )
    return check_class_files(ds, listing.uri, listing.class_files())


# The folders of a dataset split in advance (data/train/cat/..., data/test/cat/...: Kaggle's
# downloads, most labelling tools' exports, torchvision ImageFolder projects), by the split each
# stands for; read case-insensitively.
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


@dataclass
class ClassFiles:
    """A dataset's files by class (paths relative to its folder), and where it was split in
    advance, the split folders by the split each stands for ("train", "val", "test")."""

    classes: dict[str, list[str]]
    split_folders: dict[str, str] = field(default_factory=dict)
    # files not used, and why: loose in a split folder, not in the labels CSV; and the CSV's
    # rows that name no file
    unused: list[tuple[str, str]] = field(default_factory=list)
    labels: str | None = None  # the labels CSV the classes came from, if any
    # classes left out (dataset.empty_classes: skip), and why
    dropped: list[tuple[str, str]] = field(default_factory=list)

    def split_of(self, rel: str) -> str | None:
        return self.split_folders.get(rel.partition("/")[0])


def arrange(ds: DatasetConfig, where: str, found: dict[str, list[str]]) -> ClassFiles:
    """The files of a folder's top-level folders read as classes, or, where those folders are
    train/ (val/, test/) folders holding class folders, by the class folders inside them.

    Without this a folder split in advance became a two-class problem, "train" against "test".
    The folders named as splits (`SPLIT_FOLDERS`) are split folders when one of them holds files
    inside sub-folders; files loose in a split folder (a competition's unlabelled test images)
    belong to no class and are listed. `dataset.layout` overrides the guess either way."""
    nested = {top for top, files in found.items() if any(f.count("/") >= 2 for f in files)}
    splits = {top: SPLIT_FOLDERS[top.lower()] for top in found if top.lower() in SPLIT_FOLDERS}
    if ds.layout == "auto" and not nested & set(splits):
        splits = {}
    if ds.layout == "classes" or not splits:
        if ds.layout == "splits":
            raise DatasetError(
                f"dataset.layout: splits, but {where!r} has no split folder (train/, val/, test/ "
                f"holding class folders), found {sorted(found)}; set dataset.layout: classes "
                "where each of its folders is a class"
            )
        return ClassFiles(found)
    others = sorted(set(found) - set(splits))
    if others:
        raise DatasetError(
            f"dataset.path: {where!r} holds split folders ({', '.join(sorted(splits))}) beside "
            f"other folders ({', '.join(others)}); move each class folder into a split folder, "
            "or set dataset.layout: classes to read every top-level folder as a class"
        )
    by_role: dict[str, list[str]] = {}
    for top in sorted(splits):
        by_role.setdefault(splits[top], []).append(top)
    for role, tops in by_role.items():
        if len(tops) > 1:
            raise DatasetError(
                f"dataset.path: {where!r} has {len(tops)} folders for the {role} split "
                f"({', '.join(tops)}); merge them into one"
            )
    if "train" not in by_role:
        raise DatasetError(
            f"dataset.path: {where!r} has the split folder(s) {', '.join(sorted(splits))} but "
            "no train/ (or training/) folder of images to learn from; add one, or set "
            "dataset.layout: classes where each of its folders is a class"
        )
    classes: dict[str, list[str]] = {}
    loose = []
    for top in sorted(splits):
        for rel in found[top]:
            parts = rel.split("/")
            if len(parts) < 3:
                loose.append(rel)
            else:
                classes.setdefault(parts[1], []).append(rel)
    unused = [(rel, NO_CLASS) for rel in sorted(loose)]
    return ClassFiles({c: sorted(classes[c]) for c in sorted(classes)}, splits, unused)


# Why a file is not used though it is in the folder (or a row of the labels CSV names no file);
# the other files skipped are those that cannot be read as images
NO_CLASS = "in no class folder of its split folder (unlabelled)"
NOT_LABELLED = "not in the labels file"
NO_FILE = "named in the labels file, but not in the folder"
AMBIGUOUS = "named in the labels file without its extension, which fits more than one file"
OUTSIDE = "at the top of the folder, in no class folder"
UNUSED = (NO_CLASS, NOT_LABELLED, NO_FILE, AMBIGUOUS, OUTSIDE)

# Column names taken for the file and the label of a labels CSV (case-insensitive), in order
FILE_COLUMNS = ("file", "filename", "file_name", "path", "image", "image_id", "img", "id", "name")
LABEL_COLUMNS = ("label", "class", "category", "target", "y", "species", "breed", "class_name")


def read_labels(path: Path, columns: list[str] | None) -> list[tuple[str, str]]:
    """The (file, label) rows of a labels CSV (a header first; comma, semicolon or tab)."""
    import csv

    where = f"dataset.labels: {str(path)!r}"
    if not path.is_file():
        raise DatasetError(
            f"{where} does not exist or is not a file; give the CSV of file and label columns "
            "(relative paths start at the experiment file's folder)"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")  # (a spreadsheet's export starts with a BOM)
    except UnicodeDecodeError:
        raise DatasetError(
            f"{where} is not a text file; give a CSV of file and label columns"
        ) from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = [row for row in csv.reader(text.splitlines(), dialect) if any(c.strip() for c in row)]
    if len(rows) < 2:
        raise DatasetError(f"{where} has no rows under its header; give one row per image")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    if columns is not None:
        missing = [c for c in columns if c not in header]
        if missing:
            raise DatasetError(
                f"dataset.label_columns: {missing} not in the header of {str(path)!r}, which is "
                f"{header}"
            )
        file_col, label_col = (header.index(c) for c in columns)
    elif len(header) == 2:
        file_col, label_col = 0, 1
    else:
        file_col = next((lower.index(c) for c in FILE_COLUMNS if c in lower), None)
        label_col = next((lower.index(c) for c in LABEL_COLUMNS if c in lower), None)
        if file_col is None or label_col is None:
            raise DatasetError(
                f"{where}: which of its columns {header} are the file and the label is not "
                "clear; set dataset.label_columns: [FILE_COLUMN, LABEL_COLUMN]"
            )
    pairs, labels_of = [], {}
    for line, row in enumerate(rows[1:], start=2):
        if max(file_col, label_col) >= len(row) or not row[file_col].strip():
            raise DatasetError(f"{where}, line {line}: {row} has no file or no label")
        name, label = row[file_col].strip(), row[label_col].strip()
        if not label:
            raise DatasetError(f"{where}, line {line}: {name!r} has an empty label")
        if labels_of.setdefault(name, label) != label:
            raise DatasetError(
                f"{where}, line {line}: {name!r} is labelled both {labels_of[name]!r} and "
                f"{label!r}; keep one row per file"
            )
        pairs.append((name, label))
    return pairs


def _without_extension(rel: str) -> str:
    head, slash, name = rel.rpartition("/")
    return head + slash + (name.rsplit(".", 1)[0] if "." in name else name)


def labelled_files(root: Path, labels_csv: Path, columns: list[str] | None) -> ClassFiles:
    """The files of a folder by the class its labels CSV gives them. A file is named relative
    to the folder, with or without its extension (Kaggle's ids); a file the CSV does not name,
    and a row that names no file, are listed as unused."""
    pairs = read_labels(labels_csv, columns)
    files = [f.relative_to(root).as_posix() for f in list_files(root) if f != labels_csv]
    present = set(files)
    by_stem: dict[str, list[str]] = {}
    for rel in files:
        by_stem.setdefault(_without_extension(rel), []).append(rel)
    classes: dict[str, list[str]] = {}
    used, unused = set(), []
    for name, label in pairs:
        key = name.replace("\\", "/").removeprefix("./")
        matches = [key] if key in present else by_stem.get(key, [])
        if len(matches) != 1:
            unused.append((name, AMBIGUOUS if matches else NO_FILE))
            continue
        if matches[0] not in used:
            used.add(matches[0])
            classes.setdefault(label, []).append(matches[0])
    if not used:
        shown = ", ".join(repr(name) for name, _ in pairs[:3])
        raise DatasetError(
            f"dataset.labels: none of the {len(pairs):,} files {str(labels_csv)!r} names is in "
            f"{str(root)!r} (its first rows name {shown}); name each file relative to "
            "dataset.path, with or without its extension"
        )
    unused += [(rel, NOT_LABELLED) for rel in files if rel not in used]
    by_class = {c: sorted(classes[c]) for c in sorted(classes)}
    return ClassFiles(by_class, unused=unused, labels=str(labels_csv))


def check_class_files(
    ds: DatasetConfig, where: str, found: dict[str, list[str]] | ClassFiles
) -> ClassFiles:
    """The files of the classes to use, by class (given by folder, or arranged already: by a
    labels CSV); empty and missing class folders are refused, and in a folder split in advance,
    a class with no images in its train/ folder.

    Empty class folders are dropped when `dataset.empty_classes` is `skip`.
    """
    arranged = found if isinstance(found, ClassFiles) else arrange(ds, where, found)
    found = arranged.classes
    if ds.classes is not None:
        missing = [c for c in ds.classes if c not in found]
        if missing:
            holder = (
                f"no label {missing} in {arranged.labels!r}"
                if arranged.labels
                else (f"no folder for {missing} in {where!r}")
            )
            raise DatasetError(f"dataset.classes: {holder}; found {sorted(found)}")
        found = {c: found[c] for c in ds.classes}
    if odd := [name for name in found if has_unshown(name)]:
        what = "labels" if arranged.labels else "class folder names"
        raise DatasetError(
            f"dataset.{'labels' if arranged.labels else 'path'}: {what} "
            f"{', '.join(repr(name) for name in odd[:5])} in {where!r} hold control "
            "characters (a terminal acts on them: escape sequences, line breaks), and a class's "
            "name is shown wherever the model is; rename them"
        )
    if twins := unicode_twins(list(found)):
        a, b = twins
        kind = (
            f"dataset.labels: labels {a!r} ({ascii(a)}) and {b!r} ({ascii(b)}) in "
            f"{arranged.labels!r}"
            if arranged.labels
            else f"dataset.path: class folders {a!r} ({ascii(a)}) and {b!r} ({ascii(b)}) in "
            f"{where!r}"
        )
        raise DatasetError(
            f"{kind} differ only in their Unicode form (one made on a Mac, or unzipped from its "
            "zip): two classes that look alike; rename one, or merge them into one"
        )
    empty = [name for name, files in found.items() if not files]
    if empty and ds.empty_classes == "error":
        raise DatasetError(
            f"dataset.path: class folder(s) {empty} in {where!r} hold no files; "
            "add images, "
            "remove the folder, or set dataset.empty_classes: skip"
        )
    usable = {name: files for name, files in found.items() if files}
    if len(usable) < 2 and arranged.labels is not None:
        raise DatasetError(
            f"dataset.labels: {arranged.labels!r} gives the files of {where!r} "
            f"{len(usable)} label(s), {sorted(usable)}; at least two are needed (check "
            "dataset.label_columns)"
        )
    if len(usable) < 2:
        raise DatasetError(
            f"dataset.path: {where!r} needs at least two class folders with images "
            f"(one sub-folder per class), found {len(usable)}"
        )
    if arranged.split_folders:
        [train] = [top for top, role in arranged.split_folders.items() if role == "train"]
        untrained = [
            c for c, files in usable.items() if all(arranged.split_of(f) != "train" for f in files)
        ]
        if untrained:
            raise DatasetError(
                f"dataset.path: class folder(s) {untrained} in {where!r} have no images in "
                f"{train}/, only in another split: a model cannot learn a class it never trains "
                f"on; add images to {train}/{untrained[0]}/, or leave the class out "
                "(dataset.classes)"
            )
    return replace(arranged, classes=usable, dropped=[(name, NO_FILES) for name in empty])


def unicode_twins(names: list[str]) -> tuple[str, str] | None:
    """Two names that are one name in another Unicode form ('caf\u00e9' and 'cafe\u0301'),
    if any."""
    import unicodedata

    first: dict[str, str] = {}
    for name in names:
        other = first.setdefault(unicodedata.normalize("NFC", name), name)
        if other != name:
            return other, name
    return None


NO_FILES = "no files"
NO_READABLE_IMAGE = "no readable image"


def check_readable_classes(
    ds: DatasetConfig, where: str, files: ClassFiles, dataset
) -> list[tuple[str, str]]:
    """The classes left out of a decoded `dataset` (`files` as `check_class_files` gave them),
    and why: those with no files, and those none of whose files could be read, which are
    refused unless `dataset.empty_classes` is `skip`, as an empty class folder is."""
    decoded = set(dataset.classes)
    unread = [c for c in files.classes if c not in decoded]
    if unread and ds.empty_classes == "error":
        theirs = set(files.classes[unread[0]])
        first = next((f"{f}: {why}" for f, why in dataset.skipped if f in theirs), "")
        raise DatasetError(
            f"dataset.path: class(es) {unread} in {where!r} hold no readable image (none of "
            f"their {sum(len(files.classes[c]) for c in unread):,} files could be read"
            + (f"; the first: {first}" if first else "")
            + "); add images that can be read, remove the folder, or set "
            "dataset.empty_classes: skip"
        )
    return files.dropped + [(c, NO_READABLE_IMAGE) for c in unread]


def cifar_root(experiment: Experiment) -> Path:
    return experiment.dataset_path() or (experiment.work_path() / "data")


def _is_archive(path: Path) -> bool:
    """A zip or tar file (a dataset as it was downloaded), by its name."""
    return path.name.lower().endswith((".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz"))
