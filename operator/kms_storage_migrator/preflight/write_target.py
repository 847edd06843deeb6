"""Is there anything to migrate to? Judged from how the apiserver writes now. Pure.

Two witnesses, the stronger first:

- with etcd access, our own StorageMigration as etcd holds it (its status was just written, so it
  shows how the apiserver writes a custom resource *now*);
- the apiserver's /metrics: a KMS v2 provider that reported a key (``judge_encryption``).

An encryption configuration may encrypt only some resources (often just Secrets), so a
plaintext StorageMigration alone does not prove that nothing is encrypted: only plaintext with
no KMS v2 provider in /metrics fails. Without either witness the check cannot tell and warns.
"""

from __future__ import annotations

from kms_storage_migrator.preflight.findings import ENCRYPTION_CHECK, METRICS_UNREADABLE, Finding, Verdict
from kms_storage_migrator.storage.formats import FormatKind
from kms_storage_migrator.storage.write_format import WriteFormat

WRITE_TARGET_CHECK = "write format"
# Short on purpose: status.message keeps 300 characters, and this advice must fit in it.
CONFIGURE_KMS = (
    "put a kms v2 provider first in each apiserver's --encryption-provider-config, restart them, "
    "create a new StorageMigration"
)


def judge_write_target(reference: WriteFormat | None, metrics: Finding | None) -> Finding:
    """``reference``: our CR's stored format (None without etcd); ``metrics``: judge_encryption's."""
    kms_in_metrics = metrics is not None and metrics.verdict is Verdict.OK
    if reference is not None:
        label = reference.label
        if reference.expected.kind is FormatKind.KMS_V2:
            return Finding(WRITE_TARGET_CHECK, Verdict.OK, f"the apiserver writes with {label}")
        if not reference.expected.is_plaintext:
            return Finding(
                WRITE_TARGET_CHECK,
                Verdict.WARN,
                f"the apiserver writes with {label}, not KMS v2: the migration rewrites objects "
                "into that format",
                f"to migrate to KMS v2, {CONFIGURE_KMS}",
            )
        if kms_in_metrics:
            assert metrics is not None
            return Finding(
                WRITE_TARGET_CHECK,
                Verdict.OK,
                "custom resources are written in plaintext, but "
                f"{metrics.detail}: resources the encryption configuration leaves in plaintext "
                "are not counted stale",
            )
        if metrics is None or _unreadable(metrics):
            # An encryption configuration may cover Secrets only: without /metrics, no proof.
            return Finding(
                WRITE_TARGET_CHECK,
                Verdict.WARN,
                "this StorageMigration is stored in plaintext, and /metrics cannot tell whether a "
                "KMS v2 provider encrypts other resources: maybe nothing to migrate to",
                "grant get on the nonResourceURL /metrics (the chart does), or configure KMS v2 first",
            )
        return Finding(
            WRITE_TARGET_CHECK,
            Verdict.FAIL,
            "nothing to migrate to: no KMS v2 provider in /metrics and this StorageMigration is "
            "stored in plaintext",
            CONFIGURE_KMS,
        )
    if metrics is None:
        return Finding(
            WRITE_TARGET_CHECK,
            Verdict.WARN,
            "cannot tell how the apiserver writes: no etcd access and no /metrics answer",
            "grant get on the nonResourceURL /metrics, or give the operator read access to etcd",
        )
    if kms_in_metrics:
        return Finding(WRITE_TARGET_CHECK, Verdict.OK, metrics.detail)
    if _unreadable(metrics):
        # /metrics refused or unreachable: no evidence either way.
        return Finding(WRITE_TARGET_CHECK, Verdict.WARN, metrics.detail, metrics.what_to_do)
    return Finding(
        WRITE_TARGET_CHECK,
        Verdict.FAIL,
        "nothing to migrate to: no KMS v2 provider reports a key in /metrics, so the apiserver "
        "writes without KMS v2",
        CONFIGURE_KMS,
    )


def _unreadable(metrics: Finding) -> bool:
    return metrics.detail.startswith(METRICS_UNREADABLE)


__all__ = ["CONFIGURE_KMS", "ENCRYPTION_CHECK", "WRITE_TARGET_CHECK", "judge_write_target"]
