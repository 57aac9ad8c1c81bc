"""Image folders in S3: the digest of the folder they came from, objects read once, clear errors.

A real S3-compatible server (moto's) runs on 127.0.0.1 for the module; every request it serves is
recorded, so the tests can tell which objects were downloaded.
"""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

import pytest
import torch

from leanfit.config import experiment_from_dict
from leanfit.data.check import check_dataset
from leanfit.data.fingerprint import fingerprint_folder, manifest_digest
from leanfit.data.s3 import list_s3_folder, s3_filesystem, s3_manifest
from leanfit.data.sources import load_dataset
from leanfit.errors import ConfigError, DatasetError
from tests.support import digits_config, free_port, run_cli, write_image_folder, write_yaml

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class RequestLog(logging.Handler):
    """Records (method, path) of each request the server's werkzeug logs."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = re.search(r'"([A-Z]+) (\S+) HTTP/', record.getMessage())
        if m:
            self.requests.append((m.group(1), m.group(2)))

    def object_gets(self) -> list[str]:
        """Paths of the objects downloaded (listings have a query string, downloads none)."""
        return [path for method, path in self.requests if method == "GET" and "?" not in path]


@pytest.fixture(scope="module")
def moto_server():
    from moto.server import ThreadedMotoServer

    log = RequestLog()
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.INFO)
    werkzeug.addHandler(log)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}", log
    server.stop()
    werkzeug.removeHandler(log)
    werkzeug.setLevel(level)


@pytest.fixture
def s3(moto_server, monkeypatch):
    """The server's endpoint in the environment, a fresh bucket, and the request log."""
    endpoint, log = moto_server
    env = {"AWS_ENDPOINT_URL": endpoint, **CREDENTIALS}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    fs = s3_filesystem()
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    log.requests.clear()
    return S3(fs, bucket, env, log)


