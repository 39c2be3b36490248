"""The chaos runs' one departure from the product's Pub/Sub set-up: the work subscription loses its retry policy.

On a subscription with a retry policy, the Pub/Sub emulator sometimes never delivers again a message
whose third or later delivery lapsed (its puller was killed), and does not dead-letter it either
(``bench/emulator_leases.py``: three lapses, 0 of 50 came back; the same without a retry policy, 50 of
50). Pub/Sub itself redelivers it. A chaos run kills workers holding parts that were handed from
worker to worker before, so with the product's retry policy (1-60 s backoff) it can lose parts to
the emulator, which would look exactly like a batchctl bug: the local CI form lost 11 parts that way
once in about ten CI runs (seed 111987), the 20,000-part Kubernetes run 294 parts once.

So right after ``submit`` created it, the run's work subscription is set to redeliver at once (no
retry policy, everything else as created). A part lost after that is batchctl's. What the retry
policy itself does (backoff after a nack, a poison part's pace) is proven where it matters: the
poison-part and dead-letter tests keep it. ``bench/chaos --keep-retry-policy`` runs with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings


def drop_retry_policy(env: Mapping[str, str], batch_id: str) -> None:
    """Remove the retry policy of ``batch_id``'s work subscription, reached through ``env``; checked."""
    pubsub = PubSub(Settings.from_env(dict(env)))
    try:
        work = pubsub.settings.names.work(batch_id)
        spec = pubsub.subscription_spec(work)
        pubsub.set_delivery_policy(work, dataclasses.replace(spec, min_backoff_s=0, max_backoff_s=0))
        now = pubsub.subscription_spec(work)
        if now.max_backoff_s or now.dead_letter_topic != spec.dead_letter_topic:
            raise AssertionError(f"{work}: retry policy not removed ({now})")
    finally:
        pubsub.close()
