"""Kubernetes executor: one batch/v1 Job per trial job, followed with the watch API.

Each job of the search (a trial trained to a rung) becomes a Job whose pod runs the unit of work
a user runs alone:

    leanfit trial EXPERIMENT --spec SPEC.json --result-to RESULT.json --search-subset --no-track

Results come back through storage the search shares with its Jobs: the work dir, on a
PersistentVolumeClaim mounted at the same path in the search pod and in every trial pod
(`executor.kubernetes.pvc` and `mount_path`). Before it creates a Job the executor writes the
experiment and the job's spec there; the trial writes its checkpoint and its result there (the
TrainResult as JSON, atomically, also when it fails); once the watch says the Job has ended, the
executor reads the result. The result file, not the Job's fate, says what the trial did:

- a result file: the trial's own outcome, trained or failed on its own (NaN loss, invalid
  configuration); a failed trial is not retried;
- no result and its container ran past `executor.trial_timeout` (timed from the container's
  start, as seen every `pod_check_interval`: a pod waiting for a free GPU is not timing out): timed
  out, a failure of the trial, as in the local executor; the Job's `activeDeadlineSeconds` is only
  a backstop (the timeout and an hour more), and a Job that meets it before its container ran
  for the timeout waited for a node: an infrastructure failure;
- no result otherwise (pod evicted or preempted, OOM-killed, node lost, Job deleted from outside,
  a container that cannot start: image pull, missing Secret): an infrastructure failure, which the
  controller retries from the job's last checkpoint.

One watch on this search's label follows every Job. A dropped watch is resumed from the last
resourceVersion it delivered; on 410 Gone the Jobs are listed again, what the list shows is
applied as if watched, and the watch starts over from the list's resourceVersion. Jobs carry
`backoffLimit: 0` (leanfit retries, from a checkpoint), `ttlSecondsAfterFinished`, and an owner
reference to the search pod (POD_NAME and POD_UID from the downward API), so that they go when it
goes; `close()` deletes the ones still running.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanfit.config import Experiment
from leanfit.errors import LeanfitError, hide_password, settings_without_password
from leanfit.execute.base import Executor, JobOutcome, TrialJob
from leanfit.train.result import TrainResult
from leanfit.train.trial import TrialSpec, read_result

log = logging.getLogger(__name__)

LABEL_EXPERIMENT = "leanfit.io/experiment"
LABEL_SEARCH = "leanfit.io/search"  # this executor's: a resumed search has a new one
LABEL_SEARCH_RUN = "leanfit.io/search-run"  # the MLflow search run's id, the same when resumed
LABEL_TRIAL = "leanfit.io/trial"
LABEL_RUNG = "leanfit.io/rung"
LABEL_ATTEMPT = "leanfit.io/attempt"
LABEL_JOB = "leanfit.io/job"  # on the pods too: finds a Job's pods without the Job's own labels

# The server ends each watch after this long (a little jitter spreads reconnects); it is resumed.
WATCH_SECONDS = 240
# How long the API server may be unreachable before the search stops instead of waiting.
API_GRACE_SECONDS = 300.0
# A result file may take a moment to show on network storage after the Job completes.
RESULT_GRACE_SECONDS = 10.0
# Container waiting reasons that mean "cannot start" rather than "still starting".
START_FAILURES = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
# ... of which these are a setting's mistake (a Secret or ConfigMap missing, an image name no
# registry can have): the Job is given `CONFIG_GRACE_SECONDS` (at most start_timeout), then
# recorded as the trial's failure, not retried: every retry met the same mistake, and a search
# waited start_timeout three times (30 min) to say so
CONFIG_FAILURES = frozenset({"CreateContainerConfigError", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_GRACE_SECONDS = 60.0
# The Job's activeDeadlineSeconds beyond the trial's timeout, which the executor keeps itself:
# an hour to wait for a free GPU and to start, and a bound on a Job the search no longer follows
QUEUE_SECONDS = 3600.0
# Settings (never credentials) the trial needs to reach MLflow and object storage like the search.
FORWARDED_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


class KubernetesError(LeanfitError):
    """The cluster cannot run the search's Jobs as configured (access, namespace, storage)."""


