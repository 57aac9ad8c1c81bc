"""BatchNorm statistics at evaluation: the running averages, or recomputed from training images.

The trainer recomputes every BatchNorm's statistics from training images before an evaluation
when an epoch has few steps (`PRECISE_BN_*` in `leanfit/train/trainer.py`). On random
configurations of the digits space (examples/digits.yaml, at most `max_params` parameters), this
measures

1. what a low rung's validation accuracy says about a configuration: the Spearman correlation
   between the accuracy after `--low` epochs (a first rung: the learning rate annealed over them)
   and after `--high` epochs, judged each way, and how many of the top third at the high budget
   are in the top third at the low one (what ASHA at eta = 3 promotes);
2. what the recomputation costs: its seconds against an epoch's training seconds.

BatchNorm trains on batch statistics, so the weights do not depend on the choice: each
configuration is trained once per budget (recomputation off) and its saved weights are evaluated
both ways. The high budget's accuracy is taken with recomputed statistics, the figure of the
trained weights themselves. Two training sets: digits' whole training split (1,079 images) and
its first `--small` images (a small image folder: few steps an epoch).

    python benchmarks/precise_bn.py              # 24 configurations, 2 and 10 epochs: ~8 min
    python benchmarks/precise_bn.py --quick      # smoke run, under a minute
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_throughput import cpu_model, provenance  # noqa: E402

import leanfit.train.trainer as trainer  # noqa: E402
from leanfit.config import load_experiment  # noqa: E402
from leanfit.data.sources import load_dataset  # noqa: E402
from leanfit.models import build_model, count_params  # noqa: E402
from leanfit.models.deploy import accuracy, load_classifier  # noqa: E402
from leanfit.train.trial import train_data  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# the trainer's own thresholds (each run below turns them off, to train with the running averages)
STEPS_PER_EPOCH = trainer.PRECISE_BN_STEPS_PER_EPOCH


def sample_configs(experiment, count: int, seed: int, data) -> list[dict[str, Any]]:
    """Random configurations within the experiment's parameter budget."""
    space = experiment.search_space()
    rng = random.Random(seed)
    limit = experiment.objectives.max_params or math.inf
    configs = []
    while len(configs) < count:
        config = space.sample(rng)
        model = build_model(config, data.channels, data.image_size, data.num_classes)
        if count_params(model) <= limit:
            configs.append(config)
    return configs


def judged_both_ways(experiment, config, data, epochs: int, seed: int, folder: Path) -> dict:
    """Train with the running averages only; evaluate the saved weights with them and with
    statistics recomputed as the trainer does."""
    trainer.PRECISE_BN_STEPS_PER_EPOCH = 0
    settings = experiment.training.model_copy(update={"device": "cpu"})
    hp = experiment.hyperparameters(config)
    path = folder / f"{epochs}.pt"
    result = trainer.train(
        config, hp, data, trainer.Budget(epochs), settings, seed=seed, checkpoint_to=path
    )
    if result.status != "ok":
        return {"status": result.status, "reason": result.reason}
    model = load_classifier(path, data.channels, data.num_classes)
    running = accuracy(model, data.val_x, data.val_y)
    n = len(data.train_y)
    sample = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    trainer.recompute_batchnorm(
        model,
        data.train_x,
        sample[: trainer.PRECISE_BN_IMAGES],
        lambda x: x.float().div_(255.0),  # the Classifier normalises its input itself
        nullcontext,
    )
    seconds = time.perf_counter() - t0
    return {
        "status": "ok",
        "running": running,
        "recomputed": accuracy(model, data.val_x, data.val_y),
        "recompute_seconds": seconds,
        "epoch_seconds": result.train_time / epochs,
        "steps_per_epoch": n // min(int(hp["batch_size"]), n),
    }


def top_overlap(low: list[float], high: list[float]) -> int:
    k = math.ceil(len(high) / 3)
    best = set(sorted(range(len(high)), key=lambda i: -high[i])[:k])
    return len(best & set(sorted(range(len(low)), key=lambda i: -low[i])[:k]))


