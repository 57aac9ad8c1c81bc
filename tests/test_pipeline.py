"""The Kubeflow pipeline: compiled with the real KFP compiler, run with the real `kfp.local`,
logging and registering in real MLflow (sqlite, and a real `mlflow server` on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

from leanfit.config import experiment_from_dict, load_experiment
from tests import zygote
from tests.support import EXAMPLES, ROOT, MlflowServer, digits_config, run_cli, write_yaml

COMMITTED = ROOT / "pipelines" / "automl_pipeline.yaml"


def small_pipeline_config(**overrides) -> dict:
    """Digits through the whole pipeline in about a minute: a few trials of 1-3 epochs."""
    space = digits_config()["space"]
    settings = {
        "space": {**space, "architecture": {**space["architecture"], "blocks": 3}},
        "budget": {"min_epochs": 1, "max_epochs": 3, "trials": 4},
        "executor": {"kind": "local", "workers": 1, "trial_timeout": "2m"},
        "pipeline": {"final_top_k": 2, "final_epochs": 3},
    }
    return digits_config(**{**settings, **overrides})


def registry(uri: str, name: str = "leanfit-digits"):
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    found = client.search_model_versions(f"name='{name}'")
    versions = sorted(str(v.version) for v in found)
    champion = client.get_model_version_by_alias(name, "champion")
    return client, versions, champion


# ---------------------------------------------------------------- compile


RUN_INTO_A_CLOSED_PIPE = """
import os, signal, sys, time
from pathlib import Path
from leanfit import stopping
from leanfit.launch import shown_and_logged

signal.signal(signal.SIGINT, signal.default_int_handler)  # (as a terminal's job; not pytest's)

read, write = os.pipe()
os.close(read)  # the reader gone, as after `leanfit run ... | head -2`
os.dup2(write, 1)
try:
    with shown_and_logged(Path(sys.argv[1]), print):
        print("[leanfit] a step's line", flush=True)
        time.sleep(30)
    print("not stopped", file=sys.stderr)
except KeyboardInterrupt:
    print("stopped", stopping.exit_code(), stopping.output_gone(), file=sys.stderr)
print("said after: nowhere", flush=True)
print("fine", file=sys.stderr)
"""


def test_a_pipeline_whose_output_reader_went_away_stops_as_at_ctrl_c(tmp_path):
    """`leanfit run ... | head -2`: the line shown after the reader went away failed the
    pipeline (`error: BrokenPipeError`, exit 2, its run FAILED). The line's failure now stops it
    as Ctrl-C does (the steps told, its run KILLED: `leanfit run` goes on), exit 141; the log
    file keeps every line, and what is printed after goes nowhere."""
    import subprocess
    import sys

    log = tmp_path / "pipeline.log"
    done = subprocess.run(
        [sys.executable, "-c", RUN_INTO_A_CLOSED_PIPE, str(log)], stderr=subprocess.PIPE,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.split("\n")[:2] == ["stopped 141 True", "fine"], done.stderr
    assert "[leanfit] a step's line" in log.read_text()


PAUSED_WITH_A_STEP = """
import os, signal, subprocess, sys
from leanfit.launch import _stops_told_to_steps

# a step: its own process group, as `steps.run_step` makes it, training (a busy loop)
step = subprocess.Popen(["sh", "-c", "while :; do :; done"], process_group=0)
with _stops_told_to_steps([]):
    # the handler of SIGCONT not run: as when another thread took the signal after the main
    # one had gone back to kfp.local's read of the paused step's output (seen once)
    signal.signal(signal.SIGCONT, signal.SIG_DFL)
    print(step.pid, flush=True)
    read, write = os.pipe()
    os.read(read, 1)  # blocked, as kfp.local's readline of the step's output
"""


def test_a_paused_pipeline_takes_its_steps_on_when_it_goes_on(tmp_path):
    """Ctrl-Z then `fg` of `leanfit run`: the steps, in process groups of their own, are paused
    with it and go on with it, even when the handler of SIGCONT does not get to run (once in the
    suite, the search step stayed stopped for good after `fg`)."""
    import os
    import signal
    import subprocess
    import sys

    def state(pid: int) -> str:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]

    def waited_for(pid: int, stopped: bool) -> bool:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if (state(pid) == "T") == stopped:
                return True
            time.sleep(0.05)
        return False

    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_WITH_A_STEP], stdout=subprocess.PIPE, text=True
    )
    step = int(proc.stdout.readline())
    try:
        os.kill(proc.pid, signal.SIGTSTP)  # Ctrl-Z
        assert waited_for(proc.pid, stopped=True), "the command did not pause"
        assert waited_for(step, stopped=True), "its step trained on"
        os.kill(proc.pid, signal.SIGCONT)  # `fg`
        assert waited_for(proc.pid, stopped=False), "the command did not go on"
        assert waited_for(step, stopped=False), "its step stayed paused after `fg`"
    finally:
        with contextlib.suppress(OSError):
            os.killpg(step, signal.SIGKILL)
        proc.kill()
        proc.communicate(timeout=60)


STOPPED_WITH_A_STEP = """
import os, signal, subprocess, sys
from leanfit.launch import _stops_told_to_steps

signal.signal(signal.SIGINT, signal.default_int_handler)  # (as a terminal's job; not pytest's)
# a step in a group of its own that says when it is told to stop
step = subprocess.Popen(
    ["sh", "-c", f"trap 'echo told > {sys.argv[1]}; exit 0' INT; while :; do sleep 0.05; done"],
    process_group=0,
)
with _stops_told_to_steps([]):
    # this (main) thread cannot take SIGINT: another thread does, as the kernel may choose
    # while the main thread waits in kfp.local's read of the step's output
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    print(step.pid, flush=True)
    read, write = os.pipe()
    os.read(read, 1)
