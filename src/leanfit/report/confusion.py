"""Where the registered model goes wrong: its confusion matrix on the test split, per class.

Accuracy alone hides a lopsided dataset: a model that always answers the largest class scores
that class's share. The pipeline's final report shows, for the model it registered, the share
of each class's test images given each answer (rows: the true class; a row sums to 1), each
class's recall and the class it is most often taken for, and what always answering the largest
class would score.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import torch

# Cells are annotated with their counts up to this many classes; beyond, the colours alone
ANNOTATE_UP_TO = 15


def confusion_matrix(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: int
) -> torch.Tensor:
    """Counts [true class, predicted class] of a `Classifier` on uint8 images."""
    from leanfit.models.deploy import predicted_classes

    flat = labels.long() * classes + predicted_classes(model, images).long()
    return torch.bincount(flat, minlength=classes * classes).view(classes, classes)


def matrix_accuracy(matrix: torch.Tensor) -> float:
    """The top-1 accuracy a confusion matrix counts."""
    return int(matrix.trace()) / max(1, int(matrix.sum()))


def plot_confusion(matrix: torch.Tensor, classes: Sequence[str], path: Path, title: str) -> Path:
    """The matrix as a heat map of each row's shares, with counts where there are few classes."""
    from matplotlib.figure import Figure

    counts = matrix.double()
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    k = len(classes)
    side = min(12.0, max(4.5, 0.45 * k + 2.5))
    fig = Figure(figsize=(side + 1.2, side), dpi=110)
    ax = fig.subplots()
    shown = ax.imshow(shares.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(shown, ax=ax, label="share of the class's test images")
    ax.set_xticks(range(k), [str(c) for c in classes], rotation=90 if k > 6 else 0)
    ax.set_yticks(range(k), [str(c) for c in classes])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if k <= ANNOTATE_UP_TO:
        for i in range(k):
            for j in range(k):
                if counts[i, j] > 0:
                    colour = "white" if shares[i, j] > 0.5 else "#222"
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color=colour)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def per_class(matrix: torch.Tensor, classes: Sequence[str]) -> list[dict]:
    """Each class's test images, recall, and the class it is most often mistaken for."""
    rows = []
    for i, name in enumerate(classes):
        row = matrix[i].clone()
        total = int(row.sum())
        correct = int(row[i])
        row[i] = -1
        j = int(row.argmax()) if len(classes) > 1 else i
        rows.append(
            {
                "class": str(name),
                "images": total,
                "recall": correct / total if total else None,
                "mistaken_for": str(classes[j]) if row[j] > 0 else None,
                "mistaken": max(0, int(row[j])),
            }
        )
    return rows


def largest_class_share(matrix: torch.Tensor) -> float:
    """The accuracy of always answering the class with the most test images."""
    totals = matrix.sum(1)
    return float(totals.max() / totals.sum().clamp(min=1))


def per_class_html(rows: Sequence[dict]) -> str:
    """A table of `per_class`'s rows, worst recall first."""

    def order(r: dict) -> float:
        return r["recall"] if r["recall"] is not None else 2.0

    body = []
    for r in sorted(rows, key=order):
        recall = "-" if r["recall"] is None else f"{r['recall']:.3f}"
        mistaken = (
            f"{html.escape(r['mistaken_for'])} ({r['mistaken']})" if r["mistaken_for"] else ""
        )
        body.append(
            f"<tr><td>{html.escape(r['class'])}</td><td>{r['images']:,}</td>"
            f"<td>{recall}</td><td>{mistaken}</td></tr>"
        )
    return (
        "<table><tr><th>class</th><th>test images</th><th>recall</th>"
        "<th>most often taken for (images)</th></tr>" + "".join(body) + "</table>"
    )
