"""Prometheus metrics of the operator: outcomes, remaining objects, phase, request latency, retries.

Served by prometheus_client's own HTTP server thread, so scraping never touches kopf's loop.
Labels carry resource names and phases only, never object names (unbounded) or data.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.migration.outcome import Outcome
from kms_storage_migrator.migration.progress import Phase
from kms_storage_migrator.migration.suspension import SUSPENDED

NAMESPACE = "kms_storage_migrator"


class OperatorMetrics:
    """One set of metrics per process; :meth:`for_migration` gives the runner's observer."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.objects = Counter(
            "objects",
            "Objects by final rewrite outcome",
            ["migration", "resource", "outcome"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.remaining = Gauge(
            "objects_remaining",
            "Objects still to rewrite (estimate)",
            ["migration"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.phase = Gauge(
            "migration_phase",
            "1 for the phase a migration is in, 0 for the others",
            ["migration", "phase"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.latency = Histogram(
            "request_duration_seconds",
            "apiserver request latency (lists and rewrites)",
            ["resource", "code"],
            namespace=NAMESPACE,
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.retries = Counter(
            "retries",
            "Rewrite attempts retried after a transient failure",
            ["resource", "reason"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.walk_restarts = Counter(
            "walk_restarts",
            "Times a walk read again: continue token expired (410), list restarted, etcd compacted",
            ["migration", "resource", "cause"],
            namespace=NAMESPACE,
            registry=self.registry,
        )

    def serve(self, port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 (scraped from other pods)
        """Listen now, so a busy port is refused before the operator starts, in one line."""
        try:
            start_http_server(port, addr=address, registry=self.registry)
        except OSError as error:
            raise UserError(
                f"--metrics-port {port}: cannot listen on {address}:{port} ({error.strerror}); "
                "pick a free port, or 0 to serve no metrics"
            ) from None

    def for_migration(self, name: str) -> MigrationMetrics:
        return MigrationMetrics(self, name)


class MigrationMetrics:
    """The runner's observer for one migration (implements runner.MigrationObserver)."""

    def __init__(self, metrics: OperatorMetrics, migration: str) -> None:
        self._metrics = metrics
        self._migration = migration

    def request_done(self, resource: str, code: str, seconds: float) -> None:
        self._metrics.latency.labels(resource, code).observe(seconds)

    def retried(self, resource: str, reason: str) -> None:
        self._metrics.retries.labels(resource, reason).inc()

    def walk_restarted(self, resource: str, cause: str) -> None:
        self._metrics.walk_restarts.labels(self._migration, resource, cause).inc()

    def outcome(self, resource: str, outcome: Outcome) -> None:
        self._metrics.objects.labels(self._migration, resource, outcome.value).inc()

    def status(self, phase: str, remaining: int) -> None:
        self._metrics.remaining.labels(self._migration).set(remaining)
        # Suspended too: a paused migration must not look like a stalled Migrating one to alerts.
        for candidate in (*(p.value for p in Phase), SUSPENDED):
            self._metrics.phase.labels(self._migration, candidate).set(1 if candidate == phase else 0)
