"""A final model's ONNX file: torch's TorchScript-based exporter against torch.export's.

`export_onnx` (every final model the pipeline logs) tries torch's TorchScript-based exporter
first, then torch.export's, torch's default. Per model of the digits space (sampled, as the
search meets them) and per exporter, in a fresh process as an `evaluate-register` step meets it:
the first export (the exporter's own imports and ONNX Runtime's check included) and a second
export of the same model. The exporters alternate, model by model.

    python benchmarks/onnx_export.py                            # about 2 min, 2 cores
    python benchmarks/onnx_export.py --models 1 --out /tmp/x    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_throughput import cpu_model, provenance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

# one exporter, twice on one model, timed
EXPORT = """
import json, sys, time
from pathlib import Path
import torch
from leanfit.config import load_experiment
from leanfit.models import build_model, count_params, deploy

exporter, seed, folder = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
if exporter == "dynamo":  # as export_onnx goes on where the traced exporter fails
    deploy._export_traced = deploy._export_dynamo
space = load_experiment(sys.argv[4]).search_space()
torch.manual_seed(seed)
net = build_model(space.sample(seed), 1, 16, 10).eval()
model = deploy.Classifier(net, [0.5], [0.25]).eval()
example = torch.rand(2, 1, 16, 16)
times = []
for n in range(2):
    start = time.perf_counter()
    deploy.export_onnx(model, example, folder / f"m{n}.onnx")
    times.append(time.perf_counter() - start)
print(json.dumps({"first": times[0], "second": times[1], "params": count_params(net)}))
"""


def one_export(exporter: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-c", EXPORT, exporter, str(seed), tmp,
             str(ROOT / "examples" / "digits.yaml")],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"the export ({exporter}) failed:\n{done.stderr[-3000:]}")
        return {"exporter": exporter, "seed": seed, **json.loads(done.stdout.splitlines()[-1])}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=5, help="models exported by each exporter")
    parser.add_argument("--out", type=Path, default=None, help="folder (default: the results)")
    args = parser.parse_args(argv)
    if args.models < 1:
        parser.error(f"--models {args.models}: give 1 or more")

    exports = []
    for seed in range(args.models):
        order = ("traced", "dynamo") if seed % 2 == 0 else ("dynamo", "traced")
        for exporter in order:
            row = one_export(exporter, seed)
            exports.append(row)
            print(f"model {seed} ({row['params']:,} params) {exporter:>6}: first "
                  f"{row['first']:.2f} s, second {row['second']:.3f} s")  # fmt: skip
    summary: dict = {}
    for exporter in ("traced", "dynamo"):
        rows = [r for r in exports if r["exporter"] == exporter]
        summary[exporter] = {k: spread([r[k] for r in rows]) for k in ("first", "second")}
    for when in ("first", "second"):
        summary[f"{when}_ratio_dynamo_over_traced"] = (
            summary["dynamo"][when]["median"] / summary["traced"][when]["median"]
        )
    t, d = summary["traced"], summary["dynamo"]
    print(
        f"median of {args.models} model(s): traced first {t['first']['median']:.2f} s, then "
        f"{t['second']['median']:.3f} s; torch.export-based first {d['first']['median']:.2f} s, "
        f"then {d['second']['median']:.2f} s ({summary['first_ratio_dynamo_over_traced']:.1f}x "
        f"and {summary['second_ratio_dynamo_over_traced']:.0f}x)"
    )
    import torch

    result = {
        **provenance("onnx_export"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "summary": summary,
        "exports": exports,
    }
    out = args.out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / "onnx_export.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"saved {path}")
    return result


if __name__ == "__main__":
    main()
