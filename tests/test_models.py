"""The builder: every genotype of the space builds and runs, at any size; its cost is counted."""

from __future__ import annotations

import pytest
import torch

from leanfit.config import load_experiment
from leanfit.models import build_model, count_macs, count_params
from leanfit.space.architecture import MODULE_PARAMS, flatten_genotype
from tests.support import EXAMPLES

SPACE = load_experiment(EXAMPLES / "digits.yaml").search_space()


@pytest.mark.parametrize("seed", range(60))
def test_every_sampled_genotype_builds_and_runs_forward(seed):
    genotype = SPACE.sample(seed)
    for channels, size in [(1, 16), (3, 32), (3, 7)]:
        model = build_model(genotype, channels, size, num_classes=10).eval()
        with torch.no_grad():
            out = model(torch.randn(2, channels, size, size))
        assert out.shape == (2, 10)
        assert torch.isfinite(out).all()


def one_block_model(module: str):
    """A network of one block of the type, with stride, squeeze-excitation, repeats and
    hardswish where the type takes them; 3 channels, 16x16, 5 classes."""
    block = {"type": module}
    defaults = {"width": 8, "kernel": 3, "stride": 2, "expansion": 2, "se": True,
                "repeats": 2, "activation": "hardswish"}  # fmt: skip
    block.update({k: defaults[k] for k in MODULE_PARAMS[module]})
    genotype = flatten_genotype({"stem_width": 8, "blocks": [block]}, 1, tuple(MODULE_PARAMS))
    return build_model(genotype, 3, 16, 5)


@pytest.mark.parametrize("module", list(MODULE_PARAMS))
def test_each_module_type_builds_with_stride_and_residuals(module):
    model = one_block_model(module)
    out = model(torch.randn(4, 3, 16, 16))
    assert out.shape == (4, 5)
    out.sum().backward()  # trains: gradients flow through every module type


def test_params_and_macs_of_a_hand_checked_network():
    genotype = flatten_genotype(
        {"stem_width": 4, "blocks": [{"type": "conv", "width": 8, "kernel": 3, "stride": 1,
                                      "repeats": 1, "activation": "relu"}]},
        1,
        ("conv",),
    )  # fmt: skip
    model = build_model(genotype, in_channels=1, image_size=8, num_classes=10)
    # stem: 3x3 conv 1->4 (36) + BN (8); block: 3x3 conv 4->8 (288) + BN (16); head 8*10+10
    assert count_params(model) == 36 + 8 + 288 + 16 + 90
    # convolutions: 8*8 positions x (36 + 288) multiply-adds; head 80; BN/ReLU are not MACs
    assert count_macs(model, 1, 8) == 64 * (36 + 288) + 80


def test_the_space_reaches_down_to_small_models():
    counts = [count_params(build_model(SPACE.sample(s), 1, 16, 10)) for s in range(300)]
    assert min(counts) < 2_000
    assert max(counts) > 20_000


def test_onnx_export_takes_any_model_whose_input_has_another_name(tmp_path):
    """The exporter's free batch size was given by the name of leanfit's models' input (`x`):
    an `nn.Sequential` (input `input`) was refused by torch.export."""
    import numpy as np
    import onnxruntime

    from leanfit.models.deploy import export_onnx

    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3)
    ).eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, torch.rand(2, 1, 8, 8), path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    five = torch.rand(5, 1, 8, 8)
    got = session.run(None, {"images": five.numpy()})[0]
    with torch.no_grad():
        assert np.allclose(got, model(five).numpy(), atol=1e-4)


@pytest.mark.parametrize("module", list(MODULE_PARAMS))
def test_each_module_type_exports_to_onnx_by_the_fast_exporter(module, tmp_path, monkeypatch):
    """The traced exporter takes every block of the space (0.14 s a model, against 5.2 s for
    torch.export's: benchmarks/onnx_export.py), with squeeze-excitation, hardswish, strides and
    repeats: the slower one is not reached. Checked at another batch size than the export's."""
    import numpy as np
    import onnxruntime

    from leanfit.models import deploy

    def not_reached(*args):
        raise AssertionError("the torch.export-based exporter was used")

    monkeypatch.setattr(deploy, "_export_dynamo", not_reached)
    net = one_block_model(module)
    net(torch.randn(8, 3, 16, 16))  # batch-norm statistics that are not the initial ones
    model = deploy.Classifier(net.eval(), [0.5] * 3, [0.25] * 3).eval()
    path = tmp_path / "m.onnx"
    deploy.export_onnx(model, torch.rand(2, 3, 16, 16), path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    seven = torch.rand(7, 3, 16, 16)
    with torch.no_grad():
        assert np.allclose(session.run(None, {"images": seven.numpy()})[0], model(seven), atol=1e-4)
    assert not path.with_name("m.onnx.tmp").exists()


def test_onnx_export_falls_back_to_the_other_exporter_and_never_writes_a_wrong_file(
    tmp_path, monkeypatch
):
    """Where the traced exporter fails (a model it cannot trace, a torch without it) or writes a
    file that answers otherwise, torch.export's exporter writes it; where that fails too, no file
    is left."""
    import numpy as np
    import onnxruntime

    from leanfit.models import deploy

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten()).eval()
    other = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten()).eval()
    traced = deploy._export_traced

    def broken(*args):
        raise RuntimeError("no TorchScript here")

    def wrong(classifier, example, tmp):  # a file of another model's weights
        traced(other, example, tmp)

    for first in (broken, wrong):
        monkeypatch.setattr(deploy, "_export_traced", first)
        path = tmp_path / f"{first.__name__}.onnx"
        deploy.export_onnx(model, torch.rand(2, 1, 6, 6), path)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = torch.rand(3, 1, 6, 6)
        with torch.no_grad():
            assert np.allclose(session.run(None, {"images": x.numpy()})[0], model(x), atol=1e-4)

    monkeypatch.setattr(deploy, "_export_dynamo", wrong)
    with pytest.raises(RuntimeError, match="does not answer as the model does"):
        deploy.export_onnx(model, torch.rand(2, 1, 6, 6), tmp_path / "none.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.onnx", "wrong.onnx"]
