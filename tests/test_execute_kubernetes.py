"""The Kubernetes executor against the API-server stand-in, whose kubelet really runs each Job's
`leanfit trial` command: a search end to end, and each way a Job can end."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from leanfit.config import experiment_from_dict
from leanfit.errors import ConfigError, LeanfitError
from leanfit.execute.base import TrialJob
from leanfit.execute.kubernetes import (
    LABEL_ATTEMPT,
    LABEL_EXPERIMENT,
    LABEL_RUNG,
    LABEL_SEARCH,
    LABEL_SEARCH_RUN,
    LABEL_TRIAL,
    KubernetesError,
    KubernetesExecutor,
)
from leanfit.train.trial import TrialSpec
from tests.kube_standin import (
    KubeStandIn,
    labels_of,
    read_only_root_available,
    read_only_root_command,
)
from tests.support import EXAMPLES, ROOT, digits_config, run_cli, write_image_folder

NAMESPACE = "leanfit-test"
TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


@pytest.fixture
def standin(tmp_path):
    kube = KubeStandIn(tmp_path / "kubelet", namespaces=(NAMESPACE,)).start()
    kube.secrets[(NAMESPACE, "leanfit-storage")] = {"AWS_ACCESS_KEY_ID": "stand-in"}
    yield kube
    kube.stop()


def experiment(tmp_path: Path, trial_timeout: str = "2m", **kubernetes):
    settings = {
        "namespace": NAMESPACE,
        "image": "leanfit:test",
        "gpus": 1,
        "gpu_type": "Tesla-V100-SXM2-16GB",
        "node_selector": {"pool": "gpu"},
        "tolerations": TOLERATIONS,
        "max_in_flight": 2,
        "pvc": "leanfit-work",
        "mount_path": str(tmp_path),
        "secret": "leanfit-storage",
        "ttl_seconds_after_finished": 600,
        "env": {"OMP_NUM_THREADS": "1"},  # two trials share this machine's cores
        **kubernetes,
    }
    cfg = digits_config(
        budget={"min_epochs": 1, "max_epochs": 3, "trials": 5, "wall_time": "3m"},
        executor={"kind": "kubernetes", "trial_timeout": trial_timeout, "kubernetes": settings},
        work_dir=str(tmp_path / "work"),
        tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    cfg["strategy"]["initial_points"] = 4
    return experiment_from_dict(cfg, tmp_path)


def spec_of(job: dict) -> dict:
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    return json.loads(Path(command[command.index("--spec") + 1]).read_text())


def label(job: dict, key: str) -> str:
    return labels_of(job)[key]


def succeeded(kind: str, obj: dict) -> bool:
    return kind == "MODIFIED" and bool(obj.get("status", {}).get("succeeded"))


def test_a_search_runs_every_trial_as_a_job_and_survives_cluster_trouble(
    tmp_path, standin, monkeypatch
):
    from leanfit.search.run import run_search
    from leanfit.track import TrialLogger
    from leanfit.track.search import SearchLog

    monkeypatch.setenv("KUBECONFIG", standin.write_kubeconfig(tmp_path / "kubeconfig", NAMESPACE))
    monkeypatch.setenv("POD_NAME", "search-7f9c")
    monkeypatch.setenv("POD_UID", "0b6e1f7a-4f7e-4c4e-9a57-2a1f3f2c9d11")
    monkeypatch.chdir(tmp_path)
    exp = experiment(tmp_path)
    # a promoted job (it resumes from a checkpoint) loses its pod; a new trial's Job is deleted
    evicted = standin.evict_once(lambda job: label(job, LABEL_RUNG) == "1", after=0.3)
    deleted = standin.delete_once(
        lambda job: label(job, LABEL_TRIAL) == "trial-00002-rung-0", after=0.3
    )
    # the watch drops before the first success (resumed from its resourceVersion), and again
    # before the fourth, after which the re-watch is answered 410 Gone (re-list, watch again)
    successes = []
    drop = standin.drop_watch_once(lambda kind, obj: succeeded(kind, obj))
    drop_then_gone = standin.drop_watch_once(
        lambda kind, obj: succeeded(kind, obj) and (successes.append(1) or len(successes) > 3),
        then_gone=True,
    )

    started = time.monotonic()
    outcome = run_search(exp)
    took = time.monotonic() - started
    controller, jobs = outcome.controller, standin.created

    # every trial ran as a Job, and every job's result was told
    assert len(controller.trials) == 5
    assert all(0 in t.results for t in controller.trials.values()), "a trial lost its result"
    assert {label(j, LABEL_TRIAL) for j in jobs} >= {f"trial-{i:05d}-rung-0" for i in range(5)}
    promoted = [j for j in jobs if label(j, LABEL_RUNG) == "1"]
    assert promoted and all(spec_of(j)["resume_from"] for j in promoted)
    assert controller.stats.retries == 2
    assert controller.stats.jobs_done + controller.stats.jobs_failed == len(jobs) - 2
    assert standin.in_flight() == [] and standin.running_processes() == 0

    records = SearchLog(
        TrialLogger(exp.tracking_uri(), exp.experiment_name()), outcome.search_run_id
    ).records()
    by_job = {(r.trial_id, r.rung, r.attempt): r for r in records}
    assert len(records) == len(jobs)

    # the evicted pod: an infrastructure failure, retried from the same checkpoint, counted once
    [first] = [j for j in jobs if j["metadata"]["name"] == evicted.fired]
    trial_id, rung = int(label(first, LABEL_TRIAL).split("-")[1]), 1
    assert by_job[(trial_id, rung, 0)].status == "infrastructure"
    assert "Evicted" in by_job[(trial_id, rung, 0)].reason
    [retry] = [
        j for j in promoted if label(j, LABEL_TRIAL) == label(first, LABEL_TRIAL) and j is not first
    ]
    assert label(retry, LABEL_ATTEMPT) == "1"
    assert spec_of(retry)["resume_from"] == spec_of(first)["resume_from"]
    assert by_job[(trial_id, rung, 1)].status == "ok"
    assert controller.stats.from_scratch == 0, "the retry did not find the checkpoint"
    # superseded by the retry's own, the lower rung's checkpoint is deleted; the new one is kept
    assert not Path(spec_of(retry)["resume_from"]).exists()
    assert Path(controller.trials[trial_id].checkpoints[rung]).is_file()
    assert [r.status for r in records if (r.trial_id, r.rung) == (trial_id, rung)].count("ok") == 1
    assert rung in controller.trials[trial_id].results

    # the Job deleted from outside: noticed, an infrastructure failure, retried
    assert (deleted.fired, "Background") in standin.deletions
    assert by_job[(2, 0, 0)].status == "infrastructure"
    assert "deleted" in by_job[(2, 0, 0)].reason
    assert by_job[(2, 0, 1)].status == "ok"

    # the dropped watch resumed from the last resourceVersion it had delivered
    watches = standin.watches
    i = next(i for i, w in enumerate(watches) if w.ended == "dropped")
    assert drop.fired and watches[i].delivered
    assert watches[i + 1].resource_version == watches[i].delivered[-1]
    # after the second drop, 410 Gone: the executor listed the Jobs and watched from that list
    assert drop_then_gone.fired
    j = next(j for j, w in enumerate(watches) if w.ended == "gone")
    assert watches[j - 1].ended == "dropped"
    assert watches[j + 1].resource_version in standin.list_versions[1:]

    # never more Jobs at once than the bound, and the bound was used
    assert standin.max_in_flight == 2

    # what the file asked of every Job
    for job in jobs:
        meta, spec = job["metadata"], job["spec"]
        pod = spec["template"]["spec"]
        [container] = pod["containers"]
        assert meta["namespace"] == NAMESPACE
        assert meta["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Pod", "name": "search-7f9c",
             "uid": "0b6e1f7a-4f7e-4c4e-9a57-2a1f3f2c9d11"}
        ]  # fmt: skip
        assert labels_of(job)[LABEL_EXPERIMENT] == "digits"
        assert labels_of(job)[LABEL_SEARCH] == labels_of(jobs[0])[LABEL_SEARCH]
        assert spec["template"]["metadata"]["labels"] == meta["labels"]
        assert spec["backoffLimit"] == 0
        assert spec["ttlSecondsAfterFinished"] == 600
        assert spec["activeDeadlineSeconds"] == 120 + 3600  # a backstop: the timeout is kept here
        assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
        assert pod["nodeSelector"] == {
            "pool": "gpu",
            "nvidia.com/gpu.product": "Tesla-V100-SXM2-16GB",
        }
        assert pod["tolerations"] == TOLERATIONS
        assert pod["restartPolicy"] == "Never"
        # Pod Security 'restricted'
        assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
        }
        assert container["envFrom"] == [{"secretRef": {"name": "leanfit-storage"}}]
        assert {"name": "HOME", "value": "/tmp"} in container["env"]
        # a read-only root: the trial writes to the claim and to an emptyDir at /tmp alone
        assert pod["volumes"] == [
            {"name": "work", "persistentVolumeClaim": {"claimName": "leanfit-work"}},
            {"name": "tmp", "emptyDir": {}},
        ]
        assert container["volumeMounts"] == [
            {"name": "work", "mountPath": str(tmp_path)},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        assert container["image"] == "leanfit:test"
        assert container["command"][:2] == ["leanfit", "trial"]
        assert "--result-to" in container["command"] and "--no-track" in container["command"]
    # ... and they ran so, where this machine can (see tests.kube_standin)
    assert standin.sandboxed == (len(jobs) if read_only_root_available() else 0)
    assert took < 120


def submit_and_collect(executor, specs: list[TrialSpec], timeout: float = 60):
    for spec in specs:
        executor.submit(TrialJob(spec))
    outcomes, deadline = [], time.monotonic() + timeout
    while len(outcomes) < len(specs) and time.monotonic() < deadline:
        outcomes += executor.wait(timeout=deadline - time.monotonic())
    return {o.job.spec.trial_id: o for o in outcomes}


def test_a_trial_failing_on_its_own_is_not_retried_and_a_timeout_is_a_failure(tmp_path, standin):
    bad = TrialSpec(trial_id="bad", config={"no_such_parameter": 1}, epochs=1)
    with KubernetesExecutor(experiment(tmp_path), standin.api_client()) as ex:
        got = submit_and_collect(ex, [bad])
    assert not got["bad"].infrastructure_failure
    assert got["bad"].result.status == "failed"
    assert "invalid configuration" in got["bad"].result.reason

    sample = experiment_from_dict(digits_config()).search_space().sample(3)
    slow = TrialSpec(trial_id="slow", config=sample, epochs=50)
    exp = experiment(tmp_path, trial_timeout="1s")
    with KubernetesExecutor(exp, standin.api_client(), pod_check_interval=0.3) as ex:
        got = submit_and_collect(ex, [slow])
    assert not got["slow"].infrastructure_failure
    assert "timed out after 1 s" in got["slow"].result.reason
    [job] = [j for j in standin.created if j["metadata"]["name"] == got["slow"].worker]
    # the Job's own deadline is a backstop: the timeout runs from the container's start, so a
    # pod that waits for a free GPU is not a trial that timed out
    assert job["spec"]["activeDeadlineSeconds"] == 1 + 3600


def test_a_result_that_came_after_the_timeout_between_two_looks_is_timed_out(tmp_path, standin):
    """The timeout was kept only when the pods were looked at (every 10 s): a Job that ended
    between two looks was kept however long it ran (9-15 s under a 5-s timeout)."""
    sample = experiment_from_dict(digits_config()).search_space().sample(3)
    exp = experiment(tmp_path, trial_timeout="0.5s")
    with KubernetesExecutor(exp, standin.api_client(), pod_check_interval=1000) as ex:
        got = submit_and_collect(ex, [TrialSpec(trial_id="long", config=sample, epochs=20)])
    assert got["long"].result.status == "failed" and not got["long"].infrastructure_failure
    # (the local executor's words for it: one failure, one text, 0.5 s not rounded to 0 s)
    assert got["long"].result.reason == "timed out after 0.5 s (executor.trial_timeout)"
    [job] = standin.created
    assert json.loads(Path(job_result_file(job)).read_text())["wall_time"] > 0.5  # it did run


def job_result_file(job: dict) -> str:
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    return command[command.index("--result-to") + 1]


def test_a_resumed_search_deletes_the_jobs_its_killed_controller_left_running(tmp_path, standin):
    """After a kill -9 the first controller's Jobs ran on beside the resumed search's copies
    of their jobs (3 at once under max_in_flight 2), into the same checkpoint files."""
    sample = experiment_from_dict(digits_config()).search_space().sample(3)
    killed = KubernetesExecutor(experiment(tmp_path), standin.api_client())
    assert killed.attach("0123abcd") == 0  # (the search run, once open)
    for i in range(2):
        killed.submit(TrialJob(TrialSpec(trial_id=f"long-{i}", config=sample, epochs=50)))
    left = [job["metadata"]["name"] for job in standin.created]
    assert all(labels_of(job)[LABEL_SEARCH_RUN] == "0123abcd" for job in standin.created)
    # (killed: it deletes nothing; its Jobs run on)
    other = KubernetesExecutor(experiment(tmp_path), standin.api_client())
    assert other.attach("another-search") == 0  # another search's Jobs are not its business
    resumed = KubernetesExecutor(experiment(tmp_path), standin.api_client())
    assert resumed.attach("0123abcd") == 2
    assert sorted(standin.deletions) == [(name, "Background") for name in sorted(left)]
    for executor in (resumed, other, killed):
        executor.close()


def test_no_password_of_the_tracking_uri_goes_to_the_jobs(tmp_path, standin):
    """The trials run --no-track: a tracking URI's password was written to the experiment file
    on the claim, and MLFLOW_TRACKING_URI (from the search pod's Secret) copied into every
    Job's spec, where anyone who may read Jobs read it."""
    from leanfit.execute.kubernetes import job_env

    exp = experiment(tmp_path).model_copy(
        update={"tracking": experiment(tmp_path).tracking.model_copy(
            update={"uri": "http://alice:secret@mlflow:5000"})}
    )  # fmt: skip
    with KubernetesExecutor(exp, standin.api_client()) as ex:
        written = ex.experiment_file.read_text()
    assert "alice:secret" not in written and "http://alice:***@mlflow:5000" in written
    with_password = {"MLFLOW_TRACKING_URI": "http://alice:secret@mlflow:5000"}
    assert job_env(with_password, {}, None) == {}
    plain = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "AWS_REGION": "eu-west-1"}
    assert job_env(plain, {}, None) == plain


