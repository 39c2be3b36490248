"""The built container image for tests marked ``image``: built once per content, run two ways.

``build_image()`` runs ``image/build.py`` (what ``make image`` runs): it builds the Dockerfile with
buildah, on the Debian stand-in base when the official one cannot be pulled, and does nothing when
buildah's storage already holds the image for this content. ``ImageContainer.open`` gives one
buildah working container of that image, kept between sessions (its name carries the image's hash),
so a repeated run costs neither a build nor a copy of the root filesystem (vfs copies it whole).

Two ways to run a process from it:

- ``run`` / ``start``: ``buildah run --isolation chroot`` (host network, as a user on this kind of
  machine would), for one-off commands, a worker and a launcher;
- ``PodRunner``: what the test kubelet uses to run a pod's container. ``buildah run`` 1.28 answers a
  SIGTERM by SIGKILLing the container's process (measured: the process's SIGTERM handler never ran),
  which would hide the graceful shutdown that a deleted pod gets in Kubernetes. So a pod's process
  is started the way buildah's chroot isolation starts one, without buildah in between: in a private
  mount namespace (``unshare --mount``), the image's root filesystem bound read-only when the
  container asks for ``readOnlyRootFilesystem``, a fresh tmpfs for each ``emptyDir`` mount and
  ``/proc``, then ``chroot --userspec`` as the pod's user, ``env -i`` with the image's ``Env`` under
  the pod's environment, in the working directory. Every step ``exec``s the next, so the kubelet's
  process is the container's process: its signals and exit code are the container's.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.containers import expand

REPO = Path(__file__).resolve().parents[2]
BUILDAH = ("buildah", "--storage-driver", "vfs")
TOOLS = ("buildah", "debootstrap", "unshare", "chroot")
BUILD_TIMEOUT_S = 1200.0
Obj = dict[str, Any]


def missing_tools() -> list[str]:
    """The commands these tests need that are not on PATH (``.ci/run`` installs them)."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def build_image() -> str:
    """The image's name, ``localhost/batchctl:<content hash>``, built first if storage lacks it."""
    built = subprocess.run(
        [sys.executable, str(REPO / "image" / "build.py")],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False,
    )
    if built.returncode != 0:
        raise AssertionError(f"image/build.py exited {built.returncode}:\n{built.stderr[-4000:]}")
    return built.stdout.strip().splitlines()[-1]


