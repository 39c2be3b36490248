"""The container image, built from the Dockerfile with buildah and run for real (marker ``image``).

Checks: the image runs as 10001:10001 with ``batchctl`` as its entrypoint and ``launcher`` as its
command; its final stage holds no compiler or build tool, and nothing of the build stage (``/wheels``,
``/src``); ``batchctl --help`` and ``--version`` work in it; a worker in it (``buildah run --user
10001:10001``) drains a real batch from the Pub/Sub emulator; the launcher in it serves ``/healthz``
and launches a schema-valid Job on the strict API server through a kubeconfig; and the whole pipeline
with the launcher in the image and every pod's container run by the test kubelet from the image, with
the pod's environment, user and args; a SIGTERM to such a pod reaches the worker itself.

The image is built once per content of the build context (``image/build.py``, as ``make image``), so a
repeated run only starts containers; a whole-suite run starts that build at its beginning
(``tests/support/image_fixtures.py``). Skipped without buildah/debootstrap or root; a failure in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest

from batchctl.core.emulator import free_port
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.launcher.app import open_store
from batchctl.launcher.state import TERMINAL, BatchState
from tests.support.image import ImageContainer, PodRunner
from tests.support.k8s_schema import validate
from tests.support.kube import JOBS
from tests.support.kube_fixtures import KubeApi
from tests.support.kubelet import Kubelet
from tests.support.launching import submit_records, write_records
from tests.support.parts import EventLog, publish_batch
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.image, pytest.mark.timeout(600)]

BUILD_TOOLS = ("gcc", "cc", "c++", "g++", "clang", "make", "ld", "as", "cpp", "git", "apt-get")
"""What the final stage must not hold. ``apt-get`` is in every Debian image, official or stand-in,
so it is not counted: the check lists the others."""
DEMO_HANDLER = "batchctl.worker.demo:handle"
KUBECONFIG_IN_IMAGE = "/etc/batchctl/kubeconfig"


def in_image_env(env: dict[str, str], **extra: str) -> dict[str, str]:
    """The test's Pub/Sub settings for a process in the image (nothing else of the host's)."""
    keys = ("PUBSUB_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "BATCHCTL_PREFIX")
    return {**{key: env[key] for key in keys}, **extra}


def test_image_runs_as_10001_with_batchctl_as_entrypoint(image: ImageContainer) -> None:
    """USER is numeric 10001:10001; a process started without --user runs as that uid and gid."""
    assert image.config.get("User") == "10001:10001"
    assert (image.config["Entrypoint"], image.config["Cmd"]) == (["batchctl"], ["launcher"])
    ran = image.run(["sh", "-c", "id -u; id -g"])
    assert (ran.returncode, ran.stdout.split()) == (0, ["10001", "10001"]), ran.stderr


def test_final_stage_has_no_compiler_and_nothing_of_the_build_stage(image: ImageContainer) -> None:
    """No compiler, linker, make or git on PATH or in /usr; /wheels and /src did not become layers."""
    probe = (
        "import json, pathlib, shutil, sys\n"
        "found = [t for t in sys.argv[1:] if shutil.which(t) or pathlib.Path('/usr/bin', t).exists()]\n"
        "print(json.dumps({'tools': found, 'leftovers': [p for p in ('/wheels', '/src') if pathlib.Path(p).exists()]}))"
    )
    ran = image.run(["python3", "-c", probe, *[t for t in BUILD_TOOLS if t != "apt-get"]])
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"tools": [], "leftovers": []}


def test_help_and_version_work_in_the_image(image: ImageContainer) -> None:
    """``batchctl --help`` exits 0 with the usage; ``--version`` prints the version pip installed here."""
    helped = image.run(["batchctl", "--help"])
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: batchctl")
    versioned = image.run(["batchctl", "--version"])
    assert (versioned.returncode, versioned.stdout) == (0, f"batchctl {metadata.version('batchctl')}\n")


def test_worker_in_the_image_drains_a_real_batch(
    image: ImageContainer, pubsub: PubSub, env: dict[str, str], tmp_path: Path
) -> None:
    """``buildah run --user 10001:10001 ... batchctl worker``: 12 parts processed, results written, exit 0."""
    events = EventLog.open(pubsub)
    publish_batch(pubsub, "inimage", [[{"n": i, "text": f"part {p} record {i}"} for i in range(3)] for p in range(12)])
    results = tmp_path / "results"
    results.mkdir(mode=0o777)
    results.chmod(0o777)  # the worker is uid 10001, the test is root
    worker_env = in_image_env(env, BATCHCTL_BATCH_ID="inimage", BATCHCTL_RESULTS_DIR="/results",
                              BATCHCTL_EMPTY_PULLS="2", BATCHCTL_PULL_TIMEOUT_S="0.5")
    log = tmp_path / "worker.log"
    proc = image.start(["batchctl", "worker"], log, user="10001:10001", env=worker_env,
                       volumes=[f"{results}:/results"])
    try:
        code = proc.wait(timeout=120)
    finally:
        _stop(proc)
    assert code == 0, log.read_text()[-3000:]
    assert sorted(p.name for p in results.glob("*.json")) == [f"inimage-{i:06d}.json" for i in range(12)]
    assert {p.stat().st_uid for p in results.glob("*.json")} == {10001}
    assert events.done_parts() == set(range(12))


def test_launcher_in_the_image_serves_healthz_and_launches_a_job(
    image: ImageContainer, pubsub: PubSub, env: dict[str, str], kube_api: KubeApi, tmp_path: Path
) -> None:
    """The image's launcher, reaching the strict API server through a mounted kubeconfig, answers
    /healthz 200 and creates the batch's Job, valid against the schema, with the image as worker."""
    port = free_port()
    proc = _start_launcher(image, env, kube_api, tmp_path, port)
    try:
        wait_for(lambda: _healthz(port) == 200, timeout=60, what="the launcher's /healthz")
        path = write_records(tmp_path / "in.jsonl", [{"i": i} for i in range(4)])
        submit_records(pubsub, path, "imglaunch", handler=DEMO_HANDLER, parts_per_worker=2)
        name = f"{env['BATCHCTL_PREFIX']}-imglaunch-1"
        job = wait_for(lambda: _job(kube_api, name), timeout=60, what=f"Job {name}")
    finally:
        _stop(proc)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == image.image
    sent = {key: value for key, value in job.items() if key != "status"}
    sent["metadata"] = {k: v for k, v in job["metadata"].items() if k in ("name", "namespace", "labels")}
    validate(sent)


