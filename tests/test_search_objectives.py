"""The synthetic objective: exact cost, realistic curves, a real trade-off, reproducible noise."""

from __future__ import annotations

import itertools
import math

import pytest

from leanfit.config import load_experiment
from leanfit.search import objectives
from leanfit.search.objectives import A_TOP, SyntheticObjective
from leanfit.search.pareto import pareto_front
from leanfit.space.spec import Param, SearchSpace
from tests.support import EXAMPLES

_DIGITS_EXPERIMENT = load_experiment(EXAMPLES / "digits.yaml")
DIGITS = _DIGITS_EXPERIMENT.search_space()
BLOCKS = _DIGITS_EXPERIMENT.space.architecture.blocks


@pytest.fixture(scope="module")
def objective() -> SyntheticObjective:
    return SyntheticObjective(DIGITS)


@pytest.mark.parametrize(("in_channels", "image_size"), [(1, 16), (3, 7)])
def test_params_and_macs_are_what_the_builder_makes(in_channels, image_size):
    pytest.importorskip("torch")
    from leanfit.models.builder import build_model, count_macs, count_params

    synthetic = SyntheticObjective(DIGITS, in_channels=in_channels, image_size=image_size)
    for seed in range(4):
        config = DIGITS.sample(seed)
        model = build_model(config, in_channels, image_size, 10)
        assert synthetic.cost(config) == (
            count_params(model),
            count_macs(model, in_channels, image_size),
        )


def test_curves_rise_and_saturate(objective):
    quiet = SyntheticObjective(DIGITS, noise=0.0)
    for seed in range(20):
        curve = quiet.evaluate(DIGITS.sample(seed), 30).curve
        assert all(b >= a for a, b in itertools.pairwise(curve))
        assert curve[1] - curve[0] > curve[-1] - curve[-2]
        assert curve[-1] == pytest.approx(quiet.asymptote(DIGITS.sample(seed)), abs=0.02)
        assert curve[0] >= 0.1 and curve[-1] <= A_TOP


def test_noise_is_reproducible_and_a_resumed_run_reports_the_same_curve(objective):
    config = DIGITS.sample(3)
    full = objective.evaluate(config, 10)
    assert objective.evaluate(config, 10) == full
    resumed = objective.evaluate(config, 10, from_epochs=3)
    assert resumed.curve == full.curve[3:]
    assert resumed.val_accuracy == full.val_accuracy == full.curve[-1]
    other_seed = SyntheticObjective(DIGITS, seed=1).evaluate(config, 10)
    assert other_seed.curve != full.curve


def test_bigger_models_are_more_accurate_with_diminishing_returns():
    quiet = SyntheticObjective(DIGITS, noise=0.0, ruggedness=0.0)
    base = DIGITS.sample(11)
    base.update({f"b{i}.type": "conv" for i in range(BLOCKS)})
    accuracies, sizes = [], []
    for width in (4, 8, 16, 32, 48):
        config = dict(base)
        for i in range(BLOCKS):
            config.update({f"b{i}.width": width, f"b{i}.kernel": 3, f"b{i}.stride": 1})
            config.update({f"b{i}.repeats": 1, f"b{i}.activation": "relu"})
        config = DIGITS.validate(config)
        sizes.append(quiet.cost(config)[0])
        accuracies.append(quiet.asymptote(config))
    assert sizes == sorted(sizes)
    gains = [b - a for a, b in itertools.pairwise(accuracies)]
    assert all(g > 0 for g in gains)
    assert gains == sorted(gains, reverse=True)


def test_there_is_a_front_of_params_against_accuracy(objective):
    points = []
    for seed in range(300):
        config = DIGITS.sample(seed)
        result = objective.evaluate(config, 10)
        points.append((result.params, result.val_accuracy))
    front = pareto_front(points, ["minimize", "maximize"])
    assert len(front) >= 5
    params = sorted(points[i][0] for i in front)
    assert params[-1] > 10 * params[0]


def test_the_best_hyper_parameters_are_known(objective):
    config = DIGITS.sample(5)
    config.update(optimizer="sgd", lr=0.05, weight_decay=5e-4, momentum=0.9, nesterov=True)
    config.update(label_smoothing=0.05)
    config.pop("beta1", None)
    best = objective.asymptote(config)
    for name, value in [("lr", 0.2), ("lr", 0.01), ("weight_decay", 1e-2), ("momentum", 0.8)]:
        assert objective.asymptote({**config, name: value}) < best
    assert max(objective.asymptote(DIGITS.sample(s)) for s in range(500)) <= A_TOP


def test_less_data_or_lower_resolution_means_lower_accuracy(objective):
    config = DIGITS.sample(8)
    full = objective.evaluate(config, 5).val_accuracy
    assert objective.evaluate(config, 5, data_fraction=0.25).val_accuracy < full - 0.02
    assert objective.evaluate(config, 5, resolution=8).val_accuracy < full - 0.02


def test_a_run_sleeps_for_the_epochs_it_trains(monkeypatch):
    slept = []
    monkeypatch.setattr(objectives.time, "sleep", slept.append)
    SyntheticObjective(DIGITS, sleep_per_epoch=0.5).evaluate(DIGITS.sample(0), 9, from_epochs=3)
    assert slept == [3.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "The value of `epochs` is 0, but must be `epochs >= 1`"),
        ({"epochs": 3, "from_epochs": 3}, "The value of `from_epochs` is 3, but must be"),
        ({"epochs": 3, "resolution": 32}, "The value of `resolution` is 32, but must be"),
    ],
)
def test_evaluate_says_what_is_wrong(objective, kwargs, message):
    with pytest.raises(ValueError) as e:
        objective.evaluate(DIGITS.sample(0), **kwargs)
    assert message in str(e.value)


def test_a_space_without_an_architecture_is_refused():
    with pytest.raises(ValueError, match="no `stem_width`"):
        SyntheticObjective(SearchSpace([Param("lr", "real", low=0.1, high=1.0)]))
    assert math.isfinite(SyntheticObjective(DIGITS).asymptote(DIGITS.sample(0)))
