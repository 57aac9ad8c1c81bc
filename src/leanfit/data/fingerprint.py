"""A dataset's digest: the hash of its manifest of (relative path, size, content hash).

The manifest is sorted, so the digest is the same on every machine and in every store (a local
folder, an S3 prefix). Content hashes are cached by (relative path, size, version), the version
being a file's mtime or an S3 object's ETag: a file that has not changed is not read again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ManifestEntry:
    path: str  # relative, with forward slashes
    size: int
    sha256: str


@dataclass(frozen=True)
class StoredFile:
    """A file as listed, before it is read."""

    path: str  # relative, with forward slashes
    size: int
    version: int | str  # changes with the content: mtime in ns for a file, ETag for an S3 object


class NotRegular(Exception):
    """A path that is not a regular file (a named pipe, a socket, a device, a folder): never
    opened to be read, which blocks for good on a pipe with no writer."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def kind_of(mode: int) -> str | None:
    """What a path that is not a regular file is ("a named pipe"), by its mode; None for a
    regular file."""
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in kinds if test(mode)), "not a file")


def open_regular(path: Path) -> BinaryIO:
    """A regular file opened to be read; `NotRegular` for anything else, which is checked
    before it is opened and again once it is (opened without blocking: a pipe swapped in
    between does not hang the caller)."""
    found = kind_of(os.stat(path).st_mode)
    if found is not None:
        raise NotRegular(found)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        found = kind_of(os.fstat(fd).st_mode)
        if found is not None:
            raise NotRegular(found)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_sha256(path: Path) -> str:
    """A file's content hash; for what cannot be read, the hash of a marker saying why (a file
    this user cannot read, a named pipe, a folder not read), so that a manifest still lists it
    and its digest changes when it can be read."""
    h = hashlib.sha256()
    if path.is_symlink() and not path.exists():  # a link to nothing: its target's name
        h.update(b"link:" + os.readlink(path).encode("utf-8", "surrogateescape"))
        return h.hexdigest()
    try:
        with open_regular(path) as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except NotRegular as e:
        return hashlib.sha256(f"not a regular file: {e.kind}".encode()).hexdigest()
    except OSError as e:  # (permission denied; gone since it was listed)
        return hashlib.sha256(f"unreadable: {e.strerror}".encode()).hexdigest()
    return h.hexdigest()


# What operating systems leave beside a user's files, never a user's data: macOS's resource
# forks in a zip (__MACOSX/, unpacked anywhere but on a Mac), Windows Explorer's thumbnail cache
# and folder settings. Hidden names (.DS_Store, ._img.jpg, .ipynb_checkpoints) are left out too.
# Windows' own folders at the top of a USB disk or a memory card (System Volume Information,
# $RECYCLE.BIN) too. Matched whatever their case (Windows' names are not case-sensitive).
SYSTEM_NAMES = frozenset(
    name.casefold()
    for name in (
        "__MACOSX", "Thumbs.db", "desktop.ini", "ehthumbs.db", "System Volume Information",
        "$RECYCLE.BIN",
    )
)  # fmt: skip


def ignored(name: str) -> bool:
    """Whether a file or folder name is left out of a dataset, in a folder and in a bucket."""
    return name.startswith(".") or name.casefold() in SYSTEM_NAMES


def list_files(root: Path) -> list[Path]:
    """Every file below root, hidden and system files and folders left out, in sorted order.

    Links to folders are followed (a class folder, or a folder in one, linked from another
    disk), each folder read once: a link to a folder already read (a loop, a second link to
    it) is listed itself, as is a folder this user cannot read, for the decoder to skip and
    list with why. Files that are not regular (a named pipe) are listed too, and never opened.
    """
    out: list[Path] = []
    seen: set[tuple[int, int]] = set()
    with contextlib.suppress(OSError):
        st = os.stat(root)
        seen.add((st.st_dev, st.st_ino))

    def unreadable(error: OSError) -> None:  # (os.walk could not list a folder)
        if error.filename is not None and Path(error.filename) != Path(root):
            out.append(Path(error.filename))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        kept, again = [], []
        for d in sorted(d for d in dirnames if not ignored(d)):
            try:
                st = os.stat(os.path.join(dirpath, d))
            except OSError:  # (gone since it was listed)
                continue
            if (st.st_dev, st.st_ino) in seen:
                again.append(Path(dirpath) / d)  # a folder read already: listed, not read again
            else:
                seen.add((st.st_dev, st.st_ino))
                kept.append(d)
        dirnames[:] = kept
        out += [Path(dirpath) / f for f in sorted(filenames) if not ignored(f)] + again
    return out


