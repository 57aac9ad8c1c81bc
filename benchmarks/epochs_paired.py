"""Would digits' smallest models gain from a longer final training? Each pick of earlier
digits_front runs, refit at the final length and at a longer one with the same seeds, scored on
the test split.

The picks (<= 1,000 and <= 2,000 parameters) of `benchmarks/results/digits_front-cpu-runN.json`
for the runs given are trained as the pipeline's refit trains the model it registers (on the
training and validation splits together, `pipeline.refit`), once at `pipeline.final_epochs` and
once at `--longer` epochs, per seed. Each pair differs only by its length: the same seed, data
and one-cycle schedule stretched over the epochs. Decide with `--split 1` (the splits drawn
anew, so the test images are not those the digits_front runs are judged on); `--split 0` is
the benchmark's own split.

    python benchmarks/epochs_paired.py --runs 29-36 --split 1 --longer 120     # about 40 min
    python benchmarks/epochs_paired.py --runs 36 --seeds 1 --epochs 2 --longer 3 --out /tmp/x
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_paired import (  # noqa: E402
    experiment_for,
    paired_arguments,
    paired_summary,
    picks_of,
    run_numbers,
    run_pairs,
    save_paired,
)
from refit_paired import both_data, goals_met  # noqa: E402


def pair(job: dict) -> dict:
    """One pick, refit at each length once per seed (a worker process, one thread)."""
    import torch
    from digits_front import retrain

    torch.set_num_threads(1)
    experiment = experiment_for(Path(job["experiment"]), job["split"])
    data = both_data(experiment)["refit"]
    row = {k: job[k] for k in ("run", "max_params", "params")}
    for arm, epochs in (("final", job["epochs"]), ("longer", job["longer"])):
        row[arm] = retrain(experiment, job["config"], data, epochs, job["seeds"])
    row["difference"] = statistics.mean(row["longer"]) - statistics.mean(row["final"])
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    paired_arguments(parser, runs="29-36", split=1)
    parser.add_argument("--longer", type=int, default=120, help="the longer arm's epochs")
    args = parser.parse_args(argv)
    if args.longer < 1 or args.seeds < 1:
        parser.error("--longer and --seeds: give 1 or more")

    experiment = experiment_for(args.experiment, args.split)
    epochs = args.epochs or experiment.pipeline.final_epochs or experiment.budget.max_epochs
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    jobs = picks_of(run_numbers(args.runs), parser)
    common = {"experiment": str(args.experiment), "split": args.split, "epochs": epochs,
              "longer": args.longer, "seeds": seeds}  # fmt: skip
    arms = {"final": f"at {epochs} epochs", "longer": f"at {args.longer}"}
    rows = run_pairs(pair, jobs, common, args.workers, arms)
    by_limit = goals_met(rows, {"final": "met_final", "longer": "met_longer"})
    summary = {**paired_summary(rows), "by_limit": by_limit}
    print(
        f"{summary['pairs']} picks: {args.longer} - {epochs} epochs "
        f"{summary['mean_difference_points']:+.2f} points on average; better "
        f"{summary['better']}, worse {summary['worse']}, same {summary['same']}"
    )
    for limit, s in summary["by_limit"].items():
        print(
            f"  <= {int(limit):,}: {s['mean_difference_points']:+.2f} points; goal "
            f"{100 * s['goal']:.1f}% met by {s['met_final']} of {s['picks']} at {epochs} epochs, "
            f"{s['met_longer']} at {args.longer}"
        )
    return save_paired(
        "epochs_paired", args, experiment, epochs, seeds, summary, rows, longer=args.longer
    )


if __name__ == "__main__":
    main()
