"""The pure parts of image/build.py and image/stand_in_base.py: which Debian mirror apt uses, what
the build context holds (symlinked role folders counted once), which images are stale; which runs
start the image build in the background."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "image"))

import build  # noqa: E402  image/ is a folder of scripts, not a package
import stand_in_base  # noqa: E402

DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_mirror_from_deb822_skips_security_and_other_suites() -> None:
    """The bookworm archive is found; -security and a third-party bookworm-named suite are not."""
    third_party = "deb https://packages.example.com/apt cloud-sdk-bookworm main\n"
    assert stand_in_base.mirrors([DEB822, third_party]) == ["http://deb.debian.org/debian"]


def test_mirror_from_one_line_format_with_options() -> None:
    """``deb [signed-by=...] URI bookworm main`` counts; a trailing slash is dropped; order is kept."""
    text = ("deb [signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n"
            "deb http://b.example/debian bookworm main\n")
    assert stand_in_base.mirrors([text]) == ["http://mirror.example/debian", "http://b.example/debian"]


def test_build_context_counts_role_folders_once_without_bytecode() -> None:
    """splitter/ etc. are read through their real folders, never again through batchctl/ symlinks."""
    files = [str(p.relative_to(REPO)) for p in build.context_files()]
    assert "launcher/planner.py" in files and "Dockerfile" in files and "pyproject.toml" in files
    assert not [f for f in files if f.startswith(("batchctl/launcher/", "batchctl/worker/", "batchctl/splitter/"))]
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert len(files) == len(set(files))


def test_stale_images_are_old_ones_of_this_repository_and_their_containers() -> None:
    """Older than six hours and not the one just built: removed with its container; others stay."""
    now = 100_000.0
    images = [
        {"names": ["localhost/batchctl:old"], "created": now - 7 * 3600},
        {"names": ["localhost/batchctl:fresh"], "created": now - 3600},
        {"names": ["localhost/batchctl:keep"], "created": now - 9 * 3600},
        {"names": ["localhost/batchctl-stand-in-python:bookworm-x"], "created": now - 99 * 3600},
    ]
    containers = [
        {"imagename": "localhost/batchctl:old", "containername": "batchctl-test-old"},
        {"imagename": "localhost/batchctl:fresh", "containername": "batchctl-test-fresh"},
    ]
    assert build.stale(images, containers, now=now, keep="localhost/batchctl:keep") == (
        ["batchctl-test-old"], ["localhost/batchctl:old"])


def test_background_build_only_for_runs_that_include_the_image_tests() -> None:
    """The whole suite, tests/e2e or the file (with a test id) start it; tests/unit or -m 'not image' do not."""
    from tests.support.image_fixtures import runs_image_tests

    image_tests = str(REPO / "tests" / "e2e" / "test_image.py")
    assert runs_image_tests([str(REPO / "tests")], "")
    assert runs_image_tests([str(REPO / "tests" / "e2e")], "")
    assert runs_image_tests([f"{image_tests}::test_help_and_version_work_in_the_image"], "")
    assert not runs_image_tests([str(REPO / "tests" / "unit")], "")
    assert not runs_image_tests([str(REPO / "tests")], "not image and not cluster")
