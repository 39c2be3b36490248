"""Fixtures shared by every ring: the real Pub/Sub emulator, per-test settings."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchctl.core import logs
from batchctl.core.emulator import Emulator, EmulatorMissing
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings

pytest_plugins = ["tests.support.kube_fixtures"]

logs.configure(json=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("KUBECONFIG"):
        return
    skip = pytest.mark.skip(reason="needs a real cluster: set KUBECONFIG")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def emulator_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Host:port of the real Pub/Sub emulator: the one in PUBSUB_EMULATOR_HOST, or one we start."""
    existing = os.environ.get("PUBSUB_EMULATOR_HOST")
    if existing:
        yield existing
        return
    try:
        emulator = Emulator.start(log_dir=tmp_path_factory.mktemp("emulator"))
    except EmulatorMissing as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Pub/Sub emulator is required in CI: {exc}")
        pytest.skip(str(exc))
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    try:
        yield emulator.host
    finally:
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        emulator.stop()


@pytest.fixture
def prefix() -> str:
    """A Pub/Sub name prefix unique to this test, so tests never see each other's topics."""
    return "t" + secrets.token_hex(4)


@pytest.fixture
def env(emulator_host: str, prefix: str, tmp_path: Path) -> dict[str, str]:
    """The environment a batchctl process of this test runs with."""
    return {
        **os.environ,
        "PUBSUB_EMULATOR_HOST": emulator_host,
        "GOOGLE_CLOUD_PROJECT": "batchctl-test",
        "BATCHCTL_PREFIX": prefix,
        "BATCHCTL_STATE_DIR": str(tmp_path / "state"),
        "BATCHCTL_BACKEND": "local",
    }


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest.fixture
def pubsub(settings: Settings) -> Iterator[PubSub]:
    client = PubSub(settings)
    try:
        yield client
    finally:
        client.close()
