"""The `leanfit` command.

Every mistake a user can make ends in one line that names the input and the fix, and exit code 2;
nothing is written before the inputs are validated.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

import click
import typer
import yaml
from rich.console import Console

from leanfit.errors import ConfigError, LeanfitError, hide_password, visible
from leanfit.track.runs import WHERE_OPTION, check_tracking_reachable

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="leanfit: find small, accurate image classifiers (search, train, track in MLflow).",
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def _output_gone() -> None:
    """What rich does when the output's reader went away (`leanfit search ... | head -1`), for
    leanfit: the command stops as at Ctrl-C, where its records are whole (a search closes its
    jobs KILLED, and --resume goes on), exit 141; rich's own `SystemExit(1)` came out of the
    search's progress line and left it FAILED, its running jobs RUNNING, with no word."""
    import signal

    from leanfit import stopping

    console.quiet = True
    quiet_stdout()
    stopping.note(signal.SIGPIPE)
    raise KeyboardInterrupt


def quiet_stdout() -> None:
    """Point this process's stdout at /dev/null (its reader went away; see `to_devnull`)."""
    from leanfit import stopping

    with contextlib.suppress(ValueError, AttributeError):  # (a stream without its descriptor)
        stopping.to_devnull(sys.stdout.fileno())


console.on_broken_pipe = _output_gone


def read_genotype(path: Path, experiment) -> dict[str, Any]:
    """A configuration from a YAML file, checked against the experiment's space."""
    from leanfit.config import load_yaml, yaml_problem
    from leanfit.errors import GenotypeError
    from leanfit.space.architecture import flatten_genotype

    text = read_text_option("--genotype", path, "the configuration's YAML")
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        raise LeanfitError(f"--genotype: {path} is not valid YAML{yaml_problem(e)}") from None
    if data is None:
        raise LeanfitError(
            f"--genotype: {path} is empty; write the configuration in it "
            "(examples/reference_genotype.yaml is one)"
        )
    if not isinstance(data, dict):
        raise LeanfitError(f"--genotype: {path} must be a YAML mapping of parameter: value")
    if budget := sorted(k for k in data if str(k).startswith("budget.")):
        # (a trial's MLflow params copied whole: the space's 51 names were listed)
        raise LeanfitError(
            f"--genotype: {path}: {', '.join(budget)}: a run's budget, not its configuration; "
            "remove the budget.* lines (--epochs and --schedule-epochs give the budget)"
        )
    arch = experiment.space.architecture
    try:
        flat = flatten_genotype(data, arch.blocks, tuple(arch.modules))
        return experiment.search_space().validate(flat)
    except (ValueError, GenotypeError) as e:
        raise LeanfitError(f"--genotype: {path}: {e}") from None


def read_text_option(option: str, path: Path, what: str) -> str:
    """The text of a file given to `option`; a missing file, a folder or a binary file is
    refused naming `what` belongs there."""
    if path.is_dir():
        raise LeanfitError(f"{option}: {path} is a folder; give {what}")
    if not path.exists():
        raise LeanfitError(f"{option}: file {str(path)!r} does not exist; check the path")
    if path.is_char_device() or path.is_block_device():  # /dev/zero: read until memory ran out
        raise LeanfitError(f"{option}: {path} is a device, not a file; give {what}")
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise LeanfitError(f"{option}: {path} is not a text file; give {what}") from None


@app.command()
def validate(experiment_file: Path = typer.Argument(..., help="experiment YAML")) -> None:
    """Check an experiment file and its dataset: the space's size, what a search would train on
    (classes, splits, skipped files), and what would keep it from learning."""
    from leanfit.config import load_experiment
    from leanfit.data.check import check_dataset

    experiment = load_experiment(experiment_file)
    check_work_dir(experiment)  # (a work_dir naming a file passed here, refused by search)
    check_dataset(experiment)
    space = experiment.search_space()
    summary, notes = dataset_summary(experiment, space)
    from rich.markup import escape

    console.print(  # (the file's name as it is: '[blink red]x.yaml' blinked, 'a[/]b' crashed)
        f"[green]ok[/green] {escape(visible(str(experiment_file)))}: {len(space.dimensions)} "
        f"searched dimensions ({len(space.params)} parameters, conditional ones included)"
    )
    for line in summary:
        console.print(line, markup=False, highlight=False)
    for line in notes:
        console.print(line, style="yellow", markup=False, highlight=False)


# A class balance past this ratio (largest to smallest class) is worth a note in `validate`.
LOPSIDED_CLASSES = 5


def dataset_summary(experiment, space) -> tuple[list[str], list[str]]:
    """What a search of this file would train on, decoded as the search decodes it (and cached
    for it): the classes and their sizes and the splits; then notes: files skipped, and what would
    make the search learn little (a lopsided class balance, few steps an epoch); the budgets
    are checked against the space as `leanfit search` checks them."""
    from leanfit.data.sources import dataset_notices, load_dataset
    from leanfit.search.run import (
        check_budgets_reachable,
        dataset_cost,
        few_steps_notice,
        split_notices,
    )
    from leanfit.train.trial import data_plan

    with console.status("reading the dataset (decoded once, then cached for the search) ..."):
        dataset = load_dataset(experiment)
    check_budgets_reachable(experiment, space, dataset_cost(experiment, dataset))
    plan = data_plan(experiment, dataset)
    counts = dataset.labels.bincount(minlength=dataset.num_classes).tolist()
    _, channels, height, width = dataset.images.shape
    per_class = ", ".join(f"{c}: {n:,}" for c, n in zip(dataset.classes, counts, strict=True))
    lines = [
        f"dataset  {len(dataset.labels):,} images at {height}x{width}x{channels}, "
        f"{dataset.num_classes} classes: {per_class}",
        f"splits   {splits_line(dataset, plan, experiment.dataset)}; the search trains on "
        f"{len(plan.search):,}",
    ]
    if experiment.dataset.labels is not None:
        lines.insert(1, f"labels   from {experiment.dataset.labels} (one row a file)")
    elif dataset.split_folders:
        folders = ", ".join(f"{top}/" for top in sorted(dataset.split_folders))
        lines.insert(1, f"classes  the folders inside {folders}")
    notes = dataset_notices(dataset)
    if min(counts) * LOPSIDED_CLASSES < max(counts):
        notes.append(
            f"note: the largest class has {max(counts) / max(1, min(counts)):.1f}x the images of "
            "the smallest; accuracy will favour the large classes (add images to the small ones, "
            "or list the classes to keep in dataset.classes)"
        )
    notice = few_steps_notice(space, len(plan.search))
    notes += ([notice] if notice else []) + split_notices(dataset, plan)
    ds = experiment.dataset
    if ds.source == "imagefolder" and ds.s3_uri is None and ds.fit == "squeeze":
        from leanfit.data.check import shapes_sample

        read, not_square, widest = shapes_sample(experiment.dataset_path())
        if read and not_square * 10 >= read:  # a tenth or more
            notes.append(
                f"note: {not_square} of {read} images sampled are not square (up to "
                f"{widest:.2f}:1); each is squeezed to {ds.image_size}x{ds.image_size}, its "
                "shapes stretched (dataset.fit: crop keeps the centre square, pad the whole "
                "image on the background)"
            )
    return lines, notes


def splits_line(dataset, plan, ds) -> str:
    """The size of each split, and for a folder split in advance, where each came from."""
    train = dataset.split_folder("train")
    parts = []
    for role, name, idx in (
        ("train", "train", plan.splits.train),
        ("val", "validation", plan.splits.val),
        ("test", "test", plan.splits.test),
    ):
        part = f"{name} {len(idx):,}"
        if (folder := dataset.split_folder(role)) is not None:
            part += f" ({folder}/)"
        elif train is not None and len(idx):
            fraction = ds.val_fraction if role == "val" else ds.test_fraction
            part += f" ({fraction:.0%} of {train}/)"
        parts.append(part)
    return ", ".join(parts)


