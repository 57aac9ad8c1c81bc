"""A dataset's digest: the hash of its manifest of (relative path, size, content hash).

The manifest is sorted, so the digest is the same on every machine. Content hashes are cached by
(relative path, size, mtime): a file that has not changed is not read again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ManifestEntry:
    path: str  # relative, with forward slashes
    size: int
    sha256: str


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def list_files(root: Path) -> list[Path]:
    """Every regular file below root, hidden files and folders left out, in sorted order."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return out


def build_manifest(root: Path, cache_file: Path | None = None) -> list[ManifestEntry]:
    """The manifest of a folder; `cache_file` keeps content hashes between calls."""
    cache: dict[str, list] = {}
    if cache_file is not None and cache_file.exists():
        try:
            cache = json.loads(cache_file.read_text())
        except (json.JSONDecodeError, OSError):
            cache = {}  # a damaged cache only costs re-reading the files
    entries, fresh = [], {}
    for path in list_files(root):
        rel = path.relative_to(root).as_posix()
        st = path.stat()
        hit = cache.get(rel)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            digest = hit[2]
        else:
            digest = file_sha256(path)
        fresh[rel] = [st.st_size, st.st_mtime_ns, digest]
        entries.append(ManifestEntry(rel, st.st_size, digest))
    if cache_file is not None and fresh != cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(fresh))
        os.replace(tmp, cache_file)
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
