"""Component 2: stratified, seeded splits and the search's low-fidelity subset (the data plan)."""

from kfp.dsl import Dataset, Input, Output


def subset(experiment: str, base_dir: str, manifest: Input[Dataset], plan: Output[Dataset]):
    from leanfit import steps

    counts = steps.run_step(
        "subset",
        steps.subset,
        experiment,
        base_dir,
        manifest_path=manifest.path,
        plan_path=plan.path,
    )
    plan.metadata.update(counts)
