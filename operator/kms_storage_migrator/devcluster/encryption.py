"""The apiserver's EncryptionConfiguration for each encryption mode of the dev cluster (pure)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import yaml

PROVIDER_NAME = "local-kms"


class EncryptionMode(StrEnum):
    KMS = "kms"  # writes through KMS v2; identity kept so legacy plaintext still reads
    NONE = "none"  # identity only: stands for a legacy cluster that stored plaintext


def encryption_configuration(mode: EncryptionMode, kms_endpoint: str, timeout: str = "3s") -> str:
    """The EncryptionConfiguration YAML covering every resource (``*.*``) for ``mode``."""
    providers: list[dict[str, Any]]
    if mode is EncryptionMode.KMS:
        providers = [
            {
                "kms": {
                    # apiVersion must be explicit: a kms provider without it is KMS v1.
                    "apiVersion": "v2",
                    "name": PROVIDER_NAME,
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
