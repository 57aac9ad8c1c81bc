"""`leanfit search` as a user runs it: progress, Pareto table, report, and resume after kill -9.

The synthetic objective (`--synthetic SECONDS_PER_EPOCH`) stands in for training so that the
search, its worker processes, MLflow and the report are exercised for real in seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from leanfit.track.search import TAG_RUNG, TAG_STATUS, TAG_TRIAL
from tests import zygote
from tests.support import (
    EXAMPLES,
    digits_config,
    foreground_job,
    run_cli,
    write_image_folder,
    write_yaml,
)


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


def start_search(folder, seconds_per_epoch: str, env: dict | None = None) -> subprocess.Popen:
    """`leanfit search e.yaml --synthetic S` in the background, as a terminal's foreground job
    (Ctrl-C reaches it), its output kept."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | (env or {})
    return zygote.popen(
        [sys.executable, "-m", "leanfit.cli", "search", "e.yaml", "--synthetic", seconds_per_epoch],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=foreground_job,
    )  # fmt: skip


def tables_made(db) -> int:
    """How many tables a database has so far (0 where it has none, or is not there yet)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            query = "select count(*) from sqlite_master where type = 'table'"
            return con.execute(query).fetchone()[0]
    except sqlite3.Error:
        return 0


def job_counts(db) -> tuple[int, int]:
    """Finished jobs and running ones, read with plain SQL: an MLflow client here would race
    the search's own first-time database migration."""
    if not db.exists():
        return 0, 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            (done,) = con.execute(
                "select count(*) from tags where key = ? and value = 'ok'", (TAG_STATUS,)
            ).fetchone()
            (running,) = con.execute(
                "select count(*) from runs join tags on tags.run_uuid = runs.run_uuid "
                "where runs.status = 'RUNNING' and tags.key = 'leanfit.kind' "
                "and tags.value = 'trial'"
            ).fetchone()
        return done, running
    except sqlite3.Error:
        return 0, 0


def resume_and_count_finished(folder) -> tuple[Counter, list]:
    """`leanfit search e.yaml --resume` to the end; each (trial, rung)'s finished jobs, and the
    trial runs."""
    result = run_cli("search", "e.yaml", "--synthetic", "0.05", "--resume", cwd=folder)
    assert result.returncode == 0, result.stderr
    _, runs = trial_runs(folder / "mlflow.db")
    ok = Counter(
        (r.data.tags[TAG_TRIAL], r.data.tags[TAG_RUNG])
        for r in runs
        if r.data.tags.get(TAG_STATUS) == "ok"
    )
    return ok, runs


def test_search_shows_the_front_and_writes_a_report(in_tmp):
    experiment(in_tmp, trials=12)
    result = run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp)
    assert result.returncode == 0, result.stderr
    assert "Pareto front" in result.stdout and "report" in result.stdout
    assert "note:" not in result.stdout and "skipped" not in result.stdout
    # not a terminal (a log): whole progress lines, the last with the final counts, then the table
    lines = result.stdout.splitlines()
    progress = [line for line in lines if line.startswith("trials ")]
    assert progress and progress[-1].startswith("trials 12  jobs finished "), result.stdout
    assert all("budget left" in line for line in progress), progress
    # a trial budget: what is left of it (before, "budget left -" throughout)
    assert progress[-1].endswith("budget left 0 new trials"), progress
    assert "Pareto front" in lines, "the table's title on a line of its own"
    html = next(in_tmp.glob(".leanfit/searches/*/report/report.html"))
    assert "Pareto front" in html.read_text() and "data:image/png;base64," in html.read_text()
    # a dry run says so, in the terminal and on the page (its made-up accuracies looked like
    # trained models' there, and the page is logged to MLflow beside real searches')
    assert "dry run (--synthetic): the synthetic objective replaced training" in result.stdout
    assert "the synthetic objective of a dry run, not real training" in html.read_text()
    client, runs = trial_runs(in_tmp / "mlflow.db")
    assert len({r.data.tags[TAG_TRIAL] for r in runs}) == 12
    search = client.search_runs([runs[0].info.experiment_id], "tags.`leanfit.kind` = 'search'")[0]
    assert search.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(search.info.run_id, "report")}
    assert artifacts == {"report/pareto.png", "report/report.html"}
    # the settings it ran with, stored first (an artifact store that takes no file is found then)
    stored = client.download_artifacts(search.info.run_id, "experiment.yaml")
    stored = yaml.safe_load(Path(stored).read_text())
    assert stored["budget"]["trials"] == 12 and stored["name"] == "digits"
    # finished: only the Pareto models' checkpoints are kept, the rest are deleted and counted
    front = {int(row.split("│")[1]) for row in table_rows(result.stdout)}
    kept = sorted(in_tmp.glob(f".leanfit/searches/{search.info.run_id}/checkpoints/*"))
    assert {int(p.name[6:11]) for p in kept} == front, kept
    deleted = re.search(r"checkpoints: the Pareto models' kept in \S+; (\d+) others", result.stdout)
    assert deleted and int(deleted[1]) >= 12 - len(front), result.stdout

    # `leanfit report` reads the same front back from MLflow alone, and writes nothing there
    database = (in_tmp / "mlflow.db").read_bytes()
    report = run_cli("report", "e.yaml", "-o", "again", cwd=in_tmp)
    assert report.returncode == 0, report.stderr
    assert f"search run {search.info.run_id} (FINISHED, ran " in report.stdout, report.stdout
    assert "trials 12  jobs finished " in report.stdout
    assert table_rows(report.stdout) == table_rows(result.stdout) != []
    assert "Pareto front" in (in_tmp / "again" / "report.html").read_text()
    assert "a dry run, not real training" in (in_tmp / "again" / "report.html").read_text()
    assert (in_tmp / "again" / "pareto.png").read_bytes().startswith(b"\x89PNG")
    assert (in_tmp / "mlflow.db").read_bytes() == database, "the report wrote to MLflow"
    # a terminal narrower than the table: its figures whole (rich cut them to `13,3…`)
    narrow = run_cli("report", "e.yaml", "-o", "again", cwd=in_tmp, env={"COLUMNS": "30"})
    assert table_rows(narrow.stdout) == table_rows(result.stdout), narrow.stdout
    assert "…" not in narrow.stdout, narrow.stdout


def test_a_search_of_the_splits_drawn_the_other_way_warm_starts_from_the_last_one(in_tmp):
    """Stable splits are another search than shuffled ones (an image folder's first search after
    they came, on the same data): it started cold beside the shuffled search before it; it is
    warm-started from it, and says how that search differs."""
    cfg = digits_config(budget={"min_epochs": 1, "max_epochs": 3, "trials": 4})
    write_yaml(in_tmp / "e.yaml", cfg)
    first = run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp)
    assert first.returncode == 0, first.stderr
    cfg["dataset"]["split"] = "stable"
    write_yaml(in_tmp / "e.yaml", cfg)
    second = run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp)
    assert second.returncode == 0, second.stderr
    said = " ".join(second.stdout.split())
    warm = r"warm start from the finished search \w+ on this data with its splits drawn the "
    assert re.search(warm + r"other way \(dataset.split\): its \d+ results", said), said


def test_a_search_of_an_image_folder_names_the_files_it_could_not_read(in_tmp):
    """A user's folder holds a truncated download and a stray note: the search goes on without
    them and says which (it said nothing, while `leanfit trial` listed them)."""
    root = write_image_folder(in_tmp / "imgs", {"cat": 10, "dog": 10}, size=8)
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (root / "dog" / "notes.txt").write_text("taken on a phone")
    # a class whose every file is an error page saved as .jpg: no class at all, not a silent
    # 2-class problem (it vanished without a word, even with empty_classes: error)
    (root / "bird").mkdir()
    for i in range(3):
        (root / "bird" / f"b{i}.jpg").write_text("<html>403 Forbidden</html>")
    cfg = digits_config(
        dataset={"source": "imagefolder", "path": "imgs", "image_size": 8, "channels": 3},
        budget={"min_epochs": 1, "max_epochs": 3, "trials": 3},
        executor={"kind": "local", "workers": 1, "trial_timeout": "1m"},
    )
    write_yaml(in_tmp / "e.yaml", cfg)
    refused = run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "class(es) ['bird'] in" in refused.stderr and "no readable image" in refused.stderr
    assert "bird/b0.jpg: " in refused.stderr and "dataset.empty_classes: skip" in refused.stderr

    cfg["dataset"]["empty_classes"] = "skip"
    write_yaml(in_tmp / "e.yaml", cfg)
    result = run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp)
    assert result.returncode == 0, result.stderr
    assert "skipped 5 unreadable file(s)" in result.stdout, result.stdout
    assert "cat/broken.jpg: " in result.stdout and "dog/notes.txt: " in result.stdout
    assert "left out class(es) 'bird' (no readable image)" in result.stdout, result.stdout
    # 12 training images at batch 16 and up: one step an epoch, which the user is told
    assert "1 step(s) an epoch at batch_size 16" in result.stdout, result.stdout
    assert "Pareto front" in result.stdout
    # the sizes MLflow holds are the table's, of 2-class models (a dry run logged 10 classes')
    shown = {int(row.split("│")[2].replace(",", "")) for row in table_rows(result.stdout)}
    _, runs = trial_runs(in_tmp / "mlflow.db")
    assert shown <= {int(r.data.metrics["params"]) for r in runs if "params" in r.data.metrics}
    # MLflow's warning about its own twice-registered file source is not the user's business
    assert "Warning" not in result.stderr, result.stderr

    # new images: the search starts from the last one, says so, and takes at most half of its
    # 3 trials to re-check the earlier best (it took all of them, and said nothing)
    write_image_folder(in_tmp / "more", {"cat": 4}, size=8, seed=1)
    for f in (in_tmp / "more" / "cat").iterdir():
        f.rename(root / "cat" / f"new-{f.name}")
    warm = run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp)
    assert warm.returncode == 0, warm.stderr
    said = re.search(r"warm start from the finished search (\w+) on earlier data: its (\d+) "
                     r"results are told to the strategy, and its 1 best", warm.stdout)  # fmt: skip
    assert said, warm.stdout
    page = next(in_tmp.glob(".leanfit/searches/*/report/report.html"), None)
    pages = [p.read_text() for p in in_tmp.glob(".leanfit/searches/*/report/report.html")]
    assert page is not None and sum("<th>warm start</th>" in p for p in pages) == 1


def test_names_a_terminal_would_act_on_are_shown_not_sent(in_tmp):
    """A file or class name holding an escape sequence or a line break (QA pass 28: a file's
    name cleared the screen and recoloured it, a class's broke the line in two): a file's is
    listed with its control characters written out; a class folder's is refused; a file name
    read as rich markup ('[blink red]x.yaml' blinked, 'a[/]b.yaml' crashed) is shown as it is."""
    write_image_folder(in_tmp / "imgs", {"cats": 6, "dogs": 6})
    (in_tmp / "imgs" / "cats" / "bad\x1b[5mBLINK\x1b[0m\n.png").write_text("not an image")
    cfg = {"name": "odd", "dataset": {"source": "imagefolder", "path": "imgs", "image_size": 12}}
    (in_tmp / "a[").mkdir()  # (a file ']b.yaml' in a folder 'a[')
    cfg["dataset"]["path"] = str(in_tmp / "imgs")
    for name in ("[blink red]x.yaml", "a[/]b.yaml"):
        write_yaml(in_tmp / name, cfg)
        result = run_cli("validate", name, cwd=in_tmp)
        assert result.returncode == 0, result.stdout + result.stderr
        said = result.stdout + result.stderr
        assert f"ok {name}: " in said and "Traceback" not in said, said
        assert "\x1b" not in said, said  # nothing a terminal acts on
        assert "bad\\x1b[5mBLINK\\x1b[0m\\n.png" in said, said
    (in_tmp / "imgs" / "\x1b[31mred\x1b[0m").mkdir()
    write_image_folder(in_tmp / "imgs", {"\x1b[31mred\x1b[0m": 6})
    result = run_cli("validate", "a[/]b.yaml", cwd=in_tmp)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    assert "class folder names '\\x1b[31mred\\x1b[0m'" in result.stderr, result.stderr
    assert "hold control characters" in result.stderr and "rename them" in result.stderr


