"""The key map against a real kube-apiserver 1.37: one object of every built-in type, then etcd.

Each object is created through the API; the test then reads etcd directly and checks that the
object sits exactly at ``etcd_prefix(group, resource) + [namespace/]name`` and that
``parse_key`` maps that key back to the object's (canonical) resource.
"""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.devcluster.seed import crd_manifest
from kms_storage_migrator.storage.etcd import EtcdConfig, EtcdReader
from kms_storage_migrator.storage.keys import (
    NOT_REWRITABLE_LOCATIONS,
    GroupResource,
    canonical,
    etcd_prefix,
    parse_key,
)

pytestmark = pytest.mark.integration

NS = "inv-keymap"
IMAGE = "registry.example/busybox:1"
POD_SPEC = {"containers": [{"name": "c", "image": IMAGE}]}
TEMPLATE = {"metadata": {"labels": {"app": "x"}}, "spec": POD_SPEC}
SELECTOR = {"matchLabels": {"app": "x"}}
WEBHOOK = {
    "name": "never.example.com",
    "clientConfig": {"service": {"namespace": NS, "name": "nothing"}},
    "rules": [
        {
            "operations": ["CREATE"],
            "apiGroups": ["nothing.example.com"],
            "apiVersions": ["v1"],
            "resources": ["nothing"],
        }
    ],
    "failurePolicy": "Ignore",
    "sideEffects": "None",
    "admissionReviewVersions": ["v1"],
}
MATCH_NOTHING = {
    "resourceRules": [
        {
            "apiGroups": ["nothing.example.com"],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["nothing"],
        }
    ]
}


def _csr_pem() -> str:
    key = Ed25519PrivateKey.generate()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "key-inventory")]))
        .sign(key, None)
    )
    return base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode()


def _trust_bundle_pem() -> str:
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "inventory-root")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, None)
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _pod_certificate_request() -> dict[str, Any]:
    # The apiserver checks the CSR's signature at admission, so it must be a real one.
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(Ed25519PrivateKey.generate(), None)
    )
    return {
        "signerName": "example.com/signer",
        "podName": "pod-1",
        "podUID": "pod-uid-1",
        "serviceAccountName": "sa-1",
        "serviceAccountUID": "sa-uid-1",
        "nodeName": "node-1",
        "nodeUID": "node-uid-1",
        "stubPKCS10Request": base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode(),
    }


