"""The kubelet's informers: list, then watch from the list's resourceVersion, with a cache by name."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any, cast

import urllib3
from kubernetes import client, watch

log = logging.getLogger(__name__)

Obj = dict[str, Any]


def json_body(response: object) -> Obj:
    """The body of a call made with ``_preload_content=False`` (an urllib3 response), as a dict."""
    decoded: Obj = json.loads(cast(Any, response).data)
    return decoded


class Informer(threading.Thread):
    """List, then watch from the list's resourceVersion; re-list on 410 or error. Keeps a cache by name."""

    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        *,
        namespace: str,
        selector: str | None,
        on_change: Callable[[], None],
        stopping: threading.Event,
    ) -> None:
        super().__init__(name=f"kubelet-informer-{kind}", daemon=True)
        self._list, self._namespace, self.selector = list_fn, namespace, selector
        self._on_change, self._stopping = on_change, stopping
        self._lock = threading.Lock()
        self._cache: dict[str, Obj] = {}
        self._watch: watch.Watch | None = None
        self.synced = threading.Event()

    def snapshot(self) -> dict[str, Obj]:
        with self._lock:
            return dict(self._cache)

    def store(self, obj: Obj) -> None:
        """Keep a newer version we wrote ourselves, without waiting for its watch event."""
        with self._lock:
            name, old = obj["metadata"]["name"], self._cache.get(obj["metadata"]["name"])
            if old is None or int(old["metadata"]["resourceVersion"]) < int(
                obj["metadata"]["resourceVersion"]
            ):
                self._cache[name] = obj

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._list_and_watch()
            except client.ApiException as exc:
                if exc.status != 410:
                    log.warning("kubelet %s watch failed: %s", self.name, exc)
                    self._stopping.wait(0.2)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                if not self._stopping.is_set():
                    log.warning("kubelet %s watch broke: %s", self.name, exc)
                    self._stopping.wait(0.2)

    def _list_and_watch(self) -> None:
        kwargs = {"label_selector": self.selector} if self.selector else {}
        listed = json_body(self._list(self._namespace, _preload_content=False, **kwargs))
        with self._lock:
            self._cache = {item["metadata"]["name"]: item for item in listed["items"]}
        self.synced.set()
        self._on_change()
        version = listed["metadata"]["resourceVersion"]
        while not self._stopping.is_set():
            self._watch = watch.Watch()
            for event in self._watch.stream(
                self._list, self._namespace, resource_version=version, timeout_seconds=5, **kwargs
            ):
                obj = event["raw_object"]
                version = obj["metadata"]["resourceVersion"]
                with self._lock:
                    if event["type"] == "DELETED":
                        self._cache.pop(obj["metadata"]["name"], None)
                    else:
                        self._cache[obj["metadata"]["name"]] = obj
                self._on_change()
