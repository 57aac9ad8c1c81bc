"""leanfit's search over a model family and space of your own: `python examples/own_space.py`.

A plain PyTorch multilayer perceptron on scikit-learn's 8x8 digits, none of it leanfit's: its
width and depth, dropout, learning rate and optimiser (with a momentum only for SGD) are the
space, `size` counts its parameters, and leanfit finds the Pareto front of validation accuracy
against parameters with ASHA, promoting a trial from the weights and optimiser state it
returned at the rung below.

    python examples/own_space.py --trials 60 --workers 2
"""

from __future__ import annotations

import argparse
import functools

import leanfit
from leanfit.errors import LeanfitError

SPACE = {
    "hidden": [4, 8, 16, 32, 64, 128],  # a list: one of these
    "layers": (1, 3),  # a tuple of two integers: an integer range
    "dropout": [0.0, 0.1, 0.3],
    "lr": {"low": 1e-3, "high": 0.3, "log": True},
    "optimizer": ["sgd", "adam"],
    "momentum": {"low": 0.5, "high": 0.99, "when": {"optimizer": ["sgd"]}},  # SGD's only
}
INPUTS, CLASSES = 64, 10


def size(config) -> int:
    """The network's parameters, counted without building it (the search asks often)."""
    h, n = config["hidden"], config["layers"]
    return (INPUTS * h + h) + (n - 1) * (h * h + h) + (h * CLASSES + CLASSES)


@functools.cache
def data():
    """scikit-learn's digits, 80% to train on and 20% to validate on, once a worker process."""
    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, val = order[: len(x) * 4 // 5], order[len(x) * 4 // 5 :]
    return x[train], y[train], x[val], y[val]


def build(config):
    from torch import nn

    layers, width = [], INPUTS
    for _ in range(config["layers"]):
        layers += [nn.Linear(width, config["hidden"]), nn.ReLU(), nn.Dropout(config["dropout"])]
        width = config["hidden"]
    return nn.Sequential(*layers, nn.Linear(width, CLASSES))


def objective(trial):
    import torch

    train_x, train_y, val_x, val_y = data()
    c = trial.config
    torch.manual_seed(trial.seed)
    model = build(c)
    if c["optimizer"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"])
    else:
        opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    if trial.state is not None:  # a promotion: go on from the rung below
        model.load_state_dict(trial.state["model"])
        opt.load_state_dict(trial.state["optimizer"])
    generator = torch.Generator().manual_seed(trial.seed + trial.epoch)
    while trial.running:
        model.train()
        for batch in torch.randperm(len(train_x), generator=generator).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(val_x).argmax(1) == val_y).float().mean().item()
        trial.report(accuracy, train_loss=loss.item())
    return {"model": model.state_dict(), "optimizer": opt.state_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    try:
        result = leanfit.optimize(
            objective,
            {"name": "own-mlp", "budget": {"min_epochs": 1, "max_epochs": 27}},
            space=SPACE,
            size=size,
            trials=args.trials,
            workers=args.workers,
        )
    except LeanfitError as e:  # a setting refused: the message names it and the fix
        parser.exit(2, f"error: {e}\n")
    print(f"{'parameters':>10}  val acc  epochs  configuration")
    for m in result.front:
        print(f"{m['params']:>10,}  {m['val_accuracy']:.4f}  {m['epochs']:>6}  {m['config']}")
    print(f"report {result.report_html}")


if __name__ == "__main__":
    main()
