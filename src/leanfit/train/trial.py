"""A trial: one configuration at one budget on the experiment's data, the unit that runs anywhere.

`leanfit trial` runs one from the command line; the search's workers and Kubernetes Jobs run the
same function with a `TrialSpec` they were handed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from leanfit.config import Experiment
from leanfit.data.sources import LoadedDataset
from leanfit.data.splits import stratified_subset
from leanfit.errors import GenotypeError
from leanfit.train.trainer import Budget, TrainData, TrainResult, train


class TrialSpec(BaseModel):
    """Everything a worker needs to run a trial besides the experiment file and the data."""

    model_config = ConfigDict(extra="forbid")

    trial_id: str
    config: dict[str, Any]
    epochs: int = Field(gt=0)
    schedule_epochs: int | None = None
    data_fraction: float = Field(1.0, gt=0, le=1)
    resolution: int | None = None
    seed: int = 0
    resume_from: str | None = None
    checkpoint_to: str | None = None

    @property
    def budget(self) -> Budget:
        return Budget(self.epochs, self.schedule_epochs, self.data_fraction, self.resolution)


def train_data(
    experiment: Experiment, dataset: LoadedDataset, for_search: bool = True
) -> TrainData:
    """Training and validation tensors; the search trains on `dataset.search_fraction` of train."""
    ds = experiment.dataset
    splits = dataset.splits(ds.val_fraction, ds.test_fraction, ds.seed)
    train_idx = splits.train
    if for_search and ds.search_fraction < 1.0:
        labels = dataset.labels.numpy()[train_idx]
        train_idx = train_idx[stratified_subset(labels, ds.search_fraction, ds.seed)]
    return TrainData(
        dataset.images[train_idx],
        dataset.labels[train_idx],
        dataset.images[splits.val],
        dataset.labels[splits.val],
        dataset.num_classes,
    )


def run_trial(
    experiment: Experiment, spec: TrialSpec, data: TrainData, on_epoch=None
) -> TrainResult:
    """Validate the configuration against the space, then train it."""
    space = experiment.search_space()
    try:
        config = space.validate(spec.config)
    except GenotypeError as e:
        return TrainResult(status="failed", reason=f"invalid configuration: {e}")
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
    )


def default_checkpoint(experiment: Experiment, trial_id: str) -> str:
    return os.fspath(Path(experiment.work_path()) / "checkpoints" / f"{trial_id}.pt")
