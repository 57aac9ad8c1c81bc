"""Warm start on changed data: time to the previous front's small-end hypervolume, warm vs cold.

Issue #5. The scenario a user meets: a search ran on a dataset; the dataset then grew by 30%; the
same experiment file is searched again. `run_search` warm-starts from the finished search (same
settings, other data digest): the earlier results are told to the strategy and the earlier front
is re-checked first. How much sooner does it get back to where the earlier search was?

The data: scikit-learn's digits (as `dataset.source: digits` decodes them: uint8, 16x16, one
channel) written as PNG files into one image folder (`source: imagefolder`, decoded to the very same
tensors). The "old" data is a stratified 1/1.3 of the images (about 77%); the "new" data is all of
them, so it has 30% more. The folder keeps one path and its content changes, as a user's would:
the experiment's settings (and so its settings key) are the same, only the data digest changes.

Per seed (`strategy.seed`; everything else is examples/digits.yaml: its space, its ASHA rungs of
2, 6 and 10 epochs, its 20k hard budget, `--workers` local workers):

1. A search on the old data for `--old-minutes`.
2. The target: the old search's front, restricted to the small end (<= 2,000 parameters), is
   re-measured on the new data: each configuration is trained again through the same rungs the
   search took it through (same specs, same training seeds, the new data's search split) and the
   hypervolume of the re-measured points is taken over log10 params in [2, 3.3] and validation
   error, reference point (3.3, 1.0). The small end is where the search's work shows: large
   models on digits are near 99% whatever the search does.
3. On the new data, a warm search and a cold search, back to back (which goes first alternates by
   seed), each with `--cap-minutes` of wall time and its own copy of the old search's tracking
   database: the warm one as it is (`strategy.warm_start: true`, the default), the cold one with
   `strategy.warm_start: false` (the only difference). Each search's results are sampled every
   ~0.5 s through `run_search(on_progress=...)`; its time to target is the first time the
   small-end hypervolume of its trials (each at its highest rung, as the search's own front
   counts them) reaches the target, counted from the call to `run_search` (data loading, MLflow,
   the warm start's reading of the old records and worker start-up included). A search stops as
   soon as it reaches the target (the figure is then known; `--run-to-cap` runs it to the cap).

The cold search is what running the same experiment file again without a warm start gives: the
same `strategy.seed` (the seed is one of the settings a warm start matches on), so its initial
design repeats the old search's first configurations, now trained on the new data.

A search that does not reach the target within the cap is censored: its time is "> its duration",
and the cold/warm ratio of that seed is a bound (">= cap/warm" when only the warm one reached it).
The median ratio is given as an interval: the median of the per-seed lower bounds and the median of
the per-seed upper bounds (equal when every seed has an exact ratio). Goal: >= 3x.

    python benchmarks/warm_start.py --seeds 3 --old-minutes 3 --cap-minutes 4
    python benchmarks/warm_start.py --seeds 1 --old-minutes 0.25 --cap-minutes 0.25 --out /tmp/x
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from leanfit.config import Experiment, experiment_from_dict, load_experiment
from leanfit.data.splits import stratified_subset
from leanfit.search.controller import SearchController, Trial
from leanfit.search.pareto import hypervolume
from leanfit.search.run import run_search

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_throughput import cpu_model, provenance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
GROWTH = 1.3  # the new data has 30% more images than the old
SMALL_MAX_PARAMS = 2_000
SMALL_LOG10_RANGE = (2.0, 3.3)
SMALL_REFERENCE = (3.3, 1.0)
GOAL = 3.0


class TargetReached(Exception):
    """Raised from the progress callback to end a search once its figure is known."""


# -- figures ---------------------------------------------------------------------------------


def small_end_hypervolume(points: list[tuple[int, float]]) -> float:
    """Hypervolume of (params, val accuracy) points over log10 params in [2, 3.3] x error,
    reference (3.3, 1.0); points over 2,000 parameters are left out."""
    low, high = SMALL_LOG10_RANGE
    rows = [
        [min(max(math.log10(max(1, p)), low), high), 1.0 - acc]
        for p, acc in points
        if p <= SMALL_MAX_PARAMS
    ]
    return hypervolume(rows, SMALL_REFERENCE) if rows else 0.0


def trial_points(trials: list[Trial]) -> list[tuple[int, float]]:
    """Each trial with a result at its highest rung (as the search's own front counts it)."""
    return [(t.params, t.val_accuracy) for t in trials if t.results]


class Watch:
    """The progress callback: when each result was first seen, and when the target was hit."""

    def __init__(self, target: float, stop: bool):
        self.target = target
        self.stop = stop
        self.t0 = time.monotonic()
        self.seen: set[tuple[int, int]] = set()
        self.events: list[dict[str, Any]] = []
        self.hit: float | None = None
        self.hit_event: dict[str, Any] | None = None
        self.controller: SearchController | None = None

    def start(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, c: SearchController) -> None:
        self.controller = c
        now = time.monotonic() - self.t0
        for t in c.trials.values():
            for rung, metrics in t.results.items():
                if (t.trial_id, rung) not in self.seen:
                    self.seen.add((t.trial_id, rung))
                    self.events.append(
                        {
                            "seconds": round(now, 2),
                            "trial": t.trial_id,
                            "rung": rung,
                            "params": t.params,
                            "val_accuracy": float(metrics["val_accuracy"]),
                        }
                    )
        if self.hit is None:
            done = [t for t in c.trials.values() if t.results]
            if done and small_end_hypervolume(trial_points(done)) >= self.target:
                self.hit = now
                self.hit_event = self._decisive_event(done)
                if self.stop:
                    raise TargetReached

    def _decisive_event(self, done: list[Trial]) -> dict[str, Any] | None:
        """The latest result without whose trial the target would not be reached."""
        for event in reversed(self.events):
            others = [t for t in done if t.trial_id != event["trial"]]
            if small_end_hypervolume(trial_points(others)) < self.target:
                return event
        return None


# -- the data --------------------------------------------------------------------------------


def digits_images() -> dict[str, tuple[np.ndarray, int]]:
    """The digits as `source: digits` decodes them (uint8 16x16), by file name in an image folder
    (class folder / index)."""
    from leanfit.data.sources import _load_digits

    digits = _load_digits(16, 1)
    return {
        f"{int(label)}/{i:04d}.png": (image[0].numpy(), int(label))
        for i, (image, label) in enumerate(zip(digits.images, digits.labels, strict=True))
    }


def set_folder(folder: Path, images: dict[str, tuple[np.ndarray, int]], names: list[str]) -> None:
    """Make the image folder hold exactly `names` as PNG files: the data changes in place."""
    from PIL import Image

    wanted = set(names)
    for path in list(folder.rglob("*.png")):
        if path.relative_to(folder).as_posix() not in wanted:
            path.unlink()
    for rel in names:
        target = folder / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[rel][0]).save(target)


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of an SQLite tracking store."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def experiment_for(
    base: Experiment, folder: Path, work: Path, db: Path, seed: int, warm: bool = True
) -> Experiment:
    data = base.model_dump(mode="json", exclude={"base_dir"})
    data["dataset"].update(source="imagefolder", path=str(folder), channels=1)
    data["work_dir"] = str(work / ".leanfit")
    data["tracking"] = {**data["tracking"], "uri": f"sqlite:///{db}"}
    data["strategy"].update(seed=seed, warm_start=warm)
    return experiment_from_dict(data, base.base_dir)


