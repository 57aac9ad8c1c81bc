"""`leanfit trial`: one configuration trained and logged to MLflow, as a user runs it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from mlflow import MlflowClient

from leanfit.track.runs import MLFLOW_DIGEST_CHARS
from tests.support import EXAMPLES, run_cli


def only_run(uri: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("leanfit-digits")
    runs = client.search_runs([exp.experiment_id])
    return client, runs


def check_logged_trial(client, run, epochs: int):
    assert run.info.status == "FINISHED"
    assert "b0.type" in run.data.params and "lr" in run.data.params
    assert run.data.params["budget.epochs"] == str(epochs)
    for key in ("params", "macs", "wall_time", "val_accuracy", "train_loss"):
        assert key in run.data.metrics, key
    assert run.data.metrics["params"] > 0 and run.data.metrics["macs"] > 0
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))
    assert run.data.tags["leanfit.status"] == "ok"
    [dataset_input] = run.inputs.dataset_inputs
    digest = run.data.tags["leanfit.dataset_digest"]
    assert dataset_input.dataset.digest == digest[:MLFLOW_DIGEST_CHARS]
    assert dataset_input.dataset.name == "digits"


def test_trial_logs_to_the_default_sqlite_store_and_resumes(in_tmp):
    result = run_cli("trial", str(EXAMPLES / "digits.yaml"), "--sample", "--seed", "7",
                     "--epochs", "2", cwd=in_tmp)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "val accuracy" in result.stdout
    assert (in_tmp / "mlflow.db").exists()
    client, runs = only_run(f"sqlite:///{in_tmp / 'mlflow.db'}")
    assert len(runs) == 1
    check_logged_trial(client, runs[0], epochs=2)

    checkpoint = re.search(r"checkpoint (\S+\.pt)", result.stdout).group(1)
    # what else tells two runs of one configuration apart, as a search's jobs have it (two
    # runs with other seeds had the same params and nothing to say why their figures differed)
    first = runs[0].data
    assert first.tags["leanfit.seed"] == "7" and first.tags["leanfit.checkpoint"] == checkpoint
    assert first.params["budget.schedule_epochs"] == "10"  # budget.max_epochs: resumable to it
    # a resume to no more epochs than the checkpoint holds trained nothing and logged its
    # figures as this run's: refused
    short = run_cli("trial", str(EXAMPLES / "digits.yaml"), "--sample", "--seed", "7",
                    "--epochs", "2", "--resume", checkpoint, cwd=in_tmp)  # fmt: skip
    said = " ".join(short.stderr.split())
    assert (
        short.returncode == 2
        and "holds 2 epochs of training already; give --epochs above 2" in said
    )
    again = run_cli("trial", str(EXAMPLES / "digits.yaml"), "--sample", "--seed", "7",
                    "--epochs", "4", "--resume", checkpoint, cwd=in_tmp)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "epoch   1" not in again.stdout and "epoch   3" in again.stdout
    client, runs = only_run(f"sqlite:///{in_tmp / 'mlflow.db'}")
    resumed = next(r for r in runs if r.data.params["budget.epochs"] == "4")
    assert resumed.data.tags["leanfit.resume_from"] == checkpoint
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "val_accuracy")]
    assert sorted(steps) == [1, 2, 3, 4]  # the history carries over from the checkpoint

    # mistakes: a file that is not a checkpoint, another configuration's checkpoint; refused
    # before anything is logged
    (in_tmp / "notes.pt").write_text("not weights")
    for resume, says in [
        ("notes.pt", "is not a checkpoint leanfit wrote"),
        (checkpoint, "holds another configuration's weights"),  # written by seed 7, not 8
    ]:
        bad = run_cli("trial", str(EXAMPLES / "digits.yaml"), "--sample", "--seed", "8",
                      "--epochs", "4", "--resume", resume, cwd=in_tmp)  # fmt: skip
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
    assert len(only_run(f"sqlite:///{in_tmp / 'mlflow.db'}")[1]) == 2, "no run was started"


def test_trial_logs_to_a_real_mlflow_server(in_tmp, mlflow_server):
    # a URI with a password in it (this server asks for none): it is not printed
    with_password = mlflow_server.uri.replace("http://", "http://alice:s3cret@")
    result = run_cli(
        "trial", str(EXAMPLES / "digits.yaml"), "--genotype",
        str(EXAMPLES / "reference_genotype.yaml"), "--epochs", "1",
        cwd=in_tmp, env={"MLFLOW_TRACKING_URI": with_password},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr and "alice:***@" in result.stdout
    assert not (in_tmp / "mlflow.db").exists()
    client, runs = only_run(mlflow_server.uri)
    assert len(runs) == 1
    check_logged_trial(client, runs[0], epochs=1)
    # a server's address to browse: `mlflow ui --backend-store-uri http://...` fails
    assert f"(browse: {with_password.replace('s3cret', '***')})" in result.stdout, result.stdout


def test_ctrl_c_closes_the_trials_run_and_keeps_its_epochs_to_go_on_from(in_tmp):
    """Ctrl-C during `leanfit trial` left its MLflow run RUNNING for good and kept nothing:
    a trial stopped after 262 epochs had no checkpoint to resume. The run is now closed as
    interrupted with the epochs it finished, and a checkpoint kept as it trained goes on."""
    from tests.support import ctrl_c_when

    trial = ["trial", str(EXAMPLES / "digits.yaml"), "--sample", "--seed", "7", "--search-subset"]
    code, err = ctrl_c_when("epoch   3", *trial, "--epochs", "500", cwd=in_tmp)
    said = " ".join(err.split())
    assert code == 130 and said.startswith("interrupted after "), said
    assert "Traceback" not in said and "closed as KILLED" in said
    client, [run] = only_run(f"sqlite:///{in_tmp / 'mlflow.db'}")
    assert run.info.status == "KILLED" and run.data.tags["leanfit.status"] == "interrupted"
    epochs = len(client.get_metric_history(run.info.run_id, "val_accuracy"))
    assert epochs >= 3 and f"interrupted after {epochs} epochs of 500" in said, said
    found = re.search(
        r"the checkpoint (\S+\.pt) holds (\d+) epochs?: `leanfit trial (.*)` goes", said
    )
    assert found, said
    checkpoint, held, command = found.group(1), int(found.group(2)), found.group(3)
    assert 1 <= held <= epochs, said
    # with every option the training was shaped by (the seed of a --genotype and the schedule
    # were left out, and the run resumed from the printed command trained otherwise)
    args = shlex.split(command)
    assert args == [
        str(EXAMPLES / "digits.yaml"),
        "--sample",
        "--seed",
        "7",
        "--schedule-epochs",
        "500",
        "--search-subset",
        "--resume",
        checkpoint,
        "--epochs",
        "500",
    ], args
    # it goes on from there, as printed (to fewer epochs than the 500 it was started with)
    again = run_cli("trial", *args[:-1], str(held + 1), cwd=in_tmp)
    assert again.returncode == 0, again.stderr
    assert f"epoch {held + 1:>3}" in again.stdout and f"epoch {held:>3}" not in again.stdout


def test_a_piped_genotype_is_kept_beside_the_checkpoint_for_the_command_to_go_on_with(in_tmp):
    """`--genotype <(...)` or /dev/stdin: the command printed after Ctrl-C named /dev/fd/63,
    gone once the trial ended."""
    from tests.support import ctrl_c_when

    genotype = (EXAMPLES / "reference_genotype.yaml").read_text()
    trial = ["trial", str(EXAMPLES / "digits.yaml"), "--genotype", "/dev/stdin", "--no-track"]
    code, err = ctrl_c_when("epoch   2", *trial, "--epochs", "500", cwd=in_tmp, stdin=genotype)
    said = " ".join(err.split())
    found = re.search(r"holds (\d+) epochs?: `leanfit trial (.*)` goes", said)
    assert code == 130 and found, said
    held, args = int(found.group(1)), shlex.split(found.group(2))
    kept = Path(args[args.index("--genotype") + 1])
    assert "--no-track" in args  # (dropped, the pasted command logged to MLflow)
    assert kept.name.endswith(".pt.genotype.yaml") and kept.is_file(), args
    again = run_cli("trial", *args[:-1], str(held + 1), cwd=in_tmp)  # as printed
    assert again.returncode == 0, again.stderr
    assert f"epoch {held + 1:>3}" in again.stdout and f"epoch {held:>3}" not in again.stdout


OPEN_TOGETHER = """
import os, sys, time
from leanfit.track.runs import TrialLogger

