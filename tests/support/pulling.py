"""Pull a subscription dry with the plain client, for assertions."""

from __future__ import annotations

import time

from batchctl.core.pubsub import PubSub, Received


def drain(
    pubsub: PubSub, subscription: str, *, empty_pulls: int = 3, ack: bool = True, timeout: float = 60.0
) -> list[Received]:
    """Pull until ``empty_pulls`` consecutive pulls return nothing; ack what came. Fails after ``timeout`` s."""
    got: list[Received] = []
    empty = 0
    deadline = time.monotonic() + timeout
    while empty < empty_pulls:
        if time.monotonic() > deadline:
            raise AssertionError(f"{subscription} still delivering after {timeout}s ({len(got)} messages)")
        batch = pubsub.pull(subscription, max_messages=500, timeout_s=1)
        if not batch:
            empty += 1
            continue
        empty = 0
        got.extend(batch)
        if ack:
            pubsub.ack(subscription, [m.ack_id for m in batch])
    return got


def leftovers(pubsub: PubSub, prefix: str) -> tuple[list[str], list[str]]:
    """Topics and subscriptions of this prefix, other than the shared control/events ones."""
    shared = {f"{prefix}-requests", f"{prefix}-events", f"{prefix}-requests-launcher", f"{prefix}-events-launcher",
              f"{prefix}-requests-dead-letters", f"{prefix}-events-dead-letters"}
    topics = [t for t in pubsub.list_topics() if t.startswith(prefix + "-") and t not in shared]
    subs = [s for s in pubsub.list_subscriptions() if s.startswith(prefix + "-") and s not in shared]
    return topics, subs
