"""The `leanfit` command.

Every mistake a user can make ends in one line that names the input and the fix, and exit code 2;
nothing is written before the inputs are validated.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import click
import typer
import yaml
from rich.console import Console

from leanfit.errors import LeanfitError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="leanfit: find small, accurate image classifiers (search, train, track in MLflow).",
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def read_genotype(path: Path, experiment) -> dict[str, Any]:
    """A configuration from a YAML file, checked against the experiment's space."""
    from leanfit.errors import GenotypeError
    from leanfit.space.architecture import flatten_genotype

    if not path.exists():
        raise LeanfitError(f"--genotype: file {str(path)!r} does not exist; check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise LeanfitError(f"--genotype: {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise LeanfitError(f"--genotype: {path} must be a YAML mapping of parameter: value")
    arch = experiment.space.architecture
    try:
        flat = flatten_genotype(data, arch.blocks, tuple(arch.modules))
        return experiment.search_space().validate(flat)
    except (ValueError, GenotypeError) as e:
        raise LeanfitError(f"--genotype: {path}: {e}") from None


@app.command()
def validate(experiment_file: Path = typer.Argument(..., help="experiment YAML")) -> None:
    """Check an experiment file and its dataset; print the search space's size."""
    from leanfit.config import load_experiment
    from leanfit.data.check import check_dataset

    experiment = load_experiment(experiment_file)
    check_dataset(experiment)
    space = experiment.search_space()
    console.print(
        f"[green]ok[/green] {experiment_file}: {len(space.dimensions)} searched dimensions "
        f"({len(space.params)} parameters, conditional ones included)"
    )


@app.command()
def trial(
    experiment_file: Path = typer.Argument(..., help="experiment YAML"),
    genotype: Path | None = typer.Option(None, help="YAML file with the configuration to train"),
    sample: bool = typer.Option(False, "--sample", help="train a random configuration instead"),
    seed: int = typer.Option(0, help="seed for sampling and training"),
    epochs: int | None = typer.Option(None, min=1, help="epochs (default: budget.max_epochs)"),
    schedule_epochs: int | None = typer.Option(
        None,
        min=1,
        help="epochs the learning-rate schedule spans (default: the larger of --epochs and "
        "budget.max_epochs, so the trial can be resumed up to the budget)",
    ),
    resume: Path | None = typer.Option(None, help="checkpoint to resume from"),
) -> None:
    """Train one configuration and log it to MLflow."""
    from leanfit.config import load_experiment
    from leanfit.data.check import check_dataset

    experiment = load_experiment(experiment_file)
    if (genotype is None) == (not sample):
        raise LeanfitError("give exactly one of --genotype FILE or --sample")
    if genotype is not None:
        config = read_genotype(genotype, experiment)
    else:
        config = experiment.search_space().sample(seed)
    if resume is not None and not resume.is_file():
        raise LeanfitError(f"--resume: checkpoint {str(resume)!r} does not exist")
    check_dataset(experiment)
    n_epochs = epochs or experiment.budget.max_epochs
    if schedule_epochs is not None and schedule_epochs < n_epochs:
        raise LeanfitError(
            f"--schedule-epochs ({schedule_epochs}) must be at least --epochs ({n_epochs})"
        )

    from leanfit.data.sources import load_dataset
    from leanfit.track import TrialLogger
    from leanfit.train.trial import TrialSpec, default_checkpoint, run_trial, train_data

    dataset = load_dataset(experiment)
    if dataset.skipped:
        err_console.print(f"[yellow]skipped {len(dataset.skipped)} unreadable file(s)[/yellow]")
        for name, why in dataset.skipped[:10]:
            err_console.print(f"  {name}: {why}")
    data = train_data(experiment, dataset, for_search=False)
    trial_id = f"trial-{uuid.uuid4().hex[:12]}"
    spec = TrialSpec(
        trial_id=trial_id,
        config=config,
        epochs=n_epochs,
        schedule_epochs=schedule_epochs or max(n_epochs, experiment.budget.max_epochs),
        seed=seed,
        resume_from=str(resume) if resume else None,
        checkpoint_to=default_checkpoint(experiment, trial_id),
    )
    logger = TrialLogger(experiment.tracking_uri(), experiment.experiment_name())
    budget = {
        "epochs": spec.epochs,
        "data_fraction": 1.0,
        "resolution": experiment.dataset.image_size,
    }
    run_id = logger.start_trial(trial_id, config, budget, dataset, experiment.dataset.source)
    console.print(
        f"training {trial_id}: {len(data.train_y)} train / {len(data.val_y)} validation images, "
        f"{experiment.dataset.image_size}x{experiment.dataset.image_size}, {n_epochs} epochs"
    )

    def show(record: dict) -> None:
        console.print(
            f"  epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  "
            f"val acc {record['val_accuracy']:.4f}  ({record['images_per_second']:.0f} img/s)"
        )

    result = run_trial(experiment, spec, data, on_epoch=show)
    logger.finish_trial(run_id, result)
    if result.status != "ok":
        err_console.print(f"[red]trial failed[/red]: {result.reason}")
        raise typer.Exit(1)
    console.print(
        f"[green]done[/green] val accuracy {result.val_accuracy:.4f}, "
        f"{result.params:,} parameters, "
        f"{result.macs:,} MACs, {result.wall_time:.1f} s\n"
        f"MLflow run {run_id} in {experiment.tracking_uri()} "
        f"(browse: mlflow ui --backend-store-uri {experiment.tracking_uri()})\n"
        f"checkpoint {result.checkpoint}"
    )


@app.command()
def search(
    experiment_file: Path = typer.Argument(..., help="experiment YAML"),
    resume: bool = typer.Option(False, "--resume", help="continue the unfinished search"),
    workers: int | None = typer.Option(None, min=1, help="worker processes (default: file)"),
    wall_time: str | None = typer.Option(None, help="budget, e.g. 10m (default: file)"),
    trials: int | None = typer.Option(None, min=1, help="new configurations at most"),
    synthetic: float | None = typer.Option(
        None,
        min=0.0,
        help="dry run: a synthetic objective taking this many seconds per epoch replaces "
        "training (the search, workers, MLflow and report are real)",
    ),
) -> None:
    """Search the experiment's space: live progress, then the Pareto table and a report."""
    from leanfit.config import load_experiment, parse_duration
    from leanfit.data.check import check_dataset

    experiment = load_experiment(experiment_file)
    seconds = None
    if wall_time is not None:
        try:
            seconds = float(parse_duration(wall_time))
        except ValueError as e:
            raise LeanfitError(f"--wall-time: {e}") from None
    check_dataset(experiment)

    from rich.live import Live

    from leanfit.search.run import front_table, run_search

    with Live(console=console, refresh_per_second=2, transient=False) as live:

        def show(controller) -> None:
            live.update(progress_line(controller))

        outcome = run_search(
            experiment, resume=resume, workers=workers, wall_time=seconds, max_trials=trials,
            on_progress=show, synthetic_sleep=synthetic,
        )  # fmt: skip
    if outcome.resumed_jobs:
        console.print(f"resumed: {outcome.resumed_jobs} interrupted job(s) ran again")
    console.print(front_rich_table(front_table(outcome.controller)))
    console.print(
        f"report {outcome.report_html}\nplot   {outcome.report_plot}\n"
        f"MLflow search run {outcome.search_run_id} in {experiment.tracking_uri()}"
    )


def progress_line(controller):
    from rich.text import Text

    s = controller.stats
    best = controller.best_accuracy()
    left = controller.budget_left()
    return Text(
        f"trials {len(controller.trials)}  done {s.jobs_done}  running "
        f"{len(controller.executor.running())}  failed {s.jobs_failed}  "
        f"best val acc {'-' if best is None else f'{best:.4f}'}  "
        f"Pareto {len(controller.front())}  "
        f"budget left {'-' if left is None else f'{left:.0f} s'}"
    )


def front_rich_table(rows):
    from rich.table import Table

    table = Table(title="Pareto front")
    for name in ("trial", "params", "MACs", "val acc", "epochs"):
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(
            str(r["trial"]), f"{r['params']:,}", f"{r['macs']:,}", f"{r['val_accuracy']:.4f}",
            str(r["epochs"]),
        )  # fmt: skip
    return table


def main() -> None:
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        code = app(standalone_mode=False)
    except LeanfitError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.exceptions.UsageError as e:
        e.show()
        sys.exit(2)
    except click.exceptions.Abort:
        err_console.print("interrupted")
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    # click returns the exit code of `typer.Exit` instead of raising it when not standalone.
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
