"""``submit --profile``, ``batchctl profiles``, and where Jobs run, through the CLI.

Checks: ``profiles`` lists the file's profiles (table and JSON) with the local backend, and the
one ``default`` profile without a file; a submit the profiles refuse exits 2 with the
launcher's reason before anything is created (no topic, no request); a submit within its
profile carries the profile name in its request; on Kubernetes a launcher publishes its
profiles in its namespace, ``profiles`` reads them there, and submit fails fast against
them; with ``BATCHCTL_JOBS_NAMESPACE`` Jobs go to that namespace and state stays in the
launcher's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from batchctl.core import topology
from batchctl.core.messages import decode_control
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.frontend.cli import main
from batchctl.launcher.app import assemble
from tests.e2e.test_admission import PROFILES
from tests.support.kube import JOBS
from tests.support.kube_fixtures import KubeApi
from tests.support.launching import running_launcher, submit_records, write_records
from tests.support.pulling import drain, leftovers
from tests.support.waiting import wait_for


@pytest.fixture
def profiles_file(tmp_path: Path) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(PROFILES))
    return path


@pytest.fixture
def local_env(env: dict[str, str], profiles_file: Path) -> dict[str, str]:
    return {**env, "BATCHCTL_BACKEND": "local", "BATCHCTL_PROFILES": str(profiles_file)}


def test_profiles_lists_the_file(local_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """Table: a row per profile with its images and handlers; JSON: every field by name."""
    assert main(["profiles"], environ=local_env) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "IMAGE", "HANDLERS"]
    assert [line.split()[0] for line in lines[1:]] == ["cpu", "gpu"]
    assert "reg.example/batchctl:1.0.0 reg.example/batchctl:1.0.1" in lines[1]
    assert main(["profiles", "--json"], environ=local_env) == 0
    offered = json.loads(capsys.readouterr().out)
    assert sorted(offered) == ["cpu", "gpu"]
    assert offered["gpu"]["extended_resources"] == {"nvidia.com/gpu": "1"}
    assert offered["cpu"]["handlers"] == ["batchctl.worker.demo:*"]


def test_without_a_file_the_default_profile_is_offered(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "--json", "--backend", "local"], environ=env) == 0
    offered = json.loads(capsys.readouterr().out)
    assert list(offered) == ["default"] and offered["default"]["handlers"] == ["*"]


@pytest.mark.parametrize(("flags", "reason"), [
    (["--profile", "root"], "profile 'root' is not offered (offered: cpu, gpu)"),
    (["--profile", "cpu", "--handler", "os:system"], "handler 'os:system' is not allowed by profile 'cpu'"),
    (["--profile", "cpu", "--handler", "batchctl.worker.demo:handle", "--image", "evil.example/x:1"],
     "image 'evil.example/x:1' is not allowed by profile 'cpu'"),
    (["--profile", "cpu", "--handler", "batchctl.worker.demo:handle", "--max-parallelism", "5"],
     "max_parallelism 5 is above profile 'cpu''s cap of 4"),
    (["--profile", "cpu", "--handler", "batchctl.worker.demo:handle", "--max-parallelism", "4", "--output",
      "/tmp/anywhere"],
     "output '/tmp/anywhere' is not under profile 'cpu''s outputs (gs://acme-results/cpu/)"),
])
def test_submit_refused_by_the_profiles_fails_before_anything_exists(
    flags: list[str], reason: str, local_env: dict[str, str], settings: Settings, pubsub: PubSub, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit 2 with the launcher's own reason; no topic or subscription, no request published."""
    topology.ensure_shared(pubsub)
    path = write_records(tmp_path / "in.jsonl", [{"i": 1}])
    assert main(["submit", str(path), "--batch-id", "ff", *flags], environ=local_env) == 2
    assert capsys.readouterr().err.strip() == f"batchctl: error: the launcher would reject this batch: {reason}"
    assert leftovers(pubsub, settings.prefix) == ([], [])
    assert drain(pubsub, settings.names.requests_subscription, empty_pulls=1) == []