def test_a_jobs_deadline_met_before_its_trial_ran_its_timeout_is_retried(
    tmp_path, standin, monkeypatch
):
    """The Job's deadline counts from its creation, the time it waited for a node included: a
    Job that meets it before its container ran for the trial's timeout waited, it did not time
    out, and is retried (it was recorded as the trial's own failure, never run again)."""
    from leanfit.execute import kubernetes

    monkeypatch.setattr(kubernetes, "QUEUE_SECONDS", 0.0)  # the deadline: the timeout alone
    sample = experiment_from_dict(digits_config()).search_space().sample(3)
    exp = experiment(tmp_path, trial_timeout="2s")
    # (pods looked at too seldom to see it run: as a pod Pending for a GPU is seen)
    with KubernetesExecutor(exp, standin.api_client(), pod_check_interval=1000) as ex:
        got = submit_and_collect(ex, [TrialSpec(trial_id="queued", config=sample, epochs=50)])
    assert got["queued"].infrastructure_failure, got["queued"].result.reason
    assert "waited for a node" in got["queued"].result.reason


def test_a_trial_job_reads_an_image_folder_and_its_labels_csv_by_the_files_paths(tmp_path, standin):
    """The Job reads the experiment from the work folder, not from the file's own folder: the
    dataset's folder and its labels CSV, both relative to the file, are made absolute for it."""
    classes = write_image_folder(tmp_path / "sorted", {"cat": 6, "dog": 6}, size=8)
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = []
    for path in sorted(classes.rglob("*.*")):
        path.replace(flat / f"{path.parent.name}-{path.name}")
        rows.append(f"{path.parent.name}-{path.name},{path.parent.name}\n")
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(rows))
    exp = experiment(tmp_path)
    data = exp.model_dump(mode="json")
    data["dataset"] = {"source": "imagefolder", "path": "flat", "labels": "labels.csv",
                       "image_size": 8}  # fmt: skip
    exp = experiment_from_dict(data, tmp_path)
    sample = exp.search_space().sample(0)
    with KubernetesExecutor(exp, standin.api_client()) as ex:
        got = submit_and_collect(ex, [TrialSpec(trial_id="t", config=sample, epochs=1)])
    assert got["t"].result.status == "ok", got["t"].result.reason


