"""The trainer on a CUDA GPU. CI has none, so these are skipped there; run them on a lent GPU.

On a GPU the trainer takes other paths than on a CPU: the batches are augmented on the GPU,
training runs under bf16 autocast, and nothing is made ahead in a thread. The CPU tests cover
none of that.
"""

from __future__ import annotations

import pytest
import torch

from leanfit.config import TrainingConfig
from leanfit.models.deploy import accuracy, load_classifier
from leanfit.train.trainer import Budget, train
from tests.test_trainer import EXPERIMENT, genotype_and_hp

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)"
)


def test_a_model_trained_on_the_gpu_is_as_good_and_loads_on_a_cpu(
    digits, reference_genotype, tmp_path
):
    config, hp = genotype_and_hp(reference_genotype)
    settings = EXPERIMENT.training.model_copy(update={"device": "cuda"})
    result = train(
        config, hp, digits, Budget(10), settings, seed=0, checkpoint_to=tmp_path / "g.pt"
    )
    assert result.status == "ok", result.reason
    assert result.val_accuracy >= 0.95, f"only {result.val_accuracy:.3f} on the GPU"

    # the registered model's path: the checkpoint loaded on the CPU, its normalisation in front
    model = load_classifier(tmp_path / "g.pt", digits.channels, digits.num_classes)
    assert all(p.device.type == "cpu" for p in model.parameters())
    cpu_accuracy = accuracy(model, digits.val_x, digits.val_y)
    assert abs(cpu_accuracy - result.val_accuracy) <= 0.02


def test_resuming_on_the_gpu_follows_the_same_schedule(digits, reference_genotype, tmp_path):
    config, hp = genotype_and_hp(reference_genotype)
    settings = TrainingConfig(device="cuda", augment="randaugment", crop_padding=1, flip=False)

    def run(budget, to, **resume):
        return train(config, hp, digits, budget, settings, seed=5, checkpoint_to=to, **resume)

    straight = run(Budget(6), tmp_path / "s.pt")
    first = run(Budget(2, 6), tmp_path / "a.pt")
    resumed = run(Budget(6), tmp_path / "b.pt", resume_from=tmp_path / "a.pt")
    assert first.epochs == 2 and resumed.status == "ok", resumed.reason
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in straight.history]
    # cuDNN's kernels are not bit-for-bit repeatable: the runs agree closely, not exactly
    assert abs(resumed.val_accuracy - straight.val_accuracy) <= 0.03


def test_a_trial_in_a_gpu_worker_trains_on_the_gpu(reference_genotype, tmp_path):
    """The local executor pins each worker to a GPU; the real trial runner trains there."""
    from leanfit.execute.base import TrialJob
    from leanfit.execute.local import LocalExecutor
    from leanfit.search.run import runner_for
    from leanfit.train.trial import TrialSpec

    config, _ = genotype_and_hp(reference_genotype)
    spec = TrialSpec(trial_id="gpu", config=config, epochs=3, checkpoint_to=str(tmp_path / "t.pt"))
    with LocalExecutor(runner_for(EXPERIMENT, 1), 1, trial_timeout=300, gpus=[0]) as executor:
        executor.submit(TrialJob(spec))
        outcomes = []
        while not outcomes:
            outcomes = executor.wait(timeout=5.0)
    result = outcomes[0].result
    assert not outcomes[0].infrastructure_failure
    assert result.status == "ok", result.reason
    assert result.val_accuracy > 0.5
    # trained on the GPU: the checkpoint's tensors were saved from there
    state = torch.load(tmp_path / "t.pt", map_location=None, weights_only=False)["model"]
    assert next(iter(state.values())).device.type == "cuda"
