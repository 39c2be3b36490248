"""Worker profiles: the operator's YAML file, checked whole, and the default profile without one.

Checks: a full profile reads every key; keys left out take the base (the launcher's
variables) except ``handlers``, which is required; the default profile is today's
``BATCHCTL_*`` variables with any handler; every unknown key and every bad value is one
BadInput naming file, profile and key (all problems at once); bad YAML names its line;
bad top levels, names and files; limits below requests; extended resources are whole,
named ``domain/name`` and never overcommitted; tolerations in both forms; request
bounds inside Pub/Sub's ranges; ``describe`` is plain JSON; a profile shapes JobConfig
and the Job (extended resource in requests and limits).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchctl.core.errors import BadInput
from batchctl.core.kubevalues import Toleration
from batchctl.core.profiles import Bounds, Profile, load_profiles, parse_profiles
from batchctl.core.settings import Settings
from batchctl.launcher.app import open_profiles
from batchctl.launcher.jobconfig import JobConfig
from batchctl.launcher.jobspec import build_job, job_to_dict
from tests.support.k8s_schema import KUBERNETES_VERSION, validate

BASE = JobConfig().default_profile()
FULL = {
    "image": "reg.example/etl@sha256:" + "a" * 64,
    "images": ["reg.example/etl:1.4.2"],
    "handlers": ["acme.etl.*:handle", "acme.report:*"],
    "max_parallelism": 20,
    "max_workers": 40,
    "resources": {"requests": {"cpu": "2", "memory": "4Gi"},
                  "limits": {"cpu": 4, "memory": "4Gi", "nvidia.com/gpu": 1}},
    "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    "tolerations": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"},
                    {"key": "pool", "value": "gpu", "effect": "NoExecute"}],
    "service_account": "etl-worker",
    "concurrency": 4,
    "drain_budget_s": 45,
    "part_timeout_s": 900,
    "priority_class": None,
    "ack_deadline_s": {"min": 30, "max": 120},
    "max_delivery_attempts": {"max": 10},
}


def parse(profiles: dict[str, Any], base: Profile = BASE) -> dict[str, Profile]:
    return parse_profiles(yaml.safe_dump({"profiles": profiles}), source="p.yaml", base=base)


def error_of(profiles: Any, *, raw: str | None = None) -> str:
    text = raw if raw is not None else yaml.safe_dump({"profiles": profiles})
    with pytest.raises(BadInput) as caught:
        parse_profiles(text, source="p.yaml", base=BASE)
    return str(caught.value)


# --- reading ---------------------------------------------------------------------------


def test_a_full_profile_reads_every_key() -> None:
    """Each key lands in its field, normalised (tuples, Bounds, Toleration, quantities as text)."""
    etl = parse({"etl": FULL})["etl"]
    assert etl.name == "etl"
    assert etl.image == FULL["image"] and etl.images == ("reg.example/etl:1.4.2",)
    assert etl.allowed_images == (FULL["image"], "reg.example/etl:1.4.2")
    assert etl.handlers == ("acme.etl.*:handle", "acme.report:*")
    assert etl.max_parallelism == 20 and etl.max_workers == 40
    assert (etl.cpu_request, etl.memory_request, etl.cpu_limit, etl.memory_limit) == ("2", "4Gi", "4", "4Gi")
    assert etl.extended_resources == {"nvidia.com/gpu": "1"}
    assert etl.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert etl.tolerations == (Toleration("nvidia.com/gpu", None, "NoSchedule"), Toleration("pool", "gpu", "NoExecute"))
    assert etl.service_account == "etl-worker"
    assert (etl.concurrency, etl.drain_budget_s, etl.priority_class) == (4, 45, None)
    assert etl.part_timeout_s == 900
    assert etl.ack_deadline_s == Bounds(30, 120)
    assert etl.max_delivery_attempts == Bounds(5, 10)


def test_keys_left_out_take_the_base() -> None:
    """A profile with only handlers is the base (the launcher's variables) under its own name, except
    ``outputs``: the base allows any destination, a profile in a file that leaves it out none."""
    base = JobConfig.from_env({"BATCHCTL_WORKER_IMAGE": "reg.example/w:9", "BATCHCTL_MAX_PARALLELISM": "7"})
    small = parse({"small": {"handlers": ["m:f"]}}, base.default_profile())["small"]
    assert small.image == "reg.example/w:9" and small.max_parallelism == 7
    assert base.default_profile().outputs is None and small.outputs == ()
    assert small == Profile(**{**base.default_profile().__dict__, "name": "small", "handlers": ("m:f",), "outputs": ()})


@pytest.mark.parametrize(("given", "kept"), [
    (["gs://acme/etl"], ("gs://acme/etl/",)),
    (["gs://acme/etl/", "gs://acme/etl"], ("gs://acme/etl/",)),
    (["/srv/results/../out/"], ("/srv/out/",)),
    ([], ()),
])
def test_outputs_are_kept_as_prefixes(given: list[str], kept: tuple[str, ...]) -> None:
    profile = parse({"p": {"handlers": ["m:f"], "outputs": given}}, JobConfig().default_profile())["p"]
    assert profile.outputs == kept
    assert Profile.from_description(profile.describe()) == profile


@pytest.mark.parametrize(("given", "says"), [
    (["relative/folder"], "'relative/folder' is neither gs://BUCKET/PREFIX/ nor an absolute folder"),
    (["gs://"], "'gs://' names no bucket"),
    ("gs://acme/etl/", "must be a non-empty list of strings"),
])
def test_bad_outputs_are_named(given: object, says: str) -> None:
    with pytest.raises(BadInput, match="profile 'p': key 'outputs': " + re.escape(says)):
        parse({"p": {"handlers": ["m:f"], "outputs": given}}, JobConfig().default_profile())


def test_a_limit_left_out_keeps_the_base_limit() -> None:
    """resources.requests alone changes requests; the base's limits stay."""
    cheap = parse({"cheap": {"handlers": ["m:f"], "resources": {"requests": {"cpu": "100m"}}}})["cheap"]
    assert (cheap.cpu_request, cheap.cpu_limit, cheap.memory_limit) == ("100m", BASE.cpu_limit, BASE.memory_limit)


def test_a_null_limit_means_no_limit() -> None:
    unlimited = parse({"u": {"handlers": ["m:f"], "resources": {"limits": {"cpu": None}}}})["u"]
    assert unlimited.cpu_limit is None


def test_several_profiles() -> None:
    profiles = parse({"a": {"handlers": ["a:*"]}, "b-2": {"handlers": ["*"]}})
    assert sorted(profiles) == ["a", "b-2"]


def test_load_profiles_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump({"profiles": {"etl": FULL}}))
    assert load_profiles(path, base=BASE)["etl"].max_parallelism == 20


