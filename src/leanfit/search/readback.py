"""A search read back from MLflow alone, for `leanfit report`: its front, counts and report.

It needs neither the data nor workers, and writes nothing to MLflow, so it can look at a search
that runs elsewhere (a cluster's, or another terminal's) while it runs, at one that was killed,
or at a finished one, from any machine that reaches the tracking server. Parameters and MACs are
the ones each job logged.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanfit.config import Experiment
from leanfit.errors import LeanfitError, hide_password
from leanfit.track.search import (
    TAG_FILE_KEY,
    TAG_KIND,
    TAG_OBJECTIVE,
    TAG_POLICY,
    TAG_SETTINGS_KEY,
    TAG_WARM_FROM,
    JobRecord,
    SearchLog,
    elapsed_from,
    objective_text,
    search_keys,
    settings_changed_since,
)


@dataclass
class SearchReading:
    """One search as MLflow holds it now."""

    controller: Any  # a SearchController
    run: Any  # the search's MLflow run
    records: list[JobRecord]
    tracking_uri: str
    deleted: str | None = None  # what to say of its job runs deleted by hand, if any

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def status(self) -> str:
        return self.run.info.status

    def go_on_with(self, file: str) -> str:
        """The command that goes on with this search, were it cut short: a pipeline's search
        (tagged by its search step) goes on when the pipeline runs again on the same data."""
        if TAG_FILE_KEY in self.run.data.tags:
            return f"leanfit run {shlex.quote(file)}"
        return f"leanfit search {shlex.quote(file)} --resume"

    def unfinished(self) -> list[JobRecord]:
        """Jobs MLflow shows running: running now, or cut short by a search that stopped."""
        return [r for r in self.records if r.status == "running"]

    def elapsed(self) -> float | None:
        """Seconds the search ran, over its resumed runs, as it logged them (every 15 s while
        it runs, and at its end) and as its jobs show (`elapsed_from`); None before its first
        figure."""
        from mlflow import MlflowClient

        if "search_elapsed_seconds" not in self.run.data.metrics:
            return None
        client = MlflowClient(self.tracking_uri)
        history = client.get_metric_history(self.run_id, "search_elapsed_seconds")
        return elapsed_from(history, self.records)

    def idle_seconds(self, now: float | None = None) -> float | None:
        """Seconds since the latest job started (None: no job yet)."""
        latest = max((r.started for r in self.records), default=None)
        if latest is None:
            return None
        return max(0.0, (now if now is not None else time.time()) - latest / 1000)

    def summary_lines(self, file: str) -> list[str]:
        """What the search is: its run, its state, its counts; how to go on with it."""
        from leanfit.search.run import failure_lines, summary_of

        s = summary_of(self.controller)
        elapsed = self.elapsed()
        ran = f", ran {format_seconds(elapsed)}" if elapsed is not None else ""
        # a job MLflow shows running is one, or was cut short by a search that stopped
        n = len(self.unfinished())
        unfinished = f"  running {n}" if self.status == "RUNNING" else f"  cut short {n}" * (n > 0)
        lines = [
            f"search run {self.run_id} ({self.status}{ran}) in {hide_password(self.tracking_uri)}",
            f"trials {s['trials']}  jobs finished {s['jobs finished']}{unfinished}  failed "
            f"{s['jobs failed']}  best val acc {s['best validation accuracy']}  Pareto "
            f"{s['Pareto models']}  hypervolume {s[self.controller.hypervolume_label()]}",
        ]
        if (objective := self.run.data.tags.get(TAG_OBJECTIVE)) is not None:
            lines.append(f"it optimised {objective_text(objective)}, not real training")
        lines += failure_lines(self.controller)
        if self.deleted is not None:
            lines.append(self.deleted)
        go_on = self.go_on_with(file)
        if self.status == "RUNNING":
            idle = self.idle_seconds()
            latest = "" if idle is None else f"; its latest job started {format_seconds(idle)} ago"
            lines.append(
                f"still running, or killed before it could say so{latest}: a killed search goes "
                f"on with `{go_on}`"
            )
        elif self.status == "KILLED":
            lines.append(f"interrupted: `{go_on}` goes on with it")
        return lines

    def to_json(self, plot: Path, page: Path) -> str:
        """The summary and the front, each Pareto model with its configuration, for scripts."""
        import json

        from leanfit.search.run import front_table

        c = self.controller
        front = {t.trial_id: t for t in c.front()}
        return json.dumps(
            {
                "search_run_id": self.run_id,
                "status": self.status,
                "tracking_uri": hide_password(self.tracking_uri),
                "elapsed_seconds": self.elapsed(),
                "trials": len(c.trials),
                "jobs_finished": c.stats.jobs_done,
                "jobs_unfinished": len(self.unfinished()),  # running, or cut short by a stop
                "jobs_failed": c.stats.jobs_failed,
                # the trials that failed for good, by error, the commonest first
                "failures": [{"error": e, "trials": ids} for e, ids in c.failure_groups()],
                "objective": self.run.data.tags.get(TAG_OBJECTIVE),  # None: real training
                "best_val_accuracy": c.best_accuracy(),
                "hypervolume": c.hypervolume(),
                "front": [{**row, "config": front[row["trial"]].config} for row in front_table(c)],
                "report_html": str(page),
                "report_plot": str(plot),
            },
            indent=1,
        )


def format_seconds(seconds: float) -> str:
    """3 s, 4 min 10 s, 2 h 5 min."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def as_searched(
    experiment: Experiment, run, own_key: Sequence[str] | None = None
) -> Experiment | None:
    """The file's experiment as `run` searched it: the file's own settings, or the file's with
    the budget the search logged (`leanfit run --wall-time 5m`, an edited budget), and for a
    pipeline's search the augment policy its step fixed; None where the search ran with another
    space, objectives or strategy. `own_key`: the file's settings keys (`search_keys`), where
    the caller has them."""
    import json

    from pydantic import ValidationError

    from leanfit.config import BudgetConfig

    tags = run.data.tags
    key = tags.get(TAG_SETTINGS_KEY)
    own_key = own_key or search_keys(experiment, None)
    logged = {}
    for name, value in run.data.params.items():
        if name.startswith("budget."):
            try:
                logged[name.removeprefix("budget.")] = json.loads(value)
            except ValueError:
                logged[name.removeprefix("budget.")] = value
    try:
        budget = BudgetConfig.model_validate({**experiment.budget.model_dump(), **logged})
    except ValidationError:
        return experiment if key in own_key else None
    budgeted = experiment.model_copy(update={"budget": budget})
    if key in own_key:  # (no key holds the budget now: the search's own is read back)
        return budgeted
    budgeted_key = search_keys(budgeted, None)
    if key in budgeted_key:
        return budgeted
    # a pipeline's search: it started from this file, and its policy step fixed RandAugment's N, M
    file_key = tags.get(TAG_FILE_KEY)
    started = experiment if file_key in own_key else budgeted if file_key in budgeted_key else None
    if started is None:
        return None
    if TAG_POLICY in tags:
        from leanfit.steps import apply_policy

        try:
            started = apply_policy(started, json.loads(tags[TAG_POLICY]))
        except (ValueError, KeyError, LeanfitError):
            return None
    return started if key in search_keys(started, None) else None


