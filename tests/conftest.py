"""Fixtures shared by every ring: the real Pub/Sub and Cloud Storage emulators, per-test settings."""

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
from batchctl.core.storage import EMULATOR_VAR, Storage
from tests.support.gcs import StorageEmulator, StorageEmulatorMissing

pytest_plugins = ["tests.support.kube_fixtures", "tests.support.image_fixtures"]

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


@pytest.fixture(scope="session")
def storage_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Host:port of the real Cloud Storage emulator: the one in STORAGE_EMULATOR_HOST, or one we start."""
    existing = os.environ.get(EMULATOR_VAR)
    if existing:
        yield existing
        return
    try:
        emulator = StorageEmulator.start(log_dir=tmp_path_factory.mktemp("storage-emulator"))
    except StorageEmulatorMissing as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Cloud Storage emulator is required in CI: {exc}")
        pytest.skip(str(exc))
    os.environ[EMULATOR_VAR] = emulator.host
    try:
        yield emulator.host
    finally:
        os.environ.pop(EMULATOR_VAR, None)
        emulator.stop()


@pytest.fixture
def gcs_env(env: dict[str, str], storage_host: str) -> dict[str, str]:
    """``env`` with the Cloud Storage emulator."""
    return {**env, EMULATOR_VAR: storage_host}


@pytest.fixture
def gcs(gcs_env: dict[str, str]) -> Iterator[Storage]:
    """batchctl's storage seam on the emulator."""
    client = Storage(gcs_env, retry_s=5.0)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def bucket(gcs: Storage, prefix: str) -> str:
    """A new, empty bucket of this test."""
    name = f"{prefix}-bucket"
    gcs.client.create_bucket(name)
    return name


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
