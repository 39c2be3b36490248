"""The ValidatingAdmissionPolicy on batchctl-jobs, its CEL evaluated (cel-python) on Job samples.

Checks: the policy and its binding validate against the 1.31 schema (and the newest); the
binding denies, in batchctl-jobs only, with this policy; every expression compiles; the
worker Job the launcher builds from each tree's settings and profiles is admitted; each
refused sample (another ServiceAccount, an API token, an image from elsewhere, also in an
init container or by a look-alike registry, hostPath, host namespaces, privilege,
capabilities, root, no seccomp) is refused by exactly the rule that names it.

Variables are evaluated in order, each seeing the ones before (as the API server does);
a validation that fails to evaluate counts as refused (failurePolicy: Fail).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import celpy
import pytest

from tests.integration.test_manifests import JOBS, TREES, Rendered, one, require, worker_job
from tests.support.k8s_schema import KUBERNETES_VERSION, LATEST_VERSION, render_kustomize, validate

POLICY = "batchctl-worker-jobs"


def policy(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "ValidatingAdmissionPolicy", POLICY)


def refusals(spec: dict[str, Any], job: dict[str, Any]) -> list[str]:
    """The messages of the validations ``job`` fails (empty: admitted)."""
    env = celpy.Environment()
    obj = celpy.json_to_cel(job)
    variables: dict[str, Any] = {}
    for variable in spec.get("variables", []):
        program = env.program(env.compile(variable["expression"]))
        variables[variable["name"]] = program.evaluate({"object": obj, "variables": celpy.celtypes.MapType(
            {celpy.celtypes.StringType(k): v for k, v in variables.items()})})
    activation = {"object": obj, "variables": celpy.celtypes.MapType(
        {celpy.celtypes.StringType(k): v for k, v in variables.items()})}
    failed = []
    for validation in spec["validations"]:
        result = env.program(env.compile(validation["expression"])).evaluate(activation)
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            failed.append(validation["message"])
    return failed


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    """The base and every overlay, rendered once by ``kubectl kustomize``."""
    require("kubectl")
    return {name: render_kustomize(path) for name, path in TREES.items()}


@pytest.fixture(scope="module")
def spec(rendered: Rendered) -> dict[str, Any]:
    result: dict[str, Any] = policy(rendered["base"])["spec"]
    return result


@pytest.fixture(scope="module")
def allowed(rendered: Rendered) -> dict[str, Any]:
    return worker_job(rendered["gke"])


@pytest.mark.parametrize("version", [KUBERNETES_VERSION, LATEST_VERSION])
def test_policy_and_binding_validate(rendered: Rendered, version: str) -> None:
    assert validate(policy(rendered["base"]), version) == version
    assert validate(one(rendered["base"], "ValidatingAdmissionPolicyBinding", POLICY), version) == version


def test_binding_denies_in_the_jobs_namespace_only(rendered: Rendered, spec: dict[str, Any]) -> None:
    binding = one(rendered["base"], "ValidatingAdmissionPolicyBinding", POLICY)["spec"]
    assert binding["policyName"] == POLICY
    assert binding["validationActions"] == ["Deny"]
    assert binding["matchResources"] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": JOBS}}}
    assert spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert (rule["apiGroups"], rule["resources"], sorted(rule["operations"])) == (["batch"], ["jobs"],
                                                                                 ["CREATE", "UPDATE"])


def test_every_expression_compiles(spec: dict[str, Any]) -> None:
    env = celpy.Environment()
    for item in [*spec["variables"], *spec["validations"]]:
        env.compile(item["expression"])


@pytest.mark.parametrize("tree", sorted(TREES))
def test_the_launchers_worker_job_is_admitted(rendered: Rendered, spec: dict[str, Any], tree: str) -> None:
    """The Job built from each tree's settings and default profile passes every rule."""
    assert refusals(spec, worker_job(rendered[tree])) == []


