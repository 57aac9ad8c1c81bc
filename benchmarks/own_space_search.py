"""A space and model family of one's own (`leanfit.optimize(space=..., size=...)`): leanfit's
search against random search at full fidelity, side by side, at equal wall time.

The problem is `examples/own_space.py`'s: a plain PyTorch MLP on scikit-learn's 8x8 digits, none
of it leanfit's (width 4-128, 1-3 layers, dropout, learning rate, SGD with momentum or Adam),
its size counted by the example's `size`. Per seed, each method runs `leanfit.optimize` for
`--wall` seconds with `--workers` local workers, in a folder and MLflow database of its own:

- leanfit: the defaults (scikit-optimize with ParEGO and EHVI proposals, ASHA from 1 to 27
  epochs with reduction factor 3);
- random: `strategy.name: random`, `scheduler.name: none`: every configuration trained to the
  full 27 epochs, one after another on each worker (the one-config-at-a-time baseline).

Each finished job's result (its validation accuracy at its epochs, its parameter count) is read
back from MLflow with its end time, counted from the call to `leanfit.optimize` (worker start-up
included). Printed and saved: the hypervolume of all results finished by 25%, 50% and 100% of the
wall time, and of all of them (the search's own clock starts once its workers are up), over
(log10 parameters, validation error) in the range the search itself measures this space by
(`OwnSpace.size_range`), and the time each method first has a model of at least
`--target-accuracy` validation accuracy within `--target-params` parameters; the per-seed ratios.
Which method goes first alternates by seed.

    python benchmarks/own_space_search.py --seeds 0,1,2 --wall 60
    python benchmarks/own_space_search.py --seeds 0 --wall 60 --trials 6   # smoke run

`--trials N` also ends each method's search after N trials (smoke runs): a wall time alone too
short for a loaded machine ended with no finished job (the workers were still starting).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "examples"))

import own_space  # noqa: E402  (examples/own_space.py)

import leanfit  # noqa: E402

MAX_EPOCHS = 27
METHODS = {
    "leanfit": {"budget": {"min_epochs": 1, "max_epochs": MAX_EPOCHS}},
    "random": {
        "budget": {"min_epochs": MAX_EPOCHS, "max_epochs": MAX_EPOCHS},
        "strategy": {"name": "random"},
        "scheduler": {"name": "none"},
    },
}


def objective(trial):
    """The example's objective, found by the workers through this script."""
    return own_space.objective(trial)


def settings(method: str, seed: int, wall: float, folder: Path, trials: int | None = None) -> dict:
    data = json.loads(json.dumps(METHODS[method]))
    data["name"] = f"own-{method}"
    data["budget"]["wall_time"] = wall
    if trials:
        data["budget"]["trials"] = trials
    data.setdefault("strategy", {})["seed"] = seed
    data["tracking"] = {"uri": f"sqlite:///{folder / 'mlflow.db'}"}
    data["work_dir"] = str(folder / ".leanfit")
    return data


