"""A search in MLflow: one parent run, one nested run per trial job (a trial trained to a rung).

The nested run is created when the job starts (status RUNNING) and finished when its outcome
arrives, so the MLflow UI shows what is in flight, and a search killed with `kill -9` can be
rebuilt from MLflow alone: finished jobs are told again, jobs still RUNNING are restarted from
their checkpoint. Nothing about the search lives only in the controller's memory.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leanfit.errors import LeanfitError
from leanfit.track.runs import (
    TAG_DUPLICATE_OF,
    TrialLogger,
    create_run_once,
    dataset_input,
    param_value,
    run_status,
    runs_of_keys,
)

if TYPE_CHECKING:  # torch, with the data module: not for a command that only reads MLflow
    from leanfit.config import Experiment
    from leanfit.data.sources import LoadedDataset

TAG_KIND = "leanfit.kind"
TAG_TRIAL = "leanfit.trial_id"
TAG_RUNG = "leanfit.rung"
TAG_BRACKET = "leanfit.bracket"
TAG_FROM_RUNG = "leanfit.from_rung"
TAG_CONFIG = "leanfit.config"
TAG_BUDGET = "leanfit.budget"
TAG_CHECKPOINT = "leanfit.checkpoint"
TAG_RESUME_FROM = "leanfit.resume_from"
TAG_STATUS = "leanfit.status"
TAG_FAILURE = "leanfit.failure"
TAG_ATTEMPT = "leanfit.attempt"
TAG_SEARCH_KEY = "leanfit.search_key"
TAG_SETTINGS_KEY = "leanfit.settings_key"  # the search key without the data
# The settings the key was made of (JSON), to say which changed when a search cannot be resumed
TAG_SETTINGS = "leanfit.settings"
MAX_TAG = 8000  # characters in an MLflow tag's value
# The budget a search was last run with (a `--wall-time` or `--trials` given on the command line
# is not part of the search's key): the pipeline reuses a finished search only if it had at least
# the budget asked now
TAG_BUDGET = "leanfit.budget"
TAG_WARM_FROM = "leanfit.warm_start_from"
# A pipeline's search: the settings key of the file the pipeline started from, and the augment
# policy its augment-policy step fixed, so `leanfit report FILE` finds the search
TAG_FILE_KEY = "leanfit.file_settings_key"
TAG_POLICY = "leanfit.augment_policy"
# What a search optimised when it was not real training: "synthetic" (`leanfit search
# --synthetic`), or "python:MODULE:FUNCTION" (`leanfit.optimize`); absent for real training. It is
# part of the search's key, so that no such search is resumed, reused or warm-started from by
# one that trains (a dry run's accuracies are made up).
TAG_OBJECTIVE = "leanfit.objective"


# Settings that change no result, so no key (the search's, the pipeline's) holds them: where it
# runs, where its files go (the pipeline makes work_dir absolute), and whether an empty class
# folder is an error or left out (`leanfit watch` leaves it out; the data loaded, which the digest
# covers, is the same)
NO_RESULT = {"base_dir": True, "executor": True, "work_dir": True, "dataset": {"empty_classes"}}
# ... and for a search, where it logs and what the pipeline adds around it; and its budget
# (wall time, trials): a search given more goes on, it is not another search (a budget edited
# in the file, or `leanfit run --wall-time`, started again from nothing)
NOT_SEARCHED_BEFORE = {**NO_RESULT, "tracking": True, "pipeline": True}
NOT_SEARCHED = {**NOT_SEARCHED_BEFORE, "budget": {"wall_time", "trials"}}


# the settings of the budget, which no search's key holds
BUDGET_SETTINGS = {"budget.wall_time", "budget.trials"}


def search_settings(experiment: Experiment) -> dict[str, Any]:
    """What identifies a search besides its data: the file, less where it runs and logs."""
    return experiment.model_dump(mode="json", exclude=NOT_SEARCHED)


def key_settings(model, exclude, legacy: bool = False) -> dict[str, Any]:
    """The settings a key is made of: those not at their defaults. A version of leanfit that
    adds a setting (whose default keeps the old behaviour) then keeps every key: before, each
    such addition made every search, pipeline run and final training another, done again after
    an upgrade. `legacy`: every setting, as keys were made before (still looked up, so the
    searches of the version before are found)."""
    return model.model_dump(mode="json", exclude=exclude, exclude_defaults=not legacy)


def splits_identity(experiment: Experiment, settings: dict[str, Any]) -> dict[str, str]:
    """What a key says of how the splits are drawn, in place of `dataset.split` (taken out of
    `settings`): the splits drawn, not how the file asked for them, so `auto` and what it means
    are one search; stable splits are another search (and pipeline run) than the shuffled ones
    image folders had before, whose keys stay what they were."""
    settings.get("dataset", {}).pop("split", None)
    return {"splits": "stable"} if experiment.dataset.stable_splits else {}


def search_key(
    experiment: Experiment,
    digest: str | None,
    objective: str | None = None,
    legacy: bool = False,
    with_budget: bool = False,
) -> str:
    """Identifies a search: the same file on the same data resumes the same search, whatever
    its budget.

    Without a digest, it identifies the settings alone: a search on changed data with the same
    settings is warm-started from the last one. `objective` names what the search optimised when
    it was not real training (`TAG_OBJECTIVE`). `legacy`: the key as versions before made it,
    with every setting; `with_budget`: as the version before this one made it, with the budget.
    """
    exclude = NOT_SEARCHED_BEFORE if legacy or with_budget else NOT_SEARCHED
    settings = key_settings(experiment, exclude, legacy)
    identity: dict[str, Any] = {
        "settings": settings,
        "digest": digest,
        **splits_identity(experiment, settings),
    }
    if objective is not None:
        identity["objective"] = objective
    blob = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def search_keys(
    experiment: Experiment, digest: str | None, objective: str | None = None
) -> list[str]:
    """The keys a search of these settings may be found by: its own, then the ones versions
    before made: with the budget, and (searches of real training only: the others are new with
    this key) with every setting."""
    keys = [search_key(experiment, digest, objective),
            search_key(experiment, digest, objective, with_budget=True)]  # fmt: skip
    if objective is None:
        keys.append(search_key(experiment, digest, legacy=True))
    return list(dict.fromkeys(keys))


def objective_text(objective: str | None) -> str:
    """What a search optimised, in words (see `TAG_OBJECTIVE`)."""
    if objective is None:
        return "real training"
    if objective == "synthetic":
        return "the synthetic objective of a dry run"
    return f"the Python objective {objective.removeprefix('python:')}"


def changed_settings(before: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list:
    """The dotted names of the settings that differ, with their values before and now."""
    out = []
    for k in sorted(set(before) | set(now)):
        a, b = before.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_settings(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append((f"{prefix}{k}", a, b))
    return out


def why_not_resumable(
    logger: TrialLogger, experiment: Experiment, digest: str, objective: str | None = None
) -> str | None:
    """Why the latest unfinished search of this experiment is not this file's on this data: it
    optimised something else (a dry run's synthetic objective, a Python function), the dataset
    changed, or which settings did; None when there is no unfinished search."""
    runs = logger.client.search_runs(
        [logger.experiment_id],
        filter_string=f"tags.`{TAG_KIND}` = 'search' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    tags = run.data.tags
    where = f"the unfinished search {run.info.run_id}"
    ran = tags.get(TAG_OBJECTIVE)
    if ran != objective:
        return f"{where} optimised {objective_text(ran)}, not {objective_text(objective)}" + (
            " (add --synthetic to resume it)" if ran == "synthetic" else ""
        )
    before = tags.get("leanfit.dataset_digest")
    if before and before != digest:
        return (
            f"{where} ran on other data (digest {before[:12]}, now {digest[:12]}): a search "
            "resumes on the data it started with"
        )
    if TAG_SETTINGS not in tags:
        return f"{where} was started with other settings"
    changed = settings_changed_since(run, experiment)
    if changed is None:
        return None
    return f"{where} was started with other settings ({changed}); put them back to resume it"


def changed_text(changed: list, shown: int = 4) -> str:
    """The first settings `changed_settings` found, as "name: before, now after"."""
    text = "; ".join(f"{name}: {a!r}, now {b!r}" for name, a, b in changed[:shown])
    return text + (f"; and {len(changed) - shown} more" if len(changed) > shown else "")


def settings_changed_since(run, experiment: Experiment) -> str | None:
    """Which of `experiment`'s settings differ from those search `run` started with, in words,
    but its budget (a search is read back whatever its budget); None: not known (a run from
    before the tag), or none differ."""
    logged = run.data.tags.get(TAG_SETTINGS)
    if logged is None:
        return None
    changed = changed_settings(json.loads(logged), search_settings(experiment))
    changed = [c for c in changed if c[0] not in BUDGET_SETTINGS]
    return changed_text(changed) if changed else None


@dataclass
class JobRecord:
    """A trial job as MLflow remembers it."""

    run_id: str
    trial_id: int
    rung: int
    bracket: int
    from_rung: int | None
    config: dict[str, Any]
    budget: dict[str, Any]
    status: str  # ok, stopped, failed, running, infrastructure, abandoned or interrupted
    metrics: dict[str, float]
    checkpoint: str | None
    resume_from: str | None
    reason: str | None
    attempt: int
    # MLflow still shows the run as RUNNING although its status is final: the search was killed
    # between writing a finished job's status and closing its run (`close_finished`)
    unclosed: bool = False
    started: int = 0  # when the job's run was created, ms since the epoch
    ended: int = 0  # when it was closed (0: not yet)


class SearchTakenOver(LeanfitError):
    """This controller's search was resumed at another place while it was stopped."""

    def __init__(self, run_id: str, place: str, silent: float):
        super().__init__(
            f"search: the search {run_id} was resumed at {place} while this controller was "
            f"stopped ({silent:.0f} s without a word: Ctrl-Z, SIGSTOP, a machine asleep); it "
            "goes on there, and this one stops here, writing nothing more to it (its running "
            "jobs run again there)"
        )


class SearchLog:
    """Writes and reads back one search's runs."""

    # found by `find_warm_start` on this data (its splits drawn the other way), not earlier data
    same_data = False

    # After this long without logging its elapsed time (a controller stopped by Ctrl-Z or
    # SIGSTOP, a laptop asleep), the place this search runs at is read again before anything
    # else is written: past `HEARD_WITHIN_SECONDS` (60 s) a --resume elsewhere may have taken it
    # over, and the two controllers wrote one run, which no report or resume could read after.
    silence_check = 30.0

    def __init__(self, logger: TrialLogger, search_run_id: str):
        self.logger = logger
        self.client = logger.client
        self.run_id = search_run_id
        self._place: str | None = None  # where this controller runs it, once it says so
        self._heard_at = time.time()  # when it last logged its elapsed time
        self.taken_over: str | None = None  # where it runs now, if another took it over

    def _still_ours(self) -> None:
        """Before a write: `SearchTakenOver` where this search was resumed at another place
        while this controller was silent past `silence_check` (nothing more is written)."""
        if self.taken_over is not None:
            raise SearchTakenOver(self.run_id, self.taken_over, time.time() - self._heard_at)
        if self._place is None or time.time() - self._heard_at < self.silence_check:
            return
        theirs = self.place()
        if theirs is not None and theirs != self._place:
            self.taken_over = theirs
            raise SearchTakenOver(self.run_id, theirs, time.time() - self._heard_at)

    @classmethod
    def start(
        cls,
        logger: TrialLogger,
        name: str,
        search_key: str,
        settings: Mapping[str, Any],
        dataset: LoadedDataset | None,
        dataset_name: str,
        parent_run_id: str | None = None,
        settings_key: str | None = None,
        extra_tags: Mapping[str, str] | None = None,
        settings_json: str | None = None,
        objective: str | None = None,
        digest: str | None = None,
    ) -> SearchLog:
        """A new search run; `dataset` None (and its `digest` given): a space of one's own,
        whose objective brings its data."""
        from mlflow.entities import Param

        tags = {
            TAG_KIND: "search",
            TAG_SEARCH_KEY: search_key,
            "leanfit.dataset_digest": dataset.digest if dataset is not None else digest,
        }
        if objective is not None:
            tags[TAG_OBJECTIVE] = objective
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        if settings_key:
            tags[TAG_SETTINGS_KEY] = settings_key
        if settings_json is not None and len(settings_json) <= MAX_TAG:
            tags[TAG_SETTINGS] = settings_json
        run = create_run_once(
            logger.client, logger.experiment_id, name, {**tags, **(extra_tags or {})}
        )
        params = [Param(k, param_value(v)[:6000]) for k, v in sorted(settings.items())]
        logger.client.log_batch(run.info.run_id, params=params)
        if dataset is not None:
            inputs = [dataset_input(dataset, dataset_name)]
            logger.client.log_inputs(run.info.run_id, datasets=inputs)
        return cls(logger, run.info.run_id)

    @classmethod
    def find_latest(
        cls, logger: TrialLogger, search_key: str | Sequence[str]
    ) -> tuple[SearchLog, str] | None:
        """The latest search of the same experiment settings and data, with its run status
        (`search_key`: its key, or the keys it may have been made with: `search_keys`)."""
        where = f"tags.`{TAG_KIND}` = 'search'"
        runs = runs_of_keys(logger, where, TAG_SEARCH_KEY, search_key, max_results=1)
        if not runs:
            return None
        return cls(logger, runs[0].info.run_id), runs[0].info.status

    @classmethod
    def find_warm_start(
        cls,
        logger: TrialLogger,
        settings_key: str | Sequence[str],
        digest: str,
        objective: str | None = None,
        other_splits: Sequence[str] = (),
    ) -> SearchLog | None:
        """The latest finished search with the same settings and objective on other data (the
        data changed), or, keyed by `other_splits`, the same settings with the splits drawn the
        other way (`dataset.split`) on any data: an image folder's shuffled search before its
        stable one."""
        where = f"tags.`{TAG_KIND}` = 'search' and attributes.status = 'FINISHED'"
        keys = [settings_key] if isinstance(settings_key, str) else list(settings_key)
        for run in runs_of_keys(logger, where, TAG_SETTINGS_KEY, keys + [*other_splits], 20):
            tags = run.data.tags
            other_data = tags.get("leanfit.dataset_digest") != digest
            other = tags.get(TAG_SETTINGS_KEY) in other_splits
            if tags.get(TAG_OBJECTIVE) == objective and (other_data or other):
                found = cls(logger, run.info.run_id)
                found.same_data = not other_data
                return found
        return None

    def log_warm_start(self, source_run_id: str, told: int, rechecked: int) -> None:
        from mlflow.entities import Metric

        self.client.set_tag(self.run_id, TAG_WARM_FROM, source_run_id)
        self.client.log_batch(
            self.run_id,
            metrics=[
                Metric("warm_start_told", float(told), int(time.time() * 1000), 0),
                Metric("warm_start_rechecked", float(rechecked), int(time.time() * 1000), 0),
            ],
        )

    @classmethod
    def find_resumable(
        cls, logger: TrialLogger, search_key: str | Sequence[str]
    ) -> SearchLog | None:
        """The latest unfinished search of the same experiment settings and data, if any (killed,
        stopped or failed; one started after it and finished does not hide it)."""
        where = f"tags.`{TAG_KIND}` = 'search' and attributes.status != 'FINISHED'"
        runs = runs_of_keys(logger, where, TAG_SEARCH_KEY, search_key, max_results=1)
        return cls(logger, runs[0].info.run_id) if runs else None

    def check_artifacts(self, settings: Mapping[str, Any], new: bool) -> None:
        """Store the search's settings as its first file (`experiment.yaml`), with few retries:
        an artifact store that takes no file (a tracking server's --artifacts-destination it
        cannot write) is found now, before any training, not at the report after the whole
        search and four minutes of MLflow's retries, which left the run RUNNING. A `new` run
        that cannot is deleted, so nothing half-made is left; a resumed one stays as it was."""
        from leanfit.errors import LeanfitError, write_refused
        from leanfit.track.runs import few_retries, server_errors

        try:
            with few_retries():
                self.client.log_dict(self.run_id, dict(settings), "experiment.yaml")
        except Exception as e:
            if write_refused(e) is not None:  # (a full disk, a file-size limit: said as such)
                raise
            where = self.client.get_run(self.run_id).info.artifact_uri
            if new:
                self.client.set_terminated(self.run_id, "FAILED")
                self.client.delete_run(self.run_id)
            cause = " ".join(str(e).split()) or type(e).__name__
            if "Caused by " in cause:  # urllib3's reason, after the URL said already
                cause = cause.split("Caused by ", 1)[1].removesuffix(")")
            if server_errors(e):
                cause = "the server answered with errors (HTTP 5xx)"
            raise LeanfitError(
                f"tracking: MLflow at {self.logger.tracking_uri} keeps runs but could not store "
                f"a file in {where} ({type(e).__name__}: {cause[:200]}). A tracking server's log "
                "says why: often its --artifacts-destination (or --default-artifact-root) names "
                "a folder it cannot write. Fix that, then run the command again"
                + ("; nothing was started" if new else f"; the search {self.run_id} is as it was")
            ) from None

    def set_status(self, status: str) -> None:
        self._still_ours()
        self.client.set_terminated(self.run_id, status)

    def reopen(self) -> None:
        self._still_ours()
        self.client.update_run(self.run_id, status="RUNNING")

    def mark_place(self, place: str, elapsed: float, step: int) -> None:
        """Where this search runs now (host:work folder), and that it was heard from now."""
        from leanfit.track.pipeline import TAG_PLACE

        self.client.set_tag(self.run_id, TAG_PLACE, place)
        self._place = place
        self.log_elapsed(elapsed, step)

    def place(self) -> str | None:
        """Where this search ran last (host:work folder), as `mark_place` recorded it."""
        from leanfit.track.pipeline import TAG_PLACE

        return self.client.get_run(self.run_id).data.tags.get(TAG_PLACE)

    def running_elsewhere(self, place: str, within: float) -> tuple[str, float] | None:
        """(where, seconds since it was heard from) where this search is RUNNING in another
        place (another work folder or machine, which its lock cannot see) and was heard from in
        the last `within` seconds; else None. A search killed with -9 stays RUNNING: heard from
        no more, it counts as stopped after `within` seconds."""
        from leanfit.track.pipeline import TAG_PLACE

        run = self.client.get_run(self.run_id)
        theirs = run.data.tags.get(TAG_PLACE)
        if run.info.status != "RUNNING" or theirs is None or theirs == place:
            return None
        history = self.client.get_metric_history(self.run_id, "search_elapsed_seconds")
        last = max([m.timestamp for m in history] + [run.info.start_time or 0]) / 1000
        ago = max(0.0, time.time() - last)
        return (theirs, ago) if ago < within else None

    def record_budget(self, wall_time: float | None, trials: int | None) -> None:
        self.client.set_tag(
            self.run_id, TAG_BUDGET, json.dumps({"wall_time": wall_time, "trials": trials})
        )

    def budget_short_of(self, wall_time: float | None, trials: int | None) -> str | None:
        """How this search's last budget fell short of `wall_time` seconds and `trials` trials,
        or None if it did not (a search from before the tag: its file's budget, which is part of
        its key)."""
        run = self.client.get_run(self.run_id)
        tag = run.data.tags.get(TAG_BUDGET)
        if tag is None:
            return None
        try:
            ran = dict(json.loads(tag))
        except (ValueError, TypeError) as e:
            raise LeanfitError(edited_tag(run, "search", e)) from None
        short = []
        for name, asked, unit in (("wall_time", wall_time, " s"), ("trials", trials, " trials")):
            had = ran.get(name)
            if had is not None and (asked is None or had < asked):
                asked_text = "no limit" if asked is None else f"{asked:g}{unit}"
                short.append(f"{had:g}{unit} against {asked_text}")
        return "; ".join(short) or None

    def job_started(
        self,
        trial_id: int,
        rung: int,
        bracket: int,
        from_rung: int | None,
        config: Mapping[str, Any],
        budget: Mapping[str, Any],
        checkpoint: str | None,
        resume_from: str | None,
        attempt: int,
        digest: str,
    ) -> str:
        from mlflow.entities import Param

        self._still_ours()
        tags = {
            TAG_KIND: "trial",
            "mlflow.parentRunId": self.run_id,
            TAG_TRIAL: str(trial_id),
            TAG_RUNG: str(rung),
            TAG_BRACKET: str(bracket),
            TAG_FROM_RUNG: "" if from_rung is None else str(from_rung),
            TAG_CONFIG: json.dumps(dict(config), sort_keys=True),
            TAG_BUDGET: json.dumps(dict(budget), sort_keys=True),
            TAG_CHECKPOINT: checkpoint or "",
            TAG_RESUME_FROM: resume_from or "",
            TAG_ATTEMPT: str(attempt),
            "leanfit.dataset_digest": digest,
        }
        run = create_run_once(
            self.client, self.logger.experiment_id, f"trial-{trial_id}-rung-{rung}", tags
        )
        params = [Param(k, param_value(v)) for k, v in sorted(config.items())]
        params += [Param(f"budget.{k}", param_value(v)) for k, v in sorted(budget.items())]
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def job_finished(self, run_id: str, result, infrastructure: bool = False) -> None:
        """Metrics and status of a finished job; an infrastructure failure is marked as such,
        so that a resumed search runs the job again instead of counting it as failed."""
        self._still_ours()
        self.logger.finish_trial(run_id, result)
        if infrastructure:
            self.client.set_tag(run_id, TAG_STATUS, "infrastructure")

    def mark_interrupted(self, run_ids: list[str]) -> None:
        """Jobs left RUNNING by a killed search: closed; the resumed search runs them anew."""
        self._still_ours()
        for run_id in run_ids:
            self.client.set_tag(run_id, TAG_STATUS, "interrupted")
            self.client.set_terminated(run_id, "KILLED")

    def close_finished(self, records: list[JobRecord]) -> None:
        """Close the runs of jobs that finished just before a kill (status written, run not
        yet closed), as `TrialLogger.finish_trial` would have."""
        for r in records:
            if r.unclosed:
                self.client.set_terminated(r.run_id, run_status(r.status))

    def abandon(self, run_ids: list[str]) -> None:
        """Jobs still running when the budget ran out: stopped, not to be run again."""
        self._still_ours()
        for run_id in run_ids:
            self.client.set_tag(run_id, TAG_STATUS, "abandoned")
            self.client.set_terminated(run_id, "KILLED")

    def elapsed(self, records: list[JobRecord] | None = None) -> float:
        """Seconds this search has already run, over all its (resumed) runs; with its job
        `records`, the time after its last figure that its jobs show too (see `elapsed_from`)."""
        history = self.client.get_metric_history(self.run_id, "search_elapsed_seconds")
        return elapsed_from(history, records or [])

    def log_elapsed(self, seconds: float, step: int = 0) -> None:
        self._log_metrics({"search_elapsed_seconds": seconds}, step)

    def log_report(self, files: list[Path], metrics: Mapping[str, float], step: int = 0) -> None:
        self._still_ours()
        for path in files:
            self.client.log_artifact(self.run_id, str(path), artifact_path="report")
        self._log_metrics(metrics, step)

    def log_live(self, elapsed: float, metrics: Mapping[str, float], step: int) -> None:
        """A running search's figures so far (`step`: its jobs finished), and its elapsed time,
        which a search killed before its end resumes from."""
        self._log_metrics({**metrics, "search_elapsed_seconds": elapsed}, step)

    def _log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        self._still_ours()
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)
        if "search_elapsed_seconds" in metrics:
            self._heard_at = time.time()

    def records(self) -> list[JobRecord]:
        """Every trial job of this search, oldest first."""
        from mlflow.entities import ViewType

        out: list[JobRecord] = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.logger.experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{self.run_id}'",
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=1000,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            out += [_record(run) for run in page]
            token = page.token
            if not token:
                return out

    def deleted_notice(self, without: str) -> str | None:
        """What to say where job runs of this search were deleted in MLflow by hand (the UI's
        Delete, not yet purged): a search read back (`leanfit report`, a pipeline reusing or
        resuming it) went on without them and said nothing, its front short of its best trial.
        `without`: what goes on without them. None where none was."""
        from mlflow.entities import ViewType

        deleted = self.client.search_runs(
            [self.logger.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.run_id}'",
            run_view_type=ViewType.DELETED_ONLY,
            max_results=1000,
        )
        deleted = [r for r in deleted if TAG_DUPLICATE_OF not in r.data.tags]  # (not by hand)
        if not deleted:
            return None
        trials = sorted({int(r.data.tags.get(TAG_TRIAL, -1)) for r in deleted} - {-1})
        shown = ", ".join(map(str, trials[:10])) + (", ..." if len(trials) > 10 else "")
        first = deleted[0].info.run_id
        return (
            f"{len(deleted)} job run(s) of this search (trial(s) {shown}) were deleted in "
            f"MLflow: {without} without them; to count them, restore them (`mlflow runs restore "
            f"--run-id {first}`, one run at a time, or in the MLflow UI)"
        )


