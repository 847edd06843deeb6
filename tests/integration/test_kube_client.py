"""kube.py against the real apiserver: /metrics as text, token refresh, no last-applied data.

References the code under test does not produce: the apiserver's own answer to "who am I"
(SelfSubjectReview), the exec plugin's count of its own runs, and kubectl's view of what is
stored.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.kube import (
    FIELD_MANAGER,
    LAST_APPLIED_ANNOTATION,
    MERGE_PATCH,
    ApiCredentials,
    ApiError,
    KubeApi,
    PatchAnswer,
    ResponseTooLarge,
    load_credentials,
)

pytestmark = pytest.mark.integration

NAMESPACE = "kube-client-test"
SELF_SUBJECT_REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"

# An exec credential plugin: counts its runs in argv[1], hands out the token in file
# argv[2]/<run> (or the last one there is), valid for TOKEN_LIFETIME seconds when set.
PLUGIN = """
import json, os, pathlib, sys, time
counter, tokens = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
runs = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(runs))
available = sorted(int(p.name) for p in tokens.iterdir())
token = (tokens / str(max(n for n in available if n <= runs))).read_text().strip()
status = {"token": token}
if os.environ.get("TOKEN_LIFETIME"):
    expiry = time.gmtime(time.time() + float(os.environ["TOKEN_LIFETIME"]))
    status["expirationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", expiry)
credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": status}
print(json.dumps(credential))
"""


@pytest.fixture(scope="module")
def namespace(dev_cluster: DevCluster) -> Iterator[str]:
    dev_cluster.kubectl("create", "namespace", NAMESPACE)
    for account in ("reader-one", "reader-two"):
        dev_cluster.kubectl("-n", NAMESPACE, "create", "serviceaccount", account)
    yield NAMESPACE
    # The shared cluster runs no namespace controller, so deleting the namespace leaves what it
    # holds in place: the applied Secret would make every later preflight on it warn.
    dev_cluster.kubectl("-n", NAMESPACE, "delete", "secrets", "--all", "--wait=true")
    dev_cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false")


def _token(cluster: DevCluster, account: str) -> str:
    return cluster.kubectl("-n", NAMESPACE, "create", "token", account, "--duration=10m").strip()


def _admin(cluster: DevCluster) -> ApiCredentials:
    return load_credentials(cluster.kubeconfig)


class ExecPlugin:
    """A kubeconfig for the dev cluster whose user is PLUGIN, handing out ``tokens`` in turn."""

    def __init__(
        self, cluster: DevCluster, directory: Path, tokens: list[str], lifetime: float | None
    ) -> None:
        self.directory = directory
        (directory / "tokens").mkdir()
        for run, token in enumerate(tokens, start=1):
            (directory / "tokens" / str(run)).write_text(token)
        (directory / "plugin.py").write_text(PLUGIN)
        admin = yaml.safe_load(cluster.kubeconfig.read_text())
        exec_config: dict[str, Any] = {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(directory / "plugin.py"), str(directory / "runs"), str(directory / "tokens")],
            "interactiveMode": "Never",
        }
        if lifetime is not None:
            exec_config["env"] = [{"name": "TOKEN_LIFETIME", "value": str(lifetime)}]
        self.kubeconfig = directory / "kubeconfig"
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": admin["clusters"],
                    "users": [{"name": "exec-user", "user": {"exec": exec_config}}],
                    "contexts": [
                        {
                            "name": "exec",
                            "context": {"cluster": admin["clusters"][0]["name"], "user": "exec-user"},
                        }
                    ],
                    "current-context": "exec",
                }
            )
        )

    @property
    def runs(self) -> int:
        return int((self.directory / "runs").read_text())


async def _who_am_i(api: KubeApi) -> str:
    """The user the apiserver authenticated this request as."""
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    answer = (await api.request("POST", SELF_SUBJECT_REVIEW, body=review)).body
    return str(answer["status"]["userInfo"]["username"])


async def test_metrics_are_read_as_text(dev_cluster: DevCluster) -> None:
    async with KubeApi(_admin(dev_cluster)) as api:
        text = await api.get_text("/metrics")
        assert "# TYPE apiserver_request_total counter" in text
        assert 'apiserver_request_total{code="200"' in text
        with pytest.raises(ResponseTooLarge):
            await api.get_text("/metrics", max_bytes=10_000)
        # Still usable after refusing a body.
        assert "apiserver_request_total" in await api.get_text("/metrics")


async def test_metrics_without_permission_is_a_403(dev_cluster: DevCluster, namespace: str) -> None:
    admin = _admin(dev_cluster)
    reader = ApiCredentials(
        server=admin.server, ca_path=admin.ca_path, token=_token(dev_cluster, "reader-one")
    )
    async with KubeApi(reader) as api:
        with pytest.raises(ApiError) as raised:
            await api.get_text("/metrics")
    assert raised.value.status == 403
    assert raised.value.reason == "Forbidden"


async def test_a_rejected_exec_token_is_replaced_after_the_401(
    dev_cluster: DevCluster, namespace: str, tmp_path: Path
) -> None:
    plugin = ExecPlugin(dev_cluster, tmp_path, ["not-a-valid-token", _token(dev_cluster, "reader-one")], None)
    credentials = load_credentials(plugin.kubeconfig)
    async with KubeApi(credentials) as api:
        with pytest.raises(ApiError) as raised:
            await _who_am_i(api)
        assert raised.value.status == 401
        assert plugin.runs == 1
        # The retry the engine would make: the plugin runs again and the apiserver accepts it.
        assert await _who_am_i(api) == f"system:serviceaccount:{NAMESPACE}:reader-one"
        assert await _who_am_i(api) == f"system:serviceaccount:{NAMESPACE}:reader-one"
    assert plugin.runs == 2


async def test_an_exec_token_is_replaced_before_it_expires(
    dev_cluster: DevCluster, namespace: str, tmp_path: Path
) -> None:
    tokens = [_token(dev_cluster, "reader-one"), _token(dev_cluster, "reader-two")]
    plugin = ExecPlugin(dev_cluster, tmp_path, tokens, lifetime=4)
    credentials = load_credentials(plugin.kubeconfig)
    assert credentials.token_expires_at is not None
    async with KubeApi(credentials) as api:
        assert await _who_am_i(api) == f"system:serviceaccount:{NAMESPACE}:reader-one"
        assert plugin.runs == 1
        await asyncio.sleep(max(0.0, credentials.token_expires_at - time.time()))  # past its expiry
        # No 401 first: the plugin ran again before this request, which goes out as reader-two.
        assert await _who_am_i(api) == f"system:serviceaccount:{NAMESPACE}:reader-two"
        assert plugin.runs == 2


def _applied_secret(cluster: DevCluster, name: str, marker: str) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": {"team": "payments"}},
        "data": {"password": base64.b64encode(f"{marker}-data".encode()).decode()},
        "stringData": {"token": f"{marker}-string"},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _stored(cluster: DevCluster, name: str) -> dict[str, Any]:
    secret: dict[str, Any] = json.loads(cluster.kubectl("-n", NAMESPACE, "get", "secret", name, "-o", "json"))
    return secret


def _leaks(document: object, marker: str) -> list[str]:
    text = json.dumps(document)
    forms = [f"{marker}-data", f"{marker}-string"]
    forms += [base64.b64encode(form.encode()).decode() for form in forms]
    return [form for form in forms if form in text]


async def test_no_answer_carries_kubectls_copy_of_an_applied_secret(
    dev_cluster: DevCluster, namespace: str
) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    name = "applied-secret"
    _applied_secret(dev_cluster, name, marker)
    before = _stored(dev_cluster, name)
    # The reference: the apiserver does hold (and hand out) the data in the annotation.
    assert _leaks(before["metadata"]["annotations"][LAST_APPLIED_ANNOTATION], marker)

    path = f"/api/v1/namespaces/{NAMESPACE}/secrets"
    async with KubeApi(_admin(dev_cluster)) as api:
        page = await api.list_metadata(path, limit=500, continue_token=None)
        everywhere = await api.list_metadata("/api/v1/secrets", limit=500, continue_token=None)
        listed = next(item for item in page["items"] if item["metadata"]["name"] == name)
        # Exactly what the engine sends: a no-op merge patch with preconditions; the metadata
        # answer (the engine's default, a Table, carries no metadata at all).
        body = {
            "metadata": {
                "uid": listed["metadata"]["uid"],
                "resourceVersion": listed["metadata"]["resourceVersion"],
            }
        }
        patched = await api.patch(
            f"{path}/{name}",
            body,
            content_type=MERGE_PATCH,
            params={"fieldManager": FIELD_MANAGER},
            answer=PatchAnswer.METADATA,
        )
        dropped = dict(api.last_applied_dropped)

    for answer in (page, everywhere, patched):
        assert _leaks(answer, marker) == []
    # (managedFields still name the field, f:kubectl.kubernetes.io/last-applied-configuration: {},
    # without its value.)
    for item in [*page["items"], *everywhere["items"], patched]:
        assert LAST_APPLIED_ANNOTATION not in (item["metadata"].get("annotations") or {})
    # Only that annotation went: the others are still there.
    assert listed["metadata"]["annotations"] == {"team": "payments"}
    assert patched["metadata"]["annotations"] == {"team": "payments"}
    assert patched["kind"] == "PartialObjectMetadata"
    assert dropped[path] >= 1
    assert dropped[f"{path}/{name}"] == 1

    # Nothing stored changed except what any write changes (resourceVersion, managedFields).
    after = _stored(dev_cluster, name)
    assert after["metadata"]["annotations"] == before["metadata"]["annotations"]
    assert after["data"] == before["data"]
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
