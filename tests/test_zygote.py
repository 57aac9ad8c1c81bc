"""The tests' zygote (`tests.zygote`) starts a command as a fresh interpreter starts it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests import zygote
from tests.support import ROOT, digits_config, foreground_job, run_cli, write_yaml

PROBES = {
    "module": [sys.executable, "-m", "tests.probe"],
    "script": [sys.executable, str(ROOT / "tests" / "probe.py")],
}


def probe(*args: str, fresh: bool, how="module", **popen) -> tuple[subprocess.Popen, dict, int]:
    """`python -m tests.probe ARGS` (in the checkout, where `tests` is found), or
    `python tests/probe.py ARGS`."""
    proc = zygote.popen(
        [*PROBES[how], *args], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, fresh=fresh, **popen,
    )  # fmt: skip
    out, err = proc.communicate("piped in", timeout=60)
    assert not err, err
    return proc, json.loads(out), proc.returncode


@pytest.mark.parametrize(
    ("how", "as_foreground_job"), [("module", False), ("module", True), ("script", False)]
)
def test_a_forked_process_starts_as_a_fresh_one(how, as_foreground_job):
    """Its arguments, folder, sys.path, environment, stdin, the streams' encoding and buffering
    (PYTHONUNBUFFERED: a forked `leanfit run` kept its steps' lines in a buffer, and a test
    waited for them for good), its process group and signal handlers (as a terminal's
    foreground job too), its exit code; its own random numbers. As `python -m MODULE` and as
    `python SCRIPT` (a benchmark)."""
    import sklearn  # noqa: F401 - it sets KMP_* in this process's environment, as every other
    # test has by then in a suite's run: the zygote's own imports did the same, and it still
    # serves (before, every command of the suite went fresh after the first such import)

    env = {**os.environ, "LEANFIT_PROBE": "é"}
    popen = {"env": env, "preexec_fn": foreground_job if as_foreground_job else None}
    fresh_proc, fresh, fresh_code = probe("3", "x y", fresh=True, how=how, **popen)
    forked_proc, forked, forked_code = probe("3", "x y", fresh=False, how=how, **popen)
    assert isinstance(forked_proc, zygote.Command) and not isinstance(fresh_proc, zygote.Command)
    assert forked_code == fresh_code == 3
    assert forked.pop("random") != fresh.pop("random")
    assert forked == fresh
    assert fresh["stdin"] == "piped in" and fresh["environ"]["LEANFIT_PROBE"] == "é"
    assert fresh["own_group"] is as_foreground_job
    for unbuffered in ("1", ""):  # either way, as the zygote's own start had it
        env["PYTHONUNBUFFERED"] = unbuffered
        _, fresh, _ = probe(fresh=True, how=how, env=env)
        _, forked, _ = probe(fresh=False, how=how, env=env)
        assert forked["streams"] == fresh["streams"], unbuffered


def test_a_forked_command_says_and_exits_as_a_fresh_one(in_tmp):
    """The same output and exit code, forked or fresh: a command that works, one refusing bad
    input (exit 2), one reading its environment (COLUMNS: rich's width) and its folder."""
    cfg = digits_config(budget={"min_epochs": 1, "max_epochs": 3, "trials": 4})
    write_yaml(in_tmp / "e.yaml", cfg)
    write_yaml(in_tmp / "bad.yaml", {**cfg, "budget": {"trials": "many"}})
    for args, env in (
        (["validate", "e.yaml"], {"COLUMNS": "50"}),
        (["validate", "bad.yaml"], None),
        (["search", "missing.yaml"], None),
    ):
        forked = run_cli(*args, cwd=in_tmp, env=env)
        fresh = run_cli(*args, cwd=in_tmp, env=env, fresh=True)
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            fresh.returncode, fresh.stdout, fresh.stderr,
        ), args  # fmt: skip
    assert fresh.returncode == 2 and "missing.yaml" in fresh.stderr


def test_a_forked_command_is_a_process_of_its_own(in_tmp):
    """Its pid and process group are set when `popen` returns (as Popen's preexec_fn has run
    by then: a Ctrl-C sent at once to its group found none), a kill's exit code; an
    environment read as Python starts (PYTHONIOENCODING) gets a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    argv = [sys.executable, "-m", "leanfit.cli", "watch", "missing.yaml"]
    proc = zygote.popen(
        argv, cwd=in_tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=foreground_job,
    )  # fmt: skip
    assert isinstance(proc, zygote.Command)
    assert os.getpgid(proc.pid) == proc.pid != os.getpid()
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    fresh = zygote.popen(argv, cwd=in_tmp, env={**env, "PYTHONIOENCODING": "ascii"},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    assert isinstance(fresh, subprocess.Popen)
    fresh.kill()
    fresh.wait()
