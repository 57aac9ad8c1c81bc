"""`leanfit.optimize`: the search on an objective function of the user's own.

A user's script is run as a user runs it (a subprocess, 2 worker processes, its own MLflow
database); the in-process form (workers=0) runs in the test's process. And a dry run's synthetic
objective no longer stands in for real training: the two are different searches.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

import leanfit
from leanfit.errors import LeanfitError
from leanfit.search.run import failure_lines
from leanfit.track.search import TAG_KIND, TAG_OBJECTIVE
from tests.support import digits_config, run_cli, without_permission_bypass, write_yaml

SCRIPT = '''
import json, math, os, sys
import leanfit

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jobs.jsonl")


def objective(trial):
    """A learning curve that rises with the epochs, best near lr 0.03; the state counts the
    epochs trained, so a promotion that started again from nothing would show."""
    state = trial.state or {"trained": 0}
    assert state["trained"] == trial.epoch, (state, trial.epoch)
    start = trial.epoch
    if trial.config["lr"] > 0.25:
        raise RuntimeError("diverged")  # a bug in the user's code fails that trial only
    while trial.running:
        state["trained"] += 1
        lr = trial.config["lr"]
        acc = 0.99 - 0.4 * math.exp(-trial.epoch / 3) - 0.03 * abs(math.log10(lr) + 1.5)
        trial.report(acc, train_loss=1 - acc)
    with open(LOG, "a") as f:
        import torch

        job = {"trial": trial.number, "rung": trial.rung, "from": start, "to": trial.epoch,
               "threads": torch.get_num_threads()}
        f.write(json.dumps({**job, "pid": os.getpid()}) + "\\n")
    return state


if __name__ == "__main__":
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "main.log"), "a") as f:
        f.write(f"{os.getpid()}\\n")  # once: the workers load this file without running this
    result = leanfit.optimize(objective, "e.yaml", workers=2, trials=24, progress=False)
    print(json.dumps({"trials": result.trials, "failed": result.failed,
                      "front": result.front, "hypervolume": result.hypervolume,
                      "run_id": result.run_id, "report": str(result.report_html),
                      "best_smallest": result.best(result.front[0]["params"]),
                      "none_smaller": result.best(result.front[0]["params"] - 1),
                      "best": result.best()}))
'''


def experiment(folder: Path, **budget) -> Path:
    # (an absolute database: MLflow keeps a store per URI in a process, and in-process tests run
    # in other folders one after another)
    cfg = digits_config(
        budget={"min_epochs": 1, "max_epochs": 9, "trials": 24, **budget},
        executor={"kind": "local", "workers": 2},
        tracking={"uri": f"sqlite:///{folder / 'mlflow.db'}"},
    )
    cfg["strategy"]["initial_points"] = 6
    cfg["space"]["hyperparameters"]["lr"] = {"low": 0.001, "high": 0.5, "log": True}
    return write_yaml(folder / "e.yaml", cfg)


def test_a_scripts_objective_is_searched_in_workers_and_promotions_go_on_from_its_state(
    tmp_path,
):
    experiment(tmp_path)
    (tmp_path / "mine.py").write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "mine.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["trials"] == 24 and out["front"] and out["hypervolume"] > 0
    assert Path(out["report"]).is_file()
    # the script's main block ran once: not again in each worker
    assert len((tmp_path / "main.log").read_text().split()) == 1
    jobs = [json.loads(line) for line in (tmp_path / "jobs.jsonl").read_text().splitlines()]
    assert len({j["pid"] for j in jobs}) == 2  # two worker processes shared the jobs
    # each worker's torch has its share of the cores, as leanfit's own training has
    assert {j["threads"] for j in jobs} == {max(1, len(os.sched_getaffinity(0)) // 2)}
    by_trial: dict[str, list] = {}
    for j in jobs:
        by_trial.setdefault(j["trial"], []).append(j)
    promoted = [t for t, js in by_trial.items() if len(js) > 1]
    assert promoted, "ASHA promoted no trial"
    for js in by_trial.values():  # each job went on where the rung below stopped
        js.sort(key=lambda j: j["from"])
        assert js[0]["from"] == 0 and [j["rung"] for j in js] == list(range(len(js)))
        assert all(a["to"] == b["from"] for a, b in zip(js, js[1:], strict=False))
    # the trials of lr > 0.25 failed, with the error recorded; the others did not
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    search = client.get_run(out["run_id"])
    assert search.data.tags[TAG_OBJECTIVE] == f"python:{tmp_path / 'mine.py'}:objective"
    trials = client.search_runs(
        [search.info.experiment_id], f"tags.`{TAG_KIND}` = 'trial'", max_results=500
    )
    failed = [r for r in trials if r.info.status == "FAILED"]
    diverged = [r for r in trials if json.loads(r.data.params["lr"]) > 0.25]
    assert {r.info.run_id for r in failed} == {r.info.run_id for r in diverged}
    assert out["failed"] == len(failed)
    ok = [r for r in trials if r.info.status == "FINISHED"]
    assert ok and all("train_loss" in r.data.metrics for r in ok)
    assert all(m["config"]["lr"] <= 0.25 for m in out["front"])
    # on a front (smallest first) the most accurate model within a size is the largest there
    assert out["best_smallest"] == out["front"][0] and out["best"] == out["front"][-1]
    assert out["none_smaller"] is None


def flaky(trial):
    """One trial in five raises, one in five reports NaN: the search goes on without them."""
    n = trial.number
    while trial.running:
        if n % 5 == 1:
            raise ValueError("a bug")
        trial.report(float("nan") if n % 5 == 2 else 0.5 + 0.04 * trial.epoch)
    return None


def test_in_process_objective_records_crashes_and_nan_as_failed_trials(in_tmp):
    experiment(in_tmp, trials=15)
    result = leanfit.optimize(flaky, "e.yaml", workers=0, progress=False)
    assert result.trials == 15
    failed = {t.trial_id: t.failed for t in result.controller.trials.values() if t.failed}
    assert set(failed) == {t for t in range(15) if t % 5 in (1, 2)}
    assert "ValueError: a bug" in failed[1] and "NaN" in failed[2]
    assert result.front and all(m["trial"] % 5 not in (1, 2) for m in result.front)
    # what the user sees of them: each error once, with its trials (before: a count)
    said = "\n".join(failure_lines(result.controller))
    assert "6 trial(s) failed" in said
    assert "3 x ValueError: a bug (trial 1, 6, 11)" in said
    assert "3 x val_accuracy NaN (trial 2, 7, 12)" in said
    assert "Failed trials" in result.report_html.read_text()
    shown = run_cli("report", "e.yaml", cwd=in_tmp)  # read back from MLflow
    assert shown.returncode == 0, shown.stderr
    assert "3 x ValueError: a bug (trial 1, 6, 11)" in shown.stdout
    assert "it optimised the Python objective tests.test_api:flaky, not real" in shown.stdout
    as_json = json.loads(run_cli("report", "e.yaml", "--json", cwd=in_tmp).stdout)
    assert {"error": "ValueError: a bug", "trials": [1, 6, 11]} in as_json["failures"]
    assert as_json["objective"] == "python:tests.test_api:flaky"
    # every error a line, the commonest first, nothing else (a heading was its first line)
    assert result.failures == [line.strip() for line in failure_lines(result.controller)[1:]]


STARTS: list[tuple[int, int, int]] = []


def chatty(trial):
    """Prints as a user's objective does, and warns as a library does."""
    import warnings

    while trial.running:
        # half a line flushed, then the rest: two workers' halves were put on one line
        print(f"chatty trial {trial.number} epoch {trial.epoch}:", end="", flush=True)
        time.sleep(0.02)
        print(" done", flush=True)
        trial.report(0.5 + 0.04 * trial.epoch)
    sys.stdout.buffer.write(f"bytes of trial {trial.number}\n".encode())  # (failed the trial)
    warnings.warn(f"chatty trial {trial.number} ended", stacklevel=1)
    return None