# --- the default profile -----------------------------------------------------------------


def test_default_profile_is_the_launcher_variables_with_any_handler() -> None:
    """Without a file: image, cap, resources, placement, identity from BATCHCTL_*; every handler; Pub/Sub's ranges."""
    config = JobConfig.from_env({
        "BATCHCTL_WORKER_IMAGE": "reg.example/w:2", "BATCHCTL_MAX_PARALLELISM": "9", "BATCHCTL_WORKER_CPU": "250m",
        "BATCHCTL_NODE_SELECTOR": "", "BATCHCTL_TOLERATIONS": "", "BATCHCTL_CONCURRENCY": "3",
        "BATCHCTL_DRAIN_BUDGET_S": "7", "BATCHCTL_PRIORITY_CLASS": "",
    })
    profile = config.default_profile()
    assert profile.name == "default" and profile.handlers == ("*",) and profile.images == ()
    assert (profile.image, profile.max_parallelism, profile.cpu_request) == ("reg.example/w:2", 9, "250m")
    assert profile.node_selector == {} and profile.tolerations == ()
    assert (profile.concurrency, profile.drain_budget_s, profile.priority_class) == (3, 7, None)
    assert profile.ack_deadline_s == Bounds(10, 600) and profile.max_delivery_attempts == Bounds(5, 100)
    assert config.for_profile(profile) == config


def test_open_profiles_without_a_file_offers_default(tmp_path: Path) -> None:
    settings = Settings.from_env({"BATCHCTL_STATE_DIR": str(tmp_path)})
    assert list(open_profiles(settings)) == ["default"]


def test_open_profiles_reads_the_file_over_the_variables(tmp_path: Path) -> None:
    """BATCHCTL_PROFILES replaces the default profile; its omitted keys come from BATCHCTL_*."""
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"profiles": {"etl": {"handlers": ["m:f"]}}}))
    settings = Settings.from_env({"BATCHCTL_PROFILES": str(path), "BATCHCTL_WORKER_IMAGE": "r.example/x:1"})
    profiles = open_profiles(settings)
    assert list(profiles) == ["etl"] and profiles["etl"].image == "r.example/x:1"


# --- errors --------------------------------------------------------------------------------

