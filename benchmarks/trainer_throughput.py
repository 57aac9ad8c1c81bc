"""Trainer throughput: leanfit's trainer against a per-image DataLoader and the model's own limit.

For models of about 1k, 20k and 100k parameters at 16x16 and 32x32, with the same augmentation
(RandAugment N=2 M=9, random crop with reflect padding, horizontal flip) and batch size, this
measures training images per second through

1. leanfit's trainer: `leanfit.train.trainer.train` itself, epochs after the first (warm-up);
2. a plain torchvision `DataLoader` over a Dataset with per-image `transforms.v2` (what most
   training scripts do), with 0 workers and with as many workers as cores, persistent, so worker
   start-up is not counted against it;
3. the limit: the same model's forward, backward and optimizer step on normalised batches already
   in place (channels_last, like the trainer).

The methods run interleaved (1, 2, 3, 1, 2, 3 ...) for several rounds in one process, as
BENCHMARKS.md asks; the figures are medians with min-max over the rounds, and the ratios are taken
round by round; "(1)/(2) best" compares with the faster DataLoader setting of each round. Images are
synthetic uint8 noise: throughput does not depend on their content.

    python benchmarks/trainer_throughput.py              # full run, 5-10 minutes on 2 CPU cores
    python benchmarks/trainer_throughput.py --threads 1  # one torch thread (saved as -1thread)
    python benchmarks/trainer_throughput.py --quick      # smoke run, seconds

On a 2-core machine that is also running other jobs, two torch threads can stall each other for a
scheduler time slice at every parallel operation (10x slower and erratic); the saved load average
says how busy the machine was, and `--threads 1` gives steadier figures there.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from leanfit.config import HYPERPARAMETER_DEFAULTS, TrainingConfig
from leanfit.models import build_model, count_params
from leanfit.space.architecture import flatten_genotype
from leanfit.train.trainer import Budget, TrainData, lr_at, make_optimizer, train

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
NUM_CLASSES = 10
CHANNELS = 3
SIZES = (16, 32)
CROP_PADDING = {16: 2, 32: 4}
HP = dict(HYPERPARAMETER_DEFAULTS)  # SGD, batch 128, RandAugment N=2, M=9
BATCH_SIZE = int(HP["batch_size"])


def _block(kind: str, width: int, stride: int, repeats: int = 1, **extra: Any) -> dict:
    return dict(
        type=kind, width=width, kernel=3, stride=stride, repeats=repeats, activation="relu", **extra
    )


# Chains of conv, dwsep and mbconv blocks, in the readable form of examples/reference_genotype.yaml.
GENOTYPES: dict[str, dict[str, Any]] = {
    "1k": {
        "stem_width": 4,
        "blocks": [_block("dwsep", 8, 2), _block("dwsep", 16, 2), _block("dwsep", 16, 2)],
    },
    "20k": {
        "stem_width": 16,
        "blocks": [
            _block("conv", 24, 2),
            _block("mbconv", 32, 2, expansion=2, se=False),
            _block("dwsep", 64, 2),
            _block("dwsep", 112, 2),
        ],
    },
    "100k": {
        "stem_width": 16,
        "blocks": [
            _block("conv", 32, 2),
            _block("mbconv", 48, 2, 2, expansion=4, se=False),
            _block("mbconv", 64, 2, 2, expansion=3, se=False),
            _block("dwsep", 128, 1),
        ],
    },
}


def flat_genotype(name: str) -> dict[str, Any]:
    readable = GENOTYPES[name]
    return flatten_genotype(readable, len(readable["blocks"]), ("conv", "dwsep", "mbconv"))


def synthetic_images(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, CHANNELS, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    return images, labels


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Mean and std per channel in [0, 1] units, computed the way the trainer does."""
    x = images.float()
    mean = x.mean(dim=(0, 2, 3)) / 255.0
    std = x.std(dim=(0, 2, 3)).clamp_min(1.0) / 255.0
    return mean.tolist(), std.tolist()


def training_settings(size: int, device: str) -> TrainingConfig:
    return TrainingConfig(
        augment="randaugment", crop_padding=CROP_PADDING[size], flip=True, device=device
    )


def autocast_for(device: torch.device) -> Callable[[], Any]:
    # The trainer's precision "auto": bf16 autocast on a GPU, fp32 on a CPU.
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def new_model(name: str, size: int, device: torch.device, seed: int):
    torch.manual_seed(seed)
    model = build_model(flat_genotype(name), CHANNELS, size, NUM_CLASSES)
    model = model.to(device, memory_format=torch.channels_last)
    return model, make_optimizer(model, HP)


