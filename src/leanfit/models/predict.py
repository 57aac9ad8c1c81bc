"""Classify image files with a registered model, decoded exactly as its training images were.

A final model is logged to MLflow with a card in its MLmodel metadata (`CARD_KEY`): its class
names in output order, and how an image file becomes its input (size, channels, the background
of transparent pixels). `leanfit predict` reads the card, decodes each file with the image
folder's own decoder (`leanfit.data.sources._decode_one`: EXIF orientation, 16-bit scaling,
transparency, bilinear resize) and prints each file's most likely classes. A model logged before
the card existed is still usable: its input size comes from the model's signature and its classes
are shown by index.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanfit.errors import LeanfitError

# The key of the card in an MLflow model's metadata
CARD_KEY = "leanfit"
# Beside a logged model (its MLflow folder's extra_files/): its weights and how to build it,
# read back as weights only (`deploy.save_weights`, `deploy.classifier_from_weights`). leanfit
# loads a logged model from this, never from the pickled model of MLflow's pytorch flavour
# (unpickling runs whatever code the file holds: anyone who can write to the tracking server
# could run code wherever leanfit loads the champion).
WEIGHTS_FILE = "leanfit-weights.pt"
# Images decoded and classified at a time
BATCH = 256


@dataclass(frozen=True)
class ModelCard:
    """What a caller needs to feed a logged `Classifier` an image file and read its output."""

    classes: list[str]
    image_size: int
    channels: int
    background: str = "white"
    fit: str = "squeeze"
    from_card: bool = True  # False: guessed from the model's signature (an older model)

    def to_metadata(self) -> dict[str, Any]:
        return {
            CARD_KEY: {
                "classes": list(self.classes),
                "image_size": self.image_size,
                "channels": self.channels,
                "background": self.background,
                "fit": self.fit,
                "input": "float32 images in [0, 1], shape (N, channels, image_size, image_size)",
            }
        }


def card_of(experiment, dataset) -> ModelCard:
    """The card of a model trained on `dataset` as `experiment` decodes it."""
    ds = experiment.dataset
    return ModelCard(list(dataset.classes), ds.image_size, dataset.channels, ds.background, ds.fit)


def model_uri(model: str) -> str:
    """A model as MLflow names it: an MLflow URI as given, a folder of a downloaded model as its
    path, else a registered model's name, at its `champion` alias."""
    if "://" in model or model.startswith(("models:/", "runs:/")) or Path(model).exists():
        return model
    if "/" in model or "@" in model:
        raise LeanfitError(
            f"model: {model!r} is neither a folder nor a model URI; give a registered model's "
            "name (its champion), models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/model"
        )
    return f"models:/{model}@champion"


def is_model_folder(uri: str) -> bool:
    """Whether `uri` (as `model_uri` gives it) is a model's folder on this machine rather than
    a model in MLflow's tracking store or registry."""
    return "://" not in uri and not uri.startswith(("models:/", "runs:/")) and Path(uri).exists()


