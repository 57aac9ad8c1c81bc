"""leanfit's search driving a training loop of your own: `python examples/own_training.py`.

leanfit proposes configurations of the space in examples/digits.yaml (architecture and
hyperparameters), schedules them with ASHA and keeps the Pareto front of accuracy against
parameters; this file trains them, with plain PyTorch: the place for a loss, a sampler or a
regulariser of your own. A promoted trial goes on from the weights and optimiser state it
returned at the rung below.

    python examples/own_training.py --trials 40 --workers 2
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import leanfit
from leanfit.errors import LeanfitError

EXPERIMENT = Path(__file__).resolve().parent / "digits.yaml"


@functools.cache
def data():
    """The digits' training and validation splits as float tensors, once a worker process."""
    from leanfit.config import load_experiment
    from leanfit.data.sources import load_dataset
    from leanfit.train.trial import train_data

    experiment = load_experiment(EXPERIMENT)
    split = train_data(experiment, load_dataset(experiment), for_search=True)
    as_float = lambda x: x.float().div(255.0)  # noqa: E731 - uint8 N x C x H x W in, [0, 1] out
    return as_float(split.train_x), split.train_y, as_float(split.val_x), split.val_y


def objective(trial):
    import torch
    from torch import nn

    from leanfit.models.builder import build_model

    train_x, train_y, val_x, val_y = data()
    c = trial.config
    torch.manual_seed(trial.seed)
    model = build_model(c, train_x.shape[1], train_x.shape[2], int(train_y.max()) + 1)
    if c["optimizer"] == "sgd":
        opt = torch.optim.SGD(
            model.parameters(), lr=c["lr"], momentum=c["momentum"], nesterov=c["nesterov"],
            weight_decay=c["weight_decay"],
        )  # fmt: skip
    else:
        opt = torch.optim.AdamW(
            model.parameters(), lr=c["lr"], betas=(c["beta1"], 0.999),
            weight_decay=c["weight_decay"],
        )  # fmt: skip
    if trial.state is not None:  # promoted: go on from the rung below
        model.load_state_dict(trial.state["model"])
        opt.load_state_dict(trial.state["optimizer"])
    loss_fn = nn.CrossEntropyLoss(label_smoothing=c["label_smoothing"])
    while trial.running:
        model.train()
        order = torch.randperm(len(train_x))
        for start in range(0, len(order), c["batch_size"]):
            batch = order[start : start + c["batch_size"]]
            opt.zero_grad()
            loss = loss_fn(model(train_x[batch]), train_y[batch])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(val_x).argmax(1) == val_y).float().mean().item()
        trial.report(accuracy, train_loss=loss.item())  # NaN loss: the trial fails, not the search
    return {"model": model.state_dict(), "optimizer": opt.state_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--wall-time", default=None, help="a budget in time, e.g. 5m")
    args = parser.parse_args()
    try:
        result = leanfit.optimize(
            objective,
            EXPERIMENT,
            workers=args.workers,
            trials=args.trials,
            wall_time=args.wall_time,
        )
    except LeanfitError as e:  # a setting refused: the message names it and the fix
        parser.exit(2, f"error: {e}\n")
    for model in result.front:
        print(f"{model['params']:>7,} parameters  val acc {model['val_accuracy']:.4f}")
    best = result.best(max_params=2_000)
    if best is not None:
        print(f"best of at most 2,000 parameters: trial {best['trial']}, {best['params']:,}")
    for line in result.failures:
        print(line)
    print(f"report {result.report_html}")


if __name__ == "__main__":
    main()
