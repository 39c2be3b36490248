"""A takeover and ``launcher.inbox``: an empty pull proves every earlier event seen, but after a takeover
only once the previous leader's last pull (which Pub/Sub may still hold, with messages in it) has lapsed:
its pull timeout plus the events subscription's ack deadline (``Launcher._stale_pull_s``, read from the
subscription: tests/integration/test_inbox.py, with the inbox's pulls on the real emulator)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from batchctl.core import logs
from batchctl.core.settings import Settings
from batchctl.launcher.service import Launcher, Tuning


@pytest.mark.parametrize(("inherited", "waits"), [(True, True), (False, False)])
def test_a_takeover_waits_only_when_it_inherits_a_holders_pulls(inherited: bool, waits: bool) -> None:
    """After a clean release (or a new Lease) there is no pending pull to wait out: the term counts
    empty pulls at once; after a holder that died, one pull timeout plus the ack deadline later."""
    floors: list[float] = []

    def forget_empty_pulls(until: float) -> None:
        floors.append(until)

    launcher = SimpleNamespace(
        settings=Settings.from_env({"BATCHCTL_PREFIX": "p"}), tuning=Tuning(pull_timeout_s=5.0),
        log=logs.get("test"), elector=SimpleNamespace(inherited=inherited), batches={}, _tries={}, _not_before={},
        store=SimpleNamespace(load_unsettled=list), reconciler=SimpleNamespace(new_term=lambda: None),
        inbox=SimpleNamespace(forget_empty_pulls=forget_empty_pulls),
        _stale_pull_s=lambda: 5.0 + 33,  # what _stale_pull_s reads from the events subscription: integration
    )
    before = time.monotonic()
    Launcher._take_over(launcher)  # type: ignore[arg-type]
    (floor,) = floors
    assert (floor - before >= 38.0) is waits and floor - before < 40.0