def test_a_container_that_cannot_start_is_an_infrastructure_failure(tmp_path, standin):
    standin.unpullable_images.add("registry.invalid/leanfit:nope")
    exp = experiment(tmp_path, image="registry.invalid/leanfit:nope", start_timeout="1s")
    spec = TrialSpec(trial_id="never", config={}, epochs=1)
    with KubernetesExecutor(exp, standin.api_client(), pod_check_interval=0.2) as ex:
        ex.submit(TrialJob(spec))
        assert ex.not_started() == 1  # the progress line's "(1 not started)"
        got = {o.job.spec.trial_id: o for o in ex.wait(timeout=20)}
        assert ex.running() == [] and ex.not_started() == 0
    assert got["never"].infrastructure_failure
    assert "ErrImagePull" in got["never"].result.reason
    assert standin.deletions == [(got["never"].worker, "Background")]
    assert standin.in_flight() == []


def test_a_missing_secret_fails_the_trial_in_a_minute_and_is_not_retried(tmp_path, standin):
    """A Secret missing in the namespace is the same mistake for every trial and every retry:
    said as the trial's failure once its grace is over, not waited on for start_timeout three
    times as an infrastructure failure (30 minutes by default)."""
    exp = experiment(tmp_path, start_timeout="1s", secret="leanfit-credentials")  # not there
    with KubernetesExecutor(exp, standin.api_client(), pod_check_interval=0.2) as ex:
        got = submit_and_collect(ex, [TrialSpec(trial_id="t", config={}, epochs=1)], timeout=20)
    assert not got["t"].infrastructure_failure
    reason = got["t"].result.reason
    assert 'CreateContainerConfigError: secret "leanfit-credentials" not found' in reason, reason
    assert f"missing in namespace {NAMESPACE}) needs fixing" in reason, reason


