"""Errors a user can cause: each names the input that is wrong and how to fix it.

The CLI prints them without a traceback and exits with code 2. Bugs still raise ordinary exceptions.
"""


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
