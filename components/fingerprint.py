"""Component 1: the dataset's digest and manifest; opens the pipeline's MLflow run."""

from typing import NamedTuple

from kfp.dsl import Dataset, Output


def fingerprint(experiment: str, base_dir: str, manifest: Output[Dataset]) -> NamedTuple(
    "Outputs", [("digest", str), ("pipeline_run_id", str)]
):
    from collections import namedtuple

    from leanfit import steps

    out = steps.run_step(
        "fingerprint", steps.fingerprint, experiment, base_dir, manifest_path=manifest.path
    )
    manifest.metadata["digest"] = out["digest"]
    outputs = namedtuple("Outputs", ["digest", "pipeline_run_id"])
    return outputs(out["digest"], out["pipeline_run_id"])
