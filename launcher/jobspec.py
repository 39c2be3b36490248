"""The worker Job spec: a pure function from a batch's launch to a ``batch/v1`` Job.

Nothing here talks to the API server; ``build_job`` only assembles the official
client's models, so every field is unit-tested and schema-validated without a cluster.

The shape, and why:
- work-queue Job: ``completions`` unset, ``parallelism`` given; the pods drain one
  subscription and the first to exit 0 ends the Job (follow-ups are the launcher's job);
- ``restartPolicy: Never`` so each failed pod is a new pod the Job controller counts
  against ``backoffLimit``, and so ``podFailurePolicy`` applies;
- ``podFailurePolicy``: a disrupted pod (preemption, eviction, node drain, Spot
  reclaim) is ignored rather than counted, and so is a worker stopped by SIGTERM (exit
  143: the pods the Job controller deletes when the worker budget patches
  ``parallelism`` down, which it would otherwise count against ``backoffLimit``); the
  worker's configuration-error exit code fails the Job at once instead of retrying a
  handler that cannot import;
- ``ttlSecondsAfterFinished`` instead of a cleanup thread;
- with ``BATCHCTL_KUEUE_QUEUE``, ``suspend: true`` and the ``kueue.x-k8s.io/queue-name`` label
  (on the Job, where Kueue reads it): Kueue creates a Workload and unsuspends the Job once
  admitted, or suspends it again to preempt it; the launcher never unsuspends it itself;
- the restricted Pod Security profile, a read-only root filesystem with an emptyDir
  on /tmp, and no service account token: workers never call the API server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s

from batchctl.launcher.jobconfig import JobConfig

CONTAINER = "worker"
"""Name of the worker container; the podFailurePolicy exit-code rule refers to it."""
WORKER_ARGS = ["worker"]
"""Arguments after the image's ENTRYPOINT ``["batchctl"]``."""
CONFIG_ERROR_EXIT = 2
"""The worker's exit code for a configuration error (bad handler, missing variable)."""
STOPPED_EXIT = 143
"""The worker's exit code after SIGTERM (``EXIT_TERMINATED``): it nacked what it held and stopped."""
WORKER_ID_VAR = "BATCHCTL_WORKER_ID"
RUN_AS = 10001
"""The image's numeric non-root user and group."""
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
"""The label that hands a Job to Kueue (kueue.sigs.k8s.io/docs/tasks/run/jobs/)."""
SCRATCH_VOLUME = "tmp"
SCRATCH_PATH = "/tmp"


def build_job(
    *,
    name: str,
    namespace: str,
    labels: dict[str, str],
    parallelism: int,
    env: Mapping[str, str],
    config: JobConfig,
) -> k8s.V1Job:
    """The Job for one launch of a batch.

    ``env`` becomes the worker's literal environment, followed by ``config.worker_env()``
    and ``BATCHCTL_WORKER_ID`` (the pod's name, from the downward API). Raises ValueError
    when ``parallelism`` is outside ``1..config.max_parallelism`` or ``env`` sets a
    variable that the config or this function owns.
    """
    if not 1 <= parallelism <= config.max_parallelism:
        raise ValueError(f"parallelism {parallelism} is outside 1..{config.max_parallelism}")
    owned = sorted(set(env) & {*config.worker_env(), WORKER_ID_VAR})
    if owned:
        raise ValueError(f"env sets {', '.join(owned)}, which the Job config sets")
    job_labels = {**labels, KUEUE_QUEUE_LABEL: config.kueue_queue} if config.kueue_queue else dict(labels)
    return k8s.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=job_labels),
        spec=k8s.V1JobSpec(
            parallelism=parallelism,
            suspend=True if config.kueue_queue else None,
            backoff_limit=config.backoff_limit,
            pod_failure_policy=_pod_failure_policy(),
            ttl_seconds_after_finished=config.ttl_seconds_after_finished,
            active_deadline_seconds=config.active_deadline_seconds,
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=dict(labels)),
                spec=_pod_spec(env, config),
            ),
        ),
    )


def job_to_dict(job: k8s.V1Job) -> dict[str, Any]:
    """The Job as the API server sees it: camelCase keys, no None fields."""
    result: dict[str, Any] = k8s.ApiClient().sanitize_for_serialization(job)
    return result


def _pod_failure_policy() -> k8s.V1PodFailurePolicy:
    """Disruptions and stops are not failures; a configuration error fails the Job at once."""
    return k8s.V1PodFailurePolicy(
        rules=[
            k8s.V1PodFailurePolicyRule(
                action="Ignore",
                on_pod_conditions=[
                    k8s.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")
                ],
            ),
            k8s.V1PodFailurePolicyRule(
                action="Ignore",
                on_exit_codes=k8s.V1PodFailurePolicyOnExitCodesRequirement(
                    container_name=CONTAINER, operator="In", values=[STOPPED_EXIT]
                ),
            ),
            k8s.V1PodFailurePolicyRule(
                action="FailJob",
                on_exit_codes=k8s.V1PodFailurePolicyOnExitCodesRequirement(
                    container_name=CONTAINER, operator="In", values=[CONFIG_ERROR_EXIT]
                ),
            ),
        ]
    )


def _pod_spec(env: Mapping[str, str], config: JobConfig) -> k8s.V1PodSpec:
    return k8s.V1PodSpec(
        restart_policy="Never",
        service_account_name=config.service_account,
        automount_service_account_token=False,
        enable_service_links=False,
        termination_grace_period_seconds=config.termination_grace_period_s,
        priority_class_name=config.priority_class,
        node_selector=dict(config.node_selector) or None,
        tolerations=[
            k8s.V1Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect)
            for t in config.tolerations
        ]
        or None,
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=RUN_AS,
            run_as_group=RUN_AS,
            fs_group=RUN_AS,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        containers=[_container(env, config)],
        volumes=[
            k8s.V1Volume(
                name=SCRATCH_VOLUME, empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=config.scratch_size)
            )
        ],
    )


def _container(env: Mapping[str, str], config: JobConfig) -> k8s.V1Container:
    return k8s.V1Container(
        name=CONTAINER,
        image=config.image,
        image_pull_policy=config.image_pull_policy,
        args=list(WORKER_ARGS),
        env=_env(env, config),
        resources=_resources(config),
        security_context=k8s.V1SecurityContext(
            run_as_non_root=True,
            run_as_user=RUN_AS,
            run_as_group=RUN_AS,
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        volume_mounts=[k8s.V1VolumeMount(name=SCRATCH_VOLUME, mount_path=SCRATCH_PATH)],
    )


def _env(env: Mapping[str, str], config: JobConfig) -> list[k8s.V1EnvVar]:
    literal = {**env, **config.worker_env()}
    pod_name = k8s.V1EnvVarSource(field_ref=k8s.V1ObjectFieldSelector(field_path="metadata.name"))
    return [k8s.V1EnvVar(name=key, value=value) for key, value in literal.items()] + [
        k8s.V1EnvVar(name=WORKER_ID_VAR, value_from=pod_name)
    ]


def _resources(config: JobConfig) -> k8s.V1ResourceRequirements:
    limits = {"cpu": config.cpu_limit, "memory": config.memory_limit, **config.extended_resources}
    return k8s.V1ResourceRequirements(
        requests={"cpu": config.cpu_request, "memory": config.memory_request, **config.extended_resources},
        limits={key: value for key, value in limits.items() if value is not None} or None,
    )
