"""`submit_pipeline` with the real `kfp.Client`, against a stand-in KFP API recording requests."""

import hashlib
import time

import pytest
import yaml

from leanfit.errors import LeanfitError
from leanfit.trigger.submit import submit_pipeline
from tests.kfp_standin import API, KfpStandin
from tests.support import free_port

ARGUMENTS = {"greeting": "hello", "times": 3}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A two-step pipeline compiled by the real KFP compiler (this module has no
    `from __future__ import annotations`: KFP reads the components' annotations as types)."""
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim")
    def repeat(text: str, times: int) -> str:
        return " ".join([text] * times)

    @dsl.component(base_image="python:3.11-slim")
    def shout(text: str) -> str:
        return text.upper()

    @dsl.pipeline(name="greet")
    def greet(greeting: str, times: int = 1):
        shout(text=repeat(text=greeting, times=times).output)

    path = tmp_path_factory.mktemp("package") / "greet.yaml"
    compiler.Compiler().compile(greet, str(path))
    return path


def submit(package, host, **overrides):
    kwargs = {
        "pipeline_name": "greet",
        "experiment": "nightly",
        "arguments": ARGUMENTS,
        "run_name": "greet-1",
        "timeout": 5,
    } | overrides
    return submit_pipeline(package, host, **kwargs)


def test_a_run_uploads_the_package_and_starts_in_the_experiment(package):
    with KfpStandin() as kfp:
        s = submit(package, kfp.url)

    (upload,) = kfp.received("POST", f"{API}/pipelines/upload_version")
    filename, content = upload.files["uploadfile"]
    assert content == package.read_bytes()
    assert filename == "greet.yaml"
    sha = hashlib.sha256(content).hexdigest()
    assert upload.query["name"] == f"greet-{sha[:12]}"
    assert upload.query["pipelineid"] == s.pipeline_id
    assert kfp.pipelines[s.pipeline_id]["display_name"] == "greet"

    (run,) = kfp.received("POST", f"{API}/runs")
    assert run.json["display_name"] == "greet-1"
    assert run.json["experiment_id"] == s.experiment_id
    assert kfp.experiments[s.experiment_id]["display_name"] == "nightly"
    assert run.json["runtime_config"]["parameters"] == ARGUMENTS
    assert run.json["pipeline_version_reference"] == {
        "pipeline_id": s.pipeline_id,
        "pipeline_version_id": s.pipeline_version_id,
    }
    assert s.run_id in kfp.runs and s.recurring_run_id is None
    assert s.url == f"{kfp.url}/#/runs/details/{s.run_id}"
    assert not kfp.received("POST", f"{API}/recurringruns")


def test_the_same_package_again_reuses_its_pipeline_version(package, tmp_path):
    with KfpStandin() as kfp:
        first = submit(package, kfp.url)
        again = submit(package, kfp.url, run_name="greet-2")
        changed = tmp_path / "greet.yaml"
        changed.write_bytes(package.read_bytes() + b"# changed\n")
        third = submit(changed, kfp.url, run_name="greet-3")

    assert again.experiment_id == first.experiment_id == third.experiment_id
    assert again.pipeline_id == first.pipeline_id == third.pipeline_id
    assert again.pipeline_version_id == first.pipeline_version_id
    assert third.pipeline_version_id != first.pipeline_version_id
    assert len(kfp.received("POST", f"{API}/experiments")) == 1
    assert len(kfp.received("POST", f"{API}/pipelines")) == 1
    uploads = kfp.received("POST", f"{API}/pipelines/upload_version")
    assert [u.files["uploadfile"][1] for u in uploads] == [
        package.read_bytes(),
        changed.read_bytes(),
    ]
    assert len(kfp.runs) == 3


def test_a_recurring_run_sends_its_cron_schedule_and_arguments(package):
    with KfpStandin() as kfp:
        s = submit(package, kfp.url, recurring_cron="0 0 3 * * *")

    (created,) = kfp.received("POST", f"{API}/recurringruns")
    assert created.json["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert created.json["runtime_config"]["parameters"] == ARGUMENTS
    assert created.json["mode"] == "ENABLE"
    assert created.json["experiment_id"] == s.experiment_id
    assert created.json["pipeline_version_reference"]["pipeline_version_id"] == (
        s.pipeline_version_id
    )
    assert s.recurring_run_id in kfp.recurring_runs and s.run_id is None
    assert s.url == f"{kfp.url}/#/recurringrun/details/{s.recurring_run_id}"
    assert not kfp.received("POST", f"{API}/runs")


def test_a_five_field_cron_schedule_gets_a_seconds_field(package):
    with KfpStandin() as kfp:
        submit(package, kfp.url, recurring_cron="30 2 * * MON-FRI")
    (created,) = kfp.received("POST", f"{API}/recurringruns")
    assert created.json["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * MON-FRI"


@pytest.mark.parametrize(
    "cron",
    [
        "0 3 * *",
        "every day",
        "0 0 25 * * *",
        "0 61 * * *",
        "0 0 3 * * 1-",
        "@daily",
        "0 0 ３ * *",
        "0 */３ * * *",
    ],
)
def test_a_malformed_cron_schedule_is_refused_before_anything_is_sent(package, cron):
    with KfpStandin() as kfp, pytest.raises(LeanfitError) as e:
        submit(package, kfp.url, recurring_cron=cron)
    assert f"--recurring {cron!r}" in str(e.value)
    assert "'0 0 3 * * *'" in str(e.value)  # an example that works
    assert kfp.requests == []


@pytest.mark.parametrize("cron", ["0 3 31 2 *", "0 0 3 30,31 FEB *", "0 3 31 4-6/2,9 ?"])
def test_a_cron_schedule_whose_date_never_comes_is_refused(package, cron):
    with KfpStandin() as kfp, pytest.raises(LeanfitError) as e:
        submit(package, kfp.url, recurring_cron=cron)
    assert f"--recurring {cron!r}: no month has that day of the month (" in str(e.value)
    assert "so it would never run" in str(e.value) and kfp.requests == []


@pytest.mark.parametrize(
    "cron", ["0 3 29 2 *", "0 3 31 4-7 *", "0 3 31 2 MON", "0 3 */10 2 *", "0 3 31 1/3 *"]
)
def test_a_rare_cron_date_that_does_come_is_taken(cron):
    from leanfit.trigger.submit import kfp_cron

    assert kfp_cron(cron).endswith(cron)  # Feb 29th, July 31st, Mondays in February, ...


def test_an_unreachable_host_is_named_with_the_fix(package):
    host = f"http://127.0.0.1:{free_port()}"  # nothing listens there any more
    with pytest.raises(LeanfitError, match="no Kubeflow Pipelines API answers") as e:
        submit(package, host)
    assert str(e.value).startswith(f"--host {host}:")
    assert "port-forward" in str(e.value)


def test_a_host_that_is_not_kfp_is_named(package):
    with KfpStandin(not_kfp=True) as web, pytest.raises(LeanfitError) as e:
        submit(package, web.url)
    assert str(e.value).startswith(f"--host {web.url}:")
    assert "no Kubeflow Pipelines 2.x API" in str(e.value) and "404" in str(e.value)
    assert web.calls() == [f"GET {API}/healthz"]  # asked once, no retries


def test_a_host_without_the_scheme_is_refused(package):
    with pytest.raises(LeanfitError, match=r"--host 'localhost:8080': .* http://localhost:8080"):
        submit(package, "localhost:8080")


def test_the_ui_address_bar_works_and_credentials_in_the_url_are_refused_unsaid(package):
    """The KFP UI's address (`http://localhost:8080/#/pipelines`, copied from the browser):
    the fragment swallowed every API path, so each request went to `/`, and the message spoke of
    a login page. A user name and password in the URL are not sent: refused, not repeated."""
    with KfpStandin() as kfp:
        submit(package, f"{kfp.url}/#/pipelines")
        assert kfp.calls()[0] == f"GET {API}/healthz"
        assert len(kfp.received("POST", f"{API}/runs")) == 1
    port = kfp.url.rsplit(":", 1)[1]
    with pytest.raises(LeanfitError) as e:
        submit(package, f"http://admin:hunter2@127.0.0.1:{port}")
    said = str(e.value)
    assert "hunter2" not in said and "admin" not in said, said
    assert f"http://127.0.0.1:{port} is given with a user name or password" in said, said


def test_answers_that_are_not_the_apis_are_said_not_raised():
    """A host whose health answer is KFP's but whose other answers are a web page (with 200):
    the client then asked with what it could not read, and `ApiValueError: Missing the required
    parameter pipeline_id` ended the command with a traceback."""
    from kfp_server_api.exceptions import ApiValueError

    from leanfit.trigger.submit import KfpHost

    def unreadable():
        raise ApiValueError("Missing the required parameter `pipeline_id`")

    with pytest.raises(LeanfitError) as e:
        KfpHost("http://kfp.example", None, 5.0).call("upload the pipeline", unreadable)
    said = str(e.value)
    assert said.startswith("--host http://kfp.example: the answers to upload the pipeline are not")
    assert "pipeline_id" in said and "a proxy or login page may answer for it" in said


def test_credentials_are_asked_for_and_sent(package):
    with KfpStandin(token="s3cret") as kfp:
        with pytest.raises(LeanfitError, match="needs credentials.*access token") as e:
            submit(package, kfp.url)
        assert str(e.value).startswith(f"--host {kfp.url}:")
        kfp.requests.clear()
        s = submit(package, kfp.url, existing_token="s3cret")
    assert s.run_id in kfp.runs
    assert {r.headers.get("authorization") for r in kfp.requests} == {"Bearer s3cret"}


def test_a_multi_user_host_needs_a_namespace(package):
    with KfpStandin(multi_user=True) as kfp:
        with pytest.raises(LeanfitError, match="multi-user; give the namespace"):
            submit(package, kfp.url)
        s = submit(package, kfp.url, namespace="alice")
    assert kfp.experiments[s.experiment_id]["namespace"] == "alice"
    assert kfp.pipelines[s.pipeline_id]["namespace"] == "alice"


def test_a_host_that_stops_answering_times_out(package):
    with KfpStandin(stall={f"GET {API}/pipelines": 30}) as kfp:
        start = time.monotonic()
        with pytest.raises(LeanfitError, match=r"no answer within 1 s"):
            submit(package, kfp.url, timeout=1)
        assert time.monotonic() - start < 10
        assert len(kfp.received("GET", f"{API}/pipelines")) == 1  # not tried again


def test_a_bad_package_is_refused_before_anything_is_sent(package, tmp_path):
    not_a_pipeline = tmp_path / "config.yaml"
    not_a_pipeline.write_text(yaml.safe_dump({"dataset": {"source": "digits"}}))
    with KfpStandin() as kfp:
        with pytest.raises(LeanfitError, match=r"pipeline package '.*missing.yaml' does not exist"):
            submit(tmp_path / "missing.yaml", kfp.url)
        with pytest.raises(LeanfitError, match="is not a compiled Kubeflow pipeline"):
            submit(not_a_pipeline, kfp.url)
    assert kfp.requests == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"greeting": "hi", "tims": 3}, "argument 'tims': .* its parameters: greeting, times"),
        ({"greeting": "hi", "times": "3"}, "argument 'times': '3' is not a number integer"),
        ({"times": 3}, "needs a value for greeting"),
    ],
)
def test_arguments_that_do_not_fit_the_pipeline_are_refused(package, arguments, message):
    with KfpStandin() as kfp, pytest.raises(LeanfitError, match=message):
        submit(package, kfp.url, arguments=arguments)
    assert kfp.requests == []
