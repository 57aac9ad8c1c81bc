"""`leanfit watch`: run the pipeline when the dataset changes (AutoML CI/CD).

A check computes the dataset's digest (unchanged files are not read again) and compares it with
the digest of the last completed pipeline run in MLflow. When they differ, it runs the pipeline
here, or submits it to Kubeflow Pipelines. Exactly one run per digest:

- two watchers on one machine take turns on a lock in the work folder (the second then finds the
  digest done and does nothing); a watcher that crashes releases the lock with its process;
- only a *completed* run counts, so a run that failed or was killed half-way is run again at the
  next check, not forgotten;
- a submission to KFP is recorded in MLflow, so the same digest is not submitted again while its
  run may still be going (`resubmit_after`).

Bad data does not stop a watcher: unreadable files are skipped and listed (as everywhere in
leanfit), and an empty new class folder is reported and left out.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from leanfit.config import Experiment, experiment_from_dict

TAG_SUBMITTED_DIGEST = "leanfit.submitted_digest"


@dataclass
class CheckResult:
    action: str  # "unchanged", "ran", "busy" (running elsewhere), "submitted", "already-submitted"
    digest: str
    previous_digest: str | None = None
    run_id: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)


def tolerant(experiment: Experiment) -> Experiment:
    """The experiment as a watcher runs it: an empty class folder is left out, not an error."""
    data = experiment.model_dump(mode="json")
    data["dataset"]["empty_classes"] = "skip"
    return experiment_from_dict(data, experiment.base_dir)


def empty_class_folders(experiment: Experiment) -> list[str]:
    """The class folders with no files yet; in a folder split in advance, as train/bird."""
    from leanfit.data.check import arrange, class_folders, local_class_files
    from leanfit.data.fingerprint import list_files
    from leanfit.errors import DatasetError

    root = experiment.dataset_path()
    if experiment.dataset.source != "imagefolder" or root is None or not root.is_dir():
        return []
    if experiment.dataset.labels is not None:  # classes from a CSV, not from folders
        return []
    found = local_class_files(root)
    try:
        splits = arrange(experiment.dataset, str(root), found).split_folders
    except DatasetError:  # said by the load that follows
        return []
    if not splits:
        return sorted(name for name, files in found.items() if not files)
    return sorted(
        f"{top}/{folder.name}"
        for top in splits
        for folder in class_folders(root / top)
        if not list_files(folder)
    )


@contextlib.contextmanager
def watch_lock(experiment: Experiment) -> Iterator[None]:
    """One check at a time per experiment and work folder; the OS frees it if a watcher dies."""
    path = experiment.work_path() / f"watch-{experiment.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_once(
    experiment: Experiment,
    submit: Callable[[Experiment], Any] | None = None,
    resubmit_after: float = 6 * 3600,
    log: Callable[..., None] = print,
    on_run: Callable[[], None] | None = None,
) -> CheckResult:
    """One check: run (or `submit`) the pipeline if the data changed since the last completed
    run. `submit` sends the pipeline to KFP and returns its submission (see `leanfit submit`);
    `log(text, file=None)` says what happens, as `print` does (the pipeline's lines come with
    `file`: the terminal, which its log file hides while it runs); `on_run()` is called as a
    pipeline run starts here."""
    from leanfit.data.check import NO_READABLE_IMAGE
    from leanfit.data.sources import load_dataset, skipped_files, skipped_notice
    from leanfit.launch import PipelineBusy, run_locally
    from leanfit.track.pipeline import TAG_DIGEST, champion_now, find_pipeline_runs

    experiment = tolerant(experiment)
    with watch_lock(experiment):
        empty = empty_class_folders(experiment)
        for name in empty:
            log(f"class folder {name!r} has no images yet: left out until it has some")
        dataset = load_dataset(experiment)
        for name, why in dataset.dropped_classes:
            if why == NO_READABLE_IMAGE:  # (the empty ones are said above)
                log(f"class folder {name!r} has {why}: left out until it has one")
        done = find_pipeline_runs(experiment, status="FINISHED")  # (the last completed first)
        previous = done[0].data.tags.get(TAG_DIGEST) if done else None
        found = CheckResult(
            "unchanged", dataset.digest, previous, skipped=dataset.skipped, empty_classes=empty
        )
        gone = None
        if previous == dataset.digest:  # (its champion deleted by hand: registered again)
            _, gone = champion_now(experiment, done[0])
        if previous == dataset.digest and gone is None:
            # the unreadable files were listed when this data was new: a watcher polling every
            # few minutes says how many, not the list again each time
            also = f", {skipped_files(dataset.skipped)} skipped" if dataset.skipped else ""
            log(f"dataset unchanged (digest {dataset.digest[:12]}{also}): nothing to do")
            return found
        if gone is not None:
            log(f"dataset unchanged (digest {dataset.digest[:12]}), but {gone}")
        else:
            log(
                f"dataset changed: digest {dataset.digest[:12]} "
                f"(last completed run: {previous[:12] if previous else 'none'})"
            )
        if dataset.skipped and submit is not None:
            # how many, and the first few (a folder may hold thousands); a pipeline run here
            # lists them in its fingerprint step
            for line in skipped_notice(dataset.skipped).splitlines():
                log(line)
        if submit is None:
            if on_run is not None:  # (an interrupt from now on stops a pipeline run)
                on_run()
            try:
                outcome = run_locally(experiment, log=log)
            except PipelineBusy as busy:
                # (`leanfit run` of the same file and data: it finishes this data; a CronJob's
                # check that met it failed, exit 2)
                log(
                    f"a pipeline run of this file and data is running now (process {busy.pid}, "
                    f"since {busy.since}): left to it; the next check finds its result"
                )
                found.action = "busy"
                return found
            found.action, found.run_id, found.result = "ran", outcome.run_id, outcome.result
            return found
        earlier = recent_submission(experiment, dataset.digest, resubmit_after)
        if earlier is not None:
            log(f"already submitted for this digest ({earlier}); waiting for it to complete")
            found.action, found.run_id = "already-submitted", earlier
            return found
        submission = submit(experiment)
        found.action = "submitted"
        found.run_id = submission.run_id or submission.recurring_run_id
        record_submission(experiment, dataset, found.run_id, submission.url)
        log(f"submitted run {found.run_id}: {submission.url}")
        return found


def recent_submission(experiment: Experiment, digest: str, within: float) -> str | None:
    from leanfit.track.runs import TrialLogger

    logger = TrialLogger(experiment.tracking_uri(), experiment.experiment_name())
    runs = logger.client.search_runs(
        [logger.experiment_id],
        filter_string=(
            f"tags.`leanfit.kind` = 'submission' and tags.`{TAG_SUBMITTED_DIGEST}` = '{digest}'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs and time.time() - runs[0].info.start_time / 1000 < within:
        return runs[0].data.tags.get("leanfit.kfp_run_id")
    return None


def record_submission(experiment: Experiment, dataset, run_id: str | None, url: str) -> None:
    from leanfit.track.runs import TrialLogger, dataset_input

    logger = TrialLogger(experiment.tracking_uri(), experiment.experiment_name())
    tags = {
        "leanfit.kind": "submission",
        TAG_SUBMITTED_DIGEST: dataset.digest,
        "leanfit.kfp_run_id": run_id or "",
        "leanfit.kfp_url": url,
    }
    run = logger.client.create_run(logger.experiment_id, run_name="submission", tags=tags)
    logger.client.log_inputs(
        run.info.run_id, datasets=[dataset_input(dataset, experiment.dataset.source)]
    )
    logger.client.set_terminated(run.info.run_id, "FINISHED")


def watch(
    interval: float, check: Callable[[], CheckResult], log: Callable[[str], None] = print
) -> None:
    """Check every `interval` seconds until interrupted; a failed check is retried next time."""
    from leanfit import stopping
    from leanfit.errors import LeanfitError

    while True:
        try:
            check()
        except LeanfitError as e:
            log(f"check failed: {e}; trying again in {interval:.0f} s")
        stopping.sleep(interval)  # (time.sleep's whole span could miss a Ctrl-C)