def test_pipeline_with_launcher_and_pods_from_the_image(
    image: ImageContainer, pubsub: PubSub, env: dict[str, str], kube_api: KubeApi,
    make_kubelet: Callable[..., Kubelet], tmp_path: Path,
) -> None:
    """Launcher in the image; the kubelet runs each pod's container from the image with only the pod's
    environment, as the pod's user (10001), rooted in the image: 10 parts, batch succeeded, exact."""
    kubelet = make_kubelet(env={}, runner=PodRunner(image))
    port = free_port()
    proc = _start_launcher(image, env, kube_api, tmp_path, port)
    try:
        path = write_records(tmp_path / "in.jsonl", [{"i": i} for i in range(10)])
        submit_records(pubsub, path, "imgpipe", handler=DEMO_HANDLER, parts_per_worker=5, max_parallelism=2)
        job = f"{env['BATCHCTL_PREFIX']}-imgpipe-1"
        seen = wait_for(lambda: next((v for v in _pod_processes(kubelet, job) if v[0] == str(image.rootfs)), None),
                        timeout=90, what="a pod's process rooted in the image")
        assert seen[1:] == ("10001", "10001")
        store = open_store(_launcher_settings(kube_api, env))
        batch = wait_for(lambda: _terminal(store.load("imgpipe")), timeout=180, what="imgpipe to finish")
    finally:
        _stop(proc)
    assert batch.state == "succeeded", batch
    assert batch.done == set(range(10))
    assert not kubelet.errors


