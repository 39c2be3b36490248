"""The worker Job spec and its config, without a cluster.

Checks: JobConfig defaults, parsing of every variable, one BadInput naming every bad
variable; build_job's every field (work-queue shape, podFailurePolicy, lifetimes,
placement, resources, identity, security, environment, labels), its argument
checks and purity; every built Job validates against the Kubernetes schema (oldest
supported minor and newest bundled) and meets Pod Security "restricted"; and the
restricted checker itself flags each kind of violation.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from batchctl.core.errors import BadInput
from batchctl.core.names import LABEL_BATCH, LABEL_COMPONENT, LABEL_NAME, Names
from batchctl.launcher.jobconfig import (
    DEFAULT_IMAGE,
    ENV_VARS,
    PROFILE_ONLY_FIELDS,
    JobConfig,
    Toleration,
    parse_quantity,
)
from batchctl.launcher.jobspec import build_job, job_to_dict
from batchctl.worker.config import OPTIONS as WORKER_OPTIONS
from batchctl.worker.config import WorkerConfig
from tests.support.k8s_schema import (
    KUBERNETES_VERSION,
    LATEST_VERSION,
    SchemaError,
    pss_restricted_violations,
    validate,
)

LABELS = Names("batchctl").batch_labels("b1")
ENV = {"BATCHCTL_BATCH_ID": "b1", "BATCHCTL_SUBSCRIPTION": "batchctl-b1-work", "BATCHCTL_HANDLER": "m:f"}
MINIMAL = JobConfig(
    node_selector={},
    tolerations=(),
    priority_class=None,
    cpu_limit=None,
    memory_limit=None,
    scratch_size=None,
)
MAXIMAL = JobConfig(active_deadline_seconds=7200, worker_concurrency=4, worker_empty_pulls=3)


def job(config: JobConfig | None = None, **overrides: Any) -> dict[str, Any]:
    """A built Job as a dict, from the defaults plus ``overrides``."""
    args: dict[str, Any] = {
        "name": "batchctl-b1-1",
        "namespace": "jobs",
        "labels": LABELS,
        "parallelism": 3,
        "env": ENV,
        "config": config or JobConfig(),
    }
    return job_to_dict(build_job(**{**args, **overrides}))


def pod(config: JobConfig | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = job(config)["spec"]["template"]["spec"]
    return spec


def container(config: JobConfig | None = None) -> dict[str, Any]:
    (only,) = pod(config)["containers"]
    result: dict[str, Any] = only
    return result


# --- JobConfig -------------------------------------------------------------------------


def test_defaults_match_the_documented_values() -> None:
    """The defaults are the ones the manifests and README describe."""
    config = JobConfig()
    assert config.image == DEFAULT_IMAGE == "ghcr.io/batchctl/batchctl:0.1.0"
    assert config.service_account == "batchctl-worker"
    assert config.node_selector == {"batchctl.dev/pool": "batch"}
    assert config.tolerations == (Toleration("batchctl.dev/pool", "batch", "NoSchedule"),)
    assert config.priority_class == "batchctl-worker"
    assert (config.backoff_limit, config.ttl_seconds_after_finished, config.drain_budget_s) == (6, 3600, 20)
    assert config.active_deadline_seconds is None
    assert config.termination_grace_period_s == 30


def test_empty_environment_gives_the_defaults() -> None:
    """No variables set: exactly JobConfig()."""
    assert JobConfig.from_env({}) == JobConfig()


def test_every_field_is_read_from_one_variable() -> None:
    """ENV_VARS maps a variable onto each field but the profile-only ones, and onto no field twice."""
    fields = [name for name, _ in ENV_VARS.values()]
    assert sorted(fields) == sorted(f.name for f in dataclasses.fields(JobConfig) if f.name not in PROFILE_ONLY_FIELDS)


@pytest.mark.parametrize(
    ("var", "raw", "field", "expected"),
    [
        ("BATCHCTL_WORKER_IMAGE", "reg.io/a/b@sha256:abc", "image", "reg.io/a/b@sha256:abc"),
        ("BATCHCTL_WORKER_IMAGE", "localhost:5000/b:dev", "image", "localhost:5000/b:dev"),
        ("BATCHCTL_WORKER_IMAGE_PULL_POLICY", "Always", "image_pull_policy", "Always"),
        ("BATCHCTL_WORKER_SERVICE_ACCOUNT", "runner", "service_account", "runner"),
        ("BATCHCTL_NODE_SELECTOR", "a=b, x.io/c=D_1", "node_selector", {"a": "b", "x.io/c": "D_1"}),
        ("BATCHCTL_TOLERATIONS", "a=b:NoExecute,c:NoSchedule", "tolerations",
         (Toleration("a", "b", "NoExecute"), Toleration("c", None, "NoSchedule"))),
        ("BATCHCTL_PRIORITY_CLASS", "low", "priority_class", "low"),
        ("BATCHCTL_WORKER_CPU", "250m", "cpu_request", "250m"),
        ("BATCHCTL_WORKER_MEMORY", "1Gi", "memory_request", "1Gi"),
        ("BATCHCTL_WORKER_CPU_LIMIT", "2", "cpu_limit", "2"),
        ("BATCHCTL_WORKER_MEMORY_LIMIT", "2G", "memory_limit", "2G"),
        ("BATCHCTL_WORKER_SCRATCH_SIZE", "5Gi", "scratch_size", "5Gi"),
        ("BATCHCTL_BACKOFF_LIMIT", "0", "backoff_limit", 0),
        ("BATCHCTL_JOB_TTL_SECONDS", "60", "ttl_seconds_after_finished", 60),
        ("BATCHCTL_ACTIVE_DEADLINE_SECONDS", "7200", "active_deadline_seconds", 7200),
        ("BATCHCTL_DRAIN_BUDGET_S", " 45 ", "drain_budget_s", 45),
        ("BATCHCTL_CONCURRENCY", "8", "worker_concurrency", 8),
        ("BATCHCTL_EMPTY_PULLS", "5", "worker_empty_pulls", 5),
        ("BATCHCTL_MAX_PARALLELISM", "200", "max_parallelism", 200),
    ],
)  # fmt: skip
def test_each_variable_sets_its_field(var: str, raw: str, field: str, expected: Any) -> None:
    """A valid value of each variable lands, parsed, in its field."""
    assert getattr(JobConfig.from_env({var: raw}), field) == expected


@pytest.mark.parametrize(
    ("var", "field", "expected"),
    [
        ("BATCHCTL_NODE_SELECTOR", "node_selector", {}),
        ("BATCHCTL_TOLERATIONS", "tolerations", ()),
        ("BATCHCTL_PRIORITY_CLASS", "priority_class", None),
        ("BATCHCTL_WORKER_CPU_LIMIT", "cpu_limit", None),
        ("BATCHCTL_WORKER_MEMORY_LIMIT", "memory_limit", None),
        ("BATCHCTL_WORKER_SCRATCH_SIZE", "scratch_size", None),
        ("BATCHCTL_ACTIVE_DEADLINE_SECONDS", "active_deadline_seconds", None),
        ("BATCHCTL_CONCURRENCY", "worker_concurrency", None),
    ],
)
def test_empty_value_means_none_for_optional_fields(var: str, field: str, expected: Any) -> None:
    """An optional field set to the empty string is switched off."""
    assert getattr(JobConfig.from_env({var: ""}), field) == expected


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("BATCHCTL_WORKER_IMAGE", ""),
        ("BATCHCTL_WORKER_IMAGE", "ghcr.io/batchctl/batchctl"),
        ("BATCHCTL_WORKER_IMAGE", "a b:1"),
        ("BATCHCTL_WORKER_IMAGE_PULL_POLICY", "always"),
        ("BATCHCTL_WORKER_SERVICE_ACCOUNT", "Has_Upper"),
        ("BATCHCTL_NODE_SELECTOR", "novalue"),
        ("BATCHCTL_NODE_SELECTOR", "bad key=x"),
        ("BATCHCTL_NODE_SELECTOR", "k=" + "v" * 64),
        ("BATCHCTL_TOLERATIONS", "a=b"),
        ("BATCHCTL_TOLERATIONS", "a=b:Sometimes"),
        ("BATCHCTL_PRIORITY_CLASS", "-bad"),
        ("BATCHCTL_WORKER_CPU", "0"),
        ("BATCHCTL_WORKER_CPU", "half"),
        ("BATCHCTL_WORKER_MEMORY", "512MB"),
        ("BATCHCTL_BACKOFF_LIMIT", "-1"),
        ("BATCHCTL_JOB_TTL_SECONDS", "1h"),
        ("BATCHCTL_ACTIVE_DEADLINE_SECONDS", "0"),
        ("BATCHCTL_DRAIN_BUDGET_S", ""),
        ("BATCHCTL_CONCURRENCY", "0"),
        ("BATCHCTL_CONCURRENCY", "257"),
        ("BATCHCTL_EMPTY_PULLS", "101"),
        ("BATCHCTL_MAX_PARALLELISM", "0"),
    ],
)
def test_bad_value_is_bad_input_naming_the_variable(var: str, raw: str) -> None:
    """Each malformed value is rejected with the variable and the value in the message."""
    with pytest.raises(BadInput, match=var) as info:
        JobConfig.from_env({var: raw})
    assert repr(raw) in str(info.value)


def test_every_bad_variable_is_reported_at_once() -> None:
    """Three bad variables: one BadInput naming all three."""
    with pytest.raises(BadInput) as info:
        JobConfig.from_env(
            {"BATCHCTL_WORKER_CPU": "x", "BATCHCTL_BACKOFF_LIMIT": "y", "BATCHCTL_TOLERATIONS": "z"}
        )
    for var in ("BATCHCTL_WORKER_CPU", "BATCHCTL_BACKOFF_LIMIT", "BATCHCTL_TOLERATIONS"):
        assert var in str(info.value)


@pytest.mark.parametrize(
    "environ",
    [
        {"BATCHCTL_WORKER_CPU": "2", "BATCHCTL_WORKER_CPU_LIMIT": "1500m"},
        {"BATCHCTL_WORKER_MEMORY": "1Gi", "BATCHCTL_WORKER_MEMORY_LIMIT": "1G"},
    ],
)
def test_limit_below_request_is_bad_input(environ: dict[str, str]) -> None:
    """A limit under its request would make the API server reject every Job."""
    with pytest.raises(BadInput, match="is below"):
        JobConfig.from_env(environ)


def test_unset_limits_follow_a_raised_request() -> None:
    """Requests above the default limits lift them; requests below leave them alone."""
    raised = JobConfig.from_env({"BATCHCTL_WORKER_CPU": "2", "BATCHCTL_WORKER_MEMORY": "2Gi"})
    assert (raised.cpu_limit, raised.memory_limit) == ("2", "2Gi")
    lowered = JobConfig.from_env({"BATCHCTL_WORKER_CPU": "100m", "BATCHCTL_WORKER_MEMORY": "128Mi"})
    assert (lowered.cpu_limit, lowered.memory_limit) == ("1", "512Mi")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", "0.5"),
        ("2", "2"),
        ("1.5", "1.5"),
        ("512Mi", str(512 * 2**20)),
        ("1G", str(10**9)),
        (".5k", "500"),
    ],
)
def test_quantities_parse_like_kubernetes(text: str, value: str) -> None:
    """Decimal and binary suffixes, millis and fractions."""
    assert parse_quantity(text) == parse_quantity(value) == type(parse_quantity("1"))(value)


def test_worker_env_passes_the_knobs_through() -> None:
    """The drain budget always; concurrency and empty pulls only when set."""
    assert JobConfig().worker_env() == {"BATCHCTL_DRAIN_BUDGET_S": "20"}
    assert MAXIMAL.worker_env() == {
        "BATCHCTL_DRAIN_BUDGET_S": "20",
        "BATCHCTL_CONCURRENCY": "4",
        "BATCHCTL_EMPTY_PULLS": "3",
    }


def test_a_request_image_replaces_the_configured_one() -> None:
    """with_image: None keeps the image; a valid one replaces it; a bad one is BadInput."""
    assert JobConfig().with_image(None) == JobConfig()
    assert JobConfig().with_image("reg.io/h:2").image == "reg.io/h:2"
    with pytest.raises(BadInput, match="request image"):
        JobConfig().with_image("reg.io/h")


def test_the_worker_reads_what_the_job_sets() -> None:
    """The Job's environment, parsed by the worker's own config, carries every knob."""
    env = {e["name"]: e["value"] for e in container(MAXIMAL)["env"] if "value" in e}
    worker = WorkerConfig.from_sources({**env, "BATCHCTL_WORKER_ID": "pod-1"}, prefix="batchctl")
    assert (worker.batch_id, worker.subscription, worker.handler) == ("b1", "batchctl-b1-work", "m:f")
    assert (worker.drain_budget_s, worker.concurrency, worker.empty_pulls) == (20, 4, 3)
    assert {o.env for o in WORKER_OPTIONS} >= {*MAXIMAL.worker_env(), "BATCHCTL_WORKER_ID"}


def test_config_is_frozen() -> None:
    """Frozen: a launch cannot change the config that later launches use."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        JobConfig().image = "x:1"  # type: ignore[misc]


