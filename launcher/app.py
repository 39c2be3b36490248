"""Assemble a launcher (or just its store) for a backend, and run it as a service."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from batchctl.core import logs
from batchctl.core.errors import BadInput, Unreachable
from batchctl.core.profiles import DEFAULT_PROFILE, Profile, load_profiles
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.launcher import catalog, http
from batchctl.launcher.backend import Backend
from batchctl.launcher.jobconfig import JobConfig
from batchctl.launcher.kube import Kube
from batchctl.launcher.leader import FileElector, LeaseElector
from batchctl.launcher.service import Elector, Launcher, Tuning
from batchctl.launcher.store import ConfigMapStore, FileStore, StateStore


@dataclass
class Parts:
    store: StateStore
    backend: Backend
    elector: Elector
    kube: Kube | None
    """The launcher's own namespace: state ConfigMaps, the Lease, the published profiles."""
    profiles: dict[str, Profile]
    jobs_kube: Kube | None = None
    """The workers' namespace (BATCHCTL_JOBS_NAMESPACE): Jobs only."""
    chores: list[Callable[[], object]] = field(default_factory=list)
    """Start-up steps that met an outage (publishing the profiles catalog): the launcher's loop
    retries them until they succeed, rather than the process exiting (and crash-looping)."""


def open_store(settings: Settings) -> StateStore:
    """The state store of the configured backend (what ``status`` and ``list`` read)."""
    if settings.backend == "local":
        return FileStore(settings.state_dir)
    return ConfigMapStore(Kube(settings.namespace, environ=settings.environ), settings.names)


def open_profiles(settings: Settings) -> dict[str, Profile]:
    """The worker profiles offered: the ``BATCHCTL_PROFILES`` file (keys it leaves out take the
    launcher's ``BATCHCTL_*`` variables), or without one a ``default`` profile of those variables."""
    base = JobConfig.from_env(settings.environ).default_profile()
    if settings.profiles_file is None:
        return {DEFAULT_PROFILE: base}
    return load_profiles(settings.profiles_file, base=base)


def offered_profiles(settings: Settings) -> dict[str, dict[str, Any]]:
    """What ``batchctl profiles`` shows: the launcher's published copy on Kubernetes, else the file."""
    if settings.backend == "local":
        return catalog.describe(open_profiles(settings))
    return catalog.read(Kube(settings.namespace, environ=settings.environ), settings.names)


def open_backend(settings: Settings) -> Backend:
    """The backend alone (what ``status`` uses to count active workers)."""
    return assemble(settings, elect=False).backend


def assemble(settings: Settings, *, elect: bool = True, worker_env: dict[str, str] | None = None) -> Parts:
    profiles = open_profiles(settings)
    if settings.backend == "local":
        from batchctl.launcher.local_backend import LocalBackend

        return Parts(FileStore(settings.state_dir),
                     LocalBackend(settings, worker_env_extra=worker_env, profiles=profiles),
                     FileElector(settings.state_dir), None, profiles)
    from batchctl.launcher.kube_backend import KubeBackend

    kube = Kube(settings.namespace, environ=settings.environ)
    jobs_kube = kube
    if settings.worker_namespace != settings.namespace:
        jobs_kube = Kube(settings.worker_namespace, environ=settings.environ)
    config = JobConfig.from_env(settings.environ)
    backend = KubeBackend(settings, jobs_kube, config, watch=elect, profiles=profiles)
    identity = settings.environ.get("BATCHCTL_POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    elector: Elector
    if elect and _truthy(settings.environ.get("BATCHCTL_LEADER_ELECTION", "true")):
        elector = LeaseElector(kube, settings.names.lease, identity)
    else:
        elector = _AlwaysLeader()
    parts = Parts(ConfigMapStore(kube, settings.names), backend, elector, kube, profiles, jobs_kube)
    if elect:  # a launcher: say what it offers where `batchctl profiles` reads it
        publish = partial(catalog.publish, kube, settings.names, profiles)
        try:
            publish()
        except Unreachable as exc:
            logs.get("launcher").warning("profiles_not_published", error=str(exc))
            parts.chores.append(publish)
    return parts


class _AlwaysLeader:
    """Leader election switched off (a single replica)."""

    is_leader = True
    watching = True
    inherited = True
    """Without election a start cannot tell a clean predecessor from one that died mid-pull."""

    def start(self) -> threading.Thread:
        return threading.current_thread()

    def stop(self, *, release: bool = True) -> None:
        """Nothing to give up."""


def _truthy(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise BadInput(f"BATCHCTL_LEADER_ELECTION={value!r}: must be true or false")
    return lowered in ("true", "1", "yes")


def serve(settings: Settings, *, port: int, tuning: Tuning | None = None) -> int:
    """``batchctl launcher``: run until SIGTERM or SIGINT; exit 0 after a clean stop."""
    parts = assemble(settings)  # first: a bad profiles file stops the start before anything connects
    pubsub = PubSub(settings)
    launcher = Launcher(settings, pubsub, parts.store, parts.backend, parts.elector, tuning=tuning or Tuning(),
                        profiles=parts.profiles, chores=parts.chores)
    checks: list[Callable[[], object]] = [pubsub.check_reachable]
    if parts.jobs_kube is not None:
        jobs_kube = parts.jobs_kube
        checks.append(lambda: jobs_kube.list_jobs("batchctl.dev/probe=none"))
    server = http.serve(port, healthy=launcher.healthy, ready=lambda: launcher.ready(checks),
                        registry=launcher.metrics.registry)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: launcher.stop())
    logs.get("launcher").info("serving", port=server.server_address[1])
    try:
        launcher.run()
    finally:
        server.shutdown()
        pubsub.close()
    return 0
