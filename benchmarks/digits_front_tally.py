"""Tally of every saved `digits_front.py` run against issue #3's two goals on digits.

The goals: at <= 1,000 parameters a pick whose test accuracy, averaged over 3 retrainings of 60
epochs with new seeds, is at least 97%; at <= 2,000 parameters, at least 98.5%. Each run's file
under `benchmarks/results/` holds its picks; this script reads them all, prints one line a run
and the counts (all runs, and by how the picks' final training was done), and saves them:

    python benchmarks/digits_front_tally.py   # saves benchmarks/results/digits_front-tally.json
    python benchmarks/digits_front_tally.py --since 11   # the current search's runs only

Beside the JSON, a plot (`digits_front-tally.png`): each run's two picks against their goals,
marked by how the final training was done, and a refit pick's figure before its refit.

Run 2 is `digits_front-cpu.json` (saved before runs were numbered). Runs 1-8 recorded each
pick's retrainings under `retrained`; run 1's 60-epoch figures are in a retraining file of their
own (`digits_front-retrain-digits_front-cpu-run1-test.json`). Files that are not a numbered run
(`-ehvi-only`, `-27epochs`, `-curve-stop`) are experiments beside the series and are left out.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

GOALS = {1000: 0.97, 2000: 0.985}
RESULTS = Path(__file__).resolve().parent / "results"
REFIT = "refit on train + val"  # a run whose picks were refit (they keep `without_refit`)
TRAIN_SPLIT, DISTILLED = "train split", "distilled"  # the other final trainings
VAL_IMAGES = 359  # digits' validation split (examples/digits.yaml)
BEST = "finalists: the best by validation"
SMALLEST = "finalists: the smallest within one validation image"


def run_files(folder: Path) -> dict[int, Path]:
    """Run number -> its file."""
    runs = {}
    for path in folder.glob("digits_front-cpu*.json"):
        if path.name == "digits_front-cpu.json":
            runs[2] = path
        elif m := re.fullmatch(r"digits_front-cpu-run(\d+)\.json", path.name):
            runs[int(m.group(1))] = path
    return dict(sorted(runs.items()))


def pick_accuracy(pick: dict, retrain: dict | None) -> float | None:
    """The pick's mean test accuracy after the final (60-epoch) training."""
    if pick.get("test_accuracy_mean") is not None:
        return pick["test_accuracy_mean"]
    sixty = pick.get("retrained", {}).get("60")
    if sixty:
        return sixty["test_accuracy_mean"]
    for other in (retrain or {}).get("picks", []):
        if other["max_params"] == pick["max_params"] and other["params"] == pick["params"]:
            return other["retrained"]["60"]["mean"]
    return None


def finalist_rules(pick: dict) -> dict[str, dict] | None:
    """Two rules for choosing among a pick's finalists, each scored by the chosen finalist's
    own retrainings on the training split (the same seeds for every finalist): the best by mean
    validation accuracy (the benchmark's and the pipeline's rule), and the smallest within one
    validation image of it (a one-standard-error rule: prefer fewer parameters where the
    validation split cannot tell them apart). None for runs that kept no finalists' figures."""
    finalists = [f for f in pick.get("finalists", []) if "val_accuracy_mean" in f]
    if not finalists:
        return None
    best = max(finalists, key=lambda f: f["val_accuracy_mean"])
    floor = best["val_accuracy_mean"] - 1 / VAL_IMAGES - 1e-12
    near = [f for f in finalists if f["val_accuracy_mean"] >= floor]
    smallest = min(near, key=lambda f: f["params"])
    return {
        rule: {"params": f["params"], "test_accuracy_mean": f["test_accuracy_mean"]}
        for rule, f in ((BEST, best), (SMALLEST, smallest))
    }


def final_training(run: dict) -> str:
    if run.get("teacher"):
        return DISTILLED
    if any("without_refit" in p for p in run.get("picks", [])):
        return REFIT
    return TRAIN_SPLIT


def tally(folder: Path, since: int = 1) -> dict:
    rows = []
    for number, path in run_files(folder).items():
        if number < since:
            continue
        run = json.loads(path.read_text())
        retrain_file = folder / f"digits_front-retrain-{path.stem}-test.json"
        retrain = json.loads(retrain_file.read_text()) if retrain_file.exists() else None
        row = {
            "run": number,
            "file": path.name,
            "date": run.get("date", "")[:10],
            "git_commit": run.get("git_commit", "")[:7],
            "final_training": final_training(run),
            "hypervolume": run.get("hypervolume"),
            "picks": {},
        }
        for pick in run.get("picks", []):
            accuracy = pick_accuracy(pick, retrain) if pick.get("found", True) else None
            goal = GOALS[pick["max_params"]]
            mine = row["picks"][str(pick["max_params"])] = {
                "params": pick.get("params"),
                "test_accuracy_mean": accuracy,
                "met": accuracy is not None and accuracy >= goal,
            }
            before = pick.get("without_refit", {}).get("test_accuracy_mean")
            if before is not None:  # the same pick trained on the training split alone
                mine["without_refit"] = {"test_accuracy_mean": before, "met": before >= goal}
            for rule, chosen in (finalist_rules(pick) or {}).items():
                mine[rule] = {**chosen, "met": chosen["test_accuracy_mean"] >= goal}
        rows.append(row)

    def counted(runs: list[dict], figure=lambda pick: pick) -> dict[str, dict[str, int]]:
        """Of `runs`, how many met each goal, by `figure` of the pick."""
        return {
            str(limit): {
                "met": sum(figure(r["picks"].get(str(limit), {})).get("met", False) for r in runs),
                "runs": len(runs),
            }
            for limit in GOALS
        }

    groups = ["all", *sorted({r["final_training"] for r in rows})]
    counts = {g: counted([r for r in rows if g in ("all", r["final_training"])]) for g in groups}
    # the refit runs' picks as they scored before their refit (the same seeds)
    refit = [r for r in rows if r["final_training"] == REFIT]
    if refit:
        counts["the refit picks before their refit"] = counted(
            refit, lambda pick: pick.get("without_refit", {})
        )
    # the runs that kept their finalists' figures, under either rule (the training split)
    ruled = [r for r in rows if any(BEST in p for p in r["picks"].values())]
    for rule in (BEST, SMALLEST) if ruled else ():
        counts[rule] = counted(ruled, lambda pick, rule=rule: pick.get(rule, {}))
    return {
        "benchmark": "digits_front-tally",
        "goals": GOALS,
        "since_run": since,
        "runs": rows,
        "counts": counts,
    }


