"""Runner factories: what a worker builds once and then calls for every trial."""

from __future__ import annotations

from typing import Any

from leanfit.execute.base import Runner


def training_runner(
    experiment: dict[str, Any], base_dir: str, threads: int | None = None
) -> Runner:
    """Real training: load the experiment's data once, then train each spec handed over."""
    import torch

    from leanfit.config import experiment_from_dict
    from leanfit.data.sources import load_dataset
    from leanfit.train.trial import run_trial, train_data

    if threads:
        torch.set_num_threads(threads)
    exp = experiment_from_dict(experiment, base_dir)
    data = train_data(exp, load_dataset(exp), for_search=True)
    return lambda spec: run_trial(exp, spec, data)
