"""The deployment: Dockerfile and kustomize manifests match each other and the code.

Two namespaces: the launcher's (batchctl-system) and the workers' (batchctl-jobs: Jobs
only for the launcher, no Secret or ConfigMap, a ResourceQuota and a LimitRange that the
worker Jobs fit, Pod Security restricted). The profiles ConfigMap is what the launcher
reads (mounted where BATCHCTL_PROFILES points) and parses with the code's own parser.

Checks: ``kubectl kustomize`` renders the base and every overlay; every rendered object
validates (strict) against the Kubernetes schema of the oldest supported minor and the
newest bundled; every pod template, and the worker Job the launcher would build from
each overlay's settings, meets Pod Security "restricted" field by field; the settings
ConfigMap holds only variables the code reads, all valid by the code's own parsers; the
Role grants exactly the documented calls, in one namespace, and README says the same;
names agree across objects (service accounts, PriorityClass, Lease, emulator Service,
image); the node pool flags in README match the toleration and nodeSelector; hadolint
passes and the image runs as the user the pods demand.

kubectl and hadolint are needed: missing, these tests skip locally and fail in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from batchctl.core.kubevalues import parse_quantity
from batchctl.core.names import Names
from batchctl.core.profiles import Profile, parse_profiles
from batchctl.core.settings import Settings
from batchctl.launcher.jobconfig import ENV_VARS, JobConfig
from batchctl.launcher.jobspec import RUN_AS, build_job, job_to_dict
from tests.support.k8s_schema import (
    KUBERNETES_VERSION,
    LATEST_VERSION,
    MANIFESTS,
    describe,
    granted,
    load_role_rules,
    pod_template_specs,
    pss_restricted_violations,
    render_kustomize,
    validate,
)

Rendered = dict[str, list[dict[str, Any]]]
"""Rendered objects by tree name (base, gke, emulator)."""

ROOT = MANIFESTS.parent
TREES = {
    "base": MANIFESTS / "base",
    "gke": MANIFESTS / "overlays/gke",
    "emulator": MANIFESTS / "overlays/emulator",
}
OVERLAYS = ("gke", "emulator")
SYSTEM = "batchctl-system"
"""The launcher's namespace: the launcher, its Lease, state, settings and profiles."""
JOBS = "batchctl-jobs"
"""The workers' namespace: Jobs, their ServiceAccount, quota and limits; no Secrets."""
WORKER_OBJECTS = {("ServiceAccount", "batchctl-worker"), ("Role", "batchctl-launcher-jobs"),
                  ("RoleBinding", "batchctl-launcher-jobs"), ("ResourceQuota", "batchctl-workers"),
                  ("LimitRange", "batchctl-workers")}