def train_step(model, optimizer, autocast, xb, yb, progress: float) -> torch.Tensor:
    """One step as the trainer takes it: schedule, forward, loss, backward, optimizer step."""
    lr = lr_at(progress, float(HP["lr"]), "onecycle")
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast():
        loss = F.cross_entropy(model(xb), yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


# (1) leanfit's trainer -----------------------------------------------------------------------


def leanfit_rate(name: str, data: TrainData, size: int, epochs: int, device: str, seed: int):
    """Images/s of `train()` over `epochs` epochs after one warm-up epoch (evaluation excluded)."""
    settings = training_settings(size, device)
    result = train(flat_genotype(name), HP, data, Budget(epochs=1 + epochs), settings, seed)
    if result.status != "ok":
        raise RuntimeError(f"leanfit's trainer failed on {name} at {size}px: {result.reason}")
    measured = result.history[1:]
    images = sum(h["images_per_second"] * h["epoch_time"] for h in measured)
    return images / sum(h["epoch_time"] for h in measured)


# (2) the DataLoader baseline -----------------------------------------------------------------


class PerImageDataset(Dataset):
    """The same uint8 images, each transformed on its own, as torchvision's tutorials do."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def per_image_transform(size: int, mean: list[float], std: list[float]) -> v2.Compose:
    # Same operations, same order as leanfit's BatchAugment, then the trainer's normalisation.
    return v2.Compose(
        [
            v2.RandAugment(num_ops=int(HP["randaugment_n"]), magnitude=int(HP["randaugment_m"])),
            v2.RandomCrop(size, padding=CROP_PADDING[size], padding_mode="reflect"),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )


def make_loader(images, labels, size: int, workers: int, device: torch.device) -> DataLoader:
    mean, std = channel_stats(images)
    dataset = PerImageDataset(images, labels, per_image_transform(size, mean, std))
    return DataLoader(
        dataset,
        batch_size=BATCH_SIZE,
        shuffle=True,
        drop_last=True,  # full batches only, like the trainer
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )


def dataloader_rate(name, images, labels, size, workers, epochs, device, seed) -> float:
    """Images/s of a DataLoader training loop over `epochs` epochs after one warm-up epoch."""
    model, optimizer = new_model(name, size, device, seed)
    autocast = autocast_for(device)
    loader = make_loader(images, labels, size, workers, device)
    model.train()
    steps = len(loader)
    elapsed = 0.0
    for epoch in range(1 + epochs):
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for i, (xb, yb) in enumerate(loader):
            xb = xb.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            yb = yb.to(device, non_blocking=True)
            progress = (epoch + i / steps) / (1 + epochs)
            loss_sum += train_step(model, optimizer, autocast, xb, yb, progress)
        float(loss_sum)  # wait for the last step, as the trainer does once per epoch
        if epoch > 0:
            elapsed += time.perf_counter() - t0
    del loader  # shuts persistent workers down
    return epochs * steps * BATCH_SIZE / elapsed


# (3) the limit -------------------------------------------------------------------------------


def limit_rate(name, ready_batches, size, steps, device, seed) -> float:
    """Images/s of forward, backward and step alone, on batches already normalised and in place."""
    model, optimizer = new_model(name, size, device, seed)
    autocast = autocast_for(device)
    model.train()

    def run(n: int) -> None:
        loss_sum = torch.zeros((), device=device)
        for i in range(n):
            xb, yb = ready_batches[i % len(ready_batches)]
            loss_sum += train_step(model, optimizer, autocast, xb, yb, i / n)
        float(loss_sum)

    run(steps)  # warm-up: a whole epoch, as the trainer and the DataLoader get
    sync(device)
    t0 = time.perf_counter()
    run(steps)
    return steps * BATCH_SIZE / (time.perf_counter() - t0)


def ready_batches(images, labels, size, count: int, device: torch.device) -> list:
    """`count` augmented, normalised, channels_last batches, made once before timing."""
    mean, std = channel_stats(images)
    transform = per_image_transform(size, mean, std)
    batches = []
    for b in range(count):
        idx = range(b * BATCH_SIZE, (b + 1) * BATCH_SIZE)
        xb = torch.stack([transform(images[i]) for i in idx])
        xb = xb.to(device).contiguous(memory_format=torch.channels_last)
        batches.append((xb, labels[b * BATCH_SIZE : (b + 1) * BATCH_SIZE].to(device)))
    return batches


# The run -------------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "rounds": values,
    }


def measure(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    steps = args.images // BATCH_SIZE
    rows = []
    for size in SIZES:
        images, labels = synthetic_images(args.images, size)
        val_x, val_y = synthetic_images(BATCH_SIZE, size, seed=1)  # tiny: evaluation is not timed
        data = TrainData(images, labels, val_x, val_y, NUM_CLASSES)
        batches = ready_batches(images, labels, size, min(8, steps), device)
        for name in GENOTYPES:
            params = count_params(build_model(flat_genotype(name), CHANNELS, size, NUM_CLASSES))
            rates: dict[str, list[float]] = {"leanfit": [], "limit": []}
            rates.update({f"dataloader_w{w}": [] for w in args.workers})
            for r in range(args.rounds):
                rates["leanfit"].append(
                    leanfit_rate(name, data, size, args.epochs, args.device, seed=r)
                )
                for w in args.workers:
                    rates[f"dataloader_w{w}"].append(
                        dataloader_rate(name, images, labels, size, w, args.epochs, device, r)
                    )
                rates["limit"].append(limit_rate(name, batches, size, steps, device, seed=r))
            loaders = [k for k in rates if k.startswith("dataloader")]
            best = [max(rates[k][r] for k in loaders) for r in range(args.rounds)]
            row = {
                "model": name,
                "params": params,
                "image_size": size,
                "crop_padding": CROP_PADDING[size],
                "images_per_second": {k: summary(v) for k, v in rates.items()},
                "leanfit_over_dataloader": {
                    k: summary([a / b for a, b in zip(rates["leanfit"], rates[k], strict=True)])
                    for k in loaders
                },
                "leanfit_over_best_dataloader": summary(
                    [a / b for a, b in zip(rates["leanfit"], best, strict=True)]
                ),
                "leanfit_share_of_limit": summary(
                    [a / b for a, b in zip(rates["leanfit"], rates["limit"], strict=True)]
                ),
            }
            rows.append(row)
            print(format_row(row, args.workers), flush=True)
    return rows


def format_range(s: dict[str, Any], fmt: str) -> str:
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"


def table_header(workers: list[int]) -> str:
    cols = ["model", "params", "px", "(1) leanfit img/s"]
    cols += [f"(2) DataLoader w={w} img/s" for w in workers]
    cols += ["(3) limit img/s", "(1)/(2) best", "(1)/(3)"]
    return " | ".join(cols)


def format_row(row: dict[str, Any], workers: list[int]) -> str:
    ips = row["images_per_second"]
    cells = [row["model"], str(row["params"]), str(row["image_size"])]
    cells.append(format_range(ips["leanfit"], ".0f"))
    cells += [format_range(ips[f"dataloader_w{w}"], ".0f") for w in workers]
    cells.append(format_range(ips["limit"], ".0f"))
    cells.append(format_range(row["leanfit_over_best_dataloader"], ".2f") + "x")
    share = row["leanfit_share_of_limit"]
    cells.append(f"{share['median']:.0%} ({share['min']:.0%}-{share['max']:.0%})")
    return " | ".join(cells)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        commit = out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted"
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True)
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def provenance(benchmark: str) -> dict[str, str]:
    """The first keys of a benchmark's result: which benchmark, when, at which commit, run how."""
    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "command": shlex.join([sys.executable, *sys.argv]),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _relative(path: str) -> str:
    try:
        return str(Path(path).relative_to(ROOT))
    except ValueError:
        return path


def machine_kind(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny counts, seconds")
    parser.add_argument("--images", type=int, default=2048, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up one")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per setting")
    parser.add_argument(
        "--workers",
        default=None,
        help="DataLoader num_workers settings, comma-separated (default: 0 and the core count)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=None, help=f"results folder ({RESULTS})")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.epochs, args.rounds = 2 * BATCH_SIZE, 1, 1
    if args.images < BATCH_SIZE:
        parser.error(f"--images must be at least the batch size ({BATCH_SIZE})")
    if args.workers is None:
        args.workers = sorted({0, os.cpu_count() or 1})
    else:
        args.workers = [int(w) for w in args.workers.split(",")]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    kind = machine_kind(device)
    started = time.perf_counter()
    load_before = os.getloadavg()
    print(
        f"{kind}: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.images} images, batch {BATCH_SIZE}, {args.rounds} rounds, "
        f"1 warm-up + {args.epochs} timed epoch(s)",
        flush=True,
    )
    print(table_header(args.workers), flush=True)
    rows = measure(args, device)
    report = {
        "benchmark": "trainer_throughput",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "command": " ".join(shlex.quote(a) for a in [_relative(sys.executable), *sys.argv]),
        "machine": kind,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_threads": torch.get_num_threads(),
        # Other processes on the machine distort the figures; the 1-minute load average says how
        # busy it was (2 cores: above about 1 before we start, something else was running).
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "settings": {
            "images": args.images,
            "batch_size": BATCH_SIZE,
            "warmup_epochs": 1,
            "timed_epochs": args.epochs,
            "rounds": args.rounds,
            "dataloader_workers": args.workers,
            "dataloader": "shuffle=True, drop_last=True, persistent_workers when workers > 0",
            "augmentation": "RandAugment(num_ops=2, magnitude=9), random crop with reflect "
            "padding (2 at 16px, 4 at 32px), horizontal flip p=0.5",
            "leanfit_augment_groups": TrainingConfig().augment_groups,
            "optimizer": "SGD lr 0.05 momentum 0.9 nesterov, wd 5e-4 (leanfit defaults)",
            "precision": "bf16 autocast" if cuda else "fp32",
            "quick": args.quick,
        },
        "genotypes": GENOTYPES,
        "results": rows,
        "wall_seconds": time.perf_counter() - started,
    }
    out_dir = args.out if args.out is not None else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = f"-{args.threads}thread" if args.threads is not None else ""
    path = out_dir / f"trainer_throughput-{kind}{threads}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {path} ({report['wall_seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
