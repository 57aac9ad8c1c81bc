"""The experiment file: one validated model of it.

Everything leanfit does is configured here and flows in as arguments from this model. A bad file
stops at load time with the field's path and what to do about it (ConfigError), before anything is
written. Relative dataset paths are resolved against the experiment file's folder, so a file means
the same thing wherever it is run from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from leanfit.errors import ConfigError
from leanfit.space.architecture import ACTIVATIONS, BLOCK_PARAMS, MODULES, architecture_params
from leanfit.space.spec import Param, SearchSpace

# Hyper-parameters the trainer understands, with the value used when the space does not name them.
HYPERPARAMETER_DEFAULTS: dict[str, Any] = {
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "nesterov": True,
    "beta1": 0.9,
    "beta2": 0.999,
    "weight_decay": 5e-4,
    "batch_size": 128,
    "label_smoothing": 0.0,
    "randaugment_n": 2,
    "randaugment_m": 9,
}
OPTIMIZERS = ("sgd", "adamw")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 (and JSON, and Python's `json`) write
    them. YAML 1.1's own rules made `1e-05` a string (a genotype copied from `leanfit report
    --json` was refused: `'1e-05' is not a number`; a choice written `1e-3` was a string),
    `wall_time: 1:30` the number 90 (base 60: a budget of 90 seconds, said nowhere), and `010`
    the number 8. Now `1e-05` and `3E4` are numbers, `1:30` is text (a duration is refused
    without its unit), `010` is 10 and `0o10` is 8; `1_000` stays 1000. True and false are
    YAML 1.1's still (`yes`, `no`, `on`, `off` too)."""


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def _yaml_12_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)  # (a leading 0 is not octal, as it was)


_Loader.add_constructor(_INT, _yaml_12_int)


def load_yaml(text: str) -> Any:
    """YAML text read safely, numbers as YAML 1.2 reads them (see `_Loader`)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


# The fewest pixels a side an image is trained at (the resolution fidelity, a spec's resolution)
MIN_RESOLUTION = 4
# The largest seed (torch.manual_seed takes a signed 64-bit number)
MAX_SEED = 2**63 - 1
# ... and in the experiment file (scikit-optimize's and NumPy's legacy generators take 32 bits)
MAX_FILE_SEED = 2**32 - 1

_SUFFIX = {"k": 1_000, "K": 1_000, "m": 1_000_000, "M": 1_000_000}
_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_count(value: Any) -> Any:
    """'100k' → 100000, '1.5M' → 1500000; numbers pass through for pydantic to judge."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmM]?)\s*", value)
        if not m:
            raise ValueError(f"{value!r} is not a count; write e.g. 2000, 20k, 1.5M")
        return int(float(m.group(1)) * _SUFFIX.get(m.group(2), 1))
    return value


def parse_duration(value: Any) -> Any:
    """'10m' → 600.0 seconds, '2h' → 7200.0, '90s' or 90 → 90.0."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", value)
        if not m:
            raise ValueError(f"{value!r} is not a duration; write e.g. 90s, 10m, 2h")
        return float(m.group(1)) * _DURATION.get(m.group(2) or "s", 1)
    return value


def unitless_duration(value: Any) -> str | None:
    """The number, where a duration is a positive number written as a string without its unit
    ("5"): `parse_duration` takes it as seconds (as a YAML number), but given on a command line
    or to `leanfit.optimize` it is as likely meant as minutes, so the unit is asked for."""
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]*\.?[0-9]+\s*", value):
        return value.strip() if float(value) > 0 else None
    return None


Count = Annotated[int, Field(gt=0)]


# Options of s3fs / botocore that carry secrets: they come from the environment, never the file.
_CREDENTIAL_OPTIONS = frozenset(
    {
        "key",
        "secret",
        "token",
        "username",
        "password",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
    }
)


def _looks_secret(name: str) -> bool:
    """A setting's name that says it holds a credential (AWS_SECRET_ACCESS_KEY, HF_TOKEN,
    MLFLOW_TRACKING_PASSWORD, SSECustomerKey, api_key)."""
    if name.lower() in _CREDENTIAL_OPTIONS:
        return True
    # its words, split at _ - . and camelCase (TOKENIZERS_PARALLELISM is no token)
    words = {w.lower() for w in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)}
    return bool(words & {"secret", "password", "passwd", "token", "credential", "credentials"}) or (
        "key" in words and bool(words & {"access", "api", "private", "customer", "secret"})
    )


def _credentials_in(options: Any, path: str = "") -> list[str]:
    """The credentials in a nested mapping of options, by their dotted names: by name, or a
    URL with a user name in it."""
    from leanfit.errors import hide_password

    found = []
    if isinstance(options, dict):
        for key, value in options.items():
            name = f"{path}{key}"
            if _looks_secret(str(key)) and value not in (None, "", False):
                found.append(name)
            else:
                found += _credentials_in(value, f"{name}.")
    elif isinstance(options, list):
        for i, value in enumerate(options):
            found += _credentials_in(value, f"{path}{i}.")
    elif isinstance(options, str) and hide_password(options) != options:
        found.append(path.rstrip("."))
    return found


def tracking_uri_or_default(uri: str | None) -> str:
    """The tracking URI given, else $MLFLOW_TRACKING_URI, else MLflow 3's own default."""
    import os

    return uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


DatasetSource = Literal["digits", "imagefolder", "cifar10"]
DATASET_SOURCES = get_args(DatasetSource)


