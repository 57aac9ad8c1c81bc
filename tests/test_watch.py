"""`leanfit watch` end to end on an image folder the test writes: one pipeline run per digest,
warm-started when the data changed, bad new files reported and skipped, two watchers at once
running the pipeline once."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests import zygote
from tests.support import ctrl_c_when, run_cli, write_image_folder, write_yaml
from tests.test_pipeline import small_pipeline_config

CLASSES = {"circle": 24, "square": 24, "stripe": 24}


def folder_config() -> dict:
    return small_pipeline_config(
        name="shapes",
        dataset={
            "source": "imagefolder",
            "path": "images",
            "image_size": 12,
            "channels": 3,
            "val_fraction": 0.2,
            "test_fraction": 0.2,
        },
    )


def mlflow_runs(folder, kind: str, status: str | None = None) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("leanfit-shapes")
    where = f"tags.`leanfit.kind` = '{kind}'"
    if status:
        where += f" and attributes.status = '{status}'"
    return client.search_runs([exp.experiment_id], where, order_by=["attributes.start_time ASC"])


def watch_once(folder) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return zygote.popen(
        [sys.executable, "-m", "leanfit.cli", "watch", "shapes.yaml", "--once"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_watch_runs_once_per_digest_warm_started_and_skips_bad_files(tmp_path):
    write_image_folder(tmp_path / "images", CLASSES, seed=0)
    write_yaml(tmp_path / "shapes.yaml", folder_config())

    first = run_cli("watch", "shapes.yaml", "--once", cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "dataset changed" in first.stdout and "champion" in first.stdout
    # the steps as they run, not only into the pipeline's log file
    assert "search: success" in first.stdout and "search: trials" in first.stdout, first.stdout
    # a folder this small makes few steps an epoch, which the search step says (as the search
    # command does)
    assert "step(s) an epoch at batch_size" in first.stdout, first.stdout
    # ... and its validation split of a dozen images, again beside the registration
    said = " ".join(first.stdout.split())
    assert re.search(r"note: the registered model was chosen on a validation split of \d+ im", said)
    (pipeline_1,) = mlflow_runs(tmp_path, "pipeline", "FINISHED")
    (search_1,) = mlflow_runs(tmp_path, "search")

    # new images, plus what users really drop into a folder: a corrupt image, a file that is
    # not an image, and a class folder with nothing in it yet
    write_image_folder(tmp_path / "more", CLASSES, seed=1)
    for image in sorted((tmp_path / "more").rglob("*.*")):
        image.rename(tmp_path / "images" / image.parent.name / f"new-{image.name}")
    (tmp_path / "images" / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "images" / "circle" / "notes.txt").write_text("taken on Tuesday")
    (tmp_path / "images" / "triangle").mkdir()

    watchers = [watch_once(tmp_path), watch_once(tmp_path)]
    outputs = [w.communicate(timeout=900) for w in watchers]
    for w, (out, err) in zip(watchers, outputs, strict=True):
        assert w.returncode == 0, out + err
    ran = [out for out, _ in outputs if "dataset changed" in out]
    assert len(ran) == 1, "two watchers at once must run the pipeline once"
    assert any("nothing to do" in out for out, _ in outputs)
    assert "broken.png" in ran[0] and "notes.txt" in ran[0]
    assert "broken.png" not in ran[0].split("search ...")[1], ran[0]  # listed before it
    assert ran[0].count("broken.png") == 1, ran[0]  # by the fingerprint step, not twice
    assert "'triangle' has no images yet" in ran[0]
    # the search step says where it started from (only MLflow's tags said it)
    assert "warm start from the finished search" in " ".join(ran[0].split()), ran[0]

    pipelines = mlflow_runs(tmp_path, "pipeline", "FINISHED")
    assert len(pipelines) == 2, ran[0]
    digests = {p.data.tags["leanfit.dataset_digest"] for p in pipelines}
    assert len(digests) == 2
    search_2 = [s for s in mlflow_runs(tmp_path, "search") if s.info.run_id != search_1.info.run_id]
    assert len(search_2) == 1
    warm = search_2[0]
    assert warm.data.tags["leanfit.warm_start_from"] == search_1.info.run_id
    assert warm.data.metrics["warm_start_told"] >= 1  # the previous trials were told
    assert warm.data.metrics["warm_start_rechecked"] >= 1
    # the re-checked configurations ran first, on the new data, at the lowest rung
    first_jobs = sorted(
        (r for r in mlflow_runs(tmp_path, "trial")
         if r.data.tags.get("mlflow.parentRunId") == warm.info.run_id),
        key=lambda r: int(r.data.tags["leanfit.trial_id"]),
    )  # fmt: skip
    old_configs = {
        r.data.tags["leanfit.config"]
        for r in mlflow_runs(tmp_path, "trial")
        if r.data.tags.get("mlflow.parentRunId") == search_1.info.run_id
    }
    assert first_jobs[0].data.tags["leanfit.config"] in old_configs
    assert first_jobs[0].data.tags["leanfit.rung"] == "0"

    third = run_cli("watch", "shapes.yaml", "--once", cwd=tmp_path, timeout=300)
    assert third.returncode == 0, third.stderr
    assert "nothing to do" in third.stdout
    # unchanged data: how many files it skips, not the list again at every check
    assert "2 unreadable file(s) skipped): nothing to do" in third.stdout, third.stdout
    assert "broken.png" not in third.stdout
    assert len(mlflow_runs(tmp_path, "pipeline")) == 2
    assert pipeline_1.info.run_id in {p.info.run_id for p in pipelines}

    # the change rolled back: the data is what the first run saw. The champion was chosen on
    # other data since, so it is judged again on this data, reusing that run's search and final
    # training; then the watcher rests (it said "dataset changed" at every check for good)
    for added in [*(tmp_path / "images").rglob("new-*"), *(tmp_path / "images").rglob("*.txt")]:
        added.unlink()
    (tmp_path / "images" / "square" / "broken.png").unlink()
    (tmp_path / "images" / "triangle").rmdir()
    back = run_cli("watch", "shapes.yaml", "--once", cwd=tmp_path, timeout=600)
    assert back.returncode == 0, back.stdout + back.stderr
    said = " ".join(back.stdout.split())
    assert f"the data is back to what pipeline run {pipeline_1.info.run_id} ran on" in said, said
    assert len(mlflow_runs(tmp_path, "search")) == 2, "its search was reused, not run again"
    assert "champion" in said
    rest = run_cli("watch", "shapes.yaml", "--once", cwd=tmp_path, timeout=300)
    assert rest.returncode == 0 and "nothing to do" in rest.stdout, rest.stdout + rest.stderr

    # Ctrl-C of a watcher that ran no pipeline says only that it stopped (it spoke of a
    # pipeline run it had interrupted, which would go on)
    code, err = ctrl_c_when(
        "nothing to do", "watch", "shapes.yaml", "--interval", "1h", cwd=tmp_path, timeout=60
    )
    assert code == 130 and err.strip() == "stopped watching shapes.yaml", err


def test_a_stop_signal_handed_to_another_thread_ends_the_wait_between_checks():
    """The kernel hands a signal sent to the process to any thread of it (torch's, MLflow's):
    a watcher asleep in `time.sleep` until its next check went on sleeping after Ctrl-C about
    one time in two. Here the signal goes to another thread every time."""
    import textwrap

    from tests.support import foreground_job

    code = textwrap.dedent("""
        import signal, threading, time
        from leanfit import stopping
        def other():
            time.sleep(0.5)
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # this thread, not main
            time.sleep(60)
        threading.Thread(target=other, daemon=True).start()
        try:
            stopping.sleep(3600)
        except KeyboardInterrupt:
            print("stopped")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                       preexec_fn=foreground_job)  # fmt: skip
    assert r.stdout.strip() == "stopped", r.stderr


