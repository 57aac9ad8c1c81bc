"""The cluster manifests and the images: they render, validate and lint, and keep leanfit's rules.

Every kustomization (manifests/base and each overlay) is rendered with kubectl kustomize and
checked against the Kubernetes API schemas (kubernetes-validate), checkov and the rules below; the
Dockerfiles with hadolint and checkov. The linters live in .venv-lint (`make test` installs them
from constraints-lint.txt): checkov's exact pins clash with the project's.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from leanfit.config import experiment_from_dict

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
SECRET_TEMPLATES = MANIFESTS / "secrets"
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cuda"]
LINT_VENV = ROOT / ".venv-lint"
KUSTOMIZATIONS = ["base", "overlays/gpu", "overlays/kubeflow"]

# The oldest Kubernetes the manifests support, and the newest that kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
NAMESPACE = "leanfit"
LEANFIT_IMAGE = "ghcr.io/leanfit/leanfit"
# What the search step does with the API (leanfit.execute.kubernetes), and nothing more.
SEARCH_RULES = {
    ("batch", "jobs", verb) for verb in ("create", "get", "list", "watch", "delete")
} | {("", resource, verb) for resource in ("pods", "pods/log") for verb in ("get", "list")}
# Secrets that an existing install provides, with the keys the manifests read from them.
EXTERNAL_SECRETS = {"overlays/kubeflow": {"mlpipeline-minio-artifact": {"accesskey", "secretkey"}}}

POD_SPEC_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet"}


# -- tools ---------------------------------------------------------------------------------------


def lint_tool(name: str) -> Path:
    """A linter from .venv-lint; a missing one fails the test (a skip would check nothing)."""
    path = LINT_VENV / "bin" / name
    if not path.exists():
        pytest.fail(
            f"{path.relative_to(ROOT)} is missing: the linters are installed by `make test` "
            f"(or `make {LINT_VENV.name}/.installed`)"
        )
    return path


def kubectl() -> str:
    """The kubectl of .venv-lint (pinned), else the one on PATH."""
    path = LINT_VENV / "bin" / "kubectl"
    if path.exists():
        return str(path)
    found = shutil.which("kubectl")
    return found if found else str(lint_tool("kubectl"))


def run(*command: str | Path, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


# -- rendered manifests --------------------------------------------------------------------------


class Rendered:
    """One kustomization as `kubectl kustomize` prints it: the file and its objects."""

    def __init__(self, name: str, path: Path):
        self.name = name
        self.path = path
        self.docs: list[dict] = [d for d in yaml.safe_load_all(path.read_text()) if d]

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def workloads(self) -> list[tuple[dict, dict]]:
        """(object, pod spec) for every object that makes pods."""
        out = []
        for doc in self.docs:
            path = POD_SPEC_PATHS.get(doc["kind"])
            if path is not None:
                spec = doc
                for key in path:
                    spec = spec[key]
                out.append((doc, spec))
        return out

    def containers(self) -> list[tuple[str, dict, dict]]:
        """(where, pod spec, container) for every container and init container."""
        out = []
        for doc, spec in self.workloads():
            for field in ("initContainers", "containers"):
                for container in spec.get(field, []):
                    where = f"{self.name}: {doc['kind']} {doc['metadata']['name']}"
                    out.append((f"{where}, {field[:-1]} {container['name']}", spec, container))
        return out

    def pod_labels(self) -> dict[str, dict]:
        """Each workload's name to the labels of its pods."""
        out = {}
        for doc, _ in self.workloads():
            template = doc["spec"]
            if doc["kind"] == "CronJob":
                template = template["jobTemplate"]["spec"]
            out[doc["metadata"]["name"]] = template["template"]["metadata"]["labels"]
        return out

    def experiment(self) -> dict:
        """The experiment file in the ConfigMap that the watch CronJob mounts."""
        (config_map,) = [
            d
            for d in self.of_kind("ConfigMap")
            if d["metadata"]["name"].startswith("leanfit-experiment")
        ]
        return yaml.safe_load(config_map["data"]["experiment.yaml"])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Rendered]:
    folder = tmp_path_factory.mktemp("rendered")
    out = {}
    for name in KUSTOMIZATIONS:
        result = run(kubectl(), "kustomize", MANIFESTS / name)
        assert result.returncode == 0, f"kubectl kustomize manifests/{name}:\n{result.stderr}"
        path = folder / f"{name.replace('/', '-')}.yaml"
        path.write_text(result.stdout)
        out[name] = Rendered(name, path)
    return out


