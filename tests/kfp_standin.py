"""A stand-in Kubeflow Pipelines API server: answers the v2beta1 REST calls that the real
`kfp.Client` makes to upload a pipeline and start runs, and records every request it receives.

It keeps experiments, pipelines, versions, runs and recurring runs in memory with generated ids,
and answers as the KFP API server does (snake_case JSON, 404 for unknown ids, 409 for a name that
is taken). Other behaviours stand in for a wrong or troubled host: `not_kfp=True` answers 404 to
everything (a web server that is not KFP), `token="..."` answers 401 to requests without that
bearer token, `multi_user=True` says so in its health answer, and `stall` delays the answers to
some requests.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

API = "/apis/v2beta1"


@dataclass
class Recorded:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    json: Any = None  # the parsed JSON body, when there is one
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # multipart: name -> file

    @property
    def call(self) -> str:
        return f"{self.method} {self.path}"


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message


# gRPC codes the KFP API server puts in its error bodies.
GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6}


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id() -> str:
    return str(uuid.uuid4())


def matches_filter(item: dict, filter_json: str | None) -> bool:
    """The EQUALS predicates of a KFP filter (operation given as the enum's name or number)."""
    if not filter_json:
        return True
    for p in json.loads(filter_json).get("predicates", []):
        if p.get("operation") not in ("EQUALS", 1):
            raise ApiError(400, f"stand-in: unsupported filter operation {p.get('operation')!r}")
        value = p.get("string_value", p.get("stringValue"))
        if item.get(p["key"]) != value:
            return False
    return True


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str, bytes]]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    return {
        part.get_param("name", header="content-disposition"): (
            part.get_filename(),
            part.get_payload(decode=True),
        )
        for part in message.iter_parts()
    }


