"""Learn how the apiserver writes *now*: write a canary ConfigMap, read its bytes from etcd, delete it.

The canary is ``ConfigMap <namespace>/kms-storage-migrator-canary-<random>`` (``default`` unless
told otherwise), holding no data of value. It reveals the format of ConfigMaps; clusters whose
EncryptionConfiguration treats resources differently should pass ``--expect-key-id`` instead.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kube import ApiError, KubeApi, TransportError, load_credentials
from kms_storage_migrator.storage.etcd import EtcdReader
from kms_storage_migrator.storage.formats import FormatKind, classify
from kms_storage_migrator.storage.keys import DEFAULT_ROOT, EtcdRoot
from kms_storage_migrator.storage.write_format import WriteFormat

__all__ = ["CANARY_PREFIX", "learn_from_canary"]

CANARY_PREFIX = "kms-storage-migrator-canary-"
CANARY_LABELS = {
    "app.kubernetes.io/managed-by": "kms-storage-migrator",
    "kms-storage-migrator/canary": "true",
}


def _api_error(action: str, error: Exception) -> UserError:
    if isinstance(error, ApiError):
        return UserError(
            f"cannot {action}: HTTP {error.status} {error.reason}; check the kubeconfig's permissions"
        )
    return UserError(f"cannot {action}: {error} (is the apiserver reachable?)")


async def learn_from_canary(
    kubeconfig: Path, reader: EtcdReader, *, namespace: str = "default", root: EtcdRoot = DEFAULT_ROOT
) -> WriteFormat:
    # The loaders are blocking (files, maybe an exec plugin): off the event loop.
    credentials = await asyncio.to_thread(load_credentials, kubeconfig)
    name = CANARY_PREFIX + secrets.token_hex(4)
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": CANARY_LABELS},
        "data": {"purpose": "kms-storage-migrator reads this object's stored format, then deletes it"},
    }
    where = f"ConfigMap {namespace}/{name}"
    collection = f"/api/v1/namespaces/{namespace}/configmaps"
    key = f"{root.location('configmaps')}{namespace}/{name}"
    async with KubeApi(credentials, request_timeout=30) as api:
        try:
            await api.request("POST", collection, body=body)
        except (ApiError, TransportError) as error:
            raise _api_error(f"create the canary {where}", error) from None
        try:
            entry = await reader.get(key)
        finally:
            try:
                await api.request("DELETE", f"{collection}/{name}")
            except (ApiError, TransportError) as error:
                raise _api_error(f"delete the canary {where} (delete it by hand)", error) from None
    if entry is None:
        raise UserError(
            f"the canary {where} is not in etcd at {key}: "
            "is this the apiserver's etcd, and is --etcd-prefix right?"
        )
    stored = classify(entry.value)
    if stored.kind is FormatKind.UNKNOWN:
        raise UserError(f"the canary {where} is stored in an unknown format ({stored.reason})")
    return WriteFormat(stored, f"canary {where}")