def buildah(*args: str, timeout: float = 120.0) -> str:
    """Run buildah with the vfs storage driver; its stdout. Fails with its stderr."""
    done = subprocess.run([*BUILDAH, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass(frozen=True)
class ImageContainer:
    """A buildah working container of the built image, its mounted root filesystem and its config."""

    name: str
    image: str
    rootfs: Path
    config: Obj
    """The image's OCI config: ``User``, ``Env``, ``Entrypoint``, ``Cmd``, ``WorkingDir``."""

    @classmethod
    def open(cls, image: str) -> ImageContainer:
        """The working container named for ``image``'s tag, created the first time (a full copy)."""
        name = "batchctl-test-" + image.rsplit(":", 1)[-1]
        existing = json.loads(buildah("containers", "--json") or "null") or []
        if not any(c["containername"] == name for c in existing):
            buildah("from", "--quiet", "--pull=never", "--name", name, image, timeout=600)
        info = json.loads(buildah("inspect", "--type", "container", name))
        return cls(name, image, Path(buildah("mount", name)), info["OCIv1"]["config"])

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env") or [])

    def buildah_run_argv(self, argv: Sequence[str], *, user: str | None = None,
                         env: Mapping[str, str] | None = None, volumes: Sequence[str] = ()) -> list[str]:
        """``buildah run`` of ``argv`` in this container (host network, chroot isolation)."""
        options = ["--isolation", "chroot", "--network", "host", "--mount", "type=tmpfs,destination=/tmp"]
        options += [f"--user={user}"] if user else []
        options += [f"--env={key}={value}" for key, value in (env or {}).items()]
        options += [f"--volume={volume}" for volume in volumes]
        return [*BUILDAH, "run", *options, self.name, "--", *argv]

    def run(self, argv: Sequence[str], *, timeout: float = 60.0, **options: Any) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to its end; stdout and stderr captured."""
        return subprocess.run(self.buildah_run_argv(argv, **options), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def start(self, argv: Sequence[str], log: Path, **options: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` under ``buildah run`` in its own session, output to ``log``."""
        with log.open("wb") as out:
            return subprocess.Popen(self.buildah_run_argv(argv, **options), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def home_of(self, uid: int) -> str:
        """The home directory ``/etc/passwd`` in the image gives ``uid``, ``/`` when it has none."""
        for line in (self.rootfs / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 5 and fields[2] == str(uid):
                return fields[5]
        return "/"


# The pod's process: every line but the mounts ends in exec, so the pid stays the kubelet's child's.
POD_SCRIPT = """set -e
root=$1 readonly=$2 userspec=$3 groups=$4 workdir=$5; shift 5
mount --bind "$root" "$root"
if [ "$readonly" = true ]; then mount -o remount,bind,ro "$root"; fi
mount -t proc proc "$root/proc"
while [ "$1" != -- ]; do mount -t tmpfs -o mode=1777 tmpfs "$root$1"; shift; done; shift
exec chroot --userspec="$userspec" --groups="$groups" "$root" /usr/bin/env -i -C "$workdir" "$@"
"""


@dataclass(frozen=True)
class PodRunner:
    """A ``containers.ContainerRunner`` for the test kubelet: each pod's container from the image.

    Honours the container's ``command``/``args`` (else the image's ENTRYPOINT), ``env`` (over the
    image's ``Env``, with ``HOME`` from the image's ``/etc/passwd``), ``workingDir`` (else the image's),
    ``runAsUser``/``runAsGroup`` (container over pod, else the image's ``USER``),
    ``readOnlyRootFilesystem`` and ``emptyDir`` volume mounts. Not modelled: resources, capabilities,
    seccomp, other volume kinds, a PID or network namespace (the host network, as ``buildah run``).
    """

    image: ImageContainer

    def __call__(self, container: Obj, env: Mapping[str, str], log_path: Path, *,
                 pod_spec: Obj) -> subprocess.Popen[bytes] | None:
        uid, gid = self.user(container, pod_spec)
        full_env = {**self.image.env, "HOME": self.image.home_of(uid), **env}
        command = [expand(arg, full_env) for arg in container.get("command") or []]
        args = [expand(arg, full_env) for arg in container.get("args") or []]
        argv = (command or list(self.image.config.get("Entrypoint") or [])) + args
        readonly = bool((container.get("securityContext") or {}).get("readOnlyRootFilesystem"))
        workdir = container.get("workingDir") or self.image.config.get("WorkingDir") or "/"
        scratch = self.empty_dirs(container, pod_spec)
        script_args = [str(self.image.rootfs), str(readonly).lower(), f"{uid}:{gid}", str(gid), workdir,
                       *scratch, "--", *(f"{key}={value}" for key, value in full_env.items()), *argv]
        with log_path.open("wb") as out:
            out.write(f"pod runner: {shlex.join(argv)} as {uid}:{gid} from {self.image.image}\n".encode())
            out.flush()
            return subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", POD_SCRIPT, "pod", *script_args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def user(self, container: Obj, pod_spec: Obj) -> tuple[int, int]:
        """``runAsUser``/``runAsGroup`` of the container, else of the pod, else the image's ``USER``."""
        image_user, _, image_group = str(self.image.config.get("User") or "0").partition(":")
        pod = pod_spec.get("securityContext") or {}
        own = container.get("securityContext") or {}
        uid = own.get("runAsUser", pod.get("runAsUser", int(image_user)))
        gid = own.get("runAsGroup", pod.get("runAsGroup", int(image_group or image_user)))
        return int(uid), int(gid)

    @staticmethod
    def empty_dirs(container: Obj, pod_spec: Obj) -> list[str]:
        """Mount paths of the container's ``emptyDir`` volumes (each becomes a fresh tmpfs)."""
        empty = {v["name"] for v in pod_spec.get("volumes") or [] if "emptyDir" in v}
        return [m["mountPath"] for m in container.get("volumeMounts") or [] if m["name"] in empty]