# -- one seed --------------------------------------------------------------------------------


def remeasure(
    old: SearchController, trials: list[Trial], new_exp: Experiment, work: Path, workers: int
) -> list[dict[str, Any]]:
    """Train each trial again on the new data through the rungs it reached in the old search,
    with the specs (epochs, schedule, data fraction, resolution, seed) the old search gave it."""
    import torch

    from leanfit.data.sources import load_dataset
    from leanfit.train.trial import run_trial, train_data

    # as the search's workers train: cpu_count // workers threads (2 threads on 2 busy cores
    # can be far slower than 1)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    data = train_data(new_exp, load_dataset(new_exp), for_search=True)
    out = []
    for trial in trials:
        resume, result = None, None
        for rung in old.scheduler.rungs[: trial.top_rung + 1]:
            spec = old._job(trial, rung, resume).spec  # the very spec the search ran
            ckpt = work / f"remeasure-{trial.trial_id}-{rung.index}.pt"
            spec = spec.model_copy(update={"checkpoint_to": str(ckpt)})
            result = run_trial(new_exp, spec, data)
            if result.status != "ok":
                break
            resume = result.checkpoint
        ok = result is not None and result.status == "ok" and result.history
        out.append(
            {
                "trial": trial.trial_id,
                "params": trial.params,
                "epochs": old.scheduler.rungs[trial.top_rung].epochs,
                "old_val_accuracy": trial.val_accuracy,
                "new_val_accuracy": float(result.history[-1]["val_accuracy"]) if ok else 0.0,
            }
        )
    return out


