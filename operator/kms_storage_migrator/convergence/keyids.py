"""Key ids and the ``key_id_hash`` label the apiserver's envelope metrics carry instead of them.

kube-apiserver never exports a KMS key id, only ``"sha256:" + hex(sha256(key id))`` (k8s.io/
apiserver, envelope/metrics ``getHash``). Key ids themselves are readable from etcd (the
``keyID`` field of every stored EncryptedObject) and from a plugin's keyring, so a hash is
turned back into a key id by hashing the candidates and comparing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

KEY_ID_HASH_PREFIX: Final = "sha256:"


def key_id_hash(key_id: str) -> str:
    """The ``key_id_hash`` label the apiserver gives ``key_id`` (also ``apiserver_id_hash``'s rule)."""
    return KEY_ID_HASH_PREFIX + hashlib.sha256(key_id.encode("utf-8")).hexdigest()


def match_key_id(hash_label: str, key_ids: Iterable[str]) -> str | None:
    """The key id among ``key_ids`` whose hash is ``hash_label``, or None when none has it."""
    return next((key_id for key_id in key_ids if key_id_hash(key_id) == hash_label), None)


def current_key_id(converged_key_id_hash: str, key_ids_in_etcd: Iterable[str]) -> str | None:
    """Name the current key id: the one of ``key_ids_in_etcd`` the converged apiservers write with.

    None means no stored object is under the converged key yet (nothing has been written since
    the switch, or the selection holds no object written since): then every object found is
    under an older key, which is stale, and a verifier must not pick one of them as current.
    """
    return match_key_id(converged_key_id_hash, set(key_ids_in_etcd))
