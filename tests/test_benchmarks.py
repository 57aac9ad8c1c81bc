"""The benchmark scripts run as a user runs them and save every figure they promise."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from tests import zygote
from tests.support import ROOT, digits_config, write_yaml

SCRIPT = ROOT / "benchmarks" / "trainer_throughput.py"
RESULTS = ROOT / "benchmarks" / "results"


def run_script(argv, *, cwd=None, timeout=None, capture_output=True, text=True, env=None):
    """`subprocess.run(argv, capture_output=True, text=True, ...)` of a benchmark script, forked
    by the tests' zygote (see tests/zygote.py: its imports are done once)."""
    assert capture_output and text
    return zygote.run(argv, cwd=cwd, env=env, timeout=timeout)


def results_listing() -> dict[str, float]:
    if not RESULTS.exists():
        return {}
    return {p.name: p.stat().st_mtime for p in RESULTS.iterdir()}


def test_trainer_throughput_quick_run_saves_all_rates(tmp_path):
    before = results_listing()
    done = run_script(
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


SEARCH_EFFICIENCY = ROOT / "benchmarks" / "search_efficiency.py"


def test_precise_bn_quick_run_judges_every_configuration_both_ways(tmp_path):
    out = tmp_path / "precise_bn.json"
    script = ROOT / "benchmarks" / "precise_bn.py"
    done = run_script(
        [sys.executable, str(script), "--quick", "--threads", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["git_commit"] and report["trainer_thresholds"]["images"] > 0
    assert set(report["sets"]) == {"digits", "digits-first-384"}
    for result in report["sets"].values():
        assert result["configurations"] + result["failed"] == 3
        for way in ("running", "recomputed"):
            assert 0 <= result[way]["top_third_kept"] <= result[way]["top_third"] == 1
            assert 0 < result[way]["mean_high_accuracy"] <= 1
        assert result["recompute_over_epoch_median"] > 0
    # 384 images at batch 16-64 make 6-24 steps an epoch: every one recomputed by the trainer
    assert report["sets"]["digits-first-384"]["low_steps_per_epoch_recomputed_by_trainer"] == 3


def test_decode_quick_run_times_both_decodes_of_every_photo(tmp_path):
    out = tmp_path / "decode.json"
    done = run_script(
        [sys.executable, str(ROOT / "benchmarks" / "decode.py"), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["files"] == 4 and report["git_commit"]
    assert all(v > 0 for v in report["seconds_per_file_median"].values())
    assert report["pixel_difference_max"] <= 4  # the reduced decode gives the same picture


def test_proposal_cost_quick_run_times_each_surrogates_asks(tmp_path):
    out = tmp_path / "proposal_cost.json"
    done = run_script(
        [sys.executable, str(ROOT / "benchmarks" / "proposal_cost.py"), "--quick", "--out",
         str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert [(r["surrogate"], r["results_told"]) for r in report["rows"]] == [("ET", 20), ("GP", 20)]
    assert all(0 < r["median_seconds"] <= r["max_seconds"] for r in report["rows"])
    assert "GP after   20 results: median" in done.stdout


def load_search_efficiency():
    """The benchmark as a module, for its pure functions (it imports its sibling scripts)."""
    spec = importlib.util.spec_from_file_location("search_efficiency", SEARCH_EFFICIENCY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def search_efficiency(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return run_script(
        [sys.executable, str(SEARCH_EFFICIENCY), *args, "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_search_efficiency_tiny_synthetic_run_saves_every_method(tmp_path):
    before = results_listing()
    # every method on the simulated clock (about 20 s: gp_minimize fits its GP)
    done = search_efficiency(tmp_path, "--part", "synthetic", "--seeds", "1", "--minutes", "0.5")
    assert done.returncode == 0, done.stderr
    assert results_listing() == before, "--out must keep the run out of benchmarks/results"

    synthetic = json.loads((tmp_path / "search_efficiency-synthetic.json").read_text())
    assert synthetic["finished"] and synthetic["git_commit"] and synthetic["machine"]["cpu"]
    assert synthetic["leanfit_strategy"]["fit_on"] == "all_rungs"  # the settings compared
    summary = synthetic["summary"]["methods"]
    assert set(summary) == {"leanfit", "random", "gp_minimize", "tpe_hyperband", "nsga2"}
    for name, method in summary.items():
        assert method["trials"]["median"] >= 2, name
        assert 0 < method["hypervolume"]["end"]["median"] <= 2.5, name
    assert "leanfit/random" in synthetic["summary"]["time_ratios"]

    # --resume with a second seed: the first seed's rows are kept, only seed 1 runs (random
    # alone, seconds); the rows of the methods not asked for stay in the file
    again = search_efficiency(
        tmp_path, "--part", "synthetic", "--seeds", "2", "--minutes", "0.5", "--resume",
        "--methods", "random",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    resumed = json.loads((tmp_path / "search_efficiency-synthetic.json").read_text())
    assert again.stdout.count("kept from") == 1
    assert [(r["method"], r["seed"]) for r in resumed["rows"]][-1] == ("random", 1)
    assert len(resumed["rows"]) == len(synthetic["rows"]) + 1 and resumed["rows"][-1]["git_commit"]
    assert resumed["summary"]["seeds"] == [0, 1], resumed["summary"]

    # --random-horizon: random's rows without it are run again, past the budget (its figures
    # within the budget unchanged: the same seed), and set beside leanfit's kept rows
    horizon = ["--part", "synthetic", "--seeds", "1", "--minutes", "0.5", "--resume"]
    again = search_efficiency(
        tmp_path, *horizon, "--methods", "leanfit,random", "--random-horizon", "60"
    )
    assert again.returncode == 0, again.stderr
    assert "random search timed past the budget, up to 60 min" in again.stdout
    past = json.loads((tmp_path / "search_efficiency-synthetic.json").read_text())
    random0 = [r for r in past["rows"] if (r["method"], r["seed"]) == ("random", 0)]
    assert len(random0) == 1 and random0[0]["beyond_budget"]["horizon_seconds"] == 3600
    assert random0[0]["beyond_budget"]["trials"] >= random0[0]["trials"]
    before0 = next(r for r in synthetic["rows"] if (r["method"], r["seed"]) == ("random", 0))
    assert random0[0]["hypervolume"]["end"] == pytest.approx(before0["hypervolume"]["end"])
    (entry,) = past["summary"]["random_past_the_budget"]["per_seed"]
    if entry["bound"] == "exact":
        assert entry["ratio"] == pytest.approx(entry["random"] / entry["leanfit"])


@pytest.mark.slow
def test_search_efficiency_tiny_real_run_saves_every_row_and_resumes(tmp_path):
    before = results_listing()
    # real training, one method per code path (run_search, the LocalExecutor loop, Optuna's
    # processes), 6 s each: worker start-up takes most of it
    real_run = ["--part", "real", "--seeds", "1", "--minutes", "0.1"]
    done = search_efficiency(tmp_path, *real_run, "--methods", "leanfit,random,tpe_hyperband")
    assert done.returncode == 0, done.stderr
    assert results_listing() == before, "--out must keep the run out of benchmarks/results"

    real = json.loads((tmp_path / "search_efficiency-real.json").read_text())
    assert {r["method"] for r in real["rows"]} == {"leanfit", "random", "tpe_hyperband"}
    # 6 s may hold no finished trial on a busy machine (wall clock): only the record is checked
    for row in real["rows"]:
        assert set(row["hypervolume"]) == {"2min", "5min", "10min", "end"}, row
        assert row["hypervolume"]["2min"] is None, "beyond the budget: not reported"
        assert "time_to_target" in row and row["trials"] >= 0

    # --resume keeps the finished (method, seed) rows and runs only the missing method
    again = search_efficiency(
        tmp_path, *real_run, "--resume", "--methods", "leanfit,random,tpe_hyperband,nsga2"
    )
    assert again.returncode == 0, again.stderr
    resumed = json.loads((tmp_path / "search_efficiency-real.json").read_text())
    kept = [{k: v for k, v in r.items() if k != "git_commit"} for r in resumed["rows"][:3]]
    assert kept == [{k: v for k, v in r.items() if k != "git_commit"} for r in real["rows"]]
    assert [r["method"] for r in resumed["rows"]] == ["leanfit", "random", "tpe_hyperband", "nsga2"]
    assert again.stdout.count("kept from") == 3 and resumed["finished"]
    assert "load_before" in resumed["rows"][3] and resumed["rows"][3]["git_commit"]
    # a resume with fewer methods keeps the others' rows in the file
    again = search_efficiency(tmp_path, *real_run, "--resume", "--methods", "leanfit")
    assert again.returncode == 0, again.stderr
    fewer = json.loads((tmp_path / "search_efficiency-real.json").read_text())
    assert [r["method"] for r in fewer["rows"]] == [r["method"] for r in resumed["rows"]]
    assert set(fewer["summary"]["methods"]) == {"leanfit"}
    # another budget would mix figures that do not compare: refused, the file left as it was
    before_text = (tmp_path / "search_efficiency-real.json").read_text()
    again = search_efficiency(
        tmp_path, "--part", "real", "--seeds", "1", "--minutes", "0.2", "--resume",
        "--methods", "leanfit",
    )  # fmt: skip
    assert again.returncode == 2 and "--minutes" in again.stderr, again.stderr
    assert (tmp_path / "search_efficiency-real.json").read_text() == before_text

    # --random-horizon 10x: random goes on past the budget to 10 times leanfit's time to the
    # target. 6 s of search cannot reach 97% at <= 1,000 params: the file is given a leanfit
    # that reached it after 1.5 s, so that random's horizon is 10 x 1.5 = 15 s, past the budget
    path = tmp_path / "search_efficiency-real.json"
    earlier = json.loads(path.read_text())
    earlier["rows"][0]["time_to_target"] = 1.5
    path.write_text(json.dumps(earlier))
    again = search_efficiency(
        tmp_path, *real_run, "--resume", "--methods", "leanfit,random", "--random-horizon", "10x"
    )
    assert again.returncode == 0, again.stderr
    assert "up to 15 s (10x)" in again.stdout, again.stdout
    assert "up to 10 times leanfit's time to the target in each seed" in again.stdout
    real = json.loads(path.read_text())
    random0 = next(r for r in real["rows"] if r["method"] == "random")
    past = random0["beyond_budget"]
    assert past["spec"] == "10x" and past["horizon_seconds"] == pytest.approx(15)
    # it went on past the 6-s budget to the horizon, not past it (a turn of its loop waits at
    # most 1 s); on a busy machine it may finish no trial of 10 epochs in that time
    assert 6 < past["ran_seconds"] <= 15 + 1.5, past
    assert past["trials"] >= random0["trials"] and past["seconds"] <= 15
    assert past["time_to_target"] is None, "random cannot reach the target in 15 s"
    (entry,) = real["summary"]["random_past_the_budget"]["per_seed"]
    assert entry["bound"] == "at least" and entry["ratio"] == pytest.approx(10)
    # the row's own figures are those of the budget: no result after its 6 s
    assert random0["hypervolume"]["2min"] is None and random0["time_to_target"] is None


def test_random_past_the_budget_bounds_each_seed_by_its_own_horizon():
    se = load_search_efficiency()
    rows = [
        {"method": "leanfit", "seed": 0, "time_to_target": 100.0},
        {"method": "leanfit", "seed": 1, "time_to_target": 50.0},
        {"method": "leanfit", "seed": 2, "time_to_target": None},
        {"method": "random", "seed": 0, "beyond_budget": {
            "spec": "10x", "horizon_seconds": 1000.0, "time_to_target": None}},
        {"method": "random", "seed": 1, "beyond_budget": {
            "spec": "10x", "horizon_seconds": 600.0, "time_to_target": 400.0}},
        {"method": "random", "seed": 2, "beyond_budget": {
            "spec": "10x", "horizon_seconds": None, "time_to_target": None}},
    ]  # fmt: skip
    r = se.random_past_the_budget(rows, [0, 1, 2], "10x")
    by = {p["seed"]: p for p in r["per_seed"]}
    assert (by[0]["ratio"], by[0]["bound"]) == (10.0, "at least")
    assert (by[1]["ratio"], by[1]["bound"]) == (8.0, "exact")
    assert by[2]["ratio"] is None and by[2]["bound"] == "leanfit did not reach it"
    assert r["random_reached"] == 1 and r["seeds_at_least_10x"] == 1 and r["median_ratio"] == 9.0
    assert r["horizon"] == "10x" and r["horizon_seconds"] is None  # each seed has its own


def test_search_efficiency_options_refuse_mistakes_and_only_seeds_orders_seeds(capsys):
    """The options are checked before anything runs or is written (the script's exit 2 with no
    file left behind is test_search_efficiency_refuses_one_json_file_for_every_part)."""
    se = load_search_efficiency()
    real = ["--part", "real", "--seeds", "6"]
    assert se.parse_args([*real, "--only-seeds", "5,4"]).only_seeds == [5, 4]
    assert se.parse_args(real).only_seeds == [], "none given: every seed, in order"
    synthetic = ["--part", "synthetic", "--minutes", "0.5"]
    for bad, says in [
        # --random-horizon: minutes past the budget, or (real part) a multiple above 1
        (["--random-horizon", "10x", "--part", "synthetic"], "--part real"),
        ([*real, "--random-horizon", "ten"], "give minutes"),
        ([*real, "--random-horizon", "1x"], "greater than 1"),
        ([*synthetic, "--random-horizon", "0.25"], "--random-horizon 0.25: give more minutes"),
        (["--part", "real", "--only-seeds", "5"], "from 0 to 2"),  # --seeds defaults to 3
        ([*real, "--only-seeds", "4,x"], "distinct seed numbers"),
        ([*real, "--only-seeds", "4,4"], "distinct seed numbers"),
        ([*real, "--only-seeds", "-1"], "distinct seed numbers"),
        (["--part", "synthetic", "--only-seeds", "1"], "for --part real"),
        # these ran nothing and saved a "finished" file, or ran the default (--seeds 0: 20)
        ([*synthetic, "--seeds", "0"], "--seeds 0: give 1 or more"),
        (["--minutes", "0"], "--minutes 0: give a budget above 0"),
        (["--jobs", "0"], "--jobs 0: give 1 or more"),
        (["--part", "overhead", "--trials", "x"], "--trials 'x': give trial counts"),
        (["--part", "overhead", "--sleep", "-1"], "--sleep -1: give 0 or more"),
    ]:
        with pytest.raises(SystemExit) as refused:
            se.parse_args(bad)
        assert refused.value.code == 2, bad
        assert says in capsys.readouterr().err, bad


def test_search_efficiency_resume_refuses_another_parts_file(tmp_path):
    """Its rows were mixed into this part's figures and the file saved as this part's."""
    other = tmp_path / "search_efficiency-synthetic.json"
    other.write_text(json.dumps({"part": "real", "budget_seconds": 30.0, "rows": []}))
    done = search_efficiency(
        tmp_path, "--part", "synthetic", "--seeds", "1", "--minutes", "0.5", "--resume"
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "holds the part 'real', not 'synthetic'" in done.stderr, done.stderr
    assert json.loads(other.read_text())["part"] == "real", "left as it was"
    other.write_text("[]")
    done = search_efficiency(
        tmp_path, "--part", "synthetic", "--seeds", "1", "--minutes", "0.5", "--resume"
    )
    assert done.returncode == 2 and "is not a result file of this script" in done.stderr


def test_the_long_benchmarks_refuse_bad_options_before_they_run(tmp_path):
    """Each found these after its whole run (the result could not be saved), or not at all."""
    for script, args, says in [
        ("digits_front.py", ["--wall-time", "0s"], "--wall-time 0s: give a budget above 0"),
        ("digits_front.py", ["--wall-time", "ten"], "--wall-time ten: 'ten' is not a duration"),
        ("digits_front.py", ["--out", str(tmp_path / "r.json")], "give the folder"),
        ("digits_front.py", ["--experiment", "missing.yaml"], "'missing.yaml' does not exist"),
        ("own_space_search.py", ["--out", str(tmp_path)], "give the .json file"),
        ("own_space_search.py", ["--seeds", "a"], "--seeds 'a': give seeds"),
        ("digits_front_tally.py", ["--out", str(tmp_path)], "give the .json file"),
    ]:
        done = run_script(
            [sys.executable, str(ROOT / "benchmarks" / script), *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, (script, args, done.stderr)
        assert says in done.stderr and "Traceback" not in done.stderr, (script, done.stderr)
    assert not list(tmp_path.iterdir()), "nothing written"


def test_search_efficiency_tiny_overhead_run_saves_its_share(tmp_path):
    before = results_listing()
    out = tmp_path / "runs" / "overhead-tiny.json"  # a file of its own name, in a new folder
    done = search_efficiency(
        out, "--part", "overhead", "--trials", "4", "--sleep", "0.01", "--command-trials", "3"
    )
    assert done.returncode == 0, done.stderr
    assert results_listing() == before, "--out must keep the run out of benchmarks/results"
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    overhead = json.loads(out.read_text())
    [row] = overhead["rows"]
    assert row["trials"] == 4 and 0 < row["non_training_share"] < 1
    assert "not training" in done.stdout, "the table is printed"
    # where the time outside training went adds up to it, and the workers were each given jobs
    parts = row["outside_training_per_worker"]
    outside = row["wall_seconds"] - row["training_seconds_per_worker"]
    assert sum(parts.values()) == pytest.approx(outside, abs=0.05)
    assert parts["before_first_job"] > 0 and parts["after"] > 0
    assert "before_first_job" in done.stdout
    # the same search as a `leanfit search` command, timed from its start to its exit
    [command] = overhead["command_rows"]
    assert command["trials"] == 3 and 0 < command["non_training_share"] < 1


def test_search_efficiency_refuses_one_json_file_for_every_part(tmp_path):
    done = search_efficiency(tmp_path / "all.json", "--seeds", "1")
    assert done.returncode == 2
    assert "--out" in done.stderr and "--part" in done.stderr
    assert not (tmp_path / "all.json").exists()


@pytest.mark.slow
def test_warm_start_tiny_run_saves_every_figure(tmp_path):
    script = ROOT / "benchmarks" / "warm_start.py"
    before = results_listing()
    done = run_script(
        # 24 s on the old data, then at most 12 s each warm and cold: about 90 s in all
        [sys.executable, str(script), "--seeds", "1", "--old-minutes", "0.25",
         "--cap-minutes", "0.1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # only its own file: other benchmarks may be writing theirs meanwhile
    mine = "warm_start-cpu.json"
    assert results_listing().get(mine) == before.get(mine), "--out must keep the run out"

    report = json.loads((tmp_path / mine).read_text())
    assert report["finished"] and report["git_commit"] and "--seeds" in report["command"]
    assert report["machine"]["cpu"] and len(report["machine"]["load_average_after"]) == 3
    assert 1.28 <= report["settings"]["data"]["growth"] <= 1.32
    [row] = report["rows"]
    assert row["digests"]["old"] != row["digests"]["new"], "the data changed"
    assert row["old"]["trials"] >= 1
    if "skipped" in row:  # a busy machine may finish no model of <= 2,000 params in 24 s
        assert row["target"]["small_end_hypervolume"] == 0
    else:
        assert row["target"]["small_end_hypervolume"] > 0
        warm, cold = row["warm"], row["cold"]
        assert warm["warm_started_from"] and warm["prior_results_told"] >= 1
        assert cold["warm_started_from"] is None and cold["prior_results_told"] == 0
        for figures in (warm, cold):
            assert figures["reached"] == (figures["time_to_target"] is not None)
            assert figures["seconds"] > 0 and figures["trials"] >= 0
        assert row["ratio"]["bound"] in ("exact", "at least", "at most", "neither reached")
        assert report["summary"]["goal_met"] in ("yes", "no", "undecided")
    assert "cold/warm" in done.stdout, "the table is printed"


def test_digits_front_retrains_an_earlier_runs_picks_without_a_search(tmp_path):
    before = results_listing()
    earlier = RESULTS / "digits_front-cpu-run1.json"
    done = run_script(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "digits_front.py"),
            "--retrain-picks-of",
            str(earlier),
            "--score-on",
            "val",
            "--seeds",
            "1",
            "--first-seed",
            "7",
            "--retrain-epochs",
            "1",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # a few seconds
    )
    assert done.returncode == 0, done.stderr
    assert results_listing() == before, "--out must keep the run out of benchmarks/results"
    [saved] = tmp_path.glob("digits_front-retrain-*-val.json")
    report = json.loads(saved.read_text())
    assert report["score_on"] == "val" and report["seeds"] == [7]
    picked = json.loads(earlier.read_text())["picks"]
    assert [p["params"] for p in report["picks"]] == [p["params"] for p in picked if p["found"]]
    for pick in report["picks"]:
        [acc] = pick["retrained"]["1"]["val_accuracy"]
        assert 0.0 <= acc <= 1.0 and pick["retrained"]["1"]["mean"] == acc


@pytest.mark.slow
def test_digits_front_search_then_retrained_picks(tmp_path):
    """The benchmark's own path, shortened: a real search, progress lines in its log, then the
    picks at both limits chosen from retrained finalists and saved with their test figures."""
    before = results_listing()
    data = digits_config()
    data["budget"].update(min_epochs=1, max_epochs=3)
    data["pipeline"].update(final_epochs=2, distill=True, refit=True)
    experiment = write_yaml(tmp_path / "digits.yaml", data)
    command = [sys.executable, str(ROOT / "benchmarks" / "digits_front.py"), "--experiment",
               str(experiment), "--wall-time", "12s", "--seeds", "1", "--finalists", "2",
               "--retrain-epochs", "1,2", "--out", str(tmp_path / "out")]  # fmt: skip
    done = run_script(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,  # about 40 s on a 2-core machine
    )
    assert done.returncode == 0, done.stderr
    assert results_listing() == before, "--out must keep the run out of benchmarks/results"
    assert "budget left" in done.stdout, "the search's progress is printed"
    report = json.loads((tmp_path / "out" / "digits_front-cpu.json").read_text())
    assert report["trials"] > 0 and report["front"] and report["final_epochs"] == 2
    # each job trains at least an epoch, and a trial at most max_epochs (promotions go on)
    assert report["jobs_done"] <= report["epochs_trained"] <= 3 * report["trials"], report
    assert report["curve_stop"] is False and report["curve_stopped"] == 0
    assert [p["max_params"] for p in report["picks"]] == [1_000, 2_000]
    for pick in report["picks"]:
        if not pick["found"]:
            continue
        assert pick["params"] <= pick["max_params"]
        assert 1 <= len(pick["finalists"]) <= 2
        chosen = max(pick["finalists"], key=lambda f: (f["val_accuracy_mean"], -f["params"]))
        assert chosen["trial"] == pick["trial"]
        # with pipeline.refit, the pick's figure is its refit's; the one before is kept
        assert pick["without_refit"]["test_accuracy_mean"] == chosen["test_accuracy_mean"]
        [refit] = pick["refit_test_accuracy"]
        assert pick["test_accuracy_mean"] == refit and "refit on training" in pick["chosen_by"]
        assert 0.0 <= pick["test_accuracy_mean"] <= 1.0
        assert set(pick["search_best"]["retrained"]) == {"1", "2"}
        # with pipeline.distill, the search's best taught the finalists, and the pick was also
        # trained without it, for the record
        if pick["trial"] != report["teacher"]["trial"]:
            assert "taught by trial" in pick["chosen_by"]
            assert 0.0 <= pick["without_teacher"]["test_accuracy_mean"] <= 1.0
    most_accurate = max(report["front"], key=lambda t: (t["val_accuracy"], -t["params"]))
    assert report["teacher"]["params"] == most_accurate["params"]


def test_own_space_search_tiny_run_compares_leanfit_with_full_fidelity_random(tmp_path):
    """benchmarks/own_space_search.py: leanfit.optimize over examples/own_space.py's space of
    its own, the default search against random search at full fidelity, both measured alike."""
    out = tmp_path / "own.json"
    # 6 trials a method, within 120 s: a wall time alone (8 s) once ended with leanfit's workers
    # still starting (0 jobs) while the suite's other process loaded the machine
    done = run_script(
        [sys.executable, str(ROOT / "benchmarks" / "own_space_search.py"), "--seeds", "0",
         "--wall", "120", "--trials", "6", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    [row] = report["table"]
    runs = {r["method"]: r for r in report["runs"]}
    for method in ("leanfit", "random"):
        assert row[f"{method}_jobs"] >= 1 and row[f"{method}_hv_end"] > 0, row
        assert all(r["t"] > 0 and r["params"] > 0 for r in runs[method]["rows"])
    assert {r["epochs"] for r in runs["random"]["rows"]} == {27}  # every one trained in full
    assert 1 in {r["epochs"] for r in runs["leanfit"]["rows"]}  # ASHA's first rung
    assert runs["leanfit"]["size_range"] == [2.0, 5.0]  # 310 to about 43,000 parameters
    assert "HV@1 leanfit/random" in done.stdout and report["commit"]
    assert report["trials"] == 6 and all(r["trials"] == 6 for r in report["runs"])


def test_distill_paired_trains_each_pick_with_and_without_a_teacher(tmp_path):
    """benchmarks/distill_paired.py, shortened: an earlier run's picks, each trained plainly and
    taught on the same seed, scored on a split of their own; a run that was never saved is
    named, exit 2."""
    before = results_listing()
    script = str(ROOT / "benchmarks" / "distill_paired.py")
    done = run_script(
        [sys.executable, script, "--runs", "27", "--seeds", "1", "--epochs", "2",
         "--workers", "1", "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert results_listing() == before, "--out must keep the run out of benchmarks/results"
    report = json.loads((tmp_path / "distill_paired-split1.json").read_text())
    assert [r["params"] for r in report["rows"]] == [846, 1_138]  # run 27's two picks
    for row in report["rows"]:
        assert len(row["plain"]) == len(row["taught"]) == 1
        assert row["difference"] == pytest.approx(row["taught"][0] - row["plain"][0])
    assert report["summary"]["pairs"] == 2 and report["teacher"]["params"] > 9_000
    missing = run_script(
        [sys.executable, script, "--runs", "999", "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (
        missing.returncode == 2
        and "--runs: no benchmarks/results/digits_front-cpu-run999.json" in missing.stderr
    )


def test_refit_paired_trains_each_pick_on_train_and_on_train_and_validation(tmp_path):
    """benchmarks/refit_paired.py, shortened: an earlier run's picks, each trained on the
    training split and on training + validation with the same seed, scored on the test split."""
    before = results_listing()
    done = run_script(
        [sys.executable, str(ROOT / "benchmarks" / "refit_paired.py"), "--runs", "27",
         "--seeds", "1", "--epochs", "1", "--workers", "1", "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert results_listing() == before, "--out must keep the run out of benchmarks/results"
    report = json.loads((tmp_path / "refit_paired-split0.json").read_text())
    assert [r["params"] for r in report["rows"]] == [846, 1_138]  # run 27's two picks
    for row in report["rows"]:
        assert len(row["plain"]) == len(row["refit"]) == 1
        assert row["difference"] == pytest.approx(row["refit"][0] - row["plain"][0])
    by_limit = report["summary"]["by_limit"]
    assert set(by_limit) == {"1000", "2000"} and by_limit["2000"]["goal"] == 0.985
    assert "refit - train only" in done.stdout


def test_epochs_paired_refits_each_pick_at_two_lengths_with_the_same_seeds(tmp_path):
    """benchmarks/epochs_paired.py, shortened: an earlier run's picks, each refit (training +
    validation) at the final length and at a longer one, the same seed, scored on the test
    split; a length of 0 is refused."""
    script = str(ROOT / "benchmarks" / "epochs_paired.py")
    done = run_script(
        [sys.executable, script, "--runs", "27", "--seeds", "1", "--epochs", "1", "--longer",
         "2", "--workers", "1", "--split", "0", "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "epochs_paired-split0.json").read_text())
    assert (report["epochs"], report["longer"]) == (1, 2)
    assert [r["params"] for r in report["rows"]] == [846, 1_138]  # run 27's two picks
    for row in report["rows"]:
        assert len(row["final"]) == len(row["longer"]) == 1
        assert row["difference"] == pytest.approx(row["longer"][0] - row["final"][0])
    by_limit = report["summary"]["by_limit"]
    assert set(by_limit["1000"]) >= {"met_final", "met_longer"}
    assert "2 - 1 epochs" in done.stdout
    refused = run_script(
        [sys.executable, script, "--runs", "27", "--longer", "0", "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2 and "--longer and --seeds: give 1 or more" in refused.stderr


def test_digits_front_tally_reads_every_format_of_run_file_and_counts_each_goal(tmp_path):
    tally = ROOT / "benchmarks" / "digits_front_tally.py"
    results = tmp_path / "results"
    results.mkdir()

    def pick(max_params, params, **figures):
        return {"max_params": max_params, "found": True, "params": params, **figures}

    def save(name, picks, **extra):
        (results / name).write_text(json.dumps({"date": "2026-11-22T00:00", "picks": picks,
                                                "git_commit": "abcdef012", **extra}))  # fmt: skip

    # run 1: the 60-epoch figures only in a retraining file of their own
    save("digits_front-cpu-run1.json", [pick(1000, 644, retrained={}), pick(2000, 1554)])
    (results / "digits_front-retrain-digits_front-cpu-run1-test.json").write_text(json.dumps(
        {"picks": [{"max_params": 1000, "params": 644, "retrained": {"60": {"mean": 0.975}}},
                   {"max_params": 2000, "params": 1554, "retrained": {"60": {"mean": 0.984}}}]}
    ))  # fmt: skip

    # run 2: the unnumbered first file, figures under retrained["60"]
    def sixty(mean):
        return {"60": {"test_accuracy_mean": mean}}

    save("digits_front-cpu.json", [pick(1000, 909, retrained=sixty(0.969)),
                                   pick(2000, 1344, retrained=sixty(0.99))])  # fmt: skip

    # run 12: the current format, refit (without_refit kept), a goal not found; its finalists'
    # figures: the second within one validation image (1/359) of the best, the third not
    def finalist(params, val, test):
        return {"params": params, "val_accuracy_mean": val, "test_accuracy_mean": test}

    finalists = [finalist(816, 0.99, 0.975), finalist(700, 0.9875, 0.96),
                 finalist(500, 0.98, 0.99)]  # fmt: skip
    save("digits_front-cpu-run12.json", [
        pick(1000, 816, test_accuracy_mean=0.981, without_refit={"test_accuracy_mean": 0.965},
             finalists=finalists),
        {"max_params": 2000, "found": False},
    ])  # fmt: skip
    save("digits_front-cpu-run13.json", [pick(1000, 662, test_accuracy_mean=0.95)],
         teacher={"params": 11906})  # fmt: skip
    save("digits_front-cpu-ehvi-only.json", [pick(1000, 906, test_accuracy_mean=0.99)])

    def run(*args):
        return run_script([sys.executable, str(tally), "--results", str(results), *args],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    done = run()
    assert done.returncode == 0, done.stderr
    report = json.loads((results / "digits_front-tally.json").read_text())
    assert [r["run"] for r in report["runs"]] == [1, 2, 12, 13]  # the side experiment left out
    figures = {(r["run"], k): p["test_accuracy_mean"] for r in report["runs"]
               for k, p in r["picks"].items()}  # fmt: skip
    assert figures == {(1, "1000"): 0.975, (1, "2000"): 0.984, (2, "1000"): 0.969,
                       (2, "2000"): 0.99, (12, "1000"): 0.981, (12, "2000"): None,
                       (13, "1000"): 0.95}  # fmt: skip
    assert report["counts"]["all"] == {"1000": {"met": 2, "runs": 4}, "2000": {"met": 1, "runs": 4}}
    assert report["counts"]["refit on train + val"]["1000"] == {"met": 1, "runs": 1}
    assert report["counts"]["distilled"]["1000"] == {"met": 0, "runs": 1}
    # the refit pick as it scored before its refit: 96.5%, under the goal
    before = report["counts"]["the refit picks before their refit"]
    assert before["1000"] == {"met": 0, "runs": 1} and before["2000"]["met"] == 0
    assert "all: <= 1,000: 2 of 4, <= 2,000: 1 of 4" in done.stdout
    # and the picture of it beside the JSON
    assert (results / "digits_front-tally.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # among the finalists, each rule's choice scored by its own retrainings (training split)
    (twelve,) = [r for r in report["runs"] if r["run"] == 12]
    best, smallest = "finalists: the best by validation", "finalists: the smallest within one"
    assert twelve["picks"]["1000"][best]["params"] == 816
    assert twelve["picks"]["1000"][smallest + " validation image"]["params"] == 700
    assert report["counts"][best]["1000"] == {"met": 1, "runs": 1}
    assert report["counts"][smallest + " validation image"]["1000"] == {"met": 0, "runs": 1}

    done = run("--since", "12")
    assert done.returncode == 0, done.stderr
    report = json.loads((results / "digits_front-tally-since12.json").read_text())
    assert (results / "digits_front-tally-since12.png").is_file()
    assert [r["run"] for r in report["runs"]] == [12, 13]

    done = run("--since", "99")
    assert done.returncode == 2 and "no digits_front-cpu*.json run numbered 99" in done.stderr


def test_onnx_export_times_each_exporter_on_the_same_models(tmp_path):
    """benchmarks/onnx_export.py, shortened: one model, each exporter in a fresh process, timed
    at its first export and its second. A bad count is refused before anything runs."""
    script = str(ROOT / "benchmarks" / "onnx_export.py")
    refused = run_script(
        [sys.executable, script, "--models", "0", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "--models 0: give 1 or more" in refused.stderr
    assert not list(tmp_path.iterdir())
    before = results_listing()
    done = run_script(
        [sys.executable, script, "--models", "1", "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert results_listing() == before, "--out must keep the run out of benchmarks/results"
    report = json.loads((tmp_path / "onnx_export.json").read_text())
    assert report["git_commit"] and report["cpu_count"] and report["torch"]
    assert [r["exporter"] for r in report["exports"]] == ["traced", "dynamo"]
    # the first export pays the exporter's imports
    assert all(r["first"] > r["second"] > 0 for r in report["exports"]), report["exports"]
    assert report["exports"][0]["params"] == report["exports"][1]["params"] > 0
    assert report["summary"]["second_ratio_dynamo_over_traced"] > 0
    assert "median of 1 model(s): traced first" in done.stdout


def test_pause_stress_counts_pauses_and_saves_them(tmp_path):
    """`benchmarks/pause_stress.py`, a few pauses: each is counted, none left stopped, saved."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "pause_stress.py"), "--cycles", "20",
         "--load", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [saved] = tmp_path.glob("pause_stress-*.json")
    result = json.loads(saved.read_text())
    assert (result["cycles"], result["left_stopped"], result["not_paused"]) == (20, 0, 0), result
    assert "0 of 20 pauses left the step stopped" in done.stdout
