"""The operator's startup handler: connections opened together, and closed together on failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf
import pytest

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.handlers import OperatorMemo, close_connections, configure
from kms_storage_migrator.kube import ApiCredentials
from kms_storage_migrator.migration.plan import RunDefaults
from kms_storage_migrator.migration.service import OperatorContext
from kms_storage_migrator.storage.etcd import EtcdConfig


class CountingApi:
    """Stands in for KubeApi's session: counts how often it is opened and closed."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0

    async def __aenter__(self) -> CountingApi:
        self.opened += 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.closed += 1


def _memo(api: CountingApi, etcd_config: EtcdConfig | None) -> OperatorMemo:
    context = OperatorContext(api=api, defaults=RunDefaults(), etcd_config=etcd_config)  # type: ignore[arg-type]
    return OperatorMemo(ApiCredentials("https://127.0.0.1:1"), context)


async def test_a_failed_startup_closes_the_session_it_opened_so_retries_leak_nothing(tmp_path: Path) -> None:
    api = CountingApi()
    # https without a CA bundle: the etcd reader refuses to start, after the API session opened.
    memo = _memo(api, EtcdConfig(("https://127.0.0.1:2379",)))
    for _ in range(3):  # kopf retries a failing startup handler
        with pytest.raises(UserError, match="give --etcd-cacert"):
            await configure(settings=kopf.OperatorSettings(), memo=memo)
    assert api.opened == 3
    assert api.closed == 3


async def test_cleanup_closes_what_startup_opened() -> None:
    api = CountingApi()
    memo: Any = _memo(api, None)
    await configure(settings=kopf.OperatorSettings(), memo=memo)
    assert (api.opened, api.closed) == (1, 0)
    await close_connections(memo=memo)
    assert (api.opened, api.closed) == (1, 1)