def timed_search(
    exp: Experiment, wall: float, workers: int, target: float, stop: bool
) -> tuple[Watch, dict]:
    """One search on the new data, watched; its figures."""
    from leanfit.track import TrialLogger

    watch = Watch(target, stop)
    load_before = os.getloadavg()[0]
    watch.start()
    try:
        outcome = run_search(exp, workers=workers, wall_time=wall, on_progress=watch)
        controller = outcome.controller
    except TargetReached:
        controller = watch.controller
    duration = time.monotonic() - watch.t0
    assert controller is not None
    log = controller.events.log  # the MLflow search run (MlflowEvents)
    client = TrialLogger(exp.tracking_uri(), exp.experiment_name()).client
    run = client.get_run(log.run_id)
    done = [t for t in controller.trials.values() if t.results]
    rechecked = int(run.data.metrics.get("warm_start_rechecked", 0))
    decisive = watch.hit_event
    return watch, {
        "time_to_target": watch.hit,
        "reached": watch.hit is not None,
        "seconds": duration,
        "stopped_at_target": watch.hit is not None and stop,
        "warm_started_from": run.data.tags.get("leanfit.warm_start_from"),
        "prior_results_told": len(controller.prior),
        "rechecked": rechecked,
        # the result that completed the target; the first `rechecked` trials are the rechecks
        "target_completed_by": decisive,
        "target_completed_by_recheck": decisive is not None and decisive["trial"] < rechecked,
        "trials": len(controller.trials),
        "jobs_done": controller.stats.jobs_done,
        "first_result_seconds": watch.events[0]["seconds"] if watch.events else None,
        "small_end_hypervolume": small_end_hypervolume(trial_points(done)),
        "hypervolume": controller.hypervolume(),
        "load_average_at_start": load_before,
        "events": watch.events,
    }


def run_seed(seed: int, args, base: Experiment, work: Path, folder: Path, images, names):
    old_names, all_names = names
    from leanfit.data.sources import load_dataset

    here = work / f"seed-{seed}"
    here.mkdir(parents=True, exist_ok=True)
    old_db = here / "old.db"
    set_folder(folder, images, old_names)
    old_exp = experiment_for(base, folder, work, old_db, seed)
    # decoded and cached before any clock starts (a user's data is cached too)
    old_digest = load_dataset(old_exp).digest
    started = time.monotonic()
    old = run_search(old_exp, workers=args.workers, wall_time=args.old_minutes * 60).controller
    old_seconds = time.monotonic() - started
    front = [t for t in old.front() if t.params <= SMALL_MAX_PARAMS]
    old_row = {
        "seconds": old_seconds,
        "trials": len(old.trials),
        "jobs_done": old.stats.jobs_done,
        "small_end_hypervolume_old_data": small_end_hypervolume(trial_points(front)),
        "small_end_front_size": len(front),
        "hypervolume": old.hypervolume(),
    }

    set_folder(folder, images, all_names)
    new_exp = experiment_for(base, folder, work, old_db, seed)
    new_dataset = load_dataset(new_exp)
    points = remeasure(old, front, new_exp, here, args.workers)
    target = small_end_hypervolume([(p["params"], p["new_val_accuracy"]) for p in points])
    row: dict[str, Any] = {
        "seed": seed,
        "old": old_row,
        "digests": {"old": old_digest, "new": new_dataset.digest},
        "target": {"small_end_hypervolume": target, "front": points},
    }
    print(
        f"seed {seed}: old search {len(old.trials)} trials, small-end front {len(front)} models, "
        f"HV {old_row['small_end_hypervolume_old_data']:.4f} on old data, "
        f"{target:.4f} re-measured on new data (target)",
        flush=True,
    )
    if target <= 0:
        row["skipped"] = "the old search has no model of <= 2,000 parameters with a result"
        return row
    order = ("warm", "cold") if seed % 2 == 0 else ("cold", "warm")
    for kind in order:
        db = here / f"{kind}.db"
        copy_database(old_db, db)
        exp = experiment_for(base, folder, work, db, seed, warm=kind == "warm")
        _, figures = timed_search(
            exp, args.cap_minutes * 60, args.workers, target, stop=not args.run_to_cap
        )
        row[kind] = figures
        ttt = figures["time_to_target"]
        hit = "target not reached" if ttt is None else f"target at {ttt:.0f} s"
        print(
            f"  {kind}: {hit}"
            f" ({figures['trials']} trials, ran {figures['seconds']:.0f} s, small-end HV "
            f"{figures['small_end_hypervolume']:.4f}, told {figures['prior_results_told']}, "
            f"rechecked {figures['rechecked']})",
            flush=True,
        )
    row["order"] = list(order)
    row["ratio"] = ratio_of(row["warm"], row["cold"])
    return row


