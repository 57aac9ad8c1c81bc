"""Component 4: the search (skopt + ASHA + ParEGO) with the executor the file names."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output


def search(
    experiment: str,
    base_dir: str,
    plan: Input[Dataset],
    policy: Input[Artifact],
    pipeline_run_id: str,
    front: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
):
    from leanfit import steps

    figures = steps.run_step(
        "search",
        steps.search,
        experiment,
        base_dir,
        plan_path=plan.path,
        policy_path=policy.path,
        pipeline_run_id=pipeline_run_id,
        front_path=front.path,
        report_path=report.path,
    )
    for name, value in figures.items():
        metrics.log_metric(name, value)
