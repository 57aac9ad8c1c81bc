"""`leanfit search` as a user runs it: progress, Pareto table, report, and resume after kill -9.

The synthetic objective (`--synthetic SECONDS_PER_EPOCH`) stands in for training so that the
search, its worker processes, MLflow and the report are exercised for real in seconds.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

from mlflow import MlflowClient

from leanfit.track.search import TAG_RUNG, TAG_STATUS, TAG_TRIAL
from tests.support import digits_config, run_cli, write_yaml


def experiment(tmp_path, trials: int):
    cfg = digits_config(
        budget={"min_epochs": 1, "max_epochs": 9, "trials": trials},
        executor={"kind": "local", "workers": 2, "trial_timeout": "2m"},
    )
    cfg["strategy"]["initial_points"] = 6
    return write_yaml(tmp_path / "e.yaml", cfg)


def trial_runs(db):
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("leanfit-digits")
    runs = client.search_runs(
        [exp.experiment_id], "tags.`leanfit.kind` = 'trial'", max_results=5000
    )
    return client, runs


def finished_jobs(db) -> int:
    """Finished jobs, read with plain SQL: an MLflow client here would race the search's own
    first-time database migration."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            (n,) = con.execute(
                "select count(*) from tags where key = ? and value = 'ok'", (TAG_STATUS,)
            ).fetchone()
        return n
    except sqlite3.Error:
        return 0


def test_search_shows_the_front_and_writes_a_report(in_tmp):
    experiment(in_tmp, trials=12)
    result = run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp)
    assert result.returncode == 0, result.stderr
    assert "Pareto front" in result.stdout and "report" in result.stdout
    html = next(in_tmp.glob(".leanfit/searches/*/report/report.html"))
    assert "Pareto front" in html.read_text() and "data:image/png;base64," in html.read_text()
    client, runs = trial_runs(in_tmp / "mlflow.db")
    assert len({r.data.tags[TAG_TRIAL] for r in runs}) == 12
    search = client.search_runs([runs[0].info.experiment_id], "tags.`leanfit.kind` = 'search'")[0]
    assert search.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(search.info.run_id, "report")}
    assert artifacts == {"report/pareto.png", "report/report.html"}


def test_resume_after_kill_9_loses_and_repeats_no_finished_trial(in_tmp):
    experiment(in_tmp, trials=30)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "leanfit.cli", "search", "e.yaml", "--synthetic", "0.15"],
        cwd=in_tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and finished_jobs(in_tmp / "mlflow.db") < 8:
        time.sleep(0.5)
    assert proc.poll() is None, "the search ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, runs = trial_runs(in_tmp / "mlflow.db")
    finished_before = [r for r in runs if r.data.tags.get(TAG_STATUS) == "ok"]
    assert len(finished_before) >= 8
    assert [r for r in runs if r.info.status == "RUNNING"], "nothing was running at the kill"

    result = run_cli("search", "e.yaml", "--synthetic", "0.05", "--resume", cwd=in_tmp)
    assert result.returncode == 0, result.stderr
    _, runs = trial_runs(in_tmp / "mlflow.db")
    ok = Counter(
        (r.data.tags[TAG_TRIAL], r.data.tags[TAG_RUNG])
        for r in runs
        if r.data.tags.get(TAG_STATUS) == "ok"
    )
    assert max(ok.values()) == 1, "a finished job was run again"
    before = {r.info.run_id for r in finished_before}
    assert before <= {r.info.run_id for r in runs if r.data.tags.get(TAG_STATUS) == "ok"}
    assert len({t for t, _ in ok}) == 30  # the trial budget is met across both runs
    assert not [r for r in runs if r.info.status == "RUNNING"], "a job was left running"


def test_resume_without_an_unfinished_search_is_a_clear_error(in_tmp):
    experiment(in_tmp, trials=3)
    result = run_cli("search", "e.yaml", "--resume", "--synthetic", "0", cwd=in_tmp)
    assert result.returncode == 2
    assert "--resume" in result.stderr and "Traceback" not in result.stderr
