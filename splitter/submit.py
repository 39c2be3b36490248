"""``batchctl submit``: split input, publish every part, then send the batch request.

Nothing is half-done: input is read, validated and its cut planned before anything is created;
if creating, publishing or the request fails, the batch's topics and subscriptions
are deleted and no request is sent.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from batchctl.core import logs, sink, topology
from batchctl.core.admission import check_request
from batchctl.core.errors import BadInput
from batchctl.core.gsurl import is_url
from batchctl.core.messages import BatchRequest, Control, encode_control
from batchctl.core.names import generate_batch_id, validate_batch_id
from batchctl.core.profiles import DEFAULT_PROFILE, Profile
from batchctl.core.pubsub import PublishFailed, PubSub
from batchctl.splitter import partitioner, readers, remote, rollback
from batchctl.splitter.partitioner import PartLimits
from batchctl.splitter.publisher import publish_parts

if TYPE_CHECKING:
    from batchctl.core.storage import Storage

DEFAULT_HANDLER = "batchctl.worker.demo:handle"
STDIN_COPY_BYTES = 1 << 20


@dataclass(frozen=True)
class SubmitOptions:
    inputs: list[str]
    batch_id: str | None = None
    format: str | None = None
    limits: PartLimits = PartLimits()
    handler: str = DEFAULT_HANDLER
    parts_per_worker: int = 10
    max_parallelism: int = 10
    priority: str = "normal"
    """Weight in the launcher's worker budget: low, normal or high."""
    image: str | None = None
    topology: topology.BatchTopology = topology.BatchTopology()
    output: str | None = None
    """``--output DEST``: ``gs://BUCKET/PREFIX/``, or a folder with the local backend."""
    profile: str = DEFAULT_PROFILE
    """``--profile NAME``: the operator's worker profile the batch asks for."""
    profiles: Mapping[str, Profile] | None = None
    """The profiles the launcher offers, when known here: the request is checked against them before
    anything is created (the launcher checks again). None: only the launcher checks."""


@dataclass(frozen=True)
class Submitted:
    batch_id: str
    parts: int
    records: int
    bytes: int


def submit(pubsub: PubSub, options: SubmitOptions, *, stdin: BinaryIO | None = None,
           storage: Storage | None = None) -> Submitted:
    """Run a whole submit; raises BatchctlError subclasses with one-line messages.

    ``storage`` reads ``gs://`` inputs (default: a client from the settings' environment).
    """
    batch_id = generate_batch_id() if options.batch_id is None else validate_batch_id(options.batch_id)
    _check_options(options)
    _admit(options, batch_id)
    log = logs.get("submit", batch_id=batch_id)
    with ExitStack() as stack:
        output = _prepare_output(pubsub, options, storage)
        inputs = _remote_inputs(pubsub, options, storage, stack)
        sources = _sources(options, stdin, stack, inputs)
        fmt = _batch_format(sources)
        max_bytes = options.limits.max_part_bytes
        opener = inputs.open if inputs is not None else None
        stamps = readers.stamp(sources)
        cut = partitioner.plan(readers.record_blocks(sources, max_record_bytes=max_bytes, opener=opener),
                               options.limits)
        if inputs is not None:
            sources = inputs.spooled(sources)
        if not len(cut):
            raise BadInput(f"{', '.join(options.inputs)}: no records in the input")
        log.info("input_split", parts=len(cut), records=cut.records, bytes=cut.bytes)
        pubsub.check_reachable()
        topology.ensure_shared(pubsub)
        with rollback.interruptible():
            _create_and_publish(pubsub, options, batch_id, cut, sources=sources, stamps=stamps, fmt=fmt,
                                output=output, log=log)
        log.info("batch_submitted", parts=len(cut))
        return Submitted(batch_id, len(cut), cut.records, cut.bytes)


def _create_and_publish(pubsub: PubSub, options: SubmitOptions, batch_id: str, cut: partitioner.PartPlan, *,
                        sources: list[readers.Source], stamps: readers.Stamps, fmt: str, output: str | None,
                        log: Any) -> None:
    """Create the batch, publish its parts (second pass), send the launch request; roll back on any
    failure or signal, unless the request may already be stored."""
    created = topology.create_batch(pubsub, batch_id, options.topology)
    sending = False
    try:
        blocks = readers.record_blocks(sources, max_record_bytes=options.limits.max_part_bytes, validate=False)
        publish_parts(pubsub, pubsub.settings.names.work(batch_id), partitioner.build(blocks, cut),
                      total=len(cut), batch_id=batch_id, fmt=fmt)
        readers.check_unchanged(stamps)  # the parts were cut from the input validated in the first pass
        request = BatchRequest(
            batch_id=batch_id, parts=len(cut), records=cut.records, bytes=cut.bytes,
            handler=options.handler, parts_per_worker=options.parts_per_worker,
            max_parallelism=options.max_parallelism, image=options.image,
            max_delivery_attempts=options.topology.max_delivery_attempts,
            ack_deadline_s=options.topology.ack_deadline_s, output=output, profile=options.profile,
            priority=options.priority,
        )
        sending = True
        send_control(pubsub, Control("launch", batch_id, request))
    except BaseException as exc:
        rollback.roll_back(pubsub, created, exc, sending=sending, log=log)
        raise