class DatasetConfig(Strict):
    source: DatasetSource
    path: str | None = None
    storage_options: dict[str, Any] | None = Field(
        None,
        description="s3:// paths only: options for s3fs.S3FileSystem, e.g. {endpoint_url: ..., "
        "anon: false}; credentials come from the environment, never from the file",
    )
    image_size: int = Field(16, ge=4, le=1024)
    channels: Literal[1, 3] | None = None
    classes: list[str] | None = None
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    split: Literal["auto", "stable", "shuffled"] = Field(
        "auto",
        description="how the validation and test splits are drawn: `stable`: each image by its "
        "file's content (its pixels for digits, cifar10) and the seed, so it stays in its split "
        "as the dataset grows or changes, and copies of a file share a split (each class gets "
        "its fractions on average); `shuffled`: a seeded shuffle of each class (its fractions "
        "exactly), drawn again whenever the dataset changes; `auto`: stable for imagefolder "
        "(data that changes), shuffled for the fixed digits and cifar10",
    )
    search_fraction: float = Field(1.0, gt=0, le=1)
    download: bool = False
    empty_classes: Literal["error", "skip"] = "error"
    background: Literal["white", "black"] = Field(
        "white",
        description="imagefolder: what a transparent pixel (a PNG, WebP or GIF with an alpha "
        "channel: icons, logos, cut-outs) is drawn on; black shows a white-on-transparent glyph",
    )
    fit: Literal["squeeze", "crop", "pad"] = Field(
        "squeeze",
        description="imagefolder: how an image that is not square becomes image_size x "
        "image_size: squeezed whole (its shapes stretched), its centre square cropped (its edges "
        "lost), or padded to a square with the background colour (smaller, nothing lost)",
    )
    layout: Literal["auto", "classes", "splits"] = Field(
        "auto",
        description="imagefolder: `classes`: each folder in path is a class; `splits`: path holds "
        "train/ (and val/, test/) folders of class folders, used as the splits (the ones missing "
        "are drawn from train/ by val_fraction and test_fraction); `auto`: splits when folders "
        "named so hold class folders",
    )
    labels: str | None = Field(
        None,
        description="imagefolder: a CSV file of (file, label) rows with a header, for images in "
        "one folder rather than a folder per class; files are named relative to path, with or "
        "without their extension",
    )
    label_columns: list[str] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="labels: the names of the file and label columns, where the CSV has more "
        "than those two and they are not named file/label (or id/class, image/category, ...)",
    )
    seed: int = Field(0, ge=0, le=MAX_FILE_SEED)

    @property
    def stable_splits(self) -> bool:
        """Whether the splits are drawn image by image (`split`, with `auto` resolved)."""
        return self.split == "stable" or (self.split == "auto" and self.source == "imagefolder")

    @field_validator("classes", mode="before")
    @classmethod
    def _numbered_classes(cls, value: Any) -> Any:
        # folders named 0..9, written `classes: [2, 10, 1]`: the folders' names (a decimal or
        # 1e5 stays refused: which spelling of it names the folder is not known)
        if isinstance(value, list):
            return [
                str(v) if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else v
                for v in value
            ]
        return value

    @field_validator("source", mode="before")
    @classmethod
    def _source_is_a_kind(cls, value: Any) -> Any:
        # A folder given as the source (the most natural first guess) names the fix
        is_a_folder = isinstance(value, str) and Path(value).is_dir()
        looks_like_a_folder = is_a_folder or (
            isinstance(value, str) and ("/" in value or "\\" in value or value.startswith("."))
        )
        if looks_like_a_folder and value not in DATASET_SOURCES:
            raise ValueError(
                f"{value!r} {'is' if is_a_folder else 'looks like'} a folder, and source names "
                "the kind of dataset (digits, imagefolder or cifar10): for a folder of class "
                f"folders write `source: imagefolder` and `path: {value}`"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        if self.source == "imagefolder" and not self.path:
            raise ValueError(
                "path: an imagefolder dataset needs `path` (a folder of class folders)"
            )
        if self.path and "://" in self.path:
            if not self.path.startswith("s3://"):
                raise ValueError(
                    f"path: {self.path!r} is neither a local folder nor an s3:// URI; "
                    "give a folder or s3://bucket/prefix"
                )
            if self.source != "imagefolder":
                raise ValueError(
                    f"path: source {self.source} reads a local folder; "
                    "s3:// paths are for source: imagefolder"
                )
            bucket = self.path[len("s3://") :].split("/", 1)[0]
            if not bucket:
                raise ValueError(f"path: {self.path!r} names no bucket; write s3://bucket/prefix")
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,255}", bucket):
                raise ValueError(
                    f"path: {bucket!r} is not a bucket name; "
                    "bucket names are letters, digits, '.', '-' and '_'"
                )
        if self.storage_options is not None:
            if self.s3_uri is None:
                raise ValueError(
                    "storage_options: only an s3:// path takes storage options; remove them"
                )
            # at any depth (config_kwargs, s3_additional_kwargs: SSECustomerKey), and a URL
            # with a user and password in it (endpoint_url: http://key:secret@minio:9000)
            secrets = sorted(_credentials_in(self.storage_options))
            if secrets:
                raise ValueError(
                    f"storage_options: {secrets} are credentials; remove them from the file and "
                    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the "
                    "environment"
                )
        if self.labels is not None:
            if self.source != "imagefolder":
                raise ValueError("labels: a labels CSV is for source: imagefolder")
            if self.s3_uri is not None or "://" in self.labels:
                raise ValueError(
                    "labels: a labels CSV is read for a local folder only; for a bucket, put "
                    "each class's images under a prefix of its own (s3://bucket/prefix/cat/...)"
                )
            if self.layout == "splits":
                raise ValueError(
                    "layout: splits reads classes from folders, labels from a CSV; use one"
                )
        elif self.label_columns is not None:
            raise ValueError("label_columns: names the columns of `labels`, which is not set")
        if self.val_fraction + self.test_fraction > 0.9 + 1e-9:  # (0.45 + 0.45 leaves 10%)
            raise ValueError(
                "val_fraction + test_fraction must leave at least 10% of images for training"
            )
        if self.classes is not None and len(set(self.classes)) < 2:
            raise ValueError("classes: list at least two distinct classes")
        return self

    @property
    def s3_uri(self) -> str | None:
        """The path as s3://bucket/prefix (no trailing slash) when it is in S3, else None."""
        if self.path is None or not self.path.startswith("s3://"):
            return None
        return self.path.rstrip("/")

    @property
    def num_channels(self) -> int:
        if self.channels is not None:
            return self.channels
        return 1 if self.source == "digits" else 3