def summarise(rows: list[dict]) -> dict[str, Any]:
    done = [r for r in rows if r["low"]["status"] == "ok" and r["high"]["status"] == "ok"]
    truth = [r["high"]["recomputed"] for r in done]
    out: dict[str, Any] = {"configurations": len(done), "failed": len(rows) - len(done)}
    for way in ("running", "recomputed"):
        low = [r["low"][way] for r in done]
        out[way] = {
            "spearman_low_vs_high": float(spearmanr(low, truth).statistic)
            if len(done) > 2
            else None,
            "top_third_kept": top_overlap(low, truth),
            "top_third": math.ceil(len(done) / 3),
            "mean_low_accuracy": sum(low) / max(1, len(low)),
            "mean_high_accuracy": sum(r["high"][way] for r in done) / max(1, len(done)),
        }
    cost = [
        r[b]["recompute_seconds"] / r[b]["epoch_seconds"] for r in done for b in ("low", "high")
    ]
    cost.sort()
    out["recompute_over_epoch_median"] = cost[len(cost) // 2] if cost else None
    out["recompute_over_epoch_max"] = cost[-1] if cost else None
    out["low_steps_per_epoch_recomputed_by_trainer"] = sum(
        1 for r in done if r["low"]["steps_per_epoch"] < STEPS_PER_EPOCH
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=24)
    parser.add_argument("--low", type=int, default=2, help="epochs of the low rung")
    parser.add_argument("--high", type=int, default=10, help="epochs of the high budget")
    parser.add_argument("--small", type=int, default=384, help="training images of the small set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--images",
        type=int,
        default=trainer.PRECISE_BN_IMAGES,
        help="training images the statistics are recomputed from (default: the trainer's)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="3 configurations, 1 and 2 epochs")
    parser.add_argument("--out", type=Path, default=RESULTS / "precise_bn.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.configs, args.low, args.high = 3, 1, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    trainer.PRECISE_BN_IMAGES = args.images
    experiment = load_experiment(ROOT / "examples" / "digits.yaml")
    full = train_data(experiment, load_dataset(experiment), for_search=True)
    small = type(full)(**{**full.__dict__})
    small.train_x, small.train_y = full.train_x[: args.small], full.train_y[: args.small]
    configs = sample_configs(experiment, args.configs, args.seed, full)
    report: dict[str, Any] = {
        **provenance("precise_bn"),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "low_epochs": args.low,
        "high_epochs": args.high,
        "trainer_thresholds": {
            "steps_per_epoch_below": STEPS_PER_EPOCH,
            "images": trainer.PRECISE_BN_IMAGES,
        },
        "sets": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in (("digits", full), (f"digits-first-{args.small}", small)):
            rows = []
            for i, config in enumerate(configs):
                folder = Path(tmp) / f"{name}-{i}"
                folder.mkdir()
                seed = args.seed * 1000 + i
                row = {
                    "config": config,
                    "low": judged_both_ways(experiment, config, data, args.low, seed, folder),
                    "high": judged_both_ways(experiment, config, data, args.high, seed, folder),
                }
                rows.append(row)
                low, high = row["low"], row["high"]
                if low["status"] == high["status"] == "ok":
                    print(
                        f"{name} {i + 1}/{len(configs)}: {low['steps_per_epoch']} steps an epoch; "
                        f"{args.low} epochs {low['running']:.3f} running / "
                        f"{low['recomputed']:.3f} recomputed; {args.high} epochs "
                        f"{high['running']:.3f} / {high['recomputed']:.3f}",
                        flush=True,
                    )
            summary = summarise(rows)
            report["sets"][name] = {"train_images": len(data.train_y), **summary, "rows": rows}
            print(f"{name} ({len(data.train_y)} training images): " + json.dumps(summary))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
