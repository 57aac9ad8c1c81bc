"""Does distillation help digits' smallest models? Each pick of earlier digits_front runs,
trained with and without a teacher on the same seeds, scored on images the search never chose on.

The picks (<= 1,000 and <= 2,000 parameters) of `benchmarks/results/digits_front-cpu-runN.json`
for the runs given are retrained at the final length (`pipeline.final_epochs`) twice per seed:
plainly, and taught (`pipeline.distill`'s loss, `--alpha`, `--temperature`) by a teacher: the
genotype of `--teacher` (default `examples/reference_genotype.yaml`), trained once at the same
length with its own seed. The data is split anew (`dataset.seed + --split`), so the test images
are ones the search's validation split never chose a pick on; with `--split 0` they are the
benchmark's own test split. Each pair differs only by the teacher: the same seed, data, schedule.

    python benchmarks/distill_paired.py --runs 17-27 --split 1            # about 50 min, 2 cores
    python benchmarks/distill_paired.py --runs 27 --seeds 1 --epochs 2 --out /tmp/x   # smoke run

`--workers N` trains N picks at a time, one thread each (the picks are small: one thread each
trains them faster than two on one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_throughput import provenance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def experiment_for(path: Path, split: int):
    from leanfit.config import load_experiment

    experiment = load_experiment(path)
    ds = experiment.dataset
    return experiment.model_copy(
        update={"dataset": ds.model_copy(update={"seed": ds.seed + split})}
    )


def scored_data(experiment):
    """Training split to train on, the test split to score on."""
    from leanfit.data.sources import load_dataset
    from leanfit.train.trial import train_data

    dataset = load_dataset(experiment)
    return dataset, train_data(experiment, dataset, for_search=False, evaluate_on="test")


def pair(job: dict) -> dict:
    """One pick, trained plainly and taught, once per seed (a worker process, one thread)."""
    import torch
    from digits_front import retrain

    from leanfit.models.deploy import load_classifier
    from leanfit.train.trainer import Distill

    torch.set_num_threads(1)
    experiment = experiment_for(Path(job["experiment"]), job["split"])
    dataset, data = scored_data(experiment)
    teacher = load_classifier(job["teacher"], dataset.channels, dataset.num_classes)
    taught = Distill(teacher, job["alpha"], job["temperature"])
    row = {k: job[k] for k in ("run", "max_params", "params")}
    for arm, distill in (("plain", None), ("taught", taught)):
        row[arm] = retrain(experiment, job["config"], data, job["epochs"], job["seeds"], distill)
    row["difference"] = statistics.mean(row["taught"]) - statistics.mean(row["plain"])
    return row


def run_numbers(text: str) -> list[int]:
    """'17-27' or '9,12,20-22' as run numbers."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def picks_of(runs: list[int], parser: argparse.ArgumentParser) -> list[dict]:
    """The picks found by the digits_front runs saved under benchmarks/results."""
    jobs = []
    for run in runs:
        path = RESULTS / f"digits_front-cpu-run{run}.json"
        if not path.is_file():
            parser.error(f"--runs: no {path.relative_to(ROOT)}; the runs saved are under {RESULTS}")
        for pick in json.loads(path.read_text())["picks"]:
            if pick.get("found"):
                jobs.append(
                    {"run": run, "max_params": pick["max_params"], "params": pick["params"],
                     "config": pick["config"]}
                )  # fmt: skip
    return jobs


def paired_arguments(parser: argparse.ArgumentParser, runs: str, split: int) -> None:
    """The options of a paired comparison on earlier runs' picks (this one's, refit_paired's)."""
    parser.add_argument("--runs", default=runs, help=f"digits_front run numbers, e.g. {runs}")
    parser.add_argument("--split", type=int, default=split, help="added to dataset.seed")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=None, help="default: pipeline.final_epochs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--experiment", type=Path, default=ROOT / "examples" / "digits.yaml")
    parser.add_argument("--out", type=Path, default=None)


