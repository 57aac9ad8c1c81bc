"""Runner factories: what a worker builds once and then calls for every trial."""

from __future__ import annotations

from typing import Any

from leanfit.execute.base import Runner


def training_runner(
    experiment: dict[str, Any],
    base_dir: str,
    threads: int | None = None,
    plan_file: str | None = None,
) -> Runner:
    """Real training: load the experiment's data once, then train each spec handed over.

    `plan_file` (the pipeline's data plan) fixes which images the search trains on.
    """
    import torch

    from leanfit.config import experiment_from_dict
    from leanfit.data.sources import load_dataset
    from leanfit.data.splits import DataPlan
    from leanfit.train.trial import run_trial, train_data

    if threads:
        torch.set_num_threads(threads)
    exp = experiment_from_dict(experiment, base_dir)
    plan = DataPlan.load(plan_file) if plan_file else None
    data = train_data(exp, load_dataset(exp), for_search=True, plan=plan)
    return lambda spec: run_trial(exp, spec, data)


def synthetic_runner(
    experiment: dict[str, Any],
    base_dir: str = ".",
    seed: int = 0,
    noise: float = 0.005,
    sleep_per_epoch: float = 0.0,
) -> Runner:
    """The synthetic objective of `leanfit.search.objectives` behind the same runner interface.

    A resumed spec continues from the epochs its checkpoint records; the "checkpoint" is a small
    JSON file, so promotions and retries work exactly as with real training.
    """
    import json
    import os
    from pathlib import Path

    from leanfit.config import experiment_from_dict
    from leanfit.search.objectives import SyntheticObjective
    from leanfit.train.trainer import TrainResult

    exp = experiment_from_dict(experiment, base_dir)
    ds = exp.dataset
    objective = SyntheticObjective(
        exp.search_space(),
        in_channels=ds.num_channels,
        image_size=ds.image_size,
        num_classes=10,
        noise=noise,
        seed=seed,
        sleep_per_epoch=sleep_per_epoch,
    )

    def run(spec):
        start = 0
        if spec.resume_from:
            start = json.loads(Path(spec.resume_from).read_text())["epochs"]
        result = objective.evaluate(
            spec.config, spec.epochs, start, spec.data_fraction, spec.resolution
        )
        history = [
            {"epoch": start + i + 1, "val_accuracy": acc, "train_loss": 1 - acc}
            for i, acc in enumerate(result.curve)
        ]
        out = TrainResult("ok", history, result.params, result.macs, epochs=spec.epochs)
        if spec.checkpoint_to:
            path = Path(spec.checkpoint_to)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"epochs": spec.epochs}))
            os.replace(tmp, path)
            out.checkpoint = str(path)
        return out

    return run
