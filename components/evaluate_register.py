"""Component 6: test metrics, models logged to MLflow, the registry's challenger and champion."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output


def evaluate_register(
    experiment: str,
    base_dir: str,
    plan: Input[Dataset],
    policy: Input[Artifact],
    models: Input[Model],
    front: Input[Artifact],
    pipeline_run_id: str,
    metrics: Output[Metrics],
    report: Output[HTML],
) -> str:
    import json

    from leanfit import steps

    result = steps.run_step(
        "evaluate-register",
        steps.evaluate_register,
        experiment,
        base_dir,
        plan_path=plan.path,
        policy_path=policy.path,
        models_dir=models.path,
        front_path=front.path,
        pipeline_run_id=pipeline_run_id,
        report_path=report.path,
    )
    metrics.log_metric("test_accuracy", result["test_accuracy"])
    metrics.log_metric("params", result["params"])
    metrics.log_metric("registered_version", int(result["version"]))
    return json.dumps(result, sort_keys=True)