def test_a_search_whose_output_reader_went_away_stops_as_at_ctrl_c(in_tmp):
    """`leanfit search ... | head -1`: the search died at its next progress line (rich's own
    SystemExit(1)), its run FAILED, its running jobs RUNNING, without a word. Now it stops as at
    Ctrl-C, saying why on stderr, exit 141 (as a shell reports SIGPIPE); --resume goes on."""
    experiment(in_tmp, trials=30)
    search = start_search(in_tmp, "0.5")
    try:
        first = search.stdout.readline()
        assert first.startswith("trials "), first
        search.stdout.close()  # the reader goes away
        _, err = search.communicate(timeout=120)
    finally:
        if search.poll() is None:
            search.kill()
    assert search.returncode == 141, err
    said = " ".join(err.split())
    assert "stopped: its output's reader went away (a pipe closed, as by `| head`)" in said, said
    assert "--resume" in said and "Traceback" not in said
    with sqlite3.connect(in_tmp / "mlflow.db") as con:
        statuses = [row[0] for row in con.execute("select status from runs")]
    assert "RUNNING" not in statuses and "FAILED" not in statuses and "KILLED" in statuses


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_a_closed_stdout_or_stderr_changes_no_exit_code(in_tmp, closed):
    """`leanfit ... >&-` or `2>&-`: every line said ended in a traceback (a finished search's
    exit 0 became 1, a mistake's 2 became 1)."""
    import subprocess

    experiment(in_tmp, trials=3)
    fd = 1 if closed == "stdout" else 2
    for command, code in ((["validate", "e.yaml"], 0), (["validate", "missing.yaml"], 2)):
        done = subprocess.run(
            [sys.executable, "-m", "leanfit.cli", *command], cwd=in_tmp, timeout=120,
            preexec_fn=lambda: os.close(fd), capture_output=True,
        )  # fmt: skip
        assert done.returncode == code, (command, closed, done.stdout, done.stderr)


