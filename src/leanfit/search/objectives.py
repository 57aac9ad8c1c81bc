"""A synthetic multi-fidelity objective over an architecture space, for tests and benchmarks.

It stands in for training: a configuration of a leanfit space (stem, chain of blocks,
hyper-parameters) and a budget give a validation accuracy in microseconds, with the shape of real
learning curves, a real trade-off between parameters and accuracy, and a known optimum. The shape
follows the saturating learning curves modelled by Domhan et al. 2015, "Speeding up Automatic
Hyperparameter Optimization of Deep Neural Networks by Extrapolation of Learning Curves" (IJCAI),
and the log-linear growth of accuracy with model size of Tan & Le 2019, "EfficientNet" (ICML).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from leanfit.config import HYPERPARAMETER_DEFAULTS
from leanfit.models.cost import architecture_cost
from leanfit.space.architecture import genotype_blocks
from leanfit.space.spec import SearchSpace

# No configuration's asymptotic accuracy exceeds A_TOP; a model of 100 parameters gets A_FLOOR.
A_TOP = 0.99
A_FLOOR = 0.30
# Log10 parameters over which the capacity term closes 1/e of its gap to A_TOP.
CAPACITY_SCALE = 0.7
# The best hyper-parameters, where their penalties vanish.
BEST_LR = {"sgd": 0.05, "adamw": 0.003}
BEST_WEIGHT_DECAY = 5e-4
BEST_LABEL_SMOOTHING = 0.05
BEST_MOMENTUM = 0.9


@dataclass(frozen=True)
class SyntheticResult:
    """What a trial reports: accuracy at the last epoch, after each epoch trained, and cost."""

    val_accuracy: float
    curve: tuple[float, ...]
    params: int
    macs: int


class SyntheticObjective:
    """Validation accuracy of a configuration after some epochs, without training anything.

    Parameters and MACs are counted exactly as `leanfit.models.builder.build_model` builds the
    network (the same layers, no torch), for `in_channels` × `image_size`² inputs and
    `num_classes` classes. The accuracy after e epochs is

        acc(e) = a_max − (a_max − 1/classes) · exp(−e / τ) + noise

    - a_max = A_TOP − (A_TOP − A_FLOOR) · exp(−(log10 params − 2) / 0.7), less penalties that are
      quadratic in log10(lr / best lr) (0.05 for SGD, 0.003 for AdamW), log10(weight decay / 5e-4),
      label smoothing − 0.05 and momentum (or β1) − 0.9, less 0.04 per missing block when fewer
      than three blocks compute, plus a fixed offset per architecture (σ = `ruggedness`; it does
      not depend on the hyper-parameters, which stay smooth) that makes the landscape rugged.
      Bigger models are more accurate with diminishing returns: the trade-off is real. With the
      best hyper-parameters, a_max approaches A_TOP = 0.99 as the model grows; no configuration
      exceeds it.
    - τ, the epochs to close 63% of the gap: 1.5 at the best learning rate and batch 64, longer
      for smaller learning rates (a factor 1 + log10(best/lr)), larger batches (√(batch/64)) and
      larger models; a large learning rate starts fast and ends lower, so curves cross.
    - Fidelities: a fraction d of the data lowers a_max by 0.05·log10(1/d) and counts an epoch as
      √d of one; a resolution r below `image_size` lowers a_max by 0.04·log2(image_size/r).
    - noise: Gaussian with σ = `noise`, seeded by (`seed`, configuration, epoch, fidelity), so one
      configuration reports the same curve every time, whether trained at once or resumed.

    `sleep_per_epoch` makes `evaluate` sleep that many seconds per epoch trained, to stand in for
    trials that take real time.
    """

    def __init__(
        self,
        space: SearchSpace,
        in_channels: int = 1,
        image_size: int = 16,
        num_classes: int = 10,
        noise: float = 0.005,
        ruggedness: float = 0.01,
        seed: int = 0,
        sleep_per_epoch: float = 0.0,
    ) -> None:
        for name, value in (
            ("in_channels", in_channels),
            ("image_size", image_size),
            ("num_classes", num_classes),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"The value of `{name}` is {value}, but must be `{name} >= 1`")
        if num_classes < 2:
            raise ValueError(f"The value of `num_classes` is {num_classes}, but must be >= 2")
        if not noise >= 0:
            raise ValueError(f"The value of `noise` is {noise}, but must be `noise >= 0`")
        if not ruggedness >= 0:
            raise ValueError(
                f"The value of `ruggedness` is {ruggedness}, but must be `ruggedness >= 0`"
            )
        if not sleep_per_epoch >= 0:
            raise ValueError(
                f"The value of `sleep_per_epoch` is {sleep_per_epoch}, "
                "but must be `sleep_per_epoch >= 0`"
            )
        if "stem_width" not in space.names and "stem_width" not in space.fixed:
            raise ValueError("the space has no architecture (no `stem_width`); use a leanfit space")
        self.space = space
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.noise = noise
        self.ruggedness = ruggedness
        self.seed = seed
        self.sleep_per_epoch = sleep_per_epoch

    def evaluate(
        self,
        config: Mapping[str, Any],
        epochs: int,
        from_epochs: int = 0,
        data_fraction: float = 1.0,
        resolution: int | None = None,
    ) -> SyntheticResult:
        """Train `config` from `from_epochs` (a checkpoint; 0 from scratch) to `epochs`."""
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"The value of `epochs` is {epochs}, but must be `epochs >= 1`")
        if not isinstance(from_epochs, int) or not 0 <= from_epochs < epochs:
            raise ValueError(
                f"The value of `from_epochs` is {from_epochs}, "
                f"but must be `0 <= from_epochs < epochs` ({epochs})"
            )
        if not 0 < data_fraction <= 1:
            raise ValueError(
                f"The value of `data_fraction` is {data_fraction}, but must be in (0, 1]"
            )
        if resolution is not None and not 1 <= resolution <= self.image_size:
            raise ValueError(
                f"The value of `resolution` is {resolution}, "
                f"but must be in [1, image_size] ({self.image_size})"
            )
        config = self.space.validate(config)
        params, macs = self.cost(config)
        a_max, tau = self._curve_shape(config, params)
        a_max -= 0.05 * math.log10(1.0 / data_fraction)
        if resolution is not None:
            a_max -= 0.04 * math.log2(self.image_size / resolution)
        chance = 1.0 / self.num_classes
        a_max = max(a_max, chance)
        key = (self.seed, self.space.key(config), data_fraction, resolution)
        curve = []
        for e in range(from_epochs + 1, epochs + 1):
            mean = a_max - (a_max - chance) * math.exp(-e * math.sqrt(data_fraction) / tau)
            noise = _seeded_gauss((*key, e)) * self.noise
            curve.append(min(1.0, max(0.0, mean + noise)))
        if self.sleep_per_epoch:
            time.sleep(self.sleep_per_epoch * (epochs - from_epochs))
        return SyntheticResult(curve[-1], tuple(curve), params, macs)

    def asymptote(self, config: Mapping[str, Any]) -> float:
        """a_max: the accuracy the configuration tends to with unlimited epochs, without noise."""
        config = self.space.validate(config)
        return max(self._curve_shape(config, self.cost(config)[0])[0], 1.0 / self.num_classes)

    def cost(self, config: Mapping[str, Any]) -> tuple[int, int]:
        """(parameters, multiply-accumulates of one image) of the network the builder makes."""
        return architecture_cost(config, self.in_channels, self.image_size, self.num_classes)

    def _curve_shape(self, config: Mapping[str, Any], params: int) -> tuple[float, float]:
        hp = {k: config.get(k, v) for k, v in HYPERPARAMETER_DEFAULTS.items()}
        best_lr = BEST_LR.get(hp["optimizer"], BEST_LR["sgd"])
        lr_offset = math.log10(hp["lr"] / best_lr)
        log_params = math.log10(max(params, 1))
        a_max = A_TOP - (A_TOP - A_FLOOR) * math.exp(-(log_params - 2.0) / CAPACITY_SCALE)
        a_max -= 0.06 * lr_offset**2
        a_max -= 0.01 * math.log10(hp["weight_decay"] / BEST_WEIGHT_DECAY) ** 2
        a_max -= 0.5 * (hp["label_smoothing"] - BEST_LABEL_SMOOTHING) ** 2
        momentum = hp["momentum"] if hp["optimizer"] == "sgd" else hp["beta1"]
        a_max -= 1.0 * (momentum - BEST_MOMENTUM) ** 2
        computing = sum(1 for b in genotype_blocks(config) if b["type"] != "skip")
        a_max -= 0.04 * max(0, 3 - computing)
        architecture = (config["stem_width"], genotype_blocks(config))
        a_max += self.ruggedness * _seeded_gauss((self.seed, "architecture", architecture))
        a_max = min(a_max, A_TOP)
        tau = 1.5 * (1.0 + max(0.0, -lr_offset)) * math.sqrt(hp["batch_size"] / 64)
        tau *= 1.0 + 0.2 * max(0.0, log_params - 3.0)
        if lr_offset > 0:
            tau /= 1.0 + lr_offset  # a large learning rate: fast start, lower end (a_max above)
        return a_max, tau


def _seeded_gauss(key: tuple) -> float:
    """A standard normal draw that depends only on `key` (stable across processes)."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return random.Random(digest).gauss(0.0, 1.0)