class Dim(Strict):
    """A searched range written as a mapping: {choices: [...]} or {low, high[, log]}."""

    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    type: Literal["categorical", "integer", "real"] | None = None
    when: dict[str, list[Any]] | None = None

    @model_validator(mode="after")
    def _check(self) -> Dim:
        has_range = self.low is not None or self.high is not None
        if self.choices is not None and has_range:
            raise ValueError("give either `choices` or `low`/`high`, not both")
        if self.choices is None and not has_range:
            raise ValueError("give `choices: [...]` or `low` and `high`")
        if self.choices is not None and len(self.choices) == 0:
            raise ValueError("choices: must not be empty")
        odd = [c for c in self.choices or [] if c is not None and not isinstance(c, _SCALARS)]
        if odd:
            raise ValueError(
                f"choices: {odd[0]!r} is not a number, string, true/false or null; to choose among "
                "structures, choose among names and look the structure up by its name"
            )
        # (3 and 3.0 are one choice; 1 and True are two)
        given = [
            ("number", float(c)) if isinstance(c, int | float) and not isinstance(c, bool)
            else (type(c), c)
            for c in self.choices or []
        ]  # fmt: skip
        twice = next((c for c, g in zip(self.choices or [], given, strict=True)
                      if given.count(g) > 1), None)  # fmt: skip
        if len(set(given)) < len(given):
            raise ValueError(
                f"choices: {twice!r} is given twice; give each choice once (the search would "
                "try it twice as often)"
            )
        if has_range:
            if self.low is None or self.high is None:
                raise ValueError("a range needs both `low` and `high`")
            for end, value in (("low", self.low), ("high", self.high)):
                if not math.isfinite(value):  # (inf: every proposal was inf)
                    raise ValueError(f"{end}: {value} is not a finite number; give one")
            if self.low > self.high:
                raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError(f"a log scale needs low > 0, got {self.low}")
        if self.when is not None and len(self.when) != 1:
            raise ValueError("when: name exactly one parent, e.g. `when: {optimizer: [sgd]}`")
        return self

    def to_param(self, name: str, parent: str | None = None, values=()) -> Param:
        kind = self.type
        if kind is None:
            if self.choices is not None:
                kind = "categorical"
            else:
                ints = float(self.low).is_integer() and float(self.high).is_integer()
                kind = "integer" if ints else "real"
        if kind == "categorical":
            if self.choices is None:
                raise ValueError("type categorical needs `choices`")
            return Param(
                name, "categorical", tuple(self.choices), parent=parent, parent_values=values
            )
        if self.choices is not None:
            raise ValueError(f"type {kind} needs `low` and `high`, not `choices`")
        low, high = (int(self.low), int(self.high)) if kind == "integer" else (self.low, self.high)
        return Param(
            name, kind, low=low, high=high, log=self.log, parent=parent, parent_values=values
        )


DimLike = Dim | list[Any] | int | float | str | bool


_SCALARS = (str, int, float, bool)


