#!/usr/bin/env python3
"""Size of the container image: what a node stores for it, and what batchctl adds to its base.

    .venv/bin/python bench/image_size.py    # as root, with buildah (image/build.py builds it if needed)

Builds the image as ``make image`` does (nothing to do when buildah holds it already), then reads the
layer sizes of its manifest (uncompressed tar, what a node unpacks) and the installed packages' sizes
in a working container of it. The base is the Debian stand-in where the official python image cannot
be pulled, so the base figure is the stand-in's; batchctl's own share (the layers above the base) is
the same on either. The last line is the JSON figures; without buildah or root it reports why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILDAH = ("buildah", "--storage-driver", "vfs")
SITE = "usr/local/lib/python3.11/dist-packages"
MB = 1e6


def buildah(*args: str) -> str:
    return subprocess.run([*BUILDAH, *args], check=True, capture_output=True, text=True, timeout=900).stdout.strip()


def layer_sizes(image: str) -> list[int]:
    """Uncompressed size of each layer of ``image``, base first."""
    manifest = json.loads(json.loads(buildah("inspect", "--type", "image", image))["Manifest"])
    return [int(layer["size"]) for layer in manifest["layers"]]


def largest_packages(image: str, count: int = 8) -> list[tuple[str, float]]:
    """The ``count`` largest top-level entries of the image's site-packages, in MB."""
    container = buildah("from", "--quiet", "--pull=never", image)
    try:
        site = Path(buildah("mount", container)) / SITE
        sizes = {entry.name: _du(entry) for entry in site.iterdir() if not entry.name.endswith(".dist-info")}
    finally:
        subprocess.run([*BUILDAH, "rm", container], capture_output=True, check=False)
    return [(name, round(size / MB, 1)) for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:count]]


def _du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> int:
    if shutil.which("buildah") is None or os.geteuid() != 0:
        print(json.dumps({"skipped": "needs buildah and root", "ok": None}))
        return 0
    built = subprocess.run([sys.executable, str(ROOT / "image" / "build.py")], check=True, capture_output=True,
                           text=True, timeout=1800)
    image = built.stdout.strip().splitlines()[-1]
    layers = layer_sizes(image)
    figures = {
        "image": image,
        "base": "Debian stand-in" if _on_stand_in(image) else "official python slim",
        "total_mb": round(sum(layers) / MB, 1),
        "base_mb": round(layers[0] / MB, 1),
        "added_mb": round(sum(layers[1:]) / MB, 1),
        "largest_packages_mb": largest_packages(image),
        "ok": True,
    }
    print(json.dumps(figures))
    return 0


def _on_stand_in(image: str) -> bool:
    """The stand-in's environment (PEP 668 override) is inherited by every image built on it."""
    config = json.loads(buildah("inspect", "--type", "image", image))["OCIv1"]["config"]
    return "PIP_BREAK_SYSTEM_PACKAGES=1" in (config.get("Env") or [])


if __name__ == "__main__":
    sys.exit(main())
