"""Dataset sources: digits (bundled with scikit-learn), an image folder (local or s3://), CIFAR-10.

Each is decoded once into a uint8 tensor [N, C, H, W] at the configured size and cached under the
work folder, keyed by the dataset's digest: a second load of unchanged data reads one file.
Unreadable or corrupt image files are skipped, counted and listed, never fatal.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from leanfit.config import DatasetConfig, Experiment
from leanfit.data.check import (
    UNUSED,
    ClassFiles,
    check_dataset,
    check_readable_classes,
    check_s3_listing,
    cifar_root,
)
from leanfit.data.fingerprint import (
    NotRegular,
    build_manifest,
    fingerprint_bytes,
    fingerprint_folder,
    manifest_digest,
    open_regular,
)
from leanfit.data.splits import Splits, make_splits, stable_splits
from leanfit.errors import DatasetError, visible

CACHE_VERSION = 3  # 2: LoadedDataset.files; 3: tensors and JSON, not a pickle


@dataclass
class LoadedDataset:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: list[str]
    digest: str
    source: str  # where it came from, for MLflow
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    predefined_test: np.ndarray | None = None  # indices of an official test split, if any
    predefined_val: np.ndarray | None = None  # indices of a validation split given, if any
    # a folder split in advance: its split folders by the split each stands for
    split_folders: dict[str, str] = field(default_factory=dict)
    # classes left out (dataset.empty_classes: skip), and why: no files, no readable image
    dropped_classes: tuple[tuple[str, str], ...] = ()
    # each image's file, as its folder names it (an image folder's; empty for digits, CIFAR-10)
    files: list[str] = field(default_factory=list)
    # each image's file's content, as a 64-bit key (the manifest's sha256; None without files):
    # the same file whatever the decoding settings (image_size, fit, channels, background)
    file_keys: np.ndarray | None = None

    def split_keys(self) -> np.ndarray:
        """What places each image in a stable split (`splits.stable_splits`): its file's
        content where it has a file, so that another image_size or fit keeps the splits; its
        decoded pixels otherwise (digits, CIFAR-10)."""
        return self.file_keys if self.file_keys is not None else image_keys(self.images)

    def known_keys(self, index: np.ndarray) -> np.ndarray:
        """Every key the images at `index` are known by (their pixels as decoded now, and their
        files' content), flat: what a registered version keeps of the images it saw."""
        keys = [image_keys(self.images[torch.as_tensor(index)])]
        if self.file_keys is not None:
            keys.append(self.file_keys[index])
        return np.concatenate(keys)

    def name_of(self, index: int) -> str:
        """An image as a user finds it: its file, or its place in a dataset without files."""
        return visible(self.files[index]) if self.files else f"image {index}"

    def split_folder(self, role: str) -> str | None:
        """The folder a split ("train", "val" or "test") was given as, in a folder split in
        advance; None where the split was drawn from the training images."""
        given = {"train": True, "val": self.predefined_val is not None}
        if not given.get(role, self.predefined_test is not None):
            return None
        return next((top for top, r in self.split_folders.items() if r == role), None)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def splits(
        self, val_fraction: float, test_fraction: float, seed: int, stable: bool = False
    ) -> Splits:
        """The splits: a stratified, seeded shuffle, or (`stable`) each image's split by its own
        key (`split_keys`, `splits.stable_splits`); a split given with the data (CIFAR-10's test
        batch, a folder's val/ or test/) is used as it is, and the ones not given are drawn from
        the rest by their fractions."""
        labels = self.labels.numpy()
        keys = self.split_keys() if stable else None

        def draw(part, val_fraction, test_fraction):
            if keys is None:
                return make_splits(labels[part], val_fraction, test_fraction, seed)
            return stable_splits(keys[part], labels[part], val_fraction, test_fraction, seed)

        val, test = self.predefined_val, self.predefined_test
        if val is None and test is None:
            return draw(np.arange(len(labels)), val_fraction, test_fraction)
        given = [s for s in (val, test) if s is not None]
        rest = np.setdiff1d(np.arange(len(labels)), np.concatenate(given))
        inner = draw(
            rest, 0.0 if val is not None else val_fraction,
            0.0 if test is not None else test_fraction,
        )  # fmt: skip
        return Splits(
            rest[inner.train],
            np.sort(val) if val is not None else rest[inner.val],
            np.sort(test) if test is not None else rest[inner.test],
        )


def load_dataset(experiment: Experiment) -> LoadedDataset:
    """Decode the experiment's dataset (or read it from the cache)."""
    ds = experiment.dataset
    cache_dir = experiment.work_path() / "cache"
    if ds.source == "imagefolder" and ds.s3_uri is not None:
        return _load_s3_folder(ds, cache_dir)
    files = check_dataset(experiment)  # (an image folder's files by class, walked once)
    if ds.source == "digits":
        return _load_digits(ds.image_size, ds.num_channels)
    if ds.source == "imagefolder":
        root = experiment.dataset_path()
        entries = build_manifest(root, cache_dir / f"manifest-{_path_key(root)}.json")
        digest = manifest_digest(used_entries(entries, files))
        labels = experiment.labels_path()
        if labels is not None:  # the labels are part of the data: a changed row is new data
            digest = fingerprint_bytes(digest.encode(), labels.read_bytes())
        dataset = _decoded(
            ds,
            str(root),
            files,
            cache_dir / f"images-{_images_key(ds, digest, files)}.pt",
            lambda: _decode_images(
                files,
                lambda rel: _decode_one(
                    root / rel, ds.image_size, ds.num_channels, ds.background, ds.fit
                ),
                str(root),
                digest,
                workers=max(2, os.cpu_count() or 2),
            ),
        )
        # The cache is keyed by content: a copy of the folder elsewhere shares it.
        dropped = check_readable_classes(ds, str(root), files, dataset)
        return replace(
            dataset, source=root.as_uri(), dropped_classes=tuple(dropped),
            skipped=skipped_now(dataset, files), file_keys=file_keys_of(dataset, entries),
        )  # fmt: skip
    return _load_cifar10(experiment, cache_dir)


def skipped_now(dataset: LoadedDataset, files: ClassFiles) -> list[tuple[str, str]]:
    """The files skipped: those not used as the folder has them now, then those that could not
    be read. (The images of a digest are decoded once and kept; the files not used are outside
    the digest, so the kept list of them may be out of date.)"""
    return list(files.unused) + [(rel, why) for rel, why in dataset.skipped if why not in UNUSED]


def used_entries(entries: list, files: ClassFiles) -> list:
    """The manifest's entries less the files the dataset does not use (beside the class
    folders, loose in a split folder, not in the labels CSV): the digest is of the data, so an
    edit of a README beside it does not make it new data."""
    unused = {rel for rel, _ in files.unused}
    return [e for e in entries if e.path not in unused]


def _load_s3_folder(ds: DatasetConfig, cache_dir: Path) -> LoadedDataset:
    """An s3:// image folder: listed, hashed where the manifest cache misses, decoded once."""
    from leanfit.data import s3

    uri = ds.s3_uri
    fs = s3.s3_filesystem(ds.storage_options)
    listing = s3.list_s3_folder(fs, uri)
    files = check_s3_listing(ds, listing)
    size, channels, background, fit = ds.image_size, ds.num_channels, ds.background, ds.fit
    wanted = {rel for rels in files.classes.values() for rel in rels}
    decoded: dict[str, np.ndarray | str] = {}

    def decode_while_hashing(rel: str, data: bytes) -> None:
        # An object fetched to be hashed is decoded at once: a first load downloads it once.
        if rel in wanted:
            decoded[rel] = _decode_one(data, size, channels, background, fit)

    cache_file = cache_dir / f"manifest-{_path_key(f'{s3.endpoint_of(fs)} {uri}')}.json"
    entries = s3.s3_manifest(fs, listing, cache_file, on_read=decode_while_hashing)
    digest = manifest_digest(used_entries(entries, files))

    def decode(rel: str) -> np.ndarray | str:
        if rel in decoded:
            return decoded.pop(rel)
        return _decode_one(s3.read_object(fs, uri, rel), size, channels, background, fit)

    dataset = _decoded(
        ds,
        uri,
        files,
        cache_dir / f"images-{_images_key(ds, digest, files)}.pt",
        lambda: _decode_images(files, decode, uri, digest, workers=s3.READ_WORKERS),
    )
    dropped = check_readable_classes(ds, uri, files, dataset)
    return replace(
        dataset, source=uri, dropped_classes=tuple(dropped), skipped=skipped_now(dataset, files),
        file_keys=file_keys_of(dataset, entries),
    )  # fmt: skip


def file_keys_of(dataset: LoadedDataset, entries) -> np.ndarray | None:
    """Each image's file's content key (the first 8 bytes of its sha256), in the dataset's
    order; None where an image's file is not in the manifest (nothing to key it by)."""
    sha = {e.path: e.sha256 for e in entries}
    if not dataset.files or any(f not in sha for f in dataset.files):
        return None
    return np.array(
        [int(sha[f][:16], 16) for f in dataset.files], dtype=np.uint64
    )  # (the hex of 8 bytes)


# Part of the decoded images' cache key: a change to how files are decoded must not reuse the
# pixels of the decoder before it (2: EXIF orientation, 16-bit images scaled, not clipped;
# 3: transparent pixels drawn on the background, not on whatever colour they happened to hold;
# large JPEGs decoded at a reduced scale; 4: HEIC files read, not skipped, and float images in
# [0, 1] scaled, not clipped to black).
DECODER_VERSION = 4


def _images_key(ds: DatasetConfig, digest: str, files: ClassFiles) -> str:
    classes = _classes_key(ds.classes)
    size = f"{ds.image_size}-{ds.num_channels}"
    # (the keys from before these settings stay as they were)
    fit = "" if ds.fit == "squeeze" else f"-{ds.fit}"
    split = "-split" if files.split_folders else ""  # the same files read as given splits
    return f"{digest[:20]}-{size}-{classes}-{ds.background}{fit}{split}-d{DECODER_VERSION}"


def _path_key(path: Path) -> str:
    return fingerprint_bytes(str(path).encode("utf-8", "surrogateescape"))[:16]  # (not UTF-8 too)


def _classes_key(classes: list[str] | None) -> str:
    return (
        "all"
        if classes is None
        else fingerprint_bytes("\0".join(classes).encode("utf-8", "surrogateescape"))[:8]
    )


def _cached(path: Path, build) -> LoadedDataset:
    """The dataset `build` makes, kept at `path`: its tensors and its other fields as JSON,
    read back as weights only (`weights_only=True`), so a file planted in a shared work folder
    is never unpickled as code (it was a pickled `LoadedDataset`)."""
    if path.exists():
        try:
            blob = torch.load(path, weights_only=True)
            if blob.get("version") == CACHE_VERSION:
                return _dataset_of(blob)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            pass
    dataset = build()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(_blob_of(dataset), tmp)
        os.replace(tmp, path)
    except OSError:  # (a folder this user cannot write, a full disk: the images are read again)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return dataset


def _blob_of(dataset: LoadedDataset) -> dict[str, Any]:
    """A dataset as tensors and a JSON text (what `_cached` keeps; file keys are not kept)."""
    import json

    def listed(array):
        return None if array is None else [int(i) for i in array]

    meta = {
        "classes": dataset.classes,
        "digest": dataset.digest,
        "source": dataset.source,
        "skipped": [list(s) for s in dataset.skipped],
        "predefined_test": listed(dataset.predefined_test),
        "predefined_val": listed(dataset.predefined_val),
        "split_folders": dataset.split_folders,
        "dropped_classes": [list(d) for d in dataset.dropped_classes],
        "files": dataset.files,
    }
    return {
        "version": CACHE_VERSION,
        "images": dataset.images,
        "labels": dataset.labels,
        "meta": json.dumps(meta),
    }


def _dataset_of(blob: dict[str, Any]) -> LoadedDataset:
    import json

    meta = json.loads(blob["meta"])

    def array(values):
        return None if values is None else np.asarray(values, dtype=np.int64)

    return LoadedDataset(
        blob["images"],
        blob["labels"],
        list(meta["classes"]),
        meta["digest"],
        meta["source"],
        skipped=[tuple(s) for s in meta["skipped"]],
        predefined_test=array(meta["predefined_test"]),
        predefined_val=array(meta["predefined_val"]),
        split_folders=dict(meta["split_folders"]),
        dropped_classes=tuple(tuple(d) for d in meta["dropped_classes"]),
        files=list(meta["files"]),
    )


def skipped_files(skipped: list[tuple[str, str]]) -> str:
    """ "3 unreadable file(s)", or "3 file(s)" where some were skipped for having no class."""
    unreadable = "" if any(why in UNUSED for _, why in skipped) else "unreadable "
    return f"{len(skipped)} {unreadable}file(s)"


def dropped_notice(dataset: LoadedDataset) -> str | None:
    """What a command says of the classes it left out (dataset.empty_classes: skip), or None."""
    if not dataset.dropped_classes:
        return None
    named = ", ".join(f"{name!r} ({why})" for name, why in dataset.dropped_classes)
    return f"left out class(es) {named}: dataset.empty_classes is skip"


def dataset_notices(dataset: LoadedDataset) -> list[str]:
    """What a command says of a dataset it loaded: the files it skipped, the classes it left out."""
    notices = [skipped_notice(dataset.skipped)] if dataset.skipped else []
    if dropped := dropped_notice(dataset):
        notices.append(dropped)
    return notices


def skipped_notice(skipped: list[tuple[str, str]], shown: int = 10) -> str:
    """What a command says of the files it could not read: how many, and the first few."""
    lines = [f"skipped {skipped_files(skipped)}"]
    lines += [f"  {visible(name)}: {why}" for name, why in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"  ... and {len(skipped) - shown} more")
    return "\n".join(lines)


def image_keys(images: torch.Tensor):
    """A 64-bit key of each image's pixels (uint64 array): the same image, copied or moved to
    another file or class folder, has the same key."""
    import hashlib

    import numpy as np

    rows = images.reshape(len(images), -1).contiguous().numpy()
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
            for row in rows
        ],
        dtype=np.uint64,
    )


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch [N, C, H, W] to size x size (antialiased), staying uint8."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for chunk in images.split(4096):
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (8x8 images, values 0..16, and labels), read from the file it ships
    without importing scikit-learn: that import is most of a worker's start after torch (2.6 s
    measured here with both cores busy). Falls back to `load_digits` if the file is not where it
    has always been."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as f:
                data = np.loadtxt(f, delimiter=",", dtype=np.float64)
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


