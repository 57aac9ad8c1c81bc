"""A Kubernetes API server stand-in and a stand-in kubelet, for the Jobs executor's tests.

The real `kubernetes` client talks to it over HTTP (a kubeconfig or a Configuration points at
http://127.0.0.1:PORT, with a bearer token it checks). It serves what the executor uses, the way
the API server does:

- batch/v1 Jobs in a namespace: create (the body is decoded strictly with the client's own V1Job
  model: a misspelt or misplaced field is a 422, as with `kubectl --validate=strict`), also as a
  dry run (`dryRun=All`: checked the same way, not stored), get, list with a labelSelector,
  delete (propagationPolicy: Background and Foreground delete the pods, anything else orphans
  them, which then keep running);
- `watch=true`: newline-delimited JSON events (ADDED, MODIFIED, DELETED) streamed in chunks, each
  object carrying its resourceVersion, resumable from any resourceVersion still in the history,
  a 410 Gone ERROR event for one that is not;
- pods: list with a labelSelector, and their logs (tailLines).

The kubelet thread gives each new Job a pod and really runs its container's command on this
machine (the image's `leanfit` entrypoint is this interpreter's `-m leanfit.cli`), with the Job's
env, envFrom and secretKeyRef from `secrets`; it moves pod and Job through their statuses (active,
then Complete or Failed with the conditions Kubernetes sets) and enforces activeDeadlineSeconds.

A container with `readOnlyRootFilesystem` runs as one would (where this machine allows user and
mount namespaces, `read_only_root_available`): in namespaces of its own, the root filesystem
read-only but for the pod's claim mounts and a fresh tmpfs at each emptyDir mount
(`read_only_root_command`); `sandboxed` counts the pods that ran so.

Test hooks: evict a Job's pod (infrastructure), delete a Job from outside, drop a watch connection
just before a chosen event, answer 410 to the watch after a drop, refuse to pull an image, an
image whose user is root (refused where runAsNonRoot is set, as the kubelet does). It
records every request, every watch (from which resourceVersion, which events it delivered, how it
ended), every deletion, and the most Jobs that were in flight at once.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests import zygote

TOKEN = "stand-in-token"
JobPredicate = Callable[[dict], bool]


def labels_of(obj: dict) -> dict[str, str]:
    return obj.get("metadata", {}).get("labels") or {}


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selectors: k=v, k==v, k!=v, k, !k (comma-separated, all must hold)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = re.split("==?", term, maxsplit=1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def strict_job_problems(body: dict) -> list[str]:
    """Fields the client's V1Job model does not know, or values of the wrong type: what the real
    API server rejects under strict field validation."""
    from kubernetes.client import ApiClient

    class _Response:
        data = json.dumps(body)

    api = ApiClient()
    try:
        decoded = api.sanitize_for_serialization(api.deserialize(_Response(), "V1Job"))
    except (ValueError, TypeError) as e:
        return [str(e)]
    problems: list[str] = []

    def compare(sent: Any, kept: Any, path: str) -> None:
        if isinstance(sent, dict):
            if not isinstance(kept, dict):
                problems.append(f"{path}: expected {type(kept).__name__}, got an object")
                return
            for key, value in sent.items():
                if key not in kept:
                    problems.append(f'{path}.{key}: unknown field "{key}"')
                else:
                    compare(value, kept[key], f"{path}.{key}")
        elif isinstance(sent, list):
            for i, (a, b) in enumerate(zip(sent, kept or [], strict=False)):
                compare(a, b, f"{path}[{i}]")
        elif sent != kept or type(sent) is not type(kept):
            problems.append(f"{path}: {sent!r} is not a valid value (read as {kept!r})")

    compare(body, decoded, "")
    return problems


@dataclass
class WatchRecord:
    """One watch request as the server saw it."""

    resource: str
    resource_version: str | None
    delivered: list[str] = field(default_factory=list)  # resourceVersions of the events sent
    ended: str = "open"  # open, timeout, dropped, gone, stopped


@dataclass
class _Hook:
    predicate: Callable
    after: float = 0.0
    fired: str | None = None  # the Job it fired on


@dataclass
class _Process:
    popen: subprocess.Popen
    started: float
    log: Path


# Where the read-only root's wrapper keeps the claim's folders while it mounts /tmp over them: a
# folder that every Linux has (the first that exists), covered by a tmpfs in the namespace only.
_HOLDS = ("/mnt", "/media", "/srv", "/opt")


def read_only_root_command(
    command: list[str], writable: list[str], scratch: list[str], keep: tuple[str, ...] = ()
):
    """`command` as a container with `readOnlyRootFilesystem: true` runs it: in a user and mount
    namespace of its own (`unshare`, as root there, which gives no right outside it), the root
    filesystem read-only, each `scratch` folder a fresh empty tmpfs (an emptyDir), each
    `writable` folder (a claim's mount) as it is, over them where nested. `keep`: the image's
    own files (here: this interpreter, its environment, the checkout), kept visible, read-only,
    where a scratch folder would hide them (a checkout under /tmp, as a CI's may be: its
    .venv's python was "not found"). The command keeps its pid (`unshare` and the shell exec
    it)."""
    hold = next(h for h in _HOLDS if os.path.isdir(h))
    q = shlex.quote
    hidden = [k for k in keep if any(k == s or k.startswith(s.rstrip("/") + "/") for s in scratch)]
    bound = [*writable, *hidden]
    lines = ["set -e", f"mount -t tmpfs leanfit-hold {hold}"]
    for i, path in enumerate(bound):
        lines += [f"mkdir {hold}/{i}", f"mount --rbind {q(path)} {hold}/{i}"]
    lines += [f"mount -t tmpfs emptydir {q(path)}" for path in scratch]
    for i, path in enumerate(bound):
        lines += [f"mkdir -p {q(path)}", f"mount --rbind {hold}/{i} {q(path)}"]
    lines += [f"mount -o remount,bind,ro {q(path)}" for path in hidden]
    lines += [f"umount -R {hold}", "mount -o remount,bind,ro /", 'exec "$@"']
    unshare = shutil.which("unshare") or "unshare"
    return [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", "\n".join(lines), "sh",
            *command]  # fmt: skip


def image_files(env: dict[str, str]) -> tuple[str, ...]:
    """What a trial pod's "image" is here: this interpreter and its environment, the checkout,
    and what the pod's PYTHONPATH names (absolute, existing folders)."""
    root = Path(__file__).resolve().parents[1]
    paths = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths |= {str(root), *env.get("PYTHONPATH", "").split(os.pathsep)}
    return tuple(sorted(p for p in paths if p and os.path.isabs(p) and os.path.isdir(p)))


_available: list[bool] = []


def read_only_root_available() -> bool:
    """Whether this machine lets `read_only_root_command` run (user namespaces may be off)."""
    if not _available:
        ok = shutil.which("unshare") is not None and any(os.path.isdir(h) for h in _HOLDS)
        if ok:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                done = subprocess.run(
                    read_only_root_command(["true"], [], ["/tmp"]), capture_output=True,
                    timeout=30,
                )  # fmt: skip
                ok = done.returncode == 0
        _available.append(ok)
    return _available[0]


class KubeStandIn:
    """The API server stand-in and its kubelet; `start()` it, point a client at `host`."""

    def __init__(self, root: Path, namespaces: tuple[str, ...] = ("leanfit",)):
        self.root = Path(root)
        self.namespaces = set(namespaces)
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.unpullable_images: set[str] = set()
        self.root_images: set[str] = set()  # images whose user is root (runAsNonRoot refuses)
        self.sandboxed = 0  # pods run with a read-only root filesystem
        self._cond = threading.Condition()
        self._rv = 100
        self._history: list[tuple[int, str, str, str, dict]] = []  # rv, resource, ns, type, obj
        self.jobs: dict[tuple[str, str], dict] = {}
        self.pods: dict[tuple[str, str], dict] = {}
        self._pod_of_job: dict[tuple[str, str], tuple[str, str]] = {}
        self._processes: dict[tuple[str, str], _Process] = {}  # by pod
        # what happened
        self.created: list[dict] = []  # every Job as it was posted
        self.dry_runs: list[dict] = []  # every Job posted with dryRun=All (never created)
        self.requests: list[tuple[str, str, dict]] = []  # method, path, query
        self.watches: list[WatchRecord] = []
        self.list_versions: list[str] = []  # the resourceVersion of every Job list served
        self.deletions: list[tuple[str, str | None]] = []  # Job name, propagationPolicy
        self.max_in_flight = 0
        # hooks
        self._evictions: list[_Hook] = []
        self._outside_deletions: list[_Hook] = []
        self._drops: list[tuple[_Hook, bool]] = []  # (before which event, answer 410 after)
        self._gone_next_watch = 0
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # -- life -------------------------------------------------------------------------------------

    def start(self) -> KubeStandIn:
        handler = type("Handler", (_Handler,), {"kube": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        for target, name in ((self._server.serve_forever, "api"), (self._kubelet, "kubelet")):
            thread = threading.Thread(target=target, name=f"standin-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
            for process in self._processes.values():
                _kill(process.popen)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def write_kubeconfig(self, path: Path, namespace: str = "leanfit") -> str:
        import yaml

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.host}}],
            "users": [{"name": "stand-in", "user": {"token": TOKEN}}],
            "contexts": [
                {
                    "name": "stand-in",
                    "context": {"cluster": "stand-in", "user": "stand-in", "namespace": namespace},
                }
            ],
            "current-context": "stand-in",
        }
        Path(path).write_text(yaml.safe_dump(config))
        return str(path)

    def api_client(self, token: str = TOKEN):
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.host
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(configuration)

    # -- hooks --------------------------------------------------------------------------------

    def evict_once(self, predicate: JobPredicate, after: float = 0.5) -> _Hook:
        """The first running Job matching `predicate`: its pod is evicted `after` seconds in."""
        hook = _Hook(predicate, after)
        self._evictions.append(hook)
        return hook

    def delete_once(self, predicate: JobPredicate, after: float = 0.5) -> _Hook:
        """The first running Job matching `predicate` is deleted from outside, as with kubectl."""
        hook = _Hook(predicate, after)
        self._outside_deletions.append(hook)
        return hook

    def drop_watch_once(self, before: Callable[[str, dict], bool], then_gone: bool = False):
        """Close the first Job watch that is about to send an event matching `before(type, obj)`,
        without sending it; with `then_gone`, the next watch request is answered 410 Gone."""
        hook = _Hook(before)
        self._drops.append((hook, then_gone))
        return hook

    # -- what happened ----------------------------------------------------------------------------

    def in_flight(self) -> list[str]:
        with self._cond:
            return [name for (_, name), job in self.jobs.items() if not _ended(job)]

    def running_processes(self) -> int:
        with self._cond:
            return sum(1 for p in self._processes.values() if p.popen.poll() is None)

    # -- the store (call with self._cond held) ------------------------------------------------

    def _event(self, resource: str, namespace: str, kind: str, obj: dict) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._history.append((self._rv, resource, namespace, kind, copy.deepcopy(obj)))
        self._cond.notify_all()

    def _count_in_flight(self) -> None:
        active = sum(1 for job in self.jobs.values() if not _ended(job))
        self.max_in_flight = max(self.max_in_flight, active)

    def create_job(self, namespace: str, body: dict, dry_run: bool = False) -> tuple[int, dict]:
        """POST a Job; `dry_run` (`?dryRun=All`) checks it as a create would, stores nothing."""
        if namespace not in self.namespaces:
            return 404, status_body(404, "NotFound", f'namespaces "{namespace}" not found')
        problems = strict_job_problems(body)
        if body.get("apiVersion") != "batch/v1" or body.get("kind") != "Job":
            problems.append("apiVersion/kind: want batch/v1 Job")
        name = (body.get("metadata") or {}).get("name")
        if not name:
            problems.append("metadata.name: Required value")
        if problems:
            message = f'Job.batch "{name}" is invalid: ' + "; ".join(problems)
            return 422, status_body(422, "Invalid", message)
        with self._cond:
            if (namespace, name) in self.jobs:
                return 409, status_body(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
            if dry_run:
                self.dry_runs.append(copy.deepcopy(body))
                return 201, copy.deepcopy(body)
            self.created.append(copy.deepcopy(body))
            job = copy.deepcopy(body)
            job["metadata"].update(
                namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now_iso()
            )
            job["status"] = {}
            self.jobs[(namespace, name)] = job
            self._event("jobs", namespace, "ADDED", job)
            self._count_in_flight()
            return 201, copy.deepcopy(job)

    def delete_job(self, namespace: str, name: str, policy: str | None) -> tuple[int, dict]:
        with self._cond:
            job = self.jobs.pop((namespace, name), None)
            if job is None:
                return 404, status_body(404, "NotFound", f'jobs.batch "{name}" not found')
            self.deletions.append((name, policy))
            self._event("jobs", namespace, "DELETED", job)
            pod_key = self._pod_of_job.pop((namespace, name), None)
            if pod_key is not None and policy in ("Background", "Foreground"):
                process = self._processes.pop(pod_key, None)
                if process is not None:
                    _kill(process.popen)
                pod = self.pods.pop(pod_key, None)
                if pod is not None:
                    self._event("pods", namespace, "DELETED", pod)
            return 200, status_body(200, "", "") | {"status": "Success", "code": 200}

    def list_objects(self, resource: str, namespace: str, selector: str) -> dict:
        with self._cond:
            store = self.jobs if resource == "jobs" else self.pods
            items = [
                copy.deepcopy(obj)
                for (ns, _), obj in store.items()
                if ns == namespace and selector_matches(selector, labels_of(obj))
            ]
            version = str(self._rv)
            if resource == "jobs":
                self.list_versions.append(version)
        kind = "JobList" if resource == "jobs" else "PodList"
        api_version = "batch/v1" if resource == "jobs" else "v1"
        return {
            "kind": kind,
            "apiVersion": api_version,
            "metadata": {"resourceVersion": version},
            "items": items,
        }

    # -- watch --------------------------------------------------------------------------------

    def serve_watch(self, handler: _Handler, resource: str, namespace: str, query: dict) -> None:
        selector = query.get("labelSelector", "")
        since = query.get("resourceVersion") or None
        timeout = float(query.get("timeoutSeconds") or 1800)
        record = WatchRecord(resource, since)
        with self._cond:
            self.watches.append(record)
            gone = resource == "jobs" and self._gone_next_watch > 0
            if gone:
                self._gone_next_watch -= 1
        handler.start_chunked()
        if gone:
            message = f"too old resource version: {since} ({self._rv})"
            error = {"type": "ERROR", "object": status_body(410, "Expired", message)}
            handler.send_chunk(json.dumps(error) + "\n")
            handler.end_chunked()
            record.ended = "gone"
            return
        with self._cond:
            if since in (None, "0"):  # start from now, with the current state as ADDED events
                position = len(self._history)
                store = self.jobs if resource == "jobs" else self.pods
                pending = [
                    ("ADDED", copy.deepcopy(obj))
                    for (ns, _), obj in store.items()
                    if ns == namespace and selector_matches(selector, labels_of(obj))
                ]
            else:
                position = sum(1 for rv, *_ in self._history if rv <= int(since))
                pending = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                for kind, obj in pending:
                    if resource == "jobs" and self._drop_before(kind, obj):
                        handler.drop_connection()
                        record.ended = "dropped"
                        return
                    handler.send_chunk(json.dumps({"type": kind, "object": obj}) + "\n")
                    record.delivered.append(obj["metadata"]["resourceVersion"])
                with self._cond:
                    while position >= len(self._history) and not self._stop.is_set():
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(min(left, 0.5))
                    if self._stop.is_set():
                        record.ended = "stopped"
                        handler.drop_connection()
                        return
                    if position >= len(self._history):
                        record.ended = "timeout"
                        handler.end_chunked()
                        return
                    pending = [
                        (kind, obj)
                        for _, res, ns, kind, obj in self._history[position:]
                        if res == resource
                        and ns == namespace
                        and selector_matches(selector, labels_of(obj))
                    ]
                    position = len(self._history)
        except OSError:  # the client went away
            record.ended = "closed by client"

    def _drop_before(self, kind: str, obj: dict) -> bool:
        with self._cond:
            for hook, then_gone in self._drops:
                if hook.fired is None and hook.predicate(kind, obj):
                    hook.fired = obj["metadata"]["name"]
                    if then_gone:
                        self._gone_next_watch += 1
                    return True
        return False

    # -- the kubelet --------------------------------------------------------------------------

    def _kubelet(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                for key, job in list(self.jobs.items()):
                    if key not in self._pod_of_job and not _ended(job):
                        self._start_pod(key, job)
                for pod_key, process in list(self._processes.items()):
                    self._tend(pod_key, process)
            time.sleep(0.05)

    def _start_pod(self, job_key: tuple[str, str], job: dict) -> None:
        namespace, job_name = job_key
        template = job["spec"]["template"]
        container = template["spec"]["containers"][0]
        pod_name = f"{job_name}-{uuid.uuid4().hex[:5]}"
        labels = {**(template.get("metadata") or {}).get("labels", {}), "job-name": job_name}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": namespace, "labels": labels},
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Pending"},
        }
        pod_key = (namespace, pod_name)
        self.pods[pod_key] = pod
        self._pod_of_job[job_key] = pod_key
        job["status"].update(active=1, startTime=now_iso(), ready=0)
        self._event("jobs", namespace, "MODIFIED", job)
        env, missing = self._container_env(namespace, pod_name, container)
        waiting = None
        if container["image"] in self.unpullable_images:
            waiting = {
                "reason": "ErrImagePull",
                "message": f'failed to pull image "{container["image"]}": not found',
            }
        elif missing:
            waiting = {"reason": "CreateContainerConfigError", "message": missing}
        elif container["image"] in self.root_images and _non_root(template["spec"], container):
            waiting = {
                "reason": "CreateContainerConfigError",
                "message": "container has runAsNonRoot and image will run as root "
                f'(pod: "{pod_name}_{namespace}", container: {container["name"]})',
            }
        if waiting is not None:
            pod["status"]["containerStatuses"] = [
                {"name": container["name"], "ready": False, "state": {"waiting": waiting}}
            ]
            self._event("pods", namespace, "ADDED", pod)
            return
        command = list(container.get("command") or []) + list(container.get("args") or [])
        if command and command[0] == "leanfit":
            command = [sys.executable, "-m", "leanfit.cli", *command[1:]]
        log = self.root / "pods" / f"{pod_name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cwd = Path(container.get("workingDir") or self.root / "pods" / pod_name)
        cwd.mkdir(parents=True, exist_ok=True)
        read_only = (container.get("securityContext") or {}).get("readOnlyRootFilesystem")
        if read_only and read_only_root_available():
            volumes = {v["name"]: v for v in template["spec"].get("volumes") or []}
            mounts = container.get("volumeMounts") or []
            kinds = {m["mountPath"]: volumes.get(m["name"], {}) for m in mounts}
            command = read_only_root_command(
                command,
                writable=[p for p, v in kinds.items() if "persistentVolumeClaim" in v],
                scratch=[p for p, v in kinds.items() if "emptyDir" in v],
                keep=image_files(env),
            )
            self.sandboxed += 1
        with open(log, "wb") as out:
            # (`leanfit trial`, forked by the tests' zygote where it runs as it is: see
            # tests.zygote)
            popen = zygote.popen(
                command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self._processes[pod_key] = _Process(popen, time.monotonic(), log)
        pod["status"].update(
            phase="Running",
            startTime=now_iso(),
            containerStatuses=[
                {
                    "name": container["name"],
                    "ready": True,
                    "state": {"running": {"startedAt": now_iso()}},
                }
            ],
        )
        self._event("pods", namespace, "ADDED", pod)
        job["status"]["ready"] = 1
        self._event("jobs", namespace, "MODIFIED", job)

    def _container_env(self, namespace: str, pod_name: str, container: dict):
        # (OMP_WAIT_POLICY: how tests/conftest.py has every process of the tests' threads wait)
        kept = ("PATH", "HOME", "LANG", "TMPDIR", "OMP_WAIT_POLICY", "PYTHONPATH")
        base = {k: os.environ[k] for k in kept if k in os.environ}
        env = dict(base)
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef")
            if ref is None:
                continue
            secret = self.secrets.get((namespace, ref["name"]))
            if secret is None:
                if not ref.get("optional"):
                    return env, f'secret "{ref["name"]}" not found'
                continue
            env.update(secret)
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
                continue
            source = var.get("valueFrom") or {}
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self.secrets.get((namespace, ref["name"]))
                if secret is None or ref["key"] not in secret:
                    return env, f'secret "{ref["name"]}" has no key "{ref["key"]}"'
                env[var["name"]] = secret[ref["key"]]
            elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[var["name"]] = pod_name
        return env, None

    def _tend(self, pod_key: tuple[str, str], process: _Process) -> None:
        namespace, pod_name = pod_key
        pod = self.pods[pod_key]
        job_name = labels_of(pod)["job-name"]
        job = self.jobs.get((namespace, job_name))
        running_for = time.monotonic() - process.started
        code = process.popen.poll()
        if job is None:  # deleted with its pods orphaned: the process runs on, unwatched
            return
        deadline = job["spec"].get("activeDeadlineSeconds")
        if code is None and deadline is not None and running_for > deadline:
            _kill(process.popen)
            self._end(pod_key, job, code=137, pod_reason="DeadlineExceeded",
                      job_reason=("DeadlineExceeded", "Job was active longer than specified "
                                  "deadline"))  # fmt: skip
            return
        for hook in self._evictions:
            due = hook.fired is None and code is None and running_for >= hook.after
            if due and hook.predicate(job):
                hook.fired = job_name
                _kill(process.popen)
                message = "The node was low on resource: memory."
                self._end(pod_key, job, code=137, pod_reason="Evicted", pod_message=message)
                return
        for hook in self._outside_deletions:
            due = hook.fired is None and code is None and running_for >= hook.after
            if due and hook.predicate(job):
                hook.fired = job_name
                self.delete_job(namespace, job_name, "Background")  # the lock is re-entrant
                return
        if code is not None:
            self._end(pod_key, job, code=code)

    def _end(self, pod_key, job, code: int, pod_reason=None, pod_message="", job_reason=None):
        namespace, _ = pod_key
        del self._processes[pod_key]
        pod = self.pods[pod_key]
        succeeded = code == 0 and pod_reason is None
        terminated = {
            "exitCode": code,
            "reason": "Completed" if succeeded else ("Error" if pod_reason is None else "Killed"),
            "finishedAt": now_iso(),
        }
        pod["status"]["phase"] = "Succeeded" if succeeded else "Failed"
        pod["status"]["containerStatuses"][0].update(ready=False, state={"terminated": terminated})
        if pod_reason is not None:
            pod["status"].update(reason=pod_reason, message=pod_message)
        if pod_reason == "Evicted":
            pod["status"]["conditions"] = [
                {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}
            ]
        self._event("pods", namespace, "MODIFIED", pod)
        status = job["status"]
        status.update(active=0, ready=0)
        if succeeded:
            status.update(succeeded=1, completionTime=now_iso())
            conditions = [("SuccessCriteriaMet", "CompletionsReached", ""), ("Complete", "", "")]
        else:
            status["failed"] = 1
            reason, message = job_reason or (
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
            conditions = [("FailureTarget", reason, message), ("Failed", reason, message)]
        status["conditions"] = [
            {
                "type": t,
                "status": "True",
                "reason": r,
                "message": m,
                "lastTransitionTime": now_iso(),
            }
            for t, r, m in conditions
        ]
        self._event("jobs", namespace, "MODIFIED", job)


def _non_root(pod_spec: dict, container: dict) -> bool:
    """runAsNonRoot as the kubelet reads it: the container's, else the pod's."""
    own = (container.get("securityContext") or {}).get("runAsNonRoot")
    return bool(
        own if own is not None else (pod_spec.get("securityContext") or {}).get("runAsNonRoot")
    )


def _ended(job: dict) -> bool:
    return any(
        c["type"] in ("Complete", "Failed") and c["status"] == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _kill(popen: subprocess.Popen) -> None:
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=10)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    kube: KubeStandIn

    def log_message(self, *args) -> None:  # quiet
        pass

    # -- responses ----------------------------------------------------------------------------

    def send_json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def send_chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def drop_connection(self) -> None:
        """Gone mid-stream, without the closing chunk: what a dying proxy or API server does."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- routes -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        kube = self.kube
        kube.requests.append((method, url.path, query))
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else {}
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_json(401, status_body(401, "Unauthorized", "Unauthorized"))
            return
        jobs = re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?", url.path)
        pods = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods(?:/([^/]+)/log)?", url.path)
        watch = query.get("watch", "").lower() in ("true", "1")  # ParseBool, as the server
        if jobs and method == "POST" and not jobs.group(2):
            dry_run = query.get("dryRun") == "All"
            self.send_json(*kube.create_job(jobs.group(1), body, dry_run=dry_run))
        elif jobs and method == "GET" and not jobs.group(2):
            if watch:
                kube.serve_watch(self, "jobs", jobs.group(1), query)
            else:
                self.send_json(
                    200, kube.list_objects("jobs", jobs.group(1), query.get("labelSelector", ""))
                )
        elif jobs and method == "GET":
            with kube._cond:
                job = kube.jobs.get((jobs.group(1), jobs.group(2)))
                job = copy.deepcopy(job)
            if job is None:
                self.send_json(
                    404, status_body(404, "NotFound", f'jobs.batch "{jobs.group(2)}" not found')
                )
            else:
                self.send_json(200, job)
        elif jobs and method == "DELETE":
            policy = body.get("propagationPolicy") or query.get("propagationPolicy")
            self.send_json(*kube.delete_job(jobs.group(1), jobs.group(2), policy))
        elif pods and method == "GET" and pods.group(2):
            self._send_log(pods.group(1), pods.group(2), query)
        elif pods and method == "GET":
            if watch:
                kube.serve_watch(self, "pods", pods.group(1), query)
            else:
                self.send_json(
                    200, kube.list_objects("pods", pods.group(1), query.get("labelSelector", ""))
                )
        else:
            self.send_json(
                404, status_body(404, "NotFound", f"the server could not find {url.path}")
            )

    def _send_log(self, namespace: str, pod_name: str, query: dict) -> None:
        log = self.kube.root / "pods" / f"{pod_name}.log"
        if (namespace, pod_name) not in self.kube.pods or not log.exists():
            self.send_json(404, status_body(404, "NotFound", f'pods "{pod_name}" not found'))
            return
        lines = log.read_text(errors="replace").splitlines()
        if query.get("tailLines"):
            lines = lines[-int(query["tailLines"]) :]
        data = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
