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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_symlink() and not path.exists():  # a link to nothing: its target's name
        h.update(b"link:" + os.readlink(path).encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# What operating systems leave beside a user's files, never a user's data: macOS's resource
# forks in a zip (__MACOSX/, unpacked anywhere but on a Mac), Windows Explorer's thumbnail cache
# and folder settings. Hidden names (.DS_Store, ._img.jpg, .ipynb_checkpoints) are left out too.
SYSTEM_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini", "ehthumbs.db"})


def ignored(name: str) -> bool:
    """Whether a file or folder name is left out of a dataset, in a folder and in a bucket."""
    return name.startswith(".") or name in SYSTEM_NAMES


def list_files(root: Path) -> list[Path]:
    """Every regular file below root, hidden and system files and folders left out, in sorted
    order."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not ignored(d))
        out += [Path(dirpath) / f for f in sorted(filenames) if not ignored(f)]
    return out


def list_stored_files(root: Path) -> list[StoredFile]:
    """The files below a folder as the manifest sees them, before any is read."""
    out = []
    for path in list_files(root):
        # a link to a file that is not there (moved, or on an unmounted disk): the link itself,
        # which the decoder then skips and lists, as it does an unreadable file
        st = path.stat() if path.exists() else path.lstat()
        out.append(StoredFile(path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
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
        h.update(f"{e.path}\0{e.size}\0{e.sha256}\n".encode())
    return h.hexdigest()


def fingerprint_folder(root: Path, cache_file: Path | None = None) -> str:
    return manifest_digest(build_manifest(root, cache_file))


def fingerprint_bytes(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()