@app.command()
def trial(
    experiment_file: Path = typer.Argument(..., help="experiment YAML"),
    genotype: Path | None = typer.Option(None, help="YAML file with the configuration to train"),
    sample: bool = typer.Option(False, "--sample", help="train a random configuration instead"),
    seed: int | None = typer.Option(None, help="seed for sampling and training (default: 0)"),
    epochs: int | None = typer.Option(None, min=1, help="epochs (default: budget.max_epochs)"),
    schedule_epochs: int | None = typer.Option(
        None,
        min=1,
        help="epochs the learning-rate schedule spans (default: the larger of --epochs and "
        "budget.max_epochs, so the trial can be resumed up to the budget)",
    ),
    resume: Path | None = typer.Option(None, help="checkpoint to resume from"),
    spec: Path | None = typer.Option(
        None,
        help="JSON trial spec (trial id, configuration, budget, seed, checkpoints) to run as "
        "given, as a search's Kubernetes Job does; replaces --genotype, --sample, --seed, "
        "--epochs, --schedule-epochs and --resume",
    ),
    result_to: Path | None = typer.Option(
        None,
        "--result-to",
        help="write the result (status, metrics per epoch, parameters, MACs, checkpoint) as "
        "JSON to this file, atomically; also when the trial fails",
    ),
    search_subset: bool = typer.Option(
        False,
        "--search-subset",
        help="train on the search's share of the training images (dataset.search_fraction), "
        "as the search's trials do",
    ),
    data_plan: Path | None = typer.Option(
        None, "--data-plan", help="the pipeline's data plan: which images each split holds"
    ),
    track: bool = typer.Option(
        True,
        "--track/--no-track",
        help="log the trial to MLflow (a search logs its trials itself, so its Jobs don't)",
    ),
) -> None:
    """Train one configuration and log it to MLflow."""
    from leanfit.config import MAX_SEED, load_experiment
    from leanfit.data.check import check_dataset

    if seed is not None and not 0 <= seed <= MAX_SEED:  # (a traceback after the run was opened)
        raise LeanfitError(f"--seed {seed}: give a whole number from 0 to {MAX_SEED}")
    experiment = load_experiment(experiment_file)
    check_dataset(experiment)
    check_work_dir(experiment)
    if result_to is not None:  # said now, not once the training is done
        if problem := file_target_problem(result_to):
            raise LeanfitError(f"--result-to: {problem}")
        check_writable_folder("--result-to", result_to.parent, "for the result")
    if track:
        check_tracking_reachable(experiment.tracking_uri())
    # torch comes in with the trainer: a bad file or dataset is refused before that 2 s import
    from leanfit.train.trial import TrialSpec, default_checkpoint

    if spec is not None:
        given = [
            flag
            for flag, value in [
                ("--genotype", genotype), ("--sample", sample or None), ("--seed", seed),
                ("--epochs", epochs), ("--schedule-epochs", schedule_epochs), ("--resume", resume),
            ]
            if value is not None
        ]  # fmt: skip
        if given:
            raise LeanfitError(
                f"--spec: the spec gives the configuration and budget; drop {', '.join(given)}"
            )
        trial_spec = read_spec(spec)
        problem = spec_problem(trial_spec, experiment)
        if problem is not None:  # refused before anything is logged
            if result_to is not None:  # a Job's: a failed trial, not an infrastructure failure
                from leanfit.train.result import TrainResult
                from leanfit.train.trial import write_result

                write_result(TrainResult(status="failed", reason=problem), result_to)
            raise LeanfitError(f"--spec: {spec}: {problem}")
    else:
        if (genotype is None) == (not sample):
            raise LeanfitError("give exactly one of --genotype FILE or --sample, or --spec FILE")
        seed = seed or 0
        if genotype is not None:
            config = read_genotype(genotype, experiment)
        else:
            config = experiment.search_space().sample(seed)
        n_epochs = epochs or experiment.budget.max_epochs
        if resume is not None:
            held = check_resumable(resume, experiment, config)
            if n_epochs <= held:  # (it trained nothing, and logged the checkpoint's figures)
                raise LeanfitError(
                    f"--resume: {resume} holds {held} epoch{'s' * (held != 1)} of training "
                    f"already; give --epochs above {held} (the epochs in all, those included)"
                    + ("" if epochs else f"; budget.max_epochs is {n_epochs}")
                )
        if schedule_epochs is not None and schedule_epochs < n_epochs:
            raise LeanfitError(
                f"--schedule-epochs ({schedule_epochs}) must be at least --epochs ({n_epochs})"
            )
        trial_id = f"trial-{uuid.uuid4().hex[:12]}"
        trial_spec = TrialSpec(
            trial_id=trial_id,
            config=config,
            epochs=n_epochs,
            schedule_epochs=schedule_epochs or max(n_epochs, experiment.budget.max_epochs),
            seed=seed,
            resume_from=str(resume) if resume else None,
            checkpoint_to=default_checkpoint(experiment, trial_id),
        )
    plan = None
    if data_plan is not None:
        from leanfit.data.splits import DataPlan

        read_text_option("--data-plan", data_plan, "the data plan's JSON file")
        try:
            plan = DataPlan.load(data_plan)
        except (ValueError, KeyError, TypeError) as e:  # (JSONDecodeError is a ValueError)
            raise LeanfitError(
                f"--data-plan: {data_plan} is not a data plan leanfit wrote ({type(e).__name__}: "
                f"{e}); give the file the pipeline's subset step wrote"
            ) from None

    from leanfit.data.sources import dataset_notices, load_dataset
    from leanfit.train.trial import load_teacher, run_trial, train_data, write_result

    dataset = load_dataset(experiment)
    for notice in dataset_notices(dataset):
        err_console.print(notice, style="yellow", highlight=False)
    if plan is not None and (bad := plan.outside(len(dataset.labels))):
        raise LeanfitError(
            f"--data-plan: {data_plan}: {bad}; the file was edited or is not this dataset's: give "
            "the file the pipeline's subset step wrote"
        )
    data = train_data(experiment, dataset, for_search=search_subset, plan=plan)
    if trial_spec.teacher is not None:  # a teacher that does not fit: refused before any logging
        load_teacher(trial_spec.teacher, data, trial_spec.resolution or data.image_size)
    size = trial_spec.resolution or experiment.dataset.image_size
    console.print(
        f"training {trial_spec.trial_id}: {len(data.train_y):,} train / {len(data.val_y):,} "
        f"validation images, {size}x{size}, "
        f"{trial_spec.epochs} epoch{'s' * (trial_spec.epochs != 1)}"
    )
    seen: list[dict] = []

    def show(record: dict) -> None:
        seen.append(record)
        console.print(
            f"  epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  "
            f"val acc {record['val_accuracy']:.4f}  ({record['images_per_second']:.0f} img/s)"
        )

    run_id = None
    if track:
        from leanfit.track import TrialLogger
        from leanfit.track.search import TAG_CHECKPOINT, TAG_RESUME_FROM

        logger = TrialLogger(experiment.tracking_uri(), experiment.experiment_name())
        budget = {
            "epochs": trial_spec.epochs,
            "schedule_epochs": trial_spec.budget.schedule_epochs or trial_spec.epochs,
            "data_fraction": trial_spec.data_fraction,
            "resolution": trial_spec.resolution or experiment.dataset.image_size,
        }
        # what else makes two runs of one configuration differ, as a search's jobs have it
        tags = {
            "leanfit.seed": str(trial_spec.seed),
            TAG_CHECKPOINT: trial_spec.checkpoint_to or "",
            TAG_RESUME_FROM: trial_spec.resume_from or "",
        }
        from leanfit import stopping

        try:
            # (a stop while its run is opened waits for it: MLflow's calls that make it are
            # several, and a stop between them left the run RUNNING for good)
            with stopping.held_off():
                run_id = logger.start_trial(
                    trial_spec.trial_id, trial_spec.config, budget, dataset,
                    experiment.dataset.source, tags=tags,
                )  # fmt: skip
        except KeyboardInterrupt:
            trial_interrupted(trial_spec, None, [], logger if run_id else None, run_id)
    # (nothing between the run's opening and this try: a stop there left the run RUNNING)
    try:
        # a checkpoint kept as it trains (about every epoch for small models), so that Ctrl-C
        # loses at most the epoch it stopped in; a spec's (a search's Job) is its own business
        result = run_trial(experiment, trial_spec, data, on_epoch=show, save_progress=spec is None)
    except KeyboardInterrupt:
        again = None  # (a spec's resume_from goes on)
        if spec is None:  # every option that shapes the training, so that it goes on alike
            piped = genotype is not None and (
                not genotype.is_file() or str(genotype).startswith(("/dev/", "/proc/"))
            )  # (`< g.yaml` makes /dev/stdin a file, which the next command cannot read)
            if piped and trial_spec.checkpoint_to:
                # a pipe (`--genotype <(...)`, /dev/fd/63) is gone once this command ends: the
                # configuration is written beside the checkpoint for the command to name
                kept = Path(f"{trial_spec.checkpoint_to}.genotype.yaml")
                with contextlib.suppress(OSError):  # (the command names the pipe, then)
                    kept.write_text(yaml.safe_dump(dict(config), sort_keys=False))
                    genotype = kept
            options = [
                *(["--genotype", str(genotype)] if genotype else ["--sample"]),
                *("--seed", str(trial_spec.seed), "--schedule-epochs"),
                str(trial_spec.schedule_epochs),
                *(["--search-subset"] if search_subset else []),
                *(["--data-plan", str(data_plan)] if data_plan else []),
                *([] if track else ["--no-track"]),
            ]
            again = [str(experiment_file), *options]
        trial_interrupted(trial_spec, again, seen, logger if run_id else None, run_id)
    except Exception as e:
        # as in a search's worker: a bug that one configuration hits fails that trial only
        import traceback

        from leanfit.train.result import TrainResult

        tb = traceback.format_exc(limit=6)
        result = TrainResult(status="failed", reason=f"{type(e).__name__}: {e}\n{tb}")
        if result_to is None:
            if run_id is not None:  # not left RUNNING in MLflow
                logger.finish_trial(run_id, result)
            raise
    if result_to is not None:
        write_result(result, result_to)
    if run_id is not None:
        logger.finish_trial(run_id, result)
    if result.status == "failed":
        from rich.markup import escape

        said = escape(str(result.reason))
        err_console.print(f"[red]trial failed[/red]: {said}", highlight=False)
        raise typer.Exit(1)
    if result.status == "stopped":  # a spec's curve_stop: a result, at the epochs it reached
        console.print(f"[yellow]stopped after epoch {result.epochs}[/yellow]: {result.reason}")
    console.print(
        f"[green]done[/green] val accuracy {result.val_accuracy:.4f}, "
        f"{result.params:,} parameters, "
        f"{result.macs:,} MACs, {result.wall_time:.1f} s"
    )
    if run_id is not None:
        uri = hide_password(experiment.tracking_uri())
        console.print(f"MLflow run {run_id} in {uri} (browse: {browse_command(uri)})")
    if result.checkpoint:
        console.print(f"checkpoint {result.checkpoint}")