def test_a_log_that_force_color_makes_look_like_a_terminal_gets_whole_lines(in_tmp):
    """FORCE_COLOR (common in CI) with the output in a file or a pipe: the search's live line
    was drawn there, twice a second, cursor codes and all; now whole progress lines."""
    experiment(in_tmp, trials=4)
    result = run_cli(
        "search", "e.yaml", "--synthetic", "0", cwd=in_tmp, env={"FORCE_COLOR": "1"}
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "\x1b[?25l" not in result.stdout and "\x1b[2K" not in result.stdout, result.stdout
    assert re.search(r"trials 4\s+jobs finished \d+", re.sub(r"\x1b\[[0-9;]*m", "", result.stdout))


def test_validate_shows_what_a_search_would_train_on_and_what_is_wrong_with_it(in_tmp):
    """Before an hour's search, `leanfit validate` decodes the folder as the search does and
    says what it holds: the classes' sizes, the splits, the files it skipped, a lopsided class
    balance, too few steps an epoch, photos that would be squeezed; and refuses a parameter
    budget no model meets."""
    from PIL import Image

    root = write_image_folder(in_tmp / "imgs", {"cat": 30, "dog": 5}, size=8)
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    for i in range(4):  # 4:3 photos, as a phone takes them
        Image.new("RGB", (16, 12), (200, 100, 50)).save(root / "cat" / f"photo{i}.jpg")
    cfg = digits_config(  # (shuffled splits: exact in their fractions, as the counts below)
        dataset={"source": "imagefolder", "path": "imgs", "image_size": 8, "channels": 3,
                 "split": "shuffled"},
    )  # fmt: skip
    write_yaml(in_tmp / "e.yaml", cfg)
    result = run_cli("validate", "e.yaml", cwd=in_tmp)
    assert result.returncode == 0, result.stderr
    # an output that cannot show a name (a latin-1 locale, PYTHONIOENCODING=ascii): a ? for
    # the character, not a UnicodeEncodeError traceback
    shutil.copy(in_tmp / "e.yaml", in_tmp / "模型.yaml")
    ascii_out = run_cli("validate", "模型.yaml", cwd=in_tmp, env={"PYTHONIOENCODING": "ascii"})
    assert ascii_out.returncode == 0 and "ok ??.yaml: " in ascii_out.stdout, ascii_out.stderr
    out = " ".join(result.stdout.split())  # rich wraps long lines
    assert "39 images at 8x8x3, 2 classes: cat: 34, dog: 5" in out, out
    assert "splits train 23, validation 8, test 8; the search trains on 23" in out, out
    assert "skipped 1 unreadable file(s)" in out and "cat/broken.jpg" in out, out
    assert "the largest class has 6.8x the images of the smallest" in out, out
    assert "1 step(s) an epoch at batch_size 16" in out, out
    assert "4 of 39 images sampled are not square (up to 1.33:1); each is squeezed" in out, out
    write_yaml(in_tmp / "crop.yaml", {**cfg, "dataset": {**cfg["dataset"], "fit": "crop"}})
    cropped = run_cli("validate", "crop.yaml", cwd=in_tmp)
    assert cropped.returncode == 0 and "not square" not in cropped.stdout, cropped.stdout

    # a folder split in advance (train/, test/): its classes, and where each split came from
    write_image_folder(in_tmp / "split" / "train", {"cat": 10, "dog": 10}, size=8)
    write_image_folder(in_tmp / "split" / "test", {"cat": 3, "dog": 3}, size=8)
    write_yaml(in_tmp / "split.yaml", {**cfg, "dataset": {**cfg["dataset"], "path": "split"}})
    split = run_cli("validate", "split.yaml", cwd=in_tmp)
    out = " ".join(split.stdout.split())
    assert "26 images at 8x8x3, 2 classes: cat: 13, dog: 13" in out, out
    assert "classes the folders inside test/, train/" in out, out
    assert "splits train 16 (train/), validation 4 (20% of train/), test 6 (test/)" in out, out
    assert "the validation split has 4 images, so one image is 25.0 points" in out, out
    assert "raise dataset.val_fraction" in out, out
    write_image_folder(in_tmp / "split" / "val", {"cat": 2}, size=8)  # no dog in it
    given = " ".join(run_cli("validate", "split.yaml", cwd=in_tmp).stdout.split())
    assert "validation 2 (val/)" in given and "split (val/) has 2 images" in given, given
    assert "put more images in val/" in given and "val/ has no images of dog" in given, given
    # a class too small for the drawn splits to get a validation or test image of it
    write_image_folder(in_tmp / "tiny", {"cat": 20, "owl": 1, "emu": 2}, size=8)
    write_yaml(in_tmp / "tiny.yaml", {**cfg, "dataset": {**cfg["dataset"], "path": "tiny"}})
    tiny = " ".join(run_cli("validate", "tiny.yaml", cwd=in_tmp).stdout.split())
    said = "classes 'emu' (2 images), 'owl' (1 image) got no validation or test image"
    assert f"{said}: too few to draw one, so no validation or test accuracy measures them" in tiny
    # the same picture twice: under two classes, and as copies across the splits
    write_image_folder(in_tmp / "dup", {"cat": 10, "dog": 10}, size=8)
    shutil.copy(in_tmp / "dup" / "cat" / "img000.png", in_tmp / "dup" / "dog" / "copy.png")
    for k in range(6):
        shutil.copy(in_tmp / "dup" / "cat" / "img002.png", in_tmp / "dup" / "cat" / f"again{k}.png")
    write_yaml(in_tmp / "dup.yaml", {**cfg, "dataset": {**cfg["dataset"], "path": "dup"}})
    dup = " ".join(run_cli("validate", "dup.yaml", cwd=in_tmp).stdout.split())
    assert (
        "note: 1 image(s) are the same picture as an image of another class (cat/img000.png = "
        "dog/copy.png): no model can get both right; remove the wrong copy" in dup
    ), dup
    assert "of the validation or test split are copies of training images (cat/" in dup, dup
    assert "dog/copy.png" not in tiny and "same picture" not in tiny, tiny
    # images in one folder, their classes in a CSV
    flat = in_tmp / "flat"
    flat.mkdir()
    rows = []
    for path in sorted((in_tmp / "split" / "train").rglob("*.*")):
        shutil.copy(path, flat / f"{path.parent.name}-{path.name}")
        rows.append(f"{path.parent.name}-{path.stem},{path.parent.name}\n")
    (in_tmp / "labels.csv").write_text("image_id,label\n" + "".join(rows))
    labelled = {**cfg["dataset"], "path": "flat", "labels": "labels.csv"}
    write_yaml(in_tmp / "flat.yaml", {**cfg, "dataset": labelled})
    out = " ".join(run_cli("validate", "flat.yaml", cwd=in_tmp).stdout.split())
    assert "20 images at 8x8x3, 2 classes: cat: 10, dog: 10" in out, out
    assert "labels from labels.csv (one row a file)" in out and "skipped" not in out, out
    write_image_folder(in_tmp / "split" / "bird", {"bird": 2}, size=8)  # a class left outside
    mixed = run_cli("validate", "split.yaml", cwd=in_tmp)
    assert mixed.returncode == 2 and "beside other folders (bird)" in mixed.stderr, mixed.stderr

    digits = run_cli("validate", str(EXAMPLES / "digits.yaml"), cwd=in_tmp)
    assert digits.returncode == 0, digits.stderr
    assert "1,797 images at 16x16x1, 10 classes" in digits.stdout, digits.stdout
    assert "note:" not in digits.stdout and "skipped" not in digits.stdout, digits.stdout

    write_yaml(in_tmp / "tiny.yaml", {**cfg, "objectives": {**cfg["objectives"], "max_params": 5}})
    refused = run_cli("validate", "tiny.yaml", cwd=in_tmp)
    assert refused.returncode == 2 and "max_params" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


def table_rows(out: str) -> list[str]:
    """The Pareto table's rows as printed (rich draws them between vertical bars)."""
    return [line for line in out.splitlines() if line.startswith("│")]


def test_resume_after_kill_9_loses_and_repeats_no_finished_trial(in_tmp):
    experiment(in_tmp, trials=30)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with open(in_tmp / "killed.err", "w") as said:  # what its workers say after it, too
        proc = zygote.popen(
            [sys.executable, "-m", "leanfit.cli", "search", "e.yaml", "--synthetic", "0.15"],
            cwd=in_tmp, env=env, stdout=subprocess.DEVNULL, stderr=said,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    # killed once 8 jobs have finished and a job's run is open (a job's run is opened just after
    # it is handed to a worker, so there are moments with none)
    while time.monotonic() < deadline:
        done, running = job_counts(in_tmp / "mlflow.db")
        if done >= 8 and running:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the search ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, runs = trial_runs(in_tmp / "mlflow.db")
    finished_before = [r for r in runs if r.data.tags.get(TAG_STATUS) == "ok"]
    assert len(finished_before) >= 8
    assert [r for r in runs if r.info.status == "RUNNING"], "nothing was running at the kill"

    # what `leanfit report` reads of the killed search: every finished job, the ones cut short
    report = run_cli("report", "e.yaml", "--json", cwd=in_tmp)
    assert report.returncode == 0, report.stderr
    read = json.loads(report.stdout)
    assert read["status"] == "RUNNING" and read["jobs_finished"] == len(finished_before)
    cut_short = [r for r in runs if r.info.status == "RUNNING" and TAG_STATUS not in r.data.tags]
    assert read["jobs_unfinished"] == len(cut_short)  # (a job killed as it closed its run: done)
    finished_trials = {int(r.data.tags[TAG_TRIAL]) for r in finished_before}
    assert {row["trial"] for row in read["front"]} <= finished_trials
    assert all(row["config"] and row["params"] > 0 for row in read["front"]), read["front"]

    ok, runs = resume_and_count_finished(in_tmp)
    assert max(ok.values()) == 1, "a finished job was run again"
    before = {r.info.run_id for r in finished_before}
    assert before <= {r.info.run_id for r in runs if r.data.tags.get(TAG_STATUS) == "ok"}
    assert len({t for t, _ in ok}) == 30  # the trial budget is met across both runs
    assert not [r for r in runs if r.info.status == "RUNNING"], "a job was left running"
    # the killed search's workers, each finishing its job with no one to tell, went quietly
    # (before, each printed a BrokenPipeError traceback on the terminal)
    assert "Traceback" not in (in_tmp / "killed.err").read_text()


def test_resume_closes_a_job_killed_between_its_status_and_the_end_of_its_run(in_tmp):
    """A kill between writing a finished job's status and closing its MLflow run leaves the run
    RUNNING with a final status (the kill -9 test above met this by chance): the resumed search
    keeps the result, runs nothing again and closes the run."""
    experiment(in_tmp, trials=6)
    assert run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp).returncode == 0
    client, runs = trial_runs(in_tmp / "mlflow.db")
    done = next(r for r in runs if r.data.tags.get(TAG_STATUS) == "ok")
    search_id = done.data.tags["mlflow.parentRunId"]
    # the state such a kill leaves: the search and that job's run both RUNNING
    client.update_run(search_id, status="RUNNING")
    client.update_run(done.info.run_id, status="RUNNING")

    result = run_cli("search", "e.yaml", "--synthetic", "0", "--resume", cwd=in_tmp)
    assert result.returncode == 0, result.stderr
    client, after = trial_runs(in_tmp / "mlflow.db")
    assert client.get_run(done.info.run_id).info.status == "FINISHED"
    assert len(after) == len(runs), "a finished job was run again"
    assert not [r for r in after if r.info.status == "RUNNING"]


def test_the_report_library_is_imported_while_the_trials_run(in_tmp, monkeypatch):
    """The plot's matplotlib import (a third of a second or more) happens in a thread during
    the search, once the first job has finished, not after the last trial."""
    import leanfit.search.run as run_module
    from leanfit.config import load_experiment

    jobs_done: list[int] = []  # at each progress call
    started_after: list[int] = []  # progress calls before the import started
    threads = []
    real_prewarm = run_module.prewarm

    def spy():
        started_after.append(len(jobs_done))
        threads.append(real_prewarm())
        return threads[-1]

    monkeypatch.setattr(run_module, "prewarm", spy)
    exp = load_experiment(experiment(in_tmp, trials=10))
    outcome = run_module.run_search(
        exp,
        max_trials=10,
        synthetic_sleep=0.1,
        on_progress=lambda c: jobs_done.append(c.stats.jobs_done),
    )
    assert outcome.report_plot.exists()
    assert len(started_after) == 1, "started once"
    # started before that call was passed on: during the loop, not at its last call, the end
    assert started_after[0] < len(jobs_done) - 1, (started_after, jobs_done)
    assert jobs_done[started_after[0]] >= 1, "not before the first job has finished"
    threads[0].join(timeout=30)
    assert not threads[0].is_alive() and "matplotlib.figure" in sys.modules


def test_the_progress_counts_both_workers_running_while_trials_come(in_tmp):
    """The progress is taken after the free workers got their jobs. Before, it was taken just
    after a job ended, with that worker counted out: a 2-worker search's log said "running 1"
    at 50 of its 54 lines, as if a worker sat idle."""
    from leanfit.config import load_experiment
    from leanfit.search.run import run_search

    running: list[int] = []  # at each progress call while new trials still come

    def progress(c):
        if c.n_new < 12:
            running.append(len(c.executor.running()))

    run_search(
        load_experiment(experiment(in_tmp, trials=12)), max_trials=12, synthetic_sleep=0.2,
        on_progress=progress,
    )  # fmt: skip
    assert running and set(running) == {2}, running


def test_a_second_ctrl_c_inside_a_tracking_write_leaves_the_search_killed_not_locked(in_tmp):
    """A second Ctrl-C leaves at once, wherever it lands: inside MLflow's write to the sqlite
    database, its connection kept the write lock, and the search's closing writes (its jobs
    and its run KILLED) waited 20 s twice for this very process, then failed ("the database is
    locked", exit 2; once in about 24 double Ctrl-Cs of a real search). Here a connection of
    this process is left inside a write transaction as the interrupt comes."""
    import sqlite3

    from leanfit.config import load_experiment
    from leanfit.search.run import run_search

    held: list[sqlite3.Connection] = []
    # (by its full path: MLflow keeps a store for each URI, a relative one made in another folder)
    uri = f"sqlite:///{in_tmp / 'mlflow.db'}"
    file = experiment(in_tmp, trials=40)
    write_yaml(file, {**yaml.safe_load(file.read_text()), "tracking": {"uri": uri}})

    def progress(c):
        if c.stats.jobs_done >= 2 and not held:
            held.append(sqlite3.connect(in_tmp / "mlflow.db"))
            held[0].execute("BEGIN IMMEDIATE")  # a write begun, its commit never reached
            raise KeyboardInterrupt  # the second Ctrl-C, there

    try:
        with pytest.raises(KeyboardInterrupt):
            run_search(
                load_experiment(file), max_trials=40, synthetic_sleep=0.2, on_progress=progress
            )
    finally:
        for connection in held:
            connection.close()
    assert held, "the search ended before its second job"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("leanfit-digits")
    runs = client.search_runs([exp.experiment_id], "tags.`leanfit.kind` = 'search'")
    said = [(r.info.run_name, r.info.status, r.data.tags) for r in runs]
    assert [r.info.status for r in runs] == ["KILLED"], said


def test_the_progress_line_says_jobs_that_have_not_started(in_tmp):
    """A cluster's pods waiting for a node or their image are running jobs that have not
    started: said, on the long line and the short one."""
    from leanfit.cli import progress_line
    from leanfit.config import load_experiment
    from leanfit.search.run import run_search

    lines: list[str] = []

    def progress(c):
        if not lines:
            assert "not started" not in str(progress_line(c))  # local workers start at once
            c.executor.not_started = lambda: 1  # as the Kubernetes executor counts them
            lines.extend(str(progress_line(c, width=w)) for w in (None, 60))

    run_search(load_experiment(experiment(in_tmp, trials=2)), max_trials=2, synthetic_sleep=0,
               on_progress=progress)  # fmt: skip
    assert re.search(r"  running \d \(1 not started\)  failed ", lines[0]), lines
    assert re.search(r" run \d \(1 wait\) failed ", lines[1]), lines


@pytest.mark.slow
def test_resume_with_nothing_to_resume_is_a_clear_error_that_writes_nothing(in_tmp):
    experiment(in_tmp, trials=4)
    # no tracking database yet: said at once, and none is created
    result = run_cli("search", "e.yaml", "--resume", "--synthetic", "0", cwd=in_tmp)
    assert result.returncode == 2, result.stderr
    assert "no tracking database at mlflow.db" in result.stderr, result.stderr
    assert "run without --resume" in result.stderr and "Traceback" not in result.stderr
    assert not (in_tmp / "mlflow.db").exists() and not (in_tmp / ".leanfit").exists()
    # a database that holds a finished search of this file: nothing unfinished to resume
    assert run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp).returncode == 0
    result = run_cli("search", "e.yaml", "--resume", "--synthetic", "0", cwd=in_tmp)
    assert result.returncode == 2, result.stderr
    # ... its output ends with it: the workers' fork server, still importing torch, held the
    # command's stdout and stderr for 2 s more (what read them, `| tee`, `$(...)`, waited)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    refused = zygote.popen(
        [sys.executable, "-m", "leanfit.cli", "search", "e.yaml", "--resume", "--synthetic", "0"],
        cwd=in_tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert refused.wait(timeout=60) == 2
    pipes = {f"pipe:[{os.fstat(s.fileno()).st_ino}]" for s in (refused.stdout, refused.stderr)}
    holders = []
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            if os.readlink(fd) in pipes and fd.parts[2] != str(os.getpid()):
                holders.append((Path("/proc", fd.parts[2], "cmdline")).read_bytes())
    assert not [h for h in holders if b"forkserver" in h], holders
    refused.communicate(timeout=60)
    said = " ".join(result.stderr.split())
    assert "the search of this experiment file and data finished (run " in said, said
    assert "`leanfit report FILE` shows its front; give it a larger budget" in said, said
    # ... given a larger budget, it goes on (in the file: the budget is not part of its key)
    client, _ = trial_runs(in_tmp / "mlflow.db")
    [search] = client.search_runs(
        [client.get_experiment_by_name("leanfit-digits").experiment_id],
        "tags.`leanfit.kind` = 'search'",
    )
    cfg = yaml.safe_load((in_tmp / "e.yaml").read_text())
    cfg["budget"]["trials"] = 6
    write_yaml(in_tmp / "e.yaml", cfg)
    result = run_cli("search", "e.yaml", "--resume", "--synthetic", "0", cwd=in_tmp)
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert (
        f"the finished search {search.info.run_id} of these settings and data ran with a "
        "smaller budget (4 trials against 6 trials); it goes on to this one" in said
    ), said
    params = client.get_run(search.info.run_id).data.params
    assert (params["search.trials"], params["budget.trials"]) == ("4", "4")  # as it started

    # an interrupted search (the state a kill -9 leaves)
    client.set_terminated(search.info.run_id, "KILLED")
    # a trial budget below what it has started: it would end FINISHED with no way to go on
    result = run_cli("search", "e.yaml", "--resume", "--trials", "2", "--synthetic", "0",
                     cwd=in_tmp)  # fmt: skip
    said = " ".join(result.stderr.split())
    assert result.returncode == 2 and "a trial budget of 2 is below the 6 trials" in said, said
    assert client.get_run(search.info.run_id).info.status == "KILLED"  # not reopened
    # --resume forgotten: a new search, which says the other is there; it stays resumable
    fresh = run_cli("search", "e.yaml", "--trials", "2", "--synthetic", "0", cwd=in_tmp)
    said = " ".join(fresh.stdout.split())
    assert (
        fresh.returncode == 0
        and f"the search {search.info.run_id} of this experiment file "
        "and data was left unfinished ("
        in said
        and "run again with --resume" in said
    ), said
    again = run_cli("search", "e.yaml", "--resume", "--synthetic", "0", cwd=in_tmp)
    said = " ".join(again.stdout.split())
    assert again.returncode == 0 and f"resuming the unfinished search {search.info.run_id}" in said
    assert client.get_run(search.info.run_id).info.status == "FINISHED"
    # a new search of a file and data whose last search finished: the same first trials again
    repeat = run_cli("search", "e.yaml", "--trials", "1", "--synthetic", "0", cwd=in_tmp)
    said = " ".join(repeat.stdout.split())
    assert repeat.returncode == 0 and "finished before; this starts another from nothing" in said

    # the file edited since: the resume says what changed
    client.set_terminated(search.info.run_id, "KILLED")
    cfg["budget"]["trials"] = 8  # (a budget changes no search: not said)
    cfg["space"]["hyperparameters"]["lr"]["high"] = 0.3
    write_yaml(in_tmp / "e.yaml", cfg)
    result = run_cli("search", "e.yaml", "--resume", "--synthetic", "0", cwd=in_tmp)
    said = " ".join(result.stderr.split())
    assert result.returncode == 2 and f"the unfinished search {search.info.run_id}" in said, said
    assert "other settings (space.hyperparameters.lr.high: 0.5, now 0.3); put them back" in said
    # ... or the data changed under it
    from leanfit.config import load_experiment
    from leanfit.track.runs import TrialLogger
    from leanfit.track.search import why_not_resumable

    exp = load_experiment(in_tmp / "e.yaml")
    logger = TrialLogger(f"sqlite:///{in_tmp / 'mlflow.db'}", exp.experiment_name())
    why = why_not_resumable(logger, exp, "0" * 64, "synthetic")  # a dry run's search
    assert "ran on other data (digest " in why and "now 000000000000)" in why, why