@dataclass
class _InFlight:
    job: TrialJob
    name: str
    result_path: Path
    submitted: float  # time.monotonic() when the Job was created
    cannot_start_since: float | None = None
    running_since: float | None = None  # time.monotonic() when its container was first seen running


class KubernetesExecutor(Executor):
    """Runs each trial job as a Kubernetes Job; at most `max_in_flight` at a time.

    Args:
        experiment: the validated experiment; `executor.kubernetes` says how Jobs look,
            `executor.trial_timeout` is kept from each container's start, `work_dir` is where
            specs, results and checkpoints go (shared with the Jobs).
        api_client: a configured `kubernetes.client.ApiClient`; by default the pod's service
            account when running in a cluster, else the kubeconfig (KUBECONFIG or ~/.kube/config).
        environ: where POD_NAME, POD_UID, POD_NAMESPACE (the search pod, for the owner reference)
            and the forwarded MLflow and storage settings are read; default `os.environ`.
        plan_file: the pipeline's data plan; copied next to the specs for the Jobs to read.
        pod_check_interval: seconds between looks at the pods for containers that cannot start.
    """

    def __init__(
        self,
        experiment: Experiment,
        api_client=None,
        environ: Mapping[str, str] | None = None,
        plan_file: str | os.PathLike | None = None,
        pod_check_interval: float = 10.0,
    ):
        if pod_check_interval <= 0:
            raise ValueError(
                f"The value of `pod_check_interval` is {pod_check_interval}, but must be > 0."
            )
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        self.experiment = experiment
        self.settings = experiment.executor.kubernetes
        self.namespace = self.settings.namespace
        self.max_in_flight = self.settings.max_in_flight
        self.trial_timeout = experiment.executor.trial_timeout
        self.pod_check_interval = pod_check_interval
        environ = os.environ if environ is None else environ
        self.search_id = uuid.uuid4().hex[:10]
        self.search_run: str | None = None  # `attach`
        self.selector = f"{LABEL_SEARCH}={self.search_id}"
        self.folder = experiment.work_path() / "kubernetes" / self.search_id
        self._check_storage()
        self.owner = (
            owner_reference(environ, self.namespace) if self.settings.owner_reference else None
        )
        self.env = job_env(environ, self.settings.env, self.settings.cpu)

        self._owns_client = api_client is None
        self.api = api_client if api_client is not None else kubernetes_client()
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)

        self._flights: dict[str, _InFlight] = {}
        self._ready: list[JobOutcome] = []  # outcomes known outside a watch event
        self._events: queue.Queue = queue.Queue()
        self._seq = 0
        self._next_pod_check = time.monotonic() + pod_check_interval
        self._closed = False
        self._stop = threading.Event()
        self._response = None  # the open watch, closed by close() to end the thread
        try:
            _, version = self._list_jobs()  # access, namespace and RBAC problems surface here
        except (ApiException, HTTPError, OSError) as e:
            raise KubernetesError(
                f"executor.kind: kubernetes: cannot reach the API server at "
                f"{self.api.configuration.host} ({e}); check the kubeconfig, or run the search "
                "in the cluster"
            ) from None
        # the files the Jobs read, written once the cluster is known to take its Jobs (a search
        # that cannot start leaves nothing behind)
        self.experiment_file = self.folder / "experiment.yaml"
        self.plan_file = None if plan_file is None else self.folder / "data-plan.json"
        self._dry_run()
        self._write_experiment()
        if plan_file is not None:
            shutil.copyfile(plan_file, self.plan_file)
        self._watcher = threading.Thread(
            target=self._watch, args=(version,), name="leanfit-job-watch", daemon=True
        )
        self._watcher.start()

    # -- files on the shared work dir -------------------------------------------------------------

    def _check_storage(self) -> None:
        work, mount = self.experiment.work_path(), Path(self.settings.mount_path)
        if self.settings.pvc and not work.is_relative_to(mount):
            raise KubernetesError(
                f"work_dir: {work} is not under executor.kubernetes.mount_path ({mount}), where "
                f"the claim {self.settings.pvc!r} is mounted: the trial Jobs could not read their "
                f"specs or write results; set work_dir to a folder under {mount}"
            )

    def _dry_run(self) -> None:
        """Create a trial Job as a dry run (`dryRun=All`: admitted as a create is, not stored).

        A namespace that does not exist (listing Jobs there answers an empty list), a service
        account that may not create Jobs, a manifest the cluster refuses (a resource quantity, a
        quota, a Pod Security policy) stop the search here, before its data loads and its run
        opens; they stopped it at its first trial."""
        from kubernetes.client.exceptions import ApiException

        name = f"lf-{self.search_id}-dry-run"
        probe = TrialJob(TrialSpec(trial_id="dry-run", config={}, epochs=1))
        files = [self.folder / f"{name}.{what}.json" for what in ("spec", "result")]
        manifest = self.job_manifest(probe, name, *files)
        try:
            self.batch.create_namespaced_job(self.namespace, manifest, dry_run="All")
        except ApiException as e:
            if e.status is not None and 400 <= e.status < 500 and e.status not in (409, 429):
                problem = _api_problem(e, self.namespace, "creating a trial Job as a dry run")
                raise KubernetesError(problem) from None
            # (a server's passing trouble: the first trial meets it again, and is retried)

    def _write_experiment(self) -> None:
        """The experiment as the Jobs read it: absolute paths, so it means the same in any pod."""
        import yaml

        data = self.experiment.model_dump(mode="json", exclude={"base_dir"})
        dataset_path = self.experiment.dataset_path()
        if dataset_path is not None:
            data["dataset"]["path"] = str(dataset_path)
        labels = self.experiment.labels_path()
        if labels is not None:
            data["dataset"]["labels"] = str(labels)
        data["work_dir"] = str(self.experiment.work_path())
        # (its trials run --no-track: the file on the claim, readable by every pod, held the
        # tracking URI's password)
        settings_without_password(data)
        _write_atomically(self.experiment_file, yaml.safe_dump(data, sort_keys=False))

    # -- the Job --------------------------------------------------------------------------------

    def job_manifest(self, job: TrialJob, name: str, spec_file: Path, result_file: Path) -> dict:
        """The batch/v1 Job that runs `job` (a plain manifest, as `kubectl apply` would take)."""
        k = self.settings
        labels = {
            "app.kubernetes.io/name": "leanfit",
            "app.kubernetes.io/component": "trial",
            LABEL_EXPERIMENT: label_value(self.experiment.name),
            LABEL_SEARCH: self.search_id,
            **({LABEL_SEARCH_RUN: label_value(self.search_run)} if self.search_run else {}),
            LABEL_TRIAL: label_value(job.spec.trial_id),
            LABEL_RUNG: str(job.rung),
            LABEL_ATTEMPT: str(job.attempt),
            LABEL_JOB: name,
        }
        command = [
            "leanfit", "trial", str(self.experiment_file),
            "--spec", str(spec_file), "--result-to", str(result_file),
            "--search-subset", "--no-track",
        ]  # fmt: skip
        if self.plan_file is not None:
            command += ["--data-plan", str(self.plan_file)]
        container: dict[str, Any] = {
            "name": "trial",
            "image": k.image,
            "command": command,
            # what Pod Security 'restricted' asks of a container (the pod's seccomp below)
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                **({"runAsNonRoot": True} if k.run_as_non_root else {}),
                **({"readOnlyRootFilesystem": True} if k.read_only_root else {}),
            },
        }
        if k.image_pull_policy:
            container["imagePullPolicy"] = k.image_pull_policy
        # a trial writes to the claim (the work folder) and scratch files to /tmp; its home
        # (the image's is /work, on the root filesystem where mount_path is elsewhere) is /tmp
        env = {"HOME": "/tmp", **self.env}
        container["env"] = [{"name": n, "value": v} for n, v in env.items()]
        if k.secret:
            container["envFrom"] = [{"secretRef": {"name": k.secret}}]
        limits: dict[str, str] = {}
        requests: dict[str, str] = {}
        if k.gpus:
            limits["nvidia.com/gpu"] = str(k.gpus)
        for resource in ("cpu", "memory"):
            if getattr(k, resource):
                limits[resource] = requests[resource] = getattr(k, resource)
        if limits:
            container["resources"] = {"limits": limits}
        if requests:
            container["resources"]["requests"] = requests
        pod: dict[str, Any] = {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,  # a trial never talks to the API server
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
        }
        node_selector = dict(k.node_selector)
        if k.gpu_type:
            node_selector["nvidia.com/gpu.product"] = k.gpu_type
        if node_selector:
            pod["nodeSelector"] = node_selector
        if k.tolerations:
            pod["tolerations"] = [dict(t) for t in k.tolerations]
        if k.service_account:
            pod["serviceAccountName"] = k.service_account
        mounts: list[dict[str, Any]] = []
        volumes: list[dict[str, Any]] = []
        if k.pvc:
            mounts.append({"name": "work", "mountPath": k.mount_path})
            volumes.append({"name": "work", "persistentVolumeClaim": {"claimName": k.pvc}})
        if not (k.pvc and k.mount_path.rstrip("/") == "/tmp"):  # (the claim is /tmp itself)
            mounts.append({"name": "tmp", "mountPath": "/tmp"})
            volumes.append({"name": "tmp", "emptyDir": {}})
        container["volumeMounts"], pod["volumes"] = mounts, volumes
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": labels,
            "annotations": {"leanfit.io/trial-id": job.spec.trial_id},
        }
        if self.owner is not None:
            metadata["ownerReferences"] = [self.owner]
        spec: dict[str, Any] = {
            "backoffLimit": 0,  # leanfit retries itself, from the last checkpoint
            # a backstop: the timeout is the executor's, from the container's start (a pod
            # waiting for a free GPU was killed as a trial that timed out)
            "activeDeadlineSeconds": math.ceil(self.trial_timeout + QUEUE_SECONDS),
            "template": {"metadata": {"labels": labels}, "spec": pod},
        }
        if k.ttl_seconds_after_finished is not None:
            spec["ttlSecondsAfterFinished"] = k.ttl_seconds_after_finished
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}

    def _job_name(self, job: TrialJob) -> str:
        self._seq += 1
        slug = re.sub(r"[^a-z0-9-]+", "-", job.spec.trial_id.lower()).strip("-")
        return f"lf-{self.search_id}-{self._seq:04d}-{slug}"[:63].rstrip("-")

    # -- the Executor interface -----------------------------------------------------------------

    def free_slots(self) -> int:
        return max(0, self.max_in_flight - len(self._flights) - len(self._ready))

    def running(self) -> list[TrialJob]:
        return [f.job for f in self._flights.values()] + [o.job for o in self._ready]

    def not_started(self) -> int:
        """Jobs whose container has not been seen running (as of the last look at the pods)."""
        return sum(f.running_since is None for f in self._flights.values())

    def submit(self, job: TrialJob) -> None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        if self.free_slots() <= 0:
            raise RuntimeError("no free slot: call submit() only while free_slots() > 0")
        name = self._job_name(job)
        spec_file = self.folder / f"{name}.spec.json"
        result_file = self.folder / f"{name}.result.json"
        _write_atomically(spec_file, json.dumps(job.spec.model_dump()))
        manifest = self.job_manifest(job, name, spec_file, result_file)
        self._flights[name] = _InFlight(job, name, result_file, time.monotonic())
        try:
            self.batch.create_namespaced_job(self.namespace, manifest)
        except ApiException as e:
            del self._flights[name]
            if e.status is not None and 400 <= e.status < 500 and e.status not in (409, 429):
                problem = _api_problem(e, self.namespace, f"creating Job {name}")
                raise KubernetesError(problem) from None
            self._ready.append(_infrastructure(job, name, f"could not create the Job: {e}"))
        except (HTTPError, OSError) as e:
            del self._flights[name]
            self._ready.append(_infrastructure(job, name, f"could not create the Job: {e}"))

    def attach(self, search_run_id: str) -> int:
        """Label this search's Jobs with its MLflow run, and delete the ones an earlier
        controller of it left running (killed with -9, its owner reference gone with it only
        where it ran in a pod): they ran on beside the resumed search's copies of their jobs,
        past max_in_flight, and wrote the same checkpoints."""
        self.search_run = search_run_id
        selector = f"{LABEL_SEARCH_RUN}={label_value(search_run_id)}"
        left = [
            obj["metadata"]["name"]
            for obj in self._list_jobs(selector)[0]
            if (obj["metadata"].get("labels") or {}).get(LABEL_SEARCH) != self.search_id
            and not _job_ended(obj)
        ]
        for name in left:
            self._delete(name)
        return len(left)

    def wait(self, timeout: float | None = None) -> list[JobOutcome]:
        deadline = None if timeout is None else time.monotonic() + timeout
        outcomes, self._ready = self._ready, []
        while True:
            outcomes += self._check_pods()
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                now = time.monotonic()
                if outcomes or (deadline is not None and now >= deadline):
                    return outcomes
                left = None if deadline is None else deadline - now
                if self._flights:
                    until_check = max(0.0, self._next_pod_check - now)
                    left = until_check if left is None else min(left, until_check)
                try:
                    item = self._events.get(timeout=left)
                except queue.Empty:
                    continue
            outcomes += self._apply(item)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for name in list(self._flights):
            self._delete(name)
        self._flights.clear()
        self._stop.set()
        # End the watch's blocking read: shut its socket down (closing the response from this
        # thread would wait for the reader's lock).
        connection = getattr(self._response, "connection", None)
        with contextlib.suppress(OSError, AttributeError):
            connection.sock.shutdown(socket.SHUT_RDWR)
        self._watcher.join(timeout=5)
        if self._owns_client:
            self.api.close()

    # -- what the watch says --------------------------------------------------------------------

    def _apply(self, item: tuple) -> list[JobOutcome]:
        kind = item[0]
        if kind == "fatal":
            raise KubernetesError(item[1])
        if kind == "crash":
            raise RuntimeError("the watch of the search's Jobs stopped") from item[1]
        if kind == "event":
            _, event_type, obj = item
            flight = self._flights.get(obj["metadata"]["name"])
            if flight is None:
                return []  # another search's, or one already reported
            outcome = self._outcome(flight, obj, deleted=event_type == "DELETED")
            return [] if outcome is None else [outcome]
        # a fresh list after 410 Gone: it stands for every event the watch missed
        _, listed_at, jobs = item
        listed = {obj["metadata"]["name"]: obj for obj in jobs}
        outcomes = []
        for name, flight in list(self._flights.items()):
            if name in listed:
                outcome = self._outcome(flight, listed[name], deleted=False)
            elif flight.submitted < listed_at:
                outcome = self._outcome(flight, None, deleted=True)
            else:
                outcome = None  # created after the list was taken
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def _outcome(self, flight: _InFlight, obj: dict | None, deleted: bool) -> JobOutcome | None:
        """The job's outcome if its Job has ended (or is gone), else None."""
        status = (obj or {}).get("status") or {}
        ended = _end_conditions(obj)
        succeeded = "Complete" in ended or bool(status.get("succeeded"))
        if not (succeeded or ended or deleted):
            return None
        del self._flights[flight.name]
        job, name = flight.job, flight.name
        result = read_result(flight.result_path)
        if result is None and succeeded:
            result = _read_result_patiently(flight.result_path)
            if result is None:
                raise KubernetesError(
                    f"executor.kubernetes.pvc: Job {name} succeeded but its result "
                    f"{flight.result_path} is not visible here; mount the claim that holds "
                    f"work_dir at mount_path ({self.settings.mount_path}) in the search pod too"
                )
        if result is not None:
            if result.status != "failed" and result.wall_time > self.trial_timeout:
                # it ran past its timeout between two looks at the pods (every
                # pod_check_interval): timed out, as if it had been seen, and as the local
                # executor does; it was kept (Jobs of 9-15 s under a 5-s timeout)
                return _failed(job, name, self._timed_out())
            return JobOutcome(job, result, infrastructure_failure=False, worker=name)
        failed = ended.get("Failed") or {}
        if failed.get("reason") == "DeadlineExceeded":
            ran = time.monotonic() - flight.running_since if flight.running_since else 0.0
            if ran < self.trial_timeout:  # it waited for a node, or to start, most of the time
                return _infrastructure(
                    job, name, f"the Job's deadline passed after its trial ran {ran:.0f} s of "
                    f"its {self.trial_timeout:.0f} s (it waited for a node, or to start)"
                )  # fmt: skip
            return _failed(job, name, self._timed_out())
        if deleted:
            return _infrastructure(job, name, "the Job was deleted while the trial ran")
        why = f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".strip(": ")
        pod = self._pod_failure(name)
        return _infrastructure(job, name, f"the Job failed without a result ({why}){pod}")

    def _timed_out(self) -> str:  # (the local executor's words: one failure, one text)
        return f"timed out after {self.trial_timeout:g} s (executor.trial_timeout)"

    def _pod_failure(self, name: str) -> str:
        """What happened to a failed Job's pod, as far as the API still knows: reason, exit code,
        the end of its log."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            pods = self._list_pods(f"{LABEL_JOB}={name}")
        except (ApiException, HTTPError, OSError):
            return ""
        parts = []
        for pod in pods:
            pod_name, status = pod["metadata"]["name"], pod.get("status") or {}
            if status.get("reason"):
                parts.append(f"pod {pod_name} {status['reason']}: {status.get('message', '')}")
            for cs in status.get("containerStatuses") or []:
                done = (cs.get("state") or {}).get("terminated")
                if done:
                    ended = done.get("reason", "terminated")
                    parts.append(f"container {ended}, exit code {done.get('exitCode')}")
                    if not status.get("reason") and done.get("exitCode"):
                        parts.append(self._log_tail(pod_name))
        text = "; ".join(p for p in parts if p)
        return f"; {text}" if text else ""

    def _log_tail(self, pod_name: str, lines: int = 20) -> str:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            resp = self.core.read_namespaced_pod_log(
                pod_name, self.namespace, tail_lines=lines, _preload_content=False
            )
            return "log:\n" + resp.data.decode(errors="replace").rstrip()
        except (ApiException, HTTPError, OSError):
            return ""

    def _check_pods(self) -> list[JobOutcome]:
        """Jobs the executor gives up on, as their pods show them (`_given_up`): deleted, with
        their outcomes."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        now = time.monotonic()
        if not self._flights or now < self._next_pod_check:
            return []
        self._next_pod_check = now + self.pod_check_interval
        try:
            pods = self._list_pods(self.selector)
        except (ApiException, HTTPError, OSError):
            return []
        stuck: dict[str, tuple[str, str]] = {}
        running: set[str] = set()
        for pod in pods:
            job_name = (pod["metadata"].get("labels") or {}).get(LABEL_JOB)
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                state = cs.get("state") or {}
                waiting = state.get("waiting") or {}
                if waiting.get("reason") in START_FAILURES:
                    stuck[job_name] = (waiting["reason"], waiting.get("message", ""))
                if state.get("running"):
                    running.add(job_name)
        outcomes = []
        for name, flight in list(self._flights.items()):
            if name in running:
                flight.running_since = flight.running_since or now
            outcome = self._given_up(flight, stuck.get(name), now)
            if outcome is not None:
                self._delete(name)
                del self._flights[name]
                outcomes.append(outcome)
        return outcomes

    def _given_up(
        self, flight: _InFlight, waiting: tuple[str, str] | None, now: float
    ) -> JobOutcome | None:
        """The outcome of a Job given up on, or None: its container ran past the trial's
        timeout (the trial's failure), or has been unable to start (`waiting`: the reason and
        message) for `start_timeout` (an infrastructure failure, retried; the Job itself would
        wait until its deadline), or for a minute where a setting is wrong (not retried)."""
        job, name = flight.job, flight.name
        if flight.running_since and now - flight.running_since > self.trial_timeout:
            return _failed(job, name, self._timed_out())  # from its container's start
        if waiting is None:
            flight.cannot_start_since = None
            return None
        flight.cannot_start_since = flight.cannot_start_since or now
        reason, message = waiting
        setting = reason in CONFIG_FAILURES
        limit = self.settings.start_timeout
        if setting:
            limit = min(limit, CONFIG_GRACE_SECONDS)
        if now - flight.cannot_start_since < limit:
            return None
        why = f"the trial's container could not start ({reason}{': ' * bool(message)}{message})"
        if not setting:
            return _infrastructure(job, name, why)
        if "runAsNonRoot" in message:
            return _failed(
                job, name, f"{why} after {limit:.0f} s; the image {self.settings.image} runs as "
                "root: set executor.kubernetes.run_as_non_root: false, or give the image a "
                "non-root USER (leanfit's images run as 10001)",
            )  # fmt: skip
        # the same for every trial, and every retry: said, not retried
        return _failed(
            job, name, f"{why} after {limit:.0f} s; a setting of executor.kubernetes (its secret, "
            f"image) or the cluster's (a Secret or ConfigMap missing in namespace "
            f"{self.namespace}) needs fixing",
        )  # fmt: skip

    # -- API calls --------------------------------------------------------------------------------

    def _list_jobs(self, selector: str | None = None) -> tuple[list[dict], str]:
        """This search's Jobs (or those `selector` picks) and the resourceVersion of the list
        (all pages)."""
        from kubernetes.client.exceptions import ApiException

        items, token, version = [], None, ""
        try:
            while True:
                resp = self.batch.list_namespaced_job(
                    self.namespace, label_selector=selector or self.selector, limit=500,
                    _continue=token, _preload_content=False,
                )  # fmt: skip
                page = json.loads(resp.data)
                items += page.get("items") or []
                meta = page.get("metadata") or {}
                version = version or meta.get("resourceVersion", "")
                token = meta.get("continue")
                if not token:
                    return items, version
        except ApiException as e:
            if e.status is not None and 400 <= e.status < 500 and e.status != 429:
                raise KubernetesError(_api_problem(e, self.namespace, "listing Jobs")) from None
            raise

    def _list_pods(self, selector: str) -> list[dict]:
        resp = self.core.list_namespaced_pod(
            self.namespace, label_selector=selector, _preload_content=False
        )
        return json.loads(resp.data).get("items") or []

    def _delete(self, name: str) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self.batch.delete_namespaced_job(
                name, self.namespace, body=client.V1DeleteOptions(propagation_policy="Background")
            )
        except ApiException as e:
            if e.status != 404:
                log.warning("could not delete Job %s: %s", name, e)
        except (HTTPError, OSError) as e:
            log.warning("could not delete Job %s: %s", name, e)

    def _watch(self, version: str) -> None:
        """The watch thread: every event of this search's Jobs goes to the queue, in order."""
        try:
            self._follow(version)
        except Exception as e:  # noqa: BLE001 - handed to the search, which stops with it
            if not self._stop.is_set():  # (closing the response under a read raises anything)
                self._events.put(("crash", e))

    def _follow(self, version: str) -> None:
        from kubernetes.client.exceptions import ApiException
        from kubernetes.watch.watch import iter_resp_lines
        from urllib3.exceptions import HTTPError

        failing_since: float | None = None  # since when no watch could be opened
        failures = 0
        while not self._stop.is_set():
            try:
                self._response = self.batch.list_namespaced_job(
                    self.namespace, label_selector=self.selector, watch=True,
                    resource_version=version, allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_SECONDS, _preload_content=False,
                    _request_timeout=(10, WATCH_SECONDS + 30),
                )  # fmt: skip
                if self._stop.is_set():  # closed while it connected: `close` found no response
                    return  # to shut down, and waited 5 s for this thread (each early close)
                failing_since, failures = None, 0
                for line in iter_resp_lines(self._response):
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._events.put(("event", event["type"], obj))
                continue  # the server ended the watch (its timeout): watch on from `version`
            except ApiException as e:
                if self._stop.is_set():
                    return
                if e.status in (401, 403):
                    self._events.put(("fatal", _api_problem(e, self.namespace, "watching Jobs")))
                    return
                if e.status == 410:
                    log.info("the watch of Jobs expired (410 Gone): listing them again")
                    try:
                        listed_at = time.monotonic()
                        jobs, version = self._list_jobs()
                        self._events.put(("listed", listed_at, jobs))
                        continue
                    except KubernetesError as fatal:
                        self._events.put(("fatal", str(fatal)))
                        return
                    except (ApiException, HTTPError, OSError, ValueError):
                        pass  # the next watch from the old version is answered 410 again
            except (HTTPError, OSError, ValueError) as e:
                if self._stop.is_set():
                    return
                log.info("the watch of Jobs dropped (%s): resuming from %s", e, version)
            finally:
                if self._response is not None:
                    with contextlib.suppress(Exception):
                        self._response.release_conn()
            failures += 1
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > API_GRACE_SECONDS:
                message = f"lost the Kubernetes API server for {API_GRACE_SECONDS:.0f} s"
                self._events.put(("fatal", message))
                return
            self._stop.wait(min(30.0, 0.1 * 2 ** min(failures, 9)))