def trial_interrupted(
    spec, again: list[str] | None, seen: list[dict], logger, run_id: str | None
) -> NoReturn:
    """`trial` stopped by Ctrl-C or SIGTERM: its MLflow run closed as interrupted with the
    epochs it finished (it stayed RUNNING, for good), and how to go on from the checkpoint
    kept (`again`: the experiment file and the options the training was shaped by; None for a
    spec, whose resume_from goes on)."""
    import shlex

    from leanfit.train.checkpoint import checkpoint_epochs

    if logger is not None:
        logger.close_interrupted(run_id, seen)
    held, kept = 0, None
    for path in (spec.checkpoint_to, spec.resume_from):  # kept as it trained, or resumed from
        if path and (epochs := checkpoint_epochs(path)) is not None:
            held, kept = epochs, path
            break
    # the epochs trained in all, those of the checkpoint it was resumed from included
    reached = int(seen[-1]["epoch"]) if seen else (held if kept == spec.resume_from else 0)
    done = f"interrupted after {reached} epoch{'s' * (reached != 1)} of {spec.epochs}"
    if run_id is not None:
        done += f" (MLflow run {run_id} closed as KILLED)"
    if kept is None:
        interrupted(f"{done}; no checkpoint was kept yet")
    holds = f"the checkpoint {kept} holds {held} epoch{'s' * (held != 1)}"
    if again is None:
        interrupted(f"{done}; {holds}")
    go_on = ["--resume", kept, "--epochs", str(spec.epochs)]
    command = shlex.join(["leanfit", "trial", *again, *go_on])
    interrupted(f"{done}; {holds}: `{command}` goes on from it")


def read_spec(path: Path):
    """A trial spec from a JSON file (what a search's Kubernetes Job is handed)."""
    import json

    from pydantic import ValidationError

    from leanfit.train.trial import TrialSpec

    text = read_text_option("--spec", path, "the trial spec's JSON")
    try:
        return TrialSpec.model_validate(json.loads(text))
    except json.JSONDecodeError as e:
        raise LeanfitError(f"--spec: {path} is not valid JSON: {e}") from None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise LeanfitError(f"--spec: {path}: {where}: {err['msg']}") from None


def spec_problem(spec, experiment) -> str | None:
    """What keeps a trial spec from running, found before anything is logged: a configuration
    outside the experiment's space, a checkpoint to resume that is not there."""
    from leanfit.config import MIN_RESOLUTION
    from leanfit.errors import GenotypeError

    try:
        experiment.search_space().validate(spec.config)
    except GenotypeError as e:
        return f"invalid configuration: {e}"
    if spec.resume_from is not None:
        from leanfit.train.checkpoint import checkpoint_epochs

        if not Path(spec.resume_from).is_file():
            return f"resume_from: checkpoint {spec.resume_from!r} does not exist"
        # (it trained nothing and said `done` with its figures; another file than a checkpoint
        # fails the trial, said so)
        held = checkpoint_epochs(spec.resume_from)
        if held is not None and spec.epochs <= held:
            return (
                f"epochs {spec.epochs}: the checkpoint resume_from holds {held} epochs already; "
                f"give more than {held} (the epochs in all)"
            )
    # what `trial`'s own options refuse (a schedule below the epochs trained it broke; a folder
    # or unwritable checkpoint_to was found after the whole training, with a traceback)
    if spec.schedule_epochs is not None and spec.schedule_epochs < spec.epochs:
        return (
            f"schedule_epochs ({spec.schedule_epochs}) must be at least epochs ({spec.epochs}), "
            "or left out"
        )
    if spec.resolution is not None and spec.resolution < MIN_RESOLUTION:
        return (
            f"resolution {spec.resolution}: give at least {MIN_RESOLUTION} pixels (the "
            "resolution fidelity's own lower limit), or leave it out for the dataset's"
        )
    if spec.checkpoint_to is not None:
        target = Path(spec.checkpoint_to)
        if problem := file_target_problem(target):
            return f"checkpoint_to: {problem}"
        try:
            check_writable_folder("checkpoint_to", target.parent, "for the checkpoint")
        except LeanfitError as e:
            return str(e)
    return None


