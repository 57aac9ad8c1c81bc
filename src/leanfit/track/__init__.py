"""MLflow tracking: runs, dataset inputs, reading past trials back, registry and aliases."""

from leanfit.track.runs import TrialLogger, dataset_input

__all__ = ["TrialLogger", "dataset_input"]
