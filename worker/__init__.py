"""The worker: pulls a batch's parts, runs the handler on each, and leaves when the batch is drained.

Public surface: ``batchctl.worker.cli`` (``add_arguments``, ``run``) and ``python -m batchctl.worker``.
Everything else is internal:

    config      WorkerConfig from the environment and flags (pure)
    part        a pulled message checked and decoded into a Part (pure)
    handler     MODULE:FUNC import
    drain       when consecutive empty pulls mean "drained" (pure)
    inflight    the parts this worker holds, and the lease extender that keeps them
    settlement  publish the outcome event, then ack or nack
    shutdown    SIGTERM/SIGINT: stop, finish within a budget, or exit at once
    runtime     the pull loop tying these together
    demo        the built-in demo handler
"""