CLUSTER_KINDS = ("Namespace", "PriorityClass", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
SETTINGS_CONFIGMAP = "batchctl-settings"
PROFILES_CONFIGMAP = "batchctl-profiles"

LAUNCHER_VARS = frozenset(
    {
        "GOOGLE_CLOUD_PROJECT",
        "PUBSUB_EMULATOR_HOST",
        "BATCHCTL_PREFIX",
        "BATCHCTL_LOG_LEVEL",
        "BATCHCTL_LEADER_ELECTION",
        "BATCHCTL_JOBS_NAMESPACE",
        "BATCHCTL_PROFILES",
    }
)
"""Settings variables other than JobConfig's that the launcher ConfigMap may carry."""

LAUNCHER_CALLS = {
    SYSTEM: {
        ("", "configmaps"): {"create", "get", "list", "patch", "delete"},
        ("coordination.k8s.io", "leases"): {"create", "get", "patch"},
    },
    JOBS: {("batch", "jobs"): {"create", "list", "watch", "patch", "delete"}},
}
"""namespace -> (apiGroup, resource) -> verbs: every call the launcher makes (manifests/README.md)."""
ROLES = {SYSTEM: "batchctl-launcher", JOBS: "batchctl-launcher-jobs"}


def require(tool: str) -> str:
    """Path of ``tool`` (the virtualenv's first); skip without it, except in CI where it must exist."""
    beside_python = Path(sys.executable).parent / tool
    found = str(beside_python) if beside_python.exists() else shutil.which(tool)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is required in CI")
        pytest.skip(f"{tool} is not installed")
    return found


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    """The base and every overlay, rendered once by ``kubectl kustomize``."""
    require("kubectl")
    return {name: render_kustomize(path) for name, path in TREES.items()}


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = find(objects, kind, name)
    return found


def generated(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """A generated ConfigMap (its name carries a content hash)."""
    (found,) = [o for o in find(objects, "ConfigMap") if o["metadata"]["name"].startswith(name + "-")]
    return found


def settings_data(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The launcher settings ConfigMap's data."""
    data: dict[str, str] = generated(objects, SETTINGS_CONFIGMAP)["data"]
    return data


def profiles_of(objects: list[dict[str, Any]]) -> dict[str, Profile]:
    """The profiles the launcher reads from the rendered profiles ConfigMap, over the rendered settings."""
    text = generated(objects, PROFILES_CONFIGMAP)["data"]["profiles.yaml"]
    base = JobConfig.from_env(settings_data(objects)).default_profile()
    return parse_profiles(text, source="profiles.yaml", base=base)


def launcher_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment", "batchctl-launcher")["spec"]["template"]["spec"]
    return spec


def worker_job(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The Job the launcher would build with this overlay's settings and its default profile."""
    data = settings_data(objects)
    names = Names(data["BATCHCTL_PREFIX"])
    job = build_job(
        name=names.job("b1", 1),
        namespace=data["BATCHCTL_JOBS_NAMESPACE"],
        labels=names.batch_labels("b1"),
        parallelism=2,
        env={"BATCHCTL_BATCH_ID": "b1", "BATCHCTL_SUBSCRIPTION": names.work("b1")},
        config=JobConfig.from_env(data).for_profile(profiles_of(objects)["default"]),
    )
    return job_to_dict(job)


# --- rendering and schema ---------------------------------------------------------------


@pytest.mark.parametrize("tree", sorted(TREES))
def test_kustomize_renders(rendered: Rendered, tree: str) -> None:
    """Each tree renders to the expected kinds, the emulator overlay adding its own two."""
    kinds = sorted(o["kind"] for o in rendered[tree])
    expected = [
        "ConfigMap", "ConfigMap", "Deployment", "LimitRange", "Namespace", "Namespace", "PodDisruptionBudget",
        "PriorityClass", "ResourceQuota", "Role", "Role", "RoleBinding", "RoleBinding", "ServiceAccount",
        "ServiceAccount", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    ]  # fmt: skip
    if tree == "emulator":
        expected = sorted([*expected, "Deployment", "Service"])
    assert kinds == expected


@pytest.mark.parametrize("version", [KUBERNETES_VERSION, LATEST_VERSION])
@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_object_validates(rendered: Rendered, tree: str, version: str) -> None:
    """Strict schema validation of every rendered object."""
    for obj in rendered[tree]:
        assert validate(obj, version) == version, describe(obj)


@pytest.mark.parametrize("tree", sorted(TREES))
def test_two_namespaces_and_nothing_cluster_wide(rendered: Rendered, tree: str) -> None:
    """The workers' objects in batchctl-jobs, everything else namespaced in batchctl-system; cluster-scoped
    only the Namespaces, the PriorityClass and the admission policy with its binding; no ClusterRole."""
    for obj in rendered[tree]:
        if obj["kind"] in CLUSTER_KINDS:
            assert "namespace" not in obj["metadata"]
        else:
            worker = (obj["kind"], obj["metadata"]["name"]) in WORKER_OBJECTS
            assert obj["metadata"].get("namespace") == (JOBS if worker else SYSTEM), describe(obj)
    assert not {"ClusterRole", "ClusterRoleBinding"} & {o["kind"] for o in rendered[tree]}


@pytest.mark.parametrize("tree", sorted(TREES))
def test_no_secret_and_no_configmap_in_the_jobs_namespace(rendered: Rendered, tree: str) -> None:
    """Nothing a Job there could mount: the launcher's settings and profiles stay in batchctl-system."""
    held = {o["kind"] for o in rendered[tree] if o["metadata"].get("namespace") == JOBS}
    assert not held & {"Secret", "ConfigMap"}


@pytest.mark.parametrize("namespace", [SYSTEM, JOBS])
def test_namespace_enforces_restricted(rendered: Rendered, namespace: str) -> None:
    """Admission itself refuses any pod that is not restricted, pinned to the oldest supported minor."""
    labels = one(rendered["base"], "Namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"] == f"v{KUBERNETES_VERSION}"


# --- Pod Security ------------------------------------------------------------------------


@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_pod_template_is_restricted(rendered: Rendered, tree: str) -> None:
    """Launcher (and emulator) pod templates pass every restricted control."""
    templates = pod_template_specs(rendered[tree])
    assert "Deployment/batchctl-launcher" in templates
    for name, template in templates.items():
        annotations = template.get("metadata", {}).get("annotations") or {}
        assert pss_restricted_violations(template["spec"], annotations) == [], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_job_from_overlay_settings_is_valid_and_restricted(rendered: Rendered, overlay: str) -> None:
    """The Job built from this overlay's ConfigMap validates and is restricted."""
    job = worker_job(rendered[overlay])
    assert validate(job) == KUBERNETES_VERSION
    assert validate(job, LATEST_VERSION) == LATEST_VERSION
    assert pss_restricted_violations(job["spec"]["template"]["spec"]) == []


@pytest.mark.parametrize("tree", sorted(TREES))
def test_pods_write_only_to_tmp(rendered: Rendered, tree: str) -> None:
    """Beyond restricted: read-only root filesystems, a /tmp emptyDir in every pod."""
    for name, template in pod_template_specs(rendered[tree]).items():
        spec = template["spec"]
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp_volumes, name


# --- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize("tree", sorted(TREES))
def test_settings_hold_only_variables_the_code_reads(rendered: Rendered, tree: str) -> None:
    """Every key is a JobConfig variable or a launcher setting, and JobConfig accepts them all."""
    data = settings_data(rendered[tree])
    assert set(data) <= set(ENV_VARS) | LAUNCHER_VARS
    JobConfig.from_env(data)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_settings_parse_as_launcher_settings(rendered: Rendered, overlay: str) -> None:
    """Project, emulator and prefix are accepted by Settings, as the launcher will read them."""
    data = settings_data(rendered[overlay])
    settings = Settings.from_env({**data, "BATCHCTL_NAMESPACE": SYSTEM})
    assert settings.project == data["GOOGLE_CLOUD_PROJECT"]
    assert settings.emulator_host == data.get("PUBSUB_EMULATOR_HOST")


def test_launcher_settings_are_read_by_some_code() -> None:
    """Each launcher-only variable (and each downward-API one) appears in batchctl/core/ or launcher/ source."""
    source = "\n".join(p.read_text() for d in ("batchctl/core", "launcher") for p in (ROOT / d).glob("*.py"))
    unread = sorted(v for v in {*LAUNCHER_VARS, "BATCHCTL_NAMESPACE", "BATCHCTL_POD_NAME"} if v not in source)
    assert unread == [], f"set by the manifests but read by no code: {unread}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_image_for_launcher_and_workers(rendered: Rendered, overlay: str) -> None:
    """BATCHCTL_WORKER_IMAGE equals the launcher Deployment's image."""
    (container,) = launcher_pod(rendered[overlay])["containers"]
    assert settings_data(rendered[overlay])["BATCHCTL_WORKER_IMAGE"] == container["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_identity_and_priority_exist(rendered: Rendered, overlay: str) -> None:
    """The Job's service account (token-less) and PriorityClass (scale-up capable) are in the render."""
    objects = rendered[overlay]
    pod = worker_job(objects)["spec"]["template"]["spec"]
    account = one(objects, "ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    assert account["metadata"]["namespace"] == settings_data(objects)["BATCHCTL_JOBS_NAMESPACE"] == JOBS
    priority = one(objects, "PriorityClass", pod["priorityClassName"])
    assert priority["value"] >= -10  # the cluster autoscaler ignores pending pods below -10
    assert priority["preemptionPolicy"] == "Never"


# --- the launcher Deployment ---------------------------------------------------------------


def test_launcher_deployment_shape(rendered: Rendered) -> None:
    """2 replicas, the launcher command, probes, metrics annotations and port all on --port."""
    deployment = one(rendered["base"], "Deployment", "batchctl-launcher")
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    args = container["args"]
    assert deployment["spec"]["replicas"] == 2
    assert args[:3] == ["launcher", "--backend", "kubernetes"]
    port = int(args[args.index("--port") + 1])
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    annotations = template["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
    assert set(container["resources"]) == {"requests", "limits"}
    assert template["spec"]["terminationGracePeriodSeconds"] == 30


def test_launcher_environment(rendered: Rendered) -> None:
    """Settings from the generated ConfigMap; namespace and pod name from the downward API."""
    objects = rendered["base"]
    (container,) = launcher_pod(objects)["containers"]
    (env_from,) = container["envFrom"]
    assert one(objects, "ConfigMap", env_from["configMapRef"]["name"])
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"BATCHCTL_NAMESPACE": "metadata.namespace", "BATCHCTL_POD_NAME": "metadata.name"}
    assert settings_data(objects)["BATCHCTL_LEADER_ELECTION"] == "true"


def test_disruption_budget_covers_the_launcher(rendered: Rendered) -> None:
    """minAvailable 1, selecting exactly the launcher pods."""
    objects = rendered["base"]
    budget = one(objects, "PodDisruptionBudget", "batchctl-launcher")["spec"]
    deployment = one(objects, "Deployment", "batchctl-launcher")["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"] == deployment["selector"]
    labels = deployment["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()


# --- RBAC ----------------------------------------------------------------------------------


def calls(namespace: str | None = None) -> set[tuple[str, str, str]]:
    """The documented calls as (verb, group, resource), of one namespace or of both."""
    return {(verb, group, resource) for ns, table in LAUNCHER_CALLS.items() if namespace in (None, ns)
            for (group, resource), verbs in table.items() for verb in verbs}


@pytest.mark.parametrize("namespace", [SYSTEM, JOBS])
def test_each_role_grants_exactly_the_launcher_calls_in_its_namespace(rendered: Rendered, namespace: str) -> None:
    """State and Lease in batchctl-system, Jobs only in batchctl-jobs, nothing on pods or Secrets."""
    role = one(rendered["base"], "Role", ROLES[namespace])
    assert role["metadata"]["namespace"] == namespace
    assert granted(role["rules"]) == calls(namespace)


@pytest.mark.parametrize("namespace", [SYSTEM, JOBS])
def test_roles_are_bound_to_the_launcher_only(rendered: Rendered, namespace: str) -> None:
    """One RoleBinding per namespace: its Role to the launcher's ServiceAccount, which the Deployment uses."""
    objects = rendered["base"]
    (binding,) = [b for b in find(objects, "RoleBinding") if b["metadata"]["namespace"] == namespace]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLES[namespace]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "batchctl-launcher", "namespace": SYSTEM}]
    assert launcher_pod(objects)["serviceAccountName"] == "batchctl-launcher"
    assert launcher_pod(objects)["automountServiceAccountToken"] is True


def test_lease_rule_names_the_launchers_lease(rendered: Rendered) -> None:
    """get/patch on leases are limited to <prefix>-launcher, the name the code uses."""
    prefix = settings_data(rendered["base"])["BATCHCTL_PREFIX"]
    named = [r for r in load_role_rules(rendered["base"]) if r.get("resourceNames")]
    assert named == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [Names(prefix).lease],
            "verbs": ["get", "patch"],
        }
    ]


def test_readme_lists_the_same_calls_as_the_role(rendered: Rendered) -> None:
    """The table in manifests/README.md and the Role agree call for call."""
    text = (MANIFESTS / "README.md").read_text()
    section = text.split("## What the launcher may do", 1)[1].split("\n## ", 1)[0]
    documented = set()
    for row in re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|", section, re.MULTILINE):
        resource, group_cell, verbs_cell = (cell.strip() for cell in row)
        group = "" if group_cell.startswith("core") else group_cell.strip("`")
        verbs = [] if verbs_cell == "none" else [v.strip() for v in verbs_cell.split(",")]
        documented |= {(verb, group, resource) for verb in verbs}
    roles = [load_role_rules(rendered["base"], name) for name in ROLES.values()]
    assert documented == set().union(*(granted(rules) for rules in roles)) == calls()


# --- GKE specifics -------------------------------------------------------------------------


def test_gke_service_accounts_use_workload_identity(rendered: Rendered) -> None:
    """Launcher and worker each act as their own Google service account."""
    for account in find(rendered["gke"], "ServiceAccount"):
        name = account["metadata"]["name"]
        annotation = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        assert annotation == f"{name}@PROJECT_ID.iam.gserviceaccount.com"


def test_node_pool_flags_match_the_toleration_and_selector(rendered: Rendered) -> None:
    """README's gcloud command creates the pool that the gke settings select and tolerate."""
    text = (MANIFESTS / "README.md").read_text()
    command = re.search(r"gcloud container node-pools create .*?\n```", text, re.DOTALL)
    assert command is not None
    flags = dict(re.findall(r"(--[\w-]+)(?:=(\S+))?", command.group(0)))
    for flag in ("--enable-autoscaling", "--spot", "--machine-type", "--max-nodes"):
        assert flag in flags
    assert flags["--min-nodes"] == "0"
    data = settings_data(rendered["gke"])
    assert flags["--node-labels"] == data["BATCHCTL_NODE_SELECTOR"]
    assert flags["--node-taints"] == data["BATCHCTL_TOLERATIONS"]
    pod = worker_job(rendered["gke"])["spec"]["template"]["spec"]
    key, value = flags["--node-labels"].split("=")
    assert pod["nodeSelector"] == {key: value}
    taint_key, taint_rest = flags["--node-taints"].split("=")
    taint_value, effect = taint_rest.split(":")
    assert pod["tolerations"] == [
        {"key": taint_key, "operator": "Equal", "value": taint_value, "effect": effect}
    ]


# --- emulator specifics --------------------------------------------------------------------


def test_emulator_host_is_the_emulator_service(rendered: Rendered) -> None:
    """PUBSUB_EMULATOR_HOST names a Service of the overlay, on its port, backed by the emulator pods."""
    objects = rendered["emulator"]
    address, port = settings_data(objects)["PUBSUB_EMULATOR_HOST"].split(":")
    host, namespace, svc = address.split(".")  # workers in batchctl-jobs need the namespaced name
    assert svc == "svc"
    service = one(objects, "Service", host)
    assert service["metadata"]["namespace"] == namespace
    assert [p["port"] for p in service["spec"]["ports"]] == [int(port)]
    emulator = one(objects, "Deployment", host)
    assert service["spec"]["selector"].items() <= emulator["spec"]["template"]["metadata"]["labels"].items()
    (container,) = emulator["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(
        r"gcr\.io/google\.com/cloudsdktool/google-cloud-cli:\d+\.\d+\.\d+-emulators", container["image"]
    )


def test_emulator_overlay_needs_no_batch_pool(rendered: Rendered) -> None:
    """Workers of the emulator overlay run on any node."""
    pod = worker_job(rendered["emulator"])["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod
    assert "tolerations" not in pod


# --- the image -----------------------------------------------------------------------------


def test_hadolint_is_clean() -> None:
    """hadolint reports nothing at all (every ignore would be inline and justified)."""
    hadolint = require("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_image_runs_as_the_user_pods_demand() -> None:
    """Pinned base, numeric user 10001 (the pods' runAsUser), exec-form entrypoint."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm$", dockerfile, re.MULTILINE)
    assert re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE) == [f"{RUN_AS}:{RUN_AS}"]
    assert '\nENTRYPOINT ["batchctl"]\n' in dockerfile
    assert '\nCMD ["launcher"]\n' in dockerfile


def test_image_contains_every_package() -> None:
    """Each package pyproject installs is copied into the build and let through .dockerignore."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = sorted({folder.split("/")[0] for folder in project["tool"]["setuptools"]["package-dir"].values()})
    dockerfile = (ROOT / "Dockerfile").read_text()
    allowed = (ROOT / ".dockerignore").read_text().split()
    for package in packages:
        assert f"COPY {package}/ {package}/" in dockerfile
        assert f"!{package}/" in allowed
    assert f"!{project['project']['readme']}" in allowed


# --- profiles, quota and limits -------------------------------------------------------------


def test_profiles_configmap_is_mounted_where_the_launcher_reads_it(rendered: Rendered) -> None:
    """BATCHCTL_PROFILES is a file of the mounted profiles ConfigMap, which parses with the code's parser."""
    objects = rendered["base"]
    pod = launcher_pod(objects)
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == generated(objects, PROFILES_CONFIGMAP)["metadata"]["name"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    path = settings_data(objects)["BATCHCTL_PROFILES"]
    assert path.rsplit("/", 1) == [mount["mountPath"], "profiles.yaml"]
    assert list(profiles_of(objects)) == ["default"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_jobs_fit_the_limit_range_and_the_quota(rendered: Rendered, overlay: str) -> None:
    """Every worker container is within the LimitRange's max, and a Job at the profile's cap fits the quota."""
    objects = rendered[overlay]
    (limits,) = one(objects, "LimitRange")["spec"]["limits"]
    quota = one(objects, "ResourceQuota")["spec"]["hard"]
    assert {"count/jobs.batch", "pods", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"} <= set(quota)
    (container,) = worker_job(objects)["spec"]["template"]["spec"]["containers"]
    for kind in ("cpu", "memory"):
        for amount in (container["resources"]["requests"][kind], container["resources"]["limits"][kind]):
            assert parse_quantity(amount) <= parse_quantity(limits["max"][kind])
    profile = profiles_of(objects)["default"]
    assert profile.max_parallelism <= int(quota["pods"])
    for kind in ("cpu", "memory"):
        need = profile.max_parallelism * parse_quantity(getattr(profile, f"{kind}_request"))
        assert need <= parse_quantity(quota[f"requests.{kind}"]), kind
