"""The Pareto report: parameters against accuracy for every trial, and a page with the front.

The plot is the one the reference scenario is known for (points coloured by recency drifting
towards few parameters and high accuracy), with the front drawn over it. The HTML page embeds the
plot, so it is one self-contained file to open or attach.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class ReportPoint:
    trial_id: int
    params: int
    macs: int
    val_accuracy: float
    rung_epochs: int
    config: dict[str, Any]
    on_front: bool = False
    test_accuracy: float | None = None


def prewarm() -> threading.Thread:
    """Import what `plot_pareto` draws with (matplotlib: a third of a second, more on a busy
    machine) in a thread, while a search runs, instead of after its last trial; returns the
    thread. Python's import lock makes a draw that starts meanwhile wait for it, not import
    twice. Not a daemon: a short search's exit waits for the import rather than cutting it."""

    def load() -> None:
        with contextlib.suppress(ImportError):  # the draw itself reports a broken install
            import matplotlib.backends.backend_agg  # noqa: F401  (what savefig draws PNG with)
            import matplotlib.figure  # noqa: F401

    thread = threading.Thread(target=load, name="leanfit-report-prewarm")
    thread.start()
    return thread


def plot_pareto(
    points: Sequence[ReportPoint], path: Path, title: str, max_params: int | None = None
) -> Path:
    """Scatter of parameters (log scale) against validation accuracy, coloured by trial order;
    of the trial number against it where no size was counted (a space of one's own searched
    for accuracy alone)."""
    # A Figure of its own, not pyplot: no display backend to choose, no global state, and
    # matplotlib is imported only when a report is drawn (a third of a second).
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 5.5), dpi=110)
    ax = fig.subplots()
    sized = not points or any(p.params > 0 for p in points)

    def x(p: ReportPoint) -> float:
        return p.params if sized else p.trial_id

    def dot_size(epochs: float) -> float:  # a dot's area: the epochs its trial was trained to
        return 10 + 6 * epochs

    if points:
        order = [p.trial_id for p in points]
        sc = ax.scatter(
            [x(p) for p in points],
            [p.val_accuracy for p in points],
            c=order,
            cmap="viridis",
            s=[dot_size(p.rung_epochs) for p in points],
            alpha=0.75,
            edgecolors="none",
        )
        bar = fig.colorbar(sc, ax=ax, label="trial order (later = brighter)")
        bar.locator = MaxNLocator(integer=True)  # trials, not half trials
        bar.update_ticks()
        # what a dot's size says: the epochs its trial was trained to (its highest rung)
        epochs = sorted({p.rung_epochs for p in points})
        shown = epochs if len(epochs) <= 4 else [epochs[0], epochs[len(epochs) // 2], epochs[-1]]
        for e in shown:
            label = f"{e:g} epoch" + "s" * (e != 1)
            ax.scatter([], [], s=dot_size(e), color="grey", alpha=0.6, label=label)
        front = sorted((p for p in points if p.on_front), key=lambda p: p.params)
        if front and sized:
            xs, ys = [], []
            for p in front:  # a step line: the best accuracy available at each size
                if xs:
                    xs.append(p.params)
                    ys.append(ys[-1])
                xs.append(p.params)
                ys.append(p.val_accuracy)
            ax.plot(xs, ys, color="crimson", lw=1.5, label="Pareto front")
        if front:
            ax.scatter(
                [x(p) for p in front],
                [p.val_accuracy for p in front],
                facecolors="none",
                edgecolors="crimson",
                s=70,
                lw=1.2,
            )
        low = min(p.val_accuracy for p in points)
        ax.set_ylim(max(0.0, low - 0.02), 1.01)  # (a dot at 100% is drawn whole)
    else:  # (an empty frame said nothing of why)
        ax.text(0.5, 0.5, "no trial has finished yet", ha="center", va="center",
                transform=ax.transAxes, color="grey")  # fmt: skip
    if max_params:
        ax.axvline(max_params, color="grey", ls="--", lw=1, label=f"max_params {max_params:,}")
    ax.set_xscale("log" if sized else "linear")
    ax.set_xlabel("parameters" if sized else "trial")
    if not sized:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation accuracy")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")  # where it hides the fewest dots
    fig.tight_layout()
    return written_whole(path, lambda tmp: fig.savefig(tmp, format="png"))


def written_whole(path: Path, write) -> Path:
    """`path` written by `write(tmp)` into a temporary file beside it, then renamed over it: a
    write that fails (a full disk, a file-size limit) leaves the file as it was, or none, and
    no part of it (a page cut at the limit was left, looking whole)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.filename is None:  # a write's error names no file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    return path


def embedded_image(path: Path, alt: str) -> str:
    """An <img> holding the PNG itself, so the page is one file to open or attach."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def macs_text(macs: int) -> str:
    """A model's MACs for a table; '-' where none were counted (an objective of one's own that
    reports its size but not its MACs showed 0)."""
    return f"{macs:,}" if macs else "-"


def write_html(
    points: Sequence[ReportPoint],
    plot: Path,
    path: Path,
    title: str,
    summary: dict[str, Any],
    more: str = "",
) -> Path:
    """One page: the summary, the plot, and a row per Pareto model with its genotype; then
    `more` (HTML), if given."""
    front = sorted((p for p in points if p.on_front), key=lambda p: p.params)
    has_test = any(p.test_accuracy is not None for p in front)
    # a space of one's own counts no size; with no result yet, the columns a front would have
    sized = not points or any(p.params > 0 for p in points)
    rows = []
    for p in front:
        test = f"<td>{p.test_accuracy:.4f}</td>" if has_test and p.test_accuracy is not None else ""
        if has_test and p.test_accuracy is None:
            test = "<td></td>"
        genotype = html.escape(json.dumps(p.config, indent=1, sort_keys=True))
        rows.append(
            f"<tr><td>{p.trial_id}</td>"
            + (f"<td>{p.params:,}</td><td>{macs_text(p.macs)}</td>" if sized else "")
            + f"<td>{p.val_accuracy:.4f}</td>{test}<td>{p.rung_epochs}</td>"
            f"<td><details><summary>genotype</summary><pre>{genotype}</pre></details></td></tr>"
        )
    test_head = "<th>test acc</th>" if has_test else ""
    size_head = "<th>params</th><th>MACs</th>" if sized else ""
    facts = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary.items()
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; vertical-align: top; }}
pre {{ text-align: left; font-size: 12px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<table>{facts}</table>
{embedded_image(plot, "parameters against validation accuracy")}
<h2>Pareto front ({len(front)} model{"" if len(front) == 1 else "s"})</h2>
<table><tr><th>trial</th>{size_head}<th>val acc</th>{test_head}
<th>epochs</th><th></th></tr>
{"".join(rows)}
</table>{more}</body></html>
"""
    return written_whole(path, lambda tmp: tmp.write_text(page))