# -- summary -----------------------------------------------------------------------------------


def ratio_of(warm: dict, cold: dict) -> dict[str, Any]:
    """cold/warm time to target, or a bound when a search was censored at its duration."""
    tw, tc = warm["time_to_target"], cold["time_to_target"]
    if tw is not None and tc is not None:
        return {"value": tc / tw, "bound": "exact", "low": tc / tw, "high": tc / tw}
    if tw is not None:  # cold did not reach it in its whole run: cold/warm > its duration / tw
        low = cold["seconds"] / tw
        return {"value": low, "bound": "at least", "low": low, "high": math.inf}
    if tc is not None:
        high = tc / warm["seconds"]
        return {"value": high, "bound": "at most", "low": 0.0, "high": high}
    return {"value": None, "bound": "neither reached", "low": 0.0, "high": math.inf}


def summarise(rows: list[dict]) -> dict[str, Any]:
    rows = [r for r in rows if "ratio" in r]
    out: dict[str, Any] = {"seeds": [r["seed"] for r in rows]}
    for kind in ("warm", "cold"):
        times = [r[kind]["time_to_target"] for r in rows]
        censored = sorted(t if t is not None else math.inf for t in times)
        median = statistics.median(censored) if censored else None
        reached = [t for t in times if t is not None]
        out[kind] = {
            "median_time_to_target": None if median is None or math.isinf(median) else median,
            "median_censored": median is not None and math.isinf(median),
            "reached": len(reached),
            "runs": len(times),
            "min": min(reached, default=None),
            "max": max(reached, default=None),
        }
    if rows:
        low = statistics.median([r["ratio"]["low"] for r in rows])
        high = statistics.median([r["ratio"]["high"] for r in rows])
        exact = [r["ratio"]["value"] for r in rows if r["ratio"]["bound"] == "exact"]
        out["ratio_cold_over_warm"] = {
            "median_low": low,
            "median_high": None if math.isinf(high) else high,
            "min_exact": min(exact, default=None),
            "max_exact": max(exact, default=None),
            "per_seed": [r["ratio"] for r in rows],
        }
        out["goal"] = f">= {GOAL:g}x"
        out["goal_met"] = "yes" if low >= GOAL else ("no" if high < GOAL else "undecided")
    return out


def fmt_time(figures: dict) -> str:
    t = figures["time_to_target"]
    return f"{t:.0f}" if t is not None else f">{figures['seconds']:.0f}"


def fmt_ratio(ratio: dict) -> str:
    value, bound = ratio["value"], ratio["bound"]
    if value is None:
        return "-"
    return {"exact": "", "at least": ">=", "at most": "<="}[bound] + f"{value:.2f}"


def print_table(rows: list[dict], summary: dict, args) -> None:
    print(
        f"\nwarm vs cold on digits +30% images, time (s) to the old front's small-end HV "
        f"(<= {SMALL_MAX_PARAMS:,} params) re-measured on the new data; old search "
        f"{args.old_minutes:g} min, cap {args.cap_minutes:g} min, {args.workers} workers"
    )
    print(
        f"{'seed':>4}{'target HV':>11}{'warm s':>9}{'cold s':>9}{'cold/warm':>11}"
        f"{'warm trials':>13}{'cold trials':>13}{'hit by recheck':>16}"
    )
    for r in rows:
        if "ratio" not in r:
            print(f"{r['seed']:>4}{r['target']['small_end_hypervolume']:>11.4f}  {r['skipped']}")
            continue
        w, c = r["warm"], r["cold"]
        print(
            f"{r['seed']:>4}{r['target']['small_end_hypervolume']:>11.4f}{fmt_time(w):>9}"
            f"{fmt_time(c):>9}{fmt_ratio(r['ratio']):>11}{w['trials']:>13}{c['trials']:>13}"
            f"{str(w['target_completed_by_recheck']):>16}"
        )
    if "ratio_cold_over_warm" not in summary:
        return
    for kind in ("warm", "cold"):
        s = summary[kind]
        med = "> cap" if s["median_censored"] else f"{s['median_time_to_target']:.0f} s"
        print(f"{kind}: median time to target {med} ({s['reached']}/{s['runs']} reached)")
    ratio = summary["ratio_cold_over_warm"]
    high = "inf" if ratio["median_high"] is None else f"{ratio['median_high']:.2f}"
    print(
        f"cold/warm median: in [{ratio['median_low']:.2f}, {high}]; goal {summary['goal']}: "
        f"{summary['goal_met']}"
    )


