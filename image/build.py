#!/usr/bin/env python3
"""Build the Dockerfile with buildah (no Docker engine needed), once per content of its inputs.

``make image`` runs this. The base is the Dockerfile's own default ``PYTHON_IMAGE`` when buildah can
pull it (or already holds it); when no image registry is reachable, as on the development and CI
machines, it is the Debian-built stand-in from ``image/stand_in_base.py``, passed as the build
argument (``PYTHON_IMAGE=...`` in the environment forces a base). The Dockerfile is the one users
build, unchanged.

The image is tagged ``localhost/batchctl:<hash>``, the hash covering the base's name and every file the
build context holds (see ``.dockerignore``), and ``localhost/batchctl:latest``. When storage already
holds the hash's tag, nothing is built: a second run takes about a second. Runs in parallel (two test
workers, ``make image`` beside ``make test``) that would build the same image wait for each other on a
lock file in /var/tmp instead of building it twice. Images of this repository built more than six
hours earlier are removed, with the test containers made from them. Prints the image name on its last
line.

Usage: ``image/build.py`` (as root; needs buildah, and debootstrap for the stand-in).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import stand_in_base

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "localhost/batchctl"
BUILDAH = stand_in_base.BUILDAH
CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "batchctl", "splitter", "launcher", "worker")
"""The build context the Dockerfile sees (``.dockerignore`` allows exactly these)."""
STALE_AFTER_S = 6 * 3600


def context_files(root: Path = ROOT) -> Iterator[Path]:
    """Every file of the build context, in a fixed order, without bytecode; symlinked folders once."""
    for name in CONTEXT:
        path = root / name
        if path.is_file():
            yield path
            continue
        for found in sorted(path.rglob("*")):
            # rglob does not descend into batchctl/launcher etc. (symlinks), so each file comes once
            if found.is_file() and not found.is_symlink() and "__pycache__" not in found.parts:
                yield found


def content_hash(base: str, root: Path = ROOT) -> str:
    """Twelve hex digits of SHA-256 over the base's name and each context file's path and bytes."""
    digest = hashlib.sha256(base.encode())
    for path in context_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def official_base(root: Path = ROOT) -> str:
    """The Dockerfile's default ``PYTHON_IMAGE``."""
    found = re.search(r"^ARG PYTHON_IMAGE=(\S+)", (root / "Dockerfile").read_text(), flags=re.MULTILINE)
    if not found:
        raise SystemExit("image/build.py: the Dockerfile has no ARG PYTHON_IMAGE default")
    return found.group(1)


def choose_base() -> str:
    """``$PYTHON_IMAGE``, else the official base when it is held or can be pulled, else the stand-in."""
    forced = os.environ.get("PYTHON_IMAGE")
    if forced:
        return forced
    official = official_base()
    if stand_in_base.exists(official):
        return official
    pulled = subprocess.run(
        [*BUILDAH, "pull", "--quiet", "--retry", "0", official], capture_output=True, check=False, timeout=300
    )
    if pulled.returncode == 0:
        return official
    print(f"image/build.py: cannot pull {official}; building on the Debian stand-in", file=sys.stderr)
    return stand_in_base.ensure()


def build(base: str) -> str:
    """``buildah bud`` of the Dockerfile on ``base`` unless the hash's tag exists; the image name."""
    image = f"{REPOSITORY}:{content_hash(base)}"
    with stand_in_base.locked(f"batchctl-image-{image.rsplit(':', 1)[-1]}"):
        if stand_in_base.exists(image):
            return image
        subprocess.run(
            [*BUILDAH, "bud", "--quiet", "--isolation", "chroot", "--network", "host",
             "--build-arg", f"PYTHON_IMAGE={base}", "--tag", image, "--tag", f"{REPOSITORY}:latest", str(ROOT)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return image


def stale(images: list[dict[str, Any]], containers: list[dict[str, Any]], *, now: float,
          keep: str) -> tuple[list[str], list[str]]:
    """Containers and images to remove: this repository's images built more than ``STALE_AFTER_S``
    ago (no session or CI run lasts that long, so none is in use), never ``keep``, and the
    containers made from them. Pure: ``buildah images --json`` and ``containers --json`` in."""
    old = {
        name
        for image in images
        for name in image.get("names") or []
        if name.startswith(f"{REPOSITORY}:") and name != keep and now - image.get("created", now) > STALE_AFTER_S
    }
    doomed = [c["containername"] for c in containers if c.get("imagename") in old]
    return doomed, sorted(old)


def prune(keep: str) -> None:
    """Remove stale images and their containers (vfs keeps a full copy of each), best effort."""
    listed = [subprocess.run([*BUILDAH, kind, "--json"], capture_output=True, text=True, check=False).stdout
              for kind in ("images", "containers")]
    images, containers = (json.loads(text or "null") or [] for text in listed)
    doomed, old = stale(images, containers, now=time.time(), keep=keep)
    for command in [["rm", name] for name in doomed] + [["rmi", name] for name in old]:
        subprocess.run([*BUILDAH, *command], capture_output=True, check=False)


def main() -> int:
    image = build(choose_base())
    prune(keep=image)
    print(image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
