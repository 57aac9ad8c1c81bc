"""Submission of a compiled pipeline to a Kubeflow Pipelines host: a one-off run or a recurring run.

`submit_pipeline` talks to the host with the real `kfp.Client`. It gets or creates the experiment,
gets or creates the pipeline by name, uploads the package as a version named after its content
(`{pipeline_name}-{sha256[:12]}`, so submitting the same package again reuses that version), then
starts a run or creates a recurring run of that version with the pipeline's arguments.

Everything the user gives is checked before the host is contacted, and every failure the user can
cause (a wrong address, missing credentials, a host that is not KFP, a bad package, argument or
cron schedule) ends in a `LeanfitError` that names the input and the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from leanfit.errors import LeanfitError

API = "/apis/v2beta1"
PORT_FORWARD_HINT = (
    "e.g. http://localhost:8080 after `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`"
)
TOKEN_HINT = (
    "pass an access token with --token or $KFP_TOKEN (in multi-user Kubeflow, e.g. from "
    "`kubectl create token default-editor -n NAMESPACE --audience pipelines.kubeflow.org`)"
)
CRON_HINT = (
    "give a cron schedule with seconds, e.g. '0 0 3 * * *' (every day at 03:00:00), "
    "or the 5 standard fields, e.g. '0 3 * * *'"
)


@dataclass
class Submission:
    """What was created on the host, and where to look at it."""

    host: str
    experiment_id: str
    pipeline_id: str | None
    pipeline_version_id: str | None
    run_id: str | None  # a one-off run
    recurring_run_id: str | None  # a recurring run
    url: str  # where to look at it in the KFP UI


def submit_pipeline(
    package: Path,
    host: str,
    *,
    pipeline_name: str,
    experiment: str,
    arguments: dict[str, Any],
    run_name: str,
    recurring_cron: str | None = None,
    namespace: str | None = None,
    existing_token: str | None = None,
    timeout: float = 30,
    option: str = "--host",
) -> Submission:
    """Upload `package` (a compiled pipeline YAML) to the KFP at `host` and run it.

    A one-off run starts now; with `recurring_cron` (6 fields with seconds, or 5 standard ones) a
    recurring run is created instead (one run at a time, no catch-up of missed times).
    `namespace` is the Kubeflow profile on a multi-user host; `existing_token` a bearer token.
    Each request waits at most `timeout` seconds for the host. `option`: how the user gave the
    host (`leanfit submit --host`, `leanfit watch --submit`), for the messages.
    """
    host = checked_host(host, option)
    if not pipeline_name.strip():
        raise LeanfitError("pipeline name: must not be empty; give the name to upload it under")
    package = Path(package)
    content = package.read_bytes() if package.is_file() else None
    spec = read_pipeline_spec(package, content)
    check_arguments(spec, arguments)
    cron = kfp_cron(recurring_cron) if recurring_cron is not None else None

    api = KfpHost(host, existing_token, timeout, option)
    health = api.health()
    sha = hashlib.sha256(content).hexdigest()
    with quiet_kfp():
        client = api.connect(namespace)
        namespace = namespace or client.get_user_namespace() or None
        if health.get("multi_user") and not namespace:
            raise LeanfitError(
                f"{option} {host}: this Kubeflow Pipelines is multi-user; give the namespace "
                "(your Kubeflow profile) to submit into"
            )
        experiment_id = api.call(
            f"create experiment {experiment!r}",
            lambda: client.create_experiment(name=experiment, namespace=namespace),
        ).experiment_id
        pipeline_id = get_or_create_pipeline(api, client, pipeline_name, namespace)
        version_name = f"{pipeline_name}-{sha[:12]}"
        version_id = get_or_upload_version(api, client, package, pipeline_id, version_name, sha)
        run_spec = {"pipeline_id": pipeline_id, "version_id": version_id, "params": arguments}
        if cron is None:
            run_id = api.call(
                f"start run {run_name!r}",
                lambda: client.run_pipeline(experiment_id, run_name, **run_spec),
            ).run_id
            recurring_run_id = None
            url = f"{host}/#/runs/details/{run_id}"
        else:
            run_id = None
            recurring_run_id = api.call(
                f"create recurring run {run_name!r}",
                lambda: client.create_recurring_run(
                    experiment_id,
                    run_name,
                    cron_expression=cron,
                    max_concurrency=1,
                    no_catchup=True,
                    **run_spec,
                ),
            ).recurring_run_id
            url = f"{host}/#/recurringrun/details/{recurring_run_id}"
    return Submission(host, experiment_id, pipeline_id, version_id, run_id, recurring_run_id, url)


# --- the inputs, checked before anything is sent ---------------------------------------------


def checked_host(host: str, option: str = "--host") -> str:
    """The API's URL from `host`: the page of the KFP UI's address bar (`.../#/pipelines`)
    is left out, as the API's requests would have been sent to the page (they all went to `/`).
    Credentials in the URL are refused without being repeated: none would be sent."""
    from urllib.parse import urlsplit

    if not re.match(r"https?://[^/\s]+", host):
        raise LeanfitError(
            f"{option} {host!r}: give the URL of the Kubeflow Pipelines API with its scheme, "
            f"{PORT_FORWARD_HINT}"
        )
    parts = urlsplit(host)
    if parts.username is not None or parts.password is not None:
        shown = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
        raise LeanfitError(
            f"{option}: {shown} is given with a user name or password in it, which is not sent; "
            f"give the address alone and {TOKEN_HINT}"
        )
    return parts._replace(query="", fragment="").geturl().rstrip("/")


def read_pipeline_spec(package: Path, content: bytes | None) -> dict:
    """The pipeline spec (the first YAML document) of a compiled pipeline package."""
    if content is None:
        raise LeanfitError(
            f"pipeline package {str(package)!r} does not exist; check the path "
            "(`leanfit compile` writes one)"
        )
    if package.suffix not in (".yaml", ".yml"):
        raise LeanfitError(
            f"pipeline package {str(package)!r}: must be a compiled pipeline YAML file (.yaml)"
        )
    try:
        spec = next(yaml.safe_load_all(content), None)
    except yaml.YAMLError as e:
        raise LeanfitError(f"pipeline package {str(package)!r} is not valid YAML: {e}") from None
    if not isinstance(spec, dict) or "pipelineInfo" not in spec or "root" not in spec:
        raise LeanfitError(
            f"pipeline package {str(package)!r} is not a compiled Kubeflow pipeline "
            "(no pipelineInfo and root); compile it with `leanfit compile`"
        )
    return spec


# The Python types a pipeline parameter of each KFP type accepts.
PARAMETER_TYPES = {
    "STRING": (str,),
    "NUMBER_INTEGER": (int,),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,),
    "LIST": (list, tuple),
    "STRUCT": (dict,),
}


def check_arguments(spec: dict, arguments: dict[str, Any]) -> None:
    """Each argument is a parameter of the pipeline, of its type; no required one is missing."""
    name = spec["pipelineInfo"].get("name", "?")
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    known = ", ".join(sorted(parameters)) or "none"
    for key, value in arguments.items():
        if key not in parameters:
            raise LeanfitError(
                f"pipeline argument {key!r}: pipeline {name!r} has no such parameter; "
                f"its parameters: {known}"
            )
        kind = parameters[key].get("parameterType", "STRING")
        accepted = PARAMETER_TYPES.get(kind, (object,))
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
            raise LeanfitError(
                f"pipeline argument {key!r}: {value!r} is not a {kind.lower().replace('_', ' ')}"
            )
    missing = [
        key
        for key, p in parameters.items()
        if key not in arguments and "defaultValue" not in p and not p.get("isOptional")
    ]
    if missing:
        raise LeanfitError(
            f"pipeline arguments: pipeline {name!r} needs a value for {', '.join(missing)}"
        )


MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# Each cron field: its name, lowest and highest value, and the names it accepts for values.
CRON_FIELDS = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 6, WEEKDAYS),
)


def kfp_cron(expression: str) -> str:
    """The cron schedule as KFP reads it: 6 fields, seconds first.

    5 standard fields (minute hour day-of-month month day-of-week) get a seconds field of 0: KFP
    would otherwise read them as seconds, minutes, hours, day of month and month.
    """
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        problem = (
            "descriptors such as @daily are not accepted"
            if expression.strip().startswith("@")
            else f"has {len(fields)} field{'' if len(fields) == 1 else 's'}, not 6 or 5"
        )
        raise LeanfitError(f"--recurring {expression!r}: {problem}; {CRON_HINT}")
    for value, (name, lowest, highest, names) in zip(fields, CRON_FIELDS, strict=True):
        problem = cron_field_problem(value, lowest, highest, names)
        if problem:
            raise LeanfitError(
                f"--recurring {expression!r}: {name} field {value!r}: {problem}; {CRON_HINT}"
            )
    if fields[5] in ("*", "?") and not any(
        day <= DAYS_IN_MONTH[month - 1]
        for day in cron_field_values(fields[3], 1, 31, ())
        for month in cron_field_values(fields[4], 1, 12, MONTHS)
    ):  # (a day of the week given as well is either's day: cron ORs the two)
        raise LeanfitError(
            f"--recurring {expression!r}: no month has that day of the month ({fields[3]} in "
            f"{fields[4]}), so it would never run; {CRON_HINT}"
        )
    return " ".join(fields)


DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February 29th: leap years


def cron_field_values(value: str, lowest: int, highest: int, names: tuple[str, ...]) -> set[int]:
    """The numbers a well-formed cron field stands for (`cron_field_problem` found none)."""
    values: set[int] = set()
    for item in value.split(","):
        span, _, step = item.partition("/")
        if span in ("*", "?"):
            first, last = lowest, highest
        else:
            bounds = [cron_bound(b, lowest, names) for b in span.split("-")]
            first, last = bounds[0], bounds[-1] if len(bounds) == 2 or not step else highest
        values.update(range(first, last + 1, int(step or 1)))
    return values


def cron_bound(text: str, lowest: int, names: tuple[str, ...]) -> int | None:
    """One end of a cron range as a number (a month's or weekday's name counted from `lowest`);
    None where it is neither."""
    if text.upper() in names:
        return names.index(text.upper()) + lowest
    return int(text) if text.isascii() and text.isdigit() else None  # (not ３, which int takes)


def cron_field_problem(value: str, lowest: int, highest: int, names: tuple[str, ...]) -> str:
    """Why one cron field is malformed ('' when it is not): a list of N, N-M, * or ?, each
    optionally with /STEP."""
    for item in value.split(","):
        m = re.fullmatch(r"(\*|\?|\w+(?:-\w+)?)(?:/([0-9]+))?", item)  # (not /３)
        if not m:
            return f"{item!r} is not N, N-M, * or ?, optionally followed by /STEP"
        span, step = m.groups()
        if step is not None and int(step) == 0:
            return "a step must be at least 1"
        if span in ("*", "?"):
            continue
        bounds = []
        for bound in span.split("-"):
            number = cron_bound(bound, lowest, names)
            if number is None:
                return f"{bound!r} is not a number" + (f" or a name ({names[0]}…)" if names else "")
            bounds.append(number)
            if not lowest <= bounds[-1] <= highest:
                return f"{bound} is outside {lowest}-{highest}"
        if bounds != sorted(bounds):
            return f"the range {span} runs backwards"
    return ""


# --- talking to the host ------------------------------------------------------------------------


def check_kfp_host(
    host: str, token: str | None = None, timeout: float = 30.0, option: str = "--host"
) -> None:
    """Say now (a LeanfitError) that `host` is no Kubeflow Pipelines API we may use: a
    malformed URL, nothing answering, another web server, a login page, refused credentials."""
    KfpHost(checked_host(host, option), token, timeout, option).health()


class KfpHost:
    """One Kubeflow Pipelines API, reached with `kfp.Client`; its failures become LeanfitErrors."""

    def __init__(self, url: str, token: str | None, timeout: float, option: str = "--host"):
        self.url = url
        self.token = token
        self.timeout = timeout
        self.option = option  # how the user gave the host (--host, --submit), for the messages
        self.named = f"{option} {url}"

    def health(self) -> dict:
        """The host's health answer; a LeanfitError when it is not a KFP API we may use.

        Asked directly, once and without retries, because `kfp.Client` retries a failed health
        check five times, five seconds apart, before saying anything.
        """
        import certifi
        import urllib3

        http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
        try:
            r = http.request(
                "GET",
                f"{self.url}{API}/healthz",
                headers={"Authorization": f"Bearer {self.token}"} if self.token else {},
                timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout),
                retries=False,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as e:
            raise self.unreachable(e) from None
        if 300 <= r.status < 400:
            raise LeanfitError(
                f"{self.named}: answers with a redirect to {r.headers.get('Location')} "
                f"(a login page?) instead of the Kubeflow Pipelines API; {TOKEN_HINT}"
            )
        if r.status in (401, 403):
            raise self.refused_credentials(r.status, error_message(r.data), "read its health")
        if r.status == 404:
            raise LeanfitError(
                f"{self.named}: answers, but no Kubeflow Pipelines 2.x API is there "
                f"(GET {API}/healthz: 404); check the address and its path ({PORT_FORWARD_HINT})"
            )
        if r.status != 200:
            raise LeanfitError(
                f"{self.named}: Kubeflow Pipelines' health check answered HTTP {r.status}: "
                f"{error_message(r.data)}"
            )
        try:
            health = json.loads(r.data)
        except ValueError:
            health = None
        if not isinstance(health, dict):
            raise LeanfitError(
                f"{self.named}: answers GET {API}/healthz, but not with Kubeflow Pipelines' "
                f"JSON (a login page?); check the address, or {TOKEN_HINT}"
            )
        return health

    def connect(self, namespace: str | None):
        """A `kfp.Client` whose every request waits at most `timeout` seconds.

        Given a host, the client neither reads ~/.kube nor looks for a cluster. It takes no
        timeout, and its requests would otherwise wait forever: all of them go through one
        generated REST client whose `request` takes `_request_timeout` (an int or a pair).
        """
        import kfp
        import urllib3

        client = self.call(
            "connect",
            lambda: kfp.Client(
                host=self.url, namespace=namespace or "kubeflow", existing_token=self.token
            ),
        )
        rest = client._run_api.api_client.rest_client
        # A read that timed out is not tried again (urllib3 would, three times, for a GET).
        rest.pool_manager.connection_pool_kw["retries"] = urllib3.Retry(total=3, read=0)
        rest.pool_manager.clear()
        send = rest.request
        limit = (self.timeout, self.timeout)

        def request(*args, _request_timeout=None, **kwargs):
            return send(*args, _request_timeout=_request_timeout or limit, **kwargs)

        rest.request = request
        return client

    def call(self, what: str, request: Callable[[], Any], on_conflict=None) -> Any:
        """`request()`; `on_conflict()` instead when the host answers 409 (the name is taken)."""
        import kfp_server_api
        import urllib3

        try:
            return request()
        except kfp_server_api.ApiException as e:
            if e.status == 409 and on_conflict is not None:
                return on_conflict()
            raise self.refused(what, e) from None
        except kfp_server_api.exceptions.OpenApiException as e:
            # answers that are not the API's (a web page with 200): the client then asked with
            # what it could not read (`Missing the required parameter pipeline_id`)
            raise LeanfitError(
                f"{self.named}: the answers to {what} are not Kubeflow Pipelines' "
                f"({type(e).__name__}: {e}); a proxy or login page may answer for it: check the "
                f"address, or {TOKEN_HINT}"
            ) from None
        except urllib3.exceptions.HTTPError as e:
            raise self.unreachable(e) from None

    def refused(self, what: str, e) -> LeanfitError:
        message = error_message(e.body) if e.body else (e.reason or "")
        if e.status in (401, 403):
            return self.refused_credentials(e.status, message, what)
        if e.status == 0:  # no HTTP answer: TLS failed
            return LeanfitError(f"{self.named}: could not {what}: {message}")
        return LeanfitError(
            f"{self.named}: Kubeflow Pipelines refused to {what} (HTTP {e.status}): {message}"
        )

    def refused_credentials(self, status: int, message: str, what: str) -> LeanfitError:
        why = "needs credentials" if status == 401 else "refused the credentials"
        return LeanfitError(
            f"{self.named}: Kubeflow Pipelines {why} to {what} (HTTP {status}: {message}); "
            + TOKEN_HINT
            + (" with the right to do that" if status == 403 else "")
        )

    def unreachable(self, e: Exception) -> LeanfitError:
        import urllib3

        reason = e.reason if isinstance(e, urllib3.exceptions.MaxRetryError) else e
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            why = re.sub(r"\[Errno -?\d+\] ", "", str(reason).rsplit(": ", 1)[-1]).strip("() ")
            return LeanfitError(
                f"{self.named}: no Kubeflow Pipelines API answers at {self.url} "
                f"({why.lower()}); check the address ({PORT_FORWARD_HINT})"
            )
        if isinstance(reason, urllib3.exceptions.TimeoutError):
            return LeanfitError(
                f"{self.named}: no answer within {self.timeout:g} s; check the address and "
                "that the cluster is reachable from here"
            )
        if isinstance(reason, urllib3.exceptions.SSLError):
            return LeanfitError(
                f"{self.named}: the TLS connection failed ({reason}); check the scheme "
                "(http:// for a port-forward) and the host's certificate"
            )
        if isinstance(reason, urllib3.exceptions.LocationValueError):
            return LeanfitError(f"{self.option} {self.url!r}: not a valid URL ({reason})")
        return LeanfitError(f"{self.named}: the connection failed ({reason})")


@contextlib.contextmanager
def quiet_kfp():
    """`kfp.Client` prints links and warns about server versions; the caller reports instead."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", FutureWarning)
        yield