def test_an_image_that_runs_as_root_is_said_with_the_setting_that_allows_it(tmp_path, standin):
    standin.root_images.add("pytorch/pytorch:root")
    exp = experiment(tmp_path, image="pytorch/pytorch:root", start_timeout="1s")
    with KubernetesExecutor(exp, standin.api_client(), pod_check_interval=0.2) as ex:
        got = submit_and_collect(ex, [TrialSpec(trial_id="t", config={}, epochs=1)], timeout=20)
    reason = got["t"].result.reason
    assert not got["t"].infrastructure_failure
    assert "image will run as root" in reason and "run_as_non_root: false" in reason, reason
    exp = experiment(tmp_path, image="pytorch/pytorch:root", run_as_non_root=False)
    sample = exp.search_space().sample(0)
    with KubernetesExecutor(exp, standin.api_client()) as ex:
        got = submit_and_collect(ex, [TrialSpec(trial_id="t", config=sample, epochs=1)])
    assert got["t"].result.status == "ok", got["t"].result.reason
    assert (
        "runAsNonRoot"
        not in standin.created[-1]["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    )


def test_a_trial_container_has_a_read_only_root_unless_the_file_says_not(tmp_path, standin):
    job = TrialJob(TrialSpec(trial_id="t", config={}, epochs=1))

    def manifest(**settings):
        with KubernetesExecutor(experiment(tmp_path, **settings), standin.api_client()) as ex:
            made = ex.job_manifest(job, "lf-t", tmp_path / "s.json", tmp_path / "r.json")
        pod = made["spec"]["template"]["spec"]
        return pod, pod["containers"][0]

    pod, container = manifest()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert {"name": "HOME", "value": "/tmp"} in container["env"]
    # an image of one's own that writes elsewhere
    pod, container = manifest(read_only_root=False)
    assert "readOnlyRootFilesystem" not in container["securityContext"]
    # the claim mounted at /tmp itself is where scratch files go (two mounts at one path are
    # refused by the API server); a HOME of one's own is kept
    pod, container = manifest(mount_path="/tmp/", env={"HOME": "/home/me"})
    assert container["volumeMounts"] == [{"name": "work", "mountPath": "/tmp/"}]
    assert [v["name"] for v in pod["volumes"]] == ["work"]
    assert {"name": "HOME", "value": "/home/me"} in container["env"]


def test_the_standins_read_only_root_lets_a_container_write_to_its_claim_and_tmp_alone(tmp_path):
    """What the stand-in's read-only root enforces (the search test above runs its trials in
    it): a write to the root filesystem fails, the claim's folder is the real one, /tmp is an
    empty folder of the pod's own."""
    if not read_only_root_available():
        pytest.skip("no user and mount namespaces here (unshare): no read-only root to test")
    claim, elsewhere = tmp_path / "claim", ROOT / f".read-only-probe-{os.getpid()}"
    claim.mkdir()
    (tmp_path / "seen-from-the-pod").touch()
    scratch = Path(f"/tmp/leanfit-scratch-{os.getpid()}")
    script = (
        f"touch {claim}/written; ls -A /tmp; touch {scratch} && echo tmp-written; "
        f"touch {elsewhere} || echo root-refused; touch written-here || echo cwd-refused"
    )
    try:
        done = subprocess.run(
            read_only_root_command(["sh", "-c", script], [str(claim)], ["/tmp"]),
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        present = elsewhere.exists()
        elsewhere.unlink(missing_ok=True)
    assert done.returncode == 0, done.stderr
    assert (claim / "written").is_file() and not present
    lines = done.stdout.split()
    assert "tmp-written" in lines and "root-refused" in lines and "cwd-refused" in lines
    assert "seen-from-the-pod" not in lines  # /tmp is the pod's own
    assert "Read-only file system" in done.stderr
    assert not scratch.exists()


def test_a_job_deleted_from_outside_is_noticed_and_close_deletes_the_rest(tmp_path, standin):
    sample = experiment_from_dict(digits_config()).search_space().sample(3)
    ex = KubernetesExecutor(experiment(tmp_path), standin.api_client())
    jobs = [TrialJob(TrialSpec(trial_id=f"long-{i}", config=sample, epochs=50)) for i in range(2)]
    for job in jobs:
        ex.submit(job)
    assert ex.free_slots() == 0
    deadline = time.monotonic() + 10
    while standin.running_processes() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert standin.running_processes() == 2
    assert ex.not_started() == 2  # not seen running yet: the pods are looked at every 10 s
    first, second = (job["metadata"]["name"] for job in standin.created)

    standin.delete_job(NAMESPACE, first, "Background")  # as `kubectl delete job` does
    [outcome] = ex.wait(timeout=10)
    assert outcome.job is jobs[0] and outcome.infrastructure_failure
    assert "deleted" in outcome.result.reason
    assert not any(w.ended in ("dropped", "gone") for w in standin.watches)  # seen, not re-listed
    assert ex.running() == [jobs[1]] and ex.free_slots() == 1

    ex.close()
    assert standin.deletions == [(first, "Background"), (second, "Background")]
    assert standin.in_flight() == [] and standin.running_processes() == 0


def test_cluster_mistakes_stop_with_the_fix(tmp_path, standin):
    with pytest.raises(KubernetesError, match="401"):
        KubernetesExecutor(experiment(tmp_path), standin.api_client(token="wrong"))
    work = experiment(tmp_path).work_path()
    assert not (work / "kubernetes").exists(), "a search that cannot start writes nothing"
    # found by a dry-run Job before anything is written (listing Jobs there answers [])
    with pytest.raises(KubernetesError, match="namespace 'nowhere' not found .*dry run"):
        KubernetesExecutor(experiment(tmp_path, namespace="nowhere"), standin.api_client())
    # a manifest the cluster refuses: at the start too
    with pytest.raises(KubernetesError, match="rejected creating a trial Job as a dry run .422"):
        KubernetesExecutor(
            experiment(tmp_path, tolerations=[{"key": "gpu", "operator": "Exists",
                                               "tolerationSeconds": "soon"}]),
            standin.api_client(),
        )  # fmt: skip
    assert not (work / "kubernetes").exists(), "a search that cannot start writes nothing"
    KubernetesExecutor(experiment(tmp_path), standin.api_client()).close()
    assert standin.created == [] and len(standin.dry_runs) == 1, "a dry run creates nothing"
    elsewhere = experiment(tmp_path, mount_path="/mnt/elsewhere")
    with pytest.raises(LeanfitError, match="work_dir: .* is not under"):
        KubernetesExecutor(elsewhere, standin.api_client())
    with pytest.raises(ConfigError, match=r"executor.kubernetes.tolerations: \[0\]: .*'keys'"):
        experiment(tmp_path, tolerations=[{"keys": "gpu", "operator": "Exists"}])


def test_trial_spec_options(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"trial_id": "t", "config": {}, "epochs": 1}))
    result = run_cli(
        "trial", str(EXAMPLES / "digits.yaml"), "--spec", str(spec), "--epochs", "2", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "--spec: the spec gives the configuration and budget; drop --epochs" in result.stderr
    spec.write_text(json.dumps({"trial_id": "t", "config": {}}))
    result = run_cli("trial", str(EXAMPLES / "digits.yaml"), "--spec", str(spec), cwd=tmp_path)
    assert result.returncode == 2 and "epochs" in result.stderr


def test_the_kubeconfig_is_read_where_kubeconfig_points_now(tmp_path, monkeypatch):
    """The client takes $KUBECONFIG's value once, when it is first imported: a process whose
    KUBECONFIG changed since (a second test, a long-lived watcher) read the first one's file."""
    import yaml

    from leanfit.execute.kubernetes import kubernetes_client

    def kubeconfig(name: str, port: int) -> str:
        context = {"cluster": name, "user": name}
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": name,
            "clusters": [{"name": name, "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": name, "user": {"token": "t"}}],
            "contexts": [{"name": name, "context": context}],
        }  # fmt: skip
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        return str(path)

    for name, port in (("first", 6443), ("second", 16443)):
        monkeypatch.setenv("KUBECONFIG", kubeconfig(name, port))
        assert kubernetes_client().configuration.host == f"http://127.0.0.1:{port}"

    # a kubeconfig that is not YAML, or a list: one line naming it, not the YAML's traceback
    from leanfit.errors import LeanfitError

    for text in ("garbage: [\n", "- a\n"):
        (tmp_path / "bad").write_text(text)
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "bad"))
        with pytest.raises(LeanfitError, match="no usable kubeconfig") as said:
            kubernetes_client()
        assert "\n" not in str(said.value)