@pytest.fixture(scope="module")
def checkov_reports(rendered) -> list[dict]:
    """One checkov run over every rendered kustomization and both Dockerfiles (it starts slowly)."""
    checkov = lint_tool("checkov")
    files = [r.path for r in rendered.values()] + DOCKERFILES
    result = run(
        checkov, "--config-file", ROOT / ".checkov.yaml", "--framework", "kubernetes",
        "dockerfile", "--output", "json", "-f", *files,
    )  # fmt: skip
    assert result.returncode in (0, 1), f"checkov did not run:\n{result.stderr[-3000:]}"
    reports = json.loads(result.stdout)
    return reports if isinstance(reports, list) else [reports]


def checkov_results(reports: list[dict], path: Path, outcome: str) -> list[dict]:
    return [
        check
        for report in reports
        for check in report["results"].get(outcome, [])
        if Path(check["file_path"]).name == path.name
    ]


# -- schemas and linters -------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_object_validates_against_the_kubernetes_api_schema(rendered, name, version):
    validate = lint_tool("kubernetes-validate")
    target = rendered[name]
    result = run(validate, "--strict", "--quiet", "-k", version, target.path)
    assert result.returncode == 0, f"manifests/{name} on Kubernetes {version}:\n{result.stdout}"
    assert len(target.docs) >= 10  # the render is the whole kustomization, not an empty file


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_checkov_finds_nothing_in_the_manifests(rendered, checkov_reports, name):
    path = rendered[name].path
    assert checkov_results(checkov_reports, path, "passed_checks"), f"checkov did not scan {name}"
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']}"
        for c in checkov_results(checkov_reports, path, "failed_checks")
    ]
    assert not failed, f"manifests/{name}:\n" + "\n".join(failed)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_checkov_finds_nothing_in_the_dockerfiles(checkov_reports, dockerfile):
    assert checkov_results(checkov_reports, dockerfile, "passed_checks")
    failed = [
        f"{c['check_id']} {c['check_name']}"
        for c in checkov_results(checkov_reports, dockerfile, "failed_checks")
    ]
    assert not failed, f"{dockerfile.name}:\n" + "\n".join(failed)


def test_every_checkov_skip_gives_its_reason(checkov_reports):
    skipped = [c for report in checkov_reports for c in report["results"].get("skipped_checks", [])]
    for check in skipped:
        reason = check["check_result"].get("suppress_comment") or ""
        assert len(reason) >= 30 and reason != "No comment provided", (
            f"{check['check_id']} on {check['resource']} is skipped without a reason"
        )
    # Skips in .checkov.yaml hold everywhere: each one follows a comment saying why.
    lines = (ROOT / ".checkov.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*-\s*CKV", line):
            assert lines[i - 1].strip().startswith("#"), f".checkov.yaml: no reason for {line}"


def test_hadolint_finds_nothing_in_the_dockerfiles():
    hadolint = lint_tool("hadolint")
    result = run(hadolint, "--no-color", "--failure-threshold", "style", *DOCKERFILES)
    assert result.returncode == 0, result.stdout + result.stderr
    for dockerfile in DOCKERFILES:
        lines = dockerfile.read_text().splitlines()
        for i, line in enumerate(lines):
            if "hadolint ignore" in line:
                assert lines[i - 1].startswith("#"), f"{dockerfile.name}:{i + 1}: no reason given"


# -- leanfit's rules for every container ---------------------------------------------------------