def list_stored_files(root: Path) -> list[StoredFile]:
    """The files below a folder as the manifest sees them, before any is read. What cannot be
    read (a file or folder this user cannot read, a named pipe) is versioned by why, so that
    its hash, a marker, is taken again once it can be read."""
    out = []
    for path in list_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            # a link to a file that is not there (moved, or on an unmounted disk): the link
            # itself, which the decoder then skips and lists, as it does an unreadable file
            st = path.stat() if path.exists() else path.lstat()
        except OSError as e:
            out.append(StoredFile(rel, 0, f"not listed: {e.strerror}"))
            continue
        kind = kind_of(st.st_mode) if not stat.S_ISLNK(st.st_mode) else None
        if kind is not None:
            readable = kind != "a folder" or os.access(path, os.R_OK | os.X_OK)
            out.append(StoredFile(rel, 0, f"{kind}{'' if readable else ', unreadable'}"))
        elif not stat.S_ISLNK(st.st_mode) and not os.access(path, os.R_OK):
            out.append(StoredFile(rel, st.st_size, f"unreadable {st.st_mtime_ns}"))
        else:
            out.append(StoredFile(rel, st.st_size, st.st_mtime_ns))
    return out


def build_manifest(root: Path, cache_file: Path | None = None) -> list[ManifestEntry]:
    """The manifest of a folder; `cache_file` keeps content hashes between calls."""
    return cached_manifest(
        list_stored_files(root),
        lambda todo: {f.path: file_sha256(root / f.path) for f in todo},
        cache_file,
    )


def cached_manifest(
    files: list[StoredFile],
    content_sha256: Callable[[list[StoredFile]], dict[str, str]],
    cache_file: Path | None = None,
) -> list[ManifestEntry]:
    """The manifest of listed files, wherever they are stored.

    Only files whose (relative path, size, version) is not in `cache_file` are handed to
    `content_sha256`, in one call (a remote store can fetch them concurrently); it returns their
    content hashes by relative path. The cache is rewritten with what was listed this time.
    """
    cache: dict[str, list] = {}
    if cache_file is not None and cache_file.exists():
        try:
            cache = json.loads(cache_file.read_text())
        except (json.JSONDecodeError, OSError):
            cache = {}  # a damaged cache only costs re-reading the files
        if not isinstance(cache, dict):
            cache = {}

    def cached(f: StoredFile) -> str | None:
        hit = cache.get(f.path)
        if isinstance(hit, list) and len(hit) == 3 and hit[:2] == [f.size, f.version]:
            return hit[2] if isinstance(hit[2], str) else None
        return None

    todo = [f for f in files if cached(f) is None]
    hashed = content_sha256(todo) if todo else {}
    entries, fresh = [], {}
    for f in files:
        digest = hashed[f.path] if f.path in hashed else cached(f)
        fresh[f.path] = [f.size, f.version, digest]
        entries.append(ManifestEntry(f.path, f.size, digest))
    if cache_file is not None and fresh != cache:
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(fresh))
            os.replace(tmp, cache_file)
        except OSError:  # (a folder this user cannot write: `validate` ended in a traceback)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)  # a cache not kept only costs re-reading the files
    return entries


def manifest_digest(entries: list[ManifestEntry]) -> str:
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.path):
        # (a name that is not UTF-8, 'caf\xe9.png' from an old zip, as its bytes on disk)
        h.update(f"{e.path}\0{e.size}\0{e.sha256}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def fingerprint_folder(root: Path, cache_file: Path | None = None) -> str:
    return manifest_digest(build_manifest(root, cache_file))


def fingerprint_bytes(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()
