"""LeaseElector against the strict API server: who holds the Lease, and when it may change hands.

Checks: the first replica creates and holds the Lease; a second cannot take it while it is
fresh, but takes it once ``renewTime + leaseDurationSeconds`` has passed on its clock
(a transition is counted); the old holder then finds it held by another and is not leader;
a leader that stops renewing stops acting as leader before anyone else may take over.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from batchctl.launcher.kube import Kube
from batchctl.launcher.leader import LeaseElector
from tests.support.kube_fixtures import KubeApi
from tests.support.kube_objects import LEASES
from tests.support.waiting import wait_for


class Clock:
    """A clock a test sets by hand (seconds since the epoch)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _elector(kube_api: KubeApi, identity: str, clock: Callable[[], float], lease_s: int = 15) -> LeaseElector:
    kube = Kube(kube_api.namespace, kubeconfig=str(kube_api.kubeconfig))
    return LeaseElector(kube, "leader", identity, lease_s=lease_s, clock=clock)


def test_lease_changes_hands_only_after_it_expires(kube_api: KubeApi) -> None:
    """B cannot take A's fresh Lease; 16 s later on B's clock (lease 15 s) it can, and A is out."""
    clock = Clock(1_000_000.0)
    first, second = _elector(kube_api, "a", clock), _elector(kube_api, "b", clock)
    assert first.step() and first.is_leader
    clock.now += 14
    assert not second.step() and not second.is_leader
    clock.now += 2  # 16 s after A's last renewal: expired
    assert second.step() and second.is_leader
    lease = kube_api.server.read_object(LEASES, kube_api.namespace, "leader") or {}
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    assert not first.step() and not first.is_leader


def test_renewal_keeps_the_lease(kube_api: KubeApi) -> None:
    """A leader that renews within the duration keeps it however long it runs."""
    clock = Clock(1_000_000.0)
    first, second = _elector(kube_api, "a", clock), _elector(kube_api, "b", clock)
    for _ in range(5):
        assert first.step()
        clock.now += 10
        assert not second.step()


def test_a_silent_leader_steps_down_before_anyone_may_take_over(kube_api: KubeApi) -> None:
    """Lease 2 s, A never renews: A stops being leader before B's first successful take-over."""
    first, second = _elector(kube_api, "a", time.time, lease_s=2), _elector(kube_api, "b", time.time, lease_s=2)
    assert first.step()
    wait_for(second.step, timeout=10, interval=0.05, what="b to take the expired Lease")
    assert not first.is_leader