def elapsed_from(history: Sequence, records: Sequence[JobRecord]) -> float:
    """Seconds a search ran, from its `search_elapsed_seconds` figures (`history`, logged
    every `LIVE_METRICS_SECONDS` and at its end) and its jobs: one killed with -9 ran on after
    its last figure at least until its latest job started or ended, which was lost (a search
    killed 28 s in said it ran 15 s, and its resume overran the wall time by that much)."""
    if not history:
        return 0.0
    last = max(history, key=lambda m: (m.timestamp, m.value))
    latest = max((max(r.started, r.ended) for r in records), default=0)
    after = max(0.0, (latest - last.timestamp) / 1000)
    return max(max(m.value for m in history), last.value + after)


def _record(run) -> JobRecord:
    try:
        return _read_record(run)
    except (KeyError, ValueError, TypeError, AttributeError) as e:  # (a JSON error is one)
        raise LeanfitError(edited_tag(run, "trial job", e)) from None


def edited_tag(run, what: str, e: BaseException) -> str:
    """What to say of a run of leanfit's whose tags leanfit cannot read (deleted or edited by
    hand, in the MLflow UI): it ended in a KeyError's or a JSON error's traceback, a resumed
    search left RUNNING with its budget changed."""
    which = f"its tag {e.args[0]} is gone" if isinstance(e, KeyError) else f"a tag of it: {e}"
    return (
        f"tracking: the {what} run {run.info.run_id} ({run.info.run_name}) cannot be read "
        f"({which}; edited by hand?): put the tag back as leanfit wrote it, or delete the run "
        "(what it recorded is then left out)"
    )