def test_a_budget_of_no_time_is_refused_before_anything_starts(in_tmp):
    experiment(in_tmp, trials=4)
    for command in ("search", "run"):
        result = run_cli(command, "e.yaml", "--wall-time", "0s", cwd=in_tmp)
        assert result.returncode == 2, result.stderr
        assert "--wall-time 0s: give a budget above zero" in result.stderr, result.stderr
    # a number without its unit: minutes or seconds? (it was taken as 5 seconds)
    result = run_cli("search", "e.yaml", "--wall-time", "5", cwd=in_tmp)
    assert result.returncode == 2, result.stderr
    assert "--wall-time 5: give a unit: 5s, 5m or 5h" in result.stderr, result.stderr
    assert sorted(p.name for p in in_tmp.iterdir()) == ["e.yaml"]


def test_a_work_dir_that_cannot_be_a_folder_is_refused_before_anything_starts(in_tmp):
    """work_dir naming a file (or a folder under one): each command that writes there says so,
    exit 2, before the tracking database is made; before, a traceback after it was."""
    (in_tmp / "notes.txt").write_text("a file, not a folder")
    for work_dir, commands in (
        (
            "notes.txt",
            [
                ["search", "--synthetic", "0"],
                ["run"],
                ["report"],
                ["watch", "--once"],
                ["validate"],
            ],
        ),  # fmt: skip
        ("notes.txt/trials", [["trial", "--sample", "--epochs", "1"]]),
    ):
        cfg = digits_config(budget={"min_epochs": 1, "max_epochs": 3, "trials": 4})
        write_yaml(in_tmp / "e.yaml", {**cfg, "work_dir": work_dir})
        for command, *options in commands:
            result = run_cli(command, "e.yaml", *options, cwd=in_tmp)
            assert result.returncode == 2, (command, result.stdout, result.stderr)
            said = result.stderr.replace("\n", " ")
            assert f"work_dir: {in_tmp / 'notes.txt'} is a file" in said, (command, said)
            assert "work_dir in the experiment file" in said and "Traceback" not in said
    assert sorted(p.name for p in in_tmp.iterdir()) == ["e.yaml", "notes.txt"]


def test_a_hard_budget_no_model_meets_is_refused_before_anything_starts(in_tmp):
    cfg = digits_config(budget={"min_epochs": 1, "max_epochs": 3, "trials": 4})
    cfg["objectives"]["max_params"] = 20  # the space's smallest model has 94
    write_yaml(in_tmp / "e.yaml", cfg)
    result = run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp)
    assert result.returncode == 2, result.stderr
    assert "no model of the search space fits max_params 20" in result.stderr, result.stderr
    assert "the smallest drawn has" in result.stderr and "raise the limit" in result.stderr
    assert not (in_tmp / "mlflow.db").exists() and not (in_tmp / ".leanfit").exists()


EXIT_MEETS_A_SECOND_CTRL_C = """
import atexit, os, signal, sys, time
from leanfit import cli

signal.signal(signal.SIGINT, signal.default_int_handler)  # (as a terminal's job; not pytest's)


def an_exit_handler():  # (torch's and MLflow's take a moment)
    os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, as the command leaves
    time.sleep(5)
    print("the exit handler went on", file=sys.stderr)


atexit.register(an_exit_handler)
print("interrupted", file=sys.stderr, flush=True)
cli.exit_now(130)
"""


def test_a_second_ctrl_c_as_the_command_exits_leaves_at_once_without_a_traceback():
    """A search stopped by Ctrl-C says so and exits; a second Ctrl-C while its exit handlers
    ran (torch's) printed their KeyboardInterrupt traceback after its last line."""
    done = subprocess.run(
        [sys.executable, "-c", EXIT_MEETS_A_SECOND_CTRL_C], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (130, "interrupted\n"), done.stderr


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
    ids=["ctrl-c", "sigterm"],
)
def test_ctrl_c_stops_the_search_cleanly_and_it_resumes(in_tmp, signum, code, said):
    """Ctrl-C, as a terminal sends it, to the command's whole process group (its workers and
    their fork server too), or SIGTERM to that group (`kill -- -PGID`, systemd; before, the
    command died silently with its search RUNNING, or its fork server died and each busy worker
    was recorded as crashed): the search stops at the controller's next turn with its records
    whole, says how to go on, exits 130 (143); no worker dies of it mid-trial (that would count
    as a crash); --resume then finishes the trial budget with no finished job run twice."""
    experiment(in_tmp, trials=24)
    proc = start_search(in_tmp, "0.15")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # 4 jobs done, and one running: a worker mid-trial
        done, running = job_counts(in_tmp / "mlflow.db")
        if done >= 4 and running:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the search ended before it could be interrupted"
    os.killpg(proc.pid, signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.startswith(f"{said}: ") and "e.yaml --resume" in err, err
    assert "Traceback" not in err, err  # neither the command's nor a worker's
    client, runs = trial_runs(in_tmp / "mlflow.db")
    search = client.search_runs([runs[0].info.experiment_id], "tags.`leanfit.kind` = 'search'")
    assert [s.info.status for s in search] == ["KILLED"]
    assert not [r for r in runs if r.data.tags.get(TAG_STATUS) == "failed"], "no crash recorded"
    # the jobs it stopped are closed (they stayed RUNNING in MLflow until a --resume)
    assert not [r for r in runs if r.info.status == "RUNNING"], "a job's run left RUNNING"
    stopped = [r for r in runs if r.data.tags.get(TAG_STATUS) == "interrupted"]
    assert all(r.info.status == "KILLED" for r in stopped)
    # interrupted: every trial's checkpoint is kept for the promotions after --resume
    with_results = {r.data.tags[TAG_TRIAL] for r in runs if r.data.tags.get(TAG_STATUS) == "ok"}
    kept = list(in_tmp.glob(f".leanfit/searches/{search[0].info.run_id}/checkpoints/*.pt"))
    assert len(kept) >= len(with_results) >= 4, (kept, with_results)
    report = run_cli("report", "e.yaml", cwd=in_tmp)
    assert report.returncode == 0, report.stderr
    assert "(KILLED, ran " in report.stdout, report.stdout
    assert "interrupted: `leanfit search e.yaml --resume` goes on with it" in report.stdout
    if signum == signal.SIGTERM:
        return  # what --resume does next is the same as after Ctrl-C
    ok, _ = resume_and_count_finished(in_tmp)
    assert max(ok.values()) == 1 and len({t for t, _ in ok}) == 24
    # ... and --resume ran each stopped job again (they were "running" before)
    again = {(r.data.tags[TAG_TRIAL], r.data.tags[TAG_RUNG]) for r in stopped}
    assert again <= set(ok), (again, ok)


def test_ctrl_c_while_the_tracking_database_is_made_waits_for_its_tables(in_tmp):
    """Ctrl-C while MLflow makes a new database's tables (3-8 s) left it half-made: every later
    command on it ended in a traceback (`table entity_associations already exists`). The
    interrupt now waits for the tables; a database left half-made (by an older version, a
    crash) is said, with the fix. (MLflow makes the tables itself here: no cache folder to keep
    the copy leanfit starts a new database from, see the next test.)"""
    experiment(in_tmp, trials=20)
    (in_tmp / "not-a-folder").write_text("")
    proc = start_search(in_tmp, "0.1", env={"XDG_CACHE_HOME": str(in_tmp / "not-a-folder")})
    deadline = time.monotonic() + 120
    while not tables_made(in_tmp / "mlflow.db") and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGINT)  # as its tables are being made
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    # (its search run was not open yet: it said the finished trials were in MLflow, and that
    # --resume would go on, which then found nothing to go on with)
    assert err.strip() == "interrupted before the search started: no trial ran", err
    again = run_cli("search", "e.yaml", "--synthetic", "0", "--trials", "3", cwd=in_tmp)
    assert again.returncode == 0, again.stderr
    # a database whose making stopped halfway, as the old version left it: MLflow would go on
    # from an earlier revision and meet the tables it had already made
    shutil.copy(in_tmp / "mlflow.db", in_tmp / "half.db")
    with sqlite3.connect(in_tmp / "half.db") as con:
        con.execute("update alembic_version set version_num = '867495a8f9d4'")
        con.execute("drop table entity_associations")  # (made by a later revision)
        con.execute("delete from tags")
        con.execute("delete from metrics")
        con.execute("delete from latest_metrics")
        con.execute("delete from params")
        con.execute("delete from runs")
    half = run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp,
                   env={"MLFLOW_TRACKING_URI": "sqlite:///half.db"})  # fmt: skip
    assert half.returncode == 2 and "Traceback" not in half.stderr, half.stderr
    said = " ".join(half.stderr.split())
    assert "the sqlite database half.db (sqlite:///half.db) was left half-made" in said, said
    assert "it holds no run: delete it (rm half.db) and run again" in said, said


def test_a_new_tracking_database_is_a_copy_of_one_made_once(tmp_path, monkeypatch):
    """MLflow makes a new database's tables through its whole chain of migrations (1.5 s, most
    of what a short command costs); leanfit makes them once, in the user's cache folder, and
    starts each new database as a copy: the same tables as MLflow's own, the Default experiment
    of its own place, and MLflow makes them itself where the cache cannot be written."""
    import mlflow
    import mlflow.store.db.utils as db_utils

    from leanfit.track import runs

    made = []
    real = db_utils._initialize_tables
    monkeypatch.setattr(db_utils, "_initialize_tables", lambda e: made.append(e) or real(e))
    monkeypatch.setattr(runs, "_READY", set())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = tmp_path / "cache" / "leanfit" / f"mlflow-{mlflow.__version__}-tables.db"
    for folder in ("first", "second"):  # (MLflow keeps a store per URI: not the same one twice)
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        runs.ready_database(f"sqlite:///{tmp_path / folder / 'mlflow.db'}")
    assert len(made) == 1 and template.is_file(), made  # the template's tables, once
    assert schema(template)[1] == [], "no experiment in the template"
    MlflowClient(f"sqlite:///{tmp_path / 'own.db'}").search_experiments()  # MLflow's own
    assert len(made) == 2
    own_tables, own_experiments = schema(tmp_path / "own.db")
    for folder in ("first", "second"):
        tables, experiments = schema(tmp_path / folder / "mlflow.db")
        assert tables == own_tables
        assert experiments == [(0, "Default", str(tmp_path / folder / "mlruns" / "0"))]
    assert own_experiments == [(0, "Default", str(tmp_path / "second" / "mlruns" / "0"))]
    client = MlflowClient(f"sqlite:///{tmp_path / 'second' / 'mlflow.db'}")  # a copy works
    run = client.create_run(client.create_experiment("e"))
    client.log_metric(run.info.run_id, "accuracy", 0.5)
    assert client.get_run(run.info.run_id).data.metrics == {"accuracy": 0.5}
    assert not [p for p in tmp_path.rglob("*.part")], "no part-made copy left behind"
    template.write_bytes(b"")  # (left empty by a crash, say): made again, not copied
    runs.ready_database(f"sqlite:///{tmp_path / 'second' / 'third.db'}")
    assert len(made) == 3 and schema(tmp_path / "second" / "third.db")[0] == own_tables
    assert schema(template)[0] == own_tables
    # a cache folder that cannot be written: MLflow makes the tables, as without the template
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))
    runs.ready_database("sqlite:///other.db")
    assert len(made) == 4 and schema(tmp_path / "second" / "other.db")[0] == own_tables


def schema(database) -> tuple[list, list]:
    """A database's tables and indexes (their SQL, its lines in order: MLflow writes a table's
    constraints in an order of its own each time) and its experiments' rows."""
    with contextlib.closing(sqlite3.connect(database)) as con:
        made = con.execute("select sql from sqlite_master where sql is not null").fetchall()
        tables = sorted(sorted(line.strip(" ,\t") for line in sql.splitlines()) for (sql,) in made)
        rows = con.execute("select experiment_id, name, artifact_location from experiments")
        return tables, rows.fetchall()


