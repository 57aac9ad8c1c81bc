"""Image folders in S3 or an S3-compatible store (MinIO, moto), through fsspec/s3fs.

An s3://bucket/prefix is read as a folder: the objects below the prefix are its files, the first
part of their key after the prefix is their class folder. Hidden names (starting with ".") are left
out, as in a local folder, so a folder and its upload have the same manifest and digest. Content is
hashed with sha256, never taken from the ETag (which is no content hash for multipart uploads); the
ETag only tells whether a cached hash still holds.

The endpoint and credentials come from the environment, as for any AWS client (AWS_ENDPOINT_URL or
AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE), or from
`dataset.storage_options` in the experiment file for everything but credentials.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanfit.data.fingerprint import ManifestEntry, StoredFile, cached_manifest, ignored
from leanfit.errors import DatasetError

# Objects are fetched concurrently: the work is waiting on the network, not the CPU.
READ_WORKERS = 16

# Set by leanfit itself: a listing is never served from a stale cache, and each experiment gets
# its own client (fsspec would otherwise share one per set of options, across endpoints in env).
_FIXED_OPTIONS = {"skip_instance_cache": True, "use_listings_cache": False}
# Not for the file to give: the call's plumbing, and credentials (they come from the environment).
_NOT_FROM_FILE = frozenset(
    (
        "self",
        "kwargs",
        "session",
        "asynchronous",
        "loop",
        "key",
        "secret",
        "token",
        "username",
        "password",
    )
)


@dataclass
class S3Listing:
    """The objects below an s3:// prefix, as the manifest and the class folders see them."""

    uri: str  # s3://bucket/prefix, no trailing slash
    files: list[StoredFile]  # sorted by relative path; hidden ones and folder markers left out
    folders: set[str] = field(default_factory=set)  # first key parts: class folders, empty or not

    def class_files(self) -> dict[str, list[str]]:
        """Relative paths of the files in each class folder (first part of the key)."""
        out: dict[str, list[str]] = {name: [] for name in sorted(self.folders)}
        for f in self.files:
            top, sep, _ = f.path.partition("/")
            if sep:
                out[top].append(f.path)
        return out


def s3_filesystem(storage_options: Mapping[str, Any] | None = None):
    """An s3fs filesystem from `dataset.storage_options`; unknown options are refused by name."""
    import s3fs

    options = dict(storage_options or {})
    known = set(inspect.signature(s3fs.S3FileSystem.__init__).parameters) - _NOT_FROM_FILE
    unknown = sorted(set(options) - known)
    if unknown:
        raise DatasetError(
            f"dataset.storage_options: unknown option(s) {unknown}; "
            f"s3fs.S3FileSystem takes {sorted(known)}"
        )
    try:
        return s3fs.S3FileSystem(**options, **_FIXED_OPTIONS)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"dataset.storage_options: {e}; check the option values") from None


def endpoint_of(fs) -> str:
    """The endpoint the client talks to (from storage_options, the environment, or AWS's)."""
    try:
        fs.connect()
        return str(fs.s3.meta.endpoint_url)
    except Exception:  # noqa: BLE001 - only used to name the endpoint in messages and cache keys
        return "the default AWS endpoint"


def list_s3_folder(fs, uri: str) -> S3Listing:
    """Every object below `uri` (one LIST per 1000 objects); a missing bucket is a DatasetError."""
    base = _key(uri)
    try:
        found = fs.find(base, detail=True)
    except Exception as e:  # noqa: BLE001 - turned into a DatasetError or raised again
        raise s3_error(fs, uri, e) from None
    files, folders = [], set()
    for name, info in found.items():
        if not name.startswith(base + "/"):
            continue  # the prefix itself is an object: not a folder
        rel = name[len(base) + 1 :]
        parts = rel.rstrip("/").split("/")
        if not ignored(parts[0]) and (len(parts) > 1 or rel.endswith("/")):
            folders.add(parts[0])  # a class folder, even if it holds only hidden files or none
        if rel.endswith("/") or any(ignored(p) for p in parts):
            continue  # a folder marker (the console's "create folder"), or a hidden name
        version = info.get("ETag") or str(info.get("LastModified") or "")
        files.append(StoredFile(rel, int(info["size"]), str(version)))
    files.sort(key=lambda f: f.path)
    return S3Listing(uri, files, folders)


def read_object(fs, uri: str, rel: str) -> bytes:
    """The bytes of one object below `uri`."""
    try:
        return fs.cat_file(f"{_key(uri)}/{rel}")
    except Exception as e:  # noqa: BLE001 - turned into a DatasetError or raised again
        raise s3_error(fs, f"{uri}/{rel}", e) from None


def s3_manifest(
    fs,
    listing: S3Listing,
    cache_file: Path | None = None,
    on_read: Callable[[str, bytes], None] | None = None,
) -> list[ManifestEntry]:
    """The manifest of an S3 folder: objects whose (path, size, ETag) is cached are not fetched.

    `on_read(relative path, bytes)` sees every object that is fetched, so a caller can decode
    images while they are hashed instead of downloading them a second time.
    """

    def content_sha256(todo: list[StoredFile]) -> dict[str, str]:
        def fetch(f: StoredFile) -> tuple[str, str]:
            data = read_object(fs, listing.uri, f.path)
            if on_read is not None:
                on_read(f.path, data)
            return f.path, hashlib.sha256(data).hexdigest()

        with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
            return dict(pool.map(fetch, todo))

    return cached_manifest(listing.files, content_sha256, cache_file)


def s3_error(fs, uri: str, e: Exception) -> Exception:
    """The DatasetError a user can act on for a failed S3 call; anything else is returned as is."""
    from botocore.exceptions import BotoCoreError, NoCredentialsError

    if isinstance(e, FileNotFoundError):
        return DatasetError(
            f"dataset.path: {uri!r} not found at {endpoint_of(fs)} ({e}); check the bucket name, "
            "and the endpoint (AWS_ENDPOINT_URL or dataset.storage_options.endpoint_url)"
        )
    if isinstance(e, PermissionError):
        return DatasetError(
            f"dataset.path: access to {uri!r} denied ({e}); check the credentials in the "
            "environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
        )
    if isinstance(e, NoCredentialsError):
        return DatasetError(
            f"dataset.path: no credentials to read {uri!r}; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or dataset.storage_options: {anon: true} "
            "for a public bucket"
        )
    if isinstance(e, (BotoCoreError, OSError)):
        return DatasetError(
            f"dataset.path: cannot read {uri!r} from {endpoint_of(fs)} ({e}); check that the "
            "endpoint is right and reachable (AWS_ENDPOINT_URL or "
            "dataset.storage_options.endpoint_url)"
        )
    return e


def _key(uri: str) -> str:
    """s3://bucket/prefix → bucket/prefix, as s3fs names objects."""
    return uri.removeprefix("s3://").rstrip("/")
