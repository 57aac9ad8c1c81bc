"""Errors a user can cause: each names the input that is wrong and how to fix it.

The CLI prints them without a traceback and exits with code 2. Bugs still raise ordinary exceptions.
"""

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# `scheme://user:password@host`: the password, up to the @ that the host follows (one with an @
# in it showed its end, `u:***@ss@host`; one with a / in it is whole too)
_PASSWORD_IN_URL = re.compile(
    r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]*):\S*?@(?=[^\s@/]*(?:[/\s]|$))", re.IGNORECASE
)
# `scheme://token@host`: a token given as the user name (GitHub's, a cloud's), shown whole
_TOKEN_IN_URL = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^\s:/@]+@", re.IGNORECASE)


# Characters a terminal acts on instead of showing (C0 and C1 controls, DEL; bidirectional
# overrides, which reorder what follows): a file or class name holding them cleared the screen,
# recoloured it, or broke a line in two (QA pass 28).
_UNSHOWN = frozenset(
    [*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)


def visible(name: str) -> str:
    """A name as it can be printed: every character a terminal would act on written as Python
    writes it in a string (`\x1b`, `\n`), the rest as it is."""
    if not has_unshown(name):
        return name
    return "".join(ascii(ch)[1:-1] if ord(ch) in _UNSHOWN else ch for ch in name)


def has_unshown(name: str) -> bool:
    """Whether a name holds characters a terminal would act on (see `visible`)."""
    return any(ord(ch) in _UNSHOWN for ch in name)


def hide_password(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***: a tracking URI
    (`http://user:password@host`, `postgresql://user:password@host/db`) is printed in messages
    and was stored whole in a search's `experiment.yaml`; a user name alone (a token given as
    one: `https://ghp_…@host`) is hidden whole."""
    return _TOKEN_IN_URL.sub(r"\1***@", _PASSWORD_IN_URL.sub(r"\1:***@", text))


def settings_without_password(settings: dict) -> dict:
    """An experiment's settings (`model_dump(mode="json")`) as they are stored or handed on:
    its tracking URI's password hidden (`hide_password`), in place; the settings."""
    uri = settings.get("tracking", {}).get("uri")
    if isinstance(uri, str):
        settings["tracking"]["uri"] = hide_password(uri)
    return settings


class LeanfitError(Exception):
    """A mistake in what the user gave leanfit (a file, a flag, a dataset)."""


class ConfigError(LeanfitError):
    """The experiment file is invalid; the message starts with the field's path."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


class DatasetError(LeanfitError):
    """The dataset cannot be read: missing folder, no images, absent download."""


class GenotypeError(LeanfitError):
    """A configuration does not belong to the search space."""


class TrialFailed(Exception):
    """A trial ended without a usable result (NaN loss, out of memory); carries the reason."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def causes(e: BaseException | None) -> Iterator[BaseException]:
    """An exception, then what caused it or was being handled when it was raised, and so on."""
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def disk_full(e: BaseException | None) -> str | None:
    """What could not be written, where an exception (or its cause) is a full disk or quota:
    an OSError ENOSPC/EDQUOT (a checkpoint, a report) or SQLite's `database or disk is full`
    (the tracking database). None otherwise (a file-size limit included: see `write_refused`)."""
    import errno

    for cause in causes(e):
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{cause.filename}" if cause.filename else "a file"
        if "database or disk is full" in str(cause):
            return "the tracking database"
    return None


def file_size_limit() -> str:
    """This process's file-size limit as a user sets it (`ulimit -f`, in KiB), with what it
    means; "a file-size limit (ulimit -f)" where none is set here (a limit a worker had)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft == resource.RLIM_INFINITY:
        return "a file-size limit (ulimit -f)"
    size = f"{soft / 2**20:.1f} MiB" if soft >= 2**20 else f"{soft / 1024:.0f} KiB"
    return f"a file-size limit (ulimit -f {soft // 1024}: no file over {size})"


def _under(path: str, folders: Sequence[str | Path]) -> bool:
    """Whether `path` is one of `folders` or inside one of them."""
    import os

    where = os.path.abspath(path)
    return any(
        where == (top := os.path.abspath(folder)) or where.startswith(top.rstrip(os.sep) + os.sep)
        for folder in folders
    )


@dataclass(frozen=True)
class WriteRefused:
    """The system refused a write that every job writing there would meet too: a full disk or
    quota, a file-size limit, or (in leanfit's own folders) a folder or file system that cannot
    be written. `said`: what could not be written and why; `fix`: what to do first."""

    said: str
    fix: str

    def __str__(self) -> str:
        return f"{self.said}. {self.fix}"


def write_refused(
    e: BaseException | None, folders: Sequence[str | Path] = ()
) -> WriteRefused | None:
    """What an exception (or its cause) says, where it is a write the place refused: ENOSPC or
    EDQUOT (and SQLite's `database or disk is full`), EFBIG (a file-size limit, `ulimit -f`),
    or EACCES, EPERM, EROFS on a path in one of `folders` (the search's work folder, its
    checkpoints: leanfit's own files; the same errors on any other path are the trial's own, an
    objective's file of its own). None otherwise."""
    import errno
    import os

    full = disk_full(e)
    if full is not None:
        said = next((c.strerror for c in causes(e) if isinstance(c, OSError) and c.strerror), None)
        return WriteRefused(
            f"the disk is full: {full} could not be written" + (f" ({said})" if said else ""),
            "Free space (or move "
            + ("the tracking database)" if full == "the tracking database" else "work_dir)"),
        )
    for cause in causes(e):
        if not isinstance(cause, OSError):
            continue
        what = cause.filename or "a file"
        if cause.errno == errno.EFBIG:
            return WriteRefused(
                f"File too large: {file_size_limit()} stopped {what} from being written",
                "Raise the limit (`ulimit -f unlimited`, or the limits of the service or "
                "container that runs leanfit)",
            )
        paths = [str(p) for p in (cause.filename, cause.filename2) if p is not None]
        if cause.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and any(
            _under(p, folders) for p in paths
        ):
            folder = paths[0] if os.path.isdir(paths[0]) else os.path.dirname(paths[0])
            return WriteRefused(
                f"the folder {folder} cannot be written ({cause.strerror}): {what} could not "
                "be written",
                f"Make it writable (chmod u+w {folder}; a read-only file system remounted "
                "read-write), or give another work_dir",
            )
    return None


# How a job's failure reason starts when the place refused its write (`write_refused`): the
# controller stops the search then (every job would fail the same way) and leaves the job to run
# again on resume. The rest of the reason is what `write_refused` says.
DISK_FULL = "cannot write: "


def failure_reason(e: BaseException, tb: str, folders: Sequence[str | Path] = ()) -> str:
    """A failed trial job's reason: the exception and its traceback, or `DISK_FULL` and what
    could not be written (`write_refused`; `folders`: the job's own, where its checkpoints go)."""
    refused = write_refused(e, folders)
    if refused is not None:
        return f"{DISK_FULL}{refused}"
    return f"{type(e).__name__}: {e}\n{tb}"