BAD_VALUES = [
    ("image", "reg.example/untagged", "needs a tag or digest"),
    ("image", 5, "must be a string"),
    ("images", "reg.example/a:1", "non-empty list of strings"),
    ("images", ["reg.example/a"], "needs a tag or digest"),
    ("handlers", [], "non-empty list"),
    ("handlers", ["nocolon"], "is not a MODULE:FUNC pattern"),
    ("handlers", [1], "non-empty list of strings"),
    ("max_parallelism", 0, "within 1..10000"),
    ("max_parallelism", "5", "must be an integer"),
    ("max_parallelism", True, "must be an integer"),
    ("resources", {"requests": {"cpu": "lots"}}, "not a Kubernetes quantity"),
    ("resources", {"requests": {"cpu": "0"}}, "above zero"),
    ("resources", {"limits": {"memory": [1]}}, "a quantity must be"),
    ("resources", {"request": {}}, "request not known"),
    ("resources", {"limits": {"gpu": 1}}, "named like nvidia.com/gpu"),
    ("resources", {"limits": {"nvidia.com/gpu": "500m"}}, "whole number"),
    ("resources", {"limits": {"nvidia.com/gpu": 1}, "requests": {"nvidia.com/gpu": 2}}, "must equal limits"),
    ("resources", {"requests": {"nvidia.com/gpu": 1}}, "set under limits"),
    ("resources", "big", "must be a mapping"),
    ("node_selector", {"bad key!": "x"}, "is not a label key"),
    ("node_selector", {"pool": "no spaces"}, "is not a label value"),
    ("node_selector", {"pool": True}, "must be a string"),
    ("node_selector", "pool=batch", "must be a mapping"),
    ("tolerations", {"key": "k"}, "must be a list"),
    ("tolerations", [{"key": "k", "effect": "Sometimes"}], "is not one of"),
    ("tolerations", [{"key": "k", "value": "v", "effect": "NoSchedule", "operator": "Exists"}], "Exists takes no"),
    ("tolerations", [{"key": "k", "effect": "NoSchedule", "seconds": 3}], "seconds not known"),
    ("service_account", "Not_A_Name", "not a Kubernetes object name"),
    ("max_workers", 0, "within 1..100000"),
    ("max_workers", "ten", "must be an integer"),
    ("max_workers", True, "must be an integer"),
    ("concurrency", 0, "within 1..256"),
    ("concurrency", 257, "within 1..256"),
    ("drain_budget_s", -1, "within 0..3600"),
    ("drain_budget_s", 3601, "within 0..3600"),
    ("part_timeout_s", 0, "within 1..604800"),
    ("part_timeout_s", 604801, "within 1..604800"),
    ("priority_class", "UPPER", "not a Kubernetes object name"),
    ("ack_deadline_s", {"min": 5}, "within 10..600"),
    ("ack_deadline_s", {"max": 601}, "within 10..600"),
    ("ack_deadline_s", {"min": 100, "max": 50}, "min 100 is above max 50"),
    ("ack_deadline_s", 60, "must be a mapping"),
    ("ack_deadline_s", {"low": 10}, "low not known"),
    ("max_delivery_attempts", {"min": 4}, "within 5..100"),
    ("max_delivery_attempts", {"max": 101}, "within 5..100"),
]


@pytest.mark.parametrize(("key", "value", "complaint"), BAD_VALUES)
def test_bad_value_names_file_profile_and_key(key: str, value: Any, complaint: str) -> None:
    """One BadInput: ``p.yaml: profile 'x': key 'K': <why>``."""
    message = error_of({"x": {"handlers": ["m:f"], key: value}})
    assert message.startswith(f"p.yaml: profile 'x': key '{key}': "), message
    assert complaint in message


def test_unknown_key_is_named_with_the_known_ones() -> None:
    message = error_of({"x": {"handlers": ["m:f"], "max_paralelism": 3}})
    assert message.startswith("p.yaml: profile 'x': key 'max_paralelism' is not known (known: ")
    assert "max_parallelism" in message


def test_handlers_are_required_in_a_file() -> None:
    message = error_of({"x": {"image": "r.example/a:1"}})
    assert message == "p.yaml: profile 'x': key 'handlers' is required (the handlers this profile may run)"


def test_limit_below_request_is_named() -> None:
    message = error_of({"x": {"handlers": ["m:f"], "resources": {"requests": {"memory": "1Gi"}}}})
    assert message == "p.yaml: profile 'x': key 'resources': limits.memory '512Mi' is below requests.memory '1Gi'"


def test_every_problem_of_every_profile_is_reported_at_once() -> None:
    message = error_of({"a": {"handlers": ["m:f"], "concurrency": 0, "bogus": 1}, "b": {"image": "x"}})
    assert message.count("; ") == 3
    for part in ("profile 'a': key 'concurrency'", "profile 'a': key 'bogus'", "profile 'b': key 'image'",
                 "profile 'b': key 'handlers' is required"):
        assert part in message


