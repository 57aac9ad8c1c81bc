"""Component 3: the augmentation policy, fixed in the file or a short RandAugment (N, M) search."""

from kfp.dsl import Artifact, Dataset, Input, Output


def augment_policy(experiment: str, base_dir: str, plan: Input[Dataset], policy: Output[Artifact]):
    from leanfit import steps

    chosen = steps.run_step(
        "augment-policy",
        steps.augment_policy,
        experiment,
        base_dir,
        plan_path=plan.path,
        policy_path=policy.path,
    )
    policy.metadata.update({k: v for k, v in chosen.items() if k in ("mode", "augment", "n", "m")})
