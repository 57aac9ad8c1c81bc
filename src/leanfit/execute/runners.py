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
    JSON file, so promotions and retries work exactly as with real training. A spec's
    `curve_stop` is checked after every epoch, as the trainer does, and a stopped run sleeps only
    for the epochs it reached.
    """
    import json
    import os
    import time
    from pathlib import Path

    from leanfit.config import experiment_from_dict
    from leanfit.search.objectives import SyntheticObjective
    from leanfit.train.curve import CURVE_TOLERANCE
    from leanfit.train.result import TrainResult

    exp = experiment_from_dict(experiment, base_dir)
    ds = exp.dataset
    objective = SyntheticObjective(
        exp.search_space(),
        in_channels=ds.num_channels,
        image_size=ds.image_size,
        num_classes=10,
        noise=noise,
        seed=seed,
    )
    # the curve's tolerance: the accuracies vary by `noise`, give or take
    tolerance = max(CURVE_TOLERANCE, 2 * noise)

    def run(spec):
        start, earlier = 0, []  # the history before this run: the curve is fitted on it too
        if spec.resume_from:
            state = json.loads(Path(spec.resume_from).read_text())
            start, earlier = state["epochs"], state.get("history", [])
        result = objective.evaluate(
            spec.config, spec.epochs, start, spec.data_fraction, spec.resolution
        )
        # no sizes of its own: nothing was built, and its model of them took 10 classes (a
        # 3-class dry run logged 562 parameters for the search's 499); the search's count of
        # the configuration is logged for it, as for a Python objective's job
        out = TrainResult("ok", [], 0, 0, epochs=spec.epochs)
        for i, acc in enumerate(result.curve):
            out.history.append({"epoch": start + i + 1, "val_accuracy": acc, "train_loss": 1 - acc})
            out.epochs = start + i + 1
            if spec.curve_stop is not None:
                hopeless = spec.curve_stop.reason(earlier + out.history, tolerance)
                if hopeless is not None:
                    out.status, out.reason = "stopped", hopeless
                    break
        time.sleep(sleep_per_epoch * (out.epochs - start))
        if spec.checkpoint_to:
            path = Path(spec.checkpoint_to)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"epochs": out.epochs, "history": earlier + out.history}))
            os.replace(tmp, path)
            out.checkpoint = str(path)
        return out

    return run