@pytest.mark.parametrize("name", ["Upper", "under_score", "-dash", "x" * 64, 7])
def test_bad_profile_name(name: Any) -> None:
    assert "the name must be lowercase letters" in error_of({name: {"handlers": ["m:f"]}})


def test_profile_that_is_not_a_mapping() -> None:
    assert error_of({"x": ["m:f"]}) == "p.yaml: profile 'x': must be a mapping of settings"


@pytest.mark.parametrize("raw", ["profiles: []", "profiles: {}", "- a", "profile: {x: {handlers: ['*']}}",
                                 "profiles: {x: {handlers: ['*']}}\nextra: 1", ""])
def test_bad_top_level(raw: str) -> None:
    message = error_of(None, raw=raw)
    assert message.startswith("p.yaml: ") and "'profiles'" in message


def test_bad_yaml_names_its_line() -> None:
    assert error_of(None, raw="profiles:\n  x: {handlers: [m:f\n").startswith("p.yaml: line ")


def test_invalid_utf8_file_is_bad_input() -> None:
    with pytest.raises(BadInput, match=r"^p\.yaml: not valid YAML"):
        parse_profiles(b"profiles:\n  \xff: {}\n", source="p.yaml", base=BASE)


def test_missing_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"^BATCHCTL_PROFILES='.*nope.yaml': cannot read the profiles file"):
        load_profiles(tmp_path / "nope.yaml", base=BASE)


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (1 << 20) + b"\n")
    with pytest.raises(BadInput, match="larger than 1048576 bytes"):
        load_profiles(path, base=BASE)


# --- what a profile produces --------------------------------------------------------------


def test_describe_is_plain_json() -> None:
    body = parse({"etl": FULL})["etl"].describe()
    assert json.loads(json.dumps(body)) == body
    assert body["tolerations"][0] == {"key": "nvidia.com/gpu", "operator": "Exists", "value": None,
                                      "effect": "NoSchedule"}
    assert body["ack_deadline_s"] == {"min": 30, "max": 120}


@pytest.mark.parametrize("name", ["etl", "default"])
def test_a_described_profile_reads_back_as_itself(name: str) -> None:
    """What the launcher publishes (JSON of ``describe``) is the same profile again for submit's checks."""
    profile = {**parse({"etl": FULL}), "default": BASE}[name]
    assert Profile.from_description(json.loads(json.dumps(profile.describe()))) == profile


def test_profile_shapes_the_job() -> None:
    """Image, placement, resources (GPU in requests and limits), identity and knobs come from the profile."""
    etl = parse({"etl": FULL})["etl"]
    job = job_to_dict(build_job(name="batchctl-b-1", namespace="jobs", labels={}, parallelism=20, env={},
                                config=JobConfig().for_profile(etl)))
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == FULL["image"]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
                                      "limits": {"cpu": "4", "memory": "4Gi", "nvidia.com/gpu": "1"}}
    assert pod["nodeSelector"] == FULL["node_selector"]
    assert pod["tolerations"][0] == {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert pod["serviceAccountName"] == "etl-worker" and "priorityClassName" not in pod
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["BATCHCTL_CONCURRENCY"] == "4" and env["BATCHCTL_DRAIN_BUDGET_S"] == "45"
    assert pod["terminationGracePeriodSeconds"] == 55
    assert validate(job) == KUBERNETES_VERSION


def test_launcher_start_with_a_bad_file_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``batchctl launcher`` stops at once, before connecting anywhere: exit 2, one line naming file, profile, key."""
    from batchctl.frontend.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"profiles": {"etl": {"handlers": ["m:f"], "max_parallelism": -1}}}))
    environ = {"BATCHCTL_PROFILES": str(path), "BATCHCTL_STATE_DIR": str(tmp_path),
               "PUBSUB_EMULATOR_HOST": "127.0.0.1:9"}
    assert main(["launcher", "--backend", "local", "--port", "1"], environ=environ) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"batchctl: error: {path}: profile 'etl': key 'max_parallelism': must be within 1..10000"


def test_part_timeout_reaches_the_workers_env() -> None:
    """A profile's ``part_timeout_s`` becomes the workers' BATCHCTL_PART_TIMEOUT_S; unset, none is set."""
    from batchctl.launcher.jobconfig import JobConfig

    etl = parse({"etl": FULL})["etl"]
    assert JobConfig().for_profile(etl).worker_env()["BATCHCTL_PART_TIMEOUT_S"] == "900"
    plain = parse({"plain": {"handlers": ["*"]}})["plain"]
    assert "BATCHCTL_PART_TIMEOUT_S" not in JobConfig().for_profile(plain).worker_env()
