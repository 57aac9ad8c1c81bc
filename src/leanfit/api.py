"""leanfit's search from Python, on an objective of your own: `leanfit.optimize`.

    import leanfit

    def objective(trial):                     # see leanfit.objective.Trial
        model = trial.state or build(trial.config)
        while trial.running:
            train_one_epoch(model, trial.config)
            trial.report(accuracy(model))
        return model

    if __name__ == "__main__":
        result = leanfit.optimize(objective, "examples/digits.yaml", workers=2, trials=50)
        for model in result.front:
            print(model["params"], model["val_accuracy"], model["config"])

The experiment file gives the space, the objectives (accuracy against parameters, `max_params`),
the strategy, the scheduler and the budget, as for `leanfit search`; its dataset gives the
models' input and classes, which their parameter counts depend on. The search is the same
controller, workers, MLflow runs and report as `leanfit search`'s.

A space of one's own replaces the file's space and dataset (the function brings its data), with
a function that counts a configuration's parameters:

    result = leanfit.optimize(
        objective,
        space={"width": [8, 16, 32, 64], "depth": (1, 4), "lr": {"low": 1e-4, "high": 0.3,
               "log": True}, "momentum": {"low": 0.5, "high": 0.99, "when": {"opt": ["sgd"]}},
               "opt": ["sgd", "adam"]},
        size=lambda config: count_parameters(config),   # (parameters, MACs) for a MACs objective
        trials=100,
    )

The experiment is then optional: a file or dict without `dataset` and `space` sections gives the
budget, scheduler, strategy, objectives and tracking; without one, leanfit's defaults (ASHA from 1
to 10 epochs, 2 workers, accuracy against parameters) and an MLflow experiment named after the
function.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class SearchResult:
    """What `optimize` found.

    Attributes:
        front: the Pareto models, smallest first: trial, params, macs, val_accuracy, epochs (of
            its highest rung) and config.
        hypervolume: of the front, as the search's progress and report give it.
        trials: configurations tried.
        failed: trial jobs that failed (an exception, NaN, no report), with the search going on;
            failures: their errors, one line each, the commonest first: `3 x ValueError: a bug
            (trial 1, 6, 11)`.
        run_id: the search's MLflow run; report_html and report_plot: its report's files.
        controller: the search controller, every trial's results in `controller.trials`.
        space_exhausted: the space had no new configuration left before the budget was spent
            (a small, discrete space, searched whole).
    """

    front: list[dict[str, Any]]
    hypervolume: float
    trials: int
    failed: int
    failures: list[str]
    run_id: str
    report_html: Path
    report_plot: Path
    controller: Any
    space_exhausted: bool = False

    def best(self, max_params: int | None = None) -> dict[str, Any] | None:
        """The front's most accurate model with at most `max_params` parameters (the smaller on
        a tie), or None if no front model is that small."""
        fits = [m for m in self.front if max_params is None or m["params"] <= max_params]
        return max(fits, key=lambda m: (m["val_accuracy"], -m["params"]), default=None)


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def as_argument(text: str, own_space: bool = False) -> str:
    """A message said as the command line's, said of `optimize`'s argument instead; with
    `own_space`, of the space and objective given (there is no experiment file, nor data)."""
    if own_space:
        text = text.replace("this experiment file and data", "this space and objective")
    said = text.replace("run without --resume", "call it without resume=True")
    said = said.replace("run again with --resume", "call it again with resume=True")
    said = said.replace("--resume", "resume=True")
    # the options optimize takes as arguments: `--workers 2` is workers=2
    said = re.sub(r"--(workers|trials) (\d+)", r"\1=\2", said)
    said = re.sub(r"--wall-time (\S+?)([,;)]|$)", r"wall_time='\1'\2", said)
    return said.replace("--wall-time", "wall_time=").replace("--trials", "trials=")


@contextlib.contextmanager
def quiet_mlflow_setup():
    """Without MLflow's INFO lines as it makes a new tracking database ("Creating initial
    MLflow database tables...", alembic's migrations), which `leanfit search` does not show
    either; the loggers' levels are put back after."""
    import logging

    import mlflow  # noqa: F401 - first: its import configures its loggers, levels included

    loggers = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        if lg.getEffectiveLevel() < logging.WARNING:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def optimize(
    objective: Callable,
    experiment: str | Path | Mapping[str, Any] | Any = None,
    *,
    space: Mapping[str, Any] | Any = None,
    size: Callable | None = None,
    workers: int | None = None,
    trials: int | None = None,
    wall_time: float | str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> SearchResult:
    """Search the experiment's space for the Pareto front of `objective`.

    Args:
        objective: a function of one `leanfit.objective.Trial`; defined at the top level of a
            module or of the running script, unless `workers` is 0.
        experiment: an experiment file's path, its contents as a dict (relative paths from the
            current folder), or an `Experiment` loaded already; optional with `space`.
        space: a space of your own instead of the file's: parameter names to a list of
            choices, a range `{"low": ..., "high": ...}` or `(low, high)` (integers when both
            are; `"log": True` for a log scale), or a fixed value; `"when": {parent: [values]}`
            makes a parameter exist only for those values of another (see `OwnSpace`).
        size: with `space`, a configuration's parameter count, or `(parameters, MACs)`:
            needed when the objectives use them (by default: accuracy against parameters).
        workers: worker processes (default: the file's `executor.workers`); 0 runs the
            objective in this process, one trial at a time.
        trials, wall_time: the budget (default: the file's); wall_time in seconds or as "10m".
        resume: go on with the unfinished search of this objective, file and data.
        progress: leanfit search's progress line (live on a terminal, every 10 s in a log).

    Raises `leanfit.errors.LeanfitError`, whose message names the setting and the fix, for a
    file, budget or objective it cannot search with.
    """
    import os

    from leanfit.config import (
        Experiment,
        experiment_from_dict,
        load_experiment,
        parse_duration,
        unitless_duration,
    )
    from leanfit.errors import LeanfitError
    from leanfit.objective import target_of
    from leanfit.search.controller import failure_text
    from leanfit.search.run import exhausted_line, front_table, run_search

    if experiment is not None and not isinstance(
        experiment, str | os.PathLike | Mapping | Experiment
    ):  # (a list, a number: a TypeError from pathlib)
        raise LeanfitError(
            f"experiment: {experiment!r} is {_a(type(experiment).__name__)}; give an "
            "experiment file's path, its content as a dict, or an Experiment"
        )
    own = None
    if space is None:
        if size is not None:
            raise LeanfitError("size: it counts the models of space=; give space= with it")
        if experiment is None:
            raise LeanfitError(
                "experiment: give an experiment file (leanfit's space, on its dataset), or "
                "space= and size= (a space of your own)"
            )
        if isinstance(experiment, Experiment):
            exp = experiment
        elif isinstance(experiment, Mapping):
            exp = experiment_from_dict(dict(experiment), Path.cwd())
        else:
            exp = load_experiment(Path(experiment))
    else:
        from leanfit.objective import OwnSpace

        exp = _own_experiment(experiment, objective)
        own = OwnSpace(space, size, exp.objectives)
    for name, value in (("workers", workers), ("trials", trials)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            # ('2' and 1.5 failed deep in the search; 2.5 trials ran 3)
            raise LeanfitError(f"{name}: {value!r} is not a whole number; give one, e.g. {name}=2")
    if workers is not None and workers < 0:
        raise LeanfitError(f"workers: {workers} is negative; give 0 (this process) or more")
    if trials is not None and trials < 1:
        raise LeanfitError(f"trials: {trials}; give 1 or more")
    if workers != 0:
        target_of(objective)  # a function no worker can import is refused before anything starts
    seconds = None
    if wall_time is not None:
        if (n := unitless_duration(wall_time)) is not None:  # (a number, not a string: seconds)
            raise LeanfitError(f"wall_time: {wall_time!r}; give a unit: '{n}s', '{n}m' or '{n}h'")
        try:
            seconds = float(parse_duration(wall_time))
        except ValueError as e:  # its own words: not a duration, and how to write one
            raise LeanfitError(f"wall_time: {e}") from None
        except TypeError:
            seconds = float("nan")
        if not seconds > 0:
            raise LeanfitError(f"wall_time: {wall_time!r}; give a positive budget, e.g. '10m'")
    if trials is None and seconds is None and exp.budget.trials is exp.budget.wall_time is None:
        raise LeanfitError(
            "budget: give trials= or wall_time= (or budget.trials or budget.wall_time in the "
            "experiment)"
        )
    from leanfit.track.runs import check_tracking_reachable

    # a server that does not answer is said at once, as `leanfit search` says it (MLflow's
    # client retried for four minutes, then raised its own error; a URI with no host: its own)
    check_tracking_reachable(exp.tracking_uri())
    show_progress = contextlib.nullcontext(None)
    notice = None
    if progress:
        import sys

        from leanfit.cli import progress_display

        show_progress = progress_display()

        def notice(text: str) -> None:  # what `leanfit search` says before its progress
            print(as_argument(text, own is not None), file=sys.stderr)

    try:
        with show_progress as show, quiet_mlflow_setup():
            outcome = run_search(
                exp, resume=resume, workers=workers, wall_time=seconds, max_trials=trials,
                on_progress=show, objective=objective, own_space=own, on_notice=notice,
            )  # fmt: skip
    except LeanfitError as e:
        e.args = (as_argument(str(e), own is not None),)
        raise
    except Exception as e:
        from leanfit.track.runs import database_refused

        # a sqlite tracking database locked, not writable or failing its writes: one line
        said = database_refused(
            e, "call leanfit.optimize(..., resume=True) to go on with the search"
        )
        if said is None:
            raise
        raise LeanfitError(said) from e
    except KeyboardInterrupt as e:
        # raised on to the caller, as Python does; said first, as `leanfit search` says it
        import sys

        from leanfit import stopping
        from leanfit.errors import hide_password

        uri = hide_password(exp.tracking_uri())
        said = (
            f": the finished trials are in MLflow ({uri}); "
            "leanfit.optimize(..., resume=True) with the same objective and settings continues "
            "the search"
        )
        if getattr(e, "search_run_id", "") is None:  # (its run was not open yet)
            said = " before the search started: no trial ran"
        print(stopping.said("interrupted") + said, file=sys.stderr)
        raise
    c = outcome.controller
    if progress and (line := exhausted_line(c)) is not None:
        from leanfit.cli import console

        console.print(line, style="yellow", highlight=False, markup=False, soft_wrap=True)
    front = [{**row, "config": dict(c.trials[row["trial"]].config)} for row in front_table(c)]
    return SearchResult(
        front=front,
        hypervolume=float(c.hypervolume()),
        trials=len(c.trials),
        failed=c.stats.jobs_failed,
        # every error, one line each (not `leanfit search`'s lines: a heading, the first three)
        failures=[failure_text(error, ids) for error, ids in c.failure_groups()],
        run_id=outcome.search_run_id,
        report_html=outcome.report_html,
        report_plot=outcome.report_plot,
        controller=c,
        space_exhausted=c.stats.exhausted is not None,
    )


# What a file or dict without a dataset is given, for a space of one's own: a dataset is a
# required section, and this one is never read (the objective brings its data)
UNREAD_DATASET = {"source": "digits"}


def _own_experiment(experiment: Any, objective: Callable):
    """The experiment settings of a search of one's own space: the file's or dict's (with no
    `space` section; its dataset, if any, unread), or leanfit's defaults named after the
    function."""
    import re

    from leanfit.config import Experiment, experiment_from_dict, read_experiment_file
    from leanfit.errors import ConfigError

    if isinstance(experiment, Experiment):
        exp = experiment
    else:
        if experiment is None:
            name = re.sub(r"[^A-Za-z0-9_.-]+", "-", getattr(objective, "__name__", "objective"))
            data, base, where = {"name": name.strip("-.") or "objective"}, Path.cwd(), "space="
        elif isinstance(experiment, Mapping):
            data, base, where = dict(experiment), Path.cwd(), "the experiment dict"
        else:
            data, base = read_experiment_file(Path(experiment))
            where = str(experiment)
        if isinstance(data, dict) and "space" in data:
            raise ConfigError(
                "space",
                f"{where} has a space section and space= was given too; keep one (the "
                "file's is leanfit's own models, space= your own)",
            )
        if isinstance(data, dict):
            data = {"dataset": UNREAD_DATASET, **data}
        exp = experiment_from_dict(data, base)
    if exp.budget.min_resolution:
        raise ConfigError(
            "budget.min_resolution",
            "a resolution fidelity scales the file's dataset.image_size, which a space of your "
            "own does not use; remove it (trial.epochs and trial.data_fraction remain)",
        )
    return exp