def results(folder: Path, name: str, called: float) -> list[dict]:
    """Every finished job: seconds from the call to its end, its accuracy and size."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"leanfit-{name}")
    runs = client.search_runs(
        [exp.experiment_id], "tags.`leanfit.kind` = 'trial' and attributes.status = 'FINISHED'",
        max_results=50_000,
    )  # fmt: skip
    out = [
        {
            "t": r.info.end_time / 1000 - called,
            "val_accuracy": r.data.metrics["val_accuracy"],
            "params": int(r.data.metrics["params"]),
            "epochs": int(r.data.params.get("budget.epochs", 0)),
        }
        for r in runs
        if "val_accuracy" in r.data.metrics
    ]
    return sorted(out, key=lambda row: row["t"])


def hypervolume_by(rows: list[dict], t: float, size_range: tuple[float, float]) -> float:
    from leanfit.search.pareto import hypervolume

    low, high = size_range
    points = [
        [min(max(math.log10(max(1, r["params"])), low), high), 1 - r["val_accuracy"]]
        for r in rows
        if r["t"] <= t
    ]
    return float(hypervolume(np.array(points), [high, 1.0])) if points else 0.0


def one_run(method: str, seed: int, wall: float, workers: int, args) -> dict:
    """One search in a fresh process (each method's workers and imports start from nothing)."""
    with tempfile.TemporaryDirectory(prefix=f"own-{method}-{seed}-") as tmp:
        folder = Path(tmp)
        cmd = [
            sys.executable, __file__, "--_one", method, "--seeds", str(seed), "--wall", str(wall),
            "--workers", str(workers), "--_folder", str(folder),
        ]  # fmt: skip
        if args.trials:
            cmd += ["--trials", str(args.trials)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=wall * 3 + 300)
        if done.returncode != 0:
            raise RuntimeError(f"{method} seed {seed} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def search_once(
    method: str, seed: int, wall: float, workers: int, folder: Path, trials: int | None = None
) -> dict:
    from leanfit.config import experiment_from_dict
    from leanfit.objective import OwnSpace

    data = settings(method, seed, wall, folder, trials)
    called = time.time()
    result = leanfit.optimize(
        objective, data, space=own_space.SPACE, size=own_space.size, workers=workers,
        progress=False,
    )  # fmt: skip
    ended = time.time() - called
    exp = experiment_from_dict({"dataset": {"source": "digits"}, **data})
    size_range = OwnSpace(own_space.SPACE, own_space.size, exp.objectives).size_range()
    return {
        "method": method,
        "seed": seed,
        "seconds": ended,
        "trials": result.trials,
        "jobs": len(results(folder, data["name"], called)),
        "failed": result.failed,
        "front": [[m["params"], m["val_accuracy"], m["epochs"]] for m in result.front],
        "size_range": size_range,
        "rows": results(folder, data["name"], called),
    }


def first_time(rows: list[dict], accuracy: float, params: int) -> float | None:
    hit = [r["t"] for r in rows if r["val_accuracy"] >= accuracy and r["params"] <= params]
    return min(hit) if hit else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--wall", type=float, default=60.0, help="seconds a method")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--trials", type=int, default=None, help="also end each search after this many trials"
    )
    parser.add_argument("--target-accuracy", type=float, default=0.97)
    parser.add_argument("--target-params", type=int, default=1300)
    parser.add_argument("--out", type=Path, default=RESULTS / "own_space_search.json")
    parser.add_argument("--_one", help=argparse.SUPPRESS)
    parser.add_argument("--_folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: give seeds, e.g. 0,1,2")
    if not args.wall > 0 or args.workers < 1 or (args.trials is not None and args.trials < 1):
        parser.error("--wall, --workers and --trials: give numbers above 0")
    if args.out.is_dir() or args.out.suffix != ".json":  # (found after every search, before)
        parser.error(f"--out {args.out}: give the .json file to save to")
    if args._one:
        found = search_once(args._one, seeds[0], args.wall, args.workers, args._folder, args.trials)
        print(json.dumps(found))
        return

    runs = []
    for seed in seeds:
        order = list(METHODS) if seed % 2 == 0 else list(METHODS)[::-1]
        for method in order:
            run = one_run(method, seed, args.wall, args.workers, args)
            runs.append(run)
            print(f"seed {seed} {method:8s} {run['trials']:4d} trials {run['jobs']:4d} jobs "
                  f"in {run['seconds']:.1f} s", flush=True)  # fmt: skip
    fractions = (0.25, 0.5, 1.0)
    table = []
    for seed in seeds:
        row = {"seed": seed}
        for run in (r for r in runs if r["seed"] == seed):
            m = run["method"]
            for f in fractions:
                row[f"{m}_hv_{f:g}"] = hypervolume_by(
                    run["rows"], f * args.wall, tuple(run["size_range"])
                )
            # every result, the last ones finished after the wall time counted from the call
            # (the search's own clock starts once its workers are up)
            row[f"{m}_hv_end"] = hypervolume_by(run["rows"], math.inf, tuple(run["size_range"]))
            row[f"{m}_target_s"] = first_time(run["rows"], args.target_accuracy, args.target_params)
            row[f"{m}_trials"], row[f"{m}_jobs"] = run["trials"], run["jobs"]
        table.append(row)
    print()
    header = "seed  " + "  ".join(f"HV@{f:g} leanfit/random" for f in fractions)
    print(header + f"  time to >= {args.target_accuracy:.0%} at <= {args.target_params:,}")
    for row in table:
        hv = "  ".join(
            f"{row[f'leanfit_hv_{f:g}']:.3f}/{row[f'random_hv_{f:g}']:.3f}".ljust(21)
            for f in fractions
        )
        times = [row["leanfit_target_s"], row["random_target_s"]]
        shown = " / ".join("-" if t is None else f"{t:.1f} s" for t in times)
        print(f"{row['seed']:4d}  {hv}  {shown}")
    ratios = {
        f: [r[f"leanfit_hv_{f:g}"] / r[f"random_hv_{f:g}"] for r in table if r[f"random_hv_{f:g}"]]
        for f in fractions
    }
    summary = {
        f"hv_ratio_median_{f:g}": statistics.median(v) if v else None for f, v in ratios.items()
    }
    summary["leanfit_larger_hv_seeds_at_end"] = sum(
        r["leanfit_hv_end"] > r["random_hv_end"] for r in table
    )
    print("median HV ratio leanfit/random: " + ", ".join(
        f"{f:g} of the time {summary[f'hv_ratio_median_{f:g}']:.3f}" for f in fractions
        if summary[f"hv_ratio_median_{f:g}"] is not None
    ))  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    saved = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "commit": commit,
        "cores": os.cpu_count(),
        "load_average_after": list(os.getloadavg()),
        "wall": args.wall,
        "workers": args.workers,
        "trials": args.trials,
        "target": {"accuracy": args.target_accuracy, "params": args.target_params},
        "table": table,
        "summary": summary,
        "runs": runs,
    }
    args.out.write_text(json.dumps(saved, indent=1))
    print(f"saved {args.out}")


if __name__ == "__main__":
    from leanfit.stopping import run_script

    run_script(main, "nothing is saved (a run saves at its end)")