@pytest.mark.slow
def test_an_experiment_or_search_run_deleted_in_mlflow_is_said_and_not_brought_back(in_tmp):
    """The MLflow UI's Delete, while a search runs: it ended in MLflow's traceback (`must be in
    the 'active' state`), exit 1; now one line with how to go on, exit 2, and after the restore
    it names, `--resume` goes on. A deleted experiment found by the next command was restored
    without a word (its runs back); now the user chooses: the restore and the purge it names
    both work."""
    experiment(in_tmp, trials=200)
    database = in_tmp / "mlflow.db"
    client = MlflowClient(f"sqlite:///{database}")
    for what in ("search run", "experiment"):
        before = trials_so_far(database)
        proc = start_search(in_tmp, "0.3")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and trials_so_far(database) < before + 2:
            time.sleep(0.2)
        exp = client.get_experiment_by_name("leanfit-digits")
        (search,) = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING' and "
                                       "tags.`leanfit.kind` = 'search'")  # fmt: skip
        if what == "search run":
            client.delete_run(search.info.run_id)
        else:
            client.delete_experiment(exp.experiment_id)
        _, err = proc.communicate(timeout=120)
        said = " ".join(err.split())
        assert proc.returncode == 2 and "Traceback" not in said, said
        if what == "search run":
            assert f"the search run {search.info.run_id} was deleted in MLflow while the" in said
            restore = ["runs", "restore", "--run-id", search.info.run_id]
        else:
            assert "the MLflow experiment 'leanfit-digits' was deleted while the search ran" in (
                said
            ), said
            restore = ["experiments", "restore", "--experiment-id", exp.experiment_id]
        assert f"`mlflow {' '.join(restore)}`" in said, said
        again = run_cli("report", "e.yaml", cwd=in_tmp)
        if what == "experiment":  # (not brought back by the next command)
            assert again.returncode == 2 and "leanfit does not bring it back" in again.stderr
            assert client.get_experiment(exp.experiment_id).lifecycle_stage == "deleted"
        mlflow = Path(sys.executable).with_name("mlflow")
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{database}"}
        subprocess.run([mlflow, *restore], cwd=in_tmp, env=env, check=True, capture_output=True)
        resumed = run_cli("search", "e.yaml", "--synthetic", "0", "--resume", "--wall-time", "4s",
                          cwd=in_tmp)  # fmt: skip
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"MLflow search run {search.info.run_id}" in resumed.stdout
    client.delete_experiment(exp.experiment_id)  # ... or purged, as it says: a new one
    refused = run_cli("search", "e.yaml", "--synthetic", "0", "--trials", "3", cwd=in_tmp)
    said = " ".join(refused.stderr.split())
    purge = re.search(r"purge it to start afresh \(`mlflow (gc [^`]+)`", said)
    assert refused.returncode == 2 and purge, said
    subprocess.run([mlflow, *purge[1].split()], cwd=in_tmp, check=True, capture_output=True)
    fresh = run_cli("search", "e.yaml", "--synthetic", "0", "--trials", "3", cwd=in_tmp)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    new = client.get_experiment_by_name("leanfit-digits")  # (its number may be the same)
    searches = client.search_runs([new.experiment_id], "tags.`leanfit.kind` = 'search'")
    assert new.creation_time != exp.creation_time and len(searches) == 1


def test_a_report_names_the_trial_runs_deleted_by_hand(in_tmp):
    """A trial's runs deleted in the MLflow UI: `leanfit report` showed a front without it (the
    best trial gone, a lower best accuracy) and said nothing; now it says which, and how to
    count them again."""
    experiment(in_tmp, trials=4)
    done = run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp)
    assert done.returncode == 0, done.stderr
    client, runs = trial_runs(in_tmp / "mlflow.db")
    gone = [r for r in runs if r.data.tags["leanfit.trial_id"] == "2"]
    for run in gone:
        client.delete_run(run.info.run_id)
    read = run_cli("report", "e.yaml", cwd=in_tmp)
    said = " ".join(read.stdout.split())
    assert read.returncode == 0, read.stderr
    assert f"{len(gone)} job run(s) of this search (trial(s) 2) were deleted in MLflow: this " in (
        said
    ), said
    assert "`mlflow runs restore --run-id " in said, said


def test_a_tag_edited_by_hand_is_named_and_changes_nothing(in_tmp):
    """A trial run's `leanfit.trial_id` deleted, or the search's budget tag garbled, in the
    MLflow UI: `report` and `--resume` ended in a KeyError's or JSON's traceback, and the resume
    left the finished search RUNNING with its budget changed. Now one line naming the run and
    the tag, exit 2, and the search as it was."""
    experiment(in_tmp, trials=4)
    done = run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp)
    assert done.returncode == 0, done.stderr
    client, runs = trial_runs(in_tmp / "mlflow.db")
    (search,) = client.search_runs([runs[0].info.experiment_id], "tags.`leanfit.kind` = 'search'")
    budget = search.data.tags["leanfit.budget"]
    client.delete_tag(runs[0].info.run_id, "leanfit.trial_id")
    for args in (["report", "e.yaml"], ["search", "e.yaml", "--synthetic", "0", "--resume",
                                        "--trials", "6"]):  # fmt: skip
        bad = run_cli(*args, cwd=in_tmp)
        said = " ".join(bad.stderr.split())
        assert bad.returncode == 2 and "Traceback" not in said, said
        assert f"the trial job run {runs[0].info.run_id} (" in said, said
        assert "cannot be read (its tag leanfit.trial_id is gone; edited by hand?)" in said, said
    after = client.get_run(search.info.run_id)  # (the resume changed nothing)
    assert after.info.status == "FINISHED" and after.data.tags["leanfit.budget"] == budget
    client.set_tag(runs[0].info.run_id, "leanfit.trial_id", runs[0].data.tags["leanfit.trial_id"])
    client.set_tag(search.info.run_id, "leanfit.budget", "{oops")
    bad = run_cli("search", "e.yaml", "--synthetic", "0", "--resume", "--trials", "6", cwd=in_tmp)
    said = " ".join(bad.stderr.split())
    assert bad.returncode == 2 and f"the search run {search.info.run_id} (" in said, said
    after = client.get_run(search.info.run_id)
    assert after.info.status == "FINISHED" and after.data.tags["leanfit.budget"] == "{oops"
    client.set_tag(search.info.run_id, "leanfit.budget", budget)
    assert client.get_run(search.info.run_id).data.tags["leanfit.budget"] == budget


def trials_so_far(database) -> int:
    try:
        return len(trial_runs(database)[1])
    except Exception:  # (no database, or no experiment, yet)
        return 0


def test_a_second_controller_of_a_running_search_is_refused_naming_the_first(in_tmp):
    """`--resume`, a new search or the pipeline's search step of a search that is running now in
    another process: refused with that process's id and how to go on, exit 2, no search run
    written (two controllers would run and tell the same trials twice); the first goes on."""
    from leanfit.config import load_experiment
    from leanfit.errors import LeanfitError
    from leanfit.search.run import run_search

    path = experiment(in_tmp, trials=400)
    proc = start_search(in_tmp, "0.3")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job_counts(in_tmp / "mlflow.db")[0] < 2:
            time.sleep(0.1)
        assert proc.poll() is None, "the search ended before the second one started"
        for extra in (["--resume"], []):
            second = run_cli("search", "e.yaml", "--synthetic", "0.3", *extra, cwd=in_tmp)
            assert second.returncode == 2, second.stdout + second.stderr
            assert f"is running now in {in_tmp}" in second.stderr, second.stderr
            assert f"(process {proc.pid}, since " in second.stderr
            assert f"`kill {proc.pid}`" in second.stderr and "--resume" in second.stderr
            assert "Traceback" not in second.stderr
        # the pipeline's search step (an absolute URI: see the test below)
        data = {
            **yaml.safe_load(path.read_text()),
            "tracking": {"uri": f"sqlite:///{in_tmp}/mlflow.db"},
        }
        step = load_experiment(write_yaml(in_tmp / "p.yaml", data))
        with pytest.raises(LeanfitError, match=f"process {proc.pid},"):
            run_search(step, resume="auto", reuse_finished=True, synthetic_sleep=0)
        with sqlite3.connect(f"file:{in_tmp / 'mlflow.db'}?mode=ro", uri=True) as con:
            (searches,) = con.execute(
                "select count(*) from tags where key = 'leanfit.kind' and value = 'search'"
            ).fetchone()
        assert searches == 1, "a refused search wrote a search run"
        # ... and from another work folder (or machine) on the same tracking store, whose lock
        # this one cannot see: it joined the running search, two controllers wrote one search
        # run (trials twice), which no report could read after. Heard from in the last minute
        # at another place, it is running there.
        other = in_tmp / "elsewhere"
        other.mkdir()
        shutil.copy(in_tmp / "e.yaml", other / "e.yaml")
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{in_tmp / 'mlflow.db'}"}
        second = run_cli("search", "e.yaml", "--synthetic", "0.3", "--resume", cwd=other, env=env)
        assert second.returncode == 2, second.stdout + second.stderr
        said = " ".join(second.stderr.split())
        assert f"is running now at {socket.gethostname()}:{in_tmp / '.leanfit'} (heard" in said
        assert "another work folder or machine: wait for it to end" in said, said
        # a new search there starts beside it, saying so (it was said to be left unfinished)
        beside = run_cli(
            "search", "e.yaml", "--synthetic", "0", "--trials", "1", cwd=other, env=env
        )
        said = " ".join(beside.stdout.split())
        assert beside.returncode == 0 and "is running now at " in said, beside.stderr + said
        assert "this starts another beside it" in said and "left unfinished" not in said, said
        assert proc.poll() is None, "the refusals stopped the running search"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 130
    # the lock goes with its process: the Ctrl-C and kill -9 tests resume right after


def test_the_pipelines_search_resumes_a_run_cut_short_and_reuses_a_finished_one(
    in_tmp, monkeypatch
):
    """The pipeline's search step (`resume="auto"`, `reuse_finished`): run again after a crash,
    it goes on with the same search; run again on the same data once it finished, it trains
    nothing and hands back the same front. While it runs, the search run's metrics follow it
    (they were logged only at its end: a kill -9 lost its elapsed time, and the resumed search
    had its whole wall time again)."""
    from leanfit.config import load_experiment
    from leanfit.search import run as run_module
    from leanfit.search.run import front_table, run_search

    monkeypatch.setattr(run_module, "LIVE_METRICS_SECONDS", 0.0)  # (15 s: every call here)

    path = experiment(in_tmp, trials=6)
    # an absolute URI: MLflow keeps one store per URI in a process, and another test of this
    # process may have used the relative sqlite:///mlflow.db from its own folder
    data = {
        **yaml.safe_load(path.read_text()),
        "tracking": {"uri": f"sqlite:///{in_tmp}/mlflow.db"},
    }
    exp = load_experiment(write_yaml(path, data))
    step = {"resume": "auto", "reuse_finished": True, "synthetic_sleep": 0}
    first = run_search(exp, max_trials=3, **step)  # nothing earlier: a new search
    assert not first.reused and len(first.controller.trials) == 3
    client, runs = trial_runs(in_tmp / "mlflow.db")
    live = client.get_metric_history(first.search_run_id, "hypervolume")
    assert len(live) > 1 and max(m.step for m in live) > 0
    assert max(live, key=lambda m: m.step).value == first.controller.hypervolume()
    elapsed = client.get_metric_history(first.search_run_id, "search_elapsed_seconds")
    assert len(elapsed) > 2, "logged as it ran, not only at its end"
    # what MLflow shows (the value at the highest step) is the whole time, not a live figure
    shown = client.get_run(first.search_run_id).data.metrics["search_elapsed_seconds"]
    assert shown == max(m.value for m in elapsed)
    jobs_before = {r.info.run_id for r in runs}

    # the state a kill of the step leaves: the search run RUNNING
    client.update_run(first.search_run_id, status="RUNNING")
    resumed = run_search(exp, **step)  # the file's budget of 6 trials
    assert not resumed.reused and resumed.search_run_id == first.search_run_id
    assert len(resumed.controller.trials) == 6
    client, runs = trial_runs(in_tmp / "mlflow.db")
    assert jobs_before < {r.info.run_id for r in runs}
    ok = Counter((r.data.tags[TAG_TRIAL], r.data.tags[TAG_RUNG]) for r in runs
                 if r.data.tags.get(TAG_STATUS) == "ok")  # fmt: skip
    assert max(ok.values()) == 1, "a finished job was run again"
    assert client.get_run(first.search_run_id).info.status == "FINISHED"

    # the pipeline run again on the same data: the finished search, read back as it is
    again = run_search(exp, **step)
    assert again.reused and again.search_run_id == first.search_run_id
    assert len(trial_runs(in_tmp / "mlflow.db")[1]) == len(runs), "nothing trained"
    assert front_table(again.controller) == front_table(resumed.controller)

    # a larger budget than the finished search had (`leanfit search --trials 6` first, the file
    # asking for more): the pipeline goes on with it, not reads back a shorter search
    notes: list[str] = []
    more = run_search(exp, max_trials=9, on_notice=notes.append, **step)
    assert not more.reused and more.search_run_id == first.search_run_id
    assert len(more.controller.trials) == 9
    assert any("ran with a smaller budget (6 trials against 9 trials)" in n for n in notes), notes
    assert run_search(exp, **step).reused  # 9 trials cover the file's 6
    # the file's budget raised (its key had the budget: a new search started from nothing)
    data["budget"] = {**data["budget"], "trials": 11}
    larger = load_experiment(write_yaml(path, data))
    notes.clear()
    later = client.create_run(client.get_run(first.search_run_id).info.experiment_id).info.run_id
    grown = run_search(larger, on_notice=notes.append, parent_run_id=later, **step)
    assert not grown.reused and grown.search_run_id == first.search_run_id
    # it stays where it was (under the pipeline run whose models came from it), not moved
    # under the later pipeline run, which names it instead (steps.search)
    assert client.get_run(first.search_run_id).data.tags.get("mlflow.parentRunId") != later
    assert len(grown.controller.trials) == 11
    assert any("(9 trials against 11 trials); it goes on" in n for n in notes), notes


