"""The registry's rule, with real MLflow: challenger always, champion only if better on the same
test data and within the parameter budget; a rollback by hand."""

from __future__ import annotations

import numpy as np
import pytest
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

    def register(sign: float, trial: int, params: int = 100, **more):
        model = Brightness(sign)
        acc = accuracy(model, images, labels)
        s = {**summary(trial, acc, params), **more}
        logged = registry.log_model(s, model, parent, images[:2])
        return registry.register(logged, s, model, images, labels)

    wrong = register(-1.0, 1)
    assert wrong.promoted and wrong.champion_version == wrong.version  # the first is champion
    taught = {"trial": 1, "params": 100, "alpha": 0.5, "temperature": 4.0, "folder": "ab12"}
    right = register(1.0, 2, distilled_from=taught)
    assert right.promoted and right.champion_test_accuracy == 0.0
    # (as wrong as the first, with other weights: another model)
    worse = register(-2.0, 3, refit={"images": 1438, "wall_time": 1.0, "folder": "cd34"})
    assert not worse.promoted and worse.champion_version == right.version
    assert "stays challenger" in worse.reason and "1.0000" in worse.reason
    too_big = register(1.0, 4, params=5000)
    assert not too_big.promoted  # as good, and over objectives.max_params
    # the champion's own weights again (a pipeline run whose final training was kept from an
    # earlier one): not a new version, nor the challenger of itself
    versions = len(registry.client.search_model_versions("name='leanfit-digits'"))
    again = register(1.0, 2)
    assert not again.promoted and str(again.version) == str(right.version), again
    assert "nothing new to register" in again.reason
    # ... or a challenger's (version 4 and 5 of one model, after `leanfit run --force`)
    worse_again = register(-2.0, 3)
    assert not worse_again.promoted and str(worse_again.version) == str(worse.version)
    assert str(worse_again.champion_version) == str(right.version)
    assert len(registry.client.search_model_versions("name='leanfit-digits'")) == versions
    challenger = registry.client.get_model_version_by_alias("leanfit-digits", "challenger")
    assert str(challenger.version) == str(worse.version)
    registry.client.set_registered_model_alias("leanfit-digits", "challenger", too_big.version)

    client = registry.client
    champion = client.get_model_version_by_alias("leanfit-digits", "champion")
    challenger = client.get_model_version_by_alias("leanfit-digits", "challenger")
    assert str(champion.version) == str(right.version)
    assert str(challenger.version) == str(too_big.version)
    # the champion was judged again on these test images, and carries that result
    assert champion.tags[f"leanfit.test_accuracy.{'d' * 12}"] == "1.000000"
    assert champion.tags["leanfit.dataset_digest"] == "d" * 64
    # pipeline.distill: a taught model's run names its teacher; an untaught one's does not
    said = client.get_run(champion.run_id).data.params
    assert (said["final.distilled_from"], said["final.distill_alpha"]) == ("1", "0.5")
    assert said["final.distill_temperature"] == "4.0"
    untaught = client.get_model_version("leanfit-digits", wrong.version).run_id
    assert "final.distilled_from" not in client.get_run(untaught).data.params
    # pipeline.refit: a refit model's run says so and on how many images; the others do not
    refit = client.get_run(client.get_model_version("leanfit-digits", worse.version).run_id)
    assert refit.data.params["final.refit"] == "train+val"
    assert refit.data.params["final.refit_images"] == "1438"
    assert "final.refit" not in client.get_run(untaught).data.params


def leanfit_classifier(reference_genotype, channels: int = 1, size: int = 16, classes: int = 10):
    """A real leanfit network (conv, depthwise-separable, inverted residual with squeeze-
    excitation, hardswish) as the pipeline logs it, with weights whose answers differ image to
    image (a fresh network's barely do) and batch-norm statistics of its own."""
    from leanfit.models.builder import build_model
    from leanfit.models.deploy import Classifier
    from leanfit.space.architecture import flatten_genotype

    blocks = [dict(b) for b in reference_genotype["blocks"]]
    blocks[1].update(se=True, activation="hardswish")
    torch.manual_seed(0)
    readable = {**reference_genotype, "blocks": blocks}
    architecture = {
        "genotype": flatten_genotype(readable, 3, ("conv", "dwsep", "mbconv")),
        "in_channels": channels, "image_size": size, "num_classes": classes,
    }  # fmt: skip
    net = build_model(**architecture)
    with torch.no_grad():
        for param in net.parameters():
            param.normal_(0.0, 0.5)
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return Classifier(net, [0.3] * channels, [0.25] * channels, architecture).eval()


