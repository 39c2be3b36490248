"""The package as a user installs it: one import namespace, no collision with a user's own modules.

Checks: a non-editable install into a fresh venv puts exactly one top-level package,
``batchctl``, into site-packages (no ``worker``, ``launcher`` or ``splitter``); with a
user's own ``worker.py``, ``launcher.py`` and ``splitter.py`` first on the path, the installed
``batchctl launcher`` runs workers (``python -m batchctl worker``) that call a handler from
that ``worker.py``, and ``batchctl submit --wait`` follows the batch to success.

The venv is built offline in a few seconds: ``--without-pip``, the test venv's site-packages
(the dependencies) on its path through a ``.pth`` file (which does not run that directory's own
``.pth`` files, so the editable install of ``batchctl`` stays out), and
``pip --python VENV install --no-deps --no-build-isolation`` of a copy of the source tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

from batchctl.core.emulator import free_port
from tests.support.launching import REPO, write_records
from tests.support.waiting import wait_for

SOURCES = ("pyproject.toml", "README.md", "batchctl", "splitter", "worker", "launcher")

USER_WORKER = '''\
"""A user's own handler module, named like batchctl's worker role."""
import os
from pathlib import Path


def handle(part):
    Path(os.environ["USER_OUT"], f"handled-{part.index}").write_text(str(len(part.records)))
'''

USER_SHADOW = 'raise ImportError("the user\'s own {name}.py was imported by batchctl")\n'


def install_fresh(tmp_path: Path) -> Path:
    """Install this source tree, non-editable, into a new venv; returns the venv's folder."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
         "--no-deps", "--no-build-isolation", "--no-index", str(src)],
        check=True, timeout=120, capture_output=True,
    )
    return venv


def installed_top_level(venv: Path) -> set[str]:
    """Top-level names the installed distribution put into site-packages (from its RECORD)."""
    record = next((venv / "lib").glob("python*/site-packages/batchctl-*.dist-info/RECORD"))
    tops = {line.split(",")[0].split("/")[0] for line in record.read_text().splitlines()}
    return {t.removesuffix(".py") for t in tops if not t.endswith(".dist-info") and t != ".."}


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_installed_package_runs_a_handler_from_the_users_own_worker_py(
    env: dict[str, str], tmp_path: Path,
) -> None:
    """Fresh venv, user's worker/launcher/splitter.py on PYTHONPATH: submit --wait succeeds with worker:handle."""
    started = time.monotonic()
    venv = install_fresh(tmp_path)
    installed_at = time.monotonic() - started
    assert installed_top_level(venv) == {"batchctl"}, "the wheel installs top-level packages besides batchctl"

    user = tmp_path / "user"
    user.mkdir()
    (user / "worker.py").write_text(USER_WORKER)
    for name in ("launcher", "splitter"):
        (user / f"{name}.py").write_text(USER_SHADOW.format(name=name))
    out = tmp_path / "out"
    out.mkdir()
    user_env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(user),
        "USER_OUT": str(out), "BATCHCTL_EMPTY_PULLS": "2", "BATCHCTL_PULL_TIMEOUT_S": "0.5",
        "BATCHCTL_DRAIN_BUDGET_S": "5", "BATCHCTL_LEASE_S": "10",
        **{k: env[k] for k in ("PUBSUB_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "BATCHCTL_PREFIX",
                               "BATCHCTL_STATE_DIR", "BATCHCTL_BACKEND")},
    }
    which = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import batchctl, worker; print(batchctl.__file__, worker.__file__)"],
        env=user_env, cwd=user, capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()
    assert which[0].startswith(str(venv)) and which[1] == str(user / "worker.py")

    batchctl = str(venv / "bin" / "batchctl")
    port = free_port()
    with (tmp_path / "launcher.log").open("wb") as log:
        launcher = subprocess.Popen([batchctl, "launcher", "--port", str(port)], env=user_env, cwd=user,
                                    stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ready(port) or launcher.poll() is not None, timeout=60, what="launcher /readyz")
        assert launcher.poll() is None, (tmp_path / "launcher.log").read_text()[-2000:]
        data = write_records(tmp_path / "in.jsonl", [{"i": i} for i in range(6)])
        submit = subprocess.run(
            [batchctl, "submit", str(data), "--batch-id", "mine", "--records-per-part", "2",
             "--handler", "worker:handle", "--wait", "--json"],
            env=user_env, cwd=user, capture_output=True, text=True, timeout=120, check=False,
        )
        assert submit.returncode == 0, submit.stderr[-2000:] + (tmp_path / "launcher.log").read_text()[-2000:]
        assert '"state": "succeeded"' in submit.stdout
        assert sorted(p.name for p in out.iterdir()) == ["handled-0", "handled-1", "handled-2"]
    finally:
        launcher.terminate()
        launcher.wait(timeout=30)
    print(f"install into a fresh venv: {installed_at:.1f} s; whole test: {time.monotonic() - started:.1f} s")