def file_target_problem(path: Path) -> str | None:
    """Why a file cannot be written at `path` by writing beside it and renaming (as results and
    checkpoints are): a folder there, or a device (`--result-to /dev/null`, run as root, put a
    plain file in the device's place)."""
    if path.is_dir():
        return f"{path} is a folder; give a file name"
    if path.exists() and not path.is_file():
        return f"{path} is not a plain file (a device?); give a file name, or leave it out"
    return None


def check_resumable(resume: Path, experiment, config: dict) -> int:
    """`trial --resume`: a missing file, one that is not a checkpoint, or one of another
    configuration (its weights would not fit the model) is refused before anything is logged.
    The epochs the checkpoint holds."""
    from leanfit.errors import GenotypeError
    from leanfit.train.checkpoint import load_checkpoint

    if resume.is_dir():
        raise LeanfitError(
            f"--resume: {resume} is a folder; give the checkpoint (.pt) file a trial printed"
        )
    if not resume.is_file():
        raise LeanfitError(f"--resume: checkpoint {str(resume)!r} does not exist")
    try:
        state = load_checkpoint(resume, map_location="cpu")
        saved, _, held = dict(state["genotype"]), state["model"], int(state["epoch"])
    except Exception as e:  # torch.load's errors on a foreign file vary: any of them says it
        raise LeanfitError(
            f"--resume: {str(resume)!r} is not a checkpoint leanfit wrote ({type(e).__name__}); "
            "give the .pt file a trial printed after 'checkpoint'"
        ) from None
    try:
        wanted = experiment.search_space().validate(config)
    except GenotypeError:
        return held  # the configuration itself is refused later, with its own message
    if saved != dict(wanted):
        raise LeanfitError(
            f"--resume: {str(resume)!r} holds another configuration's weights; resume it with "
            "the --genotype (or --sample --seed) that wrote it"
        )
    return held


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
    from leanfit.config import load_experiment
    from leanfit.data.check import check_dataset

    experiment = load_experiment(experiment_file)
    seconds = None if wall_time is None else wall_time_seconds(wall_time)
    check_dataset(experiment)
    check_work_dir(experiment)
    check_tracking_reachable(experiment.tracking_uri())
    if experiment.executor.kind == "local":
        from leanfit.execute.forkserver import start_fork_server

        # the workers' fork server imports torch while this process imports the controller
        start_fork_server(training=synthetic is None)

    from leanfit.search.run import exhausted_line, failure_lines, front_table, run_search

    try:
        with progress_display() as show:
            outcome = run_search(
                experiment, resume=resume, workers=workers, wall_time=seconds, max_trials=trials,
                on_progress=show, synthetic_sleep=synthetic,
                on_notice=lambda text: console.print(text, style="yellow", highlight=False),
            )  # fmt: skip
    except KeyboardInterrupt as e:
        run_id = getattr(e, "search_run_id", "")
        if run_id is None:  # (its run was not open yet)
            interrupted("interrupted before the search started: no trial ran")
        if run_id and _run_status(experiment.tracking_uri(), run_id) == "FINISHED":
            # (a stop while its report was written waits for it, then acts)
            interrupted(
                f"interrupted after the search finished (run {run_id}, its report written): "
                f"`leanfit report {quoted(experiment_file)}` shows its front"
            )
        interrupted(  # (its message's tracking URI without its password: `interrupted`)
            "interrupted: the finished trials are in MLflow "
            f"({experiment.tracking_uri()}); `leanfit search {quoted(experiment_file)} --resume` "
            "continues the search",
        )
    if outcome.resumed_jobs:
        console.print(
            f"resumed: {outcome.resumed_jobs} job(s) cut short (interrupted, or at the end of "
            "the budget before) ran again"
        )
    if synthetic is not None:  # (the table's accuracies looked like trained models')
        console.print(
            "dry run (--synthetic): the synthetic objective replaced training; no model was "
            "trained, and these accuracies are made up",
            style="yellow",
        )
    print_whole(front_rich_table(front_table(outcome.controller)))
    for line in failure_lines(outcome.controller) + [exhausted_line(outcome.controller)]:
        if line is not None:
            console.print(line, style="yellow", highlight=False, markup=False, soft_wrap=True)
    deleted, size = outcome.controller.stats.pruned
    if deleted:
        # where they are: a search resumed in another work folder has some in the first one
        front = outcome.controller.front()
        folders = sorted({str(Path(p).parent) for t in front for p in t.checkpoints.values()})
        folders = folders or [str(outcome.controller.checkpoint_dir)]
        console.print(
            f"checkpoints: the Pareto models' kept in {' and '.join(folders)}; "
            f"{deleted:,} other{'s' * (deleted != 1)} deleted ({size / 2**20:.1f} MiB; "
            "scheduler.keep_checkpoints: all keeps them)",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"report {outcome.report_html}\nplot   {outcome.report_plot}\n"
        f"MLflow search run {outcome.search_run_id} in {hide_password(experiment.tracking_uri())}"
    )


@app.command()
def report(
    experiment_file: Path = typer.Argument(..., help="experiment YAML the search ran with"),
    run_id: str | None = typer.Option(
        None, "--run-id", help="the search run to read (default: the file's latest search)"
    ),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        help="folder for pareto.png and report.html (default: .leanfit/searches/RUN/report)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print the summary and front as JSON"),
) -> None:
    """A search's Pareto table and report, read from MLflow: running, killed or finished."""
    from leanfit.config import load_experiment

    try:
        experiment = load_experiment(experiment_file)
    except ConfigError as e:
        if e.field != "dataset" or "missing" not in str(e):
            raise
        # (as a file for leanfit.optimize(space=...) is: it said "dataset: required field is
        # missing", as if adding one would read such a search)
        raise LeanfitError(
            f"{experiment_file} has no dataset section: `leanfit report` reads searches of "
            "leanfit's space, whose file names their dataset. A search of a space of your own "
            "(leanfit.optimize(space=...)) has its space in your script: its report.html and "
            "pareto.png are logged to its MLflow search run (and result.report_html)"
        ) from None
    if output is not None:
        if output.suffix.lower() in (".html", ".htm", ".png") and not output.is_dir():
            raise LeanfitError(
                f"-o: {output} names a file; -o is the folder report.html and pareto.png go "
                f"in, e.g. -o {output.with_suffix('')}"
            )
        check_writable_folder("-o", output)
    else:
        check_work_dir(experiment)  # the report goes under it
    from leanfit.search.readback import read_search, report_of

    reading = read_search(experiment, str(experiment_file), run_id)
    folder = output or experiment.work_path() / "searches" / reading.run_id / "report"
    try:
        plot, page = report_of(experiment, reading, folder)
    except OSError as e:
        from leanfit.errors import write_refused

        refused = write_refused(e)
        option = "-o" if output is not None else "work_dir"
        if refused is not None:  # a full disk, a file-size limit (the folder can be written)
            raise LeanfitError(
                f"{option}: the report could not be written in {folder}: {refused}, then run "
                "the command again (the report's files are as they were, or not there)"
            ) from None
        raise LeanfitError(
            f"{option}: cannot write the report in {folder} ({e.strerror or e}); "
            "give a folder you can write"
        ) from None
    if as_json:
        sys.stdout.write(reading.to_json(plot, page) + "\n")
        return
    for line in reading.summary_lines(str(experiment_file)):
        console.print(line, highlight=False, crop=False, soft_wrap=True)
    from leanfit.search.run import front_table

    print_whole(front_rich_table(front_table(reading.controller)))
    console.print(f"report {page}\nplot   {plot}", highlight=False, soft_wrap=True)


