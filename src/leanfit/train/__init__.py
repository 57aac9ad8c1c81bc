"""One trial at one budget: the fast training loop, checkpoints, resume, metrics.

Its names are read from the trainer (torch) when first asked for, not when the package is
imported (see `leanfit.models`)."""

__all__ = ["Budget", "TrainData", "TrainResult", "train"]


def __getattr__(name: str):
    if name in ("Budget", "TrainResult"):  # (plain data)
        from leanfit.train import result

        return getattr(result, name)
    if name in __all__:
        from leanfit.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'leanfit.train' has no attribute {name!r}")
