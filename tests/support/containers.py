"""How the test kubelet runs a container: its environment, ``$(VAR)`` expansion, and the process.

A container runs as a local process in its own session (``command + args``, or the kubelet's
``entrypoint + args`` when the command is unset, as the image's ENTRYPOINT would).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

Obj = dict[str, Any]
ConfigMapReader = Callable[[str], Mapping[str, str]]  # name -> data (raises when absent)
IMAGE_ENV: Mapping[str, str] = {
    "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
    "HOME": "/nonexistent",  # the image's user 10001 has no home
    "PYTHONDONTWRITEBYTECODE": "1",  # the Dockerfile's runtime ENV
    "PYTHONUNBUFFERED": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_NO_CACHE_DIR": "1",
}
"""What a container of the batchctl image has before its pod spec's ``env``: the runtime's PATH and
HOME and the Dockerfile's ENV. A pod never inherits the environment of the test that started it."""
VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ContainerRunner(Protocol):
    """Starts a pod's container some other way than ``spawn`` (e.g. from a built image), or None when
    it cannot start. The returned process must take the kubelet's signals (it ``killpg``s its pid) and
    exit with the container's exit code."""

    def __call__(
        self, container: Obj, env: Mapping[str, str], log_path: Path, *, pod_spec: Obj
    ) -> subprocess.Popen[bytes] | None: ...


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names expand, others stay, ``$$`` is a literal ``$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return variables.get(match.group(1), match.group(0))

    return VAR_REF.sub(one, text)


def spawn(
    container: Obj, env: Mapping[str, str], log_path: Path, *, entrypoint: Sequence[str]
) -> subprocess.Popen[bytes] | None:
    """Start a container's process in its own session, output to ``log_path``; None when it cannot start."""
    command = [expand(arg, env) for arg in container.get("command") or []]
    args = [expand(arg, env) for arg in container.get("args") or []]
    argv = (command or list(entrypoint)) + args
    with log_path.open("wb") as out:
        try:
            return subprocess.Popen(
                argv,
                env=dict(env),
                cwd=container.get("workingDir"),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:  # StartError: the container cannot run
            out.write(f"cannot start {argv}: {exc}\n".encode())
            return None

def container_env(
    container: Obj, pod: Obj, *, base: Mapping[str, str], read_config_map: ConfigMapReader
) -> dict[str, str]:
    """A container's environment: its ``env`` (values, ``$(VAR)`` references, ``valueFrom``) over ``base``."""
    defined: dict[str, str] = {}
    for var in container.get("env") or []:
        if "valueFrom" in var:
            defined[var["name"]] = value_from(var["valueFrom"], pod, read_config_map)
        else:
            defined[var["name"]] = expand(var.get("value", ""), defined)
    return {**base, "HOSTNAME": pod["metadata"]["name"], **defined}

def value_from(source: Obj, pod: Obj, read_config_map: ConfigMapReader) -> str:
    """The value of an ``env[].valueFrom``: a ``fieldRef`` of the pod or a ``configMapKeyRef``."""
    if "fieldRef" in source:
        path = source["fieldRef"]["fieldPath"]
        meta, spec = pod["metadata"], pod["spec"]
        fields = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": spec.get("nodeName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
        }
        found = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if found:
            return str((meta.get(found.group(1)) or {}).get(found.group(2), ""))
        return str(fields[path])
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        data = read_config_map(ref["name"])
        return str(data[ref["key"]])
    raise ValueError(f"unsupported valueFrom {sorted(source)}")