# (apiVersion, kind, resource, name, extra fields); namespaced ones are created in NS.
Stub = tuple[str, str, str, str, Callable[[], dict[str, Any]]]
STUBS: list[Stub] = [
    ("v1", "ConfigMap", "configmaps", "cm1", lambda: {"data": {"a": "b"}}),
    ("v1", "Endpoints", "endpoints", "ep1", lambda: {"subsets": []}),
    ("v1", "Event", "events", "ev1", lambda: {"involvedObject": {"namespace": NS}, "message": "m"}),
    ("v1", "LimitRange", "limitranges", "lr1", lambda: {"spec": {"limits": [{"type": "Pod"}]}}),
    ("v1", "Namespace", "namespaces", "inv-keymap-extra", dict),
    ("v1", "Node", "nodes", "node1", lambda: {"spec": {"unschedulable": True}}),
    (
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "pvc1",
        lambda: {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}}},
    ),
    (
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        "pv1",
        lambda: {
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "capacity": {"storage": "1Mi"},
                "hostPath": {"path": "/tmp/x"},
            }
        },
    ),
    ("v1", "Pod", "pods", "pod1", lambda: {"spec": POD_SPEC}),
    ("v1", "PodTemplate", "podtemplates", "pt1", lambda: {"template": TEMPLATE}),
    (
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        "rc1",
        lambda: {"spec": {"replicas": 0, "selector": {"app": "x"}, "template": TEMPLATE}},
    ),
    ("v1", "ResourceQuota", "resourcequotas", "rq1", lambda: {"spec": {"hard": {"pods": "10"}}}),
    ("v1", "Secret", "secrets", "s1", lambda: {"stringData": {"a": "b"}}),
    ("v1", "ServiceAccount", "serviceaccounts", "sa1", dict),
    ("v1", "Service", "services", "svc1", lambda: {"spec": {"ports": [{"port": 80}]}}),
    (
        "admissionregistration.k8s.io/v1",
        "MutatingAdmissionPolicy",
        "mutatingadmissionpolicies",
        "map1",
        lambda: {
            "spec": {
                "matchConstraints": MATCH_NOTHING,
                "reinvocationPolicy": "Never",
                "mutations": [
                    {
                        "patchType": "ApplyConfiguration",
                        "applyConfiguration": {
                            "expression": "Object{metadata: Object.metadata{labels: {'a': 'b'}}}"
                        },
                    }
                ],
            }
        },
    ),
    (
        "admissionregistration.k8s.io/v1",
        "MutatingAdmissionPolicyBinding",
        "mutatingadmissionpolicybindings",
        "mapb1",
        lambda: {"spec": {"policyName": "map1"}},
    ),
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        "mwc1",
        lambda: {"webhooks": [WEBHOOK]},
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        "vap1",
        lambda: {"spec": {"matchConstraints": MATCH_NOTHING, "validations": [{"expression": "true"}]}},
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        "vapb1",
        lambda: {"spec": {"policyName": "vap1", "validationActions": ["Audit"]}},
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        "vwc1",
        lambda: {"webhooks": [WEBHOOK]},
    ),
    (
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "keymaps.inv.example.com",
        lambda: {"spec": crd_manifest("inv.example.com", "keymaps", "KeyMap", "Namespaced")["spec"]},
    ),
    (
        "apiregistration.k8s.io/v1",
        "APIService",
        "apiservices",
        "v1.inv.example.org",
        lambda: {
            "spec": {
                "group": "inv.example.org",
                "version": "v1",
                "groupPriorityMinimum": 100,
                "versionPriority": 10,
            }
        },
    ),
    ("apps/v1", "ControllerRevision", "controllerrevisions", "cr1", lambda: {"revision": 1, "data": {}}),
    (
        "apps/v1",
        "DaemonSet",
        "daemonsets",
        "ds1",
        lambda: {"spec": {"selector": SELECTOR, "template": TEMPLATE}},
    ),
    (
        "apps/v1",
        "Deployment",
        "deployments",
        "d1",
        lambda: {"spec": {"replicas": 0, "selector": SELECTOR, "template": TEMPLATE}},
    ),
    (
        "apps/v1",
        "ReplicaSet",
        "replicasets",
        "rs1",
        lambda: {"spec": {"replicas": 0, "selector": SELECTOR, "template": TEMPLATE}},
    ),
    (
        "apps/v1",
        "StatefulSet",
        "statefulsets",
        "ss1",
        lambda: {"spec": {"replicas": 0, "selector": SELECTOR, "template": TEMPLATE, "serviceName": "svc1"}},
    ),
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "hpa1",
        lambda: {
            "spec": {
                "maxReplicas": 2,
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d1"},
            }
        },
    ),
    (
        "batch/v1",
        "CronJob",
        "cronjobs",
        "cj1",
        lambda: {
            "spec": {
                "schedule": "0 0 1 1 *",
                "suspend": True,
                "jobTemplate": {"spec": {"template": {"spec": {**POD_SPEC, "restartPolicy": "Never"}}}},
            }
        },
    ),
    (
        "batch/v1",
        "Job",
        "jobs",
        "job1",
        lambda: {"spec": {"suspend": True, "template": {"spec": {**POD_SPEC, "restartPolicy": "Never"}}}},
    ),
    (
        "certificates.k8s.io/v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        "csr1",
        lambda: {
            "spec": {
                "signerName": "example.com/signer",
                "usages": ["digital signature"],
                "request": _csr_pem(),
            }
        },
    ),
    (
        "certificates.k8s.io/v1",
        "ClusterTrustBundle",
        "clustertrustbundles",
        "example.com:signer:inv",
        lambda: {"spec": {"signerName": "example.com/signer", "trustBundle": _trust_bundle_pem()}},
    ),
    (
        "certificates.k8s.io/v1",
        "PodCertificateRequest",
        "podcertificaterequests",
        "pcr1",
        lambda: {"spec": _pod_certificate_request()},
    ),
    ("coordination.k8s.io/v1", "Lease", "leases", "lease1", lambda: {"spec": {"holderIdentity": "me"}}),
    (
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "endpointslices",
        "eps1",
        lambda: {"addressType": "IPv4", "endpoints": []},
    ),
    (
        "events.k8s.io/v1",
        "Event",
        "events",
        "ev2",
        lambda: {
            "regarding": {"namespace": NS},
            "note": "n",
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "example.com/c",
            "reportingInstance": "i",
            "action": "A",
            "reason": "R",
            "type": "Normal",
        },
    ),
    (
        "flowcontrol.apiserver.k8s.io/v1",
        "FlowSchema",
        "flowschemas",
        "fs1",
        lambda: {
            "spec": {"priorityLevelConfiguration": {"name": "global-default"}, "matchingPrecedence": 9000}
        },
    ),
    (
        "flowcontrol.apiserver.k8s.io/v1",
        "PriorityLevelConfiguration",
        "prioritylevelconfigurations",
        "plc1",
        lambda: {
            "spec": {
                "type": "Limited",
                "limited": {"nominalConcurrencyShares": 1, "limitResponse": {"type": "Reject"}},
            }
        },
    ),
    (
        "networking.k8s.io/v1",
        "IngressClass",
        "ingressclasses",
        "ic1",
        lambda: {"spec": {"controller": "example.com/ingress"}},
    ),
    (
        "networking.k8s.io/v1",
        "Ingress",
        "ingresses",
        "ing1",
        lambda: {"spec": {"defaultBackend": {"service": {"name": "svc1", "port": {"number": 80}}}}},
    ),
    (
        "networking.k8s.io/v1",
        "IPAddress",
        "ipaddresses",
        "192.168.77.3",
        lambda: {"spec": {"parentRef": {"resource": "services", "name": "svc1", "namespace": NS}}},
    ),
    (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        "np1",
        lambda: {"spec": {"podSelector": {}}},
    ),
    (
        "networking.k8s.io/v1",
        "ServiceCIDR",
        "servicecidrs",
        "cidr1",
        lambda: {"spec": {"cidrs": ["10.77.0.0/24"]}},
    ),
    ("node.k8s.io/v1", "RuntimeClass", "runtimeclasses", "rtc1", lambda: {"handler": "h1"}),
    (
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "pdb1",
        lambda: {"spec": {"selector": SELECTOR}},
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "crb1",
        lambda: {
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "Group", "name": "nobody", "apiGroup": "rbac.authorization.k8s.io"}],
        },
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "clusterroles",
        "crole1",
        lambda: {"rules": [{"nonResourceURLs": ["/version"], "verbs": ["get"]}]},
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rolebindings",
        "rb1",
        lambda: {
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "Group", "name": "nobody", "apiGroup": "rbac.authorization.k8s.io"}],
        },
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "Role",
        "roles",
        "role1",
        lambda: {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
    ),
    ("resource.k8s.io/v1", "DeviceClass", "deviceclasses", "dc1", lambda: {"spec": {}}),
    (
        "resource.k8s.io/v1",
        "DeviceTaintRule",
        "devicetaintrules",
        "dtr1",
        lambda: {"spec": {"taint": {"key": "example.com/k", "value": "v", "effect": "NoSchedule"}}},
    ),
    (
        "resource.k8s.io/v1",
        "ResourceClaim",
        "resourceclaims",
        "claim1",
        lambda: {"spec": {"devices": {"requests": [{"name": "r", "exactly": {"deviceClassName": "dc1"}}]}}},
    ),
    (
        "resource.k8s.io/v1",
        "ResourceClaimTemplate",
        "resourceclaimtemplates",
        "rct1",
        lambda: {
            "spec": {
                "spec": {"devices": {"requests": [{"name": "r", "exactly": {"deviceClassName": "dc1"}}]}}
            }
        },
    ),
    (
        "resource.k8s.io/v1",
        "ResourceSlice",
        "resourceslices",
        "slice1",
        lambda: {
            "spec": {
                "nodeName": "node1",
                "driver": "dra.example.com",
                "pool": {"name": "p", "resourceSliceCount": 1},
            }
        },
    ),
    ("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", "pc1", lambda: {"value": 1000}),
    ("storage.k8s.io/v1", "CSIDriver", "csidrivers", "csi.example.com", lambda: {"spec": {}}),
    ("storage.k8s.io/v1", "CSINode", "csinodes", "node1", lambda: {"spec": {"drivers": []}}),
    (
        "storage.k8s.io/v1",
        "CSIStorageCapacity",
        "csistoragecapacities",
        "csc1",
        lambda: {"storageClassName": "sc1"},
    ),
    ("storage.k8s.io/v1", "StorageClass", "storageclasses", "sc1", lambda: {"provisioner": "example.com/p"}),
    (
        "storage.k8s.io/v1",
        "VolumeAttachment",
        "volumeattachments",
        "va1",
        lambda: {
            "spec": {
                "attacher": "csi.example.com",
                "nodeName": "node1",
                "source": {"persistentVolumeName": "pv1"},
            }
        },
    ),
    (
        "storage.k8s.io/v1",
        "VolumeAttributesClass",
        "volumeattributesclasses",
        "vac1",
        lambda: {"driverName": "example.com/d", "parameters": {"a": "b"}},
    ),
    (
        "storagemigration.k8s.io/v1",
        "StorageVersionMigration",
        "storageversionmigrations",
        "svm1",
        lambda: {"spec": {"resource": {"group": "inv.example.com", "resource": "keymaps"}}},
    ),
]


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def _served_persisted_resources(cluster: DevCluster) -> set[GroupResource]:
    """Every resource the apiserver serves with create and list (i.e. that it stores)."""
    served = set()
    for line in cluster.kubectl("api-resources", "--verbs=create,list", "-o", "name").split():
        resource, _, group = line.partition(".")
        served.add(GroupResource(group, resource))
    return served