def test_submit_within_its_profile_carries_the_profile(
    local_env: dict[str, str], settings: Settings, pubsub: PubSub, tmp_path: Path,
) -> None:
    topology.ensure_shared(pubsub)
    path = write_records(tmp_path / "in.jsonl", [{"i": 1}])
    argv = ["submit", str(path), "--batch-id", "ok", "--profile", "cpu", "--image", "reg.example/batchctl:1.0.1",
            "--max-parallelism", "4"]
    assert main(argv, environ=local_env) == 0
    (sent,) = drain(pubsub, settings.names.requests_subscription, empty_pulls=1)
    request = decode_control(sent.data, sent.attributes).request
    assert request is not None and (request.profile, request.image) == ("cpu", "reg.example/batchctl:1.0.1")
    topology.delete_batch(pubsub, "ok")


@pytest.fixture
def kube_env(env: dict[str, str], kube_api: KubeApi, profiles_file: Path) -> dict[str, str]:
    return kube_api.launcher_env(env)


def test_on_kubernetes_the_launcher_publishes_its_profiles(
    kube_env: dict[str, str], profiles_file: Path, pubsub: PubSub, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A launcher (assembled with the file) publishes; the CLI without the file reads them and
    refuses a submit against them before publishing anything."""
    launcher_settings = Settings.from_env({**kube_env, "BATCHCTL_PROFILES": str(profiles_file)})
    parts = assemble(launcher_settings)
    parts.backend.close()
    assert main(["profiles", "--json"], environ=kube_env) == 0
    assert sorted(json.loads(capsys.readouterr().out)) == ["cpu", "gpu"]
    topology.ensure_shared(pubsub)
    path = write_records(tmp_path / "in.jsonl", [{"i": 1}])
    assert main(["submit", str(path), "--profile", "gpu"], environ=kube_env) == 2
    assert "handler 'batchctl.worker.demo:handle' is not allowed by profile 'gpu'" in capsys.readouterr().err
    assert leftovers(pubsub, launcher_settings.prefix) == ([], [])


def test_profiles_without_a_launcher_on_kubernetes_is_bad_input(
    kube_env: dict[str, str], capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["profiles"], environ=kube_env) == 2
    assert "no profiles published in namespace 'default'" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_jobs_run_in_the_jobs_namespace(
    kube_env: dict[str, str], pubsub: PubSub, kube_api: KubeApi, tmp_path: Path,
) -> None:
    """BATCHCTL_JOBS_NAMESPACE=jobs: the Job is created (and watched) there; the state object and the
    published profiles stay in the launcher's namespace."""
    settings = Settings.from_env({**kube_env, "BATCHCTL_JOBS_NAMESPACE": "jobs"})
    path = write_records(tmp_path / "in.jsonl", [{"i": i} for i in range(3)])
    with running_launcher(settings, pubsub) as run:
        submit_records(pubsub, path, "ns", handler="batchctl.worker.demo:handle")
        wait_for(lambda: kube_api.server.list_objects(JOBS, "jobs"), timeout=30, what="a Job in namespace jobs")
        assert run.parts.store.load("ns") is not None
    assert kube_api.server.list_objects(JOBS, kube_api.namespace) == []
    (job,) = kube_api.server.list_objects(JOBS, "jobs")
    assert job["metadata"]["namespace"] == "jobs"


@pytest.mark.timeout(120)
def test_submit_wait_on_a_batch_the_launcher_rejects_exits_2_with_the_reason(
    local_env: dict[str, str], env: dict[str, str], pubsub: PubSub, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A submitter without the profiles file cannot check locally; the launcher (with it) rejects the
    batch, and ``submit --wait`` exits 2 printing the reason on one line; ``status`` exits 2 too."""
    launcher_settings = Settings.from_env(local_env)
    submitter = {**env, "BATCHCTL_BACKEND": "local"}  # same state dir, no BATCHCTL_PROFILES
    path = write_records(tmp_path / "in.jsonl", [{"i": 1}])
    topology.ensure_shared(pubsub)
    with running_launcher(launcher_settings, pubsub):
        code = main(["submit", str(path), "--batch-id", "rj", "--handler", "os:system", "--wait"], environ=submitter)
    out = capsys.readouterr().out
    assert code == 2
    assert out.strip().splitlines()[-1] == "rj rejected: profile 'default' is not offered (offered: cpu, gpu)"
    assert main(["status", "rj"], environ=submitter) == 2
    assert leftovers(pubsub, launcher_settings.prefix) == ([], [])
