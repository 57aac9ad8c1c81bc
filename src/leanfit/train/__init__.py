"""One trial at one budget: the fast training loop, checkpoints, resume, metrics."""

from leanfit.train.trainer import Budget, TrainData, TrainResult, train

__all__ = ["Budget", "TrainData", "TrainResult", "train"]