def test_watch_refuses_bad_options_before_doing_anything(tmp_path):
    write_image_folder(tmp_path / "images", CLASSES, seed=0)
    write_yaml(tmp_path / "shapes.yaml", folder_config())
    r = run_cli("watch", "shapes.yaml", "--interval", "soon", cwd=tmp_path)
    assert r.returncode == 2 and "--interval" in r.stderr
    r = run_cli("watch", "shapes.yaml", "--interval", "0s", cwd=tmp_path)  # checks back to back
    assert r.returncode == 2 and "--interval 0s: give a time above zero" in r.stderr, r.stderr
    r = run_cli("watch", "missing.yaml", "--once", cwd=tmp_path)
    assert r.returncode == 2 and "missing.yaml" in r.stderr
    # options that mean something only with --submit: silently ignored before
    for option in (["--namespace", "team-a"], ["--resubmit-after", "1h"]):
        r = run_cli("watch", "shapes.yaml", "--once", *option, cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert f"{option[0]} applies only with --submit HOST" in r.stderr, r.stderr
    # a KFP host that does not answer is said before the data is looked at (a CronJob of
    # `--once` reported success while the data stayed unchanged), in the watcher's own option;
    # before, the changed data's run compiled its pipeline and made the tracking database first
    r = run_cli("watch", "shapes.yaml", "--once", "--submit", "http://127.0.0.1:1", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "--submit http://127.0.0.1:1: no Kubeflow Pipelines API answers" in r.stderr, r.stderr
    r = run_cli("watch", "shapes.yaml", "--once", "--submit", "127.0.0.1:1", cwd=tmp_path)
    assert r.returncode == 2 and "--submit '127.0.0.1:1': give the URL" in r.stderr, r.stderr
    # a tracking server that does not answer: said at once (it waited silently for MLflow's
    # minutes of retries)
    r = run_cli("watch", "shapes.yaml", "--once", cwd=tmp_path, timeout=60,
                env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"})  # fmt: skip
    assert r.returncode == 2 and "did not answer" in r.stderr, r.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / ".leanfit").exists()


def test_watch_submits_a_changed_dataset_to_kfp_once(tmp_path):
    from tests.kfp_standin import API, KfpStandin

    write_image_folder(tmp_path / "images", CLASSES, seed=0)
    (tmp_path / "images" / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write_yaml(tmp_path / "shapes.yaml", folder_config())
    with KfpStandin() as kfp:
        first = run_cli("watch", "shapes.yaml", "--once", "--submit", kfp.url, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        assert "submitted run" in first.stdout
        # the cluster's pipeline lists them in its own log; here the watcher does
        assert "broken.png" in first.stdout, first.stdout
        again = run_cli("watch", "shapes.yaml", "--once", "--submit", kfp.url, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "already submitted" in again.stdout
        assert len(kfp.received("POST", f"{API}/runs")) == 1
    (submission,) = mlflow_runs(tmp_path, "submission")
    assert submission.data.tags["leanfit.submitted_digest"]
