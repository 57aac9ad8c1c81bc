"""A trained network packaged for use: its own input normalisation in front, nothing else needed.

Input: float32 images in [0, 1], shape (N, C, H, W) at the size the network was trained on.
Output: logits, shape (N, classes). This is what goes to the MLflow registry, to TorchScript and
to ONNX.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from leanfit.models.builder import build_model
from leanfit.train.checkpoint import load_checkpoint

WEIGHTS_FORMAT = 1  # of `predict.WEIGHTS_FILE` (named there: `predict` imports no torch)


class Classifier(nn.Module):
    """`architecture`, where the network is leanfit's (`build_model`): what builds it again
    (genotype, in_channels, image_size, num_classes), which `save_weights` keeps."""

    def __init__(
        self,
        net: nn.Module,
        mean: list[float],
        std: list[float],
        architecture: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.architecture = architecture

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def load_classifier(checkpoint: str | Path, channels: int, num_classes: int) -> Classifier:
    """The `Classifier` of a checkpoint written by the trainer, in eval mode on the CPU."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    architecture = _architecture(state["genotype"], channels, state["image_size"], num_classes)
    net = build_model(**architecture)
    net.load_state_dict(state["model"])
    norm = state["normalize"]
    return Classifier(net, norm["mean"], norm["std"], architecture).eval()


def _architecture(genotype, in_channels, image_size, num_classes) -> dict[str, Any]:
    """What `build_model` builds a network from, as plain numbers and a dict (a `Classifier`'s
    `architecture`; what its weights file keeps)."""
    return {
        "genotype": dict(genotype),
        "in_channels": int(in_channels),
        "image_size": int(image_size),
        "num_classes": int(num_classes),
    }


def save_weights(classifier: Classifier, path: Path) -> None:
    """The classifier's `predict.WEIGHTS_FILE`: its architecture, normalisation and weights
    (tensors, numbers and strings only, so `classifier_from_weights` reads it as weights
    only)."""
    if classifier.architecture is None:
        raise ValueError("save_weights: the classifier's network is not one leanfit builds")
    torch.save(
        {
            "format": WEIGHTS_FORMAT,
            "architecture": classifier.architecture,
            "mean": classifier.mean.flatten().tolist(),
            "std": classifier.std.flatten().tolist(),
            "weights": {k: v.detach().cpu() for k, v in classifier.net.state_dict().items()},
        },
        path,
    )


def classifier_from_weights(path: Path) -> Classifier:
    """The `Classifier` a `predict.WEIGHTS_FILE` describes, in eval mode on the CPU: built by
    leanfit's own code, its weights read as weights only (`torch.load(weights_only=True)`: a
    file holding anything else is refused, and none of its code runs). Raises ValueError for a
    file that is not one (another format, a network that does not take its weights)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path.name} is not a leanfit weights file of format {WEIGHTS_FORMAT}")
    architecture = _architecture(**state["architecture"])
    net = build_model(**architecture)
    net.load_state_dict(state["weights"])  # strict: every weight, each of its shape
    return Classifier(net, state["mean"], state["std"], architecture).eval()


@torch.no_grad()
def predicted_classes(model: nn.Module, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The top-1 class of a `Classifier`-like model for each uint8 image."""
    model.eval()
    out = [
        model(images[start : start + batch].float().div_(255.0)).argmax(1)
        for start in range(0, len(images), batch)
    ]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 512
) -> float:
    """Top-1 accuracy of a `Classifier`-like model on uint8 images."""
    correct = int((predicted_classes(model, images, batch) == labels).sum())
    return correct / max(1, len(labels))


def export_onnx(classifier: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The classifier as an ONNX file (input `images`, any batch size; output `logits`), written
    by torch's exporter and checked with ONNX Runtime against the model on `example`: a file
    that answers otherwise is never written. For runtimes without Python or torch (a phone, a
    browser, a microcontroller's toolchain), where TorchScript (deprecated by torch) cannot go.
    """
    import contextlib
    import io
    import warnings

    import numpy as np
    import onnxruntime

    with torch.no_grad():
        expected = classifier(example).numpy()
    tmp = path.with_name(path.name + ".tmp")
    exporters = (_export_traced, _export_dynamo)  # the first that answers as the model does
    for export in exporters:
        try:
            # the exporters report their steps on stdout and warn of their own internals
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                export(classifier, example, tmp)
            session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            # the batch size is free
            answers = [session.run(None, {"images": b.numpy()})[0] for b in (example, example[:1])]
        except Exception:
            tmp.unlink(missing_ok=True)
            if export is exporters[-1]:
                raise
            continue  # a model or a torch that the traced exporter cannot take
        if all(np.allclose(a, expected[: len(a)], atol=1e-4) for a in answers):
            tmp.replace(path)
            return
        tmp.unlink()
    raise RuntimeError("the ONNX export does not answer as the model does")


def _export_traced(classifier: nn.Module, example: torch.Tensor, tmp: Path) -> None:
    """torch's TorchScript-based exporter: 0.14 s a model here (1.4 s for a process's first, its
    imports included), where the torch.export-based one (torch's default) takes 5.2 s (9.0 s;
    `benchmarks/onnx_export.py`). It is deprecated in torch; `export_onnx` goes on with the
    other exporter wherever it fails."""
    torch.onnx.export(
        classifier, (example,), str(tmp), input_names=["images"], output_names=["logits"],
        dynamo=False, dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
    )  # fmt: skip


def _export_dynamo(classifier: nn.Module, example: torch.Tensor, tmp: Path) -> None:
    """torch's torch.export-based exporter (its default)."""
    program = torch.onnx.export(
        classifier, (example,), input_names=["images"], output_names=["logits"],
        dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        verbose=False,
    )  # fmt: skip
    program.save(str(tmp))
