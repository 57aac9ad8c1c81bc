"""The experiment file: the examples load, and every kind of mistake stops cleanly.

Each bad file is run through the real `leanfit` command in an empty folder: exit code 2, a message
that names the field, no traceback, and nothing written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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
        (digits_config(objectives={"max_params": 1e-3}),  # (not "write e.g. 0": refused too)
         "objectives.max_params: 0.001 is not a whole number; write e.g. 1"),
        (digits_config(dataset={"source": "digits", "val_fraction": "a fifth"}),
         "dataset.val_fraction: 'a fifth' is not a number; write e.g. 0.5"),
        (digits_config(scheduler={"name": "asha", "eta": 3, "curve_stop": "sometimes"}),
         "scheduler.curve_stop: 'sometimes' is not true or false"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError) as refused:
            experiment_from_dict(data)
        assert str(refused.value) == says


def test_the_readmes_every_key_block_is_the_codes_defaults():
    """The README's list of every key with its default is what the code reads from a file that
    gives only a name and a dataset: a key added, renamed or given another default shows here."""
    import yaml

    readme = (EXAMPLES.parent / "README.md").read_text()
    block = readme.split("<!-- every-key-with-its-default -->\n```yaml\n", 1)[1].split("```", 1)[0]
    documented = yaml.safe_load(block)
    exp = experiment_from_dict({"name": "digits", "dataset": {"source": "digits"}})
    assert documented == exp.model_dump(mode="json", exclude={"base_dir"})


def test_a_strategy_or_scheduler_given_by_its_name_alone_is_that_section():
    cfg = digits_config()
    short = experiment_from_dict({**cfg, "scheduler": "hyperband", "strategy": "random"})
    long = experiment_from_dict(
        {**cfg, "scheduler": {"name": "hyperband"}, "strategy": {"name": "random"}}
    )
    assert short == long and short.scheduler.name == "hyperband"
    with pytest.raises(ConfigError) as refused:
        experiment_from_dict({**digits_config(), "scheduler": "bogus"})
    assert str(refused.value) == "scheduler.name: Input should be 'asha', 'hyperband' or 'none'"


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
        "a credential in the trial pods' plain environment",
        digits_config(executor={"kind": "local", "kubernetes": {"env": {"HF_TOKEN": "hf_x"}}}),
        "executor.kubernetes.env: ['HF_TOKEN'] is a credential, which would be written in "
        "plain text into every trial Job's spec",
    ),
    (
        "a password in a URL of the trial pods' environment",
        digits_config(
            executor={"kubernetes": {"env": {"MLFLOW_TRACKING_URI": "http://a:b@mlflow:5000"}}}
        ),
        "executor.kubernetes.env: ['MLFLOW_TRACKING_URI'] is a credential",
    ),
    (
        "a setting misspelt near its name",
        digits_config(dataset={"source": "digits", "splits": "stable"}),
        "dataset.splits: unknown field; did you mean split?",
    ),
    (
        "a budget in GPU-hours, which was accepted and had no effect",
        digits_config(budget={"gpu_hours": 24, "wall_time": "1h"}),
        "budget.gpu_hours: not supported yet: a search is budgeted by wall_time or trials; give "
        "wall_time as the GPU-hours over the GPUs it uses at once",
    ),
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


def test_a_genotype_is_read_as_json_and_yaml_12_write_numbers_and_blocks_given_once(tmp_path):
    """Numbers with an exponent and no dot (`1e-05`, as Python's json writes them, and as a
    genotype copied from `leanfit report --json` has them) are numbers, in a genotype and in the
    experiment file: YAML 1.1 read them as strings, and the genotype was refused (`'1e-05' is
    not a number`). A block given both in `blocks:` and as bN.* keys is refused: the list's
    replaced the keys, and another model than the one written was trained."""
    import json

    from leanfit.cli import read_genotype
    from leanfit.config import load_yaml
    from leanfit.errors import LeanfitError

    read = load_yaml("a: 1e-05\nb: 3E4\nc: 10\nd: 1.5\ne: 1e\nf: 0x1F\ng: .\nh: .5\ni: 1_000")
    assert read == {"a": 1e-05, "b": 30000.0, "c": 10, "d": 1.5, "e": "1e", "f": 31, "g": ".",
                    "h": 0.5, "i": 1000}  # fmt: skip
    # YAML 1.1's base 60 made `wall_time: 1:30` 90 (seconds, said nowhere) and 010 octal 8
    assert load_yaml("t: 1:30\nn: 010\no: 0o10") == {"t": "1:30", "n": 10, "o": 8}
    with pytest.raises(ConfigError, match="budget.wall_time: '1:30' is not a duration"):
        experiment_from_dict(load_yaml(yaml_text_with("wall_time: 5m", "wall_time: 1:30")))
    cfg = digits_config()
    cfg["space"]["hyperparameters"]["weight_decay"] = {"choices": [1e-05, 1e-4]}
    (tmp_path / "e.yaml").write_text(json.dumps(cfg))  # a JSON file is YAML too
    exp = load_experiment(tmp_path / "e.yaml")
    assert exp.space.hyperparameters["weight_decay"].choices == [1e-05, 1e-4]  # not strings

    reference = load_yaml((EXAMPLES / "reference_genotype.yaml").read_text())
    reference.update(lr=0.1, weight_decay=1e-05)
    (tmp_path / "g.json").write_text(json.dumps(reference))
    assert '"weight_decay": 1e-05' in (tmp_path / "g.json").read_text()
    config = read_genotype(tmp_path / "g.json", exp)
    assert config["weight_decay"] == 1e-05

    both = {**reference, "b4.type": "conv", "b4.width": 48}
    write_yaml(tmp_path / "both.yaml", both)
    with pytest.raises(LeanfitError) as e:
        read_genotype(tmp_path / "both.yaml", exp)
    said = str(e.value)
    assert "both.yaml: b4.type, b4.width: blocks are given both in `blocks:` and as bN.*" in said
    # and what else a hand-edited genotype gets wrong, said as such
    write_yaml(tmp_path / "quoted.yaml", {**reference, "stem_width": "16"})
    (tmp_path / "empty.yaml").write_text("")
    for path, says in [
        (tmp_path / "quoted.yaml", "'16' is not one of [4, 6, 8, 12, 16]; it is written in quotes"),
        (tmp_path / "empty.yaml", "empty.yaml is empty; write the configuration in it"),
        (Path("/dev/zero"), "/dev/zero is a device, not a file"),  # (read until memory ran out)
    ]:
        with pytest.raises(LeanfitError, match=re.escape(says)):
            read_genotype(path, exp)
    with pytest.raises(ConfigError, match="is a configuration .a genotype, for `leanfit trial"):
        load_experiment(EXAMPLES / "reference_genotype.yaml")  # given to `validate`
    for name in ("my digits", "données"):  # (é is a letter: "no accents" says which)
        with pytest.raises(ConfigError, match="use letters a-z and A-Z .no accents., digits, "):
            experiment_from_dict({**digits_config(), "name": name})


def test_trial_refuses_a_bad_seed_data_plan_or_spec_before_training(tmp_path, monkeypatch):
    """What `leanfit trial` ended in a traceback on (a seed torch cannot take, after its run
    was opened; a data plan that is not one), or took and trained wrongly (a spec whose schedule
    is shorter than its epochs, a resolution of 1 pixel) or found after the training (a
    checkpoint_to it cannot write): refused first, in one line, naming the fix."""
    import json

    from typer.testing import CliRunner

    from leanfit.cli import app
    from leanfit.config import load_yaml
    from leanfit.errors import LeanfitError

    monkeypatch.chdir(tmp_path)
    write_yaml(tmp_path / "e.yaml", digits_config())
    (tmp_path / "p.txt").write_text("garbage")
    (tmp_path / "p.json").write_text('{"a": 1}')
    (tmp_path / "plans").mkdir()
    reference = (EXAMPLES / "reference_genotype.yaml").read_text()
    (tmp_path / "g.yaml").write_text(reference)

    def refused(*args: str) -> str:
        result = CliRunner().invoke(app, ["trial", "e.yaml", *args])
        assert isinstance(result.exception, LeanfitError), (result.output, result.exception)
        return str(result.exception)

    sample = ["--sample", "--epochs", "1", "--no-track"]
    assert "--seed 99999999999999999999: give a whole number from 0 to" in refused(
        *sample, "--seed", "99999999999999999999"
    )
    assert "--seed -1" in refused(*sample, "--seed", "-1")
    said = refused(*sample, "--data-plan", "p.txt")
    assert "--data-plan: p.txt is not a data plan leanfit wrote (JSONDecodeError" in said, said
    assert "(KeyError: 'digest')" in refused(*sample, "--data-plan", "p.json")
    assert "--data-plan: plans is a folder" in refused(*sample, "--data-plan", "plans")
    # a plan edited by hand (tracebacks, a run left FAILED, or a split leaking into another)
    plan = {"digest": "0" * 64, "train": [0, 1, 2], "val": [3, 4], "test": [5], "search": [0]}
    for edit, says in [
        ({"digest": 123}, "no dataset digest in it"),
        ({"train": []}, "train: no image"),
        ({"train": [[1, 2]]}, "train: not a list of image numbers"),
        ({"val": [1.5]}, "val: not a list of image numbers"),
    ]:
        (tmp_path / "edited.json").write_text(json.dumps({**plan, **edit}))
        said = refused(*sample, "--data-plan", "edited.json")
        assert f"is not a data plan leanfit wrote (ValueError: {says})" in said, said
    from leanfit.data.splits import DataPlan

    (tmp_path / "leak.json").write_text(json.dumps({**plan, "val": [2, 3]}))
    assert DataPlan.load(tmp_path / "leak.json").outside(10) == "train and val share 1 image"
    # a result written beside a device and renamed over it (as root, /dev/null became a file)
    os.mkfifo(tmp_path / "fifo")
    said = refused("--genotype", "g.yaml", "--epochs", "1", "--no-track", "--result-to", "fifo")
    assert "--result-to: fifo is not a plain file (a device?)" in said, said
    # a genotype copied from a trial's MLflow params: its budget is named, not the space's names
    write_yaml(tmp_path / "params.yaml", {**load_yaml(reference), "budget.epochs": "2"})
    said = refused("--genotype", "params.yaml", "--epochs", "1", "--no-track")
    assert "budget.epochs: a run's budget, not its configuration; remove" in said, said
    # and what the file's own seeds take (a traceback at the search's start, a run left RUNNING)
    for section, says in [("strategy", "strategy.seed"), ("dataset", "dataset.seed")]:
        bad = digits_config()
        bad[section]["seed"] = -5
        with pytest.raises(ConfigError, match=f"{says}: Input should be greater than or equal"):
            experiment_from_dict(bad)
    with pytest.raises(ConfigError, match="name: 100000.0 is a number here, not text; write it"):
        experiment_from_dict({**digits_config(), "name": 1e5})  # `name: 1e5`, read as YAML 1.2
    # class folders named by numbers, listed unquoted: their names (a decimal stays refused)
    folders = {"source": "imagefolder", "path": "x", "classes": [2, 10, 1]}
    exp = experiment_from_dict({**digits_config(), "dataset": folders})
    assert exp.dataset.classes == ["2", "10", "1"]
    with pytest.raises(ConfigError, match=r"dataset.classes.0: 2.5 is a number here, not text"):
        experiment_from_dict({**digits_config(), "dataset": {**folders, "classes": [2.5, 1]}})
    with pytest.raises(ConfigError, match="tracking.experiment: 7 is a number here, .* e.g. '7'"):
        experiment_from_dict({**digits_config(), "tracking": {"experiment": 7}})

    from leanfit.space.architecture import flatten_genotype

    config = load_yaml(reference)
    exp = load_experiment(tmp_path / "e.yaml")
    arch = exp.space.architecture
    flat = flatten_genotype(config, arch.blocks, tuple(arch.modules))
    (tmp_path / "not-a-folder").write_text("")
    for extra, says in [
        ({"epochs": 3, "schedule_epochs": 1}, "schedule_epochs (1) must be at least epochs (3)"),
        ({"epochs": 1, "resolution": 1}, "resolution 1: give at least 4 pixels"),
        ({"epochs": 1, "checkpoint_to": str(tmp_path / "plans")}, "is a folder; give a file"),
        ({"epochs": 1, "checkpoint_to": str(tmp_path / "not-a-folder" / "c.pt")}, "checkpoint_to"),
    ]:
        (tmp_path / "s.json").write_text(json.dumps({"trial_id": "t-1", "config": flat, **extra}))
        said = refused("--spec", "s.json", "--no-track")
        assert says in said, (extra, said)
    # a spec resuming a checkpoint that holds its epochs already trained nothing, said `done`
    trained = CliRunner().invoke(app, ["trial", "e.yaml", "--genotype", "g.yaml", "--epochs", "2",
                                       "--no-track"])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    checkpoint = re.search(r"checkpoint (\S+\.pt)", trained.output).group(1)
    spec = {"trial_id": "t-1", "config": flat, "epochs": 2, "resume_from": checkpoint}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    said = refused("--spec", "s.json", "--no-track")
    assert "epochs 2: the checkpoint resume_from holds 2 epochs already; give more" in said
    assert not (tmp_path / "mlflow.db").exists()


def yaml_text_with(old: str, new: str) -> str:
    """examples/digits.yaml's text with `old` written `new`."""
    text = (EXAMPLES / "digits.yaml").read_text()
    assert old in text
    return text.replace(old, new)
