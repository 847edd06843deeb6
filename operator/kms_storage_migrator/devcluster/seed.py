"""Data to migrate: a mix of objects like a real cluster's, created through the real API.

Used by the demo (a legacy cluster holding plaintext) and by tests and benchmarks that need
volume. Objects are spread over namespaces and cover core, apps, RBAC and custom resources,
both namespaced and cluster-scoped, so a migration has every kind of storage to walk.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from kms_storage_migrator.devcluster.cluster import DevCluster

SEED_GROUP = "demo.kms-storage-migrator.io"
NAMESPACED_CRD = f"gadgets.{SEED_GROUP}"
CLUSTER_CRD = f"regions.{SEED_GROUP}"
BATCH = 400  # objects per `kubectl create`: large enough to amortise, small enough to report progress

# Kinds cycled through in each namespace, in proportions loosely like a real cluster's.
NAMESPACED_KINDS = (
    "ConfigMap",
    "Secret",
    "ConfigMap",
    "Secret",
    "Deployment",
    "Role",
    "RoleBinding",
    "Gadget",
)


def crd_manifest(group: str, plural: str, kind: str, scope: str) -> dict[str, Any]:
    """A CustomResourceDefinition with one served, stored version ``v1`` that accepts any content."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


def custom_resource_definitions() -> list[dict[str, Any]]:
    return [
        crd_manifest(SEED_GROUP, "gadgets", "Gadget", "Namespaced"),
        crd_manifest(SEED_GROUP, "regions", "Region", "Cluster"),
    ]


def seed_objects(count: int, namespaces: int) -> Iterator[dict[str, Any]]:
    """``count`` objects (besides their namespaces), spread round-robin over ``namespaces``."""
    for index in range(namespaces):
        yield {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": _namespace(index)}}
    cluster_scoped = max(1, count // 50)
    for index in range(cluster_scoped):
        yield {
            "apiVersion": f"{SEED_GROUP}/v1",
            "kind": "Region",
            "metadata": {"name": f"region-{index}"},
            "spec": {"zone": f"zone-{index % 3}"},
        }
    for index in range(count - cluster_scoped):
        kind = NAMESPACED_KINDS[index % len(NAMESPACED_KINDS)]
        yield _namespaced_object(kind, f"{kind.lower()}-{index}", _namespace(index % namespaces), index)


def _namespace(index: int) -> str:
    return f"legacy-{index:03d}"


def _namespaced_object(kind: str, name: str, namespace: str, index: int) -> dict[str, Any]:
    metadata = {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "seed"}}
    if kind == "ConfigMap":
        return {"apiVersion": "v1", "kind": kind, "metadata": metadata, "data": {"setting": f"value-{index}"}}
    if kind == "Secret":
        # Recognisable fake credentials: tests grep etcd for them to prove they are not plaintext.
        return {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": metadata,
            "type": "Opaque",
            "stringData": {"password": f"seed-password-{index}"},
        }
    if kind == "Deployment":
        labels = {"app": name}
        return {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": metadata,
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
                },
            },
        }
    if kind == "Role":
        rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": kind,
            "metadata": metadata,
            "rules": rules,
        }
    if kind == "RoleBinding":
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": kind,
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        }
    return {"apiVersion": f"{SEED_GROUP}/v1", "kind": kind, "metadata": metadata, "spec": {"size": index % 7}}


def seed(cluster: DevCluster, count: int, namespaces: int = 20, *, progress: bool = True) -> int:
    """Create the CRDs and ``count`` objects through the API; returns how many were created."""
    cluster.kubectl("apply", "-f", "-", input=_as_list(custom_resource_definitions()))
    for crd in (NAMESPACED_CRD, CLUSTER_CRD):
        cluster.wait_established(crd)
    created = 0
    batch: list[dict[str, Any]] = []
    for item in seed_objects(count, namespaces):
        batch.append(item)
        if len(batch) == BATCH:
            created += _create(cluster, batch)
            batch = []
            if progress:
                print(f"  seeded {created} objects", flush=True)
    created += _create(cluster, batch)
    return created


def _create(cluster: DevCluster, items: list[dict[str, Any]]) -> int:
    if items:
        cluster.kubectl("create", "-f", "-", "-o", "name", input=_as_list(items))
    return len(items)


def _as_list(items: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