# -- main ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "load_average_before": os.getloadavg(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--old-minutes", type=float, default=3.0, help="the old data's search")
    parser.add_argument("--cap-minutes", type=float, default=4.0, help="each new-data search")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--run-to-cap", action="store_true", help="do not stop a search at its target"
    )
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def save(out: Path, result: dict, quiet: bool = False) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "warm_start-cpu.json"
    path.write_text(json.dumps(_finite(result), indent=1))
    if not quiet:
        print(f"saved {path}")
    return path


def _finite(value: Any) -> Any:
    """Infinities (unbounded ratio bounds) as null: JSON has no infinity."""
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = args.out or RESULTS
    base = load_experiment(ROOT / "examples" / "digits.yaml")
    result: dict[str, Any] = {
        **provenance("warm_start"),
        "machine": machine(),
        "settings": {
            "seeds": args.seeds,
            "old_minutes": args.old_minutes,
            "cap_minutes": args.cap_minutes,
            "workers": args.workers,
            "stop_at_target": not args.run_to_cap,
            "experiment": "examples/digits.yaml (space, rungs 2/6/10 epochs, max_params 20k) on "
            "an image folder of the digits; strategy.seed = seed",
            "small_end": {
                "max_params": SMALL_MAX_PARAMS,
                "log10_params_range": SMALL_LOG10_RANGE,
                "reference": SMALL_REFERENCE,
            },
            "target": "the old search's front at <= 2,000 params, each configuration retrained "
            "on the new data through the rungs it reached (same specs and training seeds), "
            "its hypervolume in the small-end box",
            "time": "seconds from the call to run_search (data loading, MLflow, warm start, "
            "worker start-up included) to the first progress sample (every ~0.5-1 s) at which "
            "the search's small-end hypervolume >= the target",
            "cold": "strategy.warm_start: false on a copy of the same tracking database",
        },
        "finished": False,
    }
    work = Path(tempfile.mkdtemp(prefix="leanfit-warm-start-"))
    here = os.getcwd()
    os.chdir(work)  # MLflow's default artifact folder (./mlruns) lands in the scratch folder
    try:
        folder = work / "digits"
        images = digits_images()
        names = list(images)
        keep = stratified_subset(np.array([label for _, label in images.values()]), 1 / GROWTH, 0)
        old_names = [names[i] for i in keep]
        result["settings"]["data"] = {
            "old_images": len(old_names),
            "new_images": len(names),
            "growth": len(names) / len(old_names),
            "old": "a stratified subset of the digits (seed 0), the same for every seed",
        }
        rows: list[dict] = []
        for seed in range(args.seeds):
            rows.append(run_seed(seed, args, base, work, folder, images, (old_names, names)))
            result.update(rows=rows, summary=summarise(rows))
            save(out, result, quiet=True)
        summary = summarise(rows)
        print_table(rows, summary, args)
    finally:
        os.chdir(here)
        shutil.rmtree(work, ignore_errors=True)
    after = os.getloadavg()
    before = result["machine"]["load_average_before"]
    result["machine"]["load_average_after"] = after
    if before[0] >= 1.0:
        result["note"] = (
            f"the {os.cpu_count()}-core machine was shared with other work while this ran "
            f"(1-minute load average {before[0]:.1f} before it started, {after[0]:.1f} after; "
            "each search's load_average_at_start is recorded); warm and cold ran back to back"
        )
    result.update(rows=rows, summary=summary, finished=True)
    save(out, result)
    return result


if __name__ == "__main__":
    main()
