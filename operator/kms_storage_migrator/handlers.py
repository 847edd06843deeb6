"""kopf handlers only: each is a few lines that delegate to migration/service.py.

They live in a registry of their own (not kopf's global one) so importing this module has no
side effects and `run` decides exactly what the operator does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import kopf

from kms_storage_migrator.kube import ApiCredentials, renewal_time
from kms_storage_migrator.migration.progress import TERMINAL_PHASES
from kms_storage_migrator.migration.service import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorContext,
    RunAgainLater,
    run_migration,
)
from kms_storage_migrator.serving import Insights, discovery_lists, serve_until_stopped
from kms_storage_migrator.storage.etcd import EtcdReader

registry = kopf.OperatorRegistry()

# kopf's own bookkeeping goes to annotations under our prefix: our status has a strict schema.
ANNOTATION_PREFIX = GROUP
FINALIZER = f"{GROUP}/finalizer"
# Deleting a running migration: kopf flags the daemon (checked per object), then cancels it.
STOP_GRACE_SECONDS = 5.0
# How long kopf waits before running a migration again whose final status could not be stored.
FINAL_STATUS_RETRY_DELAY = 30.0


class OperatorMemo:
    """Shared by every handler (kopf shallow-copies memo per object; this object stays shared)."""

    def __init__(self, credentials: ApiCredentials, context: OperatorContext) -> None:
        self.credentials = credentials
        self.context = context
        # The connections opened at startup, closed together at cleanup (or at once when a
        # startup attempt fails, so kopf's retry of it leaks nothing).
        self.connections: contextlib.AsyncExitStack | None = None


@kopf.on.startup(registry=registry)  # type: ignore[untyped-decorator]
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    """Persistence in annotations, quiet kopf events, and connections opened once."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    # Our one resource is known up front: no CRD watching, so RBAC needs no watch on CRDs.
    settings.scanning.disabled = True
    context: OperatorContext = memo.context
    context.kopf_started = time.monotonic()  # every daemon is about to be spawned at once
    async with contextlib.AsyncExitStack() as connections:
        await connections.enter_async_context(context.api)
        if context.etcd_config is not None:
            context.etcd = await connections.enter_async_context(EtcdReader(context.etcd_config))
        memo.connections = connections.pop_all()  # opened: from now on, cleanup closes them


@kopf.on.cleanup(registry=registry)  # type: ignore[untyped-decorator]
async def close_connections(memo: Any, **_: Any) -> None:
    connections: contextlib.AsyncExitStack | None = memo.connections
    memo.connections = None
    memo.context.etcd = None
    if connections is not None:
        await connections.aclose()


@kopf.on.login(registry=registry)  # type: ignore[untyped-decorator]
def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    """kopf talks to the apiserver with the same credentials as the engine."""
    credentials: ApiCredentials = memo.credentials
    return connection_info(credentials, time.time())


def connection_info(credentials: ApiCredentials, now: float) -> kopf.ConnectionInfo:
    """kopf's view of our credentials, with a fresh token and when kopf must log in again.

    Blocking (the token source may run an exec plugin): kopf runs the sync login handler in a
    thread. The expiration makes kopf re-authenticate before the token dies, not after a 401.
    """
    token = credentials.fetch_token()
    renew_at = renewal_time(token.expires_at, now) if token else None
    return kopf.ConnectionInfo(
        server=credentials.server,
        ca_path=credentials.ca_path,
        insecure=credentials.insecure,
        certificate_path=credentials.certificate_path,
        private_key_path=credentials.private_key_path,
        scheme="Bearer" if token else None,
        token=token.value if token else None,
        expiration=datetime.fromtimestamp(renew_at, UTC) if renew_at is not None else None,
    )


def _unfinished(status: Any, **_: Any) -> bool:
    """A finished migration is never picked up again."""
    return (status or {}).get("phase") not in {phase.value for phase in TERMINAL_PHASES}


@kopf.daemon(  # type: ignore[untyped-decorator]
    GROUP, VERSION, PLURAL, registry=registry, when=_unfinished, cancellation_timeout=STOP_GRACE_SECONDS
)
async def migrate(
    *,
    name: str,
    uid: str,
    spec: Any,
    status: Any,
    meta: Any,
    stopped: kopf.DaemonStopped,
    memo: Any,
    **_: Any,
) -> None:
    """Run or resume one StorageMigration; deletion or operator exit sets ``stopped``.

    ``spec`` is kopf's live view of the object, so ``spec.suspend`` is read as it changes.
    """
    try:
        await run_migration(
            memo.context,
            name=name,
            uid=uid,
            spec=dict(spec),
            status=dict(status or {}),
            generation=meta.get("generation"),
            created_at=meta.get("creationTimestamp"),
            should_stop=lambda: bool(stopped),
            is_suspended=lambda: spec.get("suspend") is True,
        )
    except RunAgainLater as error:
        # kopf runs the daemon again; the migration resumes from its last stored checkpoint.
        raise kopf.TemporaryError(str(error), delay=FINAL_STATUS_RETRY_DELAY) from error


async def operate(memo: OperatorMemo, liveness_endpoint: str | None) -> None:
    """Run kopf with these handlers until the operator is told to stop, cluster-wide.

    With --leader-elect this runs only while the Lease is held (leader.py), so one replica works.
    """

    async def run_kopf(insights: Insights, stop: asyncio.Event) -> None:
        await kopf.operator(
            registry=registry,
            clusterwide=True,
            standalone=True,
            memo=memo,
            liveness_endpoint=liveness_endpoint,
            insights=insights,
            stop_flag=stop,
        )

    api = memo.context.api
    await serve_until_stopped(
        run_kopf, lambda: discovery_lists(api, GROUP, VERSION, PLURAL), group=GROUP, plural=PLURAL
    )
