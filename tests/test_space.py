"""The conditional space: sampling, validation, and the flat scikit-optimize encoding."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leanfit.config import experiment_from_dict, load_experiment
from leanfit.errors import GenotypeError
from leanfit.space import Param, SearchSpace
from leanfit.space.architecture import MODULE_PARAMS, flatten_genotype
from tests.support import EXAMPLES

EXPERIMENT = load_experiment(EXAMPLES / "digits.yaml")
SPACE = EXPERIMENT.search_space()
SKOPT_SPACE = SPACE.to_skopt()  # built once, not for each of 100 examples (0.1 s each)
BLOCKS = EXPERIMENT.space.architecture.blocks
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


@settings(max_examples=200, deadline=None)
@given(SEEDS)
def test_every_sample_is_valid_and_decodes_back_to_itself(seed):
    config = SPACE.sample(seed)
    assert SPACE.validate(config) == config
    assert SPACE.decode(SPACE.encode(config)) == config


@settings(max_examples=200, deadline=None)
@given(SEEDS, st.data())
def test_equal_effective_configurations_encode_equally(seed, data):
    """Values of inactive parameters do not change the model, so they must not change the point."""
    config = SPACE.sample(seed)
    noisy = dict(config)
    for p in SPACE.params:
        if p.name not in config:  # inactive: give it any value of its range
            noisy[p.name] = p.sample(random.Random(data.draw(SEEDS)))
    assert SPACE.encode(noisy) == SPACE.encode(config)
    assert SPACE.key(noisy) == SPACE.key(config)


@settings(max_examples=100, deadline=None)
@given(SEEDS)
def test_sampled_points_lie_in_the_skopt_space(seed):
    skopt_space = SKOPT_SPACE
    point = SPACE.encode(SPACE.sample(seed))
    assert skopt_space.is_in(point) if hasattr(skopt_space, "is_in") else point in skopt_space


def test_skopt_points_decode_to_valid_configurations():
    skopt_space = SKOPT_SPACE
    for point in skopt_space.rvs(n_samples=200, random_state=1):
        config = SPACE.decode(point)
        assert SPACE.validate(config) == config


def test_sampling_is_seeded():
    assert SPACE.sample(7) == SPACE.sample(7)
    assert any(SPACE.sample(7) != SPACE.sample(s) for s in range(8, 12))


def test_block_parameters_exist_only_for_their_module():
    for seed in range(100):
        config = SPACE.sample(seed)
        for i in range(BLOCKS):
            kind = config[f"b{i}.type"]
            own = {
                k.split(".", 1)[1] for k in config if k.startswith(f"b{i}.") and k != f"b{i}.type"
            }
            assert own == set(MODULE_PARAMS[kind])


def test_optimizer_parameters_are_conditional():
    for seed in range(100):
        config = SPACE.sample(seed)
        assert ("momentum" in config) == (config["optimizer"] == "sgd")
        assert ("beta1" in config) == (config["optimizer"] == "adamw")
        assert ("randaugment_m" in config) == (config["randaugment_n"] > 0)


def test_validate_names_the_wrong_parameter():
    config = SPACE.sample(0)
    with pytest.raises(GenotypeError, match="lr"):
        SPACE.validate({**config, "lr": 99.0})
    with pytest.raises(GenotypeError, match="unknown"):
        SPACE.validate({**config, "dropout": 0.1})
    missing = dict(config)
    del missing["b0.type"]
    with pytest.raises(GenotypeError, match="b0.type"):
        SPACE.validate(missing)


def test_booleans_and_integers_are_not_confused():
    space = SearchSpace([Param("se", "categorical", choices=(False, True))])
    with pytest.raises(GenotypeError):
        space.validate({"se": 1})
    assert space.validate({"se": True}) == {"se": True}


def test_constants_are_not_dimensions():
    data = yaml_space(architecture={"blocks": 2, "repeats": 1, "modules": ["conv", "skip"]})
    space = experiment_from_dict(data).search_space()
    names = [p.name for p in space.dimensions]
    assert "b0.repeats" not in names and "b0.type" in names
    config = space.sample(0)
    if config["b0.type"] == "conv":
        assert config["b0.repeats"] == 1


def test_readable_genotype_form_is_padded_with_skip_blocks(reference_genotype):
    flat = flatten_genotype(reference_genotype, BLOCKS, tuple(MODULE_PARAMS))
    config = SPACE.validate(flat)
    assert [config[f"b{i}.type"] for i in range(3, BLOCKS)] == ["skip"] * (BLOCKS - 3)


def yaml_space(architecture: dict) -> dict:
    return {
        "name": "t",
        "dataset": {"source": "digits"},
        "space": {"architecture": architecture},
    }
