"""Prometheus metrics of the operator: outcomes, remaining objects, phase, request latency, retries,
and what the last read-back verification found (stale objects, objects by KMS key).

Served by prometheus_client's own HTTP server thread, so scraping never touches kopf's loop.
Labels carry resource names and phases only, never object names (unbounded) or data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.migration.outcome import Outcome
from kms_storage_migrator.migration.progress import Phase
from kms_storage_migrator.migration.suspension import SUSPENDED

NAMESPACE = "kms_storage_migrator"


@dataclass(frozen=True)
class VerificationFigures:
    """What a status document's ``verification`` says, as the gauges carry it."""

    stale: int
    # (KMS key id, whether it is the key the migration writes with, objects stored under it)
    keys: tuple[tuple[str, bool, int], ...]


def verification_figures(
    verification: Mapping[str, Any] | None, key_id: str | None
) -> VerificationFigures | None:
    """The figures of a read-back, or None when there was none (no etcd access, not verified yet).

    An Unverified result read nothing from etcd: its zero stale count would be a false all-clear.
    """
    if not verification or verification.get("result") in (None, "Unverified"):
        return None
    keys = []
    for entry in verification.get("keysInUse") or []:
        key = str(entry.get("keyId") or "")
        if key:
            keys.append((key, key == key_id, _count(entry.get("objects"))))
    return VerificationFigures(stale=_count(verification.get("stale")), keys=tuple(sorted(keys)))


def _count(value: Any) -> int:
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError):
        return 0


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

        # The latest verification this process ran stands for the cluster: an older migration's
        # figures are dropped when a newer one verifies, so a fixed StaleFound does not alert
        # forever. Only the leader verifies; a standby serves no such series.
        self.verification_stale = Gauge(
            "verification_stale_objects",
            "Stale objects (not under the current KMS key) found by the last read-back verification",
            ["migration"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.objects_by_key = Gauge(
            "objects_by_key",
            "Objects stored under each KMS key, by the last read-back verification; current: the "
            "key the migration writes with",
            ["migration", "key_id", "current"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self._stale_series: set[tuple[str]] = set()
        self._key_series: set[tuple[str, str, str]] = set()

    def verified(self, migration: str, figures: VerificationFigures) -> None:
        """Replace the verification gauges with ``migration``'s figures.

        Series that stay are set in place, never cleared first: a scrape in between would see
        them absent, and an alert's `for` would start again.
        """
        stale_series = {(migration,)}
        key_series = {(migration, key, "true" if current else "false"): n for key, current, n in figures.keys}
        for (gone,) in self._stale_series - stale_series:
            self.verification_stale.remove(gone)
        for key_labels in self._key_series - key_series.keys():
            self.objects_by_key.remove(*key_labels)
        self.verification_stale.labels(migration).set(figures.stale)
        for key_labels, objects in key_series.items():
            self.objects_by_key.labels(*key_labels).set(objects)
        self._stale_series, self._key_series = stale_series, set(key_series)

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

    def outcome(self, resource: str, outcome: Outcome, count: int = 1) -> None:
        self._metrics.objects.labels(self._migration, resource, outcome.value).inc(count)

    def status(
        self,
        phase: str,
        remaining: int,
        verification: Mapping[str, Any] | None = None,
        key_id: str | None = None,
    ) -> None:
        self._metrics.remaining.labels(self._migration).set(remaining)
        figures = verification_figures(verification, key_id)
        if figures is not None:
            self._metrics.verified(self._migration, figures)
        # Suspended too: a paused migration must not look like a stalled Migrating one to alerts.
        for candidate in (*(p.value for p in Phase), SUSPENDED):
            self._metrics.phase.labels(self._migration, candidate).set(1 if candidate == phase else 0)