def find_search(experiment: Experiment, file: str, run_id: str | None = None):
    """The MLflow client, the run of the search to read and the experiment as it searched:
    `run_id`'s, checked to be a search of this file, or else the file's latest search (on any
    data, with any budget)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from leanfit.track.runs import check_tracking_reachable, missing_sqlite_database, ready_database

    uri = experiment.tracking_uri()
    check_tracking_reachable(uri)
    database = missing_sqlite_database(uri)
    if database is not None:
        raise LeanfitError(
            f"no tracking database at {database} (tracking URI {uri}), so no search to report; "
            f"run `leanfit search {shlex.quote(file)}` first, or give the URI the search logged to "
            "(tracking.uri in the file, or $MLFLOW_TRACKING_URI)"
        )
    ready_database(uri)  # a search starting now in a new folder may be creating its tables
    client = MlflowClient(uri)
    name = experiment.experiment_name()
    found = client.get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage == "deleted":
        from leanfit.track.runs import deleted_experiment

        raise LeanfitError(deleted_experiment(found, uri))
    if found is None:
        raise LeanfitError(
            f"no MLflow experiment {name!r} at {uri}: no search of {file} has logged there; "
            f"run `leanfit search {shlex.quote(file)}` first, or give the URI the search logged to"
        )
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise LeanfitError(
                f"--run-id {run_id}: no such run at {uri}; give the id of a search run "
                "(`leanfit search` prints it at the end; the MLflow UI shows it)"
            ) from None
        kind = run.data.tags.get(TAG_KIND)
        if kind != "search":
            parent = run.data.tags.get("mlflow.parentRunId")
            hint = f"; its search run is {parent}" if kind == "trial" and parent else ""
            raise LeanfitError(
                f"--run-id {run_id} is {'a ' + kind if kind else 'not a leanfit'} run, not a "
                f"search{hint}; give a search run's id"
            )
        if run.info.experiment_id != found.experiment_id:
            raise LeanfitError(
                f"--run-id {run_id} is a search of another MLflow experiment, not {name!r} of "
                f"{file}; give the experiment file that search ran with"
            )
        searched = as_searched(experiment, run)
        if searched is None:
            changed = settings_changed_since(run, experiment)
            which = changed or "its space, objectives or strategy differ"
            raise LeanfitError(
                f"--run-id {run_id} was searched with other settings than {file} has now "
                f"({which}); give the experiment file it ran with"
            )
        return client, run, searched
    kind = f"tags.`{TAG_KIND}` = 'search'"
    latest = ["attributes.start_time DESC"]
    others = client.search_runs([found.experiment_id], kind, order_by=latest, max_results=100)
    own_keys = search_keys(experiment, None)
    for run in others:  # the latest search of this file, whatever its budget
        searched = as_searched(experiment, run, own_keys)
        if searched is not None:
            return client, run, searched
    for own_key in own_keys:
        settings = f"tags.`{TAG_SETTINGS_KEY}` = '{own_key}'"
        own = client.search_runs([found.experiment_id], f"{kind} and {settings}", order_by=latest,
                                 max_results=1)  # fmt: skip
        if own:  # older than the latest 100 searches
            return client, own[0], experiment
    said = (
        f": its {len(others)}{'+' if len(others) == 100 else ''} search(es) ran with other "
        "settings (has the file changed since?); report one with the file it ran with, or"
        if others
        else "; to start one,"
    )
    raise LeanfitError(
        f"no search of {file}'s settings in MLflow experiment {name!r} at {uri}{said} "
        f"run `leanfit search {shlex.quote(file)}`"
    )


class _Reader:
    """What `SearchLog` needs of a logger, without `TrialLogger`'s creating the experiment."""

    def __init__(self, client, experiment_id: str, tracking_uri: str):
        self.client = client
        self.experiment_id = experiment_id
        self.tracking_uri = tracking_uri


