"""login() hands kopf a freshly fetched token and tells kopf when to log in again."""

from __future__ import annotations

from datetime import UTC, datetime

from kms_storage_migrator.handlers import connection_info
from kms_storage_migrator.kube import ApiCredentials, BearerToken, renewal_time


def test_login_fetches_a_fresh_token_and_sets_the_renewal_time_as_expiration() -> None:
    fetched: list[int] = []

    def source() -> BearerToken:
        fetched.append(1)
        return BearerToken(f"token-{len(fetched)}", expires_at=1_000_012.0)

    credentials = ApiCredentials(server="https://api:6443", token="stale", token_source=source)

    info = connection_info(credentials, now=1_000_000.0)

    assert info.token == "token-1"
    assert info.scheme == "Bearer"
    expected = renewal_time(1_000_012.0, 1_000_000.0)
    assert expected is not None
    assert expected < 1_000_012.0
    assert info.expiration == datetime.fromtimestamp(expected, UTC)
    assert connection_info(credentials, now=1_000_001.0).token == "token-2"


def test_login_without_expiry_sets_no_expiration() -> None:
    credentials = ApiCredentials(server="https://api:6443", token="fixed")

    info = connection_info(credentials, now=0.0)

    assert info.token == "fixed"
    assert info.expiration is None


def test_login_without_a_token_sends_no_bearer_scheme() -> None:
    credentials = ApiCredentials(server="https://api:6443", certificate_path="/c", private_key_path="/k")

    info = connection_info(credentials, now=0.0)

    assert info.token is None
    assert info.scheme is None
    assert info.certificate_path == "/c"