def test_a_registered_model_is_built_from_its_weights_and_never_unpickled(
    tmp_path, reference_genotype, monkeypatch
):
    """MLflow's pytorch model is a pickle, and unpickling runs whatever the file says: anyone
    who can write to the tracking server's artifacts could run code wherever leanfit loads a
    version (the pipeline's evaluate step judging the champion, `leanfit predict`). leanfit
    builds the network itself from the weights file beside it (read as weights only), and an
    older model (no such file) from its run's TorchScript: a pickle planted in either runs
    nothing. A model folder with neither is refused with how to load it; a weights file that
    is not one leanfit wrote is refused, and a champion that cannot be loaded loses."""
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    import mlflow.pytorch

    from leanfit.errors import LeanfitError
    from leanfit.models.deploy import Classifier, save_weights
    from leanfit.models.predict import WEIGHTS_FILE, load_model
    from tests.support import Planted, run_cli, write_image_folder

    monkeypatch.chdir(tmp_path)  # (MLflow's artifacts: ./mlruns)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = write_image_folder(tmp_path / "imgs", {str(d): 2 for d in range(10)}, size=16)
    experiment = experiment_from_dict(
        digits_config(
            tracking={"uri": uri},
            dataset={"source": "imagefolder", "path": str(root), "image_size": 16},
        ),
        tmp_path,
    )
    images = torch.randint(0, 256, (40, 1, 16, 16), dtype=torch.uint8)
    labels = torch.arange(40) % 10
    dataset = LoadedDataset(images, labels, [str(d) for d in range(10)], "f" * 64, "t")
    registry = Registry(experiment, dataset)
    parent = registry.client.create_run(registry.logger.experiment_id).info.run_id
    model = leanfit_classifier(reference_genotype)
    s = summary(1, accuracy(model, images, labels), 100)
    first = registry.register(registry.log_model(s, model, parent, images[:2]), s, model,
                              images, labels)  # fmt: skip

    def folder_of(version) -> Path:
        where = registry.client.get_model_version_download_uri("leanfit-digits", version)
        return Path(unquote(urlparse(where).path))

    marker = tmp_path / "the-pickle-ran"
    stored = folder_of(first.version)
    assert (stored / "extra_files" / WEIGHTS_FILE).is_file()
    torch.save(Planted(str(marker)), stored / "data" / "model.pth")  # the pickle replaced

    loaded = load_model(f"models:/leanfit-digits/{first.version}")
    assert isinstance(loaded, Classifier) and loaded.architecture == model.architecture
    with torch.no_grad():
        x = images.float() / 255
        assert torch.equal(loaded(x), model(x))
    assert registry.evaluate_version(first.version, images, labels) == (s["test_accuracy"],
                                                                        None, None)  # fmt: skip
    downloaded = tmp_path / "downloaded"
    mlflow.artifacts.download_artifacts(f"models:/leanfit-digits/{first.version}",
                                        dst_path=str(downloaded), tracking_uri=uri)  # fmt: skip
    for name in (str(downloaded), "leanfit-digits"):
        said = run_cli("predict", name, str(root), "--tracking-uri", uri, cwd=tmp_path)
        assert said.returncode == 0 and "20 image(s)" in said.stdout, said.stderr
    assert not marker.exists()

    # an older model, or a network leanfit did not build: no weights file; its TorchScript
    older = Brightness(1.0)
    two = torch.where(labels < 5, 30, 220).to(torch.uint8).view(-1, 1, 1, 1)
    bright = two.expand(40, 1, 16, 16).contiguous()
    s2 = summary(2, accuracy(older, bright, (labels >= 5).long()), 50)
    logged = registry.log_model(s2, older, parent, images[:2])
    version = str(mlflow.register_model(logged.model_uri, "leanfit-digits").version)
    assert not (folder_of(version) / "extra_files").exists()
    torch.save(Planted(str(marker)), folder_of(version) / "data" / "model.pth")
    scripted = load_model(f"models:/leanfit-digits/{version}")
    assert isinstance(scripted, torch.jit.ScriptModule)
    assert registry.evaluate_version(version, bright, (labels >= 5).long())[:2] == (1.0, None)
    assert not marker.exists()
    alone = tmp_path / "older-downloaded"
    mlflow.artifacts.download_artifacts(f"models:/leanfit-digits/{version}",
                                        dst_path=str(alone), tracking_uri=uri)  # fmt: skip
    refused = run_cli("predict", str(alone), str(root), cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    said = " ".join(refused.stderr.split())
    assert f"has no {WEIGHTS_FILE}" in said and "does not unpickle" in said, said
    run_files = Path(
        unquote(urlparse(registry.client.get_run(logged.run_id).info.artifact_uri).path)
    )
    (run_files / "torchscript" / "model.torchscript.pt").write_bytes(b"PK\x03\x04 damaged")
    damaged = run_cli("predict", f"models:/leanfit-digits/{version}", str(root),
                      "--tracking-uri", uri, cwd=tmp_path)  # fmt: skip
    assert damaged.returncode == 2 and "Traceback" not in damaged.stderr, damaged.stderr
    assert "TorchScript file is damaged" in " ".join(damaged.stderr.split())
    assert not marker.exists()

    # another model's weights file put in its place: for other images, refused against the
    # card (it raised a traceback at the first image); for the same images, against the digest
    # the version was registered with (its answers changed silently)
    save_weights(leanfit_classifier(reference_genotype, channels=3), downloaded / "extra_files"
                 / WEIGHTS_FILE)  # fmt: skip
    other = run_cli("predict", str(downloaded), str(root), cwd=tmp_path)
    said = " ".join(other.stderr.split())
    assert other.returncode == 2 and "Traceback" not in said, said
    assert "is for 3-channel 16x16 images and 10 classes, its card says 1-channel" in said, said
    swapped = leanfit_classifier(reference_genotype)
    with torch.no_grad():
        swapped.net.head.bias.add_(0.5)
    save_weights(swapped, stored / "extra_files" / WEIGHTS_FILE)
    with pytest.raises(LeanfitError, match="not the ones registered as this version"):
        load_model(f"models:/leanfit-digits/{first.version}")
    problem = registry.evaluate_version(first.version, images, labels)[1]
    assert "not the ones registered" in problem, problem

    # a weights file that is not one leanfit wrote (a pickle in its place): refused, runs
    # nothing, and the champion that cannot be loaded loses to a challenger
    torch.save({"format": 1, "payload": Planted(str(marker))},
               stored / "extra_files" / WEIGHTS_FILE)  # fmt: skip
    bad = run_cli("predict", "leanfit-digits", str(root), "--tracking-uri", uri, cwd=tmp_path)
    said = " ".join(bad.stderr.split())
    assert bad.returncode == 2 and "holds something other than weights" in said, said
    assert "weights_only" not in said  # (torch's advice to load it otherwise is not relayed)
    challenger = leanfit_classifier(reference_genotype)
    with torch.no_grad():
        challenger.net.head.bias.add_(1.0)  # other weights: another version
    s3 = summary(3, accuracy(challenger, images, labels), 100)
    decision = registry.register(registry.log_model(s3, challenger, parent, images[:2]), s3,
                                 challenger, images, labels)  # fmt: skip
    assert decision.promoted, decision
    assert "cannot be loaded safely" in decision.reason
    assert WEIGHTS_FILE in decision.reason and "something other than weights" in decision.reason
    assert not marker.exists()
    # and the plant was live: MLflow's own loader runs it
    with pytest.raises(AttributeError):  # (what open() returned is no model)
        mlflow.pytorch.load_model(f"models:/leanfit-digits/{first.version}")
    assert marker.exists()


def test_each_final_model_is_logged_as_onnx_that_answers_as_the_model_does(
    tmp_path, reference_genotype
):
    """The ONNX file beside TorchScript: a real leanfit network (conv, depthwise-separable,
    inverted residual with squeeze-excitation, hardswish) read back with ONNX Runtime gives the
    model's logits for a batch of any size."""
    import onnxruntime
    from mlflow.artifacts import download_artifacts

    model = leanfit_classifier(reference_genotype)
    assert any("SqueezeExcite" in type(m).__name__ for m in model.modules())
    assert any(isinstance(m, nn.Hardswish) for m in model.modules())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = experiment_from_dict(digits_config(tracking={"uri": uri}), tmp_path)
    images = torch.randint(0, 256, (9, 1, 16, 16), dtype=torch.uint8)
    labels = torch.arange(9) % 10
    dataset = LoadedDataset(images, labels, [str(d) for d in range(10)], "e" * 64, "t")
    registry = Registry(experiment, dataset)
    parent = registry.client.create_run(registry.logger.experiment_id).info.run_id
    logged = registry.log_model(summary(1, 0.1, 100), model, parent, images[:2])

    path = download_artifacts(run_id=logged.run_id, artifact_path="onnx/model.onnx",
                              tracking_uri=uri)  # fmt: skip
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = images.float() / 255
    with torch.no_grad():
        expected = model(x).numpy()
    assert expected.std(axis=0).min() > 1e-3  # each logit moves with the image
    for batch in (x, x[:1]):
        got = session.run(["logits"], {"images": batch.numpy()})[0]
        assert np.allclose(got, expected[: len(batch)], atol=1e-4), np.abs(got - expected).max()


def test_predict_classifies_files_as_the_model_saw_its_training_images(
    tmp_path, reference_genotype
):
    """`leanfit predict` on a registered model: the class names come with the model, and each
    file is decoded as the training folder was (a transparent icon, and a wide photo padded to a
    square as the file asks, included), so the printed probabilities are the model's on the very
    tensors it was judged on."""
    import json

    from PIL import Image

    from leanfit.data.sources import load_dataset
    from tests.support import run_cli, write_image_folder

    root = write_image_folder(tmp_path / "imgs", {"cat": 4, "dog": 4}, size=20)
    icon = np.zeros((20, 20, 4), dtype=np.uint8)
    icon[5:15, 5:15, 3] = 255  # a black square on transparent black
    Image.fromarray(icon).save(root / "dog" / "icon.png")
    wide = np.random.default_rng(0).integers(0, 256, (20, 50, 3), dtype=np.uint8)
    Image.fromarray(wide).save(root / "cat" / "wide.png")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = experiment_from_dict(
        digits_config(
            name="pets",
            tracking={"uri": uri},
            dataset={"source": "imagefolder", "path": str(root), "image_size": 12, "fit": "pad"},
            work_dir=str(tmp_path / "work"),
        ),
        tmp_path,
    )
    dataset = load_dataset(experiment)
    # A network whose output moves with every pixel: a freshly built leanfit network gives
    # every image the same probabilities to five places, which no decoding could change
    model = leanfit_classifier(reference_genotype, channels=3, size=12, classes=2)
    registry = Registry(experiment, dataset)
    parent = registry.client.create_run(registry.logger.experiment_id).info.run_id
    s = summary(1, accuracy(model, dataset.images, dataset.labels), 100)
    logged = registry.log_model(s, model, parent, dataset.images[:2])
    registry.register(logged, s, model, dataset.images, dataset.labels)

    with torch.no_grad():
        expected = torch.softmax(model(dataset.images.float() / 255), dim=1)
    (root / "dog" / "notes.txt").write_text("not an image")
    result = run_cli(
        "predict", "leanfit-pets", str(root), "--json", "--top", "2", "--tracking-uri", uri,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert "skipped 1 unreadable file(s)" in result.stderr and "notes.txt" in result.stderr
    files = sorted(p for p in root.rglob("*.*") if p.suffix != ".txt")  # the dataset's order
    assert [r["file"] for r in records] == [str(f) for f in files]
    assert len({round(r["probability"], 5) for r in records}) == len(records)  # all differ
    for record, probs in zip(records, expected, strict=True):
        best = int(probs.argmax())
        assert record["class"] == ["cat", "dog"][best]
        assert abs(record["probability"] - float(probs[best])) < 2e-6, (record, probs)
        assert [t["class"] for t in record["top"]] == [["cat", "dog"][best], ["dog", "cat"][best]]
    # the files lie in folders named after the classes: how often the model agrees with them
    agree = (expected.argmax(1) == dataset.labels).sum().item()
    assert 0 < agree < len(records)  # a score that could come out otherwise
    assert (
        f"accuracy {agree / len(records):.4f} on the {len(records)} file(s) in folders named "
        f"after a class ({len(records) - agree} wrong)"
    ) in " ".join(result.stderr.split()), result.stderr
    assert "by class: cat " in result.stderr and "most confused: " in result.stderr

    table = run_cli("predict", "models:/leanfit-pets/1", str(root / "cat"), "--top", "5",
                    "--tracking-uri", uri, cwd=tmp_path)  # fmt: skip
    assert table.returncode == 0 and "5 image(s)" in table.stdout, table.stderr
    assert "class 2" in table.stdout and "class 3" not in table.stdout  # 2 classes, not 5
    # piped, each file's row is one line, its path whole however long (rich folds at 80)
    wide_png = str(root / "cat" / "wide.png")
    assert len(wide_png) > 60 and any(wide_png in line for line in table.stdout.splitlines())
    elsewhere = tmp_path / "unsorted"
    elsewhere.mkdir()
    (root / "cat" / "img000.png").rename(elsewhere / "img000.png")
    unlabelled = run_cli("predict", "leanfit-pets", str(elsewhere), "--tracking-uri", uri,
                         cwd=tmp_path)  # fmt: skip
    assert unlabelled.returncode == 0 and "accuracy" not in unlabelled.stdout, unlabelled.stdout

    for args, says in (
        (("no-such-model", str(root)), "could not be read"),
        (("leanfit-pets", str(tmp_path / "missing.png")), "does not exist"),
        (("leanfit-pets", str(root / "dog" / "notes.txt")), "none of the 1 file(s)"),
    ):
        bad = run_cli("predict", *args, "--tracking-uri", uri, cwd=tmp_path)
        assert bad.returncode == 2 and says in bad.stderr, (args, bad.stderr)
        assert "Traceback" not in bad.stderr
    nowhere = run_cli("predict", "leanfit-pets", str(root), cwd=tmp_path / "work")
    assert nowhere.returncode == 2 and "no tracking database" in nowhere.stderr, nowhere.stderr
    unread = run_cli("predict", "leanfit-pets", str(root / "dog" / "notes.txt"), "--json",
                     "--tracking-uri", uri, cwd=tmp_path)  # fmt: skip
    assert unread.returncode == 2 and unread.stdout == "", unread.stdout  # no `[]` as an answer

    # by its run: MLflow downloads it with a pool of threads, which the command used to wait
    # for forever after printing its table
    by_run = run_cli("predict", f"runs:/{logged.run_id}/model", str(root / "cat"),
                     "--tracking-uri", uri, cwd=tmp_path, timeout=120)  # fmt: skip
    assert by_run.returncode == 0 and "image(s)" in by_run.stdout, by_run.stderr
    assert "Downloading artifacts" not in by_run.stderr  # (MLflow's bars, one per artifact)
    # a downloaded model's folder, on a machine with no tracking database: it needs none, and
    # none is made
    import mlflow.artifacts

    folder = tmp_path / "downloaded"
    mlflow.artifacts.download_artifacts(
        "models:/leanfit-pets/1", dst_path=str(folder), tracking_uri=uri
    )
    bare = tmp_path / "bare"
    bare.mkdir()
    alone = run_cli("predict", str(folder), str(root / "cat"), cwd=bare)
    assert alone.returncode == 0 and "cat" in alone.stdout, alone.stderr
    assert list(bare.iterdir()) == []


class Constant(nn.Module):
    """Always answers class 0."""

    def forward(self, x):
        return torch.stack([torch.ones(len(x)), torch.zeros(len(x))], dim=1)


def test_the_confusion_matrix_shows_what_accuracy_hides_on_a_lopsided_test_split(tmp_path):
    """Six dark images and two bright: always answering "dark" scores 75%, and the report says
    that is just the largest class, and that "bright" is never recognised."""
    from leanfit.report.confusion import (
        confusion_matrix,
        largest_class_share,
        per_class,
        per_class_html,
        plot_confusion,
    )

    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    images = torch.where(labels.view(-1, 1, 1, 1) == 1, 220, 30).to(torch.uint8).expand(8, 1, 4, 4)
    constant = confusion_matrix(Constant(), images, labels, 2)
    assert constant.tolist() == [[6, 0], [2, 0]]
    assert largest_class_share(constant) == 0.75 == accuracy(Constant(), images, labels)
    dark, bright = per_class(constant, ["dark", "bright"])
    assert dark == {"class": "dark", "images": 6, "recall": 1.0, "mistaken_for": None,
                    "mistaken": 0}  # fmt: skip
    assert bright == {"class": "bright", "images": 2, "recall": 0.0, "mistaken_for": "dark",
                      "mistaken": 2}  # fmt: skip
    table = per_class_html([dark, bright])
    assert table.index("bright") < table.index(">dark<")  # the worst class first
    assert confusion_matrix(Brightness(1.0), images, labels, 2).tolist() == [[6, 0], [0, 2]]
    assert confusion_matrix(Brightness(-1.0), images, labels, 2).tolist() == [[0, 6], [2, 0]]

    png = plot_confusion(constant, ["dark", "bright"], tmp_path / "c.png", "always dark")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Memoriser(nn.Module):
    """Right on the images it was shown (by their mean), class 0 on any other: a model scored
    on images it trained on."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        super().__init__()
        self.register_buffer("means", (images.float() / 255).mean(dim=(1, 2, 3)))
        self.register_buffer("labels", labels.float())

    def forward(self, x):
        hit = ((x.mean(dim=(1, 2, 3))[:, None] - self.means[None, :]).abs() < 1e-4).float()
        label = (hit * self.labels[None, :]).sum(1)
        return torch.stack([1 - label, label], dim=1)


class AlwaysOne(nn.Module):
    def forward(self, x):
        m = x.mean(dim=(1, 2, 3)) * 0  # (of the batch's size, which ONNX keeps free)
        return torch.stack([m, m + 1], dim=1)


def test_the_champion_is_not_judged_on_test_images_it_trained_on(tmp_path):
    """The data changed, so its splits were drawn again, and 8 of this run's 12 test images are
    ones the champion trained on. Scored on all 12, it kept its place (8 of 12 against the
    challenger's 6); on the 4 it never saw, it gets none right and the challenger all four. The
    run of each registered version keeps the keys of the images it saw; without them (a version
    registered before they were kept) the comparison is the whole test split, as before."""
    values = torch.arange(12, dtype=torch.uint8) * 20 + 5  # 12 images, each its own brightness
    images = values.view(-1, 1, 1, 1).expand(12, 1, 4, 4).contiguous()
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    seen = images[:8]  # the champion's training images, in this run's test split

    def decide(name: str, keep_seen: bool):
        uri = f"sqlite:///{tmp_path / name}.db"
        experiment = experiment_from_dict(digits_config(name=name, tracking={"uri": uri}), tmp_path)
        dataset = LoadedDataset(images, labels, ["a", "b"], "e" * 64, "test-images")
        registry = Registry(experiment, dataset)
        parent = registry.client.create_run(registry.logger.experiment_id).info.run_id
        decisions = []
        for trial, (model, saw) in enumerate(
            ((Memoriser(seen, labels[:8]), seen), (AlwaysOne(), images[8:]))
        ):
            s = summary(trial, accuracy(model, images, labels), 100)
            logged = registry.log_model(s, model, parent, images[:2])
            decisions.append(
                registry.register(logged, s, model, images, labels, saw if keep_seen else None)
            )
        return decisions

    first, second = decide("fair", keep_seen=True)
    assert first.promoted  # the first model
    assert second.promoted, second.reason
    assert "test accuracy 1.0000 against 0.0000" in second.reason
    assert "on the same 4 test images (8 of the test split left out" in second.reason
    assert "on 4 images one is 25 points of accuracy, a weak ground for this decision" in (
        second.reason
    )
    _, unkept = decide("before", keep_seen=False)
    assert not unkept.promoted and "0.5000, the champion (version 1) has 0.6667" in unkept.reason


def test_the_images_the_champion_saw_are_known_by_their_files_under_other_decoding(tmp_path):
    """Another `fit` or `image_size` decodes every file to other pixels: the champion's
    training images, now in the test split, were not recognised, and it was judged "on the same
    test data" on 19 of its own 29 training images (QA). Its run keeps its files' keys too."""
    import numpy as np

    values = torch.arange(12, dtype=torch.uint8) * 20 + 5
    images = values.view(-1, 1, 1, 1).expand(12, 1, 4, 4).contiguous()
    labels = torch.tensor([0] * 6 + [1] * 6)
    file_keys = np.arange(1, 13, dtype=np.uint64) * np.uint64(7919)
    files = [f"{'ab'[int(c)]}/{i}.png" for i, c in enumerate(labels)]
    uri = f"sqlite:///{tmp_path / 'm'}.db"
    experiment = experiment_from_dict(digits_config(name="m", tracking={"uri": uri}), tmp_path)
    dataset = LoadedDataset(
        images, labels, ["a", "b"], "e" * 64, "folder", files=files, file_keys=file_keys
    )
    registry = Registry(experiment, dataset)
    parent = registry.client.create_run(registry.logger.experiment_id).info.run_id
    champion = AlwaysOne()
    s = summary(0, accuracy(champion, images, labels), 100)
    logged = registry.log_model(s, champion, parent, images[:2])
    seen = dataset.known_keys(np.arange(8))  # its training and validation images
    assert registry.register(logged, s, champion, images, labels, seen).promoted
    redecoded = images + 1  # the same files, decoded otherwise: no pixel key matches
    challenger = AlwaysOne()
    s = summary(1, accuracy(challenger, redecoded, labels), 90)
    logged = registry.log_model(s, challenger, parent, redecoded[:2])
    blind = registry.register(logged, s, challenger, redecoded, labels, None)
    assert "left out" not in blind.reason  # (by pixels alone)
    known = registry.register(logged, s, challenger, redecoded, labels, None, file_keys)
    assert "on the same 4 test images (8 of the test split left out" in known.reason, known.reason


def test_predicts_score_finds_the_class_folder_above_sub_folders_and_in_either_unicode_form():
    """Training counts `cat/more/x.png` as a cat; the score left it out. A folder named on a Mac
    (or unzipped from a Mac's zip) spells "café" as "cafe" + a combining accent, which did not
    match the model's class."""
    from leanfit.models.predict import Prediction, folder_score

    classes = ["café", "chat noir"]
    predictions = [
        Prediction("data/chat noir/a.png", [("chat noir", 0.9)]),
        Prediction("data/chat noir/more/b.png", [("café", 0.6)]),  # wrong
        Prediction("data/cafe\u0301/c.png", [("café", 0.8)]),
        Prediction("unsorted/d.png", [("café", 0.7)]),  # in no class folder: not scored
    ]
    score = folder_score(predictions, classes)
    assert (score.files, score.correct) == (3, 2)
    assert score.by_class == {"café": (1, 1), "chat noir": (1, 2)}
    assert score.confused == [("chat noir", "café", 1)]


def test_the_champion_is_read_by_class_name_when_the_classes_changed(tmp_path):
    """A class added, removed or renamed since the champion trained moves the other classes'
    positions. Read by position, a champion that was always right scored 0 and any challenger
    won (seen in QA: 1.0000 against 0.0000 after a class folder was removed, and again after
    one was renamed). It is read by its card's class names; a class it does not know counts as
    its errors, and the decision says the classes differ."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = experiment_from_dict(digits_config(tracking={"uri": uri}), tmp_path)
    images, labels = data()

    def register(dataset, model, trial, test_images, test_labels):
        registry = Registry(experiment, dataset)
        parent = registry.client.create_run(registry.logger.experiment_id).info.run_id
        s = summary(trial, accuracy(model, test_images, test_labels), 100)
        logged = registry.log_model(s, model, parent, test_images[:2])
        return registry.register(logged, s, model, test_images, test_labels)

    first = register(LoadedDataset(images, labels, ["dark", "bright"], "a" * 64, "t"),
                     Brightness(1.0), 1, images, labels)  # fmt: skip
    assert first.promoted
    # the same images, the classes now in the other order (a class renamed, or one added
    # before them): the champion is still right on every image, as is this challenger
    swapped = LoadedDataset(images, 1 - labels, ["bright", "dark"], "b" * 64, "t")
    again = register(swapped, Brightness(-1.0), 2, images, 1 - labels)
    assert not again.promoted, again.reason
    assert "test accuracy 1.0000, the champion (version 1) has 1.0000" in again.reason
    assert "version 1 was trained on the same classes in another order (read by name)" in (
        again.reason
    )
    # a class it never saw: its images are the champion's errors, and the challenger's right
    grey = torch.full((10, 1, 4, 4), 128, dtype=torch.uint8)
    more_images = torch.cat([images, grey])
    more_labels = torch.cat([labels, torch.full((10,), 2)])
    three = LoadedDataset(more_images, more_labels, ["dark", "bright", "grey"], "c" * 64, "t")
    knows_grey = ThreeShades()
    added = register(three, knows_grey, 3, more_images, more_labels)
    assert added.promoted, added.reason
    assert "test accuracy 1.0000 against 0.8000 for version 1" in added.reason, added.reason
    assert "('grey' new to it, counted as its errors)" in added.reason, added.reason


class ThreeShades(nn.Module):
    """dark, bright or grey, by the mean brightness."""

    def __init__(self):
        super().__init__()
        self.centres = nn.Parameter(torch.tensor([30.0, 220.0, 128.0]) / 255.0)

    def forward(self, x):
        return -(x.mean(dim=(1, 2, 3)).unsqueeze(1) - self.centres).abs()


def brightness_registry(tmp_path):
    """A registry of two-class images, and `logged_model(model, trial)`: the model logged as a
    final model of a pipeline run, and its summary."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = experiment_from_dict(digits_config(tracking={"uri": uri}), tmp_path)
    images, labels = data()
    registry = Registry(
        experiment, LoadedDataset(images, labels, ["dark", "bright"], "a" * 64, "t")
    )
    parent = registry.client.create_run(registry.logger.experiment_id).info.run_id

    def logged_model(model, trial):
        s = summary(trial, accuracy(model, images, labels), 100)
        return registry.log_model(s, model, parent, images[:2]), s

    return registry, images, labels, logged_model


def test_a_version_a_killed_run_registered_is_compared_by_the_next_run(tmp_path):
    """A `kill -9` after the new version was registered (challenger) and before it was compared
    with the champion: the next run on the same data finds the same weights registered, and
    used to say "nothing new to register", so the champion stayed, one that cannot see a class
    the data has now. It is compared instead."""
    from leanfit.track.registry import weights_digest

    registry, images, labels, logged_model = brightness_registry(tmp_path)
    wrong, right = Brightness(-1.0), Brightness(1.0)
    assert registry.register(*logged_model(wrong, 1), wrong, images, labels).promoted
    logged, s = logged_model(right, 2)
    killed = registry._register_new(logged, s, weights_digest(right), None)  # then killed
    decision = registry.register(logged, s, right, images, labels)
    assert decision.promoted and str(decision.version) == killed, decision
    assert (
        "(the same weights as registered by an earlier run on this data) is the new champion"
        in (decision.reason)
    )
    versions = registry.client.search_model_versions("name='leanfit-digits'")
    assert sorted(int(v.version) for v in versions) == [1, 2], "registered once"


def test_a_version_a_killed_run_registered_but_never_tagged_is_taken_up(tmp_path):
    """A `kill -9` in the one call between registering a version and tagging it left a version
    with no tags, which the next run did not know as the same weights: it registered them again
    beside it. It is found by its weights and finished (tags, challenger), then compared."""
    import mlflow

    registry, images, labels, logged_model = brightness_registry(tmp_path)
    wrong, right = Brightness(-1.0), Brightness(1.0)
    assert registry.register(*logged_model(wrong, 1), wrong, images, labels).promoted
    killed, _ = logged_model(right, 2)
    orphan = str(mlflow.register_model(killed.model_uri, "leanfit-digits").version)  # then -9
    logged, s = logged_model(right, 2)  # the next run's final model: the same weights
    decision = registry.register(logged, s, right, images, labels, seen_images=images[:4])
    assert decision.promoted and str(decision.version) == orphan, decision
    versions = registry.client.search_model_versions("name='leanfit-digits'")
    assert sorted(int(v.version) for v in versions) == [1, 2], "registered once"
    taken = registry.client.get_model_version("leanfit-digits", orphan)
    assert taken.tags["leanfit.dataset_digest"] == "a" * 64 and taken.tags["leanfit.params"]


def test_a_file_given_twice_is_classified_once(tmp_path):
    """`predict MODEL dir dir/` or a folder and a file in it: the accuracy on a labelled folder
    counted each file twice (80 files of a folder of 40)."""
    from pathlib import Path

    from leanfit.models.predict import image_files
    from tests.support import write_image_folder

    root = write_image_folder(tmp_path / "imgs", {"cat": 3, "dog": 2}, size=8)
    one = sorted((root / "cat").iterdir())[0]
    files = image_files([root, Path(f"{root}/"), one, root / "cat" / ".." / "cat" / one.name])
    assert len(files) == 5 and len({str(f) for f in files}) == 5
    (root / "dog" / "also.png").symlink_to(one)  # another name for one file: still two names
    assert len(image_files([root])) == 6


def test_a_champion_of_other_decoding_settings_reads_the_test_files_as_its_card_says(
    tmp_path, reference_genotype, monkeypatch
):
    """A champion trained at 12 px padded was scored on the challenger's images, 16 px
    squeezed (a leanfit network takes any size): not what it answers in use (`leanfit
    predict` decodes by the card), so the registry's figure disagreed with predict's on the same
    files. It reads the test files as its card decodes them now."""
    import shutil

    from PIL import Image

    from leanfit.data.sources import load_dataset
    from leanfit.models.deploy import predicted_classes
    from tests.support import write_image_folder

    monkeypatch.chdir(tmp_path)  # (MLflow's artifacts: ./mlruns)
    root = write_image_folder(tmp_path / "imgs", {"a": 12, "b": 12}, size=20)
    for wide in sorted(root.rglob("*.png"))[::3]:  # not square: pad and squeeze differ
        Image.open(wide).resize((30, 14)).save(wide)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def experiment(size: int, fit: str):
        dataset = {"source": "imagefolder", "path": str(root), "image_size": size, "fit": fit}
        return experiment_from_dict(
            digits_config(name="pets", tracking={"uri": uri}, dataset=dataset), tmp_path
        )

    champion = leanfit_classifier(reference_genotype, channels=3, size=12, classes=2)
    # each file moved to the folder of the class the champion gives it at 12 px padded: right
    # on every file as its card decodes them
    padded = load_dataset(experiment(12, "pad"))
    with torch.no_grad():  # (a random network answers one class: its bias splits them)
        logits = champion(padded.images.float() / 255)
        champion.net.head.bias[1] -= (logits[:, 1] - logits[:, 0]).median() + 1e-4
    answers = predicted_classes(champion, padded.images)
    assert 0 < int(answers.sum()) < len(answers)
    moved = tmp_path / "moved"
    for name, answer in zip(padded.files, answers.tolist(), strict=True):
        (moved / "ab"[answer]).mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, moved / "ab"[answer] / name.replace("/", "-"))
    shutil.rmtree(root)
    moved.rename(root)

    registry = Registry(experiment(12, "pad"), first := load_dataset(experiment(12, "pad")))
    assert accuracy(champion, first.images, first.labels) == 1.0
    parent = registry.client.create_run(registry.logger.experiment_id).info.run_id
    s = summary(0, 1.0, 100)
    registry.register(registry.log_model(s, champion, parent, first.images[:2]), s, champion,
                      first.images, first.labels)  # fmt: skip

    now = load_dataset(experiment(16, "squeeze"))
    squeezed = accuracy(champion, now.images, now.labels)
    assert squeezed < 1.0  # as it was scored before
    registry = Registry(experiment(16, "squeeze"), now)
    challenger = leanfit_classifier(reference_genotype, channels=3, size=16, classes=2)
    with torch.no_grad():
        challenger.net.head.bias.add_(0.5)
    s = summary(1, accuracy(challenger, now.images, now.labels), 90)
    logged = registry.log_model(s, challenger, parent, now.images[:2])
    decision = registry.register(logged, s, challenger, now.images, now.labels,
                                 test_names=list(now.files))  # fmt: skip
    assert decision.champion_test_accuracy == 1.0, decision
    assert not decision.promoted
    assert "read the test files as its card decodes them (12x12, 3 channel(s), fit pad" in (
        decision.reason
    ), decision.reason