class KfpStandin:
    """The server; use as a context manager. `requests` lists what it received, in order."""

    def __init__(
        self,
        *,
        not_kfp: bool = False,
        token: str | None = None,
        multi_user: bool = False,
        stall: dict[str, float] | None = None,
    ):
        self.not_kfp = not_kfp
        self.stall = stall or {}  # "METHOD /path" -> seconds to wait before answering
        self.token = token
        self.multi_user = multi_user
        self.requests: list[Recorded] = []
        self.experiments: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> KfpStandin:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def calls(self) -> list[str]:
        """'METHOD /path' of every request, in order."""
        return [r.call for r in self.requests]

    def received(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def handler_class(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.answer()

            def do_POST(self):
                self.answer()

            def do_DELETE(self):
                self.answer()

            def log_message(self, *args):  # keep test output quiet
                pass

            def answer(self):
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                recorded = Recorded(self.command, url.path, query, headers)
                content_type = self.headers.get("Content-Type", "")
                if content_type.startswith("multipart/form-data"):
                    recorded.files = parse_multipart(content_type, body)
                elif body:
                    recorded.json = json.loads(body)
                with standin.lock:
                    standin.requests.append(recorded)
                time.sleep(standin.stall.get(recorded.call, 0))
                with standin.lock:
                    if standin.not_kfp:
                        return self.send(404, b"404 page not found\n", "text/plain")
                    if standin.token and self.headers.get("Authorization") != (
                        f"Bearer {standin.token}"
                    ):
                        return self.send_error_json(401, "Unauthenticated: no valid token")
                    try:
                        status, answer = standin.route(recorded)
                    except ApiError as e:
                        return self.send_error_json(e.status, e.message)
                self.send(status, json.dumps(answer).encode(), "application/json")

            def send_error_json(self, status: int, message: str):
                answer = {"error": message, "code": GRPC_CODES.get(status, 2), "message": message}
                self.send(status, json.dumps(answer).encode(), "application/json")

            def send(self, status: int, data: bytes, content_type: str):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    # --- the API ---------------------------------------------------------------------------

    def route(self, r: Recorded) -> tuple[int, Any]:
        routes = [
            ("GET", r"/healthz", self.healthz),
            ("GET", r"/experiments", self.list_experiments),
            ("POST", r"/experiments", self.create_experiment),
            ("GET", r"/experiments/(?P<id>[^/]+)", self.get_experiment),
            ("GET", r"/pipelines", self.list_pipelines),
            ("POST", r"/pipelines", self.create_pipeline),
            ("POST", r"/pipelines/upload", self.upload_pipeline),
            ("POST", r"/pipelines/upload_version", self.upload_pipeline_version),
            ("GET", r"/pipelines/(?P<id>[^/]+)", self.get_pipeline),
            ("GET", r"/pipelines/(?P<id>[^/]+)/versions", self.list_versions),
            ("GET", r"/pipelines/(?P<id>[^/]+)/versions/(?P<vid>[^/]+)", self.get_version),
            ("POST", r"/runs", self.create_run),
            ("GET", r"/runs/(?P<id>[^/]+)", self.get_run),
            ("POST", r"/recurringruns", self.create_recurring_run),
            ("GET", r"/recurringruns/(?P<id>[^/]+)", self.get_recurring_run),
        ]
        for method, pattern, answer in routes:
            m = re.fullmatch(re.escape(API) + pattern, r.path)
            if m and r.method == method:
                return 200, answer(r, **m.groupdict())
        raise ApiError(404, f"Not Found: {r.method} {r.path}")

    def healthz(self, r: Recorded) -> dict:
        return {"multi_user": self.multi_user, "pipeline_store": "database"}

    def listing(self, key: str, items, r: Recorded) -> dict:
        found = [i for i in items if matches_filter(i, r.query.get("filter"))]
        # Empty repeated fields are left out of the JSON, as protojson does.
        return {key: found, "total_size": len(found)} if found else {}

    def list_experiments(self, r: Recorded) -> dict:
        ns = r.query.get("namespace") or ""
        items = [e for e in self.experiments.values() if e["namespace"] == ns]
        return self.listing("experiments", items, r)

    def create_experiment(self, r: Recorded) -> dict:
        body = r.json or {}
        name, ns = body.get("display_name"), body.get("namespace") or ""
        if not name:
            raise ApiError(400, "Experiment display name is required")
        if any(
            e["display_name"] == name and e["namespace"] == ns for e in self.experiments.values()
        ):
            raise ApiError(409, f"Experiment {name!r} already exists")
        experiment = {
            "experiment_id": new_id(),
            "display_name": name,
            "description": body.get("description") or "",
            "namespace": ns,
            "created_at": now(),
            "storage_state": "AVAILABLE",
        }
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def get_experiment(self, r: Recorded, id: str) -> dict:
        return self.lookup(self.experiments, id, "Experiment")

    def list_pipelines(self, r: Recorded) -> dict:
        ns = r.query.get("namespace") or ""
        items = [p for p in self.pipelines.values() if p["namespace"] == ns]
        return self.listing("pipelines", items, r)

    def new_pipeline(self, name: str, description: str, ns: str) -> dict:
        if not name:
            raise ApiError(400, "Pipeline name is required")
        if any(p["display_name"] == name and p["namespace"] == ns for p in self.pipelines.values()):
            raise ApiError(409, f"Pipeline {name!r} already exists in namespace {ns!r}")
        pipeline = {
            "pipeline_id": new_id(),
            "name": name,
            "display_name": name,
            "description": description,
            "namespace": ns,
            "created_at": now(),
        }
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        return pipeline

    def create_pipeline(self, r: Recorded) -> dict:
        body = r.json or {}
        name = body.get("display_name") or body.get("name")
        return self.new_pipeline(name, body.get("description") or "", body.get("namespace") or "")

    def new_version(self, pipeline_id: str, name: str, description: str, r: Recorded) -> dict:
        if "uploadfile" not in r.files:
            raise ApiError(400, "Failed to read pipeline from file")
        filename, content = r.files["uploadfile"]
        if not re.search(r"\.(ya?ml|zip|tar\.gz|tgz)$", filename or ""):
            raise ApiError(400, f"Unexpected pipeline file format {filename!r}")
        self.lookup(self.pipelines, pipeline_id, "Pipeline")
        if any(
            v["pipeline_id"] == pipeline_id and v["display_name"] == name
            for v in self.versions.values()
        ):
            raise ApiError(409, f"Pipeline version {name!r} already exists")
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": new_id(),
            "name": name,
            "display_name": name,
            "description": description,
            "created_at": now(),
            "pipeline_spec": next(yaml.safe_load_all(content)),
        }
        self.versions[version["pipeline_version_id"]] = version
        return version

    def upload_pipeline(self, r: Recorded) -> dict:
        q = r.query
        name = q.get("display_name") or q.get("name") or (r.files.get("uploadfile") or [""])[0]
        pipeline = self.new_pipeline(name, q.get("description", ""), q.get("namespace", ""))
        self.new_version(pipeline["pipeline_id"], name, q.get("description", ""), r)
        return pipeline

    def upload_pipeline_version(self, r: Recorded) -> dict:
        q = r.query
        if not q.get("pipelineid"):
            raise ApiError(400, "Failed to create a pipeline version: no pipeline id")
        name = q.get("display_name") or q.get("name") or r.files["uploadfile"][0]
        return self.new_version(q["pipelineid"], name, q.get("description", ""), r)

    def get_pipeline(self, r: Recorded, id: str) -> dict:
        return self.lookup(self.pipelines, id, "Pipeline")

    def list_versions(self, r: Recorded, id: str) -> dict:
        self.lookup(self.pipelines, id, "Pipeline")
        items = [v for v in self.versions.values() if v["pipeline_id"] == id]
        if r.query.get("sort_by", "").endswith(" desc"):
            items.reverse()
        return self.listing("pipeline_versions", items, r)

    def get_version(self, r: Recorded, id: str, vid: str) -> dict:
        version = self.lookup(self.versions, vid, "Pipeline version")
        if version["pipeline_id"] != id:
            raise ApiError(404, f"Pipeline version {vid} is not in pipeline {id}")
        return version

    def check_run_body(self, body: dict) -> None:
        self.lookup(self.experiments, body.get("experiment_id", ""), "Experiment")
        ref = body.get("pipeline_version_reference") or {}
        if not body.get("pipeline_spec"):
            self.get_version(None, ref.get("pipeline_id", ""), ref.get("pipeline_version_id", ""))
        if not body.get("display_name"):
            raise ApiError(400, "Run display name is required")

    def create_run(self, r: Recorded) -> dict:
        body = dict(r.json or {})
        self.check_run_body(body)
        run = body | {
            "run_id": new_id(),
            "state": "PENDING",
            "storage_state": "AVAILABLE",
            "created_at": now(),
            "scheduled_at": now(),
        }
        self.runs[run["run_id"]] = run
        return run

    def get_run(self, r: Recorded, id: str) -> dict:
        return self.lookup(self.runs, id, "Run")

    def create_recurring_run(self, r: Recorded) -> dict:
        body = dict(r.json or {})
        self.check_run_body(body)
        trigger = body.get("trigger") or {}
        if not (trigger.get("cron_schedule") or trigger.get("periodic_schedule")):
            raise ApiError(400, "A recurring run needs a trigger")
        recurring = body | {
            "recurring_run_id": new_id(),
            "status": "ENABLED" if body.get("mode") == "ENABLE" else "DISABLED",
            "created_at": now(),
            "updated_at": now(),
        }
        self.recurring_runs[recurring["recurring_run_id"]] = recurring
        return recurring

    def get_recurring_run(self, r: Recorded, id: str) -> dict:
        return self.lookup(self.recurring_runs, id, "Recurring run")

    @staticmethod
    def lookup(table: dict, id: str, what: str) -> dict:
        if id not in table:
            raise ApiError(404, f"{what} {id!r} not found")
        return table[id]
