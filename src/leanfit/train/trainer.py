"""The trainer: one configuration, one budget, as fast as the hardware allows.

The whole training split sits in memory as one uint8 tensor (on the GPU when there is one); each
step indexes a batch out of it, augments it as a batch, normalises and trains. No DataLoader, no
per-image Python in the loop. The learning rate is a function of training progress measured in
epochs against a fixed horizon (`schedule_epochs`), so training 0→3 and resuming 3→9 follows the
same schedule as 0→9 straight; each epoch's randomness is seeded from (seed, epoch), so it gives the
same weights too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from leanfit.config import TrainingConfig
from leanfit.data.augment import BatchAugment
from leanfit.data.sources import resize_uint8
from leanfit.data.splits import stratified_subset
from leanfit.errors import TrialFailed
from leanfit.models import build_model, count_params
from leanfit.models.cost import architecture_cost
from leanfit.train.checkpoint import load_checkpoint, save_checkpoint
from leanfit.train.curve import CURVE_TOLERANCE, CurveStop, accuracy_noise
from leanfit.train.prefetch import Prefetched
from leanfit.train.result import Budget, TrainResult

# BatchNorm's running statistics are an average over about its last ten steps (momentum 0.1),
# started at mean 0 and variance 1. With few steps an epoch they lag the weights by epochs and
# still hold much of their start, so a validation accuracy judged with them measures stale
# statistics more than the network: a 3-class image folder of 376 training images at batch 128
# (2 steps an epoch) scored 23-34% in eval mode and 83-94% with the statistics recomputed. Below
# this many steps an epoch they are recomputed from training images before each evaluation
# ("precise BatchNorm"), so what is ranked, saved and deployed is what was measured.
# benchmarks/precise_bn.py, 24 random digits configurations: the Spearman correlation between a
# 2-epoch rung's accuracy and the 10-epoch one rose from 0.71 to 0.91 (1,079 training images)
# and from 0.30 to 0.89 (384); 512 images ranked as well as 1,024 at half the cost, a median 9%
# of an epoch's training time.
PRECISE_BN_STEPS_PER_EPOCH = 50
PRECISE_BN_IMAGES = 512
PRECISE_BN_BATCH = 256
# With `save_progress`, a checkpoint is written after an epoch once the time since the last one
# is at least this many times what writing one took: at most about 5% of the training time, and
# after every epoch for the small models of this product (milliseconds to write).
SAVE_SPACING = 20.0


@dataclass(frozen=True)
class Distill:
    """Knowledge distillation (Hinton et al. 2015): the student also learns the teacher's
    softened answers on the same augmented batch. `teacher` takes float images in [0, 1] at the
    student's resolution (a `leanfit.models.deploy.Classifier`) and answers logits; the loss is
    (1 - alpha) * cross-entropy + alpha * temperature² * KL(teacher || student), both at
    `temperature`."""

    teacher: nn.Module
    alpha: float = 0.5
    temperature: float = 4.0


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """temperature² · KL(softmax(teacher / T) || softmax(student / T)), batch mean."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student.float() / t, dim=1),
        F.log_softmax(teacher.float() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


@dataclass
class TrainData:
    """Uint8 images and int64 labels for training and validation."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])


def lr_at(progress: float, peak: float, schedule: str) -> float:
    """Learning rate at `progress` in [0, 1] of the horizon."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "onecycle":
        warm = 0.2
        if progress < warm:
            return peak * (0.1 + 0.9 * progress / warm)
        return peak * max(0.0, (1.0 - progress) / (1.0 - warm))
    warm = 0.05
    if progress < warm:
        return peak * progress / warm
    return peak * 0.5 * (1.0 + math.cos(math.pi * (progress - warm) / (1.0 - warm)))


def pick_device(preference: str) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def make_optimizer(model: nn.Module, hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    # No weight decay on norms and biases: standard for small networks, and what makes high wd safe.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": float(hp["weight_decay"])},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if hp["optimizer"] == "adamw":
        return torch.optim.AdamW(
            groups, lr=float(hp["lr"]), betas=(float(hp["beta1"]), float(hp["beta2"]))
        )
    return torch.optim.SGD(
        groups, lr=float(hp["lr"]), momentum=float(hp["momentum"]), nesterov=bool(hp["nesterov"])
    )


def chunk_batches(batch_size: int, image_numel: int, steps: int, limit_mb: float) -> int:
    """How many batches to augment at once: as many as fit in `limit_mb` of float32 images, at
    most 16 (beyond that the per-operation cost is already spread thin) and at most an epoch."""
    per_batch = batch_size * image_numel * 4
    return max(1, min(steps, 16, int(limit_mb * 2**20 // per_batch)))


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**63 - 1)


def train(
    genotype: Mapping[str, Any],
    hyperparameters: Mapping[str, Any],
    data: TrainData,
    budget: Budget,
    settings: TrainingConfig,
    seed: int = 0,
    resume_from: str | Path | None = None,
    checkpoint_to: str | Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    curve_stop: CurveStop | None = None,
    save_progress: bool = False,
    distill: Distill | None = None,
) -> TrainResult:
    """Train `genotype` with `hyperparameters` up to `budget`; never raises for a failed trial.

    A NaN loss or an out-of-memory error ends the trial with status "failed" and the reason.
    With `curve_stop`, a run whose learning curve cannot reach its threshold ends after the
    epoch that shows it, with status "stopped", its history so far and a checkpoint of it.
    With `save_progress`, `checkpoint_to` is also written during training (see `SAVE_SPACING`),
    so that a long training cut short resumes from it (`resume_from`) instead of from the start.
    With `distill`, the loss also follows a teacher's answers (see `Distill`).
    """
    start = time.perf_counter()
    device = pick_device(settings.device)
    hp = dict(hyperparameters)
    size = budget.resolution or data.image_size

    torch.manual_seed(seed)
    model = build_model(genotype, data.channels, size, data.num_classes)
    result = TrainResult(status="ok")
    result.params = count_params(model)
    # counted, not traced: FlopCounterMode's dispatch mode imports torch._dynamo on its first
    # use (1-1.3 s), which each worker's first trial paid (against its trial_timeout too)
    result.macs = architecture_cost(genotype, data.channels, size, data.num_classes)[1]
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    optimizer = make_optimizer(model, hp)

    first_epoch = 0
    if resume_from is not None:
        state = load_checkpoint(resume_from, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch = int(state["epoch"])
        result.history = list(state.get("history", []))

    train_idx = torch.from_numpy(
        stratified_subset(data.train_y.numpy(), budget.data_fraction, seed=seed)
    )
    train_x = resize_uint8(data.train_x[train_idx], size).to(device)
    train_y = data.train_y[train_idx].to(device)
    val_x = resize_uint8(data.val_x, size).to(device)
    val_y = data.val_y.to(device)
    mean = train_x.float().mean(dim=(0, 2, 3), keepdim=True) / 255.0
    std = train_x.float().std(dim=(0, 2, 3), keepdim=True).clamp_min(1.0) / 255.0

    # (x / 255 - mean) / std as one multiply-add: x * scale + shift
    scale, shift = 1.0 / (255.0 * std), -mean / std

    def prepare(x: torch.Tensor) -> torch.Tensor:
        # Convert to float first, then change the layout: a channels_last copy of uint8 images, or
        # an addcmul reading them, costs about twice as much on a CPU.
        return torch.addcmul(shift, x.float(), scale).contiguous(memory_format=memory_format)

    augment = BatchAugment(
        settings.augment,
        n=int(hp["randaugment_n"]),
        m=int(hp["randaugment_m"]),
        crop_padding=settings.crop_padding,
        flip=settings.flip,
        groups=settings.augment_groups,
    )
    use_bf16 = settings.precision == "bf16" or (
        settings.precision == "auto" and device.type == "cuda"
    )
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
    )
    step_model = torch.compile(model) if settings.compile else model
    batch_size = min(int(hp["batch_size"]), len(train_y))
    n = len(train_y)
    steps = max(1, n // batch_size)  # full batches only: BatchNorm needs more than one image
    chunk = chunk_batches(batch_size, train_x[0].numel(), steps, settings.augment_chunk_mb)
    peak_lr = float(hp["lr"])
    smoothing = float(hp["label_smoothing"])
    # Precise BatchNorm's images (few steps an epoch only): a fixed sample of the training
    # images, the same whenever this trial is resumed
    bn_sample = None
    if steps < PRECISE_BN_STEPS_PER_EPOCH:
        bn_sample = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        bn_sample = bn_sample[:PRECISE_BN_IMAGES].to(device)

    teacher = None
    if distill is not None:
        teacher = distill.teacher.to(device).eval()  # it answers under no_grad

    def chunks() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """Every epoch's batches, augmented and normalised, `chunk` batches at a time: on small
        images the number of tensor operations costs more than their size. This is the only
        user of the random generator while training, so each epoch's draws follow from its seed
        alone, whether the chunks are made inline or ahead in a thread."""
        for epoch in range(first_epoch, budget.epochs):
            torch.manual_seed(_epoch_seed(seed, epoch))
            perm = torch.randperm(n, device=device)
            for start in range(0, steps, chunk):
                idx = perm[start * batch_size : min(steps, start + chunk) * batch_size]
                # index_select, not train_x[idx]: on uint8 it is ~15x faster on a CPU
                raw = augment(train_x.index_select(0, idx))
                taught = None
                if teacher is not None:  # the teacher sees the very images the student sees
                    with torch.no_grad(), autocast():
                        taught = teacher(raw.float().div_(255.0)).float()
                yield prepare(raw), train_y.index_select(0, idx), taught

    def state(epochs_done: int) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epochs_done,
            "history": list(result.history),
            "genotype": dict(genotype),
            "hyperparameters": hp,
            "seed": seed,
            # what a deployed model needs to see images as the trainer showed them
            "image_size": size,
            "normalize": {"mean": mean.flatten().tolist(), "std": std.flatten().tolist()},
        }

    # On a CPU the next chunk is augmented in a thread while this one trains; on a GPU the work
    # is queued asynchronously anyway. The thread gets one intra-op thread (a per-thread setting
    # with OpenMP): two threads each running parallel regions over the same cores stall each
    # other (digits at batch 32 trained 2x slower).
    prefetch = settings.prefetch and device.type == "cpu"
    feed = Prefetched(chunks(), setup=lambda: torch.set_num_threads(1)) if prefetch else chunks()
    train_time = 0.0
    saved_at, save_seconds = time.perf_counter(), 0.0
    # the accuracies it fits vary by about the standard error of an accuracy on val_y
    curve_tolerance = max(CURVE_TOLERANCE, accuracy_noise(len(val_y)))
    try:
        for epoch in range(first_epoch, budget.epochs):
            t0 = time.perf_counter()
            model.train()
            loss_sum = torch.zeros((), device=device)
            for i in range(steps):
                lr = lr_at((epoch + i / steps) / budget.horizon, peak_lr, settings.schedule)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if i % chunk == 0:
                    chunk_x, chunk_y, chunk_t = next(feed)
                part = slice((i % chunk) * batch_size, (i % chunk + 1) * batch_size)
                with autocast():
                    logits = step_model(chunk_x[part])
                    loss = F.cross_entropy(logits, chunk_y[part], label_smoothing=smoothing)
                    if chunk_t is not None:
                        loss = (1 - distill.alpha) * loss + distill.alpha * distillation_loss(
                            logits, chunk_t[part], distill.temperature
                        )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
            train_loss = float(loss_sum) / steps
            if not math.isfinite(train_loss):
                raise TrialFailed(f"loss became {train_loss} in epoch {epoch + 1} (lr {lr:.3g})")
            epoch_time = time.perf_counter() - t0
            train_time += epoch_time
            if bn_sample is not None:
                recompute_batchnorm(model, train_x, bn_sample, prepare, autocast)
            val_loss, val_acc = evaluate(model, val_x, val_y, prepare, autocast, settings)
            record = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": lr,
                "epoch_time": epoch_time,
                "images_per_second": steps * batch_size / epoch_time,
            }
            result.history.append(record)
            result.epochs = epoch + 1
            if on_epoch is not None:
                on_epoch(record)
            if curve_stop is not None:
                hopeless = curve_stop.reason(result.history, curve_tolerance)
                if hopeless is not None:
                    result.status, result.reason = "stopped", hopeless
                    break
            if (
                save_progress
                and checkpoint_to is not None
                and epoch + 1 < budget.epochs
                and time.perf_counter() - saved_at >= SAVE_SPACING * save_seconds
            ):
                t_save = time.perf_counter()
                save_checkpoint(checkpoint_to, state(epoch + 1))
                saved_at = time.perf_counter()
                save_seconds = saved_at - t_save
    except TrialFailed as e:
        result.status, result.reason = "failed", e.reason
    except torch.OutOfMemoryError as e:
        result.status, result.reason = "failed", f"out of memory: {str(e).splitlines()[0]}"
    finally:
        if prefetch:
            feed.close()
    result.epochs = max(result.epochs, first_epoch) if result.status == "ok" else result.epochs
    if result.status in ("ok", "stopped") and checkpoint_to is not None:
        save_checkpoint(checkpoint_to, state(result.epochs))  # fewer epochs when stopped early
        result.checkpoint = str(checkpoint_to)
    result.train_time = train_time
    result.wall_time = time.perf_counter() - start
    return result


@torch.no_grad()
def recompute_batchnorm(
    model: nn.Module,
    images: torch.Tensor,
    sample: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    autocast: Callable[[], Any],
) -> None:
    """Replace every BatchNorm's running statistics by their mean over batches of the sampled
    (unaugmented) training images, seen by the current weights."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    norms = [m for m in norms if m.track_running_stats]
    if not norms or len(sample) < 2:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative mean over the batches below
    model.train()
    try:
        for start in range(0, len(sample), PRECISE_BN_BATCH):
            part = sample[start : start + PRECISE_BN_BATCH]
            if len(part) < 2:  # one image has no variance
                break
            with autocast():
                model(prepare(images.index_select(0, part)))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


@torch.no_grad()
def evaluate(model, x, y, prepare, autocast, settings: TrainingConfig) -> tuple[float, float]:
    """Loss and accuracy on a held-out uint8 set."""
    model.eval()
    total_loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for start in range(0, len(y), settings.eval_batch_size):
        xb = prepare(x[start : start + settings.eval_batch_size])
        yb = y[start : start + settings.eval_batch_size]
        with autocast():
            logits = model(xb)
        total_loss += F.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    n = max(1, len(y))
    return float(total_loss) / n, float(correct) / n