def _create(
    cluster: DevCluster, api_version: str, kind: str, name: str, fields: dict[str, Any], namespaced: bool
) -> str | None:
    """Create one object; returns kubectl's error, or None."""
    body = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, **fields}
    if namespaced:
        body["metadata"]["namespace"] = NS
    try:
        cluster.kubectl("create", "-f", "-", input=json.dumps(body))
    except subprocess.CalledProcessError as error:
        return str(error.stderr).strip()
    return None


async def test_every_builtin_object_lands_where_the_key_map_says(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(encryption="kms")
    cluster.kubectl("create", "namespace", NS)
    stubbed = {GroupResource(_group(api_version), resource) for api_version, _, resource, _, _ in STUBS}
    assert _served_persisted_resources(cluster) - stubbed == set(), "a served resource has no stub here"
    namespaced = set()
    for line in cluster.kubectl("api-resources", "--namespaced=true", "-o", "name").split():
        resource, _, group = line.partition(".")
        namespaced.add(GroupResource(group, resource))

    failures: list[str] = []
    async with EtcdReader(EtcdConfig.from_file(cluster.etcd_config)) as reader:
        for api_version, kind, resource, name, fields in STUBS:
            group = _group(api_version)
            is_namespaced = GroupResource(group, resource) in namespaced
            error = _create(cluster, api_version, kind, name, fields(), is_namespaced)
            if error is not None:
                failures.append(f"{resource}.{group} {name}: cannot create: {error}")
                continue
            key = etcd_prefix(group, resource, {}) + (f"{NS}/{name}" if is_namespaced else name)
            entry = await reader.get(key)
            if entry is None:
                failures.append(f"{resource}.{group} {name}: not at {key}")
                continue
            stored = parse_key(entry.key, {})
            owner = canonical(group, resource)
            expected = (owner.group, owner.resource, NS if is_namespaced else None, name, True)
            actual = (stored.group, stored.resource, stored.namespace, stored.name, stored.rewritable)
            if actual != expected:
                failures.append(f"{key}: parsed as {actual}, expected {expected}")

        # And nothing anywhere under /registry is left unexplained.
        async for page in reader.scan("/registry/", keys_only=True):
            for entry in page:
                stored = parse_key(entry.key, {("inv.example.com", "keymaps"): True})
                if not stored.rewritable and stored.resource not in NOT_REWRITABLE_LOCATIONS:
                    failures.append(f"{entry.key.decode()}: {stored.reason}")
    assert failures == [], "\n".join(failures)
