"""The ``image`` fixture, and the image build started at the beginning of a run that includes it.

Built in the fixture alone, the image would be built when pytest-xdist first reaches
``tests/e2e/test_image.py``, late in a whole-suite run, with nothing left to overlap it. So when the
run's paths include that file and ``-m`` does not leave out ``image``, ``pytest_configure`` (in the
controller only) starts ``image/build.py`` in the background at once; the fixture's own call then
waits for it on the build's lock file and finds the image. Load from the root conftest with
``pytest_plugins``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.image import REPO, ImageContainer, build_image, missing_tools

IMAGE_TESTS = REPO / "tests" / "e2e" / "test_image.py"
BACKGROUND_WAIT_S = 1200.0


def unavailable() -> str:
    """Why the image tests cannot run here, or "" when they can."""
    missing = missing_tools()
    if missing:
        return f"needs {', '.join(missing)} (apt-get install -y buildah debootstrap)"
    return "needs root for buildah and chroot" if os.geteuid() != 0 else ""


def runs_image_tests(args: list[str], markexpr: str) -> bool:
    """Whether a run of these paths and this ``-m`` expression includes the image tests."""
    if "not image" in markexpr:
        return False
    for arg in args:
        path = Path(arg.split("::", 1)[0]).resolve()
        if path == IMAGE_TESTS or IMAGE_TESTS.is_relative_to(path):
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or unavailable():
        return
    if runs_image_tests(list(config.args), config.getoption("markexpr") or ""):
        config.stash[BUILD] = subprocess.Popen(
            [sys.executable, str(REPO / "image" / "build.py")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    """Let a background build finish (bounded): killed midway, buildah would leave a half-built container."""
    build = config.stash.get(BUILD, None)
    if build is not None:
        try:
            build.wait(timeout=BACKGROUND_WAIT_S)
        except subprocess.TimeoutExpired:
            build.kill()


BUILD = pytest.StashKey[subprocess.Popen[bytes]]()


@pytest.fixture(scope="session")
def image() -> Iterator[ImageContainer]:
    """The built image's working container for this session (built or copied only when missing)."""
    reason = unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"image tests must run in CI: {reason}")
        pytest.skip(reason)
    yield ImageContainer.open(build_image())