def test_what_an_objective_prints_in_a_worker_is_written_by_the_search(in_tmp, capsys):
    """A worker's prints go to the search's own stdout and stderr, where its live progress line
    writes them above itself; written by the worker to the terminal, they were written over
    it. (capsys sees only what this process writes, not the workers' file descriptors.)"""
    experiment(in_tmp, trials=3)
    leanfit.optimize(chatty, "e.yaml", workers=2, trials=3, progress=False)
    out, err = capsys.readouterr()
    lines = set(out.splitlines())
    assert {f"chatty trial {n} epoch 0: done" for n in range(3)} <= lines, out
    assert {f"bytes of trial {n}" for n in range(3)} <= lines, out
    assert "UserWarning: chatty trial 0 ended" in err, err


def stateless(trial):
    """Keeps nothing: a promotion can only train again from the start."""
    STARTS.append((trial.number, trial.rung, trial.epoch))
    while trial.running:
        trial.report(0.5 + 0.04 * (trial.epoch + 1))  # the accuracy after this epoch
    return None


def counts_from_zero(trial):
    """An Optuna habit: `range(trial.epochs)`, though a promoted trial is trial.epoch in."""
    for _ in range(trial.epochs):
        trial.report(0.5 + 0.04 * trial.epoch)
    return {"kept": True}


def test_a_stateless_objective_trains_promotions_from_the_start_and_overcounting_is_said(in_tmp):
    experiment(in_tmp, trials=12)
    STARTS.clear()
    result = leanfit.optimize(stateless, "e.yaml", workers=0, progress=False)
    promoted = [(n, rung, epoch) for n, rung, epoch in STARTS if rung > 0]
    assert promoted and all(epoch == 0 for _, _, epoch in promoted)
    for t in result.controller.trials.values():  # each rung's accuracy is of its own epochs
        for metrics in t.results.values():
            assert metrics["val_accuracy"] == pytest.approx(0.5 + 0.04 * metrics["epoch"])
    # reporting past the rung's epochs fails the promoted trial, saying how to loop
    result = leanfit.optimize(counts_from_zero, "e.yaml", workers=0, progress=False)
    assert result.front  # the first rung of each trial is fine
    said = "\n".join(result.failures)
    assert "RuntimeError: trial.report: epoch " in said and "loop `while trial.running:`" in said


def test_trial_report_takes_numbers_only_and_says_the_loop_in_the_first_rungs_words():
    """`report("0.9")` and `report(True)` were taken as 0.9 and 1.0 (float() takes both); a
    first-rung trial reporting too often was told "starts at trial.epoch 0, not 0"."""
    from leanfit.objective import Trial
    from leanfit.train.trial import TrialSpec

    trial = Trial(TrialSpec(trial_id="trial-00001-rung-0", config={}, epochs=1), None, 0, [])
    for value in ("0.9", True, b"1"):
        with pytest.raises(TypeError, match="val_accuracy must be a number, got"):
            trial.report(value)
    with pytest.raises(TypeError, match="train_loss must be a number, got str"):
        trial.report(0.5, train_loss="low")
    # leanfit's own metrics: MLflow kept both values, and the user's was read as the model's size
    for own in ("params", "epoch", "macs", "wall_time", "train_time"):
        with pytest.raises(TypeError, match=f"{own}= is a metric leanfit logs itself .*my_{own}="):
            trial.report(0.5, **{own: 7})
    trial.report(0.5)
    with pytest.raises(RuntimeError, match=r"\(1\); loop `while trial.running:`$"):
        trial.report(0.6)
    promoted = Trial(TrialSpec(trial_id="trial-00001-rung-1", config={}, epochs=3), None, 1, [])
    for _ in range(2):
        promoted.report(0.7)
    with pytest.raises(RuntimeError, match="a promoted trial starts at trial.epoch 1, not 0"):
        promoted.report(0.8)


BROKEN = {"now": True}


def broken_until_fixed(trial):
    if BROKEN["now"]:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    while trial.running:
        trial.report(0.6 + 0.03 * trial.epoch)


def test_a_search_whose_every_trial_fails_stops_after_ten_and_resumes_once_fixed(in_tmp):
    """One error repeated would spend the whole budget on nothing: the search stops at the
    tenth failed job with the error, marked FAILED; fixed, `resume=True` goes on with it."""
    from leanfit.search.controller import FAIL_FAST_JOBS, SearchFailed

    experiment(in_tmp, trials=40)
    BROKEN["now"] = True
    with pytest.raises(SearchFailed) as stopped:
        leanfit.optimize(broken_until_fixed, "e.yaml", workers=0, progress=False)
    said = str(stopped.value)
    assert f"every trial job of the search failed ({FAIL_FAST_JOBS}), so it stopped" in said
    assert "10 x RuntimeError: CUDA error: an illegal memory access" in said
    client = MlflowClient(f"sqlite:///{in_tmp / 'mlflow.db'}")
    (search,) = client.search_runs(
        [client.get_experiment_by_name("leanfit-digits").experiment_id],
        f"tags.`{TAG_KIND}` = 'search'",
    )
    assert search.info.status == "FAILED"
    trials = client.search_runs([search.info.experiment_id], f"tags.`{TAG_KIND}` = 'trial'")
    assert len(trials) == FAIL_FAST_JOBS  # none started after the tenth failure
    BROKEN["now"] = False
    result = leanfit.optimize(broken_until_fixed, "e.yaml", workers=0, resume=True, progress=False)
    assert result.run_id == search.info.run_id and result.trials == 40 and result.front
    # its ten failed jobs ran again, once, fixed (they were left failed, for good)
    assert not result.failures
    assert all(result.controller.trials[i].results for i in range(FAIL_FAST_JOBS))
    # a budget too small to reach ten jobs, all of them failed, ends the same way
    experiment(in_tmp, trials=3)
    BROKEN["now"] = True
    # (not "stopped": it ran its whole budget)
    with pytest.raises(SearchFailed, match=r"failed \(3\): 3 x RuntimeError"):
        leanfit.optimize(broken_until_fixed, "e.yaml", workers=0, progress=False)
    # executor.fail_fast: how many failed jobs stop it (Katib's maxFailedTrialCount); 0: none
    # do before the budget's end
    for fail_fast, trials, said in ((4, 20, r"\(4\), so it stopped"), (0, 14, r"\(14\): ")):
        cfg = yaml.safe_load(experiment(in_tmp, trials=trials).read_text())
        cfg["executor"]["fail_fast"] = fail_fast
        with pytest.raises(SearchFailed, match=f"failed {said}") as ended:
            leanfit.optimize(broken_until_fixed, cfg, workers=0, progress=False)
        # fail_fast: 0 ran the whole budget: the setting the user chose is not offered again
        assert ("fail_fast" in str(ended.value)) == (fail_fast != 0), str(ended.value)
    assert "executor.fail_fast" in str(stopped.value)


class Trainer:
    """An objective as a method of an object, and an object that can be called."""

    def __init__(self, scale: float):
        self.scale = scale

    def objective(self, trial):
        while trial.running:
            trial.report(self.scale)

    __call__ = objective