def check_writable_folder(option: str, folder: Path, purpose: str = "for the report") -> None:
    """Refuse a folder that is a file, or sits where nothing can be written, before any work."""
    import os

    if folder.exists() and not folder.is_dir():
        raise LeanfitError(f"{option}: {folder} is a file; give a folder {purpose}")
    parent = folder
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise LeanfitError(
            f"{option}: {parent} is a file, so {folder} cannot be made; give a folder {purpose}"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LeanfitError(
            f"{option}: cannot write in {parent}; give a folder you can write {purpose}"
        )


def check_work_dir(experiment) -> None:
    """The work folder (checkpoints, reports, the pipeline's files) can be written: refused
    before any work, and before the tracking database is made."""
    check_writable_folder(
        "work_dir", experiment.work_path(), "(work_dir in the experiment file; default .leanfit)"
    )


@app.command()
def run(
    experiment_file: Path = typer.Argument(..., help="experiment YAML"),
    force: bool = typer.Option(
        False, "--force", help="run even if a finished run already saw these settings and data"
    ),
    wall_time: str | None = typer.Option(None, help="search budget, e.g. 5m (default: file)"),
) -> None:
    """Run the whole pipeline on this machine (kfp.local): search, final training, registry."""
    from leanfit.config import load_experiment
    from leanfit.data.check import check_dataset
    from leanfit.launch import run_locally

    experiment = _with_wall_time(load_experiment(experiment_file), wall_time)
    check_dataset(experiment)
    check_work_dir(experiment)
    check_tracking_reachable(experiment.tracking_uri())
    console.print(
        f"leanfit pipeline [bold]{experiment.name}[/bold]: fingerprint → subset → augment policy"
        " → search → final train → evaluate & register (kfp.local, one process per step)"
    )
    try:
        outcome = run_locally(experiment, force=force)
    except KeyboardInterrupt:
        interrupted(
            "interrupted: the steps that finished and the search's finished trials are in MLflow "
            f"({experiment.tracking_uri()}); `leanfit run {quoted(experiment_file)}` goes on with "
            "them (the search and the final training resume where they stopped)",
        )
    uri = experiment.tracking_uri()
    r = outcome.result
    if not outcome.ran:
        console.print(
            f"[green]up to date[/green]: pipeline run {outcome.run_id} already used these "
            f"settings on this data (digest {outcome.digest[:12]}); nothing to do "
            "(--force runs it again)"
        )
    else:
        console.print(f"[green]done[/green]: pipeline run {outcome.run_id}")
    if r:
        console.print(
            f"registered   {r['registered_model']} version {r['version']} "
            f"({r['params']:,} parameters, test accuracy {r['test_accuracy']:.4f})\n"
            f"champion     {r['registered_model']} version {r['champion_version']}\n"
            f"decision     {r['reason']}"
        )
        for m in r.get("models", []):
            console.print(
                f"  final model (trial {m['trial']}): {m['params']:,} parameters, "
                f"val {m['val_accuracy']:.4f}, test {m['test_accuracy']:.4f}"
                + (" (refit on train + val)" if m.get("refit") else "")
            )
        if note := chosen_on_few_images(r):
            console.print(note)
    if outcome.report is not None:
        console.print(f"report       {outcome.report}")
    elif not outcome.ran and r:  # its page was written in a work folder since cleaned
        console.print(f"report       in MLflow: run {outcome.run_id}, report/report.html")
    if outcome.log is not None:
        console.print(f"full log     {outcome.log}")
    console.print(f"browse       {browse_command(hide_password(uri))}")


def chosen_on_few_images(result: dict) -> str:
    """A pipeline's registered model chosen on a validation split of a few dozen images: said
    again beside the registration (the search step's note alone scrolled by); '' otherwise."""
    from leanfit.search.run import SMALL_VALIDATION

    val = result.get("validation_images")  # (not in the results of runs before 2026-12-07)
    if not val or val >= SMALL_VALIDATION:
        return ""
    return (
        f"note: the registered model was chosen on a validation split of {val} images (one "
        f"image is {100 / val:.1f} points of validation accuracy): its lead may be chance; "
        "raise dataset.val_fraction or add images"
    )


def quoted(path) -> str:
    """A path as a command printed for pasting has it: shell-quoted where it must be (a space,
    a # that began a comment, a $), as is otherwise."""
    import shlex

    return shlex.quote(str(path))


def browse_command(uri: str) -> str:
    """How to look at a tracking URI's runs: a server's address (`mlflow ui` cannot open it),
    or `mlflow ui` on a database."""
    if uri.startswith(("http://", "https://")):
        return uri
    return f"mlflow ui --backend-store-uri {quoted(uri)}"


def _with_wall_time(experiment, wall_time: str | None):
    from leanfit.config import experiment_from_dict

    if wall_time is None:
        return experiment
    data = experiment.model_dump(mode="json")
    data["budget"]["wall_time"] = wall_time_seconds(wall_time)
    return experiment_from_dict(data, experiment.base_dir)


def wall_time_seconds(wall_time: str) -> float:
    """`--wall-time`: 0s would end the search before its first trial."""
    return duration_option("wall-time", wall_time, "give a budget above zero, e.g. 90s, 10m, 2h")


def duration_option(option: str, value: str, if_zero: str | None = None) -> float:
    """A duration option's seconds; `if_zero` (what to do instead) refuses a duration of 0."""
    from leanfit.config import parse_duration, unitless_duration

    if (n := unitless_duration(value)) is not None:
        raise LeanfitError(f"--{option} {n}: give a unit: {n}s, {n}m or {n}h")
    try:
        seconds = float(parse_duration(value))
    except ValueError as e:
        raise LeanfitError(f"--{option}: {e}") from None
    if if_zero is not None and not seconds > 0:
        raise LeanfitError(f"--{option} {value}: {if_zero}")
    return seconds


@app.command(name="compile")
def compile_(
    experiment_file: Path = typer.Argument(..., help="experiment YAML"),
    output: Path = typer.Option(..., "-o", "--output", help="where to write the pipeline YAML"),
) -> None:
    """Write the pipeline YAML for a Kubeflow Pipelines cluster."""
    from leanfit.config import COMPILED_PIPELINE, load_experiment
    from leanfit.launch import compile_pipeline

    experiment = load_experiment(experiment_file)
    if output.is_dir():
        raise LeanfitError(f"-o: {output} is a folder; give a file name such as pipeline.yaml")
    check_writable_folder("-o", output.parent, "for the pipeline")  # (a file on the way: named)
    if output.exists() and output.samefile(experiment_file):
        raise LeanfitError(
            f"-o: {output} is the experiment file itself; give another name, such as "
            f"{experiment_file.stem}-pipeline.yaml"
        )
    if output.is_file():  # an earlier compile's output is replaced; any other file is kept
        try:
            pipeline = COMPILED_PIPELINE.search(output.read_text()) is not None
        except (OSError, UnicodeDecodeError):
            pipeline = False
        if not pipeline:
            raise LeanfitError(
                f"-o: {output} exists and is not a compiled pipeline; give another name, or "
                "delete it first"
            )
    path = compile_pipeline(experiment, output)
    console.print(f"[green]wrote[/green] {path}")


@app.command()
def submit(
    experiment_file: Path = typer.Argument(..., help="experiment YAML"),
    host: str = typer.Option(..., help="Kubeflow Pipelines API, e.g. http://localhost:8080"),
    experiment: str | None = typer.Option(
        None, help="KFP experiment name (default: leanfit-<name>)"
    ),
    recurring: str | None = typer.Option(
        None, help="cron schedule for a recurring run, e.g. '0 3 * * *' (default: one run)"
    ),
    namespace: str | None = typer.Option(None, help="Kubeflow profile namespace (multi-user)"),
    token: str | None = typer.Option(
        None, envvar="KFP_TOKEN", help="bearer token for the KFP API (or $KFP_TOKEN)"
    ),
    timeout: float = typer.Option(30.0, min=1.0, help="seconds to wait for each API answer"),
) -> None:
    """Compile the pipeline and run it on a Kubeflow Pipelines host (once, or on a schedule)."""
    from leanfit.config import load_experiment
    from leanfit.launch import submit_experiment
    from leanfit.trigger.submit import kfp_cron

    settings = load_experiment(experiment_file)
    if recurring is not None:
        kfp_cron(recurring)  # a malformed schedule stops here, before anything is compiled
    done = submit_experiment(
        settings, host, kfp_experiment=experiment, recurring_cron=recurring,
        namespace=namespace, token=token, timeout=timeout,
    )  # fmt: skip
    what = "recurring run" if done.recurring_run_id else "run"
    console.print(
        f"[green]submitted[/green] {what} {done.recurring_run_id or done.run_id} "
        f"(pipeline {done.pipeline_id}, version {done.pipeline_version_id})\n"
        f"watch it at {done.url}"
    )


@app.command()
def watch(
    experiment_file: Path = typer.Argument(..., help="experiment YAML"),
    once: bool = typer.Option(False, "--once", help="check once and exit (for a CronJob)"),
    interval: str = typer.Option("10m", help="time between checks, e.g. 30s, 10m, 1h"),
    submit_to: str | None = typer.Option(
        None, "--submit", help="submit to this Kubeflow Pipelines host instead of running here"
    ),
    namespace: str | None = typer.Option(None, help="Kubeflow profile namespace (with --submit)"),
    token: str | None = typer.Option(None, envvar="KFP_TOKEN", help="KFP bearer token"),
    resubmit_after: str | None = typer.Option(
        None, help="with --submit: submit the same data again only after this long [default: 6h]"
    ),
) -> None:
    """Run the pipeline when the dataset changes: exactly one run per dataset digest."""
    from leanfit.config import load_experiment
    from leanfit.trigger.submit import check_kfp_host
    from leanfit.trigger.watch import check_once
    from leanfit.trigger.watch import watch as watch_loop

    # an interval of 0 would check back to back: the dataset hashed in a busy loop
    every = duration_option("interval", interval, "give a time above zero between checks, e.g. 10m")
    again = duration_option("resubmit-after", resubmit_after or "6h")
    if submit_to is None:  # options that would do nothing without it
        for option, given in (("--namespace", namespace), ("--resubmit-after", resubmit_after)):
            if given is not None:
                raise LeanfitError(
                    f"{option} applies only with --submit HOST (pipelines run on Kubeflow); "
                    "add --submit, or drop it to run the pipeline here"
                )
    experiment = load_experiment(experiment_file)
    check_work_dir(experiment)  # a bad file stops here, before any check
    # a tracking server or KFP host that does not answer is said now, before anything is
    # written: not after MLflow's minutes of retries, nor only once the data changes (a CronJob
    # of `--once` would report success until then)
    check_tracking_reachable(experiment.tracking_uri())
    if submit_to is not None:
        check_kfp_host(submit_to, token, option="--submit")

    def submitter(settings):
        from leanfit.launch import submit_experiment

        return submit_experiment(
            settings, submit_to, namespace=namespace, token=token, option="--submit"
        )

    def log(text: str, file=None) -> None:  # `file`: the terminal, while a pipeline runs
        out = console if file is None else Console(file=file, soft_wrap=True)
        out.print(f"[dim]{time_now()}[/dim] {text}", highlight=False)

    running = False  # whether a Ctrl-C stopped a pipeline run (not a check of unchanged data)

    def started() -> None:
        nonlocal running
        running = True

    def check():
        nonlocal running
        running = False
        result = check_once(
            load_experiment(experiment_file),
            submit=submitter if submit_to else None,
            resubmit_after=again,
            log=log,
            on_run=started,
        )
        running = False
        return result

    try:
        if once:
            result = check()
            if result.action == "ran" and result.result:
                r = result.result
                log(
                    f"champion: {r['registered_model']} version {r['champion_version']} "
                    f"({r['reason']})"
                )
                if note := chosen_on_few_images(r):
                    log(note)
            return
        log(f"watching {experiment_file} every {every:g} s (Ctrl-C to stop)")
        watch_loop(every, check, log=log)
    except KeyboardInterrupt:
        if submit_to is not None or not running:  # (on Kubeflow, or no run here to go on)
            interrupted(f"stopped watching {experiment_file}")
        interrupted(
            f"stopped watching {experiment_file}; a pipeline run it interrupted goes on at the "
            f"next `leanfit watch {quoted(experiment_file)}` or "
            f"`leanfit run {quoted(experiment_file)}` (its search and final training resume)",
        )


def _run_status(uri: str, run_id: str) -> str | None:
    """An MLflow run's status, or None where it cannot be read."""
    from mlflow import MlflowClient

    try:
        return MlflowClient(uri).get_run(run_id).info.status
    except Exception:  # noqa: BLE001 - (said as the run left unfinished, as before)
        return None


def time_now() -> str:
    import time

    return time.strftime("%H:%M:%S")


@app.command()
def promote(
    name: str = typer.Argument(..., help="registered model name, e.g. leanfit-digits"),
    version: str = typer.Argument(..., help="the version to make champion"),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"
    ),
) -> None:
    """Make a registered model version the champion by hand (a rollback)."""
    from leanfit.config import tracking_uri_or_default
    from leanfit.track.registry import promote as promote_version
    from leanfit.track.registry import promotion_note

    uri = tracking_uri_or_default(tracking_uri)
    check_tracking_reachable(uri, where=WHERE_OPTION)
    previous = promote_version(uri, name, version)
    if previous == version:
        console.print(f"{name} version {version} is already the champion: nothing changed")
        return
    console.print(f"[green]champion[/green] {name} version {version} (was {previous})")
    if (note := promotion_note(uri, name, version, previous)) is not None:
        console.print(note, highlight=False, markup=False, soft_wrap=True)