def read_card(uri: str) -> ModelCard:
    """The model's card, or one guessed from its signature (an older model: classes by index)."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model, get_model_info

    try:
        # a downloaded model's folder: its own MLmodel file. get_model_info would look its
        # model id up in the tracking store, which the folder does not need and another
        # machine has not got (and MLflow would create an empty database to look in)
        info = Model.load(uri) if is_model_folder(uri) else get_model_info(uri)
    except (MlflowException, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "No such artifact: 'MLmodel'" in first or "Logged model with ID" in first:
            fix = (  # (the name and the URI were right: the files are gone)
                "its model files are gone from the artifact store (deleted by hand, or purged "
                "with `mlflow gc`); `leanfit run FILE --force` registers the model again, or "
                "`leanfit promote` makes another version the champion"
            )
        else:
            fix = (
                "check the name, alias or version, and the tracking URI (--tracking-uri or "
                "$MLFLOW_TRACKING_URI)"
            )
        raise LeanfitError(f"model: {uri} could not be read ({first}); {fix}") from None
    card = (info.metadata or {}).get(CARD_KEY)
    if card:
        return ModelCard(
            [str(c) for c in card["classes"]],
            int(card["image_size"]),
            int(card["channels"]),
            str(card.get("background", "white")),
            str(card.get("fit", "squeeze")),  # (a card from before the setting)
        )
    return _card_from_signature(uri, info.signature)


def _card_from_signature(uri: str, signature) -> ModelCard:
    shape_in = _tensor_shape(signature.inputs if signature else None)
    shape_out = _tensor_shape(signature.outputs if signature else None)
    if shape_in is None or len(shape_in) != 4 or shape_out is None or len(shape_out) != 2:
        raise LeanfitError(
            f"model: {uri} has neither leanfit's card nor an image signature (N, C, H, W) -> "
            "(N, classes); it was not logged by leanfit"
        )
    _, channels, size, _ = shape_in
    return ModelCard([str(i) for i in range(shape_out[1])], size, channels, from_card=False)


def _tensor_shape(schema) -> tuple[int, ...] | None:
    try:
        (spec,) = schema.inputs
        return tuple(int(d) for d in spec.shape)
    except (AttributeError, TypeError, ValueError):
        return None


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The files to classify: each file given, and every file in each folder given (recursively,
    sorted, hidden ones left out, as an image folder is read: links to folders followed, and
    what cannot be read, a named pipe, a folder this user cannot read, listed by the decoder)."""
    from leanfit.data.fingerprint import list_files

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += list_files(path)
        elif path.exists():  # (a file, or a named pipe: skipped by the decoder, never opened)
            files.append(path)
        else:
            raise LeanfitError(f"images: {path} does not exist; give image files or folders")
    if not files:
        raise LeanfitError(f"images: no files in {', '.join(map(str, paths))}")
    # a file given twice (a folder and a file in it, `dir` and `dir/`) is classified once: the
    # accuracy on a labelled folder counted it twice (80 files of a folder of 40)
    first: dict[str, Path] = {}
    for f in files:  # (by normalised path: two links to one file stay two names)
        first.setdefault(os.path.abspath(f), f)
    return list(first.values())


@dataclass(frozen=True)
class Prediction:
    file: str
    top: list[tuple[str, float]]  # (class, probability), most likely first


