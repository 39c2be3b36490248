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
        self.budget = Gauge("batchctl_worker_budget", "BATCHCTL_MAX_WORKERS (0: no budget)",
                            registry=self.registry)
        self.workers_allocated = Gauge("batchctl_workers_allocated",
                                       "Sum of spec.parallelism over unfinished Jobs, under the budget",
                                       registry=self.registry)
        self.queued = Gauge("batchctl_batches_queued", "Batches waiting for a share of the budget",
                            registry=self.registry)
        self.queue_wait = Histogram(
            "batchctl_queue_wait_seconds", "Time a batch spent queued before it got workers",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600), registry=self.registry,
        )
        self.jobs_per_batch = Histogram(
            "batchctl_batch_jobs", "Jobs a batch needed, observed when it ends (1 unless something failed)",
            buckets=(1, 2, 3, 4, 6, 10), registry=self.registry,
        )
        self.pods_per_batch = Histogram(
            "batchctl_batch_pods", "Pods a batch's Jobs ran, observed when it ends",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500), registry=self.registry,
        )
        self.is_leader = Gauge("batchctl_leader", "1 while this replica is the leader", registry=self.registry)
