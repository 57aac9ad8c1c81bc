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
"""

from __future__ import annotations

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
            failures: their errors, one line each, the commonest first (`leanfit search`'s).
        run_id: the search's MLflow run; report_html and report_plot: its report's files.
        controller: the search controller, every trial's results in `controller.trials`.
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

    def best(self, max_params: int | None = None) -> dict[str, Any] | None:
        """The front's most accurate model with at most `max_params` parameters (the smaller on
        a tie), or None if no front model is that small."""
        fits = [m for m in self.front if max_params is None or m["params"] <= max_params]
        return max(fits, key=lambda m: (m["val_accuracy"], -m["params"]), default=None)


def optimize(
    objective: Callable,
    experiment: str | Path | Mapping[str, Any] | Any,
    *,
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
            current folder), or an `Experiment` loaded already.
        workers: worker processes (default: the file's `executor.workers`); 0 runs the
            objective in this process, one trial at a time.
        trials, wall_time: the budget (default: the file's); wall_time in seconds or as "10m".
        resume: go on with the unfinished search of this objective, file and data.
        progress: leanfit search's progress line (live on a terminal, every 10 s in a log).

    Raises `leanfit.errors.LeanfitError`, whose message names the setting and the fix, for a
    file, budget or objective it cannot search with.
    """
    import contextlib

    from leanfit.config import Experiment, experiment_from_dict, load_experiment, parse_duration
    from leanfit.errors import LeanfitError
    from leanfit.objective import target_of
    from leanfit.search.run import failure_lines, front_table, run_search

    if isinstance(experiment, Experiment):
        exp = experiment
    elif isinstance(experiment, Mapping):
        exp = experiment_from_dict(dict(experiment), Path.cwd())
    else:
        exp = load_experiment(Path(experiment))
    if workers is not None and workers < 0:
        raise LeanfitError(f"workers: {workers} is negative; give 0 (this process) or more")
    if trials is not None and trials < 1:
        raise LeanfitError(f"trials: {trials}; give 1 or more")
    if workers != 0:
        target_of(objective)  # a function no worker can import is refused before anything starts
    seconds = None
    if wall_time is not None:
        try:
            seconds = float(parse_duration(wall_time))
        except (TypeError, ValueError):
            seconds = float("nan")
        if not seconds > 0:
            raise LeanfitError(f"wall_time: {wall_time!r}; give a positive budget, e.g. '10m'")
    show_progress = contextlib.nullcontext(None)
    if progress:
        from leanfit.cli import progress_display

        show_progress = progress_display()
    try:
        with show_progress as show:
            outcome = run_search(
                exp, resume=resume, workers=workers, wall_time=seconds, max_trials=trials,
                on_progress=show, objective=objective,
            )  # fmt: skip
    except LeanfitError as e:
        if "--resume" in str(e):  # said as the command line's; here it is an argument
            said = str(e).replace("run without --resume", "call it without resume=True")
            e.args = (said.replace("--resume", "resume=True"),)
        raise
    c = outcome.controller
    front = [{**row, "config": dict(c.trials[row["trial"]].config)} for row in front_table(c)]
    return SearchResult(
        front=front,
        hypervolume=float(c.hypervolume()),
        trials=len(c.trials),
        failed=c.stats.jobs_failed,
        failures=failure_lines(c),
        run_id=outcome.search_run_id,
        report_html=outcome.report_html,
        report_plot=outcome.report_plot,
        controller=c,
    )
