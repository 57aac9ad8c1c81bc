"""Component 5: the top-k Pareto configurations at the full budget on the whole training split."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output


def final_train(
    experiment: str,
    base_dir: str,
    plan: Input[Dataset],
    policy: Input[Artifact],
    front: Input[Artifact],
    models: Output[Model],
    metrics: Output[Metrics],
):
    from leanfit import steps

    figures = steps.run_step(
        "final-train",
        steps.final_train,
        experiment,
        base_dir,
        plan_path=plan.path,
        policy_path=policy.path,
        front_path=front.path,
        models_dir=models.path,
    )
    for name, value in figures.items():
        metrics.log_metric(name, value)
