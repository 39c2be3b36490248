"""LeaseElector against the strict API server: who holds the Lease, and when it may change hands.

Checks: the first replica creates and holds the Lease; a second cannot take it while it has
seen the record change within ``leaseDurationSeconds`` (on its own monotonic clock), but takes it
after that long of silence (a transition is counted); the old holder then finds it held by another and is not leader;
a leader that stops renewing stops acting as leader before anyone else may take over.
"""

from __future__ import annotations

from batchctl.launcher.kube import Kube
from batchctl.launcher.leader import LeaseElector
from tests.support.kube_fixtures import KubeApi
from tests.support.kube_objects import LEASES
from tests.support.waiting import wait_for


class Clock:
    """A clock a test moves by hand (seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Clocks:
    """A wall clock (what renewTime says) and a monotonic one (what expiry is timed by), moved together."""

    def __init__(self) -> None:
        self.wall, self.mono = Clock(1_000_000.0), Clock(0.0)

    def advance(self, seconds: float) -> None:
        self.wall.now += seconds
        self.mono.now += seconds


def _elector(kube_api: KubeApi, identity: str, clocks: Clocks | None = None, lease_s: int = 15) -> LeaseElector:
    kube = Kube(kube_api.namespace, kubeconfig=str(kube_api.kubeconfig))
    if clocks is None:
        return LeaseElector(kube, "leader", identity, lease_s=lease_s)
    return LeaseElector(kube, "leader", identity, lease_s=lease_s, clock=clocks.wall, monotonic=clocks.mono)


def test_lease_changes_hands_only_after_it_expires(kube_api: KubeApi) -> None:
    """B cannot take A's Lease while it has seen it change within 15 s; after 16 s of silence it can, and A is out."""
    clocks = Clocks()
    first, second = _elector(kube_api, "a", clocks), _elector(kube_api, "b", clocks)
    assert first.step() and first.is_leader
    assert not second.step()  # B sees the record now and times it from here
    clocks.advance(14)
    assert not second.step() and not second.is_leader
    clocks.advance(2)  # 16 s since B last saw it change: expired
    assert second.step() and second.is_leader
    lease = kube_api.server.read_object(LEASES, kube_api.namespace, "leader") or {}
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    assert not first.step() and not first.is_leader


def test_renewal_keeps_the_lease(kube_api: KubeApi) -> None:
    """A leader that renews within the duration keeps it however long it runs."""
    clocks = Clocks()
    first, second = _elector(kube_api, "a", clocks), _elector(kube_api, "b", clocks)
    for _ in range(5):
        assert first.step()
        assert not second.step()
        clocks.advance(10)


def test_a_silent_leader_steps_down_before_anyone_may_take_over(kube_api: KubeApi) -> None:
    """Lease 2 s, A never renews: A stops being leader before B's first successful take-over."""
    first, second = _elector(kube_api, "a", lease_s=2), _elector(kube_api, "b", lease_s=2)
    assert first.step()
    wait_for(second.step, timeout=10, interval=0.05, what="b to take the expired Lease")
    assert not first.is_leader
