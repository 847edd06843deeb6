"""kopf handlers only: each is a few lines that delegate to migration/service.py.

They live in a registry of their own (not kopf's global one) so importing this module has no
side effects and `run` decides exactly what the operator does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import kopf

from kms_storage_migrator.kube import ApiCredentials
from kms_storage_migrator.migration.progress import TERMINAL_PHASES
from kms_storage_migrator.migration.service import GROUP, PLURAL, VERSION, OperatorContext, run_migration
from kms_storage_migrator.storage.etcd import EtcdReader

registry = kopf.OperatorRegistry()

# kopf's own bookkeeping goes to annotations under our prefix: our status has a strict schema.
ANNOTATION_PREFIX = GROUP
FINALIZER = f"{GROUP}/finalizer"
# Deleting a running migration: kopf flags the daemon (checked per object), then cancels it.
STOP_GRACE_SECONDS = 5.0


class OperatorMemo:
    """Shared by every handler (kopf shallow-copies memo per object; this object stays shared)."""

    def __init__(
        self, credentials: ApiCredentials, context: OperatorContext, metrics_port: int | None
    ) -> None:
        self.credentials = credentials
        self.context = context
        self.metrics_port = metrics_port


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
    await context.api.__aenter__()
    if context.etcd_config is not None:
        context.etcd = await EtcdReader(context.etcd_config).__aenter__()
    if context.metrics is not None and memo.metrics_port:
        context.metrics.serve(memo.metrics_port)


@kopf.on.cleanup(registry=registry)  # type: ignore[untyped-decorator]
async def close_connections(memo: Any, **_: Any) -> None:
    context: OperatorContext = memo.context
    if context.etcd is not None:
        await context.etcd.__aexit__(None, None, None)
    await context.api.close()


@kopf.on.login(registry=registry)  # type: ignore[untyped-decorator]
def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    """kopf talks to the apiserver with the same credentials as the engine."""
    credentials: ApiCredentials = memo.credentials
    token = credentials.token
    if credentials.token_path:
        # Sync handler (kopf runs it in a thread): re-read the kubelet-rotated token on re-login.
        token = Path(credentials.token_path).read_text().strip()
    return kopf.ConnectionInfo(
        server=credentials.server,
        ca_path=credentials.ca_path,
        insecure=credentials.insecure,
        certificate_path=credentials.certificate_path,
        private_key_path=credentials.private_key_path,
        scheme="Bearer" if token else None,
        token=token,
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
    """Run or resume one StorageMigration; deletion or operator exit sets ``stopped``."""
    await run_migration(
        memo.context,
        name=name,
        uid=uid,
        spec=dict(spec),
        status=dict(status or {}),
        generation=meta.get("generation"),
        should_stop=lambda: bool(stopped),
    )
