"""The experiment file: the examples load, and every kind of mistake stops cleanly.

Each bad file is run through the real `leanfit` command in an empty folder: exit code 2, a message
that names the field, no traceback, and nothing written.
"""

from __future__ import annotations

import pytest

from leanfit.config import experiment_from_dict, load_experiment, parse_count, parse_duration
from leanfit.errors import ConfigError
from tests.support import EXAMPLES, digits_config, run_cli, write_image_folder, write_yaml


@pytest.mark.parametrize("name", ["digits.yaml", "cifar10.yaml", "imagefolder.yaml"])
def test_examples_are_valid(name):
    experiment = load_experiment(EXAMPLES / name)
    assert experiment.search_space().dimensions


def test_units_in_numbers_and_durations():
    assert parse_count("100k") == 100_000 and parse_count("1.5M") == 1_500_000
    assert parse_duration("10m") == 600 and parse_duration("2h") == 7200
    with pytest.raises(ValueError, match="'lots' is not a count; write e.g. 2000, 20k"):
        parse_count("lots")
    exp = experiment_from_dict(digits_config(budget={"wall_time": "90s"}))
    assert exp.budget.wall_time == 90


def test_a_value_of_the_wrong_kind_is_named_in_words_with_an_example():
    executor = {"kind": "local", "trial_timeout": "5m"}
    for data, says in [
        (digits_config(executor={**executor, "workers": "two"}),
         "executor.workers: 'two' is not a whole number; write e.g. 2"),
        (digits_config(budget={"min_epochs": 1, "max_epochs": 2.5}),
         "budget.max_epochs: 2.5 is not a whole number; write e.g. 2"),
        (digits_config(dataset={"source": "digits", "val_fraction": "a fifth"}),
         "dataset.val_fraction: 'a fifth' is not a number; write e.g. 0.5"),
        (digits_config(scheduler={"name": "asha", "eta": 3, "curve_stop": "sometimes"}),
         "scheduler.curve_stop: 'sometimes' is not true or false"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError) as refused:
            experiment_from_dict(data)
        assert str(refused.value) == says


def test_dataset_path_is_relative_to_the_file(tmp_path):
    write_image_folder(tmp_path / "imgs", {"a": 2, "b": 2})
    cfg = {"name": "x", "dataset": {"source": "imagefolder", "path": "imgs"}}
    exp = load_experiment(write_yaml(tmp_path / "exp.yaml", cfg))
    assert exp.dataset_path() == (tmp_path / "imgs").resolve()


def _arch(**kw):
    space = digits_config()["space"]
    space["architecture"].update(kw)
    return space


def _hp(**kw):
    space = digits_config()["space"]
    space["hyperparameters"].update(kw)
    return space


# (what is wrong, the file's content, text the message must contain)
BAD_FILES = [
    ("unknown module type", digits_config(space=_arch(modules=["conv", "transformer"])), "modules"),
    ("negative budget", digits_config(budget={"max_epochs": -3}), "budget.max_epochs"),
    ("min above max", digits_config(budget={"min_epochs": 5, "max_epochs": 2}), "min_epochs"),
    (
        "conditional parameter without its parent",
        digits_config(
            space=_hp(
                optimizer="sgd", beta1={"low": 0.8, "high": 0.9, "when": {"optim": ["adamw"]}}
            )
        ),
        "space.hyperparameters.beta1.when",
    ),
    # a `when` that never holds: the parameter was silently never searched
    (
        "a misspelt value in when",
        digits_config(
            space=_hp(momentum={"low": 0.8, "high": 0.9, "when": {"optimizer": ["sgdd"]}})
        ),
        "space.hyperparameters.momentum.when: 'sgdd' is not one of 'optimizer''s choices "
        "['sgd', 'adamw']",
    ),
    (
        "a when on a real range",
        digits_config(space=_hp(beta1={"low": 0.8, "high": 0.9, "when": {"lr": [0.1]}})),
        "space.hyperparameters.beta1.when: 'lr' is a real range, which takes no exact value",
    ),
    ("wrong type", digits_config(budget={"max_epochs": "ten"}), "budget.max_epochs"),
    (
        "wrong type of image size",
        digits_config(dataset={"source": "digits", "image_size": [16]}),
        "dataset.image_size",
    ),
    ("unknown source", digits_config(dataset={"source": "mnist"}), "dataset.source"),
    (
        "a folder as the source",
        digits_config(dataset={"source": "./photos"}),
        "dataset.source: './photos' looks like a folder, and source names the kind of dataset "
        "(digits, "
        "imagefolder or cifar10): for a folder of class folders write `source: imagefolder` and "
        "`path: ./photos`",
    ),
    ("typo in a field", digits_config(budgett={"max_epochs": 3}), "budgett"),
    ("unknown hyper-parameter", digits_config(space=_hp(dropout=[0.1, 0.2])), "dropout"),
    (
        "log range with zero",
        digits_config(space=_hp(lr={"low": 0, "high": 0.1, "log": True})),
        "space.hyperparameters.lr",
    ),
    ("even kernel", digits_config(space=_arch(kernel=[3, 4])), "kernel"),
    # before, these two were pydantic tracebacks (an empty list was validated late)
    ("no choices", digits_config(space=_hp(batch_size=[])), "space.hyperparameters.batch_size"),
    ("no widths", digits_config(space=_arch(width=[])), "space.architecture.width: choices"),
    (
        "a structure as a choice",
        digits_config(space=_hp(batch_size=[[16, 32], 64])),
        "batch_size: choices: [16, 32] is not a number, string, true/false or null",
    ),
    (
        "a kernel written as a decimal",  # (passed, then every trial failed inside torch)
        digits_config(space=_arch(kernel=[3.0, 5])),
        "kernel: [3.0] written as decimals; write 3",
    ),
    ("one number twice", digits_config(space=_arch(kernel=[3, 3.0])), "3 is given twice"),
    (
        "a choice given twice",  # (tried twice as often; 1 and True stay two choices)
        digits_config(space=_hp(batch_size=[16, 32, 16])),
        "batch_size: choices: 16 is given twice; give each choice once",
    ),
    (
        "GBRT surrogate",
        digits_config(strategy={"name": "skopt", "surrogate": "GBRT"}),
        "strategy.surrogate",
    ),
    (
        "EHVI with three objectives",
        digits_config(
            strategy={"name": "skopt", "ehvi_share": 0.5},
            objectives={
                "targets": [
                    {"metric": "val_accuracy", "goal": "maximize"},
                    {"metric": "params", "goal": "minimize"},
                    {"metric": "macs", "goal": "minimize"},
                ]
            },
        ),
        "strategy.ehvi_share",
    ),
    (
        "gap proposals beyond the EHVI share",
        digits_config(strategy={"name": "skopt", "ehvi_share": 0.2, "gap_share": 0.3}),
        "strategy.gap_share",
    ),
    (
        "negative crossover candidates",
        digits_config(strategy={"name": "skopt", "crossover_samples": -5}),
        "strategy.crossover_samples",
    ),
    (
        "accuracy minimised (a typo: the least accurate models)",
        digits_config(objectives={"targets": [{"metric": "val_accuracy", "goal": "minimize"}]}),
        "objectives.targets.0: val_accuracy: goal minimize would search for the least accurate",
    ),
    (
        "parameters maximised",
        digits_config(objectives={"targets": [{"metric": "params", "goal": "maximize"}]}),
        "params: goal maximize would search for the largest models; write goal: minimize",
    ),
    (
        "a metric listed twice",
        digits_config(objectives={"targets": [{"metric": "val_accuracy", "goal": "maximize"}] * 2}),
        "objectives.targets: val_accuracy listed more than once",
    ),
    (
        "a negative fail-fast count",
        digits_config(executor={"fail_fast": -1}),
        "executor.fail_fast",
    ),
    (
        "a distillation weight over 1",
        digits_config(pipeline={"distill": {"alpha": 1.5}}),
        "pipeline.distill.alpha",
    ),
    (
        "a distillation setting misspelt",
        digits_config(pipeline={"distill": {"temprature": 2}}),
        "pipeline.distill.temprature",
    ),
    ("missing name", {k: v for k, v in digits_config().items() if k != "name"}, "name"),
    ("bad wall time", digits_config(budget={"wall_time": "ten minutes"}), "budget.wall_time"),
    (
        "size budget in words",
        digits_config(objectives={**digits_config()["objectives"], "max_params": "20 thousand"}),
        "objectives.max_params: '20 thousand' is not a count",
    ),
    (
        "trials as Kubernetes Jobs with no claim to share the work folder with them",
        digits_config(executor={"kind": "kubernetes"}),
        "executor.kind: kubernetes needs executor.kubernetes.pvc",
    ),
    (
        "splits leave no training data",
        digits_config(dataset={"source": "digits", "val_fraction": 0.5, "test_fraction": 0.45}),
        "dataset",
    ),
]


@pytest.mark.parametrize("case", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_file_is_refused_in_process(case):
    _, data, field = case
    with pytest.raises(ConfigError) as info:
        experiment_from_dict(data)
    assert field in str(info.value)


def _assert_clean_refusal(result, folder, field, before):
    assert result.returncode == 2, result.stdout + result.stderr
    assert field in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert sorted(p.name for p in folder.iterdir()) == before, "something was written"


@pytest.mark.parametrize("case", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_file_exits_2_naming_the_field_and_writes_nothing(tmp_path, case):
    _, data, field = case
    write_yaml(tmp_path / "bad.yaml", data)
    result = run_cli("trial", "bad.yaml", "--sample", "--epochs", "1", cwd=tmp_path)
    _assert_clean_refusal(result, tmp_path, field, ["bad.yaml"])


def test_an_existing_folder_as_the_source_is_called_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    with pytest.raises(ConfigError) as info:
        experiment_from_dict(digits_config(dataset={"source": "photos"}))
    assert "dataset.source: 'photos' is a folder" in str(info.value)
    assert "`source: imagefolder` and `path: photos`" in str(info.value)


def test_missing_dataset_folder(tmp_path):
    write_yaml(
        tmp_path / "e.yaml", {"name": "x", "dataset": {"source": "imagefolder", "path": "nowhere"}}
    )
    result = run_cli("trial", "e.yaml", "--sample", cwd=tmp_path)
    _assert_clean_refusal(result, tmp_path, "dataset.path", ["e.yaml"])
    assert "does not exist" in result.stderr


def test_empty_class_folder(tmp_path):
    write_image_folder(tmp_path / "imgs", {"cat": 3, "dog": 3})
    (tmp_path / "imgs" / "bird").mkdir()
    write_yaml(
        tmp_path / "e.yaml", {"name": "x", "dataset": {"source": "imagefolder", "path": "imgs"}}
    )
    result = run_cli("trial", "e.yaml", "--sample", cwd=tmp_path)
    _assert_clean_refusal(result, tmp_path, "dataset.path", ["e.yaml", "imgs"])
    assert "bird" in result.stderr and "empty_classes: skip" in result.stderr


def test_absent_cifar10_without_download(tmp_path):
    write_yaml(tmp_path / "e.yaml", {"name": "x", "dataset": {"source": "cifar10", "path": "c"}})
    result = run_cli("trial", "e.yaml", "--sample", cwd=tmp_path)
    _assert_clean_refusal(result, tmp_path, "dataset.path", ["e.yaml"])
    assert "download" in result.stderr


@pytest.mark.parametrize(
    "content, expected",
    [
        ("name: [unclosed\n", "not valid YAML at line"),
        ("- a\n- b\n", "e.yaml holds a YAML list; the experiment file must be a YAML mapping"),
        ("", "e.yaml is empty"),
        ("# name: digits\n", "e.yaml is empty"),
        # leanfit compile's output given back as the experiment (it said "found another document")
        (
            "components: {}\npipelineInfo:\n  name: digits\n---\nplatforms: {}\n",
            "e.yaml is a compiled pipeline (leanfit compile's output), not an experiment file",
        ),
    ],
)
def test_unreadable_file(tmp_path, content, expected):
    (tmp_path / "e.yaml").write_text(content)
    result = run_cli("trial", "e.yaml", "--sample", cwd=tmp_path)
    _assert_clean_refusal(result, tmp_path, expected, ["e.yaml"])


def test_missing_file_and_bad_genotype(tmp_path):
    result = run_cli("trial", "absent.yaml", "--sample", cwd=tmp_path)
    _assert_clean_refusal(result, tmp_path, "does not exist", [])
    write_yaml(tmp_path / "e.yaml", digits_config())
    write_yaml(tmp_path / "g.yaml", {"stem_width": 8, "blocks": [{"type": "conv", "width": 999}]})
    result = run_cli("trial", "e.yaml", "--genotype", "g.yaml", cwd=tmp_path)
    _assert_clean_refusal(result, tmp_path, "b0.", ["e.yaml", "g.yaml"])
    result = run_cli("trial", "e.yaml", cwd=tmp_path)
    _assert_clean_refusal(result, tmp_path, "--genotype", ["e.yaml", "g.yaml"])