def _prepare_output(pubsub: PubSub, options: SubmitOptions, storage: Storage | None) -> str | None:
    """The canonical ``--output DEST``, checked usable and free before anything is created."""
    if options.output is None:
        return None
    settings = pubsub.settings
    dest = sink.check_dest(options.output, backend=settings.backend)
    destination = sink.Sink(dest, environ=settings.environ, project=settings.project, storage=storage)
    try:
        destination.prepare()
    finally:
        if storage is None and destination.remote:
            destination.storage.close()
    return dest


def _remote_inputs(pubsub: PubSub, options: SubmitOptions, storage: Storage | None,
                   stack: ExitStack) -> remote.RemoteInputs | None:
    """The reader of ``gs://`` inputs, if there are any (their spools go in a temporary folder)."""
    if not any(is_url(name) for name in options.inputs):
        return None
    if storage is None:
        from batchctl.core.storage import Storage  # the client loads only when a gs:// input is given

        storage = Storage(pubsub.settings.environ, project=pubsub.settings.project)
        stack.callback(storage.close)
    folder = Path(stack.enter_context(remote.spool_dir()))
    inputs = remote.RemoteInputs(storage, folder)
    stack.callback(inputs.close)
    return inputs


def _sources(options: SubmitOptions, stdin: BinaryIO | None, stack: ExitStack,
             inputs: remote.RemoteInputs | None) -> list[readers.Source]:
    """The inputs as sources; stdin is copied to a temporary file, since the input is read twice."""
    sources = readers.expand(options.inputs, options.format, remote=inputs.expand if inputs else None)
    if not any(s.path == "-" for s in sources):
        return sources
    copy = stack.enter_context(tempfile.NamedTemporaryFile(prefix="batchctl-stdin-"))  # noqa: SIM115
    shutil.copyfileobj(stdin if stdin is not None else sys.stdin.buffer, copy, STDIN_COPY_BYTES)
    copy.flush()
    return [readers.Source(copy.name, s.format, label="-") if s.path == "-" else s for s in sources]


def send_control(pubsub: PubSub, control: Control) -> None:
    """Publish one control message and wait until Pub/Sub confirms it."""
    data, attributes = encode_control(control)
    try:
        # As a one-message request: the batching publisher would hold it for its batch latency first.
        pubsub.publish_many(pubsub.settings.names.requests_topic, [(data, attributes)], what="request")
    except PublishFailed as exc:
        raise PublishFailed(f"sending the {control.action} request failed: {exc.__cause__ or exc}") from exc


def _batch_format(sources: list[readers.Source]) -> str:
    kinds = {"lines" if s.format == "lines" else "jsonl" for s in sources}
    if len(kinds) > 1:
        raise BadInput("cannot mix plain-text lines with JSON/CSV input in one batch; pass --format")
    return kinds.pop() if kinds else "jsonl"


def _admit(options: SubmitOptions, batch_id: str) -> None:
    """The launcher's admission rules, applied here when the profiles are known: a typo fails fast."""
    if options.profiles is None:
        return
    preview = BatchRequest(
        batch_id=batch_id, parts=1, records=0, bytes=0, handler=options.handler,
        parts_per_worker=options.parts_per_worker, max_parallelism=options.max_parallelism, image=options.image,
        max_delivery_attempts=options.topology.max_delivery_attempts,
        ack_deadline_s=options.topology.ack_deadline_s, profile=options.profile, output=options.output,
    )
    rejection = check_request(preview, options.profiles)
    if rejection is not None:
        raise BadInput(f"the launcher would reject this batch: {rejection.reason}")


def _check_options(options: SubmitOptions) -> None:
    if ":" not in options.handler or not all(options.handler.split(":", 1)):
        raise BadInput(f"--handler {options.handler!r}: must be MODULE:FUNC")
    if options.parts_per_worker < 1:
        raise BadInput(f"--parts-per-worker {options.parts_per_worker}: must be at least 1")
    if options.max_parallelism < 1:
        raise BadInput(f"--max-parallelism {options.max_parallelism}: must be at least 1")
    if not 5 <= options.topology.max_delivery_attempts <= 100:
        raise BadInput("--max-delivery-attempts: must be between 5 and 100 (Pub/Sub's range)")
    if not 10 <= options.topology.ack_deadline_s <= 600:
        raise BadInput("--ack-deadline: must be between 10 and 600 seconds (Pub/Sub's range)")