def test_a_search_resumed_in_another_work_folder_says_where_it_ran_before(in_tmp):
    """Run from the file's folder after it ran from its parent (a relative work_dir): it went
    on without a word, and said the front's checkpoints were all in the new folder."""
    (in_tmp / "sub").mkdir()
    experiment(in_tmp / "sub", trials=3)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{in_tmp / 'mlflow.db'}"}
    first = run_cli("search", "sub/e.yaml", "--synthetic", "0", cwd=in_tmp, env=env)
    assert first.returncode == 0, first.stderr
    cfg = yaml.safe_load((in_tmp / "sub" / "e.yaml").read_text())
    cfg["budget"]["trials"] = 5
    write_yaml(in_tmp / "sub" / "e.yaml", cfg)
    again = run_cli("search", "e.yaml", "--resume", "--synthetic", "0", cwd=in_tmp / "sub", env=env)
    said = " ".join(again.stdout.split())
    assert again.returncode == 0, again.stderr
    assert f":{in_tmp / '.leanfit'} before, now at " in said and "/sub/.leanfit: new" in said, said
    assert "those of its earlier trials stay there" in said, said


def test_a_report_over_a_file_size_limit_says_the_limit_and_leaves_no_part(in_tmp):
    """`leanfit report -o rep` under a file-size limit (`ulimit -f`, a real one on the process)
    that its files exceed: one line saying the limit and its fix, exit 2, and the report written
    before left whole (the page and the plot are written beside, then renamed). Before, it said
    "give a folder you can write" of a folder it could write, and left report.html cut at the
    limit (50 KiB of a page, looking whole) over the good one."""
    import resource

    experiment(in_tmp, trials=4)
    assert run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp).returncode == 0
    first = run_cli("report", "e.yaml", "-o", "rep", cwd=in_tmp)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in (in_tmp / "rep").iterdir()}
    assert set(before) == {"report.html", "pareto.png"}
    assert all(len(data) > 20 * 1024 for data in before.values())

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 1024, resource.RLIM_INFINITY))

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    refused = subprocess.run(
        [sys.executable, "-m", "leanfit.cli", "report", "e.yaml", "-o", "rep"], cwd=in_tmp,
        env=env, capture_output=True, text=True, timeout=120, preexec_fn=limited,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-3000:]
    said = " ".join(refused.stderr.split())
    assert said.startswith(
        "error: -o: the report could not be written in rep: File too large: a file-size limit "
        "(ulimit -f 20: no file over 20 KiB) stopped rep/"
    ), said
    assert "Raise the limit (`ulimit -f unlimited`" in said and "give a folder" not in said
    after = {p.name: p.read_bytes() for p in (in_tmp / "rep").iterdir()}
    assert after == before, "the report written before was changed, or a part was left"


def test_a_tracking_database_over_a_file_size_limit_is_said_in_one_line(in_tmp):
    """The sqlite tracking database meets a file-size limit (`ulimit -f`, real, on the process)
    mid-search: SQLite says "disk I/O error". One line naming the database, the limit and its
    fix, exit 2 (SQLAlchemy's traceback and exit 1 before); --resume then finishes the search."""
    import resource

    experiment(in_tmp, trials=2)
    assert run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp).returncode == 0
    size = (in_tmp / "mlflow.db").stat().st_size
    limit = size // 1024 + 32  # KiB: the next search's runs grow the file past it

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit * 1024, resource.RLIM_INFINITY))

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    refused = subprocess.run(
        [sys.executable, "-m", "leanfit.cli", "search", "e.yaml", "--synthetic", "0",
         "--trials", "30", "--resume"],
        cwd=in_tmp, env=env, capture_output=True, text=True, timeout=120, preexec_fn=limited,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr, refused.stderr[-3000:]
    (said,) = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert said.startswith(
        f"error: tracking: the sqlite tracking database {in_tmp / 'mlflow.db'} could not be "
        f"written (disk I/O error): a file-size limit (ulimit -f {limit}: "
    ), said
    assert "Raise the limit (`ulimit -f unlimited`" in said and "--resume" in said, said
    resumed = run_cli("search", "e.yaml", "--synthetic", "0", "--trials", "30", "--resume",
                      cwd=in_tmp)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Pareto front" in resumed.stdout


def test_a_locked_tracking_database_names_the_process_that_holds_it(in_tmp, monkeypatch):
    """SQLite's "database is locked" (another process holding its write lock longer than
    MLflow's 20 s): said with the database, the process that has it open, and the --resume hint
    (a real lock held by a real process; SQLite asked with no wait, not MLflow's 20 s)."""
    from leanfit.track import runs
    from leanfit.track.runs import database_refused, ready_database

    # as a command's process: this database the one it opened (a pytest process has opened
    # other tests' before; the message then names none)
    monkeypatch.setattr(runs, "_READY", set())

    db = in_tmp / "mlflow.db"
    ready_database(f"sqlite:///{db}")  # (the database this process opened, as a search's)
    assert database_refused(RuntimeError("something else")) is None
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
         "c.execute('begin exclusive'); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(sqlite3.OperationalError) as locked:
            sqlite3.connect(db, timeout=0).execute("select count(*) from runs").fetchall()
        said = database_refused(locked.value)
    finally:
        holder.kill()
        holder.wait()
    assert said is not None and said.startswith(
        f"tracking: the sqlite tracking database {db} is locked: another process held its write "
        f"lock for longer than MLflow waits (20 s); it is open in process {holder.pid} ("
    ), said
    assert said.endswith("then run the command again: `leanfit search FILE --resume` continues "
                         "a search, `leanfit run FILE` a pipeline, from what finished (SQLite "
                         "kept every write that did)"), said  # fmt: skip


@pytest.mark.parametrize("template", ["cached", "none"])
def test_a_new_tracking_database_over_a_file_size_limit_is_not_left_half_made(in_tmp, template):
    """A new folder's sqlite database made under a file-size limit smaller than its tables
    (`ulimit -f 500`, real): copied from the cached template, or made by MLflow where there is
    none (an empty cache folder). One line saying the limit, exit 2, and no mlflow.db left: the
    next run makes it afresh. Before, the copy's EFBIG was passed over, MLflow's own tables
    stopped at the limit, and the half-made database was refused by every later run."""
    import resource

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (500 * 1024, resource.RLIM_INFINITY))

    experiment(in_tmp, trials=2)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if template == "none":
        env["XDG_CACHE_HOME"] = str(in_tmp / "cache")
    refused = subprocess.run(
        [sys.executable, "-m", "leanfit.cli", "search", "e.yaml", "--synthetic", "0"],
        cwd=in_tmp, env=env, capture_output=True, text=True, timeout=120, preexec_fn=limited,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-3000:]
    said = " ".join(refused.stderr.split())
    assert said.startswith("error: tracking: the sqlite database mlflow.db ") and (
        "could not be made: File too large: a file-size limit (ulimit -f 500: no file over "
        "500 KiB) stopped " in said
    ), said
    assert said.endswith("then run the command again; nothing was left"), said
    assert not list(in_tmp.glob("*mlflow.db*")), "a half-made database was left"
    made = run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp, env=env)
    assert made.returncode == 0, made.stderr[-3000:]


def test_report_refuses_what_it_cannot_read_naming_the_fix(in_tmp):
    """`leanfit report` where there is nothing to read, or the wrong thing: exit 2, one line with
    the fix, nothing created or written (the tracking database unchanged)."""
    from leanfit.config import load_experiment
    from leanfit.errors import LeanfitError
    from leanfit.search.readback import find_search

    path = experiment(in_tmp, trials=3)
    result = run_cli("report", "e.yaml", cwd=in_tmp)  # no database yet: none is created
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "no tracking database at mlflow.db" in result.stderr
    assert "run `leanfit search e.yaml` first" in result.stderr
    assert sorted(p.name for p in in_tmp.iterdir()) == ["e.yaml"]
    # a command to paste, shell-quoted (with a # the rest of the line was a comment)
    shutil.copy(path, in_tmp / "my exp #1.yaml")
    result = run_cli("report", "my exp #1.yaml", cwd=in_tmp)
    assert "run `leanfit search 'my exp #1.yaml'` first" in result.stderr, result.stderr
    (in_tmp / "my exp #1.yaml").unlink()
    from leanfit.cli import browse_command

    uri = "sqlite:///my dir/mlflow.db"
    assert browse_command(uri) == "mlflow ui --backend-store-uri 'sqlite:///my dir/mlflow.db'"

    assert run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp).returncode == 0
    client, runs = trial_runs(in_tmp / "mlflow.db")
    search_id = runs[0].data.tags["mlflow.parentRunId"]
    database = (in_tmp / "mlflow.db").read_bytes()
    result = run_cli("report", "e.yaml", "--run-id", runs[0].info.run_id, cwd=in_tmp)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"is a trial run, not a search; its search run is {search_id}" in result.stderr
    # a file for leanfit.optimize(space=...), which needs no dataset: it said "dataset:
    # required field is missing", as if one would read such a search
    (in_tmp / "own.yaml").write_text("name: own\nbudget: {trials: 4}\n")
    result = run_cli("report", "own.yaml", cwd=in_tmp)
    said = " ".join(result.stderr.split())
    assert result.returncode == 2 and "own.yaml has no dataset section: `leanfit report` " in said
    assert "its report.html and pareto.png are logged to its MLflow search run" in said, said
    (in_tmp / "a-file").write_text("")
    result = run_cli("report", "e.yaml", "-o", "a-file", cwd=in_tmp)
    assert result.returncode == 2 and "-o: a-file is a file" in result.stderr, result.stderr
    # the page's name given for the folder: it became a folder named report.html
    result = run_cli("report", "e.yaml", "-o", "report.html", cwd=in_tmp)
    assert result.returncode == 2, result.stderr
    said = "-o: report.html names a file; -o is the folder report.html and pareto.png go in"
    assert f"{said}, e.g. -o report" in result.stderr, result.stderr
    assert not (in_tmp / "report.html").exists()
    # an empty value (a variable that was not set): it was the current folder
    for empty in (["-o", ""], ["-o", " "], ["--output="]):
        result = run_cli("report", "e.yaml", *empty, cwd=in_tmp)
        assert result.returncode == 2, (empty, result.stderr)
        assert f"{empty[0].rstrip('=')}: the value is empty" in result.stderr, result.stderr
    assert not (in_tmp / "report.html").exists()
    # a quoted ~ is the home folder, as the shell would have it, not a folder named ~
    result = run_cli("report", "e.yaml", "--output=~/reports", cwd=in_tmp,
                     env={"HOME": str(in_tmp / "home")})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (in_tmp / "home" / "reports" / "report.html").exists() and not (in_tmp / "~").exists()

    # the rest in this process (an absolute URI: MLflow keeps one store per URI in a process)
    data = {
        **yaml.safe_load(path.read_text()),
        "tracking": {"uri": f"sqlite:///{in_tmp}/mlflow.db"},
    }
    exp = load_experiment(write_yaml(in_tmp / "same.yaml", data))
    assert find_search(exp, "same.yaml")[1].info.run_id == search_id
    assert find_search(exp, "same.yaml", search_id)[1].info.run_id == search_id
    with pytest.raises(LeanfitError, match="--run-id nope: no such run at "):
        find_search(exp, "same.yaml", "nope")
    data["budget"] = {**data["budget"], "trials": 5}  # only the budget changed: still its search
    budget = load_experiment(write_yaml(in_tmp / "budget.yaml", data))
    client, run, searched = find_search(budget, "budget.yaml")
    assert run.info.run_id == search_id and searched.budget.trials == 3  # read with its own
    data["objectives"] = {**data["objectives"], "max_params": "10k"}  # the file changed since
    changed = load_experiment(write_yaml(in_tmp / "changed.yaml", data))
    with pytest.raises(LeanfitError, match=r"its 1 search\(es\) ran with other settings"):
        find_search(changed, "changed.yaml")
    with pytest.raises(LeanfitError, match="searched with other settings than changed.yaml"):
        find_search(changed, "changed.yaml", search_id)
    data["tracking"]["experiment"] = "another"
    other = load_experiment(write_yaml(in_tmp / "other.yaml", data))
    with pytest.raises(LeanfitError, match="no MLflow experiment 'another' at "):
        find_search(other, "other.yaml")
    assert (in_tmp / "mlflow.db").read_bytes() == database, "a refusal wrote to MLflow"


