"""Wrapping what the apiserver sends to Encrypt (a DEK seed) with a KEK: AES-256-GCM.

A wrapped value is ``nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)``. The key id is the
associated data, so a value wrapped under ``kek-1`` does not unwrap when presented as
``kek-2``, even if both ids pointed at the same material.
"""

from __future__ import annotations

import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
KEK_BYTES: Final = 32


class EnvelopeError(Exception):
    """A value could not be wrapped or unwrapped. The message never holds key material or data."""


def wrap(kek: bytes, key_id: str, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` under ``kek`` with a fresh random nonce, bound to ``key_id``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + _cipher(kek, key_id).encrypt(nonce, plaintext, key_id.encode("utf-8"))


def unwrap(kek: bytes, key_id: str, wrapped: bytes) -> bytes:
    """Decrypt what :func:`wrap` returned for the same ``kek`` and ``key_id``."""
    if len(wrapped) < NONCE_BYTES + TAG_BYTES:
        raise EnvelopeError(
            f"ciphertext for key {key_id} is {len(wrapped)} bytes, "
            f"shorter than a nonce and a tag ({NONCE_BYTES + TAG_BYTES}): not made by this plugin"
        )
    nonce, sealed = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]
    try:
        return _cipher(kek, key_id).decrypt(nonce, sealed, key_id.encode("utf-8"))
    except InvalidTag:
        raise EnvelopeError(
            f"ciphertext does not authenticate under key {key_id}: "
            "it was wrapped by another key or key id, or it was altered"
        ) from None


def _cipher(kek: bytes, key_id: str) -> AESGCM:
    if len(kek) != KEK_BYTES:
        raise EnvelopeError(f"key {key_id} is {len(kek)} bytes; AES-256-GCM needs {KEK_BYTES}")
    return AESGCM(kek)
