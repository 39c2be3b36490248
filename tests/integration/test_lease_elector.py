"""LeaseElector against the strict API server: who holds the Lease, and when it may change hands.

Checks: the first replica creates and holds the Lease; a second cannot take it while it has
seen the record change within ``leaseDurationSeconds`` (on its own monotonic clock), but takes it
after that long of silence (a transition is counted); the old holder then finds it held by another and is not leader;
a leader that stops renewing stops acting as leader before anyone else may take over. With each
replica on its own clocks and the holder's wall clock 30 s ahead or behind, take-over is neither
earlier nor later: no two machines' wall clocks are ever compared (issue 18, finding 9).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchctl.launcher.kube import Kube
from batchctl.launcher.leader import FileElector, LeaseElector
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


class Machine:
    """One replica's clocks: its own wall clock (``skew_s`` off true time) and its own monotonic origin."""

    def __init__(self, skew_s: float, mono_origin: float) -> None:
        self.wall, self.mono = Clock(1_000_000.0 + skew_s), Clock(mono_origin)


def _on(kube_api: KubeApi, identity: str, machine: Machine, lease_s: int = 15) -> LeaseElector:
    kube = Kube(kube_api.namespace, kubeconfig=str(kube_api.kubeconfig))
    return LeaseElector(kube, "leader", identity, lease_s=lease_s, clock=machine.wall, monotonic=machine.mono)


def _advance(seconds: float, *machines: Machine) -> None:
    for machine in machines:
        machine.wall.now += seconds
        machine.mono.now += seconds


@pytest.mark.parametrize("holder_skew_s", [30.0, -30.0], ids=["holder-ahead", "holder-behind"])
def test_a_skewed_holder_clock_moves_takeover_neither_earlier_nor_later(
    kube_api: KubeApi, holder_skew_s: float
) -> None:
    """The holder's renewTime is written 30 s ahead or behind B's wall clock: B still takes over
    exactly after 15 s of silence on its own monotonic clock (not at once, not 30 s late)."""
    holder, candidate = Machine(holder_skew_s, 500.0), Machine(0.0, 7.0)
    first, second = _on(kube_api, "a", holder), _on(kube_api, "b", candidate)
    assert first.step()
    assert not second.step()  # B sees the record now
    _advance(14, holder, candidate)
    assert not second.step() and not second.is_leader
    _advance(2, holder, candidate)  # 16 s of silence by B's clock
    assert second.step() and second.is_leader
    assert not first.is_leader  # A stopped acting at its renew deadline, before B took over


def test_a_renewing_holder_with_a_skewed_clock_keeps_the_lease(kube_api: KubeApi) -> None:
    """A's wall clock is 30 s behind: its fresh renewals look 30 s stale to B, yet B never takes over."""
    holder, candidate = Machine(-30.0, 0.0), Machine(0.0, 100.0)
    first, second = _on(kube_api, "a", holder), _on(kube_api, "b", candidate)
    for _ in range(4):
        assert first.step()
        assert not second.step()
        _advance(10, holder, candidate)


def test_the_holder_stops_acting_before_its_renew_deadline(kube_api: KubeApi) -> None:
    """A's renews fail from some point: A is leader until renew_deadline_s (10 s) after its last
    successful renew began, not a moment longer, and that is before B (timing 15 s) may take over."""
    holder, candidate = Machine(30.0, 0.0), Machine(0.0, 42.0)
    first, second = _on(kube_api, "a", holder), _on(kube_api, "b", candidate)
    assert first.step()
    assert not second.step()
    assert first.renew_deadline_s < first.lease_s
    _advance(9.9, holder, candidate)
    assert first.is_leader
    _advance(0.1, holder, candidate)
    assert not first.is_leader
    assert not second.step()  # 10 s by B's clock: B must still wait; nobody acts in between
    _advance(5.1, holder, candidate)
    assert second.step()


def test_a_term_inherits_pulls_only_from_a_holder_that_did_not_release(kube_api: KubeApi) -> None:
    """``inherited`` (events may hide in the previous holder's pending pull): not for a new Lease, not
    after a clean release; yes after a holder let it expire, and yes for a new process under a name
    that held it (a restarted container keeps its pod name)."""
    clocks = Clocks()
    first = _elector(kube_api, "a", clocks)
    assert first.step() and first.inherited is False  # created it
    first.stop(release=True)
    second = _elector(kube_api, "b", clocks)
    assert second.step() and second.inherited is False  # released cleanly
    third = _elector(kube_api, "c", clocks)
    assert not third.step()
    clocks.advance(16)  # b went silent (SIGKILL): c takes the expired Lease
    assert third.step() and third.inherited is True
    again = _elector(kube_api, "c", clocks)  # c's container restarted: same identity, new process
    assert again.step() and again.inherited is True
    assert again.step() and again.inherited is True  # a renewal keeps the term's answer


def test_the_file_elector_inherits_only_from_a_holder_that_died(tmp_path: Path) -> None:
    first = FileElector(tmp_path)
    assert first.step() and first.inherited is False
    first.stop(release=True)
    second = FileElector(tmp_path)
    assert second.step() and second.inherited is False
    second._file.close()  # type: ignore[union-attr]  # as a SIGKILL does: the kernel drops the lock, the pid stays
    third = FileElector(tmp_path)
    assert third.step() and third.inherited is True
