"""preflight/exposure.py: judging Secrets whose data sits in kubectl's last-applied annotation.

The listing runs against a local HTTP server that serves list pages (it checks paging and what
the client keeps, not apiserver behaviour); the real apiserver's Secrets are listed in
tests/integration/test_faults_secrets_audit.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from local_server import serving

from kms_storage_migrator.inventory.command import selects_secrets
from kms_storage_migrator.kube import LAST_APPLIED_ANNOTATION, ApiCredentials, KubeApi
from kms_storage_migrator.preflight.exposure import (
    advice,
    describe,
    exposed_secrets,
    exposure_unknown,
    full_run_notice,
    judge_exposure,
    seen_by,
)
from kms_storage_migrator.preflight.findings import Verdict

SECRET_VALUE = "c2VjcmV0LXZhbHVl"
APPLIED = '{"apiVersion":"v1","data":{"password":"' + SECRET_VALUE + '"},"kind":"Secret"}'


def test_no_such_secret_is_ok() -> None:
    finding = judge_exposure([])
    assert finding.verdict is Verdict.OK
    assert full_run_notice([]) is None


def test_such_secrets_warn_with_their_count_names_and_the_command() -> None:
    names = [f"team/s{i}" for i in range(7)]
    finding = judge_exposure(names)
    assert finding.verdict is Verdict.WARN
    assert finding.resource == "core/secrets"
    assert finding.detail.startswith("7 Secret(s) carry a copy of their data")
    # The first five by name, then how many more.
    assert "(team/s0, team/s1, team/s2, team/s3, team/s4 and 2 more)" in finding.detail
    assert f"kubectl annotate secret -n team s0 {LAST_APPLIED_ANNOTATION}-" in finding.what_to_do
    assert "--server-side" in finding.what_to_do


def test_a_cluster_scoped_name_still_gives_a_usable_command() -> None:
    assert "kubectl annotate secret -n NAMESPACE lone " in advice(["lone"])


def test_the_full_run_notice_says_what_the_operator_did_and_what_to_do() -> None:
    notice = full_run_notice(["b/x", "a/y"])
    assert notice is not None
    assert notice.startswith(describe(["a/y", "b/x"]))
    assert "dropped it unread" in notice
    assert "what to do: remove the copy, e.g. kubectl annotate secret -n a y " in notice


def test_secrets_that_cannot_be_listed_only_warn_and_name_no_object() -> None:
    finding = exposure_unknown(500, "StorageReadError")
    assert finding.verdict is Verdict.WARN
    assert "HTTP 500 StorageReadError" in finding.detail
    assert finding.resource == "core/secrets"


def test_a_stand_in_client_has_seen_none() -> None:
    assert seen_by(object()) == frozenset()


def _item(namespace: str, name: str, applied: bool) -> dict[str, Any]:
    annotations = {LAST_APPLIED_ANNOTATION: APPLIED} if applied else {"team": "x"}
    return {"metadata": {"namespace": namespace, "name": name, "annotations": annotations}}


PAGES = {
    "": ([_item("a", "applied", True), _item("a", "created", False)], "page-2"),
    "page-2": ([_item("b", "applied", True)], ""),
}


async def _secrets(request: web.Request) -> web.Response:
    items, token = PAGES[request.query.get("continue", "")]
    assert request.query["limit"] == "2"
    page = {"kind": "PartialObjectMetadataList", "metadata": {"continue": token}, "items": items}
    return web.json_response(page)


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/api/v1/secrets", _secrets)
    async with serving(app) as url:
        yield url


async def test_every_page_is_listed_and_only_names_are_kept(server: str) -> None:
    async with KubeApi(ApiCredentials(server=server)) as api:
        api.secrets_with_last_applied.add("gone/deleted-since")  # seen earlier, not listed now
        names = await exposed_secrets(api, page_size=2)
        seen = seen_by(api)
    assert names == ["a/applied", "b/applied"]
    assert "gone/deleted-since" in seen
    assert SECRET_VALUE not in repr(names) + repr(seen)


@pytest.mark.parametrize(
    ("resources", "selected"),
    [
        (None, True),
        ([], True),
        (["secrets"], True),
        (["configmaps", "secrets"], True),
        (["configmaps"], False),
    ],
)
def test_scan_looks_for_them_only_when_it_scans_secrets(resources: list[str] | None, selected: bool) -> None:
    assert selects_secrets(resources) is selected