@app.command()
def predict(
    model: str = typer.Argument(
        ...,
        help="a registered model's name (its champion), models:/NAME@ALIAS, models:/NAME/VERSION, "
        "runs:/RUN_ID/model, or a downloaded model's folder",
    ),
    images: list[Path] = typer.Argument(..., help="image files, or folders of them"),
    top: int = typer.Option(1, min=1, help="how many of the most likely classes to show"),
    as_json: bool = typer.Option(False, "--json", help="print the predictions as JSON"),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"
    ),
) -> None:
    """Classify image files with a registered model, decoded as its training images were."""
    import json

    import mlflow
    from rich.markup import escape
    from rich.progress import Progress
    from rich.table import Table

    from leanfit.config import tracking_uri_or_default
    from leanfit.data.sources import skipped_notice
    from leanfit.models import predict as p
    from leanfit.track.runs import missing_sqlite_database

    files = p.image_files(images)
    uri = tracking_uri_or_default(tracking_uri)
    name = p.model_uri(model)
    if not p.is_model_folder(name):  # (a downloaded model's folder needs no tracking server)
        check_tracking_reachable(uri, where=WHERE_OPTION)
    database = missing_sqlite_database(uri)
    if database is not None and name.startswith(("models:/", "runs:/")):
        raise LeanfitError(
            f"tracking: no tracking database at {database} (tracking URI {uri}), so no "
            f"model {name}; run where the pipeline ran, or give its tracking URI"
        )
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    card = p.read_card(name)
    if not card.from_card:
        err_console.print(
            f"note: {name} was logged without leanfit's card: classes are shown by index, and "
            f"files are read at {card.image_size}x{card.image_size}x{card.channels}",
            style="yellow",
            highlight=False,
        )
    classifier = p.load_model(name, card if card.from_card else None)
    with Progress(console=err_console, transient=True, disable=as_json) as progress:
        task = progress.add_task("classifying", total=len(files))
        predictions, skipped = p.predict(
            classifier, card, files, top, on_batch=lambda n: progress.advance(task, n)
        )
    if skipped:
        err_console.print(skipped_notice(skipped), style="yellow", highlight=False)
    if not predictions:  # (before an empty table, or `[]` for a program to take as an answer)
        raise LeanfitError(
            f"images: none of the {len(files)} file(s) could be read (each listed above with "
            "why); give image files (PNG, JPEG, ...) Pillow can read"
        )
    if as_json:
        print(json.dumps(p.as_records(predictions), indent=1))
    else:
        table = Table(title=f"{name}: {len(predictions)} image(s)", title_justify="left")
        table.add_column("file", overflow="fold")
        shown = len(predictions[0].top) if predictions else 1  # at most the model's classes
        for rank in range(shown):
            suffix = "" if shown == 1 else f" {rank + 1}"
            table.add_column(f"class{suffix}")
            table.add_column(f"probability{suffix}", justify="right")
        for pred in predictions:
            cells = [escape(visible(pred.file))]
            for cls, prob in pred.top:
                cells += [escape(visible(cls)), f"{prob:.3f}"]
            table.add_row(*cells)
        if console.is_terminal:
            console.print(table)
        else:  # a pipe or a file: each row on one line, however long its path
            from rich.console import Console

            table.columns[0].no_wrap = True
            title, table.title = table.title, None  # (rich folds a title to the table's width)
            wide = Console(width=1_000_000).measure(table).maximum
            out = Console(width=max(console.width, wide), soft_wrap=False)
            out.print(title, markup=False, highlight=False)
            out.print(table)
    score = p.folder_score(predictions, card.classes) if card.from_card else None
    if score is not None:  # files in class folders (a test/ folder): how often they agree
        out = err_console if as_json else console
        out.print(
            f"accuracy {score.accuracy:.4f} on the {score.files:,} file(s) in folders named after "
            f"a class ({score.files - score.correct:,} wrong)",
            highlight=False,
        )
        if score.correct < score.files:
            per_class = ", ".join(f"{visible(c)} {k}/{n}" for c, (k, n) in score.by_class.items())
            mixups = ", ".join(
                f"{visible(a)} as {visible(b)} {n}" for a, b, n in score.confused[:5]
            )
            out.print(f"  by class: {per_class}", highlight=False, markup=False)
            out.print(f"  most confused: {mixups}", highlight=False, markup=False)