"""


def test_a_stop_reaches_the_steps_when_another_thread_takes_it(tmp_path):
    """Ctrl-C of `leanfit run`, taken by a thread other than the main one while that waits on
    a step's output: the steps are told at once (Python runs the handler in the main thread
    alone, at its next bytecode: after the step's next line, or never)."""
    import os
    import signal
    import subprocess
    import sys

    told = tmp_path / "told"
    proc = subprocess.Popen(
        [sys.executable, "-c", STOPPED_WITH_A_STEP, str(told)], stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    step = int(proc.stdout.readline())
    try:
        os.kill(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 20
        while not told.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert told.exists(), "the step was not told to stop"
    finally:
        with contextlib.suppress(OSError):
            os.killpg(step, signal.SIGKILL)
        proc.kill()
        proc.communicate(timeout=60)


def test_the_committed_pipeline_yaml_is_current(tmp_path):
    fresh = run_cli("compile", str(EXAMPLES / "cifar10.yaml"), "-o", "p.yaml", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert (tmp_path / "p.yaml").read_text() == COMMITTED.read_text(), (
        "pipelines/automl_pipeline.yaml is stale: run "
        "`leanfit compile examples/cifar10.yaml -o pipelines/automl_pipeline.yaml`"
    )


def test_the_compiled_pipeline_loads_back_and_carries_the_cluster_settings():
    from kfp import components

    loaded = components.load_component_from_file(str(COMMITTED))
    assert loaded.name == "leanfit-automl"
    assert set(loaded.component_spec.inputs) == {"experiment", "base_dir"}

    docs = list(yaml.safe_load_all(COMMITTED.read_text()))
    spec, platform = docs[0], docs[1]
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in ("exec-search", "exec-final-train"):
        resources = executors[step]["container"]["resources"]
        assert resources["accelerator"]["resourceCount"] == "1"
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert k8s[step]["nodeSelector"]["labels"] == {
            "nvidia.com/gpu.product": "Tesla-V100-SXM2-16GB"
        }
        assert k8s[step]["tolerations"] == [
            {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
        ]
    pod = {e["name"]: e["fieldPath"] for e in k8s["exec-search"]["fieldPathAsEnv"]}
    assert pod["POD_UID"] == "metadata.uid"  # the search pod owns its trial Jobs
    for step in ("exec-fingerprint", "exec-subset", "exec-evaluate-register"):
        assert "accelerator" not in executors[step]["container"].get("resources", {})
        assert "nodeSelector" not in k8s[step]
    for step in executors:
        assert k8s[step]["pvcMount"][0]["mountPath"] == "/work"
        assert k8s[step]["secretAsEnv"][0]["secretName"] == "leanfit-credentials"
        assert executors[step]["container"]["image"] == "ghcr.io/leanfit/leanfit:0.1.0-cuda"
    default = json.loads(
        spec["root"]["inputDefinitions"]["parameters"]["experiment"]["defaultValue"]
    )
    assert default["work_dir"] == "/work/leanfit"  # on the PVC, where every step finds it
    experiment_from_dict(default, "/work")  # the embedded experiment is a valid file


def test_with_trials_as_jobs_the_search_pod_asks_for_no_gpu(tmp_path):
    """With `executor.kind: kubernetes` the search pod only creates and follows its trial Jobs,
    which ask for their own GPUs: the GPU, CPU and memory, node selector and tolerations go on
    the final training alone (the search pod held an idle GPU for the whole search)."""
    overlay = EXAMPLES.parent / "manifests" / "overlays" / "gpu" / "experiment.yaml"
    done = run_cli("compile", str(overlay), "-o", "p.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    spec, platform = list(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))[:2]
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert "accelerator" in executors["exec-final-train"]["container"]["resources"]
    assert "resources" not in executors["exec-search"]["container"]
    assert "nodeSelector" not in k8s["exec-search"] and "tolerations" not in k8s["exec-search"]
    assert k8s["exec-search"]["pvcMount"], "it still shares the work folder with its Jobs"


def test_compile_refuses_a_tracking_uri_with_a_password(tmp_path):
    """The compiled pipeline carries the experiment as its parameter's default, in plain text,
    which KFP shows to anyone who can read the pipeline (and `submit` uploads)."""
    cfg = small_pipeline_config(tracking={"uri": "http://alice:s3cretPW@mlflow.example:5000"})
    write_yaml(tmp_path / "e.yaml", cfg)
    r = run_cli("compile", "e.yaml", "-o", "p.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "s3cretPW" not in r.stdout + r.stderr, r.stderr
    assert "tracking.uri: http://alice:***@mlflow.example:5000 holds a password" in r.stderr
    assert "MLFLOW_TRACKING_PASSWORD" in r.stderr and not (tmp_path / "p.yaml").exists()


def test_compile_refuses_a_bad_output_name(tmp_path):
    r = run_cli("compile", str(EXAMPLES / "digits.yaml"), "-o", "pipeline.json", cwd=tmp_path)
    assert r.returncode == 2
    assert "-o" in r.stderr and ".yaml" in r.stderr
    assert "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())
    # a folder that cannot be written (a file where the folder should be; /proc): said, and
    # nothing half-written left beside it
    (tmp_path / "notes.txt").write_text("mine")
    for out, says in (
        (tmp_path / "notes.txt" / "p.yaml", f"{tmp_path / 'notes.txt'} is a file; give a folder"),
        (Path("/proc/p.yaml"), "cannot write /proc/p.yaml"),
    ):
        r = run_cli("compile", str(EXAMPLES / "digits.yaml"), "-o", str(out), cwd=tmp_path)
        assert r.returncode == 2 and says in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    # -o naming the experiment file itself, or a file of the user's: refused, both kept whole
    # (the experiment file was overwritten with the pipeline, exit 0)
    experiment = tmp_path / "digits.yaml"
    experiment.write_text((EXAMPLES / "digits.yaml").read_text())
    for out, says in (
        ("digits.yaml", "is the experiment file itself"),
        ("./notes.txt.yaml", None),  # (a name that is free: the control)
    ):
        r = run_cli("compile", "digits.yaml", "-o", out, cwd=tmp_path)
        if says is None:
            assert r.returncode == 0, r.stderr
            continue
        assert r.returncode == 2 and says in r.stderr, r.stderr
    (tmp_path / "mine.yaml").write_text("notes: mine\n")
    r = run_cli("compile", "digits.yaml", "-o", "mine.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "exists and is not a compiled pipeline" in r.stderr, r.stderr
    assert (tmp_path / "mine.yaml").read_text() == "notes: mine\n"
    assert experiment.read_text() == (EXAMPLES / "digits.yaml").read_text()
    # an earlier compile's output is replaced
    r = run_cli("compile", "digits.yaml", "-o", "notes.txt.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- steps on their own


def test_augment_policy_search_picks_the_best_grid_point_and_fixes_it(tmp_path, monkeypatch):
    from leanfit import steps
    from leanfit.data.sources import load_dataset
    from leanfit.train.trial import data_plan

    monkeypatch.chdir(tmp_path)
    data = small_pipeline_config(
        pipeline={"augment_policy": {"mode": "search", "n": [0, 2], "m": [12], "epochs": 2}}
    )
    experiment = experiment_from_dict(data, EXAMPLES)
    plan = tmp_path / "plan.json"
    data_plan(experiment, load_dataset(experiment)).save(plan)
    policy = steps.augment_policy(experiment, str(plan), str(tmp_path / "policy.json"))
    assert [(s["n"], s["m"]) for s in policy["scores"]] == [(0, 0), (2, 12)]
    best = max(policy["scores"], key=lambda s: s["val_accuracy"])
    assert (policy["n"], policy["m"]) == (best["n"], best["m"])
    fixed = steps.apply_policy(experiment, policy)
    space = fixed.search_space()
    assert "randaugment_n" not in [d.name for d in space.dimensions]
    assert fixed.hyperparameters(space.sample(0))["randaugment_n"] == policy["n"]


def test_report_takes_a_pipeline_search_for_the_file_it_started_from():
    """The pipeline's search runs with the file's settings changed (the policy step fixes N and
    M, the work folder is made absolute); `leanfit report FILE` still recognises it as the
    file's, by the tags the search step writes, and reads it with the space it searched."""
    import json
    from types import SimpleNamespace

    from leanfit import steps
    from leanfit.search.readback import SearchReading, as_searched
    from leanfit.track.search import TAG_FILE_KEY, TAG_POLICY, TAG_SETTINGS_KEY, search_key
    from leanfit.trigger.watch import tolerant

    data = small_pipeline_config(pipeline={"augment_policy": {"mode": "search", "n": [0, 2]}})
    experiment = experiment_from_dict(data, EXAMPLES)
    passed = steps.read_experiment(**steps.pipeline_arguments(experiment))
    assert passed.work_dir != experiment.work_dir
    assert search_key(passed, None) == search_key(experiment, None)
    # `leanfit watch` leaves empty class folders out: the same search and pipeline as `run`'s
    watched = tolerant(experiment)
    assert watched.dataset.empty_classes != experiment.dataset.empty_classes
    assert search_key(watched, "d") == search_key(experiment, "d")
    assert steps.pipeline_key(watched, "d") == steps.pipeline_key(experiment, "d")

    def run(searched, file, policy=None, budget=None):
        tags = {TAG_SETTINGS_KEY: search_key(searched, None), TAG_FILE_KEY: search_key(file, None)}
        if policy:
            tags[TAG_POLICY] = json.dumps({"mode": "search", **policy})
        params = {f"budget.{k}": json.dumps(v) for k, v in (budget or {}).items()}
        return SimpleNamespace(data=SimpleNamespace(tags=tags, params=params))

    policy = {"n": 2, "m": 7}
    fixed = steps.apply_policy(passed, {"mode": "search", **policy})
    found = as_searched(experiment, run(fixed, passed, policy))
    assert found is not None and search_key(found, None) == search_key(fixed, None)
    names = [d.name for d in found.search_space().dimensions]
    assert "randaugment_n" not in names  # the space it searched, not the file's
    # `leanfit run --wall-time 30s`: the file's key is of the changed budget, which was logged
    short = passed.model_copy(update={"budget": passed.budget.model_copy(update={"trials": 9})})
    fixed_short = steps.apply_policy(short, {"mode": "search", **policy})
    found = as_searched(experiment, run(fixed_short, short, policy, {"trials": 9}))
    assert found is not None and search_key(found, None) == search_key(fixed_short, None)
    # a policy that does not give the logged key, or a search started from another file
    assert as_searched(experiment, run(fixed, passed, {"n": 0, "m": 7})) is None
    other = experiment_from_dict({**data, "objectives": {**data["objectives"], "max_params": 900}},
                                 EXAMPLES)  # fmt: skip
    assert as_searched(experiment, run(steps.apply_policy(other, {"mode": "search", **policy}),
                                       other, policy)) is None  # fmt: skip
    # a pipeline's search, cut short, goes on with the pipeline; a `leanfit search` one by itself
    pipeline_run = run(fixed, passed, policy)
    assert SearchReading(None, pipeline_run, [], "").go_on_with("d.yaml") == "leanfit run d.yaml"
    del pipeline_run.data.tags[TAG_FILE_KEY]
    by_itself = SearchReading(None, pipeline_run, [], "").go_on_with("d.yaml")
    assert by_itself == "leanfit search d.yaml --resume"


def test_a_step_stops_as_at_ctrl_c_when_leanfit_run_is_killed(tmp_path):
    """`kill -9` of `leanfit run` left its running step training on as an orphan, writing
    checkpoints and MLflow runs beside the next run's: a step is told Ctrl-C when the process
    that started it dies (and at once, if it died before the step could ask)."""
    import signal
    import subprocess
    import sys

    step = (
        "import sys, time\n"
        "from leanfit.steps import stop_with\n"
        "stop_with(int(sys.argv[1]))\n"
        "print('step running', flush=True)\n"
        "try:\n"
        "    time.sleep(60)\n"
        "except KeyboardInterrupt:\n"
        "    print('stopped as at Ctrl-C', flush=True)\n"
    )
    (tmp_path / "step.py").write_text(step)
    run = (  # the stand-in of `leanfit run`: starts the step under `sh -c`, as kfp.local does
        "import os, subprocess, sys, time\n"
        "subprocess.Popen(['sh', '-ec', f'{sys.executable} {sys.argv[1]} {os.getpid()}; true'],"
        " stdout=open(sys.argv[2], 'w'))\n"
        "time.sleep(60)\n"
    )
    (tmp_path / "run.py").write_text(run)
    out = tmp_path / "step.out"
    parent = subprocess.Popen([sys.executable, str(tmp_path / "run.py"), "step.py", str(out)],
                              cwd=tmp_path)  # fmt: skip
    deadline = time.monotonic() + 60
    while "step running" not in (out.read_text() if out.exists() else ""):
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.2)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    while "stopped as at Ctrl-C" not in out.read_text():
        assert time.monotonic() < deadline, out.read_text()
        time.sleep(0.2)
    # a parent that is gone already: the step does not start at all
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    late = subprocess.run([sys.executable, str(tmp_path / "step.py"), str(gone.pid)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert late.returncode == 130 and "step running" not in late.stdout


def test_a_pipeline_run_left_running_by_a_kill_is_closed_by_the_next_run_here_only(tmp_path):
    """A `leanfit run` killed with -9 leaves its pipeline run RUNNING in MLflow; the next run of
    the same key in the same work folder (holding the key's lock) marks it KILLED. Runs of
    another key, or from another host or work folder (maybe alive), are left alone."""
    from mlflow import MlflowClient

    from leanfit.data.sources import load_dataset
    from leanfit.track.pipeline import TAG_PLACE, close_dead_pipeline_runs, start_pipeline_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    data = small_pipeline_config(tracking={"uri": uri}, work_dir=str(tmp_path / "work"))
    experiment = experiment_from_dict(data, EXAMPLES)
    dataset = load_dataset(experiment)
    dead = start_pipeline_run(experiment, dataset, "key1")
    elsewhere = start_pipeline_run(experiment, dataset, "key1")
    client = MlflowClient(uri)
    client.set_tag(elsewhere, TAG_PLACE, "another-host:/srv/leanfit")
    other_key = start_pipeline_run(experiment, dataset, "key2")
    assert close_dead_pipeline_runs(experiment, "key1") == [dead]
    status = {r: client.get_run(r).info.status for r in (dead, elsewhere, other_key)}
    assert status == {dead: "KILLED", elsewhere: "RUNNING", other_key: "RUNNING"}
    assert "ended without saying so" in client.get_run(dead).data.tags["leanfit.failure"]
    assert close_dead_pipeline_runs(experiment, "key1") == []
    # a pipeline run carries its settings, to compare and filter runs by (it had no params)
    params = client.get_run(dead).data.params
    assert params["budget.max_epochs"] == str(experiment.budget.max_epochs)
    assert params["pipeline.refit"] == json.dumps(experiment.pipeline.refit)
    assert params["dataset.source"] == "digits"
    assert not any(k.startswith(("space.", "tracking.", "work_dir")) for k in params)


def test_finalists_are_the_best_within_budget_and_a_spread_of_sizes():
    from leanfit.steps import choose_finalists

    front = [
        {"trial": i, "params": p, "val_accuracy": a}
        for i, (p, a) in enumerate(
            [(300, 0.8), (900, 0.93), (2_000, 0.96), (8_000, 0.985), (30_000, 0.99)]
        )
    ]
    chosen = choose_finalists(front, 3, max_params=10_000)
    # 300 parameters at 80%: over 5x the best's 1.5% error, not worth a final training
    assert [m["params"] for m in chosen] == [900, 2_000, 8_000]
    chosen = choose_finalists(front, 2, max_params=10_000)
    assert [m["params"] for m in chosen] == [900, 8_000]
    assert choose_finalists(front, 1, max_params=10_000) == [front[3]]
    assert choose_finalists(front, 3, max_params=100) == []

    # the best has no image wrong of 359 (lucky as often as better): counted as one wrong, the
    # others within 5 x 1/359 = 1.4% error are finalists too, not none; one model a size
    perfect = [
        {"trial": i, "params": p, "val_accuracy": a}
        for i, (p, a) in enumerate(
            [(400, 0.95), (900, 0.9861), (1_500, 0.9889), (1_500, 0.9916), (7_554, 1.0)]
        )
    ]
    assert choose_finalists(perfect, 3, None) == [perfect[4]], "without the split's size"
    chosen = choose_finalists(perfect, 3, None, validation_images=359)
    assert [m["trial"] for m in chosen] == [1, 3, 4]
    assert [m["trial"] for m in choose_finalists(perfect, 4, None, 359)] == [1, 3, 4]


def test_the_registered_final_model_is_the_most_accurate_on_validation_within_budget():
    from leanfit.steps import registered_pick

    finals = [
        {"params": 900, "val_accuracy": 0.97, "test_accuracy": 0.99},
        {"params": 2_000, "val_accuracy": 0.985, "test_accuracy": 0.95},
        {"params": 1_500, "val_accuracy": 0.985, "test_accuracy": 0.96},
        {"params": 30_000, "val_accuracy": 0.99, "test_accuracy": 0.995},
    ]
    # the budget rules out the most accurate; of the two tied on validation, the smaller; the
    # test accuracy chooses nothing
    assert registered_pick(finals, 20_000) == 2
    assert registered_pick(finals, None) == 3
    assert registered_pick(finals, 1_000) == 0
    assert registered_pick(finals, 500) is None


FINAL_TRAIN_ALONE = """
import json, sys
import torch
torch.set_num_threads(int(sys.argv[2]))
from leanfit import steps
from leanfit.config import experiment_from_dict
from tests.support import EXAMPLES
paths = json.loads(sys.argv[1])
experiment = experiment_from_dict(paths.pop("experiment"), EXAMPLES)
steps.final_train(experiment, **paths)
"""


def test_a_final_training_killed_goes_on_from_its_checkpoint_and_is_not_trained_twice(
    tmp_path, reference_genotype, capsys, request
):
    """The final step, run alone as its component runs it, killed with -9 mid-training: run
    again, it resumes from the epoch its checkpoint holds (not from the start) and ends with
    the weights of a training that never stopped; run a third time, it trains nothing."""
    import os
    import signal
    import subprocess
    import sys

    import torch

    from leanfit import steps
    from leanfit.data.sources import load_dataset
    from leanfit.space.architecture import flatten_genotype
    from leanfit.train.checkpoint import load_checkpoint
    from leanfit.train.trial import data_plan

    epochs = 12
    # one thread here and in the step: two test processes each training with both cores' threads
    # slowed this test from 18 s alone to 210 s in the suite
    request.addfinalizer(lambda threads=torch.get_num_threads(): torch.set_num_threads(threads))
    torch.set_num_threads(1)
    data = small_pipeline_config(
        pipeline={"final_top_k": 1, "final_epochs": epochs}, work_dir=str(tmp_path / "work")
    )
    experiment = experiment_from_dict(data, EXAMPLES)
    arch = experiment.space.architecture
    config = experiment.search_space().validate(
        flatten_genotype(reference_genotype, arch.blocks, tuple(arch.modules))
    )
    plan, policy, front = tmp_path / "plan.json", tmp_path / "policy.json", tmp_path / "front.json"
    data_plan(experiment, load_dataset(experiment)).save(plan)
    steps.augment_policy(experiment, str(plan), str(policy))
    front.write_text(json.dumps({"front": [
        {"trial": 7, "config": config, "params": 9_000, "val_accuracy": 0.97}
    ]}))  # fmt: skip
    paths = {"plan_path": str(plan), "policy_path": str(policy), "front_path": str(front)}
    kept = steps.final_training_folder(
        steps._with_policy(experiment, str(policy)), config, epochs,
        experiment.strategy.seed + 1000, str(plan),
    )  # fmt: skip
    checkpoint = kept / "checkpoint.pt"

    step = subprocess.Popen(
        [sys.executable, "-c", FINAL_TRAIN_ALONE,
         json.dumps({"experiment": data, **paths, "models_dir": str(tmp_path / "cut")}),
         "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and step.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(step.pid, signal.SIGKILL)
    out, _ = step.communicate(timeout=60)
    assert step.returncode == -signal.SIGKILL, out
    done = load_checkpoint(checkpoint)["epoch"]
    assert 1 <= done < epochs, done
    assert not (kept / "summary.json").exists()

    resumed = steps.final_train(experiment, **paths, models_dir=str(tmp_path / "again"))
    said = capsys.readouterr().out
    assert f"resuming at epoch {done + 1} of {epochs}" in said, said
    summary = json.loads((tmp_path / "again" / "model-0" / "summary.json").read_text())
    assert summary["trial"] == 7 and len(summary["history"]) == epochs

    straight = experiment_from_dict({**data, "work_dir": str(tmp_path / "straight")}, EXAMPLES)
    steps.final_train(straight, **paths, models_dir=str(tmp_path / "straight-models"))
    assert "resuming" not in capsys.readouterr().out
    a = load_checkpoint(tmp_path / "straight-models" / "model-0" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "again" / "model-0" / "checkpoint.pt")["model"]
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-5), name

    third = steps.final_train(experiment, **paths, models_dir=str(tmp_path / "third"))
    said = capsys.readouterr().out
    assert "trained by an earlier run of this pipeline" in said and "resuming" not in said
    assert third == resumed
    copied = tmp_path / "third" / "model-0" / "checkpoint.pt"
    assert copied.read_bytes() == checkpoint.read_bytes()


def test_with_distillation_the_most_accurate_finalist_teaches_the_others(
    tmp_path, reference_genotype, capsys, request
):
    """pipeline.distill: the most accurate finalist trains first, as it would without, and the
    other learns from it; its summary and its kept folder name the teacher, so a student is not
    taken for a plain training (nor for another teacher's student) when the pipeline runs again."""
    import torch

    from leanfit import steps
    from leanfit.data.sources import load_dataset
    from leanfit.space.architecture import flatten_genotype
    from leanfit.train.trial import data_plan

    request.addfinalizer(lambda threads=torch.get_num_threads(): torch.set_num_threads(threads))
    torch.set_num_threads(1)
    data = small_pipeline_config(
        pipeline={"final_top_k": 2, "final_epochs": 2, "distill": True},
        work_dir=str(tmp_path / "work"),
    )
    experiment = experiment_from_dict(data, EXAMPLES)
    arch = experiment.space.architecture
    space = experiment.search_space()
    big = space.validate(flatten_genotype(reference_genotype, arch.blocks, tuple(arch.modules)))
    narrow = {
        **reference_genotype,
        "blocks": [{**b, "width": 8} for b in reference_genotype["blocks"]],
    }
    small = space.validate(flatten_genotype(narrow, arch.blocks, tuple(arch.modules)))
    plan, policy, front = tmp_path / "plan.json", tmp_path / "policy.json", tmp_path / "front.json"
    data_plan(experiment, load_dataset(experiment)).save(plan)
    steps.augment_policy(experiment, str(plan), str(policy))
    front.write_text(json.dumps({"front": [
        {"trial": 3, "config": small, "params": 1_500, "val_accuracy": 0.95},
        {"trial": 8, "config": big, "params": 9_000, "val_accuracy": 0.98},
    ]}))  # fmt: skip
    paths = {"plan_path": str(plan), "policy_path": str(policy), "front_path": str(front)}

    steps.final_train(experiment, **paths, models_dir=str(tmp_path / "models"))
    said = capsys.readouterr().out
    teacher_line = said.index("final training 1/2: trial 8, ")
    assert "the teacher of the others" in said[teacher_line:].splitlines()[0], said
    student_line = said.index("final training 2/2: trial 3, ")
    assert "taught by trial 8" in said[student_line:].splitlines()[0], said
    models = tmp_path / "models"
    student = json.loads((models / "model-0" / "summary.json").read_text())
    teacher = json.loads((models / "model-1" / "summary.json").read_text())
    assert student["trial"] == 3 and teacher["trial"] == 8
    assert "distilled_from" not in teacher
    taught = student["distilled_from"]
    assert (taught["trial"], taught["alpha"], taught["temperature"]) == (8, 0.5, 4.0)
    assert taught["params"] == teacher["params"]

    # run again: nothing trained; without distillation the student trains anew (another key)
    steps.final_train(experiment, **paths, models_dir=str(tmp_path / "again"))
    said = capsys.readouterr().out
    assert said.count("trained by an earlier run of this pipeline") == 2, said
    plain = experiment_from_dict(
        {**data, "pipeline": {**data["pipeline"], "distill": False}}, EXAMPLES
    )
    steps.final_train(plain, **paths, models_dir=str(tmp_path / "plain"))
    said = capsys.readouterr().out
    assert said.count("trained by an earlier run of this pipeline") == 1, said
    again = json.loads((tmp_path / "plain" / "model-0" / "summary.json").read_text())
    assert "distilled_from" not in again

    # with pipeline.refit too: the model to be registered is refit, taught as its first
    # training was (a student by the teacher's first training, the teacher by nobody), and
    # keyed so
    both = experiment_from_dict({**data, "pipeline": {**data["pipeline"], "refit": True}}, EXAMPLES)
    steps.final_train(both, **paths, models_dir=str(tmp_path / "refit"))
    said = capsys.readouterr().out
    assert said.count("trained by an earlier run of this pipeline") == 2, said
    assert said.count("refit on the training and validation splits") == 1, said
    summaries = [
        json.loads((tmp_path / "refit" / f"model-{i}" / "summary.json").read_text())
        for i in range(2)
    ]
    [refit] = [s for s in summaries if "refit" in s]
    assert refit is summaries[steps.registered_pick(summaries, None)]
    key = steps._with_policy(both, str(policy))
    seed = both.strategy.seed + 1000 + summaries.index(refit)
    config = {3: small, 8: big}[refit["trial"]]
    taught = refit.get("distilled_from")  # the student's; none for the teacher
    assert (taught is None) == (refit["trial"] == 8)
    kept = steps.final_training_folder(key, config, 2, seed, str(plan), taught=taught, refit=True)
    assert refit["refit"]["folder"] == kept.name
    assert json.loads((kept / "summary.json").read_text()).get("distilled_from") == taught

    # a teacher that fails (here: a configuration outside the space) leaves the other untaught:
    # the plain training of the student above, kept, is its model
    broken = {**big, "stem_width": 999}
    front.write_text(json.dumps({"front": [
        {"trial": 3, "config": small, "params": 1_500, "val_accuracy": 0.95},
        {"trial": 9, "config": broken, "params": 9_000, "val_accuracy": 0.98},
    ]}))  # fmt: skip
    steps.final_train(experiment, **paths, models_dir=str(tmp_path / "orphan"))
    said = capsys.readouterr().out
    assert "the teacher failed: the other finalists train without it" in said, said
    assert "untaught (its teacher failed)" in said, said
    assert [p.name for p in (tmp_path / "orphan").iterdir()] == ["model-0"]
    orphan = json.loads((tmp_path / "orphan" / "model-0" / "summary.json").read_text())
    assert "distilled_from" not in orphan


def test_with_refit_the_model_to_register_trains_again_on_training_and_validation(
    tmp_path, reference_genotype, capsys, request
):
    """pipeline.refit: the finalists train on the training split as they would without (their
    validation figures are those trainings'); then the one the next step registers (the most
    accurate on validation) trains again, with the same seed, on the training and validation
    splits, and those weights are its model; the other keeps its first weights. Both trainings
    are kept under keys of their own, so a rerun trains nothing, and turning the setting off
    gives the first weights back."""
    import numpy as np
    import torch

    from leanfit import steps
    from leanfit.data.sources import load_dataset
    from leanfit.data.splits import DataPlan
    from leanfit.space.architecture import flatten_genotype
    from leanfit.train.trial import data_plan

    request.addfinalizer(lambda threads=torch.get_num_threads(): torch.set_num_threads(threads))
    torch.set_num_threads(1)
    data = small_pipeline_config(
        pipeline={"final_top_k": 2, "final_epochs": 2, "refit": True},
        work_dir=str(tmp_path / "work"),
    )
    experiment = experiment_from_dict(data, EXAMPLES)
    arch = experiment.space.architecture
    configs = []
    for width in (8, 12):
        narrow = {
            **reference_genotype,
            "blocks": [{**b, "width": width} for b in reference_genotype["blocks"]],
        }
        configs.append(
            experiment.search_space().validate(
                flatten_genotype(narrow, arch.blocks, tuple(arch.modules))
            )
        )
    plan, policy, front = tmp_path / "plan.json", tmp_path / "policy.json", tmp_path / "front.json"
    dataset = load_dataset(experiment)
    data_plan(experiment, dataset).save(plan)
    steps.augment_policy(experiment, str(plan), str(policy))
    front.write_text(json.dumps({"front": [
        {"trial": 5, "config": configs[0], "params": 1_500, "val_accuracy": 0.95},
        {"trial": 6, "config": configs[1], "params": 2_500, "val_accuracy": 0.96},
    ]}))  # fmt: skip
    paths = {"plan_path": str(plan), "policy_path": str(policy), "front_path": str(front)}

    # the refit's images: the training and validation splits, never the test split
    splits = DataPlan.load(plan).splits
    both = steps.refit_train_data(dataset, DataPlan.load(plan))
    assert len(both.train_y) == len(splits.train) + len(splits.val)
    assert not set(np.concatenate([splits.train, splits.val])) & set(splits.test)

    models = tmp_path / "models"
    steps.final_train(experiment, **paths, models_dir=str(models))
    said = capsys.readouterr().out
    n = len(splits.train) + len(splits.val)
    assert said.count(f"refit on the training and validation splits: {n:,} images") == 1, said
    assert "fit accuracy" in said and said.count("val accuracy") == 2, said
    summaries = [json.loads((models / f"model-{i}" / "summary.json").read_text()) for i in (0, 1)]
    pick = steps.registered_pick(summaries, experiment.objectives.max_params)
    other = 1 - pick
    assert f"refit: trial {summaries[pick]['trial']} " in said
    assert "the other finalists keep their weights" in said
    assert summaries[pick]["refit"]["images"] == n and "refit" not in summaries[other]
    policy_exp = steps._with_policy(experiment, str(policy))
    seeds = [experiment.strategy.seed + 1000 + i for i in (0, 1)]
    firsts = [steps.final_training_folder(policy_exp, c, 2, s, str(plan))
              for c, s in zip(configs, seeds, strict=True)]  # fmt: skip
    first = firsts[pick]
    again = steps.final_training_folder(policy_exp, configs[pick], 2, seeds[pick], str(plan),
                                        refit=True)  # fmt: skip
    assert again != first and summaries[pick]["refit"]["folder"] == again.name
    never = steps.final_training_folder(policy_exp, configs[other], 2, seeds[other], str(plan),
                                        refit=True)  # fmt: skip
    assert not never.exists()
    # the held-out figure is the first training's; the refit's own figure is kept as a fit
    assert (
        summaries[pick]["val_accuracy"]
        == json.loads((first / "summary.json").read_text())["val_accuracy"]
    )
    refit_summary = json.loads((again / "summary.json").read_text())
    assert "val_accuracy" not in refit_summary and 0 <= refit_summary["fit_accuracy"] <= 1
    model = (models / f"model-{pick}" / "checkpoint.pt").read_bytes()
    assert model == (again / "checkpoint.pt").read_bytes()
    assert model != (first / "checkpoint.pt").read_bytes()
    kept_weights = (models / f"model-{other}" / "checkpoint.pt").read_bytes()
    assert kept_weights == (firsts[other] / "checkpoint.pt").read_bytes()

    # run again: nothing trained; off: the first training's weights, nothing trained either
    steps.final_train(experiment, **paths, models_dir=str(tmp_path / "again"))
    said = capsys.readouterr().out
    assert said.count("trained by an earlier run") == 2 and "refit by an earlier run" in said, said
    assert "fit accuracy" not in said
    plain = experiment_from_dict(
        {**data, "pipeline": {**data["pipeline"], "refit": False}}, EXAMPLES
    )
    steps.final_train(plain, **paths, models_dir=str(tmp_path / "plain"))
    said = capsys.readouterr().out
    assert said.count("trained by an earlier run") == 2 and "refit on" not in said, said
    off = tmp_path / "plain" / f"model-{pick}"
    assert "refit" not in json.loads((off / "summary.json").read_text())
    assert (off / "checkpoint.pt").read_bytes() == (first / "checkpoint.pt").read_bytes()


# ---------------------------------------------------------------- the whole pipeline, locally


def _runs(client, kind: str) -> list[str]:
    exp = client.get_experiment_by_name("leanfit-digits")
    found = client.search_runs([exp.experiment_id], f"tags.`leanfit.kind` = '{kind}'")
    return sorted(r.info.run_id for r in found)


@pytest.mark.slow
def test_a_failing_step_fails_the_pipeline_with_its_own_message(tmp_path):
    data = small_pipeline_config()
    data["executor"] = {"kind": "kubernetes", "workers": 1, "kubernetes": {"pvc": "work"}}
    write_yaml(tmp_path / "digits.yaml", data)
    r = run_cli(
        "run", "digits.yaml", cwd=tmp_path, timeout=300, env={"KUBECONFIG": str(tmp_path / "no")}
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "step 'search' failed:" in r.stderr
    assert "Traceback" not in r.stderr and "executorInput" not in r.stderr
    assert "search: failure" in r.stdout


@pytest.mark.slow
def test_run_logs_and_registers_on_a_server_that_goes_down_and_a_second_run_does_nothing(
    tmp_path,
):
    """The whole pipeline against a real `mlflow server` on 127.0.0.1, which stops answering
    while the search runs (a gate in front of it closed for 2 s: its port refuses connections
    and cuts the open ones, as when its process has stopped) and then answers again: MLflow's
    client retries, nothing that finished is lost, a champion is registered. A second run on
    the same data and settings does nothing."""
    from tests.support import Gate

    server = MlflowServer(tmp_path / "server").start()
    gate = Gate(server.port).open()
    # with pipeline.refit, as examples/digits.yaml has it
    pipeline = {"final_top_k": 2, "final_epochs": 3, "refit": True}
    write_yaml(tmp_path / "digits.yaml", small_pipeline_config(pipeline=pipeline))
    outage = {}

    def interrupt() -> None:
        log = tmp_path / ".leanfit" / "kfp"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # wait until the search step has started
            logs = list(log.glob("pipeline-*.log")) if log.exists() else []
            if logs and "Executing task 'search'" in _plain(logs[0].read_text()):
                break
            time.sleep(0.5)
        outage["down"] = time.monotonic()
        gate.close()
        time.sleep(2)  # (MLflow's client asks again after 2, 6, 14 s ...: each wait is the run's)
        gate.open()
        outage["up"] = time.monotonic()

    # with a password (the server has no authentication and ignores it): it reaches the steps
    # in their environment, not in the pipeline's log, where kfp.local writes their parameters
    env = {"MLFLOW_TRACKING_URI": gate.uri.replace("http://", "http://leanfit:s3cret-pw@")}
    thread = threading.Thread(target=interrupt)
    thread.start()
    try:
        first = run_cli("run", "digits.yaml", cwd=tmp_path, timeout=600, env=env)
        thread.join()
        assert outage.get("up"), "the server was never stopped"
        assert first.returncode == 0, first.stdout + first.stderr
        for step in ("fingerprint", "subset", "augment-policy", "search", "final-train"):
            assert f"{step}: success" in first.stdout
        assert "champion     leanfit-digits version 1" in first.stdout
        assert "executorInput" not in first.stdout  # kfp.local's internals go to the log file
        assert "chosen on a validation split" not in first.stdout  # (360 images: not said)
        # against a server: its address to browse (`mlflow ui` cannot open a server's URI), and
        # none of MLflow's "View run ... at" lines (two for every trial job)
        masked = gate.uri.replace("http://", "http://leanfit:***@")
        assert f"browse       {masked}" in first.stdout, first.stdout[-2000:]
        assert "s3cret-pw" not in first.stdout + first.stderr
        written = [f for f in (tmp_path / ".leanfit").rglob("*") if f.is_file()]
        assert any(f.name.startswith("pipeline-") for f in written)
        assert not [f for f in written if b"s3cret-pw" in f.read_bytes()]
        assert "View run" not in first.stdout + first.stderr

        client, versions, champion = registry(server.uri)
        assert versions == ["1"] and str(champion.version) == "1"
        assert champion.tags["leanfit.dataset_digest"]
        challenger = client.get_model_version_by_alias("leanfit-digits", "challenger")
        assert str(challenger.version) == "1"
        # the pytorch flavour with a signature, next to a TorchScript file
        import mlflow

        mlflow.set_tracking_uri(server.uri)
        mlflow.set_registry_uri(server.uri)  # not one an earlier test of this process set
        info = mlflow.models.get_model_info("models:/leanfit-digits@champion")
        assert info.flavors.get("pytorch") and info.signature is not None
        # what `leanfit predict` needs: the classes in output order, how a file is read
        card = info.metadata["leanfit"]
        assert card["classes"] == [str(d) for d in range(10)], card
        assert (card["image_size"], card["channels"], card["background"]) == (16, 1, "white")
        assert client.get_run(champion.run_id).data.params["final.refit"] == "train+val"
        assert client.get_run(champion.run_id).data.metrics["refit_wall_time"] > 0
        assert "(refit on train + val)" in first.stdout
        files = [f.path for f in client.list_artifacts(champion.run_id, "torchscript")]
        assert files == ["torchscript/model.torchscript.pt"]
        onnx = [f.path for f in client.list_artifacts(champion.run_id, "onnx")]
        assert onnx == ["onnx/model.onnx"], onnx
        report = [ln for ln in first.stdout.splitlines() if ln.startswith("report")]
        assert report and report[0].endswith("report.html"), report  # a browser shows it
        with open(report[0].split()[-1]) as page:
            text = page.read()
        assert "Pareto" in text and "class by class" in text and "largest class" in text
        # what chose the model (the table's validation accuracy is the search's)
        assert "final models&#x27; validation accuracy" in text or (
            "final models' validation accuracy" in text
        ), text[-3000:]
        shown = {a.path for a in client.list_artifacts(champion.run_id, "report")}
        assert shown == {"report/confusion.png"}, shown  # beside the registered model
        [pipeline] = _runs(client, "pipeline")
        logged = {a.path for a in client.list_artifacts(pipeline, "report")}
        assert "report/report.html" in logged, logged
        assert _runs(client, "trial"), "no trial job was logged"
        exp = client.get_experiment_by_name("leanfit-digits")
        assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")

        searches_before = _runs(client, "search")
        # the pipeline run names the search its models came from
        assert client.get_run(pipeline).data.tags["leanfit.search_run_id"] in searches_before
        second = run_cli("run", "digits.yaml", cwd=tmp_path, timeout=300, env=env)
        assert second.returncode == 0, second.stderr
        assert "up to date" in second.stdout
        assert f"report       {report[0].split()[-1]}" in second.stdout  # the run it found
        _, versions_after, champion_after = registry(server.uri)
        assert versions_after == ["1"] and str(champion_after.version) == "1"
        assert _runs(client, "search") == searches_before
        # the pipeline's search, read back from the file the pipeline ran
        read = run_cli("report", "digits.yaml", "-o", "read", "--json", cwd=tmp_path, env=env)
        assert read.returncode == 0, read.stdout + read.stderr
        summary = json.loads(read.stdout)
        assert summary["search_run_id"] in searches_before and summary["status"] == "FINISHED"
        assert summary["jobs_finished"] > 0 and summary["front"]
        assert (tmp_path / "read" / "pareto.png").exists()

        # the champion's alias removed by hand (the MLflow UI): a watcher that saw nothing to do
        # for good registers it again (that run's search and final training reused)
        client.delete_registered_model_alias("leanfit-digits", "champion")
        check = run_cli("watch", "digits.yaml", "--once", cwd=tmp_path, timeout=300, env=env)
        assert check.returncode == 0, check.stdout + check.stderr
        said = " ".join(check.stdout.split())
        assert "but the registered model leanfit-digits has no champion (its alias was removed" in (
            said
        ), said
        _, versions_after, champion_after = registry(server.uri)
        assert versions_after == ["1"] and str(champion_after.version) == "1"
        assert _runs(client, "search") == searches_before
        # its model's files gone (`mlflow gc`, or deleted by hand): "up to date", and kept as
        # "nothing new to register" for good before, a champion nothing could load; now
        # registered again
        model_files = server.folder / "artifacts" / str(exp.experiment_id) / "models"
        shutil.rmtree(model_files / champion_after.source.rstrip("/").split("/")[-1])
        again = run_cli("run", "digits.yaml", cwd=tmp_path, timeout=300, env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        said = " ".join(again.stdout.split())
        assert "the champion, leanfit-digits version 1, cannot be loaded: its model files are " in (
            said
        ), said
        lost = "leanfit-digits version 2 (the same weights as version 1, which cannot be loaded "
        assert lost in said, said
        assert "is the new champion: the champion (version 1) cannot classify" in said, said
        _, versions_after, champion_after = registry(server.uri)
        assert versions_after == ["1", "2"] and str(champion_after.version) == "2"

        # an artifact store the server cannot write: said before any training, in seconds, and
        # no search run is left (it was found at the report, after the whole search and four
        # minutes of MLflow's retries, and the search run stayed RUNNING)
        (server.folder / "artifacts").rename(server.folder / "artifacts-moved")
        (server.folder / "artifacts").write_text("not a folder")
        broken = run_cli("search", "digits.yaml", "--synthetic", "0", cwd=tmp_path, env=env,
                         timeout=120)  # fmt: skip
        said = " ".join(broken.stderr.split())
        assert broken.returncode == 2 and "Traceback" not in said, said
        assert f"MLflow at {masked} keeps runs but could not store a file in" in said, said
        assert "--artifacts-destination" in said and "nothing was started" in said, said
        assert _runs(client, "search") == searches_before
        assert "search:" not in broken.stdout, broken.stdout  # no trial ran
    finally:
        gate.close()
        server.stop()


def processes_in(folder: Path) -> list[str]:
    """The command lines of the processes whose working folder is `folder` (Linux)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if Path(proc / "cwd").resolve() == folder.resolve():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # ended meanwhile, or not ours to read
            continue
    return found


@pytest.mark.slow
def test_ctrl_c_stops_the_pipeline_cleanly_and_says_how_to_go_on(tmp_path):
    """Ctrl-C, as a terminal sends it, during the search step of `leanfit run`, then of `leanfit
    watch` (which goes on with the same search): each waits for the step to record where it
    stopped (kfp.local alone gives it a quarter of a second), says how to go on, exits 130, and
    leaves the pipeline's and the search's MLflow runs KILLED, not RUNNING."""
    import os
    import signal
    import subprocess
    import sys

    from mlflow import MlflowClient

    from tests.support import foreground_job

    data = small_pipeline_config(budget={"min_epochs": 1, "max_epochs": 3, "trials": 500})
    write_yaml(tmp_path / "digits.yaml", data)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # read only once the command has made it

    logs: list[Path] = []

    def interrupted_in_search(
        *command: str, meanwhile=lambda proc: None, signum=signal.SIGINT, alone=False
    ):
        """Ctrl-C to the command's process group, as a terminal sends it; or a signal to the
        command alone, as `kill PID` and Kubernetes send it, which it passes on to its steps
        (before, SIGTERM waited a minute while its search step went on, then left it running;
        SIGINT left the search FAILED and a trial RUNNING)."""
        proc = zygote.popen(
            [sys.executable, "-m", "leanfit.cli", *command],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=foreground_job,
        )  # fmt: skip
        shown = []
        for line in proc.stdout:  # the search's first progress line: it is training
            shown.append(line)
            if "search: trials" in line:
                break
        assert proc.poll() is None, "".join(shown)
        try:
            meanwhile(proc)
        except BaseException:  # (its steps, in groups of their own, would train on for good)
            os.killpg(proc.pid, signal.SIGCONT)
            proc.terminate()
            proc.communicate(timeout=120)
            raise
        time.sleep(2)
        if signum == signal.SIGINT and not alone:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signum)
        started = time.monotonic()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signum, "".join(shown) + out + err
        assert time.monotonic() - started < 30, "it waited for its steps' STOP_SECONDS"
        assert "stopping: the running step is recording where it stopped" in out
        assert "Traceback" not in err
        steps = [c for c in processes_in(tmp_path) if "executor_main" in c]
        assert not steps, f"a step still runs after the command ended: {steps}"
        (log,) = [p for p in (tmp_path / ".leanfit").rglob("pipeline-*.log") if p not in logs]
        logs.append(log)  # the step says it stopped, without Python's traceback
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("leanfit-digits")
        for kind in ("pipeline", "search"):
            runs = client.search_runs([exp.experiment_id], f"tags.`leanfit.kind` = '{kind}'")
            assert {r.info.status for r in runs} == {"KILLED"}, kind
        return "".join(shown) + out, err

    def second_run(first) -> None:  # refused at once, before any step: nothing runs twice
        second = run_cli("run", "digits.yaml", cwd=tmp_path, timeout=60)
        assert second.returncode == 2, second.stdout + second.stderr
        said = second.stderr.replace("\n", " ")
        assert "a pipeline run of these settings and data ('digits') is running now in" in said
        assert f"(process {first.pid}, since " in said and f"`kill {first.pid}`" in said, said
        assert "fingerprint ..." not in second.stdout, second.stdout  # no step started
        # a watcher's check (a CronJob's) leaves the data to that run, and does not fail
        check = run_cli("watch", "digits.yaml", "--once", cwd=tmp_path, timeout=120)
        assert check.returncode == 0, check.stdout + check.stderr
        said = " ".join(check.stdout.split())
        assert f"is running now (process {first.pid}, since " in said, said
        assert "left to it; the next check finds its result" in said, said

    _, err = interrupted_in_search("run", "digits.yaml", meanwhile=second_run)
    assert "interrupted:" in err and "`leanfit run digits.yaml` goes on with them" in err, err

    def paused_and_resumed(proc) -> None:
        """Ctrl-Z, then `fg`: the steps run in process groups of their own, and trained on
        while the command was paused, until the command paused their groups with its own."""
        steps = [int(p.name) for p in Path("/proc").glob("[0-9]*") if _under(int(p.name), proc.pid)]
        os.killpg(proc.pid, signal.SIGTSTP)
        time.sleep(1.0)
        before = _cpu_ticks(steps)
        time.sleep(1.5)
        assert _cpu_ticks(steps) == before, "a step ran on while the command was paused"
        os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(1.0)
        assert _cpu_ticks(steps) > before, "the steps did not go on after `fg`"

    out, err = interrupted_in_search(
        "run", "digits.yaml", signum=signal.SIGTERM, meanwhile=paused_and_resumed
    )
    assert err.startswith("terminated (SIGTERM): the steps that finished"), err
    # the second run went on with the first's search, said so, and took it under its own run
    # (it stayed under the interrupted pipeline run, so the one that went on showed no search)
    assert "resuming the unfinished search " in out, out
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("leanfit-digits")
    (search,) = client.search_runs([exp.experiment_id], "tags.`leanfit.kind` = 'search'")
    latest = client.search_runs(
        [exp.experiment_id], "tags.`leanfit.kind` = 'pipeline'", order_by=["start_time DESC"]
    )[0]
    assert search.data.tags["mlflow.parentRunId"] == latest.info.run_id
    out, err = interrupted_in_search("watch", "digits.yaml", "--interval", "1h", alone=True)
    assert "stopped watching digits.yaml" in err and "`leanfit run digits.yaml`" in err, err
    # the watcher went on with the search the interrupted run left (the same settings and data,
    # though a watcher leaves empty class folders out)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("leanfit-digits")
    assert len(client.search_runs([exp.experiment_id], "tags.`leanfit.kind` = 'search'")) == 1


def _under(pid: int, root: int) -> bool:
    """Whether process `pid` descends from `root` (Linux)."""
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid == root:
            return True
    return False


def _cpu_ticks(pids: list[int]) -> int:
    """The CPU time (user and system, in clock ticks) the processes `pids` have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def test_a_tracking_server_that_stays_down_is_named_in_one_line(tmp_path):
    from tests.support import free_port

    write_yaml(tmp_path / "digits.yaml", small_pipeline_config())
    r = run_cli(
        "run", "digits.yaml", cwd=tmp_path, timeout=300,
        env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"},
    )  # fmt: skip
    assert r.returncode == 2
    # said before any step starts, not after MLflow's four minutes of retries
    assert "MLflow at http://127.0.0.1:" in r.stderr and "did not answer" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / ".leanfit").exists()


def _plain(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_promote_rolls_back_by_hand_and_names_bad_input(tmp_path, monkeypatch):
    import mlflow
    import torch

    monkeypatch.chdir(tmp_path)  # (MLflow's artifacts: ./mlruns, not the checkout's)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # both are process-wide: another test may have set them
    from leanfit.models.predict import ModelCard

    for classes in (["cat", "dog"], ["cat", "dogs"]):  # (a class folder renamed between them)
        with mlflow.start_run():
            example = torch.zeros(1, 2).numpy()
            info = mlflow.pytorch.log_model(  # requirements named: inferring them takes 10 s
                torch.nn.Linear(2, 2), name="model", input_example=example, pip_requirements=[],
                metadata=ModelCard(classes, 8, 1).to_metadata(),
            )  # fmt: skip
        mlflow.register_model(info.model_uri, "leanfit-x")
    from mlflow import MlflowClient

    MlflowClient(uri).set_registered_model_alias("leanfit-x", "champion", "2")
    ok = run_cli("promote", "leanfit-x", "1", "--tracking-uri", uri, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "was 2" in ok.stdout
    said = " ".join(ok.stdout.split())
    assert (
        "note: version 1 was trained on the classes 'cat', 'dog', version 2 on 'cat', 'dogs'"
        in (said)
    ), said
    assert str(MlflowClient(uri).get_model_version_by_alias("leanfit-x", "champion").version) == "1"
    # the champion already: said, and the database left as it was (it was written again)
    before = (tmp_path / "mlflow.db").read_bytes()
    again = run_cli("promote", "leanfit-x", "1", "--tracking-uri", uri, cwd=tmp_path)
    assert again.returncode == 0 and "already the champion" in again.stdout, again.stderr
    assert (tmp_path / "mlflow.db").read_bytes() == before
    for args, named in (
        (("leanfit-y", "1"), "NAME"),
        (("leanfit-x", "7"), "VERSION"),
        (("leanfit-x", " 2"), "VERSION: ' 2' is not a version number"),  # MLflow took it for 2
    ):
        bad = run_cli("promote", *args, "--tracking-uri", uri, cwd=tmp_path)
        assert bad.returncode == 2 and named in bad.stderr and "Traceback" not in bad.stderr
    assert str(MlflowClient(uri).get_model_version_by_alias("leanfit-x", "champion").version) == "1"
    # run where the database is not (the default sqlite:///mlflow.db of another folder): said,
    # and no empty database left behind
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bad = run_cli("promote", "leanfit-x", "1", cwd=elsewhere)
    assert bad.returncode == 2 and "no tracking database at mlflow.db" in bad.stderr, bad.stderr
    assert "--tracking-uri:" not in bad.stderr  # (the default was used: no option was given)
    # a file store: the fix names this command's option, not the experiment file's field
    bad = run_cli("promote", "leanfit-x", "1", "--tracking-uri", "mlruns", cwd=elsewhere)
    assert bad.returncode == 2 and "(--tracking-uri, or $MLFLOW_TRACKING_URI)" in bad.stderr
    assert "Traceback" not in bad.stderr and not list(elsewhere.iterdir())
    # a version whose model files were deleted: it was made the champion, which nothing could
    # load; refused, the champion left as it was
    shutil.rmtree(MlflowClient(uri).get_model_version_download_uri("leanfit-x", "2"))
    bad = run_cli("promote", "leanfit-x", "2", "--tracking-uri", uri, cwd=tmp_path)
    said = " ".join(bad.stderr.split())
    assert bad.returncode == 2 and "leanfit-x version 2 cannot be loaded: its model" in said, said
    assert str(MlflowClient(uri).get_model_version_by_alias("leanfit-x", "champion").version) == "1"


# ---------------------------------------------------------------- submit


def test_submit_uploads_the_compiled_pipeline_and_a_recurring_run(tmp_path):
    from tests.kfp_standin import API, KfpStandin

    with KfpStandin() as kfp:
        once = run_cli("submit", str(EXAMPLES / "cifar10.yaml"), "--host", kfp.url, cwd=tmp_path)
        assert once.returncode == 0, once.stderr
        cron = run_cli(
            "submit", str(EXAMPLES / "cifar10.yaml"), "--host", kfp.url,
            "--recurring", "0 3 * * *", "--experiment", "nightly", cwd=tmp_path,
        )  # fmt: skip
        assert cron.returncode == 0, cron.stderr
        (upload,) = kfp.received("POST", f"{API}/pipelines/upload_version")
        sent = yaml.safe_load_all(upload.files["uploadfile"][1])
        assert next(sent)["pipelineInfo"]["name"] == "leanfit-automl"
        (run,) = kfp.received("POST", f"{API}/runs")
        (recurring,) = kfp.received("POST", f"{API}/recurringruns")
        assert recurring.json["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
        assert "watch it at" in once.stdout
    bad = run_cli(
        "submit", str(EXAMPLES / "cifar10.yaml"), "--host", kfp.url, "--recurring", "every day",
        cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2 and "--recurring" in bad.stderr


def test_every_example_validates():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        if path.name != "reference_genotype.yaml":
            load_experiment(path)


def test_a_usage_mistake_exits_2_without_a_traceback(tmp_path):
    for args in (("validate", "a.yaml", "b.yaml"), ("no-such-command",), ("run",)):
        r = run_cli(*args, cwd=tmp_path)
        assert r.returncode == 2, args
        assert "Traceback" not in r.stderr and "Usage" in r.stderr + r.stdout


def test_the_fingerprint_step_says_a_folder_by_its_path():
    """Its log line said `dataset file:///tmp/donn%C3%A9es%20dir/...`, MLflow's URI of it."""
    from pathlib import Path

    from leanfit.steps import shown_source

    folder = Path("/tmp/données dir/模型 imgs")
    assert shown_source(folder.as_uri()) == str(folder)
    assert shown_source("s3://bucket/images") == "s3://bucket/images"
    assert shown_source("digits") == "digits"


def test_the_search_steps_messages_say_how_a_pipeline_goes_on(tmp_path):
    """A failed search step said "Fix that and run it again (`--resume` goes on with it)", and
    `leanfit run --resume` is no option."""
    from leanfit.steps import in_pipeline_words

    said = "Fix that and run it again (`--resume` goes on with it); Ctrl-C stops it where it is, "
    said += "and --resume goes on with it after a fix"
    assert "--resume" not in in_pipeline_words(said)
    assert in_pipeline_words(said).count("the pipeline run again goes on with it") == 2
    # another controller of the search runs (a `leanfit search` of the same file and data)
    from leanfit.config import experiment_from_dict
    from leanfit.errors import LeanfitError
    from leanfit.search.run import search_lock

    exp = experiment_from_dict({**small_pipeline_config(), "work_dir": str(tmp_path)})
    with search_lock(exp, "k"), pytest.raises(LeanfitError) as busy, search_lock(exp, "k"):
        pass
    said = " ".join(in_pipeline_words(str(busy.value)).split())
    assert "--resume" not in said, said
    assert "then run the pipeline again: its search step goes on with that search" in said, said


def test_a_final_training_is_kept_per_decoding_of_the_files(tmp_path):
    """Another image_size, channel count, fit or background keeps the splits (keyed by the
    files' contents) and so the plan; the final training kept under the plan's key was reused,
    a network trained at 12 px logged with a card of 16 px. Each decoding has its own folder,
    and a folder of the version before (not keyed by it) is taken only where its checkpoint
    trained at this size and channel count."""
    import torch

    from leanfit.steps import _trained_on, final_training_folder
    from leanfit.train.trainer import TrainData

    def experiment(**dataset):
        settings = {"source": "imagefolder", "path": "images", "image_size": 12, **dataset}
        work = str(tmp_path / "work")
        return experiment_from_dict(digits_config(dataset=settings, work_dir=work), tmp_path)

    plan = tmp_path / "plan.json"
    plan.write_text("{}")
    config = {"stem_width": 8}
    kept = final_training_folder(experiment(), config, 3, 0, str(plan))
    assert final_training_folder(experiment(), config, 3, 0, str(plan)) == kept
    for change in ({"image_size": 16}, {"channels": 3}, {"fit": "pad"}, {"background": "black"}):
        assert final_training_folder(experiment(**change), config, 3, 0, str(plan)) != kept

    before = final_training_folder(experiment(), config, 3, 0, str(plan), decoding=False)
    assert before.is_relative_to(tmp_path)
    before.mkdir(parents=True)
    torch.save({"image_size": 12, "normalize": {"mean": [0.5], "std": [0.25]}},
               before / "checkpoint.pt")  # fmt: skip

    def data(size: int, channels: int = 1) -> TrainData:
        x = torch.zeros(2, channels, size, size, dtype=torch.uint8)
        return TrainData(x, torch.zeros(2, dtype=torch.long), x, torch.zeros(2), 2)

    assert _trained_on(before, data(12))
    assert not _trained_on(before, data(16)) and not _trained_on(before, data(12, 3))
    assert not _trained_on(tmp_path / "nowhere", data(12))


def test_a_step_stopped_alone_says_so_and_how_to_go_on(tmp_path):
    """SIGTERM to a step alone (or Ctrl-C): `leanfit run` said "RuntimeError: Pipeline
    '[95mleanfit-automl[0m' finished with status FAILURE", colour codes and all, after a
    traceback in the step's log. The step writes that it stopped, which `leanfit run` says."""
    import subprocess
    import sys

    from leanfit.launch import _step_error
    from leanfit.steps import pipeline_arguments

    arguments = pipeline_arguments(experiment_from_dict(digits_config(), tmp_path))
    (tmp_path / "experiment.json").write_text(arguments["experiment"])
    code = (
        "import os, sys\n"
        "from leanfit import steps\n"
        "os.environ[steps.ERROR_FILE_ENV] = sys.argv[1]\n"
        "def stopped(experiment):\n"
        "    raise KeyboardInterrupt\n"
        "steps.run_step('search', stopped, open(sys.argv[2]).read(), sys.argv[3])\n"
    )
    error = tmp_path / "error.json"
    r = subprocess.run(
        [sys.executable, "-c", code, str(error), str(tmp_path / "experiment.json"), str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 130 and "Traceback" not in r.stderr, r.stderr
    assert "step 'search' stopped (Ctrl-C)" in r.stderr
    said = _step_error(error)
    assert said.startswith("step 'search' stopped (Ctrl-C); what it finished is kept"), said
    assert "`leanfit run FILE`" in said and "failed" not in said


def test_a_steps_output_goes_quiet_once_nobody_reads_it():
    """kfp.local closes a step's output a quarter of a second after `leanfit run` is stopped,
    while the step is still recording where it stopped: a line written then raised
    BrokenPipeError, and the search ended FAILED rather than KILLED (seen in the suite)."""
    import os

    from leanfit.steps import _Unread

    read_end, write_end = os.pipe()
    stream = _Unread(os.fdopen(write_end, "w", buffering=1))
    stream.write("read\n")
    assert os.read(read_end, 100) == b"read\n"
    os.close(read_end)  # as kfp.local does
    stream.write("[leanfit] search: trials 3, jobs finished 2 ...\n")  # (raised before)
    stream.flush()
    stream.write("and after it\n")
    assert os.readlink(f"/proc/self/fd/{stream.fileno()}") == os.devnull
    stream.close()