@pytest.mark.slow
def test_a_tracking_server_that_stops_answering_mid_search_is_said_and_so_is_its_return(
    in_tmp, mlflow_server
):
    """A real `mlflow server` that stops answering while a search runs (a gate in front of it
    closed: its port refuses connections and cuts the open ones, as when the server's process
    has stopped) and answers again: the search says that it does not answer (it waited in
    silence, its progress frozen), then that it answers again, and finishes with every job
    recorded once."""
    from tests.support import Gate

    gate = Gate(mlflow_server.port).open()
    name = f"outage-{in_tmp.name}"  # (the session's server: an experiment of its own)
    cfg = yaml.safe_load(experiment(in_tmp, trials=8).read_text())
    cfg["tracking"] = {**cfg.get("tracking", {}), "experiment": name}
    write_yaml(in_tmp / "e.yaml", cfg)
    env = {
        "MLFLOW_TRACKING_URI": gate.uri,
        "LEANFIT_TRACKING_PROBE_SECONDS": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # MLflow's: back sooner after it
    }
    client = MlflowClient(mlflow_server.uri)
    search = start_search(in_tmp, "0.3", env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and search.poll() is None:
            exp = client.get_experiment_by_name(name)
            jobs = exp and client.search_runs([exp.experiment_id], "tags.`leanfit.kind` = 'trial'")
            if jobs:
                break
            time.sleep(0.3)
        assert search.poll() is None, search.communicate()
        gate.close()
        time.sleep(6)  # two unanswered asks a second apart, and more
        gate.open()
        out, err = search.communicate(timeout=300)
    finally:
        if search.poll() is None:
            search.kill()
        gate.close()
    assert search.returncode == 0, out + err
    said = re.sub(r"\s+", " ", out + err)
    assert f"tracking: MLflow at {gate.uri} does not answer (since" in said, said[-3000:]
    assert "the search waits for it to record its results" in said
    assert "`--resume` goes on" in said
    assert re.search(rf"MLflow at {re.escape(gate.uri)} answers again \(after \d+ s\)", said)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs(
        [exp.experiment_id], "tags.`leanfit.kind` = 'trial'", max_results=1000
    )
    jobs = [(r.data.tags[TAG_TRIAL], r.data.tags[TAG_RUNG]) for r in runs]
    assert len({trial for trial, _ in jobs}) == 8 and len(jobs) == len(set(jobs)), jobs
    assert all(r.data.tags[TAG_STATUS] == "ok" for r in runs)


def test_a_run_mlflows_client_asked_for_twice_is_made_once(mlflow_server, monkeypatch, tmp_path):
    """A connection cut after the server made a run, before its answer (a server stopped at
    that moment): MLflow's client asks again and the server makes a second run, which stayed
    RUNNING for good beside the one the client got (seen in the outage test above: a trial's
    job recorded twice). leanfit's runs are made once; the twin is deleted, saying of which."""
    from mlflow.entities import ViewType

    from leanfit.track.runs import TAG_DUPLICATE_OF, create_run_once
    from tests.support import Gate

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    gate = Gate(mlflow_server.port).open()
    try:
        client = MlflowClient(gate.uri)
        made = {}
        for how in ("mlflow", "leanfit"):
            exp = client.create_experiment(f"twice-{how}-{tmp_path.name}")
            gate.cut_answer_to(b"/runs/create")
            if how == "mlflow":  # what happened before
                client.create_run(exp, run_name="r", tags={"a": "b"})
            else:
                run = create_run_once(client, exp, "r", {"a": "b"})
            made[how] = MlflowClient(mlflow_server.uri).search_runs([exp])
        deleted = MlflowClient(mlflow_server.uri).search_runs(
            [exp], run_view_type=ViewType.DELETED_ONLY
        )
    finally:
        gate.close()
    assert len(made["mlflow"]) == 2, "the cut connection made no second run: nothing is tested"
    assert [r.info.run_id for r in made["leanfit"]] == [run.info.run_id]
    (twin,) = deleted
    assert twin.data.tags[TAG_DUPLICATE_OF] == run.info.run_id and twin.data.tags["a"] == "b"


def test_an_unreachable_tracking_server_is_said_at_once_and_nothing_is_written(in_tmp):
    """A mistyped server URI: each command that would log to it or read it says so before any
    work, instead of MLflow's client retrying a refused connection for about four minutes."""
    from tests.support import free_port

    experiment(in_tmp, trials=3)
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    commands = [  # `run`: tests/test_pipeline.py
        ("search", "e.yaml", "--synthetic", "0"),
        ("trial", "e.yaml", "--sample", "--epochs", "1"),
        ("report", "e.yaml"),
        ("promote", "leanfit-digits", "1"),
    ]
    for command in commands:
        # well within MLflow's own four minutes of retries
        result = run_cli(*command, cwd=in_tmp, env={"MLFLOW_TRACKING_URI": uri}, timeout=90)
        assert result.returncode == 2, (command, result.stderr)
        assert f"tracking: MLflow at {uri} did not answer (ConnectionError)" in result.stderr
        assert "Traceback" not in result.stderr
    # MLflow's own request settings that it cannot read (a traceback at the first request)
    bad = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0.5"}
    result = run_cli("search", "e.yaml", "--synthetic", "0", cwd=in_tmp, env=bad, timeout=90)
    assert result.returncode == 2, result.stderr
    assert (
        "environment: MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR='0.5' is not a whole number, which "
        "MLflow reads there; set it to one (MLflow's default: 2) or unset it"
    ) in " ".join(result.stderr.split()), result.stderr
    assert sorted(p.name for p in in_tmp.iterdir()) == ["e.yaml"]


def test_a_tracking_uri_mlflow_cannot_use_is_refused_in_one_line(in_tmp, monkeypatch):
    """A file store (MLflow 3 refuses it), a scheme missing its colon, a database without its
    driver, an unknown scheme: one line naming the URI and the fix, exit 2, nothing written;
    before, MLflow's stack trace after the work folder was made."""
    from leanfit.errors import LeanfitError
    from leanfit.track.runs import check_tracking_uri

    refused = {
        "mlruns": "'mlruns' is MLflow's file store, which MLflow 3 refuses",
        "file:///tmp/runs": "is MLflow's file store, which MLflow 3 refuses",
        "http//typo:5000": "file store (a mistyped scheme? it reads as a folder)",
        "postgresql://me:secret@db/mlflow": "postgresql://me:***@db/mlflow needs its database "
        "driver, the Python module",
        "htp://host:5000": "a scheme MLflow does not know (htp://)",
        # a server's URI with no host (before: a traceback, and the search's lock left behind)
        "http:/127.0.0.1:5123": "'http:/127.0.0.1:5123' names no server (host and port); "
        "write it http://HOST:PORT",
        "http:///127.0.0.1:5123": "names no server",
        "http://127.0.0.1:5123:5123": "names no server",
        # sqlite's slashes mistyped (before: a SQLAlchemy traceback), a folder, a file of
        # another kind (before: `file is not a database` after the work folder was made)
        "sqlite:/m.db": "'sqlite:/m.db' is not a sqlite URI MLflow can open; write "
        "sqlite:///mlflow.db (a path from the current folder, three slashes)",
        "sqlite://m.db": "'sqlite://m.db' is not a sqlite URI MLflow can open",
        "sqlite:///": "'sqlite:///' is not a sqlite URI MLflow can open",
        f"sqlite:///{in_tmp}": f"names a folder, {in_tmp}; name the database file in it",
        "sqlite:///e.yaml": "e.yaml of 'sqlite:///e.yaml' is not a SQLite database (it would be "
        "left as it is)",
        # read as a URL's escapes and query by SQLAlchemy, not by MLflow's folder-making: the
        # search wrote elsewhere than the next command looked; a ~ made a folder named ~
        "sqlite:///my%20dir/mlflow.db": "'sqlite:///my%20dir/mlflow.db': a % or ? in a sqlite "
        "URI's path is read as a URL escape or a query",
        f"sqlite:///{in_tmp}/q?dir/mlflow.db": "a % or ? in a sqlite URI's path",
        "sqlite:///m.db?timeout=30": "options after ? are not taken in a sqlite tracking URI",
        "sqlite:///~/mlflow.db": "a ~ in a sqlite URI is not your home folder (it made a folder "
        f"named ~ here); write it out, e.g. sqlite:///{Path.home().as_posix()}/mlflow.db",
        # a file named without the scheme (it said "MLflow's file store", a folder)
        "e.yaml": "'e.yaml' is a file, not a tracking URI (one without a scheme names MLflow's "
        "file store, a folder); for a sqlite database give sqlite:///e.yaml",
    }
    experiment(in_tmp, trials=3)
    for uri, said in refused.items():
        with pytest.raises(LeanfitError, match=re.escape(said)):
            check_tracking_uri(uri)
    for uri in ("sqlite:///mlflow.db", "http://host:5000", "https://h", "databricks"):
        check_tracking_uri(uri)
    assert not (in_tmp / "mlflow.db").exists() and not (in_tmp / "~").exists()
    assert not (in_tmp / "my%20dir").exists() and not (in_tmp / "my dir").exists()
    # SQLite's own URI form: the file it names is looked for (report and --resume said there
    # was no database after a search had written it)
    from leanfit.track.runs import missing_sqlite_database

    form = "sqlite:///file:t.db?mode=rwc&uri=true"
    assert missing_sqlite_database(form) == "t.db"
    (in_tmp / "t.db").write_bytes(b"")
    assert missing_sqlite_database(form) is None
    (in_tmp / "t.db").unlink()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the user's opt-in: let through
    check_tracking_uri("mlruns")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")

    commands = [  # `run` and `promote` call the same check as `search` and `report`
        ("mlruns", ["search", "e.yaml", "--synthetic", "0"]),
        ("postgresql://me:secret@db/mlflow", ["report", "e.yaml"]),
        ("htp://h", ["trial", "e.yaml", "--sample", "--epochs", "1"]),
        ("http:/127.0.0.1:5123", ["search", "e.yaml", "--synthetic", "0"]),
        ("sqlite:/m.db", ["search", "e.yaml", "--synthetic", "0"]),
        ("sqlite:///e.yaml", ["run", "e.yaml"]),
    ]
    for uri, command in commands:
        result = run_cli(*command, cwd=in_tmp, env={"MLFLOW_TRACKING_URI": uri})
        assert result.returncode == 2, (command, result.stderr)
        assert refused.get(uri, "MLflow does not know")[:30] in result.stderr, result.stderr
        assert "secret" not in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in in_tmp.iterdir()) == ["e.yaml"]