def lockdown_problems(where: str, pod: dict, container: dict) -> list[str]:
    """How a container falls short of leanfit's rules (empty when it meets them all)."""
    context = container.get("securityContext", {})
    pod_context = pod.get("securityContext", {})
    # These may be set for the whole pod; the container's own setting wins.
    inherited = {
        key: context.get(key, pod_context.get(key))
        for key in ("runAsNonRoot", "runAsUser", "seccompProfile")
    }
    problems = []
    if inherited["runAsNonRoot"] is not True:
        problems.append("runAsNonRoot is not true")
    if not isinstance(inherited["runAsUser"], int) or inherited["runAsUser"] == 0:
        problems.append(f"runAsUser {inherited['runAsUser']!r} is not a numeric non-root user")
    if (inherited["seccompProfile"] or {}).get("type") != "RuntimeDefault":
        problems.append("seccompProfile is not RuntimeDefault")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if context.get("privileged"):
        problems.append("privileged")
    capabilities = context.get("capabilities", {})
    if capabilities.get("drop") != ["ALL"] or capabilities.get("add"):
        problems.append("capabilities are not drop [ALL] and add nothing")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("the root filesystem is writable")
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(kind, {}):
                problems.append(f"no {resource} in resources.{kind}")
    image = container["image"]
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    if "@sha256:" not in image and (not tag or tag == "latest"):
        problems.append(f"image {image} is not pinned to a version")
    # A read-only root needs somewhere to write scratch files.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    tmp = [m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
    if not tmp or "emptyDir" not in volumes.get(tmp[0], {}):
        problems.append("no emptyDir at /tmp")
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        problems.append("shares a host namespace")
    return [f"{where}: {problem}" for problem in problems]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_container_is_locked_down(rendered, name):
    containers = rendered[name].containers()
    assert len(containers) >= 3  # the render holds the workloads, not an empty list
    problems = [p for c in containers for p in lockdown_problems(*c)]
    for doc, pod in rendered[name].workloads():
        if doc["kind"] in LONG_RUNNING:
            for container in pod["containers"]:
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in container:
                        problems.append(f"{name}: {doc['metadata']['name']} has no {probe}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_environment_references_name_variables_defined_before_them(rendered, name):
    # Kubernetes leaves $(VAR) as it is when VAR is not defined earlier in the list.
    problems = []
    for where, _, container in rendered[name].containers():
        defined: list[str] = []
        for env in container.get("env", []):
            for ref in re.findall(r"\$\((\w+)\)", env.get("value", "")):
                if ref not in defined:
                    problems.append(f"{where}: {env['name']} uses $({ref}) before it is defined")
            defined.append(env["name"])
        for arg in container.get("command", []) + container.get("args", []):
            for ref in re.findall(r"\$\((\w+)\)", arg):
                if ref not in defined:
                    problems.append(f"{where}: {arg!r} uses $({ref}), which is not defined")
    assert not problems, "\n".join(problems)


# -- RBAC ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_search_role_grants_exactly_what_the_search_step_uses(rendered, name):
    target = rendered[name]
    assert not target.of_kind("ClusterRole") and not target.of_kind("ClusterRoleBinding")
    (role,) = target.of_kind("Role")
    assert role["metadata"]["name"] == "leanfit-search"
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == SEARCH_RULES
    assert not any(
        rule.get("resourceNames") or rule.get("nonResourceURLs") for rule in role["rules"]
    )

    (binding,) = target.of_kind("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "leanfit-search",
    }
    account = {"kind": "ServiceAccount", "name": "leanfit-search", "namespace": NAMESPACE}
    assert account in binding["subjects"]
    target.one("ServiceAccount", "leanfit-search")
    # The account is used by the pod that runs the search, and by nothing else here.
    users = {
        doc["metadata"]["name"]
        for doc, pod in target.workloads()
        if pod.get("serviceAccountName") == "leanfit-search"
    }
    assert users == {"leanfit-watch"}
    for doc, pod in target.workloads():
        if doc["metadata"]["name"] not in users:
            assert pod.get("automountServiceAccountToken") is False, doc["metadata"]["name"]


# -- network -------------------------------------------------------------------------------------


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels, matchExpressions In/NotIn/Exists) selects labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def ingress_peers(target: Rendered, workload: str) -> list[dict]:
    """Every `from` peer of every policy that selects the workload's pods."""
    labels = target.pod_labels()[workload]
    peers = []
    for policy in target.of_kind("NetworkPolicy"):
        if selects(policy["spec"]["podSelector"], labels):
            for rule in policy["spec"].get("ingress", []):
                assert rule.get("from"), f"{policy['metadata']['name']} admits any source"
                peers += rule["from"]
    return peers