def test_objectives_and_budgets_it_cannot_search_with_are_refused_before_anything_starts(in_tmp):
    experiment(in_tmp)
    # a dict is read as the file is: a mistake names its field
    with pytest.raises(LeanfitError, match="budget.min_epochs"):
        leanfit.optimize(flaky, {**digits_config(), "budget": {"min_epochs": "two"}}, workers=0)
    # resuming what is not there is said in the API's words
    with pytest.raises(LeanfitError, match=r"resume=True: no tracking database .* without resume"):
        leanfit.optimize(flaky, "e.yaml", workers=0, resume=True, progress=False)
    cases = [
        (dict(objective=lambda t: None, workers=2), "not defined at the top level"),
        # before: accepted, then every trial failed with "missing 1 required positional argument"
        (dict(objective=Trainer(0.5).objective, workers=2), r"Trainer.objective is a method of"),
        (dict(objective=functools.partial(flaky), workers=2), "a functools.partial of flaky"),
        (dict(objective=Trainer(0.5), workers=2), "an object of class Trainer that can be called"),
        (dict(objective=flaky, workers=-1), "workers: -1"),
        (dict(objective=flaky, workers=0, wall_time="ten minutes"), "wall_time"),
        (dict(objective=flaky, workers=0, trials=0), "trials: 0"),
        (dict(objective="flaky", workers=2), "not a function"),
        # before: a TypeError from inside the search (or, for 2.5, 3 trials ran)
        (dict(objective=flaky, workers="2"), "workers: '2' is not a whole number"),
        (dict(objective=flaky, workers=1.5), "workers: 1.5 is not a whole number"),
        (dict(objective=flaky, workers=0, trials=2.5), "trials: 2.5 is not a whole number"),
        (dict(objective=flaky, workers=0, trials="3"), "trials: '3' is not a whole number"),
        # a number as a string: seconds or minutes? (it ran 5 seconds); a format it cannot read
        (dict(objective=flaky, workers=0, wall_time="5"), "give a unit: '5s', '5m' or '5h'"),
        (dict(objective=flaky, workers=0, wall_time="5 minutes"), "is not a duration; write e"),
    ]
    for kwargs, message in cases:
        with pytest.raises(LeanfitError, match=message):
            leanfit.optimize(experiment="e.yaml", progress=False, **kwargs)
    with pytest.raises(LeanfitError, match=r"experiment: \[1, 2\] is a list; give an experiment"):
        leanfit.optimize(flaky, [1, 2], workers=0, trials=3, progress=False)
    cfg = digits_config(executor={"kind": "kubernetes", "kubernetes": {"pvc": "work"}})
    write_yaml(in_tmp / "k.yaml", cfg)
    with pytest.raises(LeanfitError, match="executor.kind: kubernetes"):
        leanfit.optimize(flaky, "k.yaml", workers=2, progress=False)
    assert not (in_tmp / "mlflow.db").exists()


def test_a_dry_runs_search_is_not_reused_resumed_or_warm_started_by_real_training(in_tmp):
    """`leanfit search FILE --synthetic` logs made-up accuracies: the pipeline's search (which
    reuses a finished search of its settings and data) used to take them as its own results."""
    from leanfit.config import load_experiment
    from leanfit.search.run import run_search
    from leanfit.track import TrialLogger
    from leanfit.track.search import SearchLog, search_key

    cfg = digits_config(
        budget={"min_epochs": 1, "max_epochs": 2, "trials": 3},
        executor={"kind": "local", "workers": 1},
        tracking={"uri": f"sqlite:///{in_tmp / 'mlflow.db'}"},
    )
    cfg["strategy"]["initial_points"] = 3
    write_yaml(in_tmp / "e.yaml", cfg)
    assert run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp).returncode == 0
    client = MlflowClient(f"sqlite:///{in_tmp / 'mlflow.db'}")
    (dry,) = client.search_runs(
        [client.get_experiment_by_name("leanfit-digits").experiment_id],
        f"tags.`{TAG_KIND}` = 'search'",
    )
    assert dry.data.tags[TAG_OBJECTIVE] == "synthetic"
    exp = load_experiment(in_tmp / "e.yaml")
    real = run_search(exp, reuse_finished=True, workers=1)  # as the pipeline's search step
    assert not real.reused and real.search_run_id != dry.info.run_id
    assert TAG_OBJECTIVE not in client.get_run(real.search_run_id).data.tags
    assert run_search(exp, reuse_finished=True, synthetic_sleep=0.0, workers=1).reused
    # on changed data, a search starts from the last of its own objective's, not a dry run's
    logger = TrialLogger(exp.tracking_uri(), exp.experiment_name())
    settings = search_key(exp, None)
    found = SearchLog.find_warm_start(logger, settings, "new data")
    assert found is not None and found.run_id == real.search_run_id
    dry_found = SearchLog.find_warm_start(logger, settings, "new data", "synthetic")
    assert dry_found is not None and dry_found.run_id == dry.info.run_id

    # a killed dry run is not resumed by real training: the refusal says what it optimised
    client.set_terminated(dry.info.run_id, "KILLED")
    with pytest.raises(LeanfitError) as refused:
        run_search(exp, resume=True, workers=1)  # `leanfit search e.yaml --resume`
    said = str(refused.value)
    assert "optimised the synthetic objective of a dry run, not real training" in said
    assert "add --synthetic to resume it" in said


def test_the_documented_example_objective_goes_on_from_its_state_when_promoted(in_tmp):
    """The module's example objective (the README's), run in-process: its accuracy counts every
    epoch trained, so a promoted trial that started again from nothing would score lower than
    its epochs say."""
    from leanfit import objective as module

    namespace = {
        "build": lambda config: {"steps": 0},
        "train_one_epoch": lambda model, lr: model.update(steps=model["steps"] + 1),
        "accuracy": lambda model: 0.5 + 0.04 * model["steps"],
    }
    (code,) = [block for block in module.__doc__.split("\n\n") if block.startswith("    def ")]
    exec(textwrap.dedent(code), namespace)
    as_dict = yaml.safe_load(experiment(in_tmp, trials=12).read_text())  # (given as a dict)
    result = leanfit.optimize(namespace["objective"], as_dict, workers=0, progress=False)
    trials = result.controller.trials.values()
    assert any(t.top_rung and t.top_rung > 0 for t in trials)  # promotions happened
    for t in trials:
        for metrics in t.results.values():
            assert metrics["val_accuracy"] == pytest.approx(0.5 + 0.04 * metrics["epoch"])


def test_the_example_of_a_training_loop_of_ones_own_runs(tmp_path):
    """examples/own_training.py: real PyTorch training of leanfit's models in 2 workers, the
    weights and optimiser state handed on at each promotion."""
    from tests.support import EXAMPLES

    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "own_training.py"), "--trials", "6", "--workers", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    front = [line for line in done.stdout.splitlines() if "parameters  val acc" in line]
    assert front and "report " in done.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment_,) = [e for e in client.search_experiments() if e.name == "leanfit-digits"]
    jobs = client.search_runs([experiment_.experiment_id], f"tags.`{TAG_KIND}` = 'trial'")
    assert all(r.info.status == "FINISHED" for r in jobs)
    assert max(r.data.metrics["val_accuracy"] for r in jobs) > 0.3  # it learned something
    assert any(r.data.tags.get("leanfit.resume_from") for r in jobs)  # promoted, inherited


