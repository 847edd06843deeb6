"""KubeApi.patch: what it asks for on the wire and what it keeps of the answer.

The local server echoes what it was sent; it stands in for no apiserver behaviour. What the
real apiserver answers to a Table patch (its resourceVersion, Status errors) is checked in
tests/integration/test_faults_secrets_audit.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from local_server import serving

from kms_storage_migrator.kube import (
    LAST_APPLIED_ANNOTATION,
    METADATA_OBJECT,
    TABLE_OBJECT,
    ApiCredentials,
    ApiError,
    KubeApi,
    PatchAnswer,
    table_answer,
)

APPLIED = '{"data":{"password":"c2VjcmV0"}}'


def _metadata(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": "team", "annotations": {LAST_APPLIED_ANNOTATION: APPLIED, "k": "v"}}


async def _patch(request: web.Request) -> web.Response:
    seen = {"accept": request.headers["Accept"], "query": dict(request.query)}
    if request.headers["Accept"] == TABLE_OBJECT:
        cells = {"cells": [request.match_info["name"], "Opaque", 1, "5s"], "object": None}
        table = {"kind": "Table", "metadata": {"resourceVersion": "218"}, "rows": [cells], "seen": seen}
        return web.json_response(table)
    metadata = {**_metadata(request.match_info["name"]), "resourceVersion": "218"}
    return web.json_response({"kind": "PartialObjectMetadata", "metadata": metadata, "seen": seen})


async def _conflict(request: web.Request) -> web.Response:
    status = {"kind": "Status", "reason": "Conflict", "message": 'secrets "db" was modified', "code": 409}
    return web.json_response(status, status=409)


async def _list(request: web.Request) -> web.Response:
    items = [{"metadata": _metadata("db")}, {"metadata": _metadata("api")}, {"metadata": {"name": "plain"}}]
    return web.json_response({"kind": "PartialObjectMetadataList", "metadata": {}, "items": items})


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_patch("/api/v1/namespaces/team/secrets/{name}", _patch)
    app.router.add_patch("/api/v1/namespaces/team/configmaps/{name}", _patch)
    app.router.add_patch("/conflict", _conflict)
    app.router.add_get("/api/v1/secrets", _list)
    app.router.add_get("/api/v1/configmaps", _list)
    async with serving(app) as url:
        yield url


async def test_by_default_a_patch_asks_for_a_table_without_the_object(server: str) -> None:
    async with KubeApi(ApiCredentials(server=server)) as api:
        answer = await api.patch(
            "/api/v1/namespaces/team/secrets/db", {"metadata": {}}, params={"fieldManager": "m"}
        )
    # Only the resourceVersion is kept: not the cells, not what the server echoed.
    assert answer == {"kind": "Table", "metadata": {"resourceVersion": "218"}}


async def test_the_table_request_carries_the_accept_and_include_object_none(server: str) -> None:
    async with KubeApi(ApiCredentials(server=server)) as api:
        raw = await api.request(
            "PATCH",
            "/api/v1/namespaces/team/secrets/db",
            body={},
            accept=TABLE_OBJECT,
            params={"includeObject": "None"},
        )
        answer = await api.patch("/api/v1/namespaces/team/secrets/db", {}, params={"fieldManager": "m"})
    assert raw.body["seen"] == {"accept": TABLE_OBJECT, "query": {"includeObject": "None"}}
    assert answer["metadata"]["resourceVersion"] == "218"


async def test_a_metadata_answer_is_offered_without_the_last_applied_annotation(server: str) -> None:
    async with KubeApi(ApiCredentials(server=server)) as api:
        answer = await api.patch(
            "/api/v1/namespaces/team/secrets/db",
            {},
            params={"fieldManager": "m"},
            answer=PatchAnswer.METADATA,
        )
        seen = set(api.secrets_with_last_applied)
    assert answer["seen"] == {"accept": METADATA_OBJECT, "query": {"fieldManager": "m"}}
    assert answer["metadata"]["annotations"] == {"k": "v"}
    assert APPLIED not in json.dumps(answer)
    assert seen == {"team/db"}


async def test_errors_are_raised_as_before_whatever_the_answer(server: str) -> None:
    async with KubeApi(ApiCredentials(server=server)) as api:
        for answer in PatchAnswer:
            with pytest.raises(ApiError) as raised:
                await api.patch("/conflict", {}, answer=answer)
            assert (raised.value.status, raised.value.reason) == (409, "Conflict")


async def test_secrets_that_carried_the_annotation_are_named_once_others_are_not(server: str) -> None:
    async with KubeApi(ApiCredentials(server=server)) as api:
        for _ in range(2):  # a list read twice (a 410 restart) names each Secret once
            await api.list_metadata("/api/v1/secrets", limit=10, continue_token=None)
        await api.list_metadata("/api/v1/configmaps", limit=10, continue_token=None)
        named, counted = set(api.secrets_with_last_applied), dict(api.last_applied_dropped)
    assert named == {"team/db", "team/api"}
    assert counted == {"/api/v1/secrets": 4, "/api/v1/configmaps": 2}


@pytest.mark.parametrize(
    ("document", "kept"),
    [
        ({"kind": "Table", "metadata": {"resourceVersion": "9"}, "rows": [{"cells": ["x"]}]}, "9"),
        # Not a Table (a server that ignored the Accept): still only the resourceVersion.
        ({"kind": "Secret", "metadata": {"resourceVersion": "9", "name": "x"}, "data": {"a": "b"}}, "9"),
    ],
)
def test_a_table_answer_keeps_only_the_resource_version(document: dict[str, Any], kept: str) -> None:
    assert table_answer(document) == {"kind": document["kind"], "metadata": {"resourceVersion": kept}}


@pytest.mark.parametrize("document", [{}, {"metadata": "odd"}, {"metadata": {"resourceVersion": ""}}])
def test_a_table_answer_without_a_resource_version_keeps_none(document: dict[str, Any]) -> None:
    assert table_answer(document)["metadata"] == {}