def kubernetes_client():
    """An API client for the pod's service account when in a cluster, else for the kubeconfig."""
    import yaml
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            # $KUBECONFIG as it is now: the client reads it once, when it is first imported
            # (a process whose KUBECONFIG changed since would use the first one's file)
            config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None,
                client_configuration=configuration,
            )
        except (config.ConfigException, OSError, yaml.YAMLError, TypeError, AttributeError) as e:
            # (a kubeconfig that is not YAML, or YAML of another shape: a list where a mapping
            # belongs is a TypeError or an AttributeError)
            raise KubernetesError(
                f"executor.kind: kubernetes needs a cluster: this is not a pod with a service "
                f"account and there is no usable kubeconfig ({' '.join(str(e).split())}); run "
                "the search in the cluster or point KUBECONFIG at one"
            ) from None
    return client.ApiClient(configuration)


def owner_reference(environ: Mapping[str, str], namespace: str) -> dict[str, Any] | None:
    """The search pod as the owner of its Jobs, from the downward API (POD_NAME, POD_UID)."""
    name, uid = environ.get("POD_NAME"), environ.get("POD_UID")
    if not name or not uid:
        return None
    pod_namespace = environ.get("POD_NAMESPACE")
    if pod_namespace and pod_namespace != namespace:
        log.warning(
            "the search pod is in namespace %s, its Jobs in %s: an owner must share the "
            "namespace, so the Jobs get none (close() still deletes the running ones)",
            pod_namespace,
            namespace,
        )
        return None
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}