def _load_digits(size: int, channels: int) -> LoadedDataset:
    images8, target = _digits_arrays()
    raw = np.asarray(images8, dtype=np.float32)  # values 0..16
    images = torch.from_numpy(np.round(raw * (255.0 / 16.0)).astype(np.uint8))[:, None]
    images = resize_uint8(images, size)
    if channels == 3:
        images = images.expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(np.asarray(target, dtype=np.int64))
    digest = fingerprint_bytes(b"sklearn-digits", raw.tobytes(), labels.numpy().tobytes())
    return LoadedDataset(
        images, labels, [str(i) for i in range(10)], digest, "sklearn.datasets.load_digits"
    )


# Image modes with an alpha channel; any other mode is transparent only by a colour key
# ("transparency" in its info: a palette's entry, a grey or RGB value).
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _decode_one(
    source: Path | bytes,
    size: int,
    channels: int,
    background: str = "white",
    fit: str = "squeeze",
) -> np.ndarray | str:
    """One image file (a path, or the bytes of an object) as uint8 [C, H, W], or why it is not.

    A transparent pixel is drawn on `background`, as a viewer shows the file on a page: dropping
    the alpha leaves the colour such a pixel happens to hold, which for an icon or a logo is
    mostly black under a black glyph (the image came out a single colour). An image that is not
    square is squeezed whole to `size` x `size`, or its centre square is cropped (`fit: crop`),
    or it is padded to a square with the background colour (`fit: pad`)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    prepare_pillow()
    try:
        stream = io.BytesIO(source) if isinstance(source, bytes) else open_regular(source)
    except NotRegular as e:
        if e.kind == "a folder":  # (listed by `list_files`: not read, or read already)
            return READ_ALREADY if os.access(source, os.R_OK | os.X_OK) else UNREADABLE_FOLDER
        return f"not a regular file: {e.kind}"
    except PermissionError:
        return UNREADABLE_FOLDER if source.is_dir() else UNREADABLE_FILE
    except FileNotFoundError:
        if source.is_symlink():
            return f"a link to {os.readlink(source)}, which does not exist"
        return "gone: deleted while it was read"
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    try:
        with stream, Image.open(stream) as im:
            # A JPEG is decoded at 1/2, 1/4 or 1/8 of its size where that still leaves twice the
            # size wanted (libjpeg scales in the DCT): a phone's 4032x3024 photo to 32 px took
            # 121 ms a file, 15 ms so, its pixels within one level of the full decode's (mean
            # 0.07). Other formats ignore it.
            im.draft(None, (2 * size, 2 * size))
            # a phone's photo upright, as it was taken (its pixels are stored as the sensor lay);
            # a photo whose EXIF Pillow cannot write back (a tag of another type than the
            # standard's: struct.error) as it is stored: its pixels are fine
            with contextlib.suppress(Exception):  # (a broken EXIF only costs the turn)
                im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I") or im.mode == "F":
                im = _eight_bit(im)
            elif im.mode in ALPHA_MODES or "transparency" in im.info:
                im = _on_background(im, background)
            im = im.convert("L" if channels == 1 else "RGB")
            if fit == "crop":
                im = ImageOps.fit(im, (size, size), Image.Resampling.BILINEAR)
            elif fit == "pad":
                value = 255 if background == "white" else 0
                colour = value if channels == 1 else (value, value, value)
                im = ImageOps.pad(im, (size, size), Image.Resampling.BILINEAR, color=colour)
            else:
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except UnidentifiedImageError:
        # Pillow's message names the file again, as its full path or as "<_io.BytesIO object at
        # 0x7f...>" for an object read from S3; the file is listed beside the reason anyway
        return "not an image file Pillow can read"
    except Image.DecompressionBombError as e:
        return too_large(str(e))
    except Exception as e:  # noqa: BLE001 - whatever Pillow raises of one file skips that file
        return f"{type(e).__name__}: {e}"
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


# Why a path listed in an image folder is skipped, where it is not a file that can be read
UNREADABLE_FILE = "this user cannot read it (permission denied)"
UNREADABLE_FOLDER = "a folder this user cannot read (permission denied): its files are left out"
READ_ALREADY = "a link to a folder read already (a second link to it, or a loop): not read again"


def too_large(pillow_said: str) -> str:
    """Why an image Pillow refused as a possible decompression bomb was skipped, with the fix
    (Pillow's own words name neither the image's size in a user's terms nor what to do)."""
    import re

    found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+) pixels", pillow_said)
    if found is None:
        return f"DecompressionBombError: {pillow_said}"
    pixels, limit = (int(n) for n in found.groups())
    return (
        f"too large: {pixels:,} pixels, above the {limit:,} Pillow decodes (its guard against "
        "decompression bombs); save a smaller copy of it"
    )