# Seconds between progress lines when the output is not a terminal (a log, a pod, a pipe)
LOG_PROGRESS_EVERY = 10.0


@contextlib.contextmanager
def progress_display():
    """A callback showing the search's progress: one live line on a terminal; elsewhere (a log
    file, `kubectl logs`, CI) a whole line every `LOG_PROGRESS_EVERY` seconds and a last one at
    the end, since a live display there shows only its last state, cut at 80 columns."""
    if live_terminal():
        from rich.live import Live

        live = Live(console=console, refresh_per_second=2, transient=False)
        with live, cursor_shown_while_suspended():
            yield lambda controller: live.update(progress_line(controller, console.width))
        return
    latest, printed_at = None, -math.inf

    def show(controller) -> None:
        nonlocal latest, printed_at
        latest = controller
        if time.monotonic() - printed_at >= LOG_PROGRESS_EVERY:
            printed_at = time.monotonic()
            console.print(progress_line(controller), crop=False, soft_wrap=True)

    yield show
    if latest is not None:
        console.print(progress_line(latest), crop=False, soft_wrap=True)


def live_terminal() -> bool:
    """Whether the output is a terminal that can redraw a line: not a dumb one (TERM=dumb:
    Emacs' shell, some IDEs' consoles, where the live line never showed until the end), and
    not a file or pipe that FORCE_COLOR makes rich take for a terminal (the log got the live
    line's redraws twice a second)."""
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):  # (a closed or replaced stdout)
        tty = False
    return console.is_terminal and not console.is_dumb_terminal and tty


@contextlib.contextmanager
def cursor_shown_while_suspended():
    """Within (a live line, which hides the cursor): Ctrl-Z shows the cursor before the job
    stops, and `fg` hides it again (the shell's prompt was left without a cursor)."""
    import os
    import signal
    import threading

    if not hasattr(signal, "SIGTSTP") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def suspend(signum, frame) -> None:
        console.show_cursor(True)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stopped here, until SIGCONT
        signal.signal(signal.SIGTSTP, suspend)
        console.show_cursor(False)

    before = signal.signal(signal.SIGTSTP, suspend)
    try:
        yield
    finally:
        signal.signal(signal.SIGTSTP, before)


def progress_line(controller, width: int | None = None):
    """The search's progress in a line; shorter where it would not fit in `width` columns (a
    live line is cut at the terminal's edge, and the budget left comes last)."""
    from rich.text import Text

    s = controller.stats
    best = controller.best_accuracy()
    best_text = "-" if best is None else f"{best:.4f}"
    stopped = f"curve-stopped {s.curve_stopped}  " if controller.curve_stop else ""
    if s.from_scratch:  # the work folder's checkpoints were gone (cleaned, another machine)
        stopped += f"from scratch {s.from_scratch}  "
    running, front, left = (
        len(controller.executor.running()), len(controller.front()), controller.budget_left_text()
    )  # fmt: skip
    waiting = controller.executor.not_started()  # (a cluster's pods waiting for a node)
    if waiting:
        running = f"{running} ({waiting} not started)"
    line = (
        f"trials {len(controller.trials)}  jobs finished {s.jobs_done}  running {running}  "
        f"failed {s.jobs_failed}  {stopped}best val acc {best_text}  Pareto {front}  "
        f"budget left {left}"
    )
    if width is not None and len(line) >= width:
        stopped = stopped.replace("curve-stopped", "curve").replace("from scratch", "scratch")
        line = (
            f"trials {len(controller.trials)} jobs {s.jobs_done} "
            f"run {str(running).replace(' not started', ' wait')} "
            f"failed {s.jobs_failed} {stopped.replace('  ', ' ')}best {best_text} "
            f"front {front} left {left}"
        )
    return Text(line)


def print_whole(table) -> None:
    """A table of figures printed whole: in a terminal narrower than the table (or a pipe's
    80 columns), rich would cut its numbers to `13,3…`; a line the terminal wraps keeps them."""
    from rich.console import Console

    wide = Console(width=1_000_000).measure(table).maximum
    if wide <= console.width:
        console.print(table)
    else:
        Console(width=wide, soft_wrap=False, force_terminal=console.is_terminal).print(table)


