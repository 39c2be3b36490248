"""Every API status reaches the launcher as a typed batchctl error, and leader election survives them.

Checks: 401/403/422/other 4xx/429/5xx answered by the strict API server become Forbidden, Invalid,
Refused, Throttled (with the server's Retry-After) and Unreachable, never a raw ApiException;
a Lease read answered 429 costs the elector one try (it waits Retry-After), not its thread; a 429's
Retry-After holds for every later call of the same kind (a Job list and a Job watch are one kind):
such a call is Throttled at once, for the time left, without a request; other kinds go on.
"""

from __future__ import annotations

import kmock
import pytest

from batchctl.core.errors import BatchctlError, Unreachable
from batchctl.launcher.kube import Forbidden, Invalid, Kube, Refused, Throttled
from batchctl.launcher.leader import LeaseElector
from tests.support.kube_fixtures import KubeApi
from tests.support.kube_objects import CONFIGMAPS, JOBS, LEASES
from tests.support.waiting import wait_for


@pytest.fixture
def kube(kube_api: KubeApi) -> Kube:
    return Kube(kube_api.namespace, kubeconfig=str(kube_api.kubeconfig))


@pytest.mark.parametrize(("status", "expected"), [
    (401, Forbidden), (403, Forbidden), (422, Invalid), (400, Refused), (418, Refused),
    (429, Throttled), (500, Unreachable), (503, Unreachable),
])
def test_every_status_is_a_typed_error(kube_api: KubeApi, kube: Kube, status: int, expected: type) -> None:
    """An injected status on a ConfigMap read surfaces as its batchctl error class, with the status in it."""
    kube_api.server["get", CONFIGMAPS][:1] << status
    with pytest.raises(BatchctlError) as caught:
        kube.get_configmap("any")
    assert type(caught.value) is expected
    assert str(status) in str(caught.value)


def test_throttled_carries_retry_after(kube_api: KubeApi, kube: Kube) -> None:
    """429 with Retry-After: 7 gives retry_after_s 7; a 403 keeps the server's message."""
    kube_api.server["get", CONFIGMAPS][:1] << 429 << kmock.headers({"Retry-After": "7"})
    with pytest.raises(Throttled) as caught:
        kube.get_configmap("any")
    assert caught.value.retry_after_s == 7.0
    kube_api.server["post", CONFIGMAPS][:1] << 403 << {"kind": "Status", "message": "exceeded quota: q"}
    with pytest.raises(Forbidden, match="exceeded quota: q"):
        kube.create_configmap({"metadata": {"name": "x"}})


def test_elector_survives_429_and_waits_retry_after(kube_api: KubeApi, kube: Kube) -> None:
    """A Lease read answered 429 fails one step, the thread lives on and takes the Lease after Retry-After."""
    for status in (429, 403):
        kube_api.server["get", LEASES][:1] << status << kmock.headers({"Retry-After": "1"})
    elector = LeaseElector(kube, "lease", "me", lease_s=4, renew_s=1)
    assert elector.step() is False
    assert elector.wait_s == 1.0
    thread = elector.start()
    try:
        wait_for(lambda: elector.is_leader, timeout=10, what="the elector to take the Lease")
        assert thread.is_alive()
    finally:
        elector.stop()


def test_retry_after_holds_for_later_calls_of_the_same_kind(kube_api: KubeApi, kube: Kube) -> None:
    """A ConfigMap read answered 429 Retry-After 30: the next read is Throttled locally (no request,
    ~30 s left), a create is sent; a Job list answered 429 holds back the Job watch too."""
    kube_api.server["get", CONFIGMAPS][:1] << 429 << kmock.headers({"Retry-After": "30"})
    kube_api.server[kmock.action.LIST, JOBS][:1] << 429 << kmock.headers({"Retry-After": "30"})
    with pytest.raises(Throttled):
        kube.get_configmap("any")
    with pytest.raises(Throttled) as again:
        kube.get_configmap("any")
    assert 29 < again.value.retry_after_s <= 30
    kube.create_configmap({"metadata": {"name": "x"}})
    with pytest.raises(Throttled):
        kube.list_jobs("a=b")
    with pytest.raises(Throttled) as watch:
        next(kube.watch_jobs("a=b", timeout_s=1))
    assert watch.value.retry_after_s > 29
    sent = [(r.verb, r.resource, r.status) for r in kube_api.server.request_log()]
    assert sent == [("get", "configmaps", 429), ("create", "configmaps", 201), ("list", "jobs", 429)]


def test_a_watch_answered_429_is_throttled_with_its_retry_after(kube_api: KubeApi, kube: Kube) -> None:
    """The watch request itself answered 429: Throttled with the server's Retry-After (not a bare
    Unreachable, which the watch loop would retry after 1 s)."""
    kube_api.server[kmock.action.WATCH, JOBS][:1] << 429 << kmock.headers({"Retry-After": "3"})
    with pytest.raises(Throttled) as caught:
        next(kube.watch_jobs("a=b", timeout_s=1))
    assert caught.value.retry_after_s == 3.0
