"""A pipeline run in MLflow: one parent run per pipeline, keyed by its settings and its data.

The search run nests under it; its tags say which data it saw and what it registered, so that a
second run on unchanged data is recognised and skipped, and a watcher knows the last completed run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leanfit.config import Experiment
from leanfit.track.runs import (
    TrialLogger,
    create_run_once,
    dataset_input,
    param_value,
    runs_of_keys,
)

if TYPE_CHECKING:  # torch, with the data module: not for a command that only reads MLflow
    from leanfit.data.sources import LoadedDataset

TAG_KIND = "leanfit.kind"
TAG_PIPELINE_KEY = "leanfit.pipeline_key"
TAG_DIGEST = "leanfit.dataset_digest"
TAG_RESULT = "leanfit.result"
TAG_PLACE = "leanfit.work_place"  # host:work folder of the process that runs the pipeline


def work_place(experiment: Experiment) -> str:
    import socket

    return f"{socket.gethostname()}:{experiment.work_path()}"


def start_pipeline_run(experiment: Experiment, dataset: LoadedDataset, key: str) -> str:
    logger = TrialLogger(experiment.tracking_uri(), experiment.experiment_name())
    tags = {
        TAG_KIND: "pipeline",
        TAG_PIPELINE_KEY: key,
        TAG_DIGEST: dataset.digest,
        TAG_PLACE: work_place(experiment),
    }
    run = create_run_once(logger.client, logger.experiment_id, f"pipeline-{experiment.name}", tags)
    logger.client.log_inputs(
        run.info.run_id, datasets=[dataset_input(dataset, experiment.dataset.source)]
    )
    from mlflow.entities import Param

    # its settings, so that pipeline runs can be compared and filtered in MLflow's UI (it had
    # none: only its nested search run carried some)
    params = [Param(k, param_value(v)[:6000]) for k, v in sorted(pipeline_params(experiment))]
    for start in range(0, len(params), 100):  # (MLflow takes 100 a batch)
        logger.client.log_batch(run.info.run_id, params=params[start : start + 100])
    return run.info.run_id


def pipeline_params(experiment: Experiment) -> list[tuple[str, Any]]:
    """The experiment file's settings as (dotted name, value): every section but the space
    (which the nested search run keeps), where the files go, and the tracking URI (a database
    URI may hold its password)."""
    out: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        else:
            out.append((prefix, value))

    data = experiment.model_dump(mode="json", exclude={"space", "base_dir", "work_dir", "tracking"})
    for section, value in data.items():
        walk(section, value)
    return out


def finish_pipeline_run(
    experiment: Experiment, run_id: str, result: Mapping[str, Any], files: list[Path]
) -> None:
    from mlflow.entities import Metric

    logger = TrialLogger(experiment.tracking_uri(), experiment.experiment_name())
    client = logger.client
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path="report")
    client.set_tag(run_id, TAG_RESULT, json.dumps(result, sort_keys=True, default=str)[:5000])
    metrics = {k: result[k] for k in ("test_accuracy", "params") if k in result}
    client.log_batch(run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])
    client.set_terminated(run_id, "FINISHED")


def mark_pipeline_ended(
    experiment: Experiment, run_id: str, message: str, status: str = "FAILED"
) -> None:
    """End a pipeline run that did not finish: FAILED with its step's message, or KILLED."""
    logger = TrialLogger(experiment.tracking_uri(), experiment.experiment_name())
    logger.client.set_tag(run_id, "leanfit.failure", message[:5000])
    logger.client.set_terminated(run_id, status)


def close_dead_pipeline_runs(experiment: Experiment, key: str) -> list[str]:
    """Mark KILLED the pipeline runs of `key` that MLflow shows RUNNING but that ran here (this
    host and work folder) in a process that died without saying so (`kill -9`, a crash). Only
    while this process holds the key's pipeline lock (`leanfit.launch`): no live run of the key
    is here then. Runs from elsewhere are left alone. Returns the ids closed."""
    place = work_place(experiment)
    closed = []
    for run in find_pipeline_runs(experiment, key=key, status="RUNNING"):
        if run.data.tags.get(TAG_PLACE) == place:
            mark_pipeline_ended(
                experiment, run.info.run_id,
                "its process ended without saying so (killed, or crashed); a later run went on",
                "KILLED",
            )  # fmt: skip
            closed.append(run.info.run_id)
    return closed


def find_pipeline_runs(
    experiment: Experiment, key: str | Sequence[str] | None = None, status: str | None = None
) -> list:
    """Pipeline runs of this experiment, newest first (optionally of one key, or of any of a few
    keys, and of one status)."""
    logger = TrialLogger(experiment.tracking_uri(), experiment.experiment_name())
    where = f"tags.`{TAG_KIND}` = 'pipeline'"
    if status is not None:
        where += f" and attributes.status = '{status}'"
    return runs_of_keys(logger, where, TAG_PIPELINE_KEY, key, max_results=100)


def run_result(run) -> dict[str, Any]:
    from leanfit.errors import LeanfitError

    raw = run.data.tags.get(TAG_RESULT)
    try:
        result = json.loads(raw) if raw else {}
        if not isinstance(result, dict):
            raise ValueError(f"not an object: {raw[:80]!r}")
    except ValueError as e:
        raise LeanfitError(
            f"tracking: the pipeline run {run.info.run_id} cannot be read (its tag {TAG_RESULT} "
            f"is not leanfit's: {e}; edited by hand?): put it back, or run the pipeline again "
            "with --force (a new pipeline run; its search and final training are reused)"
        ) from None
    return result


def champion_now(experiment: Experiment, run) -> tuple[str | None, str | None]:
    """The champion version of the model a finished pipeline run registered, as the registry
    holds it now (moved by `leanfit promote`, say), and what is wrong where there is none: the
    registered model deleted, or its champion alias removed, by hand since. Before, such a run
    was said "up to date" with its champion (gone) for good, and a watcher saw nothing to do.
    (None, None) for a run that registered nothing."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name = run_result(run).get("registered_model")
    if not name:
        return None, None
    uri = experiment.tracking_uri()
    client = MlflowClient(uri, registry_uri=uri)
    try:
        champion = str(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException as missing:
        try:
            model = client.get_registered_model(name)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return None, (
                f"the registered model {name} is gone from the registry (deleted or renamed "
                f"since pipeline run {run.info.run_id} registered it; to follow a renamed one, "
                "set tracking.registered_model in the file to its new name)"
            )
        if "champion" in (model.aliases or {}):
            raise missing
        return None, (
            f"the registered model {name} has no champion (its alias was removed since pipeline "
            f"run {run.info.run_id})"
        )
    gone = model_files_gone(uri, name, champion)
    if gone is not None:
        return champion, f"the champion, {name} version {champion}, {gone}"
    return champion, None


def model_files_gone(uri: str, name: str, version: str) -> str | None:
    """What is wrong where a registered version's model files are gone from the artifact store
    (deleted by hand under ./mlruns, or purged): nothing could load it, while `leanfit run`
    said "up to date" and `leanfit promote` made it the champion. None where its MLmodel file
    is there. A listing, no download: no torch, milliseconds."""
    import mlflow.artifacts
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri, registry_uri=uri)
    try:
        where = client.get_model_version_download_uri(name, version)
        files = mlflow.artifacts.list_artifacts(artifact_uri=where, tracking_uri=uri)
    except (MlflowException, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"cannot be loaded: its model is gone ({first[:200]})"
    if not any(Path(f.path).name == "MLmodel" for f in files):
        return "cannot be loaded: its model files are gone from the artifact store"
    return None