def read_search(experiment: Experiment, file: str, run_id: str | None = None) -> SearchReading:
    """The search of `find_search`, rebuilt: every finished job told to a controller that runs
    nothing (its strategy is never asked)."""
    client, run, experiment = find_search(experiment, file, run_id)
    # the search's own modules (torch among their imports) only once it is found: a refused
    # `leanfit report` ends in about 3 s
    from leanfit.search.controller import SearchController
    from leanfit.search.random_search import RandomSearch
    from leanfit.search.run import _NoExecutor, make_scheduler, warm_start_text

    uri = experiment.tracking_uri()
    log = SearchLog(_Reader(client, run.info.experiment_id, uri), run.info.run_id)
    records = log.records()
    space = experiment.search_space()
    logged: dict[str, tuple[int, int]] = {}
    for rec in records:
        if "params" in rec.metrics:
            cost = (int(rec.metrics["params"]), int(rec.metrics.get("macs", 0)))
            logged[space.key(rec.config)] = cost

    def cost(config) -> tuple[int, int]:
        # a configuration with no finished job yet has no logged cost, and no result to show
        return logged.get(space.key(config), (0, 0))

    trials = len({r.trial_id for r in records})
    controller = SearchController(
        space=space,
        strategy=RandomSearch(space, seed=0),
        scheduler=make_scheduler(experiment),
        executor=_NoExecutor(),
        objectives=experiment.objectives,
        cost=cost,
        checkpoint_dir=Path("."),
        max_trials=max(1, trials),
        retries=experiment.executor.retries,
        rung_rank=experiment.scheduler.rank,
        curve_stop=experiment.scheduler.curve_stop,
    )
    controller.restore(records)
    if source := run.data.tags.get(TAG_WARM_FROM):
        controller.stats.warm_start = warm_start_text(
            source,
            int(run.data.metrics.get("warm_start_told", 0)),
            int(run.data.metrics.get("warm_start_rechecked", 0)),
        )
    return SearchReading(controller, run, records, uri, log.deleted_notice("this report is"))


def report_of(experiment: Experiment, reading: SearchReading, folder: Path) -> tuple[Path, Path]:
    """The Pareto plot and page of a search read back, written into `folder`."""
    from leanfit.search.run import write_report

    state = {
        "FINISHED": "finished",
        "RUNNING": "still running, or killed (the results MLflow had when this was written)",
        "KILLED": "interrupted before its end",
        "FAILED": "failed",
    }.get(reading.status, reading.status.lower())
    objective = reading.run.data.tags.get(TAG_OBJECTIVE)
    return write_report(experiment, reading.controller, folder, reading.run_id, state, objective)