def _read_record(run) -> JobRecord:
    tags = run.data.tags
    running = run.info.status == "RUNNING"
    status = tags.get(TAG_STATUS) or ("running" if running else "failed")
    reason = tags.get(TAG_FAILURE)
    if status in ("ok", "stopped") and "val_accuracy" not in run.data.metrics:
        # caught as it is written (its figures, then its status, then its end: MLflow reads a
        # run's tags and its metrics in two queries, and `leanfit report` of a running search
        # saw the status without the figures): still running; closed so, its result was lost
        status = "running" if running else "failed"
        reason = reason or "its result was not recorded (no val_accuracy in its run)"
    from_rung = tags.get(TAG_FROM_RUNG, "")
    return JobRecord(
        run_id=run.info.run_id,
        trial_id=int(tags[TAG_TRIAL]),
        rung=int(tags[TAG_RUNG]),
        bracket=int(tags.get(TAG_BRACKET, "0")),
        from_rung=int(from_rung) if from_rung else None,
        config=json.loads(tags[TAG_CONFIG]),
        budget=json.loads(tags.get(TAG_BUDGET, "{}")),
        status=status,
        metrics=dict(run.data.metrics),
        checkpoint=tags.get(TAG_CHECKPOINT) or None,
        resume_from=tags.get(TAG_RESUME_FROM) or None,
        reason=reason,
        attempt=int(tags.get(TAG_ATTEMPT, "0")),
        unclosed=running and status != "running",
        started=run.info.start_time or 0,
        ended=run.info.end_time or 0,
    )
