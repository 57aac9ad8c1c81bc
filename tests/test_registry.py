"""The registry's rule, with real MLflow: challenger always, champion only if better on the same
test data and within the parameter budget; a rollback by hand."""

from __future__ import annotations

import torch
from torch import nn

from leanfit.config import experiment_from_dict
from leanfit.data.sources import LoadedDataset
from leanfit.models.deploy import accuracy
from leanfit.track.registry import Registry
from tests.support import digits_config


class Brightness(nn.Module):
    """Says "bright" for bright images (right) or the opposite (always wrong)."""

    def __init__(self, sign: float):
        super().__init__()
        self.sign = nn.Parameter(torch.tensor(sign))

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3)) - 0.5
        return torch.stack([-m, m], dim=1) * self.sign


def data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(n) % 2
    images = torch.where(labels.view(-1, 1, 1, 1) == 1, 220, 30).to(torch.uint8)
    return images.expand(n, 1, 4, 4).contiguous(), labels


def summary(trial: int, test_accuracy: float, params: int) -> dict:
    return {
        "trial": trial, "config": {"stem_width": 4}, "epochs": 1, "seed": 0,
        "val_accuracy": test_accuracy, "test_accuracy": test_accuracy, "params": params,
        "macs": 10, "wall_time": 0.1,
    }  # fmt: skip


def test_champion_only_when_better_on_the_same_data_and_within_budget(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = experiment_from_dict(
        digits_config(
            tracking={"uri": uri},
            objectives={**digits_config()["objectives"], "max_params": 1000},
        ),
        tmp_path,
    )
    images, labels = data()
    dataset = LoadedDataset(images, labels, ["dark", "bright"], "d" * 64, "test-images")
    registry = Registry(experiment, dataset)
    parent = registry.client.create_run(registry.logger.experiment_id).info.run_id

    def register(sign: float, trial: int, params: int = 100):
        model = Brightness(sign)
        acc = accuracy(model, images, labels)
        s = summary(trial, acc, params)
        logged = registry.log_model(s, model, parent, images[:2])
        return registry.register(logged, s, model, images, labels)

    wrong = register(-1.0, 1)
    assert wrong.promoted and wrong.champion_version == wrong.version  # the first is champion
    right = register(1.0, 2)
    assert right.promoted and right.champion_test_accuracy == 0.0
    worse = register(-1.0, 3)
    assert not worse.promoted and worse.champion_version == right.version
    assert "stays challenger" in worse.reason and "1.0000" in worse.reason
    too_big = register(1.0, 4, params=5000)
    assert not too_big.promoted  # as good, and over objectives.max_params

    client = registry.client
    champion = client.get_model_version_by_alias("leanfit-digits", "champion")
    challenger = client.get_model_version_by_alias("leanfit-digits", "challenger")
    assert str(champion.version) == str(right.version)
    assert str(challenger.version) == str(too_big.version)
    # the champion was judged again on these test images, and carries that result
    assert champion.tags[f"leanfit.test_accuracy.{'d' * 12}"] == "1.000000"
    assert champion.tags["leanfit.dataset_digest"] == "d" * 64