# --- build_job: the Job --------------------------------------------------------------


def test_job_is_named_and_namespaced_as_given() -> None:
    """batch/v1 Job with the given name and namespace."""
    built = job()
    assert (built["apiVersion"], built["kind"]) == ("batch/v1", "Job")
    assert built["metadata"]["name"] == "batchctl-b1-1"
    assert built["metadata"]["namespace"] == "jobs"


def test_contract_labels_are_on_the_job_and_the_pod_template() -> None:
    """The contract's three labels, on the Job and on every pod it creates."""
    built = job()
    expected = {LABEL_NAME: "batchctl", LABEL_COMPONENT: "worker", LABEL_BATCH: "b1"}
    assert built["metadata"]["labels"] == expected
    assert built["spec"]["template"]["metadata"]["labels"] == expected


def test_work_queue_shape() -> None:
    """completions unset, the given parallelism, pods never restarted in place."""
    built = job(parallelism=7)
    assert "completions" not in built["spec"]
    assert "completionMode" not in built["spec"]
    assert built["spec"]["parallelism"] == 7
    assert built["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_backoff_limit_and_ttl_come_from_config() -> None:
    """backoffLimit and ttlSecondsAfterFinished; no activeDeadlineSeconds by default."""
    spec = job(dataclasses.replace(JobConfig(), backoff_limit=2, ttl_seconds_after_finished=99))["spec"]
    assert (spec["backoffLimit"], spec["ttlSecondsAfterFinished"]) == (2, 99)
    assert "activeDeadlineSeconds" not in spec


def test_active_deadline_when_configured() -> None:
    """activeDeadlineSeconds appears only when set."""
    assert job(MAXIMAL)["spec"]["activeDeadlineSeconds"] == 7200


def test_pod_failure_policy_ignores_disruptions_and_fails_on_config_errors() -> None:
    """Ignore DisruptionTarget and a worker stopped by SIGTERM (143, a scale-down); FailJob on exit code 2."""
    rules = job()["spec"]["podFailurePolicy"]["rules"]
    assert rules == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "Ignore", "onExitCodes": {"containerName": "worker", "operator": "In", "values": [143]}},
        {"action": "FailJob", "onExitCodes": {"containerName": "worker", "operator": "In", "values": [2]}},
    ]


