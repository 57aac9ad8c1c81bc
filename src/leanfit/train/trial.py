"""A trial: one configuration at one budget on the experiment's data, the unit that runs anywhere.

`leanfit trial` runs one from the command line; the search's workers and Kubernetes Jobs run the
same function with a `TrialSpec` they were handed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from leanfit.config import MAX_SEED, DistillConfig, Experiment
from leanfit.data.splits import DataPlan, stratified_subset
from leanfit.errors import GenotypeError

if TYPE_CHECKING:  # torch: the trainer and the data module, not for a search's controller
    from leanfit.data.sources import LoadedDataset
    from leanfit.train.trainer import Distill, TrainData
from leanfit.train.curve import CurveStop
from leanfit.train.result import Budget, TrainResult


class TeacherSpec(DistillConfig):
    """Distillation from a trained model: its checkpoint (written by the trainer, at the same
    resolution as the student), and pipeline.distill's weight and temperature (`Distill`)."""

    checkpoint: str


class TrialSpec(BaseModel):
    """Everything a worker needs to run a trial besides the experiment file and the data."""

    model_config = ConfigDict(extra="forbid")

    # (names its run and, by default, its checkpoint file)
    trial_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    config: dict[str, Any]
    epochs: int = Field(gt=0)
    schedule_epochs: int | None = None
    data_fraction: float = Field(1.0, gt=0, le=1)
    resolution: int | None = Field(None, gt=0)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    resume_from: str | None = None
    checkpoint_to: str | None = None
    # A search with scheduler.curve_stop sets it: stop when the learning curve cannot reach it.
    curve_stop: CurveStop | None = None
    # The pipeline's final training with pipeline.distill: learn from this teacher too.
    teacher: TeacherSpec | None = None

    @property
    def budget(self) -> Budget:
        return Budget(self.epochs, self.schedule_epochs, self.data_fraction, self.resolution)

    @property
    def own_folders(self) -> list[str]:
        """The folders of its checkpoint files: leanfit's, where a write refused is the place's
        (`leanfit.errors.write_refused`), not the trial's."""
        return [os.path.dirname(p) for p in (self.checkpoint_to, self.resume_from) if p]


def data_plan(experiment: Experiment, dataset: LoadedDataset) -> DataPlan:
    """The experiment's splits (`dataset.split`), and the search's share of the training split."""
    ds = experiment.dataset
    splits = dataset.splits(ds.val_fraction, ds.test_fraction, ds.seed, ds.stable_splits)
    search = splits.train
    if ds.search_fraction < 1.0:
        labels = dataset.labels.numpy()[splits.train]
        search = splits.train[stratified_subset(labels, ds.search_fraction, ds.seed)]
    return DataPlan(dataset.digest, splits, search)


def train_data(
    experiment: Experiment,
    dataset: LoadedDataset,
    for_search: bool = True,
    plan: DataPlan | None = None,
    evaluate_on: str = "val",
) -> TrainData:
    """Training tensors and held-out tensors (`evaluate_on`: "val" or "test").

    The search trains on the plan's search subset, final training on the whole training split.
    """
    from leanfit.train.trainer import TrainData

    plan = plan or data_plan(experiment, dataset)
    plan.check(dataset.digest)
    train_idx = plan.search if for_search else plan.splits.train
    held_out = plan.splits.test if evaluate_on == "test" else plan.splits.val
    return TrainData(
        dataset.images[train_idx],
        dataset.labels[train_idx],
        dataset.images[held_out],
        dataset.labels[held_out],
        dataset.num_classes,
    )


def run_trial(
    experiment: Experiment,
    spec: TrialSpec,
    data: TrainData,
    on_epoch=None,
    save_progress: bool = False,
) -> TrainResult:
    """Validate the configuration against the space, then train it (`save_progress`: see
    `leanfit.train.trainer.train`)."""
    from leanfit.train.trainer import train

    space = experiment.search_space()
    try:
        config = space.validate(spec.config)
    except GenotypeError as e:
        return TrainResult(status="failed", reason=f"invalid configuration: {e}")
    distill = None
    if spec.teacher is not None:
        distill = load_teacher(spec.teacher, data, spec.resolution or data.image_size)
    return train(
        config,
        experiment.hyperparameters(config),
        data,
        spec.budget,
        experiment.training,
        seed=spec.seed,
        resume_from=spec.resume_from,
        checkpoint_to=spec.checkpoint_to,
        on_epoch=on_epoch,
        curve_stop=spec.curve_stop,
        save_progress=save_progress,
        distill=distill,
    )


def load_teacher(teacher: TeacherSpec, data: TrainData, size: int) -> Distill:
    """The teacher of a distillation, checked against the student's data: the same number of
    classes, channels and resolution (it answers on the very images the student sees)."""
    from leanfit.errors import LeanfitError
    from leanfit.models.deploy import load_classifier
    from leanfit.train.checkpoint import load_checkpoint
    from leanfit.train.trainer import Distill

    path = Path(teacher.checkpoint)
    if not path.is_file():
        raise LeanfitError(
            f"teacher checkpoint {path}: no such file; train the teacher first (the pipeline's "
            "final training trains the most accurate finalist before the others)"
        )
    state = load_checkpoint(path, map_location="cpu")
    if int(state["image_size"]) != size:
        raise LeanfitError(
            f"teacher checkpoint {path}: trained at {state['image_size']}x{state['image_size']} "
            f"pixels, the student at {size}x{size}; distil between models of one resolution"
        )
    try:
        model = load_classifier(path, data.channels, data.num_classes)
    except RuntimeError as e:  # another dataset's model: its layers do not fit these shapes
        raise LeanfitError(
            f"teacher checkpoint {path}: it does not fit this data ({data.channels} channels, "
            f"{data.num_classes} classes): {str(e).splitlines()[0]}"
        ) from e
    return Distill(model, teacher.alpha, teacher.temperature)


def default_checkpoint(experiment: Experiment, trial_id: str) -> str:
    return os.fspath(Path(experiment.work_path()) / "checkpoints" / f"{trial_id}.pt")


def write_result(result: TrainResult, path: str | os.PathLike) -> None:
    """The result as JSON, written atomically: a reader sees the whole file or none.

    This is how a trial run elsewhere (a Kubernetes Job) hands its result back: the file lies on
    storage the search shares with it, and the search reads it once the Job has ended.
    """
    import dataclasses
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(result)))
    os.replace(tmp, path)


def read_result(path: str | os.PathLike) -> TrainResult | None:
    """A result written by `write_result`; None when there is no file (yet)."""
    import json

    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    return TrainResult(**json.loads(text))