def reachable_from(target: Rendered, workload: str) -> set[str]:
    """The workloads of this render whose pods the policies let reach `workload`'s pods."""
    sources = set()
    for peer in ingress_peers(target, workload):
        if "podSelector" in peer and "namespaceSelector" not in peer:
            sources |= {
                name
                for name, labels in target.pod_labels().items()
                if selects(peer["podSelector"], labels)
            }
    return sources


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_only_the_namespace_reaches_mlflow_and_only_its_clients_reach_the_stores(rendered, name):
    target = rendered[name]
    default_deny = [
        p
        for p in target.of_kind("NetworkPolicy")
        if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]
    ]
    assert default_deny and default_deny[0]["spec"]["policyTypes"] == ["Ingress"]

    for peer in ingress_peers(target, "mlflow"):
        assert "ipBlock" not in peer, peer
        if "namespaceSelector" in peer:  # Kubeflow's pipeline pods, in the kubeflow overlay only
            assert name == "overlays/kubeflow", peer
    assert reachable_from(target, "mlflow") == set(target.pod_labels())

    for peer in ingress_peers(target, "postgres"):
        assert set(peer) == {"podSelector"}, peer
    assert reachable_from(target, "postgres") == {"mlflow"}

    if "minio" in target.pod_labels():
        for peer in ingress_peers(target, "minio"):
            assert set(peer) == {"podSelector"}, peer
        assert reachable_from(target, "minio") == {"mlflow", "leanfit-watch"}


# -- secrets -------------------------------------------------------------------------------------