def test_a_spec_whose_teacher_is_missing_is_refused_before_anything_is_logged(tmp_path):
    """A trial spec with a teacher (the pipeline's distillation) whose checkpoint is not there:
    exit 2 naming the file, and no tracking database or trial run written."""
    spec = tmp_path / "spec.json"
    missing = tmp_path / "final" / "teacher.pt"
    config = experiment_from_dict(digits_config()).search_space().sample(3)
    spec.write_text(json.dumps({
        "trial_id": "t", "config": config, "epochs": 1, "teacher": {"checkpoint": str(missing)},
    }))  # fmt: skip
    result = run_cli("trial", str(EXAMPLES / "digits.yaml"), "--spec", str(spec), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"teacher checkpoint {missing}: no such file" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.json"]


def test_a_spec_or_file_a_trial_cannot_run_is_refused_before_anything_is_logged(tmp_path):
    """`leanfit trial`'s files as a user gets them wrong: each refused with exit 2 naming the
    option, and no tracking database made. Before, a configuration outside the space logged a
    FAILED run and exited 1; a negative resolution or a missing checkpoint to resume left a
    RUNNING run behind a traceback; a folder or a PNG given as a file was a traceback; a folder
    as --result-to was said after the whole training."""
    from leanfit.train.trial import read_result

    config = experiment_from_dict(digits_config()).search_space().sample(3)
    (tmp_path / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary")
    (tmp_path / "folder").mkdir()
    good = {"trial_id": "t-1", "config": config, "epochs": 1}
    for name, spec, says in (
        ("outside.json", {**good, "config": {}}, "invalid configuration: "),
        ("resolution.json", {**good, "resolution": -4}, "resolution"),
        ("id.json", {**good, "trial_id": "../../x"}, "trial_id"),
        ("resume.json", {**good, "resume_from": "gone.pt"}, "resume_from: checkpoint 'gone.pt'"),
    ):
        (tmp_path / name).write_text(json.dumps(spec))
        r = run_cli("trial", str(EXAMPLES / "digits.yaml"), "--spec", name, cwd=tmp_path)
        assert r.returncode == 2 and f"--spec: {name}: " in r.stderr, (name, r.stderr)
        assert says in r.stderr and "Traceback" not in r.stderr, (name, r.stderr)
    for args, says in (
        (("--spec", "folder"), "--spec: folder is a folder"),
        (("--spec", "picture.png"), "--spec: picture.png is not a text file"),
        (("--genotype", "picture.png"), "--genotype: picture.png is not a text file"),
        (("--genotype", "folder"), "--genotype: folder is a folder"),
        (("--sample", "--resume", "folder"), "--resume: folder is a folder"),
        (("--sample", "--result-to", "folder"), "--result-to: folder is a folder"),
    ):
        r = run_cli("trial", str(EXAMPLES / "digits.yaml"), *args, cwd=tmp_path)
        assert r.returncode == 2 and says in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and "epoch" not in r.stdout, (args, r.stdout)
    assert not (tmp_path / "mlflow.db").exists()
    # as a Kubernetes Job runs it: the refusal is the trial's result too, so the search records
    # a failed trial instead of retrying a Job that ended without one
    r = run_cli("trial", str(EXAMPLES / "digits.yaml"), "--spec", "resume.json", "--result-to",
                "out/result.json", "--no-track", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2, r.stderr
    result = read_result(tmp_path / "out" / "result.json")
    assert result is not None and result.status == "failed" and "gone.pt" in result.reason
