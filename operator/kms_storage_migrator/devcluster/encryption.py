"""The apiserver's EncryptionConfiguration for each encryption mode of the dev cluster (pure)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

import yaml

PROVIDER_NAME = "local-kms"
# What the apiserver accepts in a provider name: it becomes part of every stored value's prefix
# (k8s:enc:kms:v2:<name>:), so no colon.
_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def validate_kms_endpoint(endpoint: str) -> str:
    """A ``unix:///absolute/path`` endpoint, or a ValueError saying what to pass instead."""
    if not endpoint.startswith("unix:///"):
        raise ValueError(
            f"--kms-endpoint {endpoint!r}: kube-apiserver reaches KMS v2 plugins over a unix socket only; "
            "pass unix:///absolute/path/to/plugin.sock"
        )
    return endpoint


def validate_provider_name(name: str) -> str:
    if not _PROVIDER_NAME.fullmatch(name):
        raise ValueError(
            f"--kms-provider-name {name!r}: use letters, digits, '.', '_' or '-' (no ':'), at most 63 "
            "characters; it becomes part of every stored value's prefix"
        )
    return name


class EncryptionMode(StrEnum):
    KMS = "kms"  # writes through KMS v2; identity kept so legacy plaintext still reads
    NONE = "none"  # identity only: stands for a legacy cluster that stored plaintext


def encryption_configuration(
    mode: EncryptionMode, kms_endpoint: str, timeout: str = "3s", provider_name: str = PROVIDER_NAME
) -> str:
    """The EncryptionConfiguration YAML covering every resource (``*.*``) for ``mode``."""
    providers: list[dict[str, Any]]
    if mode is EncryptionMode.KMS:
        providers = [
            {
                "kms": {
                    # apiVersion must be explicit: a kms provider without it is KMS v1.
                    "apiVersion": "v2",
                    "name": provider_name,
                    "endpoint": kms_endpoint,
                    "timeout": timeout,
                }
            },
            {"identity": {}},
        ]
    else:
        providers = [{"identity": {}}]
    document = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [{"resources": ["*.*"], "providers": providers}],
    }
    return yaml.safe_dump(document, sort_keys=False)