def predict(
    model, card: ModelCard, files: Sequence[Path], top: int = 1, on_batch=None
) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Each readable file's `top` classes with their probabilities, and the files that could not
    be read (file, why)."""
    import numpy as np

    from leanfit.data.sources import _decode_one

    top = max(1, min(top, len(card.classes)))
    out: list[Prediction] = []
    skipped: list[tuple[str, str]] = []
    pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))  # Pillow frees the GIL

    def decode(f: Path):
        return _decode_one(f, card.image_size, card.channels, card.background, card.fit)

    with pool:
        for start in range(0, len(files), BATCH):
            batch = files[start : start + BATCH]
            arrays, names = _classified_batch(batch, pool.map(decode, batch), skipped)
            if arrays:
                out += _predictions(model, card, top, names, np.stack(arrays))
            if on_batch is not None:
                on_batch(len(batch))
    return out, skipped


def _classified_batch(batch, decoded, skipped):
    """The decoded images of a batch and their files; the unreadable ones go to `skipped`."""
    arrays, names = [], []
    for f, image in zip(batch, decoded, strict=True):
        if isinstance(image, str):
            skipped.append((str(f), image))
        else:
            arrays.append(image)
            names.append(str(f))
    return arrays, names


def _predictions(model, card: ModelCard, top: int, names, images) -> list[Prediction]:
    import torch

    x = torch.from_numpy(images).float().div_(255.0)
    try:
        with torch.no_grad():
            logits = model(x)
    except RuntimeError as e:  # (a network for other images than its card says)
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise LeanfitError(
            f"model: it cannot take images as its card describes them ({first}); the model's "
            "files do not belong together: give another version"
        ) from None
    if logits.shape[1] != len(card.classes):
        raise LeanfitError(
            f"model: it gives {logits.shape[1]} outputs, its card names {len(card.classes)} "
            "classes; the model's files do not belong together"
        )
    probs, index = torch.softmax(logits.float(), dim=1).topk(top, dim=1)
    return [
        Prediction(name, [(card.classes[k], v) for k, v in zip(i, p, strict=True)])
        for name, p, i in zip(names, probs.tolist(), index.tolist(), strict=True)
    ]


def load_model(uri: str, card: ModelCard | None = None):
    """The logged `Classifier`, in eval mode on the CPU, loaded without running any code its
    files hold: built by leanfit from the weights file beside it (`deploy.WEIGHTS_FILE`, read as
    weights only), or, for a model logged before that file (or a network leanfit did not build),
    its run's TorchScript file (TorchScript, not Python: it cannot import or call Python).
    MLflow's own pytorch model is a pickle, and unpickling runs whatever the file says: anyone
    who can write to the tracking server could have run code on every machine that loads the
    champion. A model with neither (a downloaded folder of an older model) is refused, with
    how to load it.

    Refused too: a weights file for other images or classes than `card` says (the model's card),
    and, for a registered version (`models:/`), weights other than the ones registered (their
    digest differs from the version's tag): a file of the model replaced by another's."""
    import pickle
    import tempfile
    import warnings

    import torch
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from leanfit.models.deploy import classifier_from_weights

    weights = f"extra_files/{WEIGHTS_FILE}"
    model = None
    with tempfile.TemporaryDirectory() as tmp:
        if is_model_folder(uri):
            found = Path(uri) / weights
            path = found if found.is_file() else None
        else:
            try:
                path = Path(download_artifacts(artifact_uri=f"{uri}/{weights}", dst_path=tmp))
            except (MlflowException, OSError):
                path = None
        if path is not None:
            try:
                model = classifier_from_weights(path)
            except pickle.UnpicklingError:
                raise LeanfitError(
                    f"model: {uri}: its {WEIGHTS_FILE} holds something other than weights "
                    "(refused: it is read as weights only); it is not a file leanfit wrote: log "
                    "the model again (leanfit run --force), or give another version"
                ) from None
            except (ValueError, KeyError, TypeError, RuntimeError, OSError) as e:
                raise LeanfitError(
                    f"model: {uri}: its {WEIGHTS_FILE} is damaged, truncated or not a file "
                    f"leanfit wrote ({type(e).__name__}); log the model again (leanfit run "
                    "--force), or give another version"
                ) from None
            _check_card(uri, model.architecture, card)
        elif not is_model_folder(uri):
            scripted = _torchscript_of(uri, tmp)
            if scripted is not None:
                try:
                    with warnings.catch_warnings():  # torch marks TorchScript deprecated
                        warnings.simplefilter("ignore", FutureWarning)
                        model = torch.jit.load(str(scripted), map_location="cpu").eval()
                except RuntimeError:  # (what torch says of a file it cannot read)
                    raise LeanfitError(
                        f"model: {uri}: its run's TorchScript file is damaged, truncated or not "
                        "one leanfit wrote: give another version"
                    ) from None
    if model is None:
        raise LeanfitError(
            f"model: {uri} has no {WEIGHTS_FILE} (a model logged by an earlier leanfit, or not "
            "by leanfit) and no TorchScript file of its run here; leanfit does not unpickle a "
            "model (its file could run any code). Give it by its models:/ or runs:/ URI, where "
            "its run's TorchScript file is read, or, if you trust whoever wrote it, load it "
            "yourself with mlflow.pytorch.load_model"
        )
    registered = _registered_weights(uri)
    if registered is not None:
        from leanfit.track.registry import weights_digest

        if weights_digest(model) != registered:
            raise LeanfitError(
                f"model: {uri}: its weights are not the ones registered as this version (their "
                "digest differs from the version's leanfit.weights_sha256 tag): a file of it was "
                "replaced; give another version, or register the model again (leanfit run "
                "--force)"
            )
    return model


def _check_card(uri: str, architecture: Mapping[str, Any], card: ModelCard | None) -> None:
    """Refuse a weights file built for other images or classes than the model's card says."""
    if card is None:
        return
    built = (architecture["in_channels"], architecture["image_size"], architecture["num_classes"])
    said = (card.channels, card.image_size, len(card.classes))
    if built != said:
        raise LeanfitError(
            f"model: {uri}: its {WEIGHTS_FILE} is for {built[0]}-channel "
            f"{built[1]}x{built[1]} images and {built[2]} classes, its card says "
            f"{said[0]}-channel {said[1]}x{said[1]} images and {said[2]} classes: the model's "
            "files do not belong together; give another version, or log the model again"
        )


def _registered_weights(uri: str) -> str | None:
    """The weights' digest a registered version (`models:/NAME/VERSION`, `models:/NAME@ALIAS`)
    was registered with (its `leanfit.weights_sha256` tag), or None (not a registered version,
    or one registered without the tag)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from leanfit.track.registry import TAG_WEIGHTS

    if not uri.startswith("models:/"):
        return None
    name = uri[len("models:/") :].strip("/")
    try:
        if "@" in name:
            model, alias = name.split("@", 1)
            version = MlflowClient().get_model_version_by_alias(model, alias)
        elif "/" in name:
            model, number = name.rsplit("/", 1)
            version = MlflowClient().get_model_version(model, number)
        else:
            return None
    except MlflowException:
        return None
    return version.tags.get(TAG_WEIGHTS)


def _torchscript_of(uri: str, tmp: str) -> Path | None:
    """The TorchScript file leanfit logged in a model's run (`torchscript/`), downloaded, or
    None where there is none."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    try:
        run_id = get_model_info(uri).run_id
        if not run_id:
            return None
        return Path(
            download_artifacts(
                artifact_uri=f"runs:/{run_id}/torchscript/model.torchscript.pt",
                dst_path=str(Path(tmp) / "torchscript"),
            )
        )
    except (MlflowException, OSError):
        return None


def as_records(predictions: Sequence[Prediction]) -> list[Mapping[str, Any]]:
    """Predictions as JSON-ready records (`leanfit predict --json`)."""
    return [
        {
            "file": p.file,
            "class": p.top[0][0],
            "probability": round(p.top[0][1], 6),
            "top": [{"class": c, "probability": round(v, 6)} for c, v in p.top],
        }
        for p in predictions
    ]


@dataclass(frozen=True)
class FolderScore:
    """How the predictions of files lying in folders named after the model's classes (a test/
    folder of class folders) agree with those folders."""

    files: int
    correct: int
    by_class: dict[str, tuple[int, int]]  # class: (correct, files), classes with files only
    confused: list[tuple[str, str, int]]  # (folder's class, predicted, count), most first

    @property
    def accuracy(self) -> float:
        return self.correct / self.files


def nfc(name: str) -> str:
    """A class or folder name in one Unicode form (a folder made on a Mac, or unzipped from its
    zip, spells "cafe\u0301" where others spell "caf\u00e9")."""
    import unicodedata

    return unicodedata.normalize("NFC", name)


def folder_score(predictions: Sequence[Prediction], classes: Sequence[str]) -> FolderScore | None:
    """The score of the predictions whose file's folder is named after one of `classes`, or None
    when no file lies in such a folder (files to classify, not to check)."""
    from collections import Counter

    known = {nfc(c): c for c in classes}
    by_class: dict[str, list[int]] = {}
    confused: Counter = Counter()
    for pred in predictions:
        # the nearest folder named after a class: training counts a class folder's sub-folders
        # as the class's images (`cat/more/x.png`)
        label = next(
            (known[nfc(p.name)] for p in Path(pred.file).parents if nfc(p.name) in known), None
        )
        if label is None:
            continue
        hit = pred.top[0][0] == label
        counts = by_class.setdefault(label, [0, 0])
        counts[0] += hit
        counts[1] += 1
        if not hit:
            confused[(label, pred.top[0][0])] += 1
    if not by_class:
        return None
    files = sum(n for _, n in by_class.values())
    correct = sum(k for k, _ in by_class.values())
    ordered = {c: tuple(by_class[c]) for c in classes if c in by_class}
    pairs = [(a, b, n) for (a, b), n in confused.most_common()]
    return FolderScore(files, correct, ordered, pairs)