def _as_dim(value: DimLike, name: str | None = None) -> Dim:
    """A range from a `Dim`, a list of choices or a fixed value; a mistake in the list (empty,
    a choice that is not one value) is a ValueError naming `name`."""
    if isinstance(value, Dim):
        return value
    try:
        return Dim(choices=value if isinstance(value, list) else [value])
    except ValidationError as e:
        problem = str(e.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ValueError(f"{name}: {problem}" if name else problem) from None


class ArchitectureSpace(Strict):
    blocks: int = Field(7, ge=1, le=32)
    modules: list[str] = Field(default_factory=lambda: list(MODULES))
    stem_width: DimLike = [4, 8, 16, 24]
    width: DimLike = [4, 8, 12, 16, 24, 32, 48, 64]
    kernel: DimLike = [3, 5]
    stride: DimLike = [1, 2]
    expansion: DimLike = [2, 4, 6]
    se: DimLike = [False, True]
    repeats: DimLike = [1, 2]
    activation: DimLike = ["relu", "hardswish"]

    @field_validator("modules")
    @classmethod
    def _modules(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in MODULES]
        if unknown:
            raise ValueError(f"unknown module type(s) {unknown}; choose from {list(MODULES)}")
        if not value:
            raise ValueError(f"list at least one module type from {list(MODULES)}")
        if len(set(value)) != len(value):
            raise ValueError("a module type is listed twice")
        return value

    @model_validator(mode="after")
    def _values(self) -> ArchitectureSpace:
        checks = {
            "stem_width": lambda v: _positive_int(v),
            "width": lambda v: _positive_int(v),
            "kernel": lambda v: _positive_int(v) and v % 2 == 1,
            "stride": lambda v: v in (1, 2),
            "expansion": lambda v: _positive_int(v),
            "se": lambda v: isinstance(v, bool),
            "repeats": lambda v: _positive_int(v) and v <= 8,
            "activation": lambda v: v in ACTIVATIONS,
        }
        wants = {
            "stem_width": "positive integers",
            "width": "positive integers",
            "kernel": "odd positive integers (3, 5, 7)",
            "stride": "1 or 2",
            "expansion": "positive integers",
            "se": "true or false",
            "repeats": "integers from 1 to 8",
            "activation": f"names from {list(ACTIVATIONS)}",
        }
        for name, ok in checks.items():
            dim = _as_dim(getattr(self, name), name)
            if dim.when is not None:
                raise ValueError(f"{name}: `when` is implied for block parameters; remove it")
            values = dim.choices if dim.choices is not None else [dim.low, dim.high]
            bad = [v for v in values if not ok(v)]
            if bad:
                raise ValueError(f"{name}: {bad} not allowed; use {wants[name]}")
            # a choice is used as written: 3.0 reached torch as a float, and every trial failed
            floats = [v for v in dim.choices or [] if isinstance(v, float)]
            if floats and name not in ("se", "activation"):  # (the rest are whole numbers)
                whole = ", ".join(str(int(v)) for v in floats)
                raise ValueError(f"{name}: {floats} written as decimals; write {whole}")
        return self

    def params(self) -> list[Param]:
        dims = {name: _as_dim(getattr(self, name)).to_param(name) for name in BLOCK_PARAMS}
        dims["stem_width"] = _as_dim(self.stem_width).to_param("stem_width")
        return architecture_params(self.blocks, tuple(self.modules), dims)


def _positive_int(v: Any) -> bool:
    return (
        isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() and v > 0
    )


class SpaceConfig(Strict):
    architecture: ArchitectureSpace = Field(default_factory=ArchitectureSpace)
    hyperparameters: dict[str, DimLike] = Field(default_factory=dict)

    @field_validator("hyperparameters")
    @classmethod
    def _known(cls, value: dict[str, DimLike]) -> dict[str, DimLike]:
        unknown = sorted(set(value) - set(HYPERPARAMETER_DEFAULTS))
        if unknown:
            raise ValueError(
                f"unknown hyper-parameter(s) {unknown}; known: {sorted(HYPERPARAMETER_DEFAULTS)}"
            )
        optimizer = value.get("optimizer")
        if optimizer is not None:
            choices = _as_dim(optimizer, "optimizer").choices or []
            bad = [c for c in choices if c not in OPTIMIZERS]
            if bad:
                raise ValueError(f"optimizer: {bad} unknown; choose from {list(OPTIMIZERS)}")
        return value

    def search_space(self) -> SearchSpace:
        params = self.architecture.params()
        params += conditional_params(self.hyperparameters, "space.hyperparameters")
        return SearchSpace(params)


def conditional_params(dims: Mapping[str, DimLike], where: str) -> list[Param]:
    """The parameters of named ranges (`Dim`s, lists, fixed values), parents before children:
    a `when` names a parent among `dims`. `where` prefixes the field path of a mistake."""
    pending: dict[str, Dim] = {}
    for name, value in dims.items():
        try:
            pending[name] = _as_dim(value)
        except ValueError as e:
            raise ConfigError(f"{where}.{name}", str(e)) from None
    params: list[Param] = []
    done: set[str] = set()
    # Parents before children: repeat passes until nothing moves (the tree is small).
    while pending:
        moved = False
        for name, dim in list(pending.items()):
            parent = next(iter(dim.when)) if dim.when else None
            if parent is not None and parent not in dims:
                raise ConfigError(
                    f"{where}.{name}.when",
                    f"parent {parent!r} is not a parameter of the space; "
                    f"define `{parent}` under {where} or remove `when`",
                )
            if parent is not None and parent not in done:
                continue
            try:
                values = tuple(dim.when[parent]) if parent else ()
                params.append(dim.to_param(name, parent, values))
            except ValueError as e:
                raise ConfigError(f"{where}.{name}", str(e)) from None
            if parent is not None:
                of = next(p for p in params if p.name == parent)
                never = _never_taken(of, values)
                if never is not None:  # (the parameter would silently never be searched)
                    raise ConfigError(f"{where}.{name}.when", never)
            done.add(name)
            del pending[name]
            moved = True
        if not moved:
            raise ConfigError(
                where, f"the `when` conditions of {sorted(pending)} form a cycle; break it"
            )
    return params


def _never_taken(parent: Param, values: tuple[Any, ...]) -> str | None:
    """Why a `when: {parent: values}` condition names values the parent never takes (a
    misspelt choice, a number outside its range, a real range's exact point), else None."""
    if not values:
        return f"no value of {parent.name!r} is given; list the ones it exists for"
    if parent.kind == "categorical":
        missing = [v for v in values if v not in parent.choices]
        if missing:
            return (
                f"{missing[0]!r} is not one of {parent.name!r}'s choices "
                f"{list(parent.choices)}; name values it takes"
            )
        return None
    if parent.kind == "real":
        return (
            f"{parent.name!r} is a real range, which takes no exact value; make it a list of "
            "choices to condition on it"
        )
    outside = [
        v
        for v in values
        if isinstance(v, bool)
        or not isinstance(v, int | float)
        or not float(v).is_integer()
        or not parent.low <= v <= parent.high
    ]
    if outside:
        return (
            f"{outside[0]!r} is not a whole number from {parent.low} to {parent.high}, the "
            f"values {parent.name!r} takes"
        )
    return None


def space_from_mapping(data: Any, where: str = "space") -> SearchSpace:
    """A search space of one's own (`leanfit.optimize(..., space=...)`), written as the file's
    `space.hyperparameters` are: a name to a list of choices, a range `{low, high[, log, type]}`
    (integers when both bounds are), or one fixed value; `when: {parent: [values]}` makes a
    parameter exist only for those values of another. A mistake raises ConfigError naming it."""
    from pydantic import TypeAdapter

    if not isinstance(data, Mapping) or not data:
        raise ConfigError(
            where,
            "give a mapping of parameter names to ranges, e.g. {'lr': {'low': 1e-4, 'high': "
            "0.1, 'log': True}, 'width': [8, 16, 32]}",
        )
    bad = [k for k in data if not isinstance(k, str) or not k]
    if bad:
        raise ConfigError(where, f"parameter names must be non-empty strings, got {bad!r}")
    dims: dict[str, DimLike] = {}
    for name, value in data.items():
        if isinstance(value, tuple):  # (low, high), as Python writes a range
            if len(value) != 2:
                raise ConfigError(
                    f"{where}.{name}", f"a tuple is a range (low, high), got {len(value)} values"
                )
            value = {"low": value[0], "high": value[1]}
        choices = value.get("choices") if isinstance(value, Mapping) else value
        if isinstance(choices, set | frozenset):
            # its order changes from one process to the next (string hashing), and with it
            # the encoding, the search's key (`resume=True` never found it again) and the seeds
            raise ConfigError(
                f"{where}.{name}",
                f"a set has no order, which changes from one run to the next; give a list, e.g. "
                f"{sorted(choices, key=repr)!r}",
            )
        if value is None or isinstance(value, Mapping) and not value:
            raise ConfigError(
                f"{where}.{name}",
                f"{value!r} is not a range; give a list of choices, {{'low': ..., 'high': ...}} "
                "or one fixed value",
            )
        try:
            dims[name] = TypeAdapter(DimLike).validate_python(value)
        except ValidationError as e:
            found = _config_error(e)
            problem = found.problem.split("\n")[0].replace(" (see examples/digits.yaml)", "")
            path = f"{where}.{name}" + (f".{found.field}" if found.field else "")
            raise ConfigError(path, problem) from None
    return SearchSpace(conditional_params(dims, where))


class Objective(Strict):
    metric: Literal["val_accuracy", "params", "macs"]
    goal: Literal["maximize", "minimize"]

    @model_validator(mode="after")
    def _direction(self) -> Objective:
        # the other way is a typo, never a search: the least accurate or the largest models
        wanted = "maximize" if self.metric == "val_accuracy" else "minimize"
        if self.goal != wanted:
            raise ValueError(
                f"{self.metric}: goal {self.goal} would search for the "
                f"{'least accurate' if wanted == 'maximize' else 'largest'} models; "
                f"write goal: {wanted}"
            )
        return self


class ObjectivesConfig(Strict):
    targets: list[Objective] = Field(
        default_factory=lambda: [
            Objective(metric="val_accuracy", goal="maximize"),
            Objective(metric="params", goal="minimize"),
        ],
        min_length=1,
    )
    max_params: int | None = Field(None, gt=0)
    max_macs: int | None = Field(None, gt=0)

    _counts = field_validator("max_params", "max_macs", mode="before")(
        classmethod(lambda cls, v: parse_count(v))
    )

    @field_validator("targets")
    @classmethod
    def _once_each(cls, targets: list[Objective]) -> list[Objective]:
        metrics = [t.metric for t in targets]
        twice = sorted({m for m in metrics if metrics.count(m) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed more than once; list each metric once")
        return targets

    def size_metric(self) -> str | None:
        """The size objective EHVI measures the front by: "params" or "macs" when the targets
        are exactly validation accuracy and that one; None otherwise (EHVI does not apply)."""
        metrics = sorted(t.metric for t in self.targets)
        return (
            metrics[0]
            if metrics in (["params", "val_accuracy"], ["macs", "val_accuracy"])
            else None
        )


class BudgetConfig(Strict):
    min_epochs: Count = 1
    max_epochs: Count = 10
    min_data_fraction: float = Field(1.0, gt=0, le=1)
    min_resolution: int | None = Field(None, ge=MIN_RESOLUTION)
    wall_time: float | None = Field(None, gt=0, description="seconds; accepts 90s, 10m, 2h")
    trials: int | None = Field(None, gt=0)
    gpu_hours: float | None = Field(
        None, description="not supported yet: refused, with the wall_time to give instead"
    )

    _duration = field_validator("wall_time", mode="before")(
        classmethod(lambda cls, v: parse_duration(v))
    )

    @field_validator("gpu_hours", mode="before")
    @classmethod
    def _no_gpu_hours(cls, value: Any) -> Any:
        # (it was accepted and then had no effect: a search without wall_time or trials was
        # refused for want of a budget, and with one ran by that budget alone)
        if value is not None:
            raise ValueError(
                "not supported yet: a search is budgeted by wall_time or trials; give "
                "wall_time as the GPU-hours over the GPUs it uses at once (24 GPU-hours on 4 "
                "GPUs: wall_time: 6h), and remove gpu_hours"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> BudgetConfig:
        if self.min_epochs > self.max_epochs:
            raise ValueError(
                f"min_epochs ({self.min_epochs}) must be <= max_epochs ({self.max_epochs})"
            )
        return self


class StrategyConfig(Strict):
    name: Literal["skopt", "random", "evolution"] = "skopt"
    surrogate: Literal["GP", "RF", "ET"] = "ET"
    acquisition: Literal["EI", "LCB", "PI", "gp_hedge"] = "EI"
    ehvi_share: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="skopt: the share of proposals that maximise the expected hypervolume "
        "improvement of the front over (log10 size, validation error); the others use "
        "`acquisition` on a ParEGO scalarisation (default: 0.5 with the two objectives "
        "val_accuracy and params or macs, else 0)",
    )
    gap_share: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="skopt: the share of proposals, out of ehvi_share, made by EHVI among "
        "candidates whose size falls inside the widest gap in size between neighbours on the "
        "front, so that a stretch of sizes the front skips gets trials of its own (default: "
        "half of ehvi_share)",
    )
    initial_points: int = Field(10, ge=1)
    fit_on: Literal["top_rung", "all_rungs"] = Field(
        "all_rungs",
        description="skopt: fit the surrogate on the results at the highest rung with enough of "
        "them (BOHB), or on every trial's latest result with its rung's budget as an input; "
        "evolution: its population of the results at that rung, or of every trial's latest",
    )
    crossover_samples: int = Field(
        50,
        ge=0,
        description="skopt: candidates at each ask that join one good result's architecture "
        "with another's training hyper-parameters (the best results, or the front with EHVI); "
        "0: none (on the synthetic benchmark, 50 against 0: a larger hypervolume at 10 minutes "
        "in 14 of 20 seeds, the small-model target at a median 61 s instead of 100 s, 12% more "
        "CPU for proposals)",
    )
    seed: int = Field(0, ge=0, le=MAX_FILE_SEED)
    warm_start: bool = Field(
        True,
        description="start from the last finished search with the same settings on other data "
        "(a changed dataset): its results are told, its best configurations run first",
    )
    warm_recheck: int = Field(8, ge=0, description="earlier configurations re-checked first")

    @field_validator("surrogate", mode="before")
    @classmethod
    def _gbrt(cls, v: Any) -> Any:
        if isinstance(v, str) and v.upper() == "GBRT":
            raise ValueError(
                "GBRT does not work with scikit-learn >= 1.6 (scikit-optimize is archived); "
                "use ET or RF for conditional spaces, GP for small continuous ones"
            )
        return v.upper() if isinstance(v, str) else v


class SchedulerConfig(Strict):
    name: Literal["asha", "hyperband", "none"] = "asha"
    eta: int = Field(3, ge=2)
    curve_stop: bool = Field(
        False,
        description="stop a trial once its learning curve, extrapolated optimistically to "
        "budget.max_epochs, stays below the validation accuracy that a finished trial with no "
        "more parameters reached there (it would be dominated); the trial keeps its result at "
        "the epochs it reached and is never promoted (see leanfit.train.curve)",
    )
    rank: Literal["pareto", "scalar"] = Field(
        "pareto",
        description="how a rung's results are ranked for promotion with several objectives: "
        "by non-dominated sorting and crowding distance (MO-ASHA), so the promoted third spread "
        "along the rung's front, or by an equal-weight scalarisation",
    )
    keep_checkpoints: Literal["front", "all"] = Field(
        "front",
        description="what a finished search keeps of its trials' checkpoints: the Pareto "
        "models' (the rest are only there for promotions, and a long search's add up to "
        "gigabytes), or all of them; an interrupted search keeps all to resume",
    )


_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_TOLERATION_KEYS = frozenset({"key", "operator", "value", "effect", "tolerationSeconds"})


class KubernetesConfig(Strict):
    """How the search's trials run as Kubernetes Jobs (see `leanfit.execute.kubernetes`)."""

    namespace: str = Field("leanfit", pattern=_DNS_LABEL)
    image: str = "ghcr.io/leanfit/leanfit:0.1.0"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    gpus: int = Field(0, ge=0)
    gpu_type: str | None = Field(
        None, description="node label nvidia.com/gpu.product to select, e.g. Tesla-V100-SXM2-16GB"
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    cpu: str | None = Field(None, description="CPU request and limit of a trial pod, e.g. '4'")
    memory: str | None = Field(None, description="memory request and limit, e.g. '8Gi'")
    max_in_flight: Count = 4
    pvc: str | None = Field(
        None, description="claim holding work_dir, mounted at mount_path in every trial pod"
    )
    mount_path: str = Field("/work", description="where the search pod has the pvc mounted")
    secret: str | None = Field(
        None, description="Secret whose keys become environment variables (S3, MLflow credentials)"
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="plain settings for every trial pod; credentials are refused (they would "
        "be written into every Job's spec, MLflow's params and the compiled pipeline): put "
        "them in `secret`",
    )
    service_account: str | None = None
    ttl_seconds_after_finished: int | None = Field(3600, ge=0)
    owner_reference: bool = Field(
        True, description="make the search pod (POD_NAME, POD_UID) the owner of its Jobs"
    )
    run_as_non_root: bool = Field(
        True, description="trial containers must not run as root, as Pod Security 'restricted' "
        "asks (leanfit's images run as user 10001); false for an image whose user is root"
    )  # fmt: skip
    read_only_root: bool = Field(
        True, description="trial containers get a read-only root filesystem, writing only to "
        "mount_path and an emptyDir at /tmp (HOME=/tmp), as hardened clusters ask; false for "
        "an image of one's own that writes elsewhere"
    )  # fmt: skip
    start_timeout: float = Field(
        600.0, gt=0, description="seconds a container may fail to start (image pull, missing "
        "Secret) before its Job counts as an infrastructure failure; accepts 90s, 10m"
    )  # fmt: skip

    @field_validator("env")
    @classmethod
    def _no_credentials_in_env(cls, env: dict[str, str]) -> dict[str, str]:
        if secrets := _credentials_in(env):
            raise ValueError(
                f"{secrets} {'are credentials' if len(secrets) > 1 else 'is a credential'}, "
                "which would be written in plain text into every trial Job's spec, MLflow's "
                "params and the compiled pipeline; put it in the Kubernetes secret that "
                "executor.kubernetes.secret names (its keys become every trial's environment) "
                "and remove it here"
            )
        return env

    _duration = field_validator("start_timeout", mode="before")(
        classmethod(lambda cls, v: parse_duration(v))
    )

    @field_validator("tolerations")
    @classmethod
    def _tolerations(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, toleration in enumerate(value):
            unknown = sorted(set(toleration) - _TOLERATION_KEYS)
            if unknown:
                raise ValueError(
                    f"[{i}]: unknown key(s) {unknown}; a toleration has {sorted(_TOLERATION_KEYS)}"
                )
        return value

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} is not an absolute path; write e.g. /work")
        return value


class ExecutorConfig(Strict):
    kind: Literal["local", "kubernetes"] = "local"
    workers: Count = 2
    trial_timeout: float = Field(600.0, gt=0)
    retries: int = Field(2, ge=0)
    fail_fast: int = Field(
        10,
        ge=0,
        description="stop a search whose first this many trial jobs all failed (one error "
        "repeated would spend the whole budget); 0: never stop it for its failures",
    )
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)

    _duration = field_validator("trial_timeout", mode="before")(
        classmethod(lambda cls, v: parse_duration(v))
    )


class TrainingConfig(Strict):
    augment: Literal["randaugment", "autoaugment", "trivialaugment", "none"] = "randaugment"
    augment_groups: int = Field(
        8, ge=1, description="AutoAugment only: independent policy draws per batch"
    )
    augment_chunk_mb: float = Field(
        64, gt=0, description="memory for batches augmented together (float32 images), in MiB"
    )
    prefetch: bool = Field(
        True,
        description="on a CPU, augment the next chunk of batches in a thread while this one trains",
    )
    crop_padding: int = Field(2, ge=0)
    flip: bool = True
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    channels_last: bool = True
    compile: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_batch_size: Count = 1024


class TrackingConfig(Strict):
    uri: str | None = None
    experiment: str | None = None
    registered_model: str | None = Field(
        None, description="name in the MLflow model registry (default: leanfit-<name>)"
    )


class AugmentPolicyConfig(Strict):
    """The pipeline's augment-policy step: the file's own policy, or a short RandAugment search.

    RandAugment's point (Cubuk et al. 2020) is that two numbers, N and M, are enough: a small grid
    on a proxy model finds them, and the search and final training then use them fixed.
    """

    mode: Literal["fixed", "search"] = "fixed"
    n: list[Annotated[int, Field(ge=0, le=4)]] = Field(default_factory=lambda: [0, 1, 2])
    m: list[Annotated[int, Field(ge=0, le=30)]] = Field(default_factory=lambda: [5, 9, 15])
    epochs: Count = 5
    proxy_params: Count = 5_000

    _counts = field_validator("proxy_params", mode="before")(
        classmethod(lambda cls, v: parse_count(v))
    )

    @model_validator(mode="after")
    def _check(self) -> AugmentPolicyConfig:
        if not self.n or not self.m:
            raise ValueError("n: give at least one value of N and one of M to try")
        return self


class DistillConfig(Strict):
    """Final training with knowledge distillation (Hinton et al. 2015): the most accurate
    finalist is trained first, and the other finalists learn from its answers as well as from
    the labels. Off unless asked: on digits' models of about a thousand parameters it did not
    help (README, "The pipeline")."""

    alpha: float = Field(
        0.5, gt=0, le=1, description="weight of the teacher's answers in the loss (1: them only)"
    )
    temperature: float = Field(4.0, gt=0, description="softens both models' answers")


class PipelineConfig(Strict):
    """What the pipeline adds around the search: the augment policy, and the final training."""

    augment_policy: AugmentPolicyConfig = Field(default_factory=AugmentPolicyConfig)
    final_top_k: Count = 3
    final_epochs: int | None = Field(None, gt=0, description="default: budget.max_epochs")
    distill: DistillConfig | None = Field(
        None,
        description="distil the most accurate finalist into the others: true, or the settings "
        "(default: off)",
    )

    refit: bool = Field(
        False,
        description="once the finalists are trained on the training split and scored on the "
        "validation split, the one to be registered (the most accurate there) is trained again "
        "on both splits together, and those weights are tested and registered (default: off)",
    )

    @field_validator("distill", mode="before")
    @classmethod
    def _distill_switch(cls, v: Any) -> Any:
        # `distill: true` turns it on with the defaults, `false` leaves it off
        return ({} if v else None) if isinstance(v, bool) else v


class Experiment(Strict):
    name: str = Field(max_length=63)
    dataset: DatasetConfig
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    objectives: ObjectivesConfig = Field(default_factory=ObjectivesConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    work_dir: str = ".leanfit"

    @field_validator("strategy", "scheduler", mode="before")
    @classmethod
    def _by_name(cls, v: Any) -> Any:
        # `scheduler: hyperband` for `scheduler: {name: hyperband}` (it was refused as "a valid
        # dictionary", naming no fix)
        return {"name": v} if isinstance(v, str) else v

    @field_validator("name", mode="after")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):  # (it said the pattern alone)
            raise ValueError(
                f"{v!r}: use letters a-z and A-Z (no accents), digits, '_', '.' and '-', "
                "beginning with a letter or digit (it names the MLflow experiment, "
                "leanfit-NAME, and the pipeline)"
            )
        return v

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        if self.executor.kind == "kubernetes" and not self.executor.kubernetes.pvc:
            # (the stand-in API server of the tests runs Jobs on its own disk, and hid this)
            raise ValueError(
                "executor.kind: kubernetes needs executor.kubernetes.pvc: the search and its "
                "trial Jobs share the work folder (specs, checkpoints, results) on a "
                "PersistentVolumeClaim mounted at executor.kubernetes.mount_path; name one "
                "(ReadWriteMany where trials run on several nodes), e.g. pvc: leanfit-work"
            )
        if self.strategy.ehvi_share and self.objectives.size_metric() is None:
            metrics = [t.metric for t in self.objectives.targets]
            raise ValueError(
                "strategy.ehvi_share: EHVI proposals need exactly two objectives, val_accuracy "
                f"and params (or macs), but objectives.targets are {metrics}; set it to 0"
            )
        gap = self.strategy.gap_share
        if gap is not None and gap > self.ehvi_share() and self.strategy.name == "skopt":
            raise ValueError(
                f"strategy.gap_share ({self.strategy.gap_share}) is a part of the EHVI "
                f"proposals, so it must be at most strategy.ehvi_share ({self.ehvi_share()}); "
                "lower gap_share or raise ehvi_share"
            )
        if self.scheduler.curve_stop:
            goals = {t.metric: t.goal for t in self.objectives.targets}
            if goals.get("val_accuracy") != "maximize":
                raise ValueError(
                    "scheduler.curve_stop: it extrapolates the validation accuracy, but "
                    "objectives.targets do not maximize val_accuracy; add that target or set "
                    "curve_stop to false"
                )
            fitted = 3  # leanfit.train.curve.MIN_POINTS (importing it here would import torch)
            if self.budget.max_epochs <= fitted:
                raise ValueError(
                    f"scheduler.curve_stop: a curve is fitted on {fitted} epochs and can stop a "
                    f"trial only before budget.max_epochs ({self.budget.max_epochs}); raise "
                    f"max_epochs above {fitted} or set curve_stop to false"
                )
        return self

    def ehvi_share(self) -> float:
        """The share of the search's proposals made by EHVI (`strategy.ehvi_share` resolved)."""
        if self.strategy.name != "skopt":
            return 0.0
        share = self.strategy.ehvi_share
        if share is None:
            return 0.5 if self.objectives.size_metric() is not None else 0.0
        return share

    def gap_share(self) -> float:
        """The share of the search's proposals made by EHVI in the front's widest gap
        (`strategy.gap_share` resolved)."""
        if self.ehvi_share() <= 0:
            return 0.0
        share = self.strategy.gap_share
        return self.ehvi_share() / 2 if share is None else share

    # Where the file was read from; relative paths in it are resolved against this folder.
    base_dir: Path = Field(default=Path("."), exclude=True)

    def search_space(self) -> SearchSpace:
        return self.space.search_space()

    def dataset_path(self) -> Path | None:
        if self.dataset.path is None:
            return None
        if "://" in self.dataset.path:
            return None
        return (self.base_dir / Path(self.dataset.path).expanduser()).resolve()

    def labels_path(self) -> Path | None:
        if self.dataset.labels is None:
            return None
        return (self.base_dir / Path(self.dataset.labels).expanduser()).resolve()

    def work_path(self) -> Path:
        return Path(self.work_dir).expanduser().resolve()

    def tracking_uri(self) -> str:
        return tracking_uri_or_default(self.tracking.uri)

    def experiment_name(self) -> str:
        return self.tracking.experiment or f"leanfit-{self.name}"

    def registered_model_name(self) -> str:
        return self.tracking.registered_model or f"leanfit-{self.name}"

    def hyperparameters(self, config: dict[str, Any]) -> dict[str, Any]:
        """The trainer's hyper-parameters for a configuration: searched values over defaults."""
        return {k: config.get(k, v) for k, v in HYPERPARAMETER_DEFAULTS.items()}


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-"))


def experiment_from_dict(data: Any, base_dir: Path | str = ".") -> Experiment:
    """Validate a parsed experiment file; a mistake raises ConfigError naming the field."""
    if not isinstance(data, dict):
        raise ConfigError(
            "", "the experiment file must be a YAML mapping (name: ..., dataset: ...)"
        )
    try:
        experiment = Experiment.model_validate({**data, "base_dir": Path(base_dir)})
    except ValidationError as e:
        raise _config_error(e) from None
    experiment.search_space()  # conditional-parameter mistakes surface here, with their path
    return experiment


def _nearest_field(loc: tuple) -> str | None:
    """The field a misspelt one (`dataset.splits`) most likely meant (`split`), among its
    section's fields; None where none is close or the section is not found."""
    import difflib
    import typing

    model: Any = Experiment
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        kinds = [fields[part].annotation, *typing.get_args(fields[part].annotation)]
        model = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
        if model is None:
            return None
    names = list(getattr(model, "model_fields", {}))
    near = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.75)
    return near[0] if near else None


def _config_error(e: ValidationError) -> ConfigError:
    lines = []
    for err in e.errors():
        loc = tuple(p for p in err["loc"] if not isinstance(p, str) or not _is_union_tag(p))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; check its spelling (see examples/digits.yaml)"
            if near := _nearest_field(loc):
                msg = f"unknown field; did you mean {near}? (see examples/digits.yaml)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        else:
            msg = _kind_of_value_message(err) or msg
        # A message from a model validator names its own sub-field as "field: ...".
        m = re.match(r"^([a-z_]+): (.*)$", msg, re.S)
        if m and m.group(1) in _known_fields():
            loc, msg = (*loc, m.group(1)), m.group(2)
        lines.append((_field_path(loc), msg))
    # Union types report one error per alternative; the first is the useful one for a user.
    seen, unique = set(), []
    for path, msg in lines:
        if path not in seen:
            seen.add(path)
            unique.append((path, msg))
    first_path, first_msg = unique[0]
    rest = "".join(f"\n  {p}: {m}" for p, m in unique[1:])
    return ConfigError(first_path, first_msg + rest)


def _kind_of_value_message(err: Mapping[str, Any]) -> str | None:
    """A value of the wrong kind in words, with an example of the right one (pydantic says
    'unable to parse string as an integer')."""
    value, kind = err.get("input"), err["type"]
    if kind in ("int_parsing", "int_type"):
        return f"{value!r} is not a whole number; write e.g. 2"
    if kind == "int_from_float":
        # (the whole number below it, unless that is 0: max_params 1e-3 was told "write e.g. 0")
        whole = math.floor(value) if value >= 1 or value < 0 else math.ceil(value)
        return f"{value!r} is not a whole number; write e.g. {whole}"
    if kind in ("float_parsing", "float_type"):
        return f"{value!r} is not a number; write e.g. 0.5"
    if kind in ("bool_parsing", "bool_type"):
        return f"{value!r} is not true or false"
    if kind == "string_type" and isinstance(value, int | float) and not isinstance(value, bool):
        # (`1e5` is a number in YAML 1.2, as leanfit reads it: a name or quantity spelt so)
        example = "'1e5'" if isinstance(value, float) else f"'{value}'"
        return f"{value!r} is a number here, not text; write it in quotes, e.g. {example}"
    return None


def _is_union_tag(part: str) -> bool:
    return part in {"Dim", "list[any]", "int", "float", "str", "bool"} or part.startswith(
        ("function-", "list[", "dict[")
    )


def _known_fields() -> set[str]:
    names: set[str] = set()
    for model in (DatasetConfig, ArchitectureSpace, BudgetConfig, Dim, AugmentPolicyConfig):
        names |= set(model.model_fields)
    return names


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment file."""
    data, base_dir = read_experiment_file(Path(path))
    return experiment_from_dict(data, base_dir)


def read_experiment_file(path: Path) -> tuple[Any, Path]:
    """An experiment file's YAML, parsed but not validated, and the folder it is in."""
    if not path.exists():
        raise ConfigError("", f"experiment file {str(path)!r} does not exist; check the path")
    if path.is_dir():
        raise ConfigError("", f"{str(path)!r} is a folder; give the experiment YAML file in it")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError("", f"{path} is not a text file; give the experiment YAML") from None
    if COMPILED_PIPELINE.search(text):  # (several YAML documents: it would not parse either)
        raise ConfigError(
            "",
            f"{path} is a compiled pipeline (leanfit compile's output), not an experiment file; "
            "give the experiment YAML it was compiled from",
        )
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError("", f"{path} is not valid YAML{yaml_problem(e)}") from None
    if data is None:
        raise ConfigError(
            "", f"{path} is empty; write the experiment in it (examples/digits.yaml is one)"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            "",
            f"{path} holds a YAML {type(data).__name__}; the experiment file must be a YAML "
            "mapping (name: ..., dataset: ...)",
        )
    if "dataset" not in data and ("stem_width" in data or "b0.type" in data):
        # (thirteen lines of unknown and missing fields said it)
        raise ConfigError(
            "",
            f"{path} is a configuration (a genotype, for `leanfit trial EXPERIMENT "
            "--genotype FILE`), not an experiment file; give the experiment YAML "
            "(examples/digits.yaml is one)",
        )
    return data, path.parent


def yaml_problem(e: yaml.YAMLError) -> str:
    """Where and what PyYAML found wrong, in one line: " at line L, column C: problem"."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {getattr(e, 'problem', None) or e}"


# What a KFP pipeline YAML has at the start of a line and an experiment file never has
COMPILED_PIPELINE = re.compile(r"^(pipelineInfo|deploymentSpec|schemaVersion):", re.MULTILINE)