def error_message(body: bytes | str) -> str:
    """The message in a KFP error answer (JSON with `message` or `error_message`), or its text."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        text = str(data.get("message") or data.get("error_message") or data.get("error") or text)
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:300] + "…"


def name_filter(name: str) -> str:
    """A KFP list filter that keeps the items whose display name is `name`."""
    predicate = {"operation": "EQUALS", "key": "display_name", "string_value": name}
    return json.dumps({"predicates": [predicate]})


def get_or_create_pipeline(api: KfpHost, client, name: str, namespace: str | None) -> str:
    """The id of the pipeline called `name`, created (without versions) when there is none."""
    import kfp_server_api

    def find() -> str | None:
        found = api.call(
            f"list pipelines named {name!r}",
            lambda: client.list_pipelines(filter=name_filter(name), namespace=namespace),
        ).pipelines
        return found[0].pipeline_id if found else None

    pipeline = kfp_server_api.V2beta1Pipeline(name=name, display_name=name, namespace=namespace)
    return find() or api.call(
        f"create pipeline {name!r}",
        lambda: client.pipelines.pipeline_service_create_pipeline(pipeline=pipeline).pipeline_id,
        on_conflict=find,  # created meanwhile by another submission
    )


def get_or_upload_version(
    api: KfpHost, client, package: Path, pipeline_id: str, version_name: str, sha: str
) -> str:
    """The id of the pipeline's version called `version_name`, uploaded when there is none."""

    def find() -> str | None:
        found = api.call(
            f"list the versions of pipeline {pipeline_id}",
            lambda: client.list_pipeline_versions(pipeline_id, filter=name_filter(version_name)),
        ).pipeline_versions
        return found[0].pipeline_version_id if found else None

    return find() or api.call(
        f"upload pipeline version {version_name!r}",
        lambda: (
            client.upload_pipeline_version(
                str(package), version_name, pipeline_id=pipeline_id, description=f"sha256 {sha}"
            ).pipeline_version_id
        ),
        on_conflict=find,  # uploaded meanwhile by another submission
    )