class S3:
    def __init__(self, fs, bucket: str, env: dict, log: RequestLog):
        self.fs, self.bucket, self.env, self.log = fs, bucket, env, log

    def upload(self, folder: Path, prefix: str) -> str:
        """Every file below `folder` (hidden ones too) as objects below the prefix."""
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                key = f"{self.bucket}/{prefix}/{path.relative_to(folder).as_posix()}"
                self.fs.pipe_file(key, path.read_bytes())
        return f"s3://{self.bucket}/{prefix}"

    def put(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(f"{self.bucket}/{key}", data)


def s3_digest(uri: str, cache_file: Path) -> str:
    fs = s3_filesystem()
    return manifest_digest(s3_manifest(fs, list_s3_folder(fs, uri), cache_file))


def image_folder_experiment(path: str, work: Path, **dataset):
    return experiment_from_dict(
        {
            "name": "s3",
            "dataset": {"source": "imagefolder", "path": path, "image_size": 8, **dataset},
            "work_dir": str(work),
        }
    )


def add_unreadable_files(root: Path) -> list[str]:
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (root / "dog" / "notes.txt").write_text("not an image")
    return ["cat/broken.png", "dog/notes.txt"]


def test_s3_digest_equals_the_local_folders_and_follows_content(s3, tmp_path):
    local = write_image_folder(tmp_path / "imgs", {"cat": 3, "dog": 3})
    uri = s3.upload(local, "data/imgs")
    s3.put("data/imgs/.DS_Store", b"hidden")  # hidden names are left out, as in a folder
    s3.put("data/imgs/cat/.thumb.png", b"hidden")
    s3.put("data/imgs/.cache/x", b"hidden")
    s3.put("data/imgs/__MACOSX/cat/._img000.png", b"a zip's resource fork")  # system files
    s3.put("data/imgs/dog/Thumbs.db", b"Windows' thumbnails")
    cache = tmp_path / "manifest.json"

    digest = s3_digest(uri + "/", cache)
    assert digest == fingerprint_folder(local)
    assert len(s3.log.object_gets()) == 6  # each object read once to hash it

    s3.log.requests.clear()
    assert s3_digest(uri, cache) == digest
    assert s3.log.object_gets() == [], "unchanged objects were downloaded again"

    # The same size and a new content: only the ETag tells, and only that object is read again.
    path = local / "dog" / "img001.jpg"
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    s3.put("data/imgs/dog/img001.jpg", bytes(data))
    s3.log.requests.clear()
    changed = s3_digest(uri, cache)
    assert changed != digest and changed == fingerprint_folder(local)
    assert s3.log.object_gets() == [f"/{s3.bucket}/data/imgs/dog/img001.jpg"]

    s3.fs.rm_file(f"{s3.bucket}/data/imgs/cat/img000.png")
    assert s3_digest(uri, cache) not in (digest, changed)


def test_s3_folder_loads_like_the_local_one_and_downloads_each_object_once(s3, tmp_path):
    local = write_image_folder(tmp_path / "imgs", {"cat": 5, "dog": 4})
    unreadable = add_unreadable_files(local)
    uri = s3.upload(local, "imgs")
    experiment = image_folder_experiment(uri, tmp_path / "work-s3")

    loaded = load_dataset(experiment)
    assert sorted(s3.log.object_gets()) == sorted(
        f"/{s3.bucket}/imgs/{p.relative_to(local).as_posix()}" for p in local.rglob("*.*")
    ), "each object is downloaded exactly once: hashed and decoded from the same bytes"
    assert loaded.source == uri
    assert sorted(name for name, _ in loaded.skipped) == unreadable
    assert all(why for _, why in loaded.skipped)

    from_folder = load_dataset(image_folder_experiment(str(local), tmp_path / "work-local"))
    assert loaded.digest == from_folder.digest
    assert loaded.classes == from_folder.classes == ["cat", "dog"]
    assert torch.equal(loaded.images, from_folder.images)
    assert torch.equal(loaded.labels, from_folder.labels)

    s3.log.requests.clear()
    again = load_dataset(experiment)
    assert s3.log.object_gets() == [], "a second load with the same digest downloaded images"
    assert torch.equal(again.images, loaded.images) and again.source == uri


def test_a_bucket_split_in_advance_reads_as_the_same_folder_does(s3, tmp_path):
    local = tmp_path / "data"
    write_image_folder(local / "train", {"cat": 6, "dog": 6}, size=8)
    write_image_folder(local / "test", {"cat": 2, "dog": 2}, size=8, seed=1)
    from_s3 = load_dataset(image_folder_experiment(s3.upload(local, "data"), tmp_path / "w1"))
    from_folder = load_dataset(image_folder_experiment(str(local), tmp_path / "w2"))
    assert from_s3.classes == from_folder.classes == ["cat", "dog"]
    assert from_s3.split_folders == {"train": "train", "test": "test"}
    assert from_s3.predefined_test.tolist() == from_folder.predefined_test.tolist()
    assert len(from_s3.predefined_test) == 4 and torch.equal(from_s3.images, from_folder.images)


def test_an_empty_class_folder_is_refused_or_skipped_as_in_a_local_folder(s3, tmp_path):
    uri = s3.upload(write_image_folder(tmp_path / "imgs", {"cat": 3, "dog": 3}), "imgs")
    s3.put("imgs/bird/", b"")  # what "create folder" leaves in a bucket
    s3.put("imgs/fish/.keep", b"")
    with pytest.raises(DatasetError, match=r"dataset\.path.*'bird', 'fish'.*empty_classes: skip"):
        check_dataset(image_folder_experiment(uri, tmp_path / "work"))
    loaded = load_dataset(image_folder_experiment(uri, tmp_path / "work", empty_classes="skip"))
    assert loaded.classes == ["cat", "dog"]


def test_validate_and_trial_read_an_s3_dataset(s3, tmp_path):
    local = write_image_folder(tmp_path / "imgs", {"cat": 10, "dog": 10})
    add_unreadable_files(local)
    uri = s3.upload(local, "train")
    config = digits_config(
        dataset={"source": "imagefolder", "path": uri, "image_size": 8},
        tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        work_dir=str(tmp_path / "work"),
    )
    write_yaml(tmp_path / "e.yaml", config)

    validated = run_cli("validate", "e.yaml", cwd=tmp_path, env=s3.env)
    assert validated.returncode == 0, validated.stderr
    trained = run_cli("trial", "e.yaml", "--sample", "--epochs", "1", cwd=tmp_path, env=s3.env)
    assert trained.returncode == 0, trained.stderr
    assert "skipped 2 unreadable file(s)" in trained.stderr and "cat/broken.png" in trained.stderr

    from mlflow import MlflowClient

    client = MlflowClient(config["tracking"]["uri"])
    [run] = client.search_runs([client.get_experiment_by_name("leanfit-digits").experiment_id])
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.source_type == "s3"
    assert uri in dataset_input.dataset.source
    assert run.data.tags["leanfit.dataset_digest"] == fingerprint_folder(local)


@pytest.mark.parametrize("case", ["missing bucket", "missing prefix", "unreachable endpoint"])
def test_an_unreadable_s3_dataset_exits_2_naming_the_field(s3, tmp_path, case):
    s3.upload(write_image_folder(tmp_path / "imgs", {"cat": 2, "dog": 2}), "imgs")
    path, env = f"s3://{s3.bucket}/imgs", dict(s3.env)
    if case == "missing bucket":
        path = f"s3://no-such-{s3.bucket}/imgs"
    elif case == "missing prefix":
        path = f"s3://{s3.bucket}/nothing-here"
    else:
        # Nothing listens there; one attempt, so that botocore's retries do not slow the test.
        env.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", AWS_MAX_ATTEMPTS="1")
    work = tmp_path / "run"
    work.mkdir()
    write_yaml(work / "e.yaml", {"name": "x", "dataset": {"source": "imagefolder", "path": path}})
    result = run_cli("validate", "e.yaml", cwd=work, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "dataset.path" in result.stderr and path in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert sorted(p.name for p in work.iterdir()) == ["e.yaml"], "something was written"
    if case == "unreachable endpoint":
        assert "AWS_ENDPOINT_URL" in result.stderr


@pytest.mark.parametrize(
    ("dataset", "field"),
    [
        ({"source": "imagefolder", "path": "gs://bucket/imgs"}, "dataset.path"),
        ({"source": "imagefolder", "path": "s3:///imgs"}, "dataset.path"),
        ({"source": "imagefolder", "path": "s3://Bad[bucket]/imgs"}, "dataset.path"),
        ({"source": "cifar10", "path": "s3://bucket/cifar"}, "dataset.path"),
        (
            {"source": "imagefolder", "path": "imgs", "storage_options": {"anon": True}},
            "dataset.storage_options",
        ),
        (
            {"source": "imagefolder", "path": "s3://b/imgs", "storage_options": {"secret": "x"}},
            "dataset.storage_options",
        ),
        (
            {
                "source": "imagefolder",
                "path": "s3://b/imgs",
                "storage_options": {"client_kwargs": {"aws_secret_access_key": "x"}},
            },
            "dataset.storage_options",
        ),
        # deeper, or in a URL (accepted and logged as MLflow params before)
        *(
            (
                {"source": "imagefolder", "path": "s3://b/imgs", "storage_options": options},
                "dataset.storage_options",
            )
            for options in (
                {"endpoint_url": "http://AKIAQA:MINIOSECRET@minio:9000"},
                {"config_kwargs": {"aws_secret_access_key": "x"}},
                {"s3_additional_kwargs": {"SSECustomerKey": "x"}},
            )
        ),
    ],
)
def test_the_file_refuses_other_schemes_and_credentials(dataset, field):
    with pytest.raises(ConfigError) as e:
        experiment_from_dict({"name": "x", "dataset": dataset})
    assert e.value.field == field


def test_the_file_takes_an_s3_path_with_storage_options(tmp_path):
    experiment = experiment_from_dict(
        {
            "name": "x",
            "dataset": {
                "source": "imagefolder",
                "path": "s3://bucket/imgs/",
                "storage_options": {"endpoint_url": "http://127.0.0.1:9000", "anon": False},
            },
        }
    )
    assert experiment.dataset.s3_uri == "s3://bucket/imgs"
    assert experiment.dataset_path() is None


def test_an_unknown_storage_option_is_named(tmp_path):
    experiment = image_folder_experiment(
        "s3://bucket/imgs", tmp_path, storage_options={"endpoint": "http://127.0.0.1:9000"}
    )
    with pytest.raises(DatasetError, match=r"dataset\.storage_options.*'endpoint'"):
        check_dataset(experiment)
