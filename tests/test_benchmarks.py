"""The benchmark scripts run as a user runs them and save every figure they promise."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from tests.support import ROOT

SCRIPT = ROOT / "benchmarks" / "trainer_throughput.py"
RESULTS = ROOT / "benchmarks" / "results"


def results_listing() -> dict[str, float]:
    if not RESULTS.exists():
        return {}
    return {p.name: p.stat().st_mtime for p in RESULTS.iterdir()}


def test_trainer_throughput_quick_run_saves_all_rates(tmp_path):
    before = results_listing()
    done = subprocess.run(
        # One thread: two threads on a 2-core machine that is running other jobs can be 10x slower.
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # about 10 s on a 2-core machine
    )
    assert done.returncode == 0, done.stderr
    assert results_listing() == before, "--out must keep the run out of benchmarks/results"

    [saved] = tmp_path.glob("trainer_throughput-*.json")
    report = json.loads(saved.read_text())
    for key in ("date", "git_commit", "cpu", "torch", "torch_threads", "command"):
        assert report[key], key
    assert "--quick" in report["command"] and report["torch_threads"] == 1

    rows = report["results"]
    assert {(r["model"], r["image_size"]) for r in rows} == {
        (m, s) for m in ("1k", "20k", "100k") for s in (16, 32)
    }
    workers = report["settings"]["dataloader_workers"]
    for row in rows:
        target = {"1k": 1_000, "20k": 20_000, "100k": 100_000}[row["model"]]
        assert 0.75 * target <= row["params"] <= 1.25 * target, row["model"]
        rates = row["images_per_second"]
        assert set(rates) == {"leanfit", "limit", *(f"dataloader_w{w}" for w in workers)}
        for name, rate in rates.items():
            assert math.isfinite(rate["median"]) and rate["median"] > 0, name
            assert rate["min"] <= rate["median"] <= rate["max"], name
        # One round: each ratio is exactly the quotient of that round's rates.
        share = row["leanfit_share_of_limit"]["median"]
        assert math.isclose(share, rates["leanfit"]["median"] / rates["limit"]["median"])
        best = max(rates[f"dataloader_w{w}"]["median"] for w in workers)
        speedup = row["leanfit_over_best_dataloader"]["median"]
        assert math.isclose(speedup, rates["leanfit"]["median"] / best)
    assert "(1)/(3)" in done.stdout, "the table is printed"
