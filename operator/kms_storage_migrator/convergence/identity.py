"""apiserver identity Leases -> the live kube-apiservers and the ``apiserver_id_hash`` of each.

Facts from Kubernetes 1.37 (k8s.io/apiserver server/config.go, k8s.io/kubernetes
controlplane/apiserver/server.go), checked on the dev cluster:

- Each kube-apiserver's id is ``apiserver-`` + lower-case unpadded base32 of the first 16 bytes
  of sha256 over its hostname and the string ``kube-apiserver`` (each with a 2-byte length
  prefix). It names the identity Lease in kube-system (label
  ``apiserver.kubernetes.io/identity=kube-apiserver``); the holder is ``<id>_<uuid>``.
- The envelope metrics label that id as ``apiserver_id_hash`` = ``sha256:`` + hex sha256 of
  the id, that is of the Lease *name*, not of its holder.
- The Lease lasts 3600 s and is renewed every 10 s; a clean shutdown deletes it, a crash leaves
  it behind for up to an hour.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from kms_storage_migrator.convergence.keyids import key_id_hash

IDENTITY_LABEL: Final = "apiserver.kubernetes.io/identity"
KUBE_APISERVER: Final = "kube-apiserver"
HOSTNAME_LABEL: Final = "kubernetes.io/hostname"
IDENTITY_NAMESPACE: Final = "kube-system"
# The Lease is renewed every 10 s: six missed renewals mean the process is gone, although its
# Lease stays unexpired for an hour after a crash. A stopped apiserver writes nothing, and one
# that comes back polls its KMS Status before it serves, so it cannot lag.
DEFAULT_STALE_AFTER_SECONDS: Final = 60.0


class IdentityLeaseError(ValueError):
    """An identity Lease lacks a field the gate needs (named in the message)."""


@dataclass(frozen=True)
class ApiserverIdentity:
    """One kube-apiserver as its identity Lease describes it."""

    apiserver_id: str  # the Lease name
    hostname: str | None
    renewed_at: datetime
    lease_duration_seconds: int

    @property
    def id_hash(self) -> str:
        """The ``apiserver_id_hash`` label of this apiserver's metrics."""
        return apiserver_id_hash(self.apiserver_id)

    def is_live(self, now: datetime, stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS) -> bool:
        """Not expired, and renewed recently enough that the process is still running."""
        age = (now - self.renewed_at).total_seconds()
        return age < self.lease_duration_seconds and age < stale_after_seconds


def apiserver_id_hash(apiserver_id: str) -> str:
    """``apiserver_id_hash`` for an apiserver id: hashed exactly like a key id."""
    return key_id_hash(apiserver_id)


def expected_apiserver_id(hostname: str, component: str = KUBE_APISERVER) -> str:
    """The id (and identity Lease name) kube-apiserver derives from its host's name.

    Apiservers on one host therefore share one id, one Lease and one ``apiserver_id_hash``.
    """
    data = b"".join(
        len(part).to_bytes(2, "big") + part for part in (hostname.encode("utf-8"), component.encode("utf-8"))
    )
    digest = hashlib.sha256(data).digest()[:16]
    return "apiserver-" + base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def parse_identity_leases(lease_list: Mapping[str, Any]) -> list[ApiserverIdentity]:
    """The kube-apiserver identities in a LeaseList (other components' Leases are skipped)."""
    identities = []
    for item in lease_list.get("items") or []:
        metadata = item.get("metadata") or {}
        labels = metadata.get("labels") or {}
        if labels.get(IDENTITY_LABEL) != KUBE_APISERVER:
            continue
        name = metadata.get("name")
        spec = item.get("spec") or {}
        where = f"identity Lease {IDENTITY_NAMESPACE}/{name}"
        if not name:
            raise IdentityLeaseError(f"an identity Lease in {IDENTITY_NAMESPACE} has no metadata.name")
        renew_time = spec.get("renewTime")
        duration = spec.get("leaseDurationSeconds")
        if not isinstance(renew_time, str) or not isinstance(duration, int):
            # The apiserver's lease GC deletes such Leases as invalid; they name no running apiserver.
            continue
        identities.append(
            ApiserverIdentity(
                apiserver_id=name,
                hostname=labels.get(HOSTNAME_LABEL),
                renewed_at=parse_micro_time(renew_time, where=f"{where}: spec.renewTime"),
                lease_duration_seconds=duration,
            )
        )
    return sorted(identities, key=lambda identity: identity.apiserver_id)


def live_identities(
    identities: Iterable[ApiserverIdentity],
    now: datetime,
    stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS,
) -> list[ApiserverIdentity]:
    """The identities whose apiserver is running now (see :meth:`ApiserverIdentity.is_live`)."""
    return [identity for identity in identities if identity.is_live(now, stale_after_seconds)]


def parse_micro_time(value: str, *, where: str) -> datetime:
    """A Kubernetes MicroTime (``2026-12-01T09:40:00.123456Z``) as an aware UTC datetime."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise IdentityLeaseError(f"{where}: {value!r} is not an RFC 3339 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