def front_rich_table(rows):
    from rich.table import Table

    from leanfit.report.pareto import macs_text

    table = Table(title="Pareto front")
    for name in ("trial", "params", "MACs", "val acc", "epochs"):
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(
            str(r["trial"]), f"{r['params']:,}", macs_text(r["macs"]), f"{r['val_accuracy']:.4f}",
            str(r["epochs"]),
        )  # fmt: skip
    return table


def _is_usage_error(e: BaseException) -> bool:
    return any(c.__name__ in ("UsageError", "ClickException") for c in type(e).__mro__) and hasattr(
        e, "show"
    )


def main() -> None:
    import logging
    import os

    # MLflow sets its own level when it is first imported (later, lazily): tell it through its
    # environment variable, which the pipeline's step processes inherit too.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # nor its bars for every artifact it downloads (predict's model: five bars on stderr)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # nor, against a server, two "View run ... at" lines for every trial job (94 pairs in a
    # 30-s search, which buried the progress lines)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # its SQLAlchemy errors come with a stack trace, and the exception is raised on to the
    # command, which says it in a line (a full disk) or shows it whole (anything else)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    # an output whose encoding cannot show a name (`PYTHONIOENCODING=ascii`, a latin-1 locale)
    # and a class called 'un 一': a character shown as ?, not a UnicodeEncodeError traceback
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):  # (a stream that is not text)
            stream.reconfigure(errors="replace")
    # a closed stdout or stderr (`>&-`, `2>&-`): Python has None there, and every line said
    # ended in a traceback (a mistake's exit 2 became 1, a finished search's 0 became 1)
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - this process's, for good
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - this process's, for good
    from leanfit import stopping

    stopping.terminate_as_interrupt()  # `kill PID`, a pod's deletion: stopped as Ctrl-C stops it
    try:
        code = app(args=read_arguments(sys.argv[1:]), standalone_mode=False)
    except LeanfitError as e:
        from rich.markup import escape

        err_console.print(
            f"[red]error:[/red] {escape(hide_password(str(e)))}", highlight=False, soft_wrap=True
        )
        exit_now(2)
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        err_console.print(stopping.said("interrupted"))
        exit_now(stopping.exit_code())
    except (click.exceptions.Exit, typer.Exit) as e:
        exit_now(e.exit_code)
    except BrokenPipeError:  # (a line printed without rich, `--json`'s: its reader went away)
        import signal

        quiet_stdout()
        stopping.note(signal.SIGPIPE)
        exit_now(stopping.exit_code())
    except Exception as e:
        if _is_usage_error(e):  # click's, or the copy of click that typer >= 0.26 carries
            e.show()
            exit_now(2)
        from rich.markup import escape

        from leanfit.errors import write_refused

        if (refused := write_refused(e)) is not None:
            # a full disk or a file-size limit: what finished is in MLflow and the work folder
            # (SQLite rolls back a write it could not finish), a search or a pipeline goes on
            # from there
            err_console.print(
                f"[red]error:[/red] {escape(str(refused))}, then run the command again: "
                "`leanfit search FILE --resume` continues a search, `leanfit run FILE` a "
                "pipeline, from what finished",
                highlight=False,
                soft_wrap=True,
            )
            exit_now(2)
        from leanfit.track.runs import database_refused, is_tracking_failure, server_errors

        if (said := database_refused(e)) is not None:  # (a sqlite database: locked, read-only)
            err_console.print(f"[red]error:[/red] {escape(said)}", highlight=False, soft_wrap=True)
            exit_now(2)
        if not is_tracking_failure(e):
            raise
        import os

        from rich.markup import escape

        uri = hide_password(os.environ.get("MLFLOW_TRACKING_URI", "the tracking server"))
        # a server that answered with errors (its log says why) is not one that is down
        check = (
            "its log says why"
            if server_errors(e)
            else "check that the server is up and the URI (tracking.uri in the file, or "
            "$MLFLOW_TRACKING_URI) is right"
        )
        err_console.print(
            f"[red]error:[/red] tracking: MLflow at {uri} "
            + ("answered with errors" if server_errors(e) else "did not answer")
            + f" ({type(e).__name__}: {escape(_shortened(hide_password(str(e))))}); {check}",
            highlight=False,
            soft_wrap=True,
        )
        exit_now(2)
    # click returns the exit code of `typer.Exit` instead of raising it when not standalone.
    # typer turns a KeyboardInterrupt no command caught (Ctrl-C or SIGTERM in its start-up, or
    # in one that has nothing to say) into an exit code of 130, not raised: said here, with
    # SIGTERM's own code (it ended silently, and 130 for SIGTERM too)
    if code == 130 and not _stop_said:
        err_console.print(stopping.said("interrupted"))
        exit_now(stopping.exit_code())
    exit_now(code if isinstance(code, int) else 0)


def _shortened(text: str, limit: int = 300) -> str:
    """An error's first line, cut at a word with "..." where it is long (it was cut
    mid-word, leaving a parenthesis open)."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[:limit].rsplit(" ", 1)[0] + " ..."


def read_arguments(argv: list[str]) -> list[str]:
    """The command line as leanfit reads it: an empty value refused (`-o ''` was the current
    folder, as a Path), and a `~` that reached it quoted (`-o "~/reports"`) expanded as the shell
    expands it, not made a folder named `~`."""
    import os

    read = []
    for i, arg in enumerate(argv):
        given = arg.startswith("--") and "=" in arg  # (--output=DIR)
        option, _, value = arg.partition("=") if given else ("", "", arg)
        if not value.strip() and (given or not arg.startswith("-")):  # ('', ' ', --output=)
            option = option or (argv[i - 1] if i and argv[i - 1].startswith("-") else None)
            raise LeanfitError(
                f"{option}: the value is empty; give one, or leave the option out"
                if option
                else "an empty argument (''); give a value, or leave it out"
            )
        if arg.startswith("~"):
            arg = os.path.expanduser(arg)
        elif arg.startswith("--") and "=~" in arg:
            option, _, value = arg.partition("=")
            arg = f"{option}={os.path.expanduser(value)}"
        read.append(arg)
    return read


def interrupted(message: str) -> NoReturn:
    """End a command stopped by Ctrl-C or SIGTERM: `message` (what was kept, how to go on),
    exit 130 or 143."""
    global _stop_said
    from leanfit import stopping

    err_console.print(stopping.said(hide_password(message)), highlight=False, soft_wrap=True)
    _stop_said = True
    raise typer.Exit(stopping.exit_code())


_stop_said = False  # whether a command said how it stopped (`interrupted`)


def exit_now(code: int) -> None:
    """End a finished command without the interpreter's teardown: unloading torch's libraries
    and collecting every module took 1.7 s after a `leanfit search` here, longer than its whole
    controller start (and 1.3 s after a refused command, longer than its check). Everything is
    written by then; the exit handlers still run (MLflow's included), the logs and the terminal
    are flushed, other threads are waited for as the interpreter would: after the thread pools
    are told to end (threading's own exit hooks). Joining them first waited forever for MLflow's
    artifact-download pool (`leanfit predict runs:/ID/model` printed its table and hung).

    A stop meanwhile (a second Ctrl-C, as an interrupted search leaves) ends it at once: it
    raised KeyboardInterrupt in whichever exit handler ran, whose traceback came after the
    command's last line ("Exception ignored in atexit callback", torch's, 1 in 14 tries)."""
    import atexit
    import logging
    import os
    import signal
    import threading

    def leave(signum, frame) -> None:  # (what there was to write is written)
        os._exit(code or 128 + signum)

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, leave)
    threading._shutdown()  # what the interpreter runs at its exit, before the exit handlers
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):  # (None where it was closed: `>&-`, `2>&-`)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