_pillow_ready = False


def prepare_pillow() -> None:
    """Pillow as leanfit reads with it, once a process: HEIC and HEIF files (an iPhone's photos)
    open through pillow-heif's plugin (about 30 ms; without it each was skipped), and a large
    scan without a warning."""
    global _pillow_ready
    if not _pillow_ready:
        import warnings

        from PIL import Image
        from pillow_heif import register_heif_opener

        register_heif_opener()
        # an image of 90 to 179 million pixels (a scan) is decoded, without Pillow's warning
        # printed raw among the progress lines; above that, too_large says why it is skipped
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        _pillow_ready = True


def _on_background(im, background: str):
    """A transparent image drawn on a plain white or black canvas, as RGB."""
    from PIL import Image

    im = im.convert("RGBA")  # a palette's or a colour key's transparency too, as Pillow asks
    value = 255 if background == "white" else 0
    canvas = Image.new("RGBA", im.size, (value, value, value, 255))
    return Image.alpha_composite(canvas, im).convert("RGB")


def _eight_bit(im):
    """A 16- or 32-bit integer or a 32-bit float grey image as 8 bits, its range scaled: Pillow's
    own conversion clips every value above 255 to white (a 16-bit scan came out all white), and a
    float image in [0, 1] (a microscope's or a simulation's TIFF) to black."""
    from PIL import Image

    values = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    # "I;16...": 16 bits, however dark; "I" (32 bits) says nothing of its range: 8 bits when it
    # fits in them. "F": [0, 1] when it fits in it, then 8 bits, then 16; the same scale for
    # every file, so images stay as bright as each other
    peak = values.max(initial=0)
    sixteen = im.mode.startswith("I;16") or peak > 255
    top = 65535.0 if sixteen else 255.0
    if im.mode == "F" and peak <= 1.0:
        top = 1.0
    scaled = np.clip(values, 0, top) * (255.0 / top)
    return Image.fromarray(np.round(scaled).astype(np.uint8))  # 2-D uint8: mode "L"


