"""Does refitting on training + validation help digits' smallest models? Each pick of earlier
digits_front runs, trained on the training split and on training + validation with the same seeds,
scored on the test split.

The picks (<= 1,000 and <= 2,000 parameters) of `benchmarks/results/digits_front-cpu-runN.json`
for the runs given are retrained at the final length (`pipeline.final_epochs`) twice per seed: on
the training split, as the pipeline's final training does, and on the training and validation
splits together (a third more images: the refit that follows model selection in auto-sklearn's
`refit` or AutoGluon's `refit_full`). Both are scored on the test split, which neither trains on.
`--split 0` is the benchmark's own split (the picks were chosen on its validation images; the
refit then trains on them, as a pipeline would); `--split 1` draws the splits anew. Each pair
differs only by the validation images added: the same seed, schedule and epochs (so the refit
also takes a third more steps).

    python benchmarks/refit_paired.py --runs 17-28 --split 0        # about 30 min, 2 cores
    python benchmarks/refit_paired.py --runs 27 --seeds 1 --epochs 2 --out /tmp/x   # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_front_tally import GOALS  # noqa: E402
from distill_paired import (  # noqa: E402
    experiment_for,
    paired_arguments,
    paired_summary,
    picks_of,
    run_numbers,
    run_pairs,
    save_paired,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def both_data(experiment):
    """The training split, and the training + validation splits as the pipeline's refit takes
    them, each with the test split held out."""
    from leanfit.data.sources import load_dataset
    from leanfit.steps import refit_train_data
    from leanfit.train.trainer import TrainData
    from leanfit.train.trial import data_plan

    dataset = load_dataset(experiment)
    plan = data_plan(experiment, dataset)
    test_x, test_y = dataset.images[plan.splits.test], dataset.labels[plan.splits.test]
    both = refit_train_data(dataset, plan)
    train_x, train_y = dataset.images[plan.splits.train], dataset.labels[plan.splits.train]
    return {
        arm: TrainData(x, y, test_x, test_y, dataset.num_classes)
        for arm, x, y in (("plain", train_x, train_y), ("refit", both.train_x, both.train_y))
    }


def pair(job: dict) -> dict:
    """One pick, trained on each arm's data once per seed (a worker process, one thread)."""
    import torch
    from digits_front import retrain

    torch.set_num_threads(1)
    experiment = experiment_for(Path(job["experiment"]), job["split"])
    data = both_data(experiment)
    row = {k: job[k] for k in ("run", "max_params", "params")}
    for arm in ("plain", "refit"):
        row[arm] = retrain(experiment, job["config"], data[arm], job["epochs"], job["seeds"])
    row["difference"] = statistics.mean(row["refit"]) - statistics.mean(row["plain"])
    return row


def goals_met(rows: list[dict], keys: dict[str, str]) -> dict[str, dict]:
    """For each parameter limit with picks: how many picks met its goal on average over their
    seeds in each arm (`keys`: an arm's key in a row, and the key its count is saved under),
    and the mean difference of the pairs in points."""
    out = {}
    for limit, goal in GOALS.items():
        mine = [r for r in rows if r["max_params"] == limit]
        if mine:
            out[str(limit)] = {
                "picks": len(mine),
                "mean_difference_points": 100 * statistics.mean(r["difference"] for r in mine),
                "goal": goal,
                **{key: sum(statistics.mean(r[arm]) >= goal for r in mine)
                   for arm, key in keys.items()},
            }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    paired_arguments(parser, runs="17-28", split=0)
    args = parser.parse_args(argv)

    experiment = experiment_for(args.experiment, args.split)
    epochs = args.epochs or experiment.pipeline.final_epochs or experiment.budget.max_epochs
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    jobs = picks_of(run_numbers(args.runs), parser)
    common = {"experiment": str(args.experiment), "split": args.split, "epochs": epochs,
              "seeds": seeds}  # fmt: skip
    arms = {"plain": "on train", "refit": "on train + val"}
    rows = run_pairs(pair, jobs, common, args.workers, arms)

    summary = {
        **paired_summary(rows),
        "by_limit": goals_met(rows, {"plain": "met_on_train", "refit": "met_refit"}),
    }
    print(
        f"{summary['pairs']} picks: refit - train only {summary['mean_difference_points']:+.2f} "
        f"points on average; better {summary['better']}, worse {summary['worse']}, "
        f"same {summary['same']}"
    )
    for limit, s in summary["by_limit"].items():
        print(
            f"  <= {int(limit):,}: {s['mean_difference_points']:+.2f} points; goal "
            f"{100 * s['goal']:.1f}% met by {s['met_on_train']} of {s['picks']} trained on train, "
            f"{s['met_refit']} refit"
        )
    return save_paired("refit_paired", args, experiment, epochs, seeds, summary, rows)


if __name__ == "__main__":
    main()