def secret_template(name: str) -> dict[str, str]:
    path = SECRET_TEMPLATES / f"{name}.env.example"
    assert path.exists(), f"a Secret {name} is used but has no template {path.relative_to(ROOT)}"
    pairs = [
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return {key: value for key, value in pairs}


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_secrets_are_used_by_template_and_never_shipped(rendered, name):
    target = rendered[name]
    assert not target.of_kind("Secret"), "a Secret is in the manifests: use manifests/secrets/"
    external = EXTERNAL_SECRETS.get(name, {})

    def keys_of(secret: str) -> set[str]:
        return external[secret] if secret in external else set(secret_template(secret))

    used = 0
    for where, pod, container in target.containers():
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        secret_dirs = {
            mounts[v["name"]]: v["secret"]["secretName"]
            for v in pod.get("volumes", [])
            if "secret" in v and v["name"] in mounts
        }
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                used += 1
                assert ref["key"] in keys_of(ref["name"]), f"{where}: {env['name']}"
            if env["name"].endswith("_FILE"):  # VAR_FILE: a key of a mounted Secret
                folder, _, key = env["value"].rpartition("/")
                assert folder in secret_dirs, f"{where}: {env['value']} is in no mounted Secret"
                assert key in keys_of(secret_dirs[folder]), f"{where}: {env['value']}"
                used += 1
    assert used >= 4
    for template in SECRET_TEMPLATES.glob("*.env.example"):
        for key, value in secret_template(template.name.removesuffix(".env.example")).items():
            if "PASSWORD" in key:
                assert value == "", f"{template.name}: {key} has a value; templates hold none"


# -- the watch CronJob, its experiment, and the overlays -----------------------------------------


def watch_container(target: Rendered) -> tuple[dict, dict]:
    cron = target.one("CronJob", "leanfit-watch")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def project_version() -> str:
    return re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_watch_cronjob_runs_its_experiment_once_at_a_time(rendered, name):
    target = rendered[name]
    cron = target.one("CronJob", "leanfit-watch")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod, container = watch_container(target)
    assert container["args"] == ["watch", "/config/experiment.yaml", "--once"]
    repository, _, tag = container["image"].rpartition(":")
    assert repository == LEANFIT_IMAGE
    assert tag.split("-")[0] == project_version(), "the image's tag follows the package version"

    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_map = volumes[mounts["/config"]]["configMap"]["name"]
    assert config_map.startswith("leanfit-experiment")
    target.one("ConfigMap", config_map)

    # The experiment is valid, and its trials meet the watch pod's image, claim and MLflow.
    data = target.experiment()
    experiment = experiment_from_dict(data)
    k = experiment.executor.kubernetes
    assert experiment.executor.kind == "kubernetes"
    assert k.namespace == NAMESPACE
    assert k.image == container["image"], "trials run the image the watch pod runs"
    target.one("PersistentVolumeClaim", k.pvc)
    assert volumes[mounts[k.mount_path]]["persistentVolumeClaim"]["claimName"] == k.pvc
    assert experiment.work_dir.startswith(k.mount_path + "/")
    assert experiment.dataset.path.startswith(k.mount_path + "/")
    uri = re.fullmatch(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc:(\d+)", experiment.tracking.uri)
    assert uri, experiment.tracking.uri
    service = target.one("Service", uri[1])
    assert uri[2] == NAMESPACE and int(uri[3]) in [p["port"] for p in service["spec"]["ports"]]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == experiment.tracking.uri
    assert {"POD_NAME", "POD_UID", "POD_NAMESPACE"} <= set(env)  # owner of its trial Jobs


def test_the_gpu_overlay_puts_the_work_on_gpu_nodes(rendered):
    target = rendered["overlays/gpu"]
    pod, container = watch_container(target)
    assert container["image"].endswith("-cuda")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["nodeSelector"]
    # it trains the final models itself: a GPU of its own, not whatever the node leaves visible
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    experiment = experiment_from_dict(target.experiment())
    k = experiment.executor.kubernetes
    assert k.gpus >= 1
    assert k.node_selector == pod["nodeSelector"]
    assert any(t.get("key") == "nvidia.com/gpu" for t in k.tolerations)
    # Apart from the GPU settings, the GPU experiment is the base one.
    base = rendered["base"].experiment()
    gpu = target.experiment()
    for settings in (base, gpu):
        for key in ("image", "gpus", "node_selector", "tolerations", "cpu", "memory"):
            settings["executor"]["kubernetes"].pop(key, None)
    assert gpu == base


def container_env(container: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_mlflow_keeps_its_artifacts_in_its_own_minio_in_base(rendered):
    target = rendered["base"]
    mlflow = target.one("Deployment", "mlflow")["spec"]["template"]["spec"]
    (server,) = mlflow["containers"]
    env = container_env(server)
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert "@postgres:5432/" in env["MLFLOW_BACKEND_STORE_URI"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    (create_bucket,) = mlflow["initContainers"]
    bucket = create_bucket["command"][-1].split("/", 1)[1]
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == f"s3://{bucket}"
    target.one("Service", "minio")


def test_the_kubeflow_overlay_uses_kubeflows_artifact_store(rendered):
    target = rendered["overlays/kubeflow"]
    assert not [d for d in target.docs if "minio" in d["metadata"]["name"]]
    mlflow = target.one("Deployment", "mlflow")["spec"]["template"]["spec"]
    assert not mlflow.get("initContainers")
    (server,) = mlflow["containers"]
    env = container_env(server)
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://mlpipeline/")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio-service.kubeflow:9000"
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[variable]["secretKeyRef"]["name"] == "mlpipeline-minio-artifact"
    (binding,) = target.of_kind("RoleBinding")
    assert {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"} in (
        binding["subjects"]
    )


# -- the images ----------------------------------------------------------------------------------


def pinned_versions() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line)


def dockerfile_args(dockerfile: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile.read_text(), re.M))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_images_install_the_pinned_torch_and_run_leanfit_as_a_user(dockerfile):
    pins = pinned_versions()
    args = dockerfile_args(dockerfile)
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCHVISION_VERSION"] == pins["torchvision"]
    text = dockerfile.read_text()
    assert "-c constraints.txt ." in text  # the package itself, with the project's pins
    final_stage = text.rsplit("\nFROM ", 1)[1]
    user = re.search(r"^USER (\d+)(?::(\d+))?$", final_stage, re.M)
    assert user and int(user[1]) != 0, "the final stage runs as a numeric non-root user"
    assert '\nENTRYPOINT ["leanfit"]\n' in final_stage


def test_the_cuda_image_matches_torchs_cuda_build():
    args = dockerfile_args(DOCKERFILES[1])
    base = re.search(
        r"^FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-runtime-\S+ AS", DOCKERFILES[1].read_text(), re.M
    )
    assert base, "Dockerfile.cuda starts from an nvidia/cuda runtime image"
    assert args["TORCH_CUDA"] == f"cu{base[1]}{base[2]}"
    # The CUDA runtime pinned with torch (constraints.txt) is the base image's.
    runtime = pinned_versions()["nvidia-cuda-runtime"]
    assert runtime.split(".")[:2] == [base[1], base[2]]


def test_the_build_context_leaves_out_local_state():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    local_state = {".git", ".venv", ".leanfit", "mlflow.db", "mlruns", "benchmarks/results"}
    assert local_state <= ignored
    assert "**/__pycache__" in ignored
    # ... and keeps what the Dockerfiles copy.
    for dockerfile in DOCKERFILES:
        for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile.read_text(), re.M):
            for source in sources.split():
                assert source not in ignored and (ROOT / source).exists(), source
