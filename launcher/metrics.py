"""The launcher's Prometheus metrics, on a registry of its own (tests run several launchers)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.batches = Gauge("batchctl_batches", "Known batches by state", ["state"], registry=self.registry)
        self.parts_done = Counter("batchctl_parts_done", "Parts counted done", registry=self.registry)
        self.parts_dead = Counter("batchctl_parts_dead", "Parts counted dead-lettered", registry=self.registry)
        self.jobs_launched = Counter("batchctl_jobs_launched", "Jobs created", registry=self.registry)
        self.launch_latency = Histogram(
            "batchctl_launch_latency_seconds", "Batch request published to its first Job created",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=self.registry,
        )
        self.reconcile_errors = Counter("batchctl_reconcile_errors", "Failed reconcile passes",
                                        registry=self.registry)
        self.requests_rejected = Counter("batchctl_requests_rejected", "Batch requests refused by admission",
                                         ["rule"], registry=self.registry)
        self.is_leader = Gauge("batchctl_leader", "1 while this replica is the leader", registry=self.registry)