def test_pod_from_the_image_gets_the_kubelets_sigterm_itself(
    image: ImageContainer, pubsub: PubSub, env: dict[str, str], kube_api: KubeApi,
    make_kubelet: Callable[..., Kubelet], tmp_path: Path,
) -> None:
    """SIGTERM to a pod reaches the worker in the image, which shuts down as in a cluster: logs
    worker_exited and exits 143 (``buildah run`` would SIGKILL it: no log line, another code)."""
    kubelet = make_kubelet(env={}, runner=PodRunner(image))
    proc = _start_launcher(image, env, kube_api, tmp_path, free_port(), BATCHCTL_EMPTY_PULLS="100")
    try:
        path = write_records(tmp_path / "in.jsonl", [{"i": 1}])
        submit_records(pubsub, path, "imgterm", handler=DEMO_HANDLER)
        job = f"{env['BATCHCTL_PREFIX']}-imgterm-1"
        wait_for(lambda: any(v[0] == str(image.rootfs) for v in _pod_processes(kubelet, job)), timeout=90,
                 what="a pod's process rooted in the image")
        pod = kubelet.pods(job)[0]
        wait_for(lambda: '"part_done"' in pod.log_path.read_text(), timeout=60, what="the worker to finish its part")
        kubelet.kill(pod, signal.SIGTERM)
        ended = wait_for(lambda: next((p for p in kubelet.pods(job) if p.name == pod.name and p.exit_code is not None),
                                      None), timeout=60, what="the pod to exit")
    finally:
        _stop(proc)
    log = pod.log_path.read_text()
    assert ended.exit_code == 143, log[-2000:]
    exits = [json.loads(line) for line in log.splitlines() if line.startswith("{") and '"worker_exited"' in line]
    assert [e.get("reason") for e in exits] == ["terminated"], log[-2000:]


# ---- helpers ---------------------------------------------------------------------------------------


def _start_launcher(image: ImageContainer, env: dict[str, str], kube_api: KubeApi, tmp_path: Path,
                    port: int, **variables: str) -> subprocess.Popen[bytes]:
    """``batchctl launcher --port PORT`` in the image as its own user, the kubeconfig mounted read-only."""
    mounted = tmp_path / "kube" / "config"
    mounted.parent.mkdir()
    shutil.copyfile(kube_api.kubeconfig, mounted)
    mounted.chmod(0o644)
    launcher_env = in_image_env(env, BATCHCTL_BACKEND="kubernetes", KUBECONFIG=KUBECONFIG_IN_IMAGE,
                                BATCHCTL_NAMESPACE=kube_api.namespace, BATCHCTL_WORKER_IMAGE=image.image,
                                **{"BATCHCTL_EMPTY_PULLS": "2", "BATCHCTL_DRAIN_BUDGET_S": "5", **variables})
    return image.start(["batchctl", "launcher", "--port", str(port)], tmp_path / "launcher.log",
                       env=launcher_env, volumes=[f"{mounted}:{KUBECONFIG_IN_IMAGE}:ro"])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)


def _healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except OSError:
        return None


def _job(kube_api: KubeApi, name: str) -> dict[str, object] | None:
    return next((j for j in kube_api.server.list_objects(JOBS, kube_api.namespace) if j["metadata"]["name"] == name),
                None)


def _pod_processes(kubelet: Kubelet, job: str) -> list[tuple[str, str, str]]:
    """(root directory, uid, gid) of each live pod process of ``job``, read from /proc at one moment."""
    views = []
    for pod in kubelet.pods(job):
        if pod.proc is None or pod.proc.poll() is not None:
            continue
        try:
            root = os.readlink(f"/proc/{pod.proc.pid}/root")
            status = Path(f"/proc/{pod.proc.pid}/status").read_text()
        except OSError:  # it exited between the poll and the read
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        views.append((root, fields["Uid"].split()[0], fields["Gid"].split()[0]))
    return views


def _launcher_settings(kube_api: KubeApi, env: dict[str, str]) -> Settings:
    return Settings.from_env({**env, "BATCHCTL_BACKEND": "kubernetes", "KUBECONFIG": str(kube_api.kubeconfig),
                              "BATCHCTL_NAMESPACE": kube_api.namespace})


def _terminal(batch: BatchState | None) -> BatchState | None:
    return batch if batch is not None and batch.state in TERMINAL else None