def test_grace_period_exceeds_the_drain_budget() -> None:
    """terminationGracePeriodSeconds = drain budget + 10, and the worker is told the budget."""
    config = dataclasses.replace(JobConfig(), drain_budget_s=45)
    assert pod(config)["terminationGracePeriodSeconds"] == 55
    assert {"name": "BATCHCTL_DRAIN_BUDGET_S", "value": "45"} in container(config)["env"]


# --- build_job: the pod ----------------------------------------------------------------


def test_placement_on_the_batch_pool() -> None:
    """nodeSelector and toleration match the batch pool's label and taint."""
    spec = pod()
    assert spec["nodeSelector"] == {"batchctl.dev/pool": "batch"}
    assert spec["tolerations"] == [
        {"key": "batchctl.dev/pool", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}
    ]
    assert spec["priorityClassName"] == "batchctl-worker"


def test_exists_toleration_has_no_value() -> None:
    """``key:Effect`` becomes operator Exists without a value."""
    config = JobConfig.from_env({"BATCHCTL_TOLERATIONS": "cloud.google.com/gke-spot:NoSchedule"})
    assert pod(config)["tolerations"] == [
        {"key": "cloud.google.com/gke-spot", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_placement_fields_are_omitted_when_switched_off() -> None:
    """No nodeSelector, tolerations or priority class when the config has none."""
    spec = pod(MINIMAL)
    assert not {"nodeSelector", "tolerations", "priorityClassName"} & set(spec)


def test_identity_has_no_api_token() -> None:
    """The workers' service account, and no token: workers never call the API server."""
    spec = pod()
    assert spec["serviceAccountName"] == "batchctl-worker"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False


def test_one_worker_container_running_batchctl_worker() -> None:
    """Container "worker", the configured image and pull policy, args ["worker"]."""
    only = container()
    assert only["name"] == "worker"
    assert (only["image"], only["imagePullPolicy"]) == (DEFAULT_IMAGE, "IfNotPresent")
    assert only["args"] == ["worker"]
    assert "command" not in only


def test_resources_requests_and_limits() -> None:
    """Requests and limits from the config."""
    assert container()["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }


def test_limits_are_omitted_when_switched_off() -> None:
    """No limits at all when neither is configured."""
    assert container(MINIMAL)["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}}


def test_restricted_security_context_at_both_levels() -> None:
    """Non-root 10001, RuntimeDefault seccomp on the pod; no escalation, no capabilities, read-only root."""
    pod_ctx = pod()["securityContext"]
    assert pod_ctx["runAsNonRoot"] is True
    assert pod_ctx["runAsUser"] == 10001
    assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = container()["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["runAsNonRoot"] is True
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}


def test_tmp_is_a_writable_emptydir() -> None:
    """/tmp is an emptyDir (sized by the config), the only writable path."""
    assert container()["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod()["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    assert pod(MINIMAL)["volumes"] == [{"name": "tmp", "emptyDir": {}}]


def test_environment_literals_then_knobs_then_worker_id() -> None:
    """The given env as literal values, the config's knobs, and the pod name as worker id."""
    env = container(MAXIMAL)["env"]
    assert env[:3] == [{"name": k, "value": v} for k, v in ENV.items()]
    assert {e["name"] for e in env[3:-1]} == set(MAXIMAL.worker_env())
    assert env[-1] == {
        "name": "BATCHCTL_WORKER_ID",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    }


# --- build_job: arguments and purity ------------------------------------------------------


@pytest.mark.parametrize("parallelism", [0, -1, 51])
def test_parallelism_outside_the_cap_is_refused(parallelism: int) -> None:
    """Below 1 or above config.max_parallelism (50 by default): ValueError."""
    with pytest.raises(ValueError, match="parallelism"):
        job(parallelism=parallelism)


@pytest.mark.parametrize("var", ["BATCHCTL_WORKER_ID", "BATCHCTL_DRAIN_BUDGET_S"])
def test_env_may_not_override_what_the_config_sets(var: str) -> None:
    """The worker id and the drain budget have one source each."""
    with pytest.raises(ValueError, match=var):
        job(env={**ENV, var: "x"})


def test_build_is_pure_and_shares_nothing() -> None:
    """Inputs are not mutated, nor shared: changing a built Job changes no input and no later Job."""
    labels, env, config = dict(LABELS), dict(ENV), JobConfig()
    first: Any = build_job(name="a", namespace="n", labels=labels, parallelism=1, env=env, config=config)
    second = job_to_dict(
        build_job(name="a", namespace="n", labels=labels, parallelism=1, env=env, config=config)
    )
    first.metadata.labels["x"] = "y"
    first.spec.template.metadata.labels["x"] = "y"
    first.spec.template.spec.node_selector["x"] = "y"
    first.spec.template.spec.containers[0].args.append("x")
    assert (labels, env) == (LABELS, ENV)
    assert config == JobConfig()
    third = build_job(name="a", namespace="n", labels=labels, parallelism=1, env=env, config=config)
    assert job_to_dict(third) == second


# --- schema and Pod Security -------------------------------------------------------------


@pytest.mark.parametrize("config", [JobConfig(), MINIMAL, MAXIMAL], ids=["default", "minimal", "maximal"])
@pytest.mark.parametrize("version", [KUBERNETES_VERSION, LATEST_VERSION])
def test_built_jobs_validate_against_the_schema(config: JobConfig, version: str) -> None:
    """Strict OpenAPI validation (unknown fields are errors) on the oldest and newest minors."""
    built = build_job(
        name="batchctl-b1-1", namespace="jobs", labels=LABELS, parallelism=3, env=ENV, config=config
    )
    assert validate(built, version) == version


def test_schema_validation_is_not_vacuous() -> None:
    """A misspelt field fails strict validation."""
    broken = job()
    broken["spec"]["template"]["spec"]["restartPolicyy"] = "Never"
    with pytest.raises(SchemaError, match="restartPolicyy"):
        validate(broken)


@pytest.mark.parametrize("config", [JobConfig(), MINIMAL, MAXIMAL], ids=["default", "minimal", "maximal"])
def test_built_jobs_meet_pod_security_restricted(config: JobConfig) -> None:
    """Every restricted (and baseline) control passes, field by field."""
    assert pss_restricted_violations(pod(config)) == []


def _mutate(path: str, value: Any) -> dict[str, Any]:
    """The default pod spec with one dotted path (``containers.0.x``) set to ``value``."""
    spec = copy.deepcopy(pod())
    *parents, last = path.split(".")
    target: Any = spec
    for key in parents:
        target = target[int(key)] if key.isdigit() else target.setdefault(key, {})
    if value is None:
        del target[last]
    else:
        target[last] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value", "complaint"),
    [
        ("hostNetwork", True, "hostNetwork"),
        ("hostPID", True, "hostPID"),
        ("containers.0.ports", [{"containerPort": 80, "hostPort": 80}], "hostPort"),
        ("containers.0.securityContext.privileged", True, "privileged"),
        ("containers.0.securityContext.allowPrivilegeEscalation", None, "allowPrivilegeEscalation"),
        ("containers.0.securityContext.capabilities", {"add": ["NET_ADMIN"], "drop": ["ALL"]}, "NET_ADMIN"),
        ("containers.0.securityContext.capabilities", {}, "drop lacks ALL"),
        ("containers.0.securityContext.runAsUser", 0, "runAsUser is 0"),
        ("containers.0.securityContext.runAsNonRoot", False, "runAsNonRoot is false"),
        ("securityContext.seccompProfile", {"type": "Unconfined"}, "Unconfined"),
        ("volumes", [{"name": "h", "hostPath": {"path": "/"}}], "hostPath"),
        ("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}], "kernel.msgmax"),
        ("containers.0.securityContext.seLinuxOptions", {"type": "spc_t"}, "seLinuxOptions"),
        ("containers.0.securityContext.procMount", "Unmasked", "procMount"),
    ],
)
def test_restricted_checker_flags_each_violation(path: str, value: Any, complaint: str) -> None:
    """The checker is not vacuous: each single violation is reported."""
    assert any(complaint in v for v in pss_restricted_violations(_mutate(path, value)))


def test_restricted_checker_needs_non_root_somewhere() -> None:
    """runAsNonRoot absent at both levels is a violation; set at either level is enough."""
    spec = _mutate("securityContext.runAsNonRoot", None)
    assert pss_restricted_violations(spec) == []
    del spec["containers"][0]["securityContext"]["runAsNonRoot"]
    assert any("runAsNonRoot is not true" in v for v in pss_restricted_violations(spec))
