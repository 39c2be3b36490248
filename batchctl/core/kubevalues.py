"""Kubernetes field values as operators write them: quantities, labels, names, images, tolerations.

Shared by the launcher's variables (``launcher.jobconfig``) and the worker profiles file
(``core.profiles``), so a value means the same wherever it is written. Each parser
returns the value (normalised where useful) or raises ValueError with a short reason;
callers add the variable, file or key it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

_NAME_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL_KEY_RE = re.compile(rf"^({_DNS_SUBDOMAIN}/)?{_NAME_PART}$")
_LABEL_VALUE_RE = re.compile(rf"^({_NAME_PART})?$")
_OBJECT_NAME_RE = re.compile(rf"^{_DNS_SUBDOMAIN}$")
_QUANTITY_RE = re.compile(r"^(?P<number>\d+(\.\d+)?|\.\d+)(?P<suffix>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIXES = {
    "": Decimal(1), "m": Decimal("0.001"),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}  # fmt: skip


@dataclass(frozen=True)
class Toleration:
    """One pod toleration; ``value`` is None for ``operator: Exists``."""

    key: str
    value: str | None
    effect: str

    @property
    def operator(self) -> str:
        """``Exists`` (any value of the key) or ``Equal`` (exactly ``value``)."""
        return "Exists" if self.value is None else "Equal"


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity (``500m``, ``1.5``, ``512Mi``, ``2G``) as a number."""
    match = _QUANTITY_RE.match(text)
    if not match:
        raise ValueError("not a Kubernetes quantity (like 500m, 2, 512Mi, 1G)")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError("not a number") from exc
    return number * _SUFFIXES[match["suffix"] or ""]


def quantity(text: str) -> str:
    """A quantity above zero, kept as written."""
    if parse_quantity(text) <= 0:
        raise ValueError("must be above zero")
    return text


def image(text: str) -> str:
    """An image reference with a tag or a digest (never an implicit ``:latest``)."""
    if not text or any(c.isspace() for c in text):
        raise ValueError("must be a non-empty image reference without spaces")
    last = text.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        raise ValueError(
            "needs a tag or digest (an untagged image means ':latest', which is not reproducible)"
        )
    return text


def object_name(text: str) -> str:
    """A DNS subdomain name, as ServiceAccounts and PriorityClasses have."""
    if len(text) > 253 or not _OBJECT_NAME_RE.match(text):
        raise ValueError("not a Kubernetes object name (lowercase letters, digits, '-', '.')")
    return text


def label_key(key: str) -> str:
    prefix = key.rpartition("/")[0]
    if len(prefix) > 253 or not _LABEL_KEY_RE.match(key):
        raise ValueError(f"{key!r} is not a label key")
    return key


def label_value(value: str) -> str:
    if not _LABEL_VALUE_RE.match(value):
        raise ValueError(f"{value!r} is not a label value")
    return value


def node_selector(text: str) -> dict[str, str]:
    """``k=v,k2=v2``; empty means no nodeSelector."""
    selector: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not key=value")
        selector[label_key(key.strip())] = label_value(value.strip())
    return selector


def toleration(key: str, value: str | None, effect: str) -> Toleration:
    """One toleration, every part checked."""
    if effect not in TAINT_EFFECTS:
        raise ValueError(f"effect {effect!r} is not one of {', '.join(TAINT_EFFECTS)}")
    return Toleration(label_key(key), None if value is None else label_value(value), effect)


def tolerations(text: str) -> tuple[Toleration, ...]:
    """``key=value:Effect`` (Equal) or ``key:Effect`` (Exists), comma-separated; empty means none."""
    result = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        head, sep, effect = item.rpartition(":")
        if not sep or effect not in TAINT_EFFECTS:
            raise ValueError(
                f"{item!r} is not key=value:Effect with Effect one of {', '.join(TAINT_EFFECTS)}"
            )
        key, eq, value = head.partition("=")
        result.append(toleration(key, value if eq else None, effect))
    return tuple(result)