def pod(job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = job["spec"]["template"]["spec"]
    return result


def container(job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = pod(job)["containers"][0]
    return result


def sc(job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = container(job)["securityContext"]
    return result


SA = "worker Jobs run as the ServiceAccount batchctl-worker"
TOKEN = "worker pods get no Kubernetes API token (automountServiceAccountToken: false)"
IMAGE = "worker images come from the registries allowed in the batchctl-worker-jobs policy"
HOST_PATH = "worker pods mount no hostPath volume"
HOST_NS = "worker pods share no host namespace"
CAPS = "worker containers drop ALL capabilities, never escalate and are not privileged"
ROOT = "worker containers run as non-root"
SECCOMP = "worker pods use the RuntimeDefault (or a Localhost) seccomp profile"

REFUSED: list[tuple[str, Callable[[dict[str, Any]], None], list[str]]] = [
    ("default-service-account", lambda j: pod(j).update(serviceAccountName="default"), [SA]),
    ("no-service-account", lambda j: pod(j).pop("serviceAccountName"), [SA]),
    ("token-mounted", lambda j: pod(j).update(automountServiceAccountToken=True), [TOKEN]),
    ("token-unset", lambda j: pod(j).pop("automountServiceAccountToken"), [TOKEN]),
    ("image-elsewhere", lambda j: container(j).update(image="docker.io/evil/miner:1"), [IMAGE]),
    ("look-alike-registry", lambda j: container(j).update(image="ghcr.io/batchctl-evil/x:1"), [IMAGE]),
    ("registry-as-path", lambda j: container(j).update(image="evil.example/ghcr.io/batchctl/x:1"), [IMAGE]),
    ("init-container-elsewhere", lambda j: pod(j).update(initContainers=[
        {**copy.deepcopy(container(j)), "name": "init", "image": "docker.io/evil/init:1"}]), [IMAGE]),
    ("host-path", lambda j: pod(j)["volumes"].append({"name": "root", "hostPath": {"path": "/"}}), [HOST_PATH]),
    ("host-network", lambda j: pod(j).update(hostNetwork=True), [HOST_NS]),
    ("host-pid", lambda j: pod(j).update(hostPID=True), [HOST_NS]),
    ("host-ipc", lambda j: pod(j).update(hostIPC=True), [HOST_NS]),
    ("privileged", lambda j: sc(j).update(privileged=True), [CAPS]),
    ("privilege-escalation", lambda j: sc(j).update(allowPrivilegeEscalation=True), [CAPS]),
    ("escalation-unset", lambda j: sc(j).pop("allowPrivilegeEscalation"), [CAPS]),
    ("capabilities-kept", lambda j: sc(j).pop("capabilities"), [CAPS]),
    ("capability-added", lambda j: sc(j)["capabilities"].update(add=["SYS_ADMIN"]), [CAPS]),
    ("no-container-security-context", lambda j: container(j).pop("securityContext"), [CAPS]),
    ("container-as-root", lambda j: sc(j).update(runAsNonRoot=False), [ROOT]),
    ("uid-0", lambda j: sc(j).update(runAsUser=0), [ROOT]),
    ("pod-uid-0", lambda j: pod(j)["securityContext"].update(runAsUser=0), [ROOT]),
    ("non-root-nowhere", lambda j: (pod(j)["securityContext"].pop("runAsNonRoot"), sc(j).pop("runAsNonRoot")),
     [ROOT]),
    ("pod-seccomp-unconfined", lambda j: pod(j)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
     [SECCOMP]),
    ("container-seccomp-unconfined", lambda j: sc(j).update(seccompProfile={"type": "Unconfined"}), [SECCOMP]),
    ("no-pod-seccomp", lambda j: pod(j)["securityContext"].pop("seccompProfile"), [SECCOMP]),
]


@pytest.mark.parametrize(("mutate", "messages"), [pytest.param(m, r, id=i) for i, m, r in REFUSED])
def test_each_refused_sample_is_refused_by_its_rule(
    spec: dict[str, Any], allowed: dict[str, Any], mutate: Callable[[dict[str, Any]], None], messages: list[str],
) -> None:
    job = copy.deepcopy(allowed)
    mutate(job)
    assert refusals(spec, job) == messages


def test_non_root_at_the_pod_level_alone_is_admitted(spec: dict[str, Any], allowed: dict[str, Any]) -> None:
    """runAsNonRoot on the pod covers containers that do not say (as Pod Security does)."""
    job = copy.deepcopy(allowed)
    sc(job).pop("runAsNonRoot")
    assert refusals(spec, job) == []
