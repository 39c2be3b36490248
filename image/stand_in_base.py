#!/usr/bin/env python3
"""Build and cache a stand-in for the Dockerfile's base image, for machines that cannot pull it.

What it stands in for: the official ``python:3.11.15-slim-bookworm`` (the Dockerfile's default
``PYTHON_IMAGE``), which comes from an image registry that the development and CI machines cannot
reach. The stand-in is Debian bookworm built here with ``debootstrap --variant=minbase`` from the
Debian mirror this machine's apt already uses, plus ``python3``, ``python3-pip``, ``python3-venv``
and ``passwd`` (``groupadd``/``useradd``), committed as an image with ``buildah from scratch`` +
``buildah copy`` + ``buildah commit``.

How it differs from the official image:

- Python is Debian's 3.11.2 in ``/usr/bin`` (the official image has 3.11.15 built from source in
  ``/usr/local/bin``); ``pip install`` as root puts packages in ``/usr/local/lib/python3.11/dist-packages``
  and console scripts in ``/usr/local/bin``, so ``batchctl`` is on the same ``PATH`` either way.
- Debian marks its Python "externally managed" (PEP 668), so the image's environment sets
  ``PIP_BREAK_SYSTEM_PACKAGES=1``; the official image has no such marker and needs nothing.
- The host's CA bundle replaces the image's (``/etc/ssl/certs/ca-certificates.crt``, and ``PIP_CERT``
  points at it), so pip inside a build reaches the package index exactly as pip on the host does.
- No ``python`` command (only ``python3``): the Dockerfile does not use one.

None of this reaches the Dockerfile: the base stays its ``PYTHON_IMAGE`` build argument, and
``image/build.py`` passes this image's name there only when the official one cannot be pulled.

The image name carries a hash of what goes into it (packages, environment, mirror, CA bundle), so a second run finds it
in buildah's storage and prints its name at once (a first run takes about a minute).

Usage: ``image/stand_in_base.py`` (as root) prints the image name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

SUITE = "bookworm"
PACKAGES = ("python3", "python3-pip", "python3-venv", "passwd")
REPOSITORY = "localhost/batchctl-stand-in-python"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
BUILDAH = ("buildah", "--storage-driver", "vfs")
FALLBACK_MIRROR = "http://deb.debian.org/debian"
ENVIRONMENT = {
    "PIP_BREAK_SYSTEM_PACKAGES": "1",
    "PIP_CERT": str(CA_BUNDLE),
    "LANG": "C.UTF-8",
}


def mirrors(texts: Iterable[str]) -> list[str]:
    """Debian archive URIs (not -security, not third-party) named in apt source files, in order.

    Reads both formats: one-line ``deb URI SUITE COMPONENTS`` and deb822 stanzas (``URIs:`` beside
    ``Suites:``). A mirror counts when its suites include bookworm and its path ends in ``/debian``.
    """
    found: list[str] = []
    for text in texts:
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 3 and words[0] == "deb":
                uri_at = 2 if words[1].startswith("[") else 1
                found += _if_debian(words[uri_at], words[uri_at + 1 :])
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, flags=re.MULTILINE))
            for uri in fields.get("URIs", "").split():
                found += _if_debian(uri, fields.get("Suites", "").split())
    return list(dict.fromkeys(found))


def _if_debian(uri: str, suites: list[str]) -> list[str]:
    return [uri.rstrip("/")] if SUITE in suites and uri.rstrip("/").endswith("/debian") else []


def apt_mirror() -> str:
    """The first Debian mirror this machine's apt uses, or deb.debian.org when none is configured."""
    files: list[Path] = []
    for source in APT_SOURCES:
        files += sorted(source.glob("*.list")) + sorted(source.glob("*.sources")) if source.is_dir() else [source]
    texts = [path.read_text() for path in files if path.is_file()]
    return next(iter(mirrors(texts)), FALLBACK_MIRROR)


def image_name(mirror: str) -> str:
    """``REPOSITORY:bookworm-<hash>``: the hash covers what goes into the image (suite, packages,
    environment, mirror, the CA bundle's bytes), so editing this script's code does not rebuild it."""
    digest = hashlib.sha256(repr((SUITE, PACKAGES, sorted(ENVIRONMENT.items()), mirror)).encode())
    digest.update(CA_BUNDLE.read_bytes())
    return f"{REPOSITORY}:{SUITE}-{digest.hexdigest()[:12]}"


def exists(image: str) -> bool:
    """Whether buildah's storage already holds ``image``."""
    found = subprocess.run([*BUILDAH, "inspect", "--type", "image", image], capture_output=True, check=False)
    return found.returncode == 0


def build(image: str, mirror: str) -> None:
    """debootstrap a minbase rootfs with Python, add the host's CA bundle, commit it as ``image``."""
    with tempfile.TemporaryDirectory(prefix="stand-in-base-", dir="/var/tmp") as work:
        rootfs = Path(work) / "rootfs"
        include = ",".join(PACKAGES)
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={include}", SUITE, str(rootfs), mirror],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        shutil.copyfile(CA_BUNDLE, rootfs / CA_BUNDLE.relative_to("/"))
        container = _out(*BUILDAH, "from", "scratch")
        try:
            subprocess.run([*BUILDAH, "copy", "--quiet", container, f"{rootfs}/", "/"], check=True)
            config = [f"--env={key}={value}" for key, value in ENVIRONMENT.items()]
            config += ["--cmd=python3", f"--label=org.opencontainers.image.description=stand-in for {_official()}"]
            subprocess.run([*BUILDAH, "config", *config, container], check=True)
            commit = [*BUILDAH, "commit", "--quiet", "--rm", container, image]
            subprocess.run(commit, check=True, stdout=subprocess.DEVNULL)
        except BaseException:
            subprocess.run([*BUILDAH, "rm", container], capture_output=True, check=False)
            raise


def _official() -> str:
    dockerfile = (Path(__file__).resolve().parent.parent / "Dockerfile").read_text()
    found = re.search(r"^ARG PYTHON_IMAGE=(\S+)", dockerfile, flags=re.MULTILINE)
    return found.group(1) if found else "the official python slim-bookworm image"


def _out(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold ``/var/tmp/NAME.lock`` exclusively: a second builder of the same image waits, then finds it."""
    with Path(f"/var/tmp/{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure() -> str:
    """The stand-in's image name, built first when buildah's storage does not hold it yet."""
    mirror = apt_mirror()
    image = image_name(mirror)
    with locked("batchctl-stand-in-base"):
        if not exists(image):
            build(image, mirror)
    return image


if __name__ == "__main__":
    if not (shutil.which("buildah") and shutil.which("debootstrap")):
        sys.exit("stand_in_base: needs buildah and debootstrap (apt-get install -y buildah debootstrap)")
    print(ensure())
