"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests import zygote
from tests.support import EXAMPLES

# OpenMP's threads wait for work by spinning (OMP_WAIT_POLICY's default). Two pytest processes on
# CI's two cores, each training on two torch threads (a one-worker search, a pipeline step), then
# stall each other at every parallel operation: a test that takes 19 s alone took 77 s beside two
# busy processes, and 25 s with waiting threads that sleep. Set before torch is imported here;
# every process a test starts inherits it. It changes how threads wait, not what they compute.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
zygote.START_ENV = dict(os.environ)  # (see tests/zygote.py)


@pytest.fixture
def reference_genotype() -> dict:
    return yaml.safe_load((EXAMPLES / "reference_genotype.yaml").read_text())


@pytest.fixture(scope="module")
def digits():
    """The digits data of examples/digits.yaml, as the final training sees it (uint8 tensors)."""
    from leanfit.config import load_experiment
    from leanfit.data.sources import load_dataset
    from leanfit.train.trial import train_data

    experiment = load_experiment(EXAMPLES / "digits.yaml")
    return train_data(experiment, load_dataset(experiment), for_search=False)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in an empty folder, with no tracking URI from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One real MLflow tracking server for the whole session (it takes ~15 s to start)."""
    from tests.support import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_tracking_uri_leaks():
    """`mlflow.set_tracking_uri` also sets $MLFLOW_TRACKING_URI, which every process started
    later inherits: undo it after each test, so no test logs into another test's store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def pytest_collection_modifyitems(items):
    """The slow tests first (a stable sort: the rest keep their order). Two pytest processes
    share them out as they go (`--dist worksteal`); a two-minute test that started last kept
    one process busy alone at the end while the other had nothing left."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