class TooFewClasses(DatasetError):
    """Fewer than two classes with a readable image: what was read, for a better message."""

    def __init__(self, message: str, classes: list[str], skipped: list[tuple[str, str]]):
        super().__init__(message)
        self.classes, self.skipped = classes, skipped


def _decoded(ds: DatasetConfig, where: str, files: ClassFiles, path: Path, build):
    """The dataset `build` decodes, kept at `path` (`_cached`); where fewer than two classes
    have a readable image, the classes with none are named, with their first file's reason
    (`check_readable_classes`), before the count of classes left."""
    try:
        return _cached(path, build)
    except TooFewClasses as e:
        check_readable_classes(ds, where, files, e)
        raise


def _decode_images(
    class_files: ClassFiles,
    decode: Callable[[str], np.ndarray | str],
    where: str,
    digest: str,
    workers: int,
) -> LoadedDataset:
    """The images of each class, decoded concurrently; unreadable files are listed, and so are
    the files not used (in no class folder of a split folder, not in the labels CSV)."""
    classes = class_files.classes
    files = [(rel, c) for c, rels in classes.items() for rel in rels]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(pool.map(lambda fc: decode(fc[0]), files))
    arrays, labels, roles, names = [], [], [], []
    skipped = list(class_files.unused)
    for (rel, c), arr in zip(files, decoded, strict=True):
        if isinstance(arr, str):
            skipped.append((rel, arr))
        else:
            arrays.append(arr)
            labels.append(c)
            roles.append(class_files.split_of(rel))
            names.append(rel)
    present = [c for c in classes if c in set(labels)]
    if len(present) < 2:
        raise TooFewClasses(
            f"dataset.path: {where!r} has readable images in {len(present)} class folder(s); "
            "at least two are needed",
            present,
            skipped,
        )
    index = {c: i for i, c in enumerate(present)}
    images = torch.from_numpy(np.stack(arrays))
    y = torch.tensor([index[c] for c in labels], dtype=torch.int64)
    given = {role for role in roles if role not in (None, "train")}
    predefined = {
        role: np.flatnonzero(np.array([r == role for r in roles])).astype(np.int64)
        for role in given
    }
    return LoadedDataset(
        images, y, present, digest, where, skipped,
        predefined_test=predefined.get("test"),
        predefined_val=predefined.get("val"),
        split_folders=dict(class_files.split_folders), files=names,
    )  # fmt: skip


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