def job_env(environ: Mapping[str, str], extra: Mapping[str, str], cpu: str | None) -> dict:
    """A trial's environment: MLflow and storage settings forwarded from the search, threads
    matched to the CPU limit (torch would otherwise start one per core of the node), the file's
    `env` last."""
    # (not a value with a password in it, such as MLFLOW_TRACKING_URI=http://user:pw@host from
    # the search pod's Secret: in the Job's spec, anyone who may read Jobs read it; the Secret
    # itself goes to the trial by executor.kubernetes.secret, if it needs one)
    env = {
        name: environ[name]
        for name in FORWARDED_ENV
        if environ.get(name) and hide_password(environ[name]) == environ[name]
    }
    if cpu:
        cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
        env["OMP_NUM_THREADS"] = str(max(1, math.floor(cores)))
    env.update(extra)
    return env


def label_value(text: str) -> str:
    """`text` as a valid label value: at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.")


def _end_conditions(obj: dict | None) -> dict[str, dict]:
    """A Job's Complete or Failed conditions that hold, by type."""
    return {
        c["type"]: c
        for c in ((obj or {}).get("status") or {}).get("conditions") or []
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
    }


def _job_ended(obj: dict) -> bool:
    return bool(_end_conditions(obj)) or bool((obj.get("status") or {}).get("succeeded"))


