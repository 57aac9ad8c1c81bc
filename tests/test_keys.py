"""The keys that say "the same search / pipeline run / final training": a version of leanfit that
adds a setting keeps them, and what the version before recorded is still found.

Before, every key hashed every setting, defaults included: each added setting made every search,
pipeline run and final training another one, run again after an upgrade (hours on a GPU), and an
unfinished search could no longer be resumed.
"""

from __future__ import annotations

import json

import pytest
from pydantic import Field, create_model

from leanfit.config import Experiment, load_experiment
from leanfit.data.sources import load_dataset
from leanfit.search.run import run_search
from leanfit.steps import final_training_folder, pipeline_key
from leanfit.track import TrialLogger
from leanfit.track.pipeline import finish_pipeline_run, start_pipeline_run
from leanfit.track.search import SearchLog, search_key, search_settings
from tests.support import digits_config, write_yaml


@pytest.fixture
def experiment(in_tmp) -> Experiment:
    cfg = digits_config(
        budget={"min_epochs": 1, "max_epochs": 2, "trials": 2},
        tracking={"uri": f"sqlite:///{in_tmp / 'mlflow.db'}"},
    )
    return load_experiment(write_yaml(in_tmp / "e.yaml", cfg))


def with_a_new_setting(experiment: Experiment) -> Experiment:
    """The same file read by a version whose strategy has one more setting, at its default."""
    strategy = type(experiment.strategy)
    newer = create_model("NewerStrategy", __base__=strategy, novelty_samples=(int, 0))
    experiment_type = create_model(
        "NewerExperiment", __base__=Experiment, strategy=(newer, Field(default_factory=newer))
    )
    data = experiment.model_dump(mode="json", exclude={"base_dir"})
    return experiment_type.model_validate({**data, "base_dir": experiment.base_dir})


def test_a_setting_added_at_its_default_keeps_every_key(experiment, tmp_path):
    newer = with_a_new_setting(experiment)
    assert newer.strategy.novelty_samples == 0  # (the new setting is there)
    assert search_key(newer, "d") == search_key(experiment, "d")
    assert search_key(newer, None) == search_key(experiment, None)
    assert pipeline_key(newer, "d") == pipeline_key(experiment, "d")
    plan = tmp_path / "plan.json"
    plan.write_text("{}")
    config = {"stem_width": 4}
    assert final_training_folder(newer, config, 60, 1, str(plan)) == final_training_folder(
        experiment, config, 60, 1, str(plan)
    )
    # as the keys were made before, the new setting made it another search
    assert search_key(newer, "d", legacy=True) != search_key(experiment, "d", legacy=True)
    # a setting changed from its default is still another search
    changed = experiment.model_copy(
        update={"strategy": experiment.strategy.model_copy(update={"seed": 1})}
    )
    assert search_key(changed, "d") != search_key(experiment, "d")


def test_the_version_befores_search_and_pipeline_run_are_found(experiment):
    """A search and a pipeline run tagged with the keys the version before made: a pipeline run
    of the same file and data reuses the search, and `leanfit run` finds the run done."""
    dataset = load_dataset(experiment)
    logger = TrialLogger(experiment.tracking_uri(), experiment.experiment_name())
    before = SearchLog.start(
        logger,
        "search-digits",
        search_key(experiment, dataset.digest, legacy=True),
        {"experiment": experiment.name},
        dataset,
        "digits",
        settings_key=search_key(experiment, None, legacy=True),
        settings_json=json.dumps(search_settings(experiment), sort_keys=True),
    )
    before.set_status("FINISHED")
    assert search_key(experiment, dataset.digest) != search_key(
        experiment, dataset.digest, legacy=True
    )  # (the two keys differ: the lookup is what finds it)
    outcome = run_search(experiment, reuse_finished=True, workers=1)
    assert outcome.reused and outcome.search_run_id == before.run_id

    from leanfit.launch import run_locally

    run_id = start_pipeline_run(
        experiment, dataset, pipeline_key(experiment, dataset.digest, legacy=True)
    )
    finish_pipeline_run(experiment, run_id, {"test_accuracy": 0.9}, [])
    done = run_locally(experiment)
    assert not done.ran and done.run_id == run_id


def test_the_pipeline_steps_file_has_the_key_of_the_file_it_came_from(experiment):
    """The steps read the file as the launcher hands it over (paths and the tracking URI made
    absolute, every setting written out): the same pipeline key, or a finished run is not
    found."""
    from leanfit.steps import pipeline_arguments, read_experiment

    for tracking in ({}, {"uri": "sqlite:///mlflow.db"}, {"experiment": "mine"}):
        file = experiment.model_copy(
            update={"tracking": experiment.tracking.model_validate(tracking)}
        )
        handed = read_experiment(**pipeline_arguments(file))
        assert pipeline_key(handed, "d") == pipeline_key(file, "d"), tracking
