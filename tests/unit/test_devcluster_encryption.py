"""The EncryptionConfiguration the dev cluster hands to kube-apiserver."""

from __future__ import annotations

import yaml

from kms_storage_migrator.devcluster.encryption import EncryptionMode, encryption_configuration


def test_kms_mode_writes_kms_v2_and_keeps_identity_as_read_fallback() -> None:
    document = yaml.safe_load(encryption_configuration(EncryptionMode.KMS, "unix:///tmp/kms.sock"))
    assert document["kind"] == "EncryptionConfiguration"
    (rule,) = document["resources"]
    assert rule["resources"] == ["*.*"]
    kms, identity = rule["providers"]
    assert kms["kms"] == {
        "apiVersion": "v2",
        "name": "local-kms",
        "endpoint": "unix:///tmp/kms.sock",
        "timeout": "3s",
    }
    assert identity == {"identity": {}}


def test_none_mode_stores_plaintext() -> None:
    document = yaml.safe_load(encryption_configuration(EncryptionMode.NONE, "unix:///tmp/kms.sock"))
    assert document["resources"][0]["providers"] == [{"identity": {}}]
