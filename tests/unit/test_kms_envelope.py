"""AES-256-GCM wrapping of what the apiserver sends to Encrypt, bound to the key id."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kms_storage_migrator.kms.envelope import NONCE_BYTES, TAG_BYTES, EnvelopeError, unwrap, wrap

KEK = bytes(range(32))
OTHER_KEK = bytes(range(1, 33))
SEED = b"a 32-byte DEK seed from the api.."


def test_roundtrip() -> None:
    wrapped = wrap(KEK, "kek-1", SEED)
    assert len(wrapped) == NONCE_BYTES + len(SEED) + TAG_BYTES
    assert SEED not in wrapped
    assert unwrap(KEK, "kek-1", wrapped) == SEED


@given(plaintext=st.binary(max_size=512), key_id=st.text(min_size=1, max_size=40))
def test_roundtrip_of_any_data_and_key_id(plaintext: bytes, key_id: str) -> None:
    assert unwrap(KEK, key_id, wrap(KEK, key_id, plaintext)) == plaintext


def test_each_wrap_uses_a_fresh_nonce() -> None:
    first, second = wrap(KEK, "kek-1", SEED), wrap(KEK, "kek-1", SEED)
    assert first[:NONCE_BYTES] != second[:NONCE_BYTES]
    assert first != second


def test_the_key_id_is_bound_as_associated_data() -> None:
    # Same material under another id: the value must not unwrap, or a relabelled key would pass.
    wrapped = wrap(KEK, "kek-1", SEED)
    with pytest.raises(EnvelopeError, match="does not authenticate under key kek-2"):
        unwrap(KEK, "kek-2", wrapped)


def test_wrong_key_material_fails() -> None:
    wrapped = wrap(KEK, "kek-1", SEED)
    with pytest.raises(EnvelopeError, match="does not authenticate under key kek-1"):
        unwrap(OTHER_KEK, "kek-1", wrapped)


@pytest.mark.parametrize(
    "position",
    [0, NONCE_BYTES - 1, NONCE_BYTES, NONCE_BYTES + len(SEED) - 1, -TAG_BYTES, -1],
    ids=["nonce-first", "nonce-last", "ciphertext-first", "ciphertext-last", "tag-first", "tag-last"],
)
def test_any_flipped_bit_is_detected(position: int) -> None:
    wrapped = bytearray(wrap(KEK, "kek-1", SEED))
    wrapped[position] ^= 0x01
    with pytest.raises(EnvelopeError, match="altered"):
        unwrap(KEK, "kek-1", bytes(wrapped))


def test_truncated_or_extended_values_fail() -> None:
    wrapped = wrap(KEK, "kek-1", SEED)
    with pytest.raises(EnvelopeError):
        unwrap(KEK, "kek-1", wrapped[:-1])
    with pytest.raises(EnvelopeError):
        unwrap(KEK, "kek-1", wrapped + b"\x00")


def test_too_short_a_value_says_so() -> None:
    with pytest.raises(EnvelopeError, match="is 27 bytes, shorter than a nonce and a tag"):
        unwrap(KEK, "kek-1", b"\x00" * 27)


def test_a_kek_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="key kek-1 is 16 bytes; AES-256-GCM needs 32"):
        wrap(KEK[:16], "kek-1", SEED)


def test_errors_hold_no_material_or_data() -> None:
    wrapped = wrap(KEK, "kek-1", SEED)
    with pytest.raises(EnvelopeError) as caught:
        unwrap(OTHER_KEK, "kek-1", wrapped)
    text = str(caught.value)
    for secret in (KEK.hex(), OTHER_KEK.hex(), SEED.decode(), wrapped.hex(), repr(KEK)):
        assert secret not in text