def run_pairs(pair, jobs: list[dict], common: dict, workers: int, arms: dict) -> list[dict]:
    """`pair` of each job in `workers` processes, each row printed as it comes (`arms`: each
    arm's key in a row, and its words in the line)."""
    (a, said_a), (b, said_b) = arms.items()
    rows = []
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for row in pool.map(pair, [{**common, **job} for job in jobs]):
            rows.append(row)
            print(
                f"run {row['run']} <= {row['max_params']:,}: {row['params']:,} params, test acc "
                f"{statistics.mean(row[a]):.4f} {said_a}, {statistics.mean(row[b]):.4f} {said_b}"
                f" ({100 * row['difference']:+.2f} points)",
                flush=True,
            )
    return rows


def paired_summary(rows: list[dict]) -> dict:
    """How many pairs, their mean difference in points, and how many went each way."""
    differences = [r["difference"] for r in rows]
    return {
        "pairs": len(rows),
        "mean_difference_points": 100 * statistics.mean(differences) if rows else None,
        "better": sum(d > 0 for d in differences),
        "worse": sum(d < 0 for d in differences),
        "same": sum(d == 0 for d in differences),
    }


def save_paired(name: str, args, experiment, epochs: int, seeds, summary, rows, **more) -> dict:
    """A paired comparison's figures, as `<name>-split<N>.json` in `--out` (or the results)."""
    result = {
        **provenance(name),
        "runs": args.runs,
        "split": args.split,
        "dataset_seed": experiment.dataset.seed,
        "epochs": epochs,
        "seeds": seeds,
        **more,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "summary": summary,
        "rows": rows,
    }
    out = args.out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-split{args.split}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"saved {path}")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    paired_arguments(parser, runs="17-27", split=1)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument(
        "--teacher", type=Path, default=ROOT / "examples" / "reference_genotype.yaml"
    )
    parser.add_argument("--teacher-seed", type=int, default=7)
    args = parser.parse_args(argv)

    import torch

    from leanfit.space.architecture import flatten_genotype
    from leanfit.train.trainer import Budget, train

    experiment = experiment_for(args.experiment, args.split)
    epochs = args.epochs or experiment.pipeline.final_epochs or experiment.budget.max_epochs
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    jobs = picks_of(run_numbers(args.runs), parser)

    torch.set_num_threads(1)
    arch = experiment.space.architecture
    raw = yaml.safe_load(args.teacher.read_text())
    config = experiment.search_space().validate(
        flatten_genotype(raw, arch.blocks, tuple(arch.modules))
    )
    dataset, data = scored_data(experiment)
    work = Path(tempfile.mkdtemp(prefix="leanfit-distill-"))
    teacher_path = work / "teacher.pt"
    t = train(
        config,
        experiment.hyperparameters(config),
        data,
        Budget(epochs),
        experiment.training,
        seed=args.teacher_seed,
        checkpoint_to=teacher_path,
    )
    if t.status != "ok":
        sys.exit(f"the teacher failed: {t.reason}")
    print(f"teacher: {t.params:,} params, {epochs} epochs, test acc {t.val_accuracy:.4f}")
    common = {
        "experiment": str(args.experiment), "split": args.split, "teacher": str(teacher_path),
        "alpha": args.alpha, "temperature": args.temperature, "epochs": epochs, "seeds": seeds,
    }  # fmt: skip
    rows = run_pairs(pair, jobs, common, args.workers, {"plain": "plain", "taught": "taught"})
    summary = {
        **paired_summary(rows),
        "plain_mean": statistics.mean(a for r in rows for a in r["plain"]) if rows else None,
        "taught_mean": statistics.mean(a for r in rows for a in r["taught"]) if rows else None,
    }
    print(
        f"{summary['pairs']} picks: taught - plain {summary['mean_difference_points']:+.2f} points "
        f"on average; better {summary['better']}, worse {summary['worse']}, "
        f"same {summary['same']}"
    )
    return save_paired(
        "distill_paired", args, experiment, epochs, seeds, summary, rows,
        alpha=args.alpha, temperature=args.temperature,
        teacher={"genotype": str(args.teacher), "params": t.params,
                 "test_accuracy": t.val_accuracy, "seed": args.teacher_seed},
    )  # fmt: skip


if __name__ == "__main__":
    main()