open(f"ready-{sys.argv[1]}", "w").close()
while not os.path.exists("go"):  # every process starts opening the new database at once
    time.sleep(0.001)
TrialLogger("sqlite:///mlflow.db", f"leanfit-{sys.argv[1]}")
"""


def test_processes_opening_a_new_tracking_database_together_all_get_it(tmp_path):
    """Two searches started together in a new folder: MLflow creates the sqlite database's
    tables on first use with no guard between processes, and one of them ended in a traceback
    (`table latest_metrics already exists`). leanfit opens a new database under a lock."""
    import os
    import subprocess
    import sys
    import time

    (tmp_path / "open.py").write_text(OPEN_TOGETHER)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [
        subprocess.Popen(
            [sys.executable, "open.py", str(i)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(4)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.05)  # each has imported MLflow, and waits
    (tmp_path / "go").touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]


def test_an_interrupt_while_a_new_tracking_database_is_made_waits_for_its_tables(
    tmp_path, monkeypatch
):
    """MLflow makes a new database's tables migration by migration (3-8 s); an interrupt in the
    middle of one left a database no later command could open. It now acts once they are
    made: the interrupt lands mid-way here, and still the tables are all made first."""
    import os
    import signal
    import time

    import pytest

    from leanfit.track import runs

    made = []
    real = MlflowClient.search_experiments

    def interrupted_midway(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # where the interrupt would have landed
        made.append(real(self, *args, **kwargs))
        return made[-1]

    monkeypatch.setattr(MlflowClient, "search_experiments", interrupted_midway)
    # as in a terminal (pytest-xdist's workers ignore SIGINT)
    monkeypatch.setattr(runs, "_READY", set())
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            runs.ready_database(f"sqlite:///{tmp_path / 'new.db'}")
        assert made, "the interrupt acted before the tables were made"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "put back"
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_stop_while_the_trials_run_is_opened_closes_it(in_tmp):
    """MLflow opens a trial's run in several calls (the run, its parameters, its dataset): a
    SIGTERM between them left the run RUNNING for good, and the command silent (9 of 9 stops
    sent as the run's row appeared, QA). The stop waits for the run, which is closed KILLED."""
    import signal

    from tests.support import start_foreground, wait_for_first_run

    proc = start_foreground("trial", str(EXAMPLES / "digits.yaml"), "--sample", "--seed", "3",
                            "--epochs", "3", cwd=in_tmp)  # fmt: skip
    database = in_tmp / "mlflow.db"
    wait_for_first_run(proc, database)  # the run's row, at once
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, (proc.returncode, err)
    assert "closed as KILLED" in " ".join(err.split()), err
    _, runs = only_run(f"sqlite:///{database}")
    assert [r.info.status for r in runs] == ["KILLED"]