def show(result: dict) -> str:
    lines = [
        f"{'run':>4}  {'date':10}  {'commit':7}  {'final training':20}"
        f"{'<= 1,000':>20}{'<= 2,000':>20}"
    ]
    for r in result["runs"]:
        cells = []
        for limit in GOALS:
            p = r["picks"].get(str(limit))
            if not p or p["test_accuracy_mean"] is None:
                cells.append(f"{'-':>20}")
                continue
            mark = "met" if p["met"] else "not met"
            cells.append(f"{p['params']:>6,} {p['test_accuracy_mean']:6.2%} {mark:>7}")
        lines.append(
            f"{r['run']:>4}  {r['date']:10}  {r['git_commit']:7}  {r['final_training']:20}"
            + "".join(cells)
        )
    lines.append("")
    for group, by in result["counts"].items():
        parts = [f"<= {int(k):,}: {v['met']} of {v['runs']}" for k, v in by.items()]
        lines.append(f"{group}: " + ", ".join(parts))
    return "\n".join(lines)


# How each kind of final training is drawn: marker and its label
MARKERS = {TRAIN_SPLIT: "o", REFIT: "D", DISTILLED: "s"}
COLOURS = {1000: "tab:blue", 2000: "tab:orange"}


def plot(result: dict, path: Path) -> None:
    """Each run's picks (retrained test accuracy, mean of 3) against the run number, one panel a
    goal with its line; hollow grey marks are the refit picks as they scored before their refit
    (the same seeds, the training split alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6.5), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(GOALS), 1, sharex=True)
    for ax, (limit, goal) in zip(axes, GOALS.items(), strict=True):
        # each run's pick at this limit, where it was found and scored
        picks = {
            r["run"]: (r["final_training"], p)
            for r in result["runs"]
            if (p := r["picks"].get(str(limit))) and p["test_accuracy_mean"] is not None
        }
        for kind, marker in MARKERS.items():
            mine = {run: p for run, (k, p) in picks.items() if k == kind}
            if mine:
                ax.scatter(list(mine), [100 * p["test_accuracy_mean"] for p in mine.values()],
                           marker=marker, color=COLOURS[limit], label=kind, zorder=3)  # fmt: skip
        before = {run: p["without_refit"] for run, (_, p) in picks.items() if "without_refit" in p}
        if before:
            ax.scatter(list(before), [100 * p["test_accuracy_mean"] for p in before.values()],
                       marker="D", facecolors="none", edgecolors="grey",
                       label="the refit pick before its refit", zorder=2)  # fmt: skip
        counted = result["counts"]["all"][str(limit)]
        ax.axhline(100 * goal, color="black", linewidth=1, linestyle="--")
        ax.set_title(
            f"<= {limit:,} parameters: goal {goal:.1%} test accuracy; met in {counted['met']} of "
            f"{counted['runs']} runs",
            loc="left",
            fontsize=10,
        )
        ax.set_ylabel("test accuracy, %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[-1].set_xlabel("run (benchmarks/results/digits_front-cpu-runN.json)")
    fig.suptitle("digits search: each run's picks after the final training (mean of 3 seeds)")
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the run files")
    parser.add_argument("--since", type=int, default=1, help="count runs from this number on")
    parser.add_argument(
        "--out", type=Path, help="where to save (default: RESULTS/digits_front-tally.json)"
    )
    args = parser.parse_args(argv)
    if args.out is not None and (args.out.is_dir() or args.out.suffix != ".json"):
        print(f"error: --out {args.out}: give the .json file to save to", file=sys.stderr)
        return 2
    if not args.results.is_dir():
        print(f"error: --results {args.results}: no such folder", file=sys.stderr)
        return 2
    result = tally(args.results, args.since)
    if not result["runs"]:
        print(
            f"error: --results {args.results}: no digits_front-cpu*.json run numbered "
            f"{args.since} or later in it; run benchmarks/digits_front.py first",
            file=sys.stderr,
        )
        return 2
    print(show(result))
    name = (
        "digits_front-tally.json"
        if args.since == 1
        else f"digits_front-tally-since{args.since}.json"
    )
    out = args.out or args.results / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    picture = out.with_suffix(".png")
    plot(result, picture)
    print(f"\nsaved {out} and {picture.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
