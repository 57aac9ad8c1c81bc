"""Errors a user can cause: each names the input that is wrong and how to fix it.

The CLI prints them without a traceback and exits with code 2. Bugs still raise ordinary exceptions.
"""

import re
from collections.abc import Iterator

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
    if not any(ord(ch) in _UNSHOWN for ch in name):
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
    (the tracking database). None otherwise."""
    import errno

    for cause in causes(e):
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{cause.filename}" if cause.filename else "a file"
        if "database or disk is full" in str(cause):
            return "the tracking database"
    return None


# How a job's failure reason starts when the disk was full: the controller stops the search then
# (every job would fail the same way) and leaves the job to run again on resume
DISK_FULL = "disk full: "


def failure_reason(e: BaseException, tb: str) -> str:
    """A failed trial job's reason: the exception and its traceback, or `DISK_FULL` and what
    could not be written."""
    what = disk_full(e)
    if what is not None:
        said = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
        return f"{DISK_FULL}{what} could not be written ({said})"
    return f"{type(e).__name__}: {e}\n{tb}"
