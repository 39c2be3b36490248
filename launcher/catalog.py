"""The profiles the launcher offers, where ``batchctl profiles`` and ``submit`` read them.

On Kubernetes each launcher replica publishes the profiles it loaded as the ConfigMap
``<prefix>-profiles`` in its state namespace (create, or patch if it exists: verbs the
Role grants for batch state already), so people who can read that namespace see what
they may ask for without reading the launcher's own configuration. The local backend
has no such copy: ``batchctl profiles`` reads the file (or the variables) itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from batchctl.core.errors import BadInput
from batchctl.core.names import LABEL_COMPONENT, LABEL_NAME, Names
from batchctl.core.profiles import Profile
from batchctl.launcher.kube import Conflict, Kube, NotFound

PROFILES_KEY = "profiles.json"


def object_name(names: Names) -> str:
    return f"{names.prefix}-profiles"


def describe(profiles: Mapping[str, Profile]) -> dict[str, dict[str, Any]]:
    """Every profile as plain data, by name in name order."""
    return {name: profiles[name].describe() for name in sorted(profiles)}


def publish(kube: Kube, names: Names, profiles: Mapping[str, Profile]) -> None:
    """Create or update the ConfigMap that lists ``profiles``."""
    data = {PROFILES_KEY: json.dumps(describe(profiles), sort_keys=True)}
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": object_name(names), "labels": {LABEL_NAME: "batchctl", LABEL_COMPONENT: "profiles"}},
        "data": data,
    }
    try:
        kube.create_configmap(body)
    except Conflict:
        kube.patch_configmap(object_name(names), {"data": data})


def read(kube: Kube, names: Names) -> dict[str, dict[str, Any]]:
    """The published profiles; BadInput when no launcher has published any in this namespace."""
    try:
        configmap = kube.get_configmap(object_name(names))
    except NotFound:
        raise BadInput(f"no profiles published in namespace {kube.namespace!r} (ConfigMap {object_name(names)}): "
                       "is the launcher running there?") from None
    try:
        body = json.loads((configmap.get("data") or {})[PROFILES_KEY])
    except (KeyError, ValueError) as exc:
        raise BadInput(f"ConfigMap {object_name(names)}: unreadable profiles ({exc})") from None
    if not isinstance(body, dict):
        raise BadInput(f"ConfigMap {object_name(names)}: unreadable profiles")
    return body
