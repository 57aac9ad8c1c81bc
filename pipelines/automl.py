"""The AutoML pipeline: fingerprint → subset → augment policy → search → final train →
evaluate & register, with the cluster settings of the experiment file on its tasks.

`build_pipeline(settings)` returns the `@dsl.pipeline` function for one experiment file: its
image, and on the cluster (kfp-kubernetes) the GPU type and limit, node selector and tolerations on
the search and training tasks, the PVC for the work folder and the credentials Secret on every task.
Caching is off everywhere: each step records to MLflow, and leanfit itself reuses what is reusable
(a finished search of the same settings and data).
"""

# No `from __future__ import annotations`: KFP reads the pipeline's parameter types at runtime.
from pathlib import Path

from leanfit.config import Experiment

PIPELINE_NAME = "leanfit-automl"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # set on GPU nodes by NVIDIA GPU feature discovery
COMPILED = Path(__file__).resolve().parent / "automl_pipeline.yaml"


def build_pipeline(settings: Experiment):
    from kfp import dsl, kubernetes
    from leanfit.components import build_components

    steps = build_components(settings.executor.kubernetes.image)
    mount_path = settings.executor.kubernetes.mount_path

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="leanfit: find small, accurate image classifiers; register the best in MLflow",
    )
    def automl_pipeline(experiment: str, base_dir: str = mount_path) -> str:
        fingerprint = steps["fingerprint"](experiment=experiment, base_dir=base_dir)
        subset = steps["subset"](
            experiment=experiment, base_dir=base_dir, manifest=fingerprint.outputs["manifest"]
        )
        plan = subset.outputs["plan"]
        policy = steps["augment-policy"](experiment=experiment, base_dir=base_dir, plan=plan)
        search = steps["search"](
            experiment=experiment,
            base_dir=base_dir,
            plan=plan,
            policy=policy.outputs["policy"],
            pipeline_run_id=fingerprint.outputs["pipeline_run_id"],
        )
        final = steps["final-train"](
            experiment=experiment,
            base_dir=base_dir,
            plan=plan,
            policy=policy.outputs["policy"],
            front=search.outputs["front"],
        )
        register = steps["evaluate-register"](
            experiment=experiment,
            base_dir=base_dir,
            plan=plan,
            policy=policy.outputs["policy"],
            models=final.outputs["models"],
            front=search.outputs["front"],
            pipeline_run_id=fingerprint.outputs["pipeline_run_id"],
        )
        tasks = {
            "fingerprint": fingerprint,
            "subset": subset,
            "augment-policy": policy,
            "search": search,
            "final-train": final,
            "evaluate-register": register,
        }
        for name, task in tasks.items():
            task.set_display_name(name)
            task.set_caching_options(False)
            # the search trains in its own pod only with the local executor: with Kubernetes
            # its trials are Jobs that ask for their own GPUs, and it only follows them
            trains = name == "final-train" or (
                name == "search" and settings.executor.kind == "local"
            )
            apply_cluster_settings(task, settings, gpu=trains)
        for env, path in POD_FIELDS.items():  # trial Jobs are owned by the search pod
            kubernetes.use_field_path_as_env(search, env_name=env, field_path=path)
        return register.outputs["Output"]

    return automl_pipeline


def apply_cluster_settings(task, experiment: Experiment, gpu: bool) -> None:
    """kfp-kubernetes settings from `executor.kubernetes` (ignored by `kfp.local`)."""
    from kfp import kubernetes

    k8s = experiment.executor.kubernetes
    if k8s.pvc:
        kubernetes.mount_pvc(task, pvc_name=k8s.pvc, mount_path=k8s.mount_path)
    secret = getattr(k8s, "secret", None)
    if secret:
        kubernetes.use_secret_as_env(
            task, secret_name=secret, secret_key_to_env=SECRET_ENV, optional=True
        )
    if not gpu:
        return
    if k8s.gpus:
        task.set_accelerator_type("nvidia.com/gpu")
        task.set_accelerator_limit(k8s.gpus)
    if k8s.cpu:
        task.set_cpu_request(k8s.cpu).set_cpu_limit(k8s.cpu)
    if k8s.memory:
        task.set_memory_request(k8s.memory).set_memory_limit(k8s.memory)
    selector = dict(k8s.node_selector)
    if k8s.gpu_type and GPU_PRODUCT_LABEL not in selector:
        selector[GPU_PRODUCT_LABEL] = k8s.gpu_type
    for key, value in sorted(selector.items()):
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for t in k8s.tolerations:
        kubernetes.add_toleration(
            task,
            key=t.get("key"),
            operator=t.get("operator", "Equal"),
            value=t.get("value"),
            effect=t.get("effect"),
            toleration_seconds=t.get("tolerationSeconds"),
        )


# The search pod's identity, for the owner reference on its trial Jobs (execute/kubernetes.py).
POD_FIELDS = {
    "POD_NAME": "metadata.name",
    "POD_UID": "metadata.uid",
    "POD_NAMESPACE": "metadata.namespace",
}

# Keys of the credentials Secret, and the environment variables they become.
SECRET_ENV = {
    "MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL",
}
