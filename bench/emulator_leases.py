#!/usr/bin/env python3
"""Not a benchmark: the Pub/Sub emulator defect behind issue 12's lost progress, shown with the raw client.

    PUBSUB_EMULATOR_HOST=127.0.0.1:8085 .venv/bin/python bench/emulator_leases.py

On a subscription with a retry policy, a message whose third or later delivery lapses (its
puller died) is, for some or all such messages, never delivered again: not redelivered, not
dead-lettered. Pub/Sub's contract redelivers it. Three cases of 50 messages each, in parallel:
nacked twice then leased and abandoned; abandoned three times; abandoned three times without a
retry policy (the control). Each case then pulls for 60 s and counts what came back. Measured on
2026-12-05 (emulator of this machine's Google Cloud SDK): 47/50, 0/50 and 50/50 came back, none
dead-lettered; one lapse, two lapses, and one nack then a lapse (same code, other cases): 50/50.

Why batchctl cares: the launcher used to nack the events of a failed save; a leader killed right
after (the Kubernetes chaos run) left their progress uncounted. It now holds them (launcher/held.py),
and its own subscriptions have no retry policy (batchctl.core.topology.ensure_shared).
"""

from __future__ import annotations

import os
import threading
import time
import uuid

from google.cloud import pubsub_v1
from google.protobuf import duration_pb2

PROJECT = "lease-probe"
MESSAGES = 50
DEADLINE_S = 10


def case(name: str, *, nacks: int, lapses: int, retry_policy: bool, out: dict[str, str]) -> None:
    pub, sub = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    tag = f"{'-'.join(name.replace(',', '').split())}-{uuid.uuid4().hex[:6]}"
    topic, dead = pub.topic_path(PROJECT, f"topic-{tag}"), pub.topic_path(PROJECT, f"dead-{tag}")
    path, dead_sub = sub.subscription_path(PROJECT, f"sub-{tag}"), sub.subscription_path(PROJECT, f"dead-sub-{tag}")
    pub.create_topic(name=topic)
    pub.create_topic(name=dead)
    sub.create_subscription(request={"name": dead_sub, "topic": dead})
    request = {"name": path, "topic": topic, "ack_deadline_seconds": DEADLINE_S,
               "dead_letter_policy": {"dead_letter_topic": dead, "max_delivery_attempts": 10}}
    if retry_policy:
        request["retry_policy"] = {"minimum_backoff": duration_pb2.Duration(seconds=1),
                                   "maximum_backoff": duration_pb2.Duration(seconds=10)}
    sub.create_subscription(request=request)
    for i in range(MESSAGES):
        pub.publish(topic, b"%d" % i).result(timeout=30)

    def pull_all(limit_s: float) -> list[str]:
        got: dict[bytes, str] = {}
        end = time.monotonic() + limit_s
        while len(got) < MESSAGES and time.monotonic() < end:
            try:
                response = sub.pull(request={"subscription": path, "max_messages": 100}, timeout=5)
            except Exception:  # an empty pull that timed out
                continue
            got.update({m.message.data: m.ack_id for m in response.received_messages})
        return list(got.values())

    for _ in range(nacks):
        ids = pull_all(60)
        sub.modify_ack_deadline(request={"subscription": path, "ack_ids": ids, "ack_deadline_seconds": 0})
    for _ in range(lapses):
        pull_all(60)  # leased, then abandoned: the lease lapses after DEADLINE_S
    back = pull_all(60)
    dead_lettered = sub.pull(request={"subscription": dead_sub, "max_messages": 100}, timeout=5).received_messages
    out[name] = f"{len(back)}/{MESSAGES} came back, {len(dead_lettered)} dead-lettered"


def main() -> None:
    assert os.environ.get("PUBSUB_EMULATOR_HOST"), "set PUBSUB_EMULATOR_HOST"
    out: dict[str, str] = {}
    cases = [("nacked twice, then a lapse", dict(nacks=2, lapses=1, retry_policy=True)),
             ("three lapses", dict(nacks=0, lapses=3, retry_policy=True)),
             ("three lapses, no retry policy", dict(nacks=0, lapses=3, retry_policy=False))]
    threads = [threading.Thread(target=case, args=(name,), kwargs={**kw, "out": out}) for name, kw in cases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, _ in cases:
        print(f"{name}: {out.get(name, 'failed')}")


if __name__ == "__main__":
    main()