def test_a_module_run_with_dash_m_is_imported_by_its_name_in_the_workers(tmp_path):
    """`python -m package.module`: loaded by path, its relative imports would fail."""
    experiment(tmp_path, trials=4)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "__init__.py").write_text("")
    (tmp_path / "mine" / "curve.py").write_text("def acc(epoch):\n    return 0.5 + 0.04 * epoch\n")
    (tmp_path / "mine" / "search.py").write_text(
        textwrap.dedent(
            """
            import leanfit
            from .curve import acc

            def objective(trial):
                while trial.running:
                    trial.report(acc(trial.epoch + 1))

            if __name__ == "__main__":
                r = leanfit.optimize(objective, "e.yaml", workers=2, progress=False)
                print(r.trials, r.failed, r.controller.trials[0].failed)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "mine.search"], cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["4", "0", "None"]
    # a new tracking database, made without MLflow's INFO lines (it configures its loggers
    # when first imported, which undid leanfit's quieting of them)
    assert "INFO mlflow" not in done.stderr and "Creating initial" not in done.stderr, done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (search,) = client.search_runs(
        [client.get_experiment_by_name("leanfit-digits").experiment_id],
        f"tags.`{TAG_KIND}` = 'search'",
    )
    assert search.data.tags[TAG_OBJECTIVE] == "python:mine.search:objective"


# A script's objective and its search with 2 workers, printing what leanfit refuses
SCRIPT_SEARCH = """\
def objective(trial):
    while trial.running:
        trial.report(0.5)

try:
    leanfit.optimize(objective, space={"w": [1, 2, 3]}, size=lambda c: c["w"],
                     trials=3, workers=2, progress=False)
except leanfit.errors.LeanfitError as e:
    print(e)
"""


def test_an_objective_defined_under_the_main_guard_is_refused_before_anything_starts(tmp_path):
    """The workers load the script as a module, which skips `if __name__ == "__main__":`, so a
    function defined there cannot be found. Before, the workers died at start and the search
    stopped with a BrokenPipeError; now it is refused, naming the block and the fix."""
    from leanfit.objective import _under_main_guard, load_function

    script = tmp_path / "run.py"
    script.write_text(
        "import leanfit\n\ndef top(trial):\n    pass\n\nif __name__ == '__main__':\n"
        + textwrap.indent(SCRIPT_SEARCH, "    ")
    )
    done = subprocess.run(
        [sys.executable, "run.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'objective: objective is defined under `if __name__ == "__main__":`' in done.stdout
    assert "define it above that block" in done.stdout and "workers=0" in done.stdout
    assert not (tmp_path / "mlflow.db").exists()
    assert _under_main_guard(script, "objective") and not _under_main_guard(script, "top")
    # found missing by a worker (the check could not tell): said the same way
    with pytest.raises(LeanfitError, match=f"objective: {script} has no gone at its top level"):
        load_function(f"{script}:gone")


def test_a_script_that_starts_its_search_on_import_or_comes_from_stdin_is_refused(tmp_path):
    """A script calling optimize at its top level, with no `__main__` guard: each worker that
    loaded it to find the objective started the search again (a 56-line traceback telling the
    user to kill their own search, trial runs left RUNNING). One read from standard input: the
    workers looked for a module named '<stdin>'. Both are refused before anything starts."""
    from leanfit.objective import _calls_optimize_unguarded

    body = "import leanfit\n\n" + SCRIPT_SEARCH
    script = tmp_path / "run.py"
    script.write_text(body)
    done = subprocess.run(
        [sys.executable, "run.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "run.py calls optimize at its top level, outside `if __name__" in done.stdout
    assert "put the call under that guard, or pass workers=0" in done.stdout
    piped = subprocess.run(
        [sys.executable, "-"], input=body, cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert "defined in a script read from standard input" in piped.stdout, piped.stdout
    assert not (tmp_path / "mlflow.db").exists()
    # what is not a top-level call: under the guard, in a function, an attribute's own name
    guarded = tmp_path / "guarded.py"
    guarded.write_text(
        "import leanfit\n"
        "def main():\n    leanfit.optimize(f)\n"
        "if __name__ == '__main__':\n    main()\n    leanfit.optimize(f)\n"
        "x = leanfit.optimize\n"
    )
    assert _calls_optimize_unguarded(script) and not _calls_optimize_unguarded(guarded)


@pytest.mark.parametrize(
    ("name", "said"), [("SIGINT", "interrupted"), ("SIGTERM", "terminated (SIGTERM)")]
)
def test_an_interrupted_search_says_how_to_go_on_and_resume_finishes_it(tmp_path, name, said):
    """Ctrl-C (or SIGTERM: `kill PID`, which ended the script at once, its search left
    RUNNING) in a script's search: KeyboardInterrupt reaches the script, as Python has it,
    after a line that says where the finished trials are and that resume=True goes on."""
    import signal
    import time

    from tests.support import foreground_job

    (tmp_path / "run.py").write_text(
        textwrap.dedent(
            """
            import os, sys, time
            import leanfit

            HELD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "held")

            def objective(trial):
                if os.environ.get("HOLD") and trial.number >= 4:  # the search cannot end first
                    open(HELD, "w").close()
                    time.sleep(120)
                while trial.running:
                    trial.report(0.5 + 0.001 * trial.config["w"])

            if __name__ == "__main__":
                r = leanfit.optimize(
                    objective, space={"w": list(range(1, 90))}, size=lambda c: 100 * c["w"],
                    trials=16, workers=2, progress=False, resume=len(sys.argv) > 1,
                )
                print("trials", r.trials)
            """
        )
    )
    search = subprocess.Popen(
        [sys.executable, "run.py"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=foreground_job, env={**os.environ, "HOLD": "1"},
    )  # fmt: skip
    # interrupted while a trial runs (one is held there), not after the search has ended
    deadline = time.monotonic() + 120
    while not (tmp_path / "held").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    search.send_signal(getattr(signal, name))
    out, err = search.communicate(timeout=120)
    assert search.returncode != 0 and "trials" not in out, (out, err[-2000:])
    line = f"\n{said}: the finished trials are in MLflow (sqlite:///mlflow.db); "
    assert line in "\n" + err, err[-2000:]
    assert "leanfit.optimize(..., resume=True)" in err and "KeyboardInterrupt" in err
    if name == "SIGTERM":
        return  # what resume=True does next is the same as after Ctrl-C
    resumed = subprocess.run(
        [sys.executable, "run.py", "resume"], cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout.split() == ["trials", "16"]


# ------------------------------------------------------------ a space of one's own

OWN_SPACE = {
    "width": [4, 8, 16, 32],
    "depth": (1, 4),
    "lr": {"low": 1e-3, "high": 0.3, "log": True},
    "optimizer": ["sgd", "adam"],
    "momentum": {"low": 0.5, "high": 0.99, "when": {"optimizer": ["sgd"]}},
    "batch": 64,  # fixed
}
SEEN: list[dict] = []
OWN_BROKEN = {"now": False}


def own_size(config) -> int:
    return config["width"] * 10 * config["depth"]


def own_objective(trial):
    """Larger models reach more; the learning rate is best near 0.03."""
    import math

    if OWN_BROKEN["now"]:
        raise RuntimeError("out of memory")
    SEEN.append(dict(trial.config))
    c = trial.config
    ceiling = 0.4 + 0.15 * math.log10(own_size(c)) - 0.05 * abs(math.log10(c["lr"]) + 1.5)
    while trial.running:
        trial.report(min(0.99, ceiling - 0.3 / (trial.epoch + 1)))
    return None


def own_settings(folder: Path, **more) -> dict:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return {"name": "own", "budget": {"min_epochs": 1, "max_epochs": 9}, "tracking": {"uri": uri},
            "strategy": {"initial_points": 4}, **more}  # fmt: skip


def test_a_space_of_ones_own_is_searched_with_its_conditions_sizes_and_budget(in_tmp):
    """leanfit.optimize(space=..., size=...): no experiment file's space or dataset; the
    conditional parameter exists exactly for its parent's values, the hard budget holds by the
    user's own count, and a different space is a different search."""
    SEEN.clear()
    OWN_BROKEN["now"] = False
    settings = own_settings(in_tmp, objectives={"max_params": 600})
    result = leanfit.optimize(
        own_objective, settings, space=OWN_SPACE, size=own_size, workers=0, trials=16,
        progress=False,
    )  # fmt: skip
    assert result.trials == 16 and not result.failed and result.front
    assert any(t.top_rung for t in result.controller.trials.values())  # promoted
    optimizers = set()
    for c in SEEN:
        optimizers.add(c["optimizer"])
        names = {"width", "depth", "lr", "optimizer", "batch"}
        assert set(c) == names | ({"momentum"} if c["optimizer"] == "sgd" else set()), c
        assert c["width"] in (4, 8, 16, 32) and c["depth"] in (1, 2, 3, 4) and c["batch"] == 64
        assert 1e-3 <= c["lr"] <= 0.3 and 0.5 <= c.get("momentum", 0.5) <= 0.99
        assert own_size(c) <= 600, c  # the hard budget, by the user's count: never trained over
    assert optimizers == {"sgd", "adam"}
    for m in result.front:
        assert m["params"] == own_size(m["config"])
    sizes = [m["params"] for m in result.front]
    assert sizes == sorted(sizes) and max(sizes) > min(sizes)  # a front, not one point
    client = MlflowClient(settings["tracking"]["uri"])
    exp = client.get_experiment_by_name("leanfit-own")
    (search,) = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'search'")
    assert " (space " in search.data.tags[TAG_OBJECTIVE]
    jobs = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'trial'")
    for r in jobs:  # each job's run has its size (before, a function's jobs logged 0)
        config = {"width": int(r.data.params["width"]), "depth": int(r.data.params["depth"])}
        assert r.data.metrics["params"] == own_size(config)
    page = result.report_html.read_text()
    assert "Pareto" in page
    # its size counted, its MACs not: a dash, not 0 MACs
    assert f"<td>{sizes[0]:,}</td><td>-</td>" in page, page

    # models of millions of parameters: the hypervolume is measured over the space's own sizes
    # (over leanfit's 10^2 to 10^4.5 every one of them would add nothing, and it read 0)
    big = leanfit.optimize(
        own_objective, own_settings(in_tmp), space=OWN_SPACE, size=lambda c: own_size(c) * 10**4,
        workers=0, trials=6, progress=False,
    )  # fmt: skip
    assert big.controller.hypervolume_range() == (5.5, 7.5)  # 400k to 12.8M parameters
    assert big.hypervolume > 0.5
    assert "hypervolume (log10 params 5.5-7.5 x error)" in big.report_html.read_text()

    # a search stopped by its failures is resumed with its own space only
    OWN_BROKEN["now"] = True
    from leanfit.search.controller import SearchFailed

    with pytest.raises(SearchFailed):
        leanfit.optimize(
            own_objective, own_settings(in_tmp), space=OWN_SPACE, size=own_size, workers=0,
            trials=12, progress=False,
        )  # fmt: skip
    OWN_BROKEN["now"] = False
    other = {**OWN_SPACE, "width": [4, 8, 16, 32, 64]}
    with pytest.raises(LeanfitError, match="resume=True: no unfinished search"):
        leanfit.optimize(
            own_objective, own_settings(in_tmp), space=other, size=own_size, workers=0,
            trials=12, resume=True, progress=False,
        )  # fmt: skip
    resumed = leanfit.optimize(
        own_objective, own_settings(in_tmp), space=OWN_SPACE, size=own_size, workers=0,
        trials=12, resume=True, progress=False,
    )  # fmt: skip
    assert resumed.trials == 12 and resumed.front and resumed.run_id != result.run_id


# none of leanfit's hyper-parameter names (lr, optimizer, momentum, ...)
FOREIGN_SPACE = {
    "units": [4, 8, 16, 32],
    "blocks": (1, 4),
    "step": {"low": 1e-3, "high": 0.3, "log": True},
    "solver": ["plain", "heavy"],
    "beta": {"low": 0.5, "high": 0.99, "when": {"solver": ["heavy"]}},
}


def foreign_size(config) -> int:
    return config["units"] * 10 * config["blocks"]


def foreign_objective(trial):
    import math

    c = trial.config
    ceiling = 0.4 + 0.15 * math.log10(foreign_size(c)) - 0.05 * abs(math.log10(c["step"]) + 1.5)
    while trial.running:
        trial.report(min(0.99, ceiling - 0.3 / (trial.epoch + 1)))


def test_a_space_of_ones_own_crosses_one_parents_model_with_the_others_training(in_tmp):
    """Crossover candidates in a space of one's own: the parameters that never change the size
    (here step, solver, beta) come from one parent, the model (units, blocks) from the other, as
    leanfit's space crosses architectures with training hyper-parameters. Before, the group was
    leanfit's hyper-parameter names: none is in this space, every child was its first parent, a
    known configuration, and the search had no crossover at all."""
    from leanfit.config import ObjectivesConfig as Objectives
    from leanfit.objective import OwnSpace, UniformSplit
    from leanfit.search.evolution import crossover

    group = OwnSpace(FOREIGN_SPACE, foreign_size, Objectives()).crossover_group(0)
    assert [name for name in FOREIGN_SPACE if group(name)] == ["step", "solver", "beta"]

    result = leanfit.optimize(
        foreign_objective, own_settings(in_tmp), space=FOREIGN_SPACE, size=foreign_size,
        workers=0, trials=20, progress=False,
    )  # fmt: skip
    strategy = result.controller.strategy
    assert [name for name in FOREIGN_SPACE if strategy.crossover_group(name)] == [
        "step", "solver", "beta"
    ]  # fmt: skip

    def model(c):
        return (c["units"], c["blocks"])

    def training(c):
        return (c["step"], c["solver"], c.get("beta"))

    parents = [o.config for o in strategy._parents(strategy.fitting_set())]
    strategy.local_samples = 0  # no one-parameter changes among the candidates: they can match
    _, candidates, _ = strategy._candidates(strategy.fitting_set())
    children = [
        c for c in candidates
        if any(model(c) == model(a) and training(c) == training(b) and a != b
               for a in parents for b in parents)
    ]  # fmt: skip
    assert children  # new configurations, one parent's model trained the other's way
    assert not any(strategy.known(strategy.space.key(c)) for c in children)

    # accuracy alone (no size to tell model from training): each parameter from either parent
    accuracy_only = Objectives(targets=[{"metric": "val_accuracy", "goal": "maximize"}])
    split = OwnSpace(FOREIGN_SPACE, None, accuracy_only).crossover_group(0)
    assert isinstance(split, UniformSplit)
    rng = random.Random(0)
    first = {"units": 4, "blocks": 1, "step": 0.001, "solver": "plain"}
    second = {"units": 32, "blocks": 4, "step": 0.3, "solver": "plain"}
    space = OwnSpace(FOREIGN_SPACE, None, accuracy_only).space
    mixed = {tuple(crossover(space, first, second, split, rng).items()) for _ in range(40)}
    assert len(mixed) > 4  # not just the two parents


def small_objective(trial):
    while trial.running:
        trial.report(0.4 + 0.01 * trial.epoch + 0.01 * trial.config["units"])


def test_a_small_space_searched_whole_ends_its_new_trials_not_the_search(in_tmp):
    """A discrete space of 6 configurations and a budget of 20 trials: the 6 are trained, the
    scheduler's promotions go on, and the search ends with its front and says the space ran
    out. Before, it stopped with an error ("the search space is (nearly) exhausted") and no
    result, after training all 6."""
    small = {"units": [1, 2, 3], "act": ["relu", "gelu"]}
    result = leanfit.optimize(
        small_objective, own_settings(in_tmp), space=small, size=lambda c: 100 * c["units"],
        workers=0, trials=20, progress=False,
    )  # fmt: skip
    configs = [t.config for t in result.controller.trials.values()]
    assert result.trials == 6 and len({tuple(sorted(c.items())) for c in configs}) == 6
    assert result.space_exhausted and not result.failed
    assert result.controller.stats.jobs_done > 6  # promotions after the last new trial
    assert result.front
    page = result.report_html.read_text()
    assert "new configurations left in the space" in page and "none after 6 (all tried)" in page
    # a space with room left is not said to be exhausted
    roomy = {**small, "units": list(range(1, 40))}
    more = leanfit.optimize(
        small_objective, own_settings(in_tmp), space=roomy, size=lambda c: 100 * c["units"],
        workers=0, trials=8, progress=False,
    )  # fmt: skip
    assert more.trials == 8 and not more.space_exhausted and not more.failed


def test_with_no_new_trial_to_come_the_best_goes_on_to_the_top_rung(in_tmp):
    """4 trials, rungs of 1, 3 and 9 epochs, eta 3: while trials come, a rung promotes its best
    floor(n/3), so at most 1 or 2 reach 3 epochs and none 9; once the trial budget is spent the
    third is rounded up (ceil(n/3), synchronous successive halving's rule), and the best is
    trained to the top. Before, the search ended with no trial trained for its max_epochs."""
    alone = own_settings(
        in_tmp, objectives={"targets": [{"metric": "val_accuracy", "goal": "maximize"}]}
    )
    result = leanfit.optimize(
        small_objective, alone, space={"units": list(range(1, 40))}, workers=0, trials=4,
        progress=False,
    )  # fmt: skip
    tops = [t.top_rung for t in result.controller.trials.values()]
    assert result.trials == 4 and not result.failed
    assert tops.count(2) >= 1, tops
    assert result.best()["epochs"] == 9


def test_a_space_of_ones_own_refuses_what_it_cannot_search_before_anything_starts(in_tmp):
    settings = own_settings(in_tmp)
    cases = [
        (dict(space=OWN_SPACE), "size: the objectives use params, which a space of your own"),
        (dict(space=OWN_SPACE, size=lambda c: "big"), r"size: <lambda> returned 'big' for"),
        (dict(space=OWN_SPACE, size=lambda c: -5), "returned -5 for the configuration"),
        (dict(space=OWN_SPACE, size=lambda c: 2.5), "returned 2.5 for the configuration"),
        (dict(space=OWN_SPACE, size=lambda c: 1 / 0), "raised ZeroDivisionError: division by"),
        (dict(space={"lr": {"lo": 0.1}}, size=own_size), r"space.lr.lo: unknown field"),
        (dict(space={"width": None}, size=own_size), "space.width: None is not a range"),
        (dict(space={"a": (1, 2, 3)}, size=own_size), r"space.a: a tuple is a range \(low, hi"),
        (dict(space=[("lr", 0.1)], size=own_size), "space: give a mapping of parameter names"),
        (dict(space={"act": []}, size=own_size), "space.act: choices: must not be empty"),
        # before: every proposal was inf, and the space said exhausted after one trial
        (dict(space={"a": (0.0, float("inf"))}, size=own_size), "space.a.high: inf is not a fi"),
        (dict(space={"a": (float("nan"), 1.0)}, size=own_size), "space.a.low: nan is not a fin"),
        (dict(space={"act": [{"a": 1}]}, size=own_size), r"space.act: choices: \{'a': 1\} is no"),
        (dict(space={"m": {"low": 0, "high": 1, "when": {"opt": ["sgd"]}}}), "space.m.when"),
        # a `when` that never holds: the parameter was silently never searched
        (
            dict(
                space={"h": [4, 8], "m": {"low": 0.5, "high": 0.9, "when": {"h": [5]}}},
                size=own_size,
            ),
            "space.m.when: 5 is not one of 'h''s choices",
        ),
        (
            dict(
                space={"n": (1, 3), "m": {"low": 0.5, "high": 0.9, "when": {"n": [1.5]}}},
                size=own_size,
            ),
            r"space.m.when: 1.5 is not a whole number from 1 to 3",
        ),
        (
            dict(
                space={"m": {"low": 0.5, "high": 0.9, "when": {"act": []}}, "act": ["a", "b"]},
                size=own_size,
            ),
            "space.m.when: no value of 'act' is given",
        ),
        # a set's order changes with the process's string hashing, and with it the search's key
        (dict(space={"act": {"relu", "gelu"}}, size=own_size), "space.act: a set has no order"),
        (dict(space={"a": [1], "b": 2}, size=own_size), "space: nothing to search"),
    ]
    for kwargs, message in cases:
        with pytest.raises(LeanfitError, match=message):
            leanfit.optimize(own_objective, settings, workers=0, trials=3, **kwargs)
    with pytest.raises(LeanfitError, match="size: it counts the models of space="):
        leanfit.optimize(own_objective, size=own_size, workers=0, trials=3)
    with pytest.raises(LeanfitError, match="experiment: give an experiment file"):
        leanfit.optimize(own_objective, workers=0, trials=3)
    with pytest.raises(LeanfitError, match="budget: give trials= or wall_time="):
        leanfit.optimize(own_objective, space=OWN_SPACE, size=own_size, workers=0)
    experiment(in_tmp)  # leanfit's own space, in a file
    with pytest.raises(LeanfitError, match="e.yaml has a space section and space= was given"):
        leanfit.optimize(own_objective, "e.yaml", space=OWN_SPACE, size=own_size, trials=3)
    coarse = own_settings(in_tmp, budget={"min_resolution": 8, "trials": 3})
    with pytest.raises(LeanfitError, match="budget.min_resolution: a resolution fidelity"):
        leanfit.optimize(own_objective, coarse, space=OWN_SPACE, size=own_size, workers=0)
    macs = [{"metric": "val_accuracy", "goal": "maximize"}, {"metric": "macs", "goal": "minimize"}]
    with pytest.raises(LeanfitError, match="returned one count, but the objectives use MACs"):
        leanfit.optimize(
            own_objective, own_settings(in_tmp, objectives={"targets": macs}), space=OWN_SPACE,
            size=own_size, workers=0, trials=3,
        )  # fmt: skip
    # a budget under the space's smallest model: said in the space's terms (no MACs, no widths)
    with pytest.raises(LeanfitError) as refused:
        leanfit.optimize(
            own_objective, own_settings(in_tmp, objectives={"max_params": 20}), space=OWN_SPACE,
            size=own_size, workers=0, trials=3,
        )  # fmt: skip
    assert str(refused.value) == (
        "objectives: no model of the search space fits max_params 20 (none of 1,000 random "
        "configurations, nor the 20 nearest made smaller one parameter at a time; the smallest "
        "drawn has 40 parameters); raise the limit or make the space's models smaller (space=)"
    )
    assert not (in_tmp / "mlflow.db").exists()
    # accuracy alone needs no count of parameters; its plot is by trial, not by a size of 0
    import warnings

    alone = own_settings(in_tmp, objectives={"targets": macs[:1]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # matplotlib's "cannot be log-scaled"
        result = leanfit.optimize(
            own_objective, alone, space=OWN_SPACE, workers=0, trials=4, progress=False
        )
    assert result.trials == 4 and result.front and not result.failed


def test_the_example_of_a_space_and_model_family_of_ones_own_runs(tmp_path):
    """examples/own_space.py: a plain PyTorch MLP on scikit-learn's digits, nothing of
    leanfit's models or data, searched in 2 workers, promotions going on from their weights."""
    from tests.support import EXAMPLES

    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "own_space.py"), "--trials", "8", "--workers", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "parameters  val acc" in done.stdout and "report " in done.stdout
    sys.path.insert(0, str(EXAMPLES))
    try:
        from own_space import size
    finally:
        sys.path.remove(str(EXAMPLES))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("leanfit-own-mlp")
    jobs = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'trial'")
    assert jobs and all(r.info.status == "FINISHED" for r in jobs)
    for r in jobs:
        config = {k: int(r.data.params[k]) for k in ("hidden", "layers")}
        assert r.data.metrics["params"] == size(config)
    assert max(r.data.metrics["val_accuracy"] for r in jobs) > 0.5  # it learned
    assert any(r.data.tags.get("leanfit.resume_from") for r in jobs)  # promoted, inherited
    # a setting the search refuses: its message and exit 2, as the command's (a traceback)
    for script in ("own_space.py", "own_training.py"):
        bad = subprocess.run(
            [sys.executable, str(EXAMPLES / script), "--trials", "0"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert bad.returncode == 2 and bad.stderr == "error: trials: 0; give 1 or more\n", bad


def test_a_full_disk_stops_the_search_and_resume_runs_the_job_again(tmp_path):
    """A job that cannot write for lack of space (here a real ENOSPC, from /dev/full) is not the
    trial's failure, and every job after it would meet it: the search stops at once with one
    line saying what could not be written and how to go on, instead of recording trial after
    trial as failed; resumed once there is space, the job runs again and nothing is failed."""
    import time

    (tmp_path / "run.py").write_text(
        textwrap.dedent(
            """
            import os, sys
            import leanfit
            from leanfit.errors import LeanfitError

            FULL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "full")

            def objective(trial):
                if os.path.exists(FULL) and trial.number == 5:
                    with open("/dev/full", "wb") as disk:  # the kernel's always-full device
                        disk.write(b"weights")
                        disk.flush()
                while trial.running:
                    trial.report(0.5 + 0.001 * trial.config["w"])

            if __name__ == "__main__":
                try:
                    r = leanfit.optimize(
                        objective, space={"w": list(range(1, 90))}, size=lambda c: 100 * c["w"],
                        trials=12, workers=2, progress=False, resume=len(sys.argv) > 1,
                    )
                except LeanfitError as e:
                    print("error:", e)
                    sys.exit(2)
                print("trials", r.trials, "failed", r.failed)
            """
        )
    )
    (tmp_path / "full").touch()
    started = time.monotonic()
    full = subprocess.run(
        [sys.executable, "run.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert full.returncode == 2, full.stdout + full.stderr[-2000:]
    assert full.stdout.startswith(
        "error: the disk is full: a file could not be written (No space left on device). Free "
        "space (or move work_dir), then resume the search"
    ), full.stdout
    assert time.monotonic() - started < 120
    (tmp_path / "full").unlink()
    resumed = subprocess.run(
        [sys.executable, "run.py", "resume"], cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-2000:]
    assert resumed.stdout.split() == ["trials", "12", "failed", "0"], resumed.stdout


# A search whose objective makes the place refuse a write when the file `go` is there: trial 5's
# state is too large for a file-size limit (`big`); before trial 5 returns, the search's
# checkpoint folder is made read-only (`readonly`), or its report folder is made read-only
# (`report`), or the tracking database's folder is (`database`). With `own`, trial 3 always
# fails on a read-only file of its own: its own failure, not the place's. Resumed (a second
# argument) once `go` is gone.
REFUSED_WRITE_SEARCH = """
import glob, os, sys
import leanfit
from leanfit.errors import LeanfitError

HERE = os.path.dirname(os.path.abspath(__file__))
GO = os.path.join(HERE, "go")

def objective(trial):
    while trial.running:
        trial.report(0.5 + 0.001 * trial.config["w"])
    if trial.number == 3 and "own" in sys.argv[1]:
        with open(os.path.join(HERE, "mine", "notes.txt"), "w") as f:  # read-only: its own
            f.write("x")
    if os.path.exists(GO) and trial.number == 5:
        if "big" in sys.argv[1]:
            return bytes(6_000_000)  # over the 4 MiB limit once pickled
        if "database" in sys.argv[1]:  # the tracking database's folder (its journal's)
            os.chmod(HERE, 0o555)
            return None
        if "report" in sys.argv[1]:  # (written once every trial has finished)
            for search in glob.glob(os.path.join(HERE, ".leanfit", "searches", "*", "")):
                os.makedirs(os.path.join(search, "report"), exist_ok=True)
                os.chmod(os.path.join(search, "report"), 0o555)
            return None
        for folder in glob.glob(os.path.join(HERE, ".leanfit", "searches", "*", "checkpoints")):
            os.chmod(folder, 0o555)
    return None

if __name__ == "__main__":
    try:
        r = leanfit.optimize(
            objective, space={"w": list(range(1, 90))}, size=lambda c: 100 * c["w"],
            trials=12, workers=2, progress=False, resume=len(sys.argv) > 2,
        )
    except LeanfitError as e:
        print("error:", e)
        sys.exit(2)
    print("trials", r.trials, "failed", r.failed)
    print("torch", "torch" in sys.modules)  # (imported by the objective's workers only)
"""


def test_a_file_size_limit_stops_the_search_as_a_full_disk_and_resume_runs_the_job_again(
    tmp_path,
):
    """A checkpoint over a file-size limit (`ulimit -f`: EFBIG, a real one, set on the
    process) is the place's, as a full disk is: the search stops in one line saying the limit
    and its fix, and --resume runs the job again. Before, the job failed as the trial's own
    failure (`OSError: [Errno 27] File too large`), the search went on and exited 0 with the
    large models silently missing, and --resume refused (the search had finished)."""
    import resource

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 * 2**20, resource.RLIM_INFINITY))

    (tmp_path / "run.py").write_text(REFUSED_WRITE_SEARCH)
    (tmp_path / "go").touch()
    run = functools.partial(
        subprocess.run, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        preexec_fn=limited,
    )  # fmt: skip
    stopped = run([sys.executable, "run.py", "big"])
    assert stopped.returncode == 2, stopped.stdout + stopped.stderr[-2000:]
    assert stopped.stdout.startswith(
        "error: File too large: a file-size limit (ulimit -f 4096: no file over 4.0 MiB) stopped "
    ), stopped.stdout
    assert "trial-00005-rung-0.pt from being written. Raise the limit (`ulimit -f unlimited`" in (
        stopped.stdout
    )
    assert "then resume the search" in stopped.stdout
    assert not list(tmp_path.rglob("*.tmp")), "a partial checkpoint was left"
    (tmp_path / "go").unlink()
    resumed = run([sys.executable, "run.py", "big", "resume"])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-2000:]
    assert resumed.stdout.split()[:4] == ["trials", "12", "failed", "0"], resumed.stdout
    # a function's search imports no torch in its own process where no GPU can be (a GPU's
    # device files: see leanfit.search.run._gpu_device_files): 1.5-2 s of its start
    from leanfit.search.run import _gpu_device_files

    assert resumed.stdout.split()[4:] == ["torch", str(_gpu_device_files())], resumed.stdout


def test_a_checkpoint_folder_that_cannot_be_written_stops_the_search_not_the_trials(tmp_path):
    """The search's checkpoint folder made read-only during the search (EACCES on leanfit's
    own file) stops it in one line naming the folder and the fix, exit 2, and --resume runs the
    job again. Before, every job after it failed as the trial's own failure and the search
    exited 0 with no model, its --resume refused. A trial's own PermissionError (a file of the
    objective's) is still that trial's failure: the search goes on past it."""
    (tmp_path / "run.py").write_text(REFUSED_WRITE_SEARCH)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").touch()
    (tmp_path / "mine" / "notes.txt").chmod(0o444)
    (tmp_path / "go").touch()
    run = functools.partial(
        subprocess.run, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    prefix = without_permission_bypass()
    stopped = run([*prefix, sys.executable, "run.py", "readonly-own"])
    assert stopped.returncode == 2, stopped.stdout + stopped.stderr[-2000:]
    (folder,) = (tmp_path / ".leanfit" / "searches").glob("*/checkpoints")
    assert stopped.stdout.startswith(
        f"error: the folder {folder} cannot be written (Permission denied): "
    ), stopped.stdout
    assert (
        f"Make it writable (chmod u+w {folder}; a read-only file system remounted read-write), "
        "or give another work_dir, then resume the search" in stopped.stdout
    ), stopped.stdout
    folder.chmod(0o755)
    (tmp_path / "go").unlink()
    resumed = run([*prefix, sys.executable, "run.py", "readonly-own", "resume"])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-2000:]
    # trial 3's own PermissionError failed it alone, before the stop
    assert resumed.stdout.split()[:4] == ["trials", "12", "failed", "1"], resumed.stdout


def test_a_report_that_cannot_be_written_at_the_end_says_so_and_resume_writes_it(tmp_path):
    """The search's report folder made read-only while its trials run: once they have all
    finished, the report cannot be written. The search says so in one line, exit 2, its MLflow
    run closed FAILED, and --resume writes the report and finishes it. Before: a traceback, exit
    1, the search run left RUNNING."""
    (tmp_path / "run.py").write_text(REFUSED_WRITE_SEARCH)
    (tmp_path / "go").touch()
    run = functools.partial(
        subprocess.run, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    prefix = without_permission_bypass()
    stopped = run([*prefix, sys.executable, "run.py", "report"])
    assert stopped.returncode == 2, stopped.stdout + stopped.stderr[-2000:]
    (folder,) = (tmp_path / ".leanfit" / "searches").glob("*/report")
    assert stopped.stdout.startswith(
        f"error: the search's report could not be written: the folder {folder} cannot be "
        "written (Permission denied): "
    ), stopped.stdout
    assert "then resume the search" in stopped.stdout and "Traceback" not in stopped.stderr
    assert not list(folder.iterdir())
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (search,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], f"tags.`{TAG_KIND}` = 'search'"
    )
    assert search.info.status == "FAILED"
    folder.chmod(0o755)
    (tmp_path / "go").unlink()
    resumed = run([*prefix, sys.executable, "run.py", "report", "resume"])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-2000:]
    assert resumed.stdout.split()[:4] == ["trials", "12", "failed", "0"], resumed.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["pareto.png", "report.html"]
    assert client.get_run(search.info.run_id).info.status == "FINISHED"


def test_a_tracking_database_made_read_only_mid_search_is_said_in_one_line(tmp_path):
    """The sqlite tracking database's folder made read-only during a search (SQLite cannot
    write its journal: "attempt to write a readonly database"): one line naming the database
    and the fix, with how to go on; before, MLflow's SQLAlchemy traceback. Resumed once it is
    writable, the search finishes with nothing failed."""
    (tmp_path / "run.py").write_text(REFUSED_WRITE_SEARCH)
    (tmp_path / "go").touch()
    run = functools.partial(
        subprocess.run, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    prefix = without_permission_bypass()
    try:
        stopped = run([*prefix, sys.executable, "run.py", "database"])
    finally:
        tmp_path.chmod(0o755)
    assert stopped.returncode == 2, stopped.stdout + stopped.stderr[-2000:]
    assert stopped.stdout.startswith(
        f"error: tracking: the sqlite tracking database {tmp_path / 'mlflow.db'} cannot be "
        "written (attempt to write a readonly database): the file or its folder is not writable"
    ), stopped.stdout
    assert "call leanfit.optimize(..., resume=True) to go on with the search" in stopped.stdout
    (tmp_path / "go").unlink()
    resumed = run([*prefix, sys.executable, "run.py", "database", "resume"])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-2000:]
    assert resumed.stdout.split()[:4] == ["trials", "12", "failed", "0"], resumed.stdout


IO_ERROR_OF_A_READ_ONLY_FOLDER = """
import os, sqlite3, sys
from leanfit.track import runs

database = sys.argv[1]
runs._READY.add(database)  # (opened by this process)
os.chmod(os.path.dirname(database), 0o555)
print(runs.database_refused(sqlite3.OperationalError("disk I/O error")))
"""


def test_an_io_error_of_a_database_in_a_read_only_folder_is_said_as_its_folder(tmp_path):
    """SQLite says "disk I/O error", not "readonly database", for a folder made read-only
    between its journal's creation and deletion (once in the suite): said as the folder that
    cannot be written, not as a failing disk to look for in `dmesg`."""
    folder = tmp_path / "tracking"
    folder.mkdir()
    (folder / "mlflow.db").touch()
    try:
        done = subprocess.run(
            [*without_permission_bypass(), sys.executable, "-c", IO_ERROR_OF_A_READ_ONLY_FOLDER,
             str(folder / "mlflow.db")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        folder.chmod(0o755)
    assert done.returncode == 0, done.stderr
    assert "cannot be written (attempt to write a readonly database)" in done.stdout, done.stdout
    assert "dmesg" not in done.stdout


def test_the_commands_options_in_a_message_are_said_as_optimizes_arguments():
    """`optimize` shows the notices `leanfit search` shows: their options are its arguments
    (it said "--workers 2 trains as much, sooner" to a caller of optimize(workers=8))."""
    from types import SimpleNamespace

    from leanfit.api import as_argument
    from leanfit.search.run import crowded_notice

    crowded = crowded_notice(SimpleNamespace(gpus=[]), 64)  # (it asks a local executor's GPUs)
    assert crowded is not None and "--workers" in crowded
    assert re.search(r"; workers=\d+ trains as much, sooner$", as_argument(crowded)), crowded
    said = as_argument("give it a larger budget (--wall-time, --trials) to go on, or --resume")
    assert said == "give it a larger budget (wall_time=, trials=) to go on, or resume=True"
    assert as_argument("run with --wall-time 10m; --trials 40") == (
        "run with wall_time='10m'; trials=40"
    )


def in_percent(trial):
    while trial.running:
        trial.report(50.0 + trial.number + trial.epoch)  # 53.0: a percentage
    return None


def test_accuracies_reported_in_percent_are_one_error_that_says_so(in_tmp):
    """Each value was an error of its own (`val_accuracy 53.0, not in [0, 1]`, `54.0`, ...), so
    the summary listed three and "3 with other errors", and nothing said percentages."""
    from leanfit.search.controller import SearchFailed

    experiment(in_tmp, trials=5)
    with pytest.raises(SearchFailed) as failed:
        leanfit.optimize(in_percent, "e.yaml", workers=0, progress=False)
    said = str(failed.value)
    assert "5 x val_accuracy above 1: a percentage? report a fraction in [0, 1]" in said, said
    assert "other error" not in said, said
    # 1.02 is a slip, not a percentage (divided by 100 it would be 0.0102)
    with pytest.raises(SearchFailed) as failed:
        leanfit.optimize(slightly_above_one, "e.yaml", workers=0, progress=False)
    said = str(failed.value)
    assert "val_accuracy outside [0, 1]" in said and "percentage" not in said, said


def slightly_above_one(trial):
    while trial.running:
        trial.report(1.02)


def with_its_graph(trial):
    import torch

    weight = torch.ones(1, requires_grad=True)
    while trial.running:
        trial.report(weight * 0.5, train_loss=(weight * 0.25).sum())


def test_a_tensor_with_its_graph_is_reported_without_torchs_warning(in_tmp):
    import warnings

    experiment(in_tmp, trials=2)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        result = leanfit.optimize(with_its_graph, "e.yaml", workers=0, progress=False)
    assert result.best()["val_accuracy"] == 0.5
    grads = [str(w.message) for w in said if "requires_grad" in str(w.message)]
    assert not grads, grads


def test_a_space_of_ones_owns_messages_name_the_space_not_a_file(in_tmp):
    """A search of a space given to optimize has no experiment file, nor data."""
    from leanfit.errors import LeanfitError

    def search(**more):
        return leanfit.optimize(flaky, space={"w": [1, 2, 3]}, size=lambda c: c["w"], trials=3,
                                workers=0, progress=False, **more)  # fmt: skip

    search()
    with pytest.raises(LeanfitError) as finished:
        search(resume=True)
    said = str(finished.value)
    assert "the search of this space and objective finished" in said, said
    assert "experiment file" not in said and "--resume" not in said, said


def exits(trial):
    """A trial that calls sys.exit (a script's habit), one that raises KeyboardInterrupt."""
    if trial.number == 1:
        sys.exit(3)
    if trial.number == 2:
        raise KeyboardInterrupt
    while trial.running:
        trial.report(0.5 + 0.04 * trial.epoch)


def test_sys_exit_in_a_trial_fails_that_trial_and_keeps_its_worker(in_tmp, capfd):
    """It ended the worker: "worker process died (exit code 3)", and a KeyboardInterrupt's
    traceback on the terminal."""
    experiment(in_tmp, trials=4)
    result = leanfit.optimize(exits, "e.yaml", workers=2, trials=4, progress=False)
    said = "\n".join(result.failures)
    assert "1 x SystemExit(3) raised in the trial: the worker goes on (trial 1)" in said, said
    assert "1 x KeyboardInterrupt raised in the trial" in said, said
    assert result.controller.executor.replaced == 0, "a worker was ended by its trial"
    assert "Traceback" not in capfd.readouterr().err


def test_a_tracking_server_that_does_not_answer_is_said_at_once(in_tmp):
    """`leanfit search` says it in a second; optimize waited four minutes for MLflow's retries
    and raised MLflow's own error (and its InvalidUrlException for a URI with no host)."""
    from leanfit.errors import LeanfitError

    for uri, said in (
        ("http://127.0.0.1:9", "tracking: MLflow at http://127.0.0.1:9 did not answer"),
        ("http:/127.0.0.1:9", "names no server (host and port)"),
    ):
        cfg = {**digits_config(), "tracking": {"uri": uri}}
        started = time.monotonic()
        with pytest.raises(LeanfitError, match=re.escape(said)):
            leanfit.optimize(flaky, cfg, workers=0, trials=2, progress=False)
        assert time.monotonic() - started < 30


def test_a_stop_ends_a_trial_training_in_the_scripts_own_process_at_its_next_report(tmp_path):
    """`workers=0`: the objective runs in the script's process, and the first Ctrl-C waited for
    the whole rung (its trial trained on to its last epoch, minutes with a real training loop)
    before the search stopped. The trial ends at its next report instead."""
    import signal
    import time

    from tests.support import foreground_job

    (tmp_path / "run.py").write_text(
        textwrap.dedent(
            """
            import os, time
            import leanfit

            LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reports")

            def objective(trial):
                while trial.running:
                    time.sleep(0.3)  # an epoch
                    with open(LOG, "a") as f:
                        f.write("epoch\\n")
                    trial.report(0.5 + 0.001 * trial.config["w"])

            if __name__ == "__main__":
                leanfit.optimize(
                    objective, {"name": "s", "budget": {"min_epochs": 8, "max_epochs": 8}},
                    space={"w": list(range(1, 90))}, size=lambda c: 100 * c["w"], trials=3,
                    workers=0, progress=False,
                )
            """
        )
    )
    search = subprocess.Popen(
        [sys.executable, "run.py"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=foreground_job,
    )  # fmt: skip
    reports = tmp_path / "reports"
    deadline = time.monotonic() + 120
    while not reports.exists() and time.monotonic() < deadline:  # its first epoch done
        time.sleep(0.05)
    search.send_signal(signal.SIGINT)
    at_stop = len(reports.read_text().splitlines())
    _, err = search.communicate(timeout=120)
    after = len(reports.read_text().splitlines()) - at_stop
    assert after <= 1, f"{after} epochs trained after Ctrl-C (of 8 a rung)"
    assert "interrupted" in err and "resume=True" in " ".join(err.split()), err
