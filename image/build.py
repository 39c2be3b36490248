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
lock file in /var/tmp instead of building it twice. Prints the image name on its last line.

Usage: ``image/build.py`` (as root; needs buildah, and debootstrap for the stand-in).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import stand_in_base

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "localhost/batchctl"
BUILDAH = stand_in_base.BUILDAH
CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "batchctl", "splitter", "launcher", "worker")
"""The build context the Dockerfile sees (``.dockerignore`` allows exactly these)."""


def context_files(root: Path = ROOT) -> Iterator[Path]:
    """Every file of the build context, in a fixed order, without bytecode; symlinked folders once."""
    for name in CONTEXT:
        path = root / name
        if path.is_file():
            yield path
            continue
        for found in sorted(path.rglob("*")):
            inside_link = any((root / parent).is_symlink() for parent in found.relative_to(root).parents)
            if found.is_file() and not found.is_symlink() and not inside_link and "__pycache__" not in found.parts:
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


def main() -> int:
    print(build(choose_base()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
