"""The launcher applying a flood of aggregated ``part_done`` events for one batch.

    .venv/bin/python bench/launcher_events.py [--parts 1000000] [--per-event 1000] [--per-take 1000]

One batch of ``--parts`` parts; events of ``--per-event`` parts each, encoded as workers
encode them, are handed to the launcher's event path in takes of ``--per-take`` messages
(what one inbox take holds): decode every message, fold the take into the batch
(``launcher.progress.apply_events``, with the state copy the service takes to revert a
failed save) and save the batch once per take (the local backend's state file: one
coalesced save per take, not per event). completions/s = parts / wall time. Target:
>= 20,000 completions/s. Prints a table line, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batchctl.core.messages import BatchRequest, Event, decode_event, encode_event  # noqa: E402
from batchctl.launcher.progress import apply_events  # noqa: E402
from batchctl.launcher.state import RUNNING, BatchState  # noqa: E402
from batchctl.launcher.store import FileStore  # noqa: E402

TARGET = 20_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--parts", type=int, default=1_000_000)
    parser.add_argument("--per-event", type=int, default=1000)
    parser.add_argument("--per-take", type=int, default=1000)
    args = parser.parse_args()
    request = BatchRequest(batch_id="flood", parts=args.parts, records=args.parts, bytes=args.parts, handler="m:f")
    batch = BatchState(request=request, state=RUNNING)
    messages = [
        encode_event(Event(type="part_done", batch_id="flood", worker=f"w{i % 8}",
                           parts=tuple(range(start, min(start + args.per_event, args.parts)))))
        for i, start in enumerate(range(0, args.parts, args.per_event))
    ]
    with tempfile.TemporaryDirectory() as folder:
        store = FileStore(Path(folder))
        store.create(batch)
        batches = {"flood": batch}
        saves = 0
        started = time.perf_counter()
        for at in range(0, len(messages), args.per_take):
            take = [decode_event(data, attributes) for data, attributes in messages[at : at + args.per_take]]
            before = batch.copy()  # as the service does, to revert a failed save
            if apply_events(batches, take):
                store.save(batch)
                saves += 1
            del before
        seconds = time.perf_counter() - started
    rate = args.parts / seconds
    ok = len(batch.done) == args.parts and rate >= TARGET
    print(f"  {args.parts:,} completions in {len(messages):,} events, {saves} saves: {seconds:.2f} s = "
          f"{rate:,.0f} completions/s (target >= {TARGET:,})")
    print(json.dumps({"bench": "launcher_events", "parts": args.parts, "events": len(messages), "saves": saves,
                      "seconds": seconds, "completions_per_s": rate, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