def _infrastructure(job: TrialJob, name: str, reason: str) -> JobOutcome:
    return JobOutcome(job, TrainResult("failed", reason=reason), True, name)


def _failed(job: TrialJob, name: str, reason: str) -> JobOutcome:
    """The trial's own failure: recorded, not retried."""
    return JobOutcome(job, TrainResult("failed", reason=reason), False, name)


def _read_result_patiently(path: Path) -> TrainResult | None:
    deadline = time.monotonic() + RESULT_GRACE_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.5)
        result = read_result(path)
        if result is not None:
            return result
    return None


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _api_problem(e, namespace: str, doing: str) -> str:
    """What a 4xx answer of the API server means for the user, and the fix."""
    if e.status == 401:
        return (
            f"executor.kubernetes: the API server refused the credentials while {doing} (401); "
            "check the kubeconfig or the search pod's service account"
        )
    if e.status == 403:
        return (
            f"executor.kubernetes.namespace: the search may not do this in namespace "
            f"{namespace!r} ({doing}: 403); grant its service account create, get, list, watch "
            "and delete on jobs and get, list on pods and pods/log there (see manifests/)"
        )
    if e.status == 404:
        return (
            f"executor.kubernetes.namespace: namespace {namespace!r} not found ({doing}); "
            "create it or name an existing one"
        )
    return f"executor.kubernetes: the API server rejected {doing} ({e.status}): {_message(e)}"


def _message(e) -> str:
    try:
        return json.loads(e.body).get("message", e.reason)
    except (TypeError, ValueError):
        return str(e.reason)
