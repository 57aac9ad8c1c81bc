"""Final models in MLflow: each logged with the pytorch flavour, TorchScript and ONNX; the best one
registered as `challenger`, and made `champion` only when it beats the champion on the same data.

The champion is judged again on the new test data every time (the data may have changed since it
won), and every version carries the digest of the data it was trained on. `promote` moves the
champion alias by hand (a rollback).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leanfit.config import Experiment
from leanfit.data.sources import LoadedDataset, image_keys
from leanfit.errors import LeanfitError
from leanfit.models.deploy import accuracy
from leanfit.models.predict import nfc
from leanfit.track.runs import (
    TrialLogger,
    create_run_once,
    dataset_input,
    missing_sqlite_database,
    param_value,
)

# Fewer test images than this to compare the champion and the challenger on: said, with the fix
FEW_TEST_IMAGES = 30
CHAMPION = "champion"
CHALLENGER = "challenger"
# Beside each registered version, in its run: a key of every image it trained or was chosen on
# (`image_keys`), so that a later comparison leaves those out of the champion's test images.
SEEN_ARTIFACT = "leanfit/seen_images.npy"


@dataclass
class LoggedModel:
    run_id: str
    model_uri: str


# a registered version's weights, hashed: the same model is not registered twice
TAG_WEIGHTS = "leanfit.weights_sha256"


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of a model's parameters and buffers, by name."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class Decision:
    name: str
    version: str
    champion_version: str
    promoted: bool
    reason: str
    champion_test_accuracy: float | None = None


class Registry:
    """One experiment's registered model (`tracking.registered_model`, default leanfit-NAME)."""

    def __init__(self, experiment: Experiment, dataset: LoadedDataset):
        import mlflow

        self.experiment = experiment
        self.dataset = dataset
        self.uri = experiment.tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        self.logger = TrialLogger(self.uri, experiment.experiment_name())
        self.client = self.logger.client
        self.name = experiment.registered_model_name()

    def log_model(
        self,
        summary: Mapping[str, Any],
        classifier: torch.nn.Module,
        parent_run_id: str,
        example_images: torch.Tensor,
    ) -> LoggedModel:
        """A run for one final model: its metrics, the pytorch model, a TorchScript file and an
        ONNX file."""
        import mlflow
        from mlflow.entities import Metric, Param
        from mlflow.models import infer_signature

        from leanfit.models.deploy import export_onnx, save_weights
        from leanfit.models.predict import WEIGHTS_FILE, card_of

        client = self.client
        tags = {
            "leanfit.kind": "final",
            "leanfit.trial_id": str(summary["trial"]),
            "leanfit.dataset_digest": self.dataset.digest,
            "mlflow.parentRunId": parent_run_id,
        }
        run = create_run_once(client, self.logger.experiment_id, f"final-{summary['trial']}", tags)
        run_id = run.info.run_id
        params = [Param(k, param_value(v)[:6000]) for k, v in sorted(summary["config"].items())]
        params += [
            Param("final.epochs", str(summary["epochs"])),
            Param("seed", str(summary["seed"])),
        ]
        if summary.get("distilled_from"):  # pipeline.distill: which final model taught it
            taught = summary["distilled_from"]
            params += [
                Param("final.distilled_from", str(taught["trial"])),
                Param("final.distill_alpha", str(taught["alpha"])),
                Param("final.distill_temperature", str(taught["temperature"])),
            ]
        if summary.get("refit"):  # pipeline.refit: these weights trained on validation too
            params += [
                Param("final.refit", "train+val"),
                Param("final.refit_images", str(summary["refit"]["images"])),
            ]
        client.log_batch(run_id, params=params)
        keys = ("val_accuracy", "test_accuracy", "params", "macs", "wall_time")
        metrics = [Metric(k, float(summary[k]), 0, 0) for k in keys]
        if summary.get("refit") and summary["refit"].get("wall_time") is not None:
            # the refit's own training time (wall_time is the first training's, whose
            # validation accuracy chose the model; test_accuracy is the refit weights')
            metrics.append(Metric("refit_wall_time", float(summary["refit"]["wall_time"]), 0, 0))
        client.log_batch(run_id, metrics=metrics)
        client.log_inputs(
            run_id, datasets=[dataset_input(self.dataset, self.experiment.dataset.source)]
        )
        example = example_images.float().div(255.0)
        with torch.no_grad():
            output = classifier(example)
        signature = infer_signature(example.numpy(), output.numpy())
        with mlflow.start_run(run_id=run_id), tempfile.TemporaryDirectory() as tmp:
            # what leanfit loads it from (`predict.load_model`), beside MLflow's pickle: a
            # network leanfit built (not a stand-in a test logs) has one
            extra = []
            if getattr(classifier, "architecture", None) is not None:
                extra.append(str(Path(tmp) / WEIGHTS_FILE))
                save_weights(classifier, Path(extra[0]))
            info = mlflow.pytorch.log_model(
                classifier,
                name="model",
                signature=signature,
                input_example=example.numpy(),
                # the classes in output order and how a file becomes an input: leanfit predict
                metadata=card_of(self.experiment, self.dataset).to_metadata(),
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "leanfit"],
                # pickle, not pt2: torch.export fixes the batch size to the example's
                serialization_format="pickle",
                extra_files=extra or None,
            )
            path = Path(tmp) / "model.torchscript.pt"
            with warnings.catch_warnings():  # torch marks TorchScript deprecated
                warnings.simplefilter("ignore", FutureWarning)
                # checked here against the output above: torch's own check_trace imports
                # torch.distributed to compare (3 s of a pipeline step's 13 here)
                traced = torch.jit.trace(classifier, example, check_trace=False)
                with torch.no_grad():
                    if not torch.allclose(traced(example), output, atol=1e-5):
                        raise RuntimeError("the TorchScript trace does not match the model")
                torch.jit.save(traced, str(path))
            mlflow.log_artifact(str(path), artifact_path="torchscript")
            onnx_file = Path(tmp) / "model.onnx"
            export_onnx(classifier, example, onnx_file)
            mlflow.log_artifact(str(onnx_file), artifact_path="onnx")
        client.set_terminated(run_id, "FINISHED")
        return LoggedModel(run_id, info.model_uri)

    def register(
        self,
        logged: LoggedModel,
        summary: Mapping[str, Any],
        classifier: torch.nn.Module,
        test_images: torch.Tensor,
        test_labels: torch.Tensor,
        seen_images: torch.Tensor | np.ndarray | None = None,
        test_files: np.ndarray | None = None,
        test_names: list[str] | None = None,
    ) -> Decision:
        """Register as challenger; promote to champion if it beats the champion on this data.

        `seen_images`: the images this model trained or was chosen on (its training and
        validation splits), kept as keys beside it: the images (their pixels' keys are taken),
        or already their keys (`LoadedDataset.known_keys`: their pixels' and their files').
        Some of this run's test images may be ones the champion trained on (shuffled splits
        are drawn again when the data changes; any split moves with another image_size or fit):
        those are left out of the comparison (both models are scored on the rest), known by
        their pixels or, `test_files`, by their files' keys (so also across decoding settings,
        which give every image other pixels). `test_names`: the test images' files (an image
        folder's), which the champion reads as its own card decodes them where it was trained
        on other decoding settings (image size, channels, fit, background)."""
        weights = weights_digest(classifier)
        champion = self.champion()
        crowned = str(champion.version) if champion is not None else None
        again = ""  # said where the chosen model is a version already registered on this data
        versions = self._versions()
        earlier = self._same_model(versions, weights, summary)
        if earlier is not None and (lost := self._unloadable(str(earlier.version))) is not None:
            # its files are gone (`mlflow gc` after its experiment was deleted, or deleted by
            # hand): it was kept as "nothing new to register" for good, a champion no command
            # could load. This run's model is registered again as a new version
            again = (
                f" (the same weights as version {earlier.version}, which cannot be loaded any "
                f"more: {lost})"
            )
            earlier = None
        if earlier is not None:
            # the same model again (a run whose final training was kept from an earlier one:
            # a budget changed, --force, a run killed after it registered): it was registered
            # as another version of the same weights, made the challenger of itself
            version = str(earlier.version)
            if crowned == version:
                return Decision(
                    self.name, version, version, False,
                    f"{self.name}: the model chosen is version {version} (the champion; the "
                    "same weights, trained by an earlier run on this data): nothing new to "
                    "register",
                )  # fmt: skip
            self.client.set_registered_model_alias(self.name, CHALLENGER, version)
            # ... compared with the champion all the same: the run that registered it may
            # have been killed before it did, which left a champion that cannot see this data
            again = " (the same weights as registered by an earlier run on this data)"
        else:
            version = self._register_new(logged, summary, weights, seen_images, versions)
        digest = self.dataset.digest
        new_acc = float(summary["test_accuracy"])
        if champion is None:
            return self._crown(
                version,
                f"{self.name} version {version}{again} is "
                + ("the first model: champion" if not versions else "champion: none was")
                + f" (test accuracy {new_acc:.4f}, {summary['params']:,} parameters)",
            )
        same = "on the same test data"
        seen = self._seen_by(champion)
        if seen is not None:
            import numpy as np

            fresh = ~np.isin(image_keys(test_images), seen)
            if test_files is not None:
                fresh &= ~np.isin(test_files, seen)
            left_out = int((~fresh).sum())
            if left_out and fresh.any():
                keep = torch.from_numpy(fresh)
                test_images, test_labels = test_images[keep], test_labels[keep]
                if test_names is not None:
                    test_names = [n for n, k in zip(test_names, fresh, strict=True) if k]
                new_acc = accuracy(classifier, test_images, test_labels)
                same = (
                    f"on the same {len(test_labels):,} test images ({left_out:,} of the test "
                    f"split left out: version {champion.version} trained or was chosen on them)"
                )
            elif left_out:  # (every test image: nothing left to compare on fairly)
                same += f" (version {champion.version} trained or was chosen on all of it)"
        old_acc, problem, classes = self.evaluate_version(
            champion.version, test_images, test_labels, test_names
        )
        if classes is not None:
            same += f"; {classes}"
        if len(test_labels) < FEW_TEST_IMAGES:
            same += (
                f"; on {len(test_labels)} image{'s' * (len(test_labels) != 1)} one is "
                f"{100 / max(1, len(test_labels)):.3g} points of accuracy, a weak ground for "
                "this decision: more test images (dataset.test_fraction, a test/ folder) make "
                "it firmer"
            )
        self.client.set_model_version_tag(
            self.name, champion.version, f"leanfit.test_accuracy.{digest[:12]}", f"{old_acc:.6f}"
        )
        budget = self.experiment.objectives.max_params
        within = budget is None or summary["params"] <= budget
        if within and problem is not None:
            return self._crown(
                version,
                f"{self.name} version {version}{again} is the new champion: the champion (version "
                f"{champion.version}) cannot classify this data ({problem})",
                old_acc,
            )
        if within and new_acc > old_acc:
            return self._crown(
                version,
                f"{self.name} version {version}{again} is the new champion: test accuracy "
                f"{new_acc:.4f} "
                f"against {old_acc:.4f} for version {champion.version} {same}",
                old_acc,
            )
        return Decision(
            self.name, version, str(champion.version), False,
            f"{self.name} version {version}{again} stays challenger: test accuracy "
            f"{new_acc:.4f}, the champion (version {champion.version}) has {old_acc:.4f} {same}",
            old_acc,
        )  # fmt: skip

    def _register_new(
        self,
        logged: LoggedModel,
        summary: Mapping[str, Any],
        weights: str,
        seen_images: torch.Tensor | np.ndarray | None,
        versions: list | None = None,
    ) -> str:
        """A new version of the logged model, with its tags and the keys of the images it saw;
        made the challenger. `versions`: the registered ones, where the caller has them."""
        import mlflow

        versions = self._versions() if versions is None else versions
        orphan = self._orphan_of(versions, weights)
        if orphan is not None:  # registered by a run killed before it tagged it: finished now
            version, run_id = str(orphan.version), orphan.run_id
        else:
            version = str(mlflow.register_model(logged.model_uri, self.name).version)
            run_id = logged.run_id
        if seen_images is not None:
            keys = seen_images if isinstance(seen_images, np.ndarray) else image_keys(seen_images)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / Path(SEEN_ARTIFACT).name
                np.save(path, keys)
                self.client.log_artifact(run_id, str(path), str(Path(SEEN_ARTIFACT).parent))
        for key, value in {
            "leanfit.dataset_digest": self.dataset.digest,
            "leanfit.test_accuracy": f"{summary['test_accuracy']:.6f}",
            "leanfit.params": str(summary["params"]),
            "leanfit.trial_id": str(summary["trial"]),
            "leanfit.config": json.dumps(summary["config"], sort_keys=True)[:5000],
            TAG_WEIGHTS: weights,
        }.items():
            self.client.set_model_version_tag(self.name, version, key, value)
        self.client.set_registered_model_alias(self.name, CHALLENGER, version)
        return version

    def _load(self, version: str):
        """A registered version's card and network, never from its pickle (a version anyone
        could have written): its weights checked against its card and against the digest it
        was registered with. LeanfitError where it cannot be loaded so."""
        from leanfit.models.predict import load_model, read_card

        uri = f"models:/{self.name}/{version}"
        card = read_card(uri)
        return card, load_model(uri, card if card.from_card else None)

    def _unloadable(self, version: str) -> str | None:
        """Why a registered version cannot be loaded (its model's files gone), or None."""
        try:
            self._load(version)
        except LeanfitError as e:
            return _why(e)
        return None

    def _seen_by(self, version):
        """The image keys a registered version's run kept (`SEEN_ARTIFACT`), or None for a
        version registered before they were kept."""
        import mlflow.artifacts
        import numpy as np
        from mlflow.exceptions import MlflowException

        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = mlflow.artifacts.download_artifacts(
                    run_id=version.run_id,
                    artifact_path=SEEN_ARTIFACT,
                    dst_path=tmp,
                    tracking_uri=self.experiment.tracking_uri(),
                )
                return np.load(path)
        except (MlflowException, OSError, ValueError):
            return None

    def _crown(self, version: str, reason: str, old_accuracy: float | None = None) -> Decision:
        self.client.set_registered_model_alias(self.name, CHAMPION, version)
        return Decision(self.name, version, version, True, reason, old_accuracy)

    def _versions(self) -> list:
        """The registered model's versions ([] before its first)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.search_model_versions(f"name='{self.name}'")
        except MlflowException:  # (no model of that name yet)
            return []

    def _orphan_of(self, versions: list, weights: str):
        """Of `versions`, one of these weights left without leanfit's tags (a run killed between
        registering it and tagging it), or None. The next run registered the same weights
        again beside it. Only untagged versions are loaded to compare (rare: one call's
        window)."""
        from mlflow.exceptions import MlflowException

        from leanfit.models.predict import load_model

        for v in versions:
            if v.tags.get("leanfit.dataset_digest"):
                continue
            try:
                model = load_model(f"models:/{self.name}/{v.version}")
            except (LeanfitError, MlflowException, OSError, RuntimeError):
                continue
            if weights_digest(model) == weights:
                return v
        return None

    def _same_model(self, versions: list, weights: str, summary: Mapping[str, Any]):
        """Of `versions`, the one of these weights on this data, if there is one."""
        same = {
            TAG_WEIGHTS: weights,
            "leanfit.params": str(summary["params"]),
            "leanfit.dataset_digest": self.dataset.digest,
        }
        return next((v for v in versions if all(v.tags.get(k) == x for k, x in same.items())), None)

    def champion(self):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.name, CHAMPION)
        except MlflowException:
            return None

    def _decoded_as(self, card, names: list[str], images: torch.Tensor) -> torch.Tensor:
        """The test images `names` as `card` decodes their files (the data loaded again with
        its settings, cached as any load is); `images` where it decodes them as this run does,
        or where a file is not among the data so loaded."""
        from leanfit.data.sources import load_dataset

        ours = self.experiment.dataset
        theirs = (card.image_size, card.channels, card.fit, card.background)
        if theirs == (ours.image_size, self.dataset.channels, ours.fit, ours.background):
            return images
        ds = self.experiment.dataset.model_copy(
            update={
                "image_size": card.image_size,
                "channels": card.channels,
                "fit": card.fit,
                "background": card.background,
            }  # fmt: skip
        )
        other = load_dataset(self.experiment.model_copy(update={"dataset": ds}))
        where = {f: i for i, f in enumerate(other.files)}
        if any(n not in where for n in names):
            return images
        return other.images[torch.tensor([where[n] for n in names], dtype=torch.long)]

    def evaluate_version(
        self,
        version: str,
        test_images: torch.Tensor,
        test_labels: torch.Tensor,
        test_names: list[str] | None = None,
    ) -> tuple[float, str | None, str | None]:
        """A registered version's accuracy on these test images, or 0 and why it cannot take
        them (trained on another image size or channel count); and a note where it was trained
        on other classes.

        Its answers are read by class name (its card's classes), not by position: a class
        added, removed or renamed since it was trained moves the others' positions, and read
        by position a champion that was right nearly always scored 0, so any challenger won.
        A class of this data it does not know counts as its errors; one it knows that the data
        no longer has is an error whenever it answers it.

        A version trained on other decoding settings (its card's image size, channels, fit or
        background) reads the test images' files (`test_names`) as its card decodes them, as
        `leanfit predict` would: given the images decoded for the challenger, a network trained
        at 12 px padded was scored at 16 px squeezed (its convolutions take any size), on images
        it was never meant to see."""
        from leanfit.models.deploy import predicted_classes

        uri = f"models:/{self.name}/{version}"
        try:
            card, model = self._load(version)
        except LeanfitError as e:
            return 0.0, f"it cannot be loaded safely: {_why(e)}", None
        notes = []
        if card.from_card and test_names is not None:
            with contextlib.suppress(LeanfitError):  # (the files unreadable now: as decoded)
                decoded = self._decoded_as(card, test_names, test_images)
                if decoded is not test_images:
                    test_images = decoded
                    notes.append(
                        f"version {version} read the test files as its card decodes them "
                        f"({card.image_size}x{card.image_size}, {card.channels} channel(s), "
                        f"fit {card.fit}, background {card.background})"
                    )
        try:
            predicted = predicted_classes(model, test_images)
        except RuntimeError as e:
            return 0.0, str(e).splitlines()[0][:200], None
        ours, theirs = list(self.dataset.classes), _card_classes(uri)
        answers = int(predicted.max()) + 1 if len(predicted) else 0
        if theirs is not None and theirs != ours and answers <= len(theirs):
            position = {nfc(c): j for j, c in enumerate(ours)}
            as_ours = torch.tensor([position.get(nfc(c), -1) for c in theirs])
            predicted = as_ours[predicted]
            notes.append(classes_note(version, theirs, ours))
        correct = int((predicted == test_labels).sum())
        return correct / max(1, len(test_labels)), None, "; ".join(notes) or None


def _why(e: LeanfitError) -> str:
    """A loading error's message up to its fix, without its "model: "."""
    return str(e).split("; ")[0].removeprefix("model: ")


def _card_classes(uri: str) -> list[str] | None:
    """A registered model's classes in its output order, from its card; None for a model
    logged without one (read by position, as before)."""
    from leanfit.models.predict import read_card

    try:
        card = read_card(uri)
    except LeanfitError:
        return None
    return list(card.classes) if card.from_card else None


def classes_note(version: str, theirs: list[str], ours: list[str]) -> str:
    """What a comparison says of a version trained on other classes than the data's."""
    known = {nfc(c) for c in theirs}
    have = {nfc(c) for c in ours}
    new = [c for c in ours if nfc(c) not in known]
    gone = [c for c in theirs if nfc(c) not in have]
    parts = []
    if new:
        parts.append(f"{_listed(new)} new to it, counted as its errors")
    if gone:
        parts.append(f"{_listed(gone)} no longer in the data, wrong whenever it answers so")
    if not parts:
        return f"version {version} was trained on the same classes in another order (read by name)"
    return f"version {version} was trained on other classes ({'; '.join(parts)})"


def promotion_note(tracking_uri: str, name: str, version: str, previous: str) -> str | None:
    """What a promotion by hand should say where the two versions were trained on other
    classes (a class added, removed or renamed between them), else None."""
    import mlflow

    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    ours = _card_classes(f"models:/{name}/{version}")
    theirs = _card_classes(f"models:/{name}/{previous}") if previous != "-" else None
    if ours is None or theirs is None or ours == theirs:
        return None
    return (
        f"note: version {version} was trained on the classes {_listed(ours, 10)}, version "
        f"{previous} on {_listed(theirs, 10)}: `leanfit predict` now answers version "
        f"{version}'s, and the next pipeline run judges it on the data's classes"
    )


def _listed(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(repr(n) for n in names[:shown]) + more


def promote(tracking_uri: str, name: str, version: str) -> str:
    """Point the champion alias at `version` by hand (a rollback); returns the previous one."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    database = missing_sqlite_database(tracking_uri)
    if database is not None:
        raise LeanfitError(
            f"tracking: no tracking database at {database} (tracking URI {tracking_uri}), "
            "so no registered model to promote; run where the pipeline ran, or give the URI it "
            "logged to"
        )
    if not version.isdigit():  # (" 1" reached MLflow, which took it for version 1)
        raise LeanfitError(f"VERSION: {version!r} is not a version number; give one, e.g. 3")
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise LeanfitError(
            f"NAME: no registered model {name!r} in {tracking_uri}; "
            "see `mlflow ui` for the names (leanfit registers leanfit-<experiment name>)"
        ) from None
    try:
        client.get_model_version(name, version)
    except MlflowException:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        raise LeanfitError(
            f"VERSION: {name} has no version {version!r}; its versions are {versions}"
        ) from None
    try:
        previous = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        previous = "-"
    if previous == version:  # nothing to change: the database is left as it is
        return previous
    from leanfit.track.pipeline import model_files_gone

    if (gone := model_files_gone(tracking_uri, name, version)) is not None:
        raise LeanfitError(
            f"VERSION: {name} version {version} {gone}; the champion is left as it was "
            f"(version {previous}): promote another version"
        )
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "leanfit.promoted_by_hand", "true")
    return previous