def test_a_web_server_that_is_not_mlflow_is_said_as_such():
    """A tracking URI naming some other web server (a port mixed up): it answers, so it was
    taken as reachable, and MLflow's 404 came later as "did not answer"."""
    import http.server
    import threading

    from leanfit.errors import LeanfitError
    from leanfit.track.runs import check_tracking_reachable

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(LeanfitError, match=f"tracking: {uri} answers, but no MLflow tracking"):
            check_tracking_reachable(uri)
    finally:
        server.shutdown()
        server.server_close()


def test_a_sqlite_database_that_cannot_be_opened_is_refused_in_one_line(in_tmp):
    """What the URI's form cannot tell (a folder root may write in but SQLite cannot create a
    file in, a file that turned out not to be SQLite's): SQLite's own words in one line, exit 2,
    not SQLAlchemy's traceback."""
    from leanfit.errors import LeanfitError
    from leanfit.track.runs import ready_database

    experiment(in_tmp, trials=3)
    result = run_cli(
        "search", "e.yaml", "--synthetic", "0", cwd=in_tmp,
        env={"MLFLOW_TRACKING_URI": "sqlite:////proc/leanfit-test/m.db"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "tracking: the database /proc/leanfit-test/m.db" in result.stderr or (
        "tracking: the sqlite database /proc/leanfit-test/m.db (sqlite:////proc/leanfit-test/m.db)"
        " could not be opened: No such file or directory: /proc/leanfit-test;" in result.stderr
    ), result.stderr  # refused by its folder's permissions, or (as root) by SQLite
    assert "Traceback" not in result.stderr
    (in_tmp / "notes.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)  # a broken header
    with pytest.raises(
        LeanfitError, match="notes.db .* could not be opened: file is not a database"
    ):
        ready_database(f"sqlite:///{in_tmp / 'notes.db'}")


def test_a_search_whose_every_trial_times_out_stops_with_the_reason_and_exit_2(in_tmp):
    """A per-trial timeout no training fits in (executor.trial_timeout: 0.01s): before, the
    search spent its whole budget timing trials out and ended with an empty front."""
    from leanfit.search.controller import FAIL_FAST_JOBS

    cfg = digits_config(
        budget={"min_epochs": 1, "max_epochs": 9, "wall_time": "10m"},
        executor={"kind": "local", "workers": 2, "trial_timeout": "0.01s"},
    )
    write_yaml(in_tmp / "e.yaml", cfg)
    started = time.monotonic()
    result = run_cli("search", "e.yaml", cwd=in_tmp)
    assert result.returncode == 2, result.stderr
    said = " ".join(result.stderr.split())
    # (two workers: the second's job may end in the same wait as the tenth)
    stopped = re.search(r"every trial job of the search failed \((\d+)\), so it stopped", said)
    assert stopped and int(stopped[1]) in (FAIL_FAST_JOBS, FAIL_FAST_JOBS + 1), said
    assert "x timed out after 0.01 s (executor.trial_timeout) (trial 0, 1, 2" in said, said
    assert time.monotonic() - started < 120  # not the 10 minutes
    client, runs = trial_runs(in_tmp / "mlflow.db")
    (search,) = client.search_runs(
        [runs[0].info.experiment_id], "tags.`leanfit.kind` = 'search'", max_results=5
    )
    assert search.info.status == "FAILED"


def test_more_cpu_workers_than_cores_is_noted(in_tmp):
    cfg = digits_config(
        budget={"min_epochs": 1, "max_epochs": 2, "trials": 2},
        executor={"kind": "local", "workers": 2},
    )
    write_yaml(in_tmp / "e.yaml", cfg)
    crowded = run_cli("search", "e.yaml", cwd=in_tmp, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert crowded.returncode == 0, crowded.stderr
    said = " ".join(crowded.stdout.split())
    assert "note: 2 workers on 1 CPU core(s): they share the cores" in said, said
    assert "--workers 1 trains as much, sooner" in said
    # one worker a core, or GPU workers: nothing to say (a second search, checked directly)
    from types import SimpleNamespace
    from unittest import mock

    from leanfit.search.run import crowded_notice

    with mock.patch("leanfit.search.run.usable_cores", return_value=1):
        assert crowded_notice(SimpleNamespace(gpus=[]), 1) is None
        assert crowded_notice(SimpleNamespace(gpus=[0, 1]), 2) is None
        assert "2 workers on 1 CPU core(s)" in crowded_notice(SimpleNamespace(gpus=[]), 2)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (where this machine lets the tests mount one: root, as CI's containers
    run; skipped elsewhere), unmounted after the test."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(  # the same stop and resume is tested with /dev/full in test_api.py
            "a real full disk needs a tmpfs mount, which needs root and CAP_SYS_ADMIN: "
            f"{mounted.stderr.decode().strip()}"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_search_that_fills_its_disk_says_so_in_one_line_and_resumes(small_disk):
    """Real training with the work folder and the tracking database on a 2 MiB disk: before,
    the search ended in SQLAlchemy's traceback (`database or disk is full`), or, with only the
    work folder there, recorded trial after trial as failed with torch's `RuntimeError: [enforce
    fail at inline_container.cc:672] . unexpected pos 128 vs 0` and exited 0. Now: one line, exit
    2, no partial checkpoint left; with more space, --resume finishes the search."""
    import torch

    from leanfit.errors import disk_full
    from leanfit.train.checkpoint import save_checkpoint

    # the disk fills within the first 2 or 3 trials: the resume finishes the other 7 or 8
    cfg = digits_config(budget={"min_epochs": 1, "max_epochs": 3, "trials": 10})
    cfg["scheduler"]["keep_checkpoints"] = "all"  # the disk fills before the search ends
    write_yaml(small_disk / "e.yaml", cfg)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full = run_cli("search", "e.yaml", cwd=small_disk, env=env, timeout=300)
    assert full.returncode == 2, full.stderr[-3000:]
    assert "error: the disk is full: " in full.stderr and "--resume" in full.stderr, full.stderr
    assert "Traceback" not in full.stderr, full.stderr[-3000:]
    assert not list(small_disk.rglob(".*.tmp*")), "a partial checkpoint was left"
    # the checkpoint writer itself: a real ENOSPC naming the file, nothing left behind
    with pytest.raises(OSError) as raised:
        save_checkpoint(small_disk / "big.pt", {"weights": torch.zeros(1_000_000)})
    assert disk_full(raised.value) == str(small_disk / "big.pt")
    assert not list(small_disk.glob(".big.pt.tmp*")) and not (small_disk / "big.pt").exists()

    subprocess.run(["mount", "-o", "remount,size=64M", str(small_disk)], check=True)
    resumed = run_cli("search", "e.yaml", "--resume", cwd=small_disk, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Pareto front" in resumed.stdout


def test_a_killed_search_ran_until_its_latest_job_not_its_last_figure():
    """A search logs its elapsed time every 15 s; one killed with -9 ran on after its last
    figure, at least until its latest job started or ended. That time was lost (a search
    killed 28 s in was said to have run 15 s, and its resume had 13 s too many)."""
    from mlflow.entities import Metric

    from leanfit.track.search import JobRecord, elapsed_from

    def job(started: int, ended: int = 0) -> JobRecord:
        return JobRecord("r", 0, 0, 0, None, {}, {}, "ok", {}, None, None, None, 0,
                         started=started, ended=ended)  # fmt: skip

    t0 = 1_000_000_000_000  # ms
    figures = [Metric("search_elapsed_seconds", v, t0 + int(v * 1000), 0) for v in (0, 15)]
    assert elapsed_from([], []) == 0.0
    assert elapsed_from(figures, []) == 15  # no job after its last figure
    assert elapsed_from(figures, [job(t0 + 2_000, t0 + 27_500)]) == pytest.approx(27.5)
    assert elapsed_from(figures, [job(t0 + 26_000)]) == pytest.approx(26)  # killed running
    # a resumed search's first figure (at its start) comes after the earlier sitting's jobs
    resumed = [*figures, Metric("search_elapsed_seconds", 27.5, t0 + 100_000, 0)]
    assert elapsed_from(resumed, [job(t0 + 2_000, t0 + 27_500)]) == pytest.approx(27.5)
    assert elapsed_from(resumed, [job(t0 + 104_000)]) == pytest.approx(31.5)


def test_a_tracking_uris_password_is_neither_stored_nor_printed():
    """The search's `experiment.yaml` stored `tracking.uri` whole, password included, and
    messages printed it; the pipeline's parameters already left it out."""
    from leanfit.config import experiment_from_dict
    from leanfit.errors import hide_password
    from leanfit.search.run import stored_settings

    uri = "http://alice:Sup3r/S3cret@mlflow.example:5000"
    assert hide_password(f"MLflow at {uri} did not") == (
        "MLflow at http://alice:***@mlflow.example:5000 did not"
    )
    assert hide_password("postgresql://u:p#w@db/x and http://host:5000/x") == (
        "postgresql://u:***@db/x and http://host:5000/x"
    )
    # an @ in the password showed its end; a token given as the user name was shown whole
    assert hide_password("http://u:p@ss@host/x") == "http://u:***@host/x"
    assert hide_password("https://ghp_T0KEN@mlflow.example") == "https://***@mlflow.example"
    exp = experiment_from_dict({**digits_config(), "tracking": {"uri": uri}})
    assert stored_settings(exp)["tracking"]["uri"] == "http://alice:***@mlflow.example:5000"
    assert exp.tracking.uri == uri  # (the search itself still connects with it)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_in_a_commands_start_up_is_said_with_its_own_exit_code(in_tmp, signum):
    """typer turns a KeyboardInterrupt no command caught (a stop while the search imports its
    modules, opens the database, ...) into exit code 130, returned, not raised: the command
    ended without a word, and with 130 for SIGTERM too (8 of 8 stops 2 s in, QA). In a fresh
    interpreter: its imports are what the stop comes in."""
    from tests.support import start_foreground

    experiment(in_tmp, trials=4)
    proc = start_foreground("search", "e.yaml", "--synthetic", "0", cwd=in_tmp, fresh=True)
    # once the command catches SIGTERM (its main() has begun), while it imports torch and
    # MLflow: its search takes over the stop about a second later
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _catches_sigterm(proc.pid):
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, (proc.returncode, err)
    word = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    assert err.strip().splitlines()[-1].startswith(word), err
    assert "Traceback" not in err


def _catches_sigterm(pid: int) -> bool:
    """Whether process `pid` has a handler for SIGTERM (its /proc status's SigCgt mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


def test_a_stop_as_the_search_run_opens_closes_it(in_tmp):
    """A stop in the tens of milliseconds after the search run's row appeared (MLflow still
    writing its tags and settings, then the budget, the warm start, the workers) left the run
    RUNNING, and said no search had started (3 of 3, QA). It is closed KILLED."""
    from tests.support import start_foreground, wait_for_first_run

    experiment(in_tmp, trials=4)
    proc = start_foreground("search", "e.yaml", "--synthetic", "0", cwd=in_tmp)
    database = in_tmp / "mlflow.db"
    wait_for_first_run(proc, database)  # the search run's row, at once
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, (proc.returncode, err)
    assert "--resume` continues the search" in " ".join(err.split()), err
    client, runs = trial_runs(database)
    statuses = {
        r.info.status
        for r in client.search_runs([client.get_experiment_by_name("leanfit-digits").experiment_id])
    }
    assert "RUNNING" not in statuses and "KILLED" in statuses, statuses
