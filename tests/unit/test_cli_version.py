"""``batchctl --version``: prints the installed distribution's version from its metadata, exits 0."""

from __future__ import annotations

from importlib import metadata

import pytest

from batchctl.frontend.cli import main


def test_version_prints_the_package_metadata_version(capsys: pytest.CaptureFixture[str]) -> None:
    """The line is ``batchctl <version>`` with the version pip installed, not a copy kept in the code."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"batchctl {metadata.version('batchctl')}\n"
