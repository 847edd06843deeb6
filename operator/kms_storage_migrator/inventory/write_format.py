"""Learn how the apiserver writes *now*: write a canary ConfigMap, read its bytes from etcd, delete it.

The canary is ``ConfigMap <namespace>/kms-storage-migrator-canary-<random>`` (``default`` unless
told otherwise), holding no data of value. It reveals the format of ConfigMaps; clusters whose
EncryptionConfiguration treats resources differently should pass ``--expect-key-id`` instead.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.inventory.expectation import WriteExpectation
from kms_storage_migrator.storage.etcd import EtcdReader
from kms_storage_migrator.storage.formats import FormatKind, classify
from kms_storage_migrator.storage.keys import DEFAULT_ROOT

__all__ = ["CANARY_PREFIX", "learn_write_format"]

CANARY_PREFIX = "kms-storage-migrator-canary-"
CANARY_LABELS = {
    "app.kubernetes.io/managed-by": "kms-storage-migrator",
    "kms-storage-migrator/canary": "true",
}


def _core_api(kubeconfig: Path) -> Any:
    if not kubeconfig.is_file():
        raise UserError(f"--kubeconfig {kubeconfig}: no such file")
    try:
        api_client = kube_config.new_client_from_config(config_file=str(kubeconfig))
    except (kube_config.ConfigException, ValueError, OSError) as error:
        raise UserError(f"--kubeconfig {kubeconfig} is not usable: {error}") from None
    return kube_client.CoreV1Api(api_client)


def _api_error(action: str, error: Exception) -> UserError:
    if isinstance(error, ApiException):
        return UserError(
            f"cannot {action}: HTTP {error.status} {error.reason}; check the kubeconfig's permissions"
        )
    return UserError(f"cannot {action}: {type(error).__name__} (is the apiserver reachable?)")


async def learn_write_format(
    kubeconfig: Path, reader: EtcdReader, *, namespace: str = "default", root: str = DEFAULT_ROOT
) -> WriteExpectation:
    core = _core_api(kubeconfig)
    name = CANARY_PREFIX + secrets.token_hex(4)
    body = kube_client.V1ConfigMap(
        metadata=kube_client.V1ObjectMeta(name=name, labels=CANARY_LABELS),
        data={"purpose": "kms-storage-migrator reads this object's stored format, then deletes it"},
    )
    where = f"ConfigMap {namespace}/{name}"
    try:
        await asyncio.to_thread(core.create_namespaced_config_map, namespace, body, _request_timeout=30)
    except (ApiException, HTTPError) as error:
        raise _api_error(f"create the canary {where}", error) from None
    try:
        entry = await reader.get(f"{root}/configmaps/{namespace}/{name}")
    finally:
        try:
            await asyncio.to_thread(core.delete_namespaced_config_map, name, namespace, _request_timeout=30)
        except (ApiException, HTTPError) as error:
            raise _api_error(f"delete the canary {where} (delete it by hand)", error) from None
    if entry is None:
        raise UserError(
            f"the canary {where} is not in etcd at {root}/configmaps/{namespace}/{name}: "
            "is this the apiserver's etcd, and is --etcd-prefix right?"
        )
    stored = classify(entry.value)
    if stored.kind is FormatKind.UNKNOWN:
        raise UserError(f"the canary {where} is stored in an unknown format ({stored.reason})")
    return WriteExpectation(stored, f"canary {where}")
