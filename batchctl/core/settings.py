"""One frozen settings object, built once from flags and the environment.

Only this module reads ``os.environ`` for batchctl's own variables; everything
else receives a ``Settings`` (or a narrower config built from it) explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from batchctl.core.errors import BadInput
from batchctl.core.names import Names

BACKENDS = ("kubernetes", "local")
WORK_ACK_DEADLINE_S = 20
"""The work subscription's ack deadline, and the lease workers keep renewing on held parts (every
~3 s): a killed worker's parts are back about this long after its last renewal. Short, so a kill
costs ~20 s, not a minute; long enough that a stalled renewal (bounded RPCs, ~5 s) never loses a
lease. The launcher paces an idle follow-up Job by this same figure."""

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
EMULATOR_PROJECT = "batchctl-local"


@dataclass(frozen=True)
class Settings:
    """Where batchctl talks to and how it names things."""

    project: str | None
    """Google Cloud project of every topic and subscription (None: not configured)."""
    emulator_host: str | None
    """``host:port`` of a Pub/Sub emulator, or None for real Pub/Sub."""
    backend: str
    """``kubernetes`` (Jobs through the API server) or ``local`` (worker processes)."""
    namespace: str
    """Kubernetes namespace of the launcher's state objects and leader Lease."""
    state_dir: Path
    """Where the local backend keeps batch state (one JSON file per batch)."""
    prefix: str
    """Prefix of every Pub/Sub resource name."""
    jobs_namespace: str = ""
    """BATCHCTL_JOBS_NAMESPACE: where worker Jobs run (empty: ``namespace``, as before)."""
    profiles_file: Path | None = None
    """BATCHCTL_PROFILES: the operator's worker profiles (None: one ``default`` profile)."""
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """The environment these settings were read from (passed on to worker processes)."""

    @property
    def worker_namespace(self) -> str:
        """The namespace of worker Jobs."""
        return self.jobs_namespace or self.namespace

    @property
    def names(self) -> Names:
        return Names(self.prefix)

    @property
    def pubsub_endpoint(self) -> str:
        return self.emulator_host or "pubsub.googleapis.com:443"

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        project: str | None = None,
        backend: str | None = None,
        namespace: str | None = None,
    ) -> Settings:
        """Build settings; flags given as arguments win over the environment.

        Every bad variable is reported in one BadInput.
        """
        env = dict(os.environ if environ is None else environ)
        problems: list[str] = []
        emulator = env.get("PUBSUB_EMULATOR_HOST") or None
        project = project or env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT")
        if not project and emulator:
            project = EMULATOR_PROJECT
        backend = backend or env.get("BATCHCTL_BACKEND") or "kubernetes"
        if backend not in BACKENDS:
            problems.append(f"BATCHCTL_BACKEND={backend!r}: must be one of {', '.join(BACKENDS)}")
        prefix = env.get("BATCHCTL_PREFIX") or "batchctl"
        if not _valid_prefix(prefix):
            problems.append(f"BATCHCTL_PREFIX={prefix!r}: must be lowercase letters, digits, '-' (max 12)")
        if problems:
            raise BadInput("; ".join(problems))
        state_dir = Path(env.get("BATCHCTL_STATE_DIR") or Path.home() / ".local/state/batchctl")
        profiles = env.get("BATCHCTL_PROFILES") or None
        return cls(
            project=project,
            emulator_host=emulator,
            backend=backend,
            namespace=namespace or env.get("BATCHCTL_NAMESPACE") or _default_namespace(),
            state_dir=state_dir.expanduser(),
            prefix=prefix,
            jobs_namespace=env.get("BATCHCTL_JOBS_NAMESPACE") or "",
            profiles_file=Path(profiles).expanduser() if profiles else None,
            environ=env,
        )


def _valid_prefix(prefix: str) -> bool:
    return 0 < len(prefix) <= 12 and prefix[0].isalpha() and all(
        c.isdigit() or c == "-" or ("a" <= c <= "z") for c in prefix
    )


def _default_namespace() -> str:
    try:
        return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"
