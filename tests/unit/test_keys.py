"""The etcd key ↔ resource map: special locations, custom resources, labels, and the inverse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kms_storage_migrator.storage.keys import (
    BUILTIN_LOCATIONS,
    BuiltinLocation,
    EtcdRoot,
    GroupResource,
    StoredKey,
    UnknownResourceError,
    canonical,
    etcd_prefix,
    parse_key,
    scan_boundaries,
)

CUSTOM = {("cr.example.com", "widgets"): True, ("cr.example.com", "clusterwidgets"): False}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("/registry/secrets/ns1/s1", StoredKey("", "secrets", "ns1", "s1", True)),
        ("/registry/minions/node-a", StoredKey("", "nodes", None, "node-a", True)),
        ("/registry/services/specs/ns1/web", StoredKey("", "services", "ns1", "web", True)),
        ("/registry/services/endpoints/ns1/web", StoredKey("", "endpoints", "ns1", "web", True)),
        ("/registry/controllers/ns1/rc", StoredKey("", "replicationcontrollers", "ns1", "rc", True)),
        ("/registry/ingress/ns1/in", StoredKey("networking.k8s.io", "ingresses", "ns1", "in", True)),
        ("/registry/events/ns1/e.1", StoredKey("", "events", "ns1", "e.1", True)),
        ("/registry/namespaces/kube-system", StoredKey("", "namespaces", None, "kube-system", True)),
        ("/registry/deployments/ns1/d", StoredKey("apps", "deployments", "ns1", "d", True)),
        (
            "/registry/leases/kube-system/l",
            StoredKey("coordination.k8s.io", "leases", "kube-system", "l", True),
        ),
        (
            "/registry/clustertrustbundles/example.com:signer:abc",
            StoredKey("certificates.k8s.io", "clustertrustbundles", None, "example.com:signer:abc", True),
        ),
        (
            "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.cr.example.com",
            StoredKey(
                "apiextensions.k8s.io", "customresourcedefinitions", None, "widgets.cr.example.com", True
            ),
        ),
        (
            "/registry/apiregistration.k8s.io/apiservices/v1.apps",
            StoredKey("apiregistration.k8s.io", "apiservices", None, "v1.apps", True),
        ),
        (
            "/registry/cr.example.com/widgets/ns1/w1",
            StoredKey("cr.example.com", "widgets", "ns1", "w1", True),
        ),
        (
            "/registry/cr.example.com/clusterwidgets/c1",
            StoredKey("cr.example.com", "clusterwidgets", None, "c1", True),
        ),
        (b"/registry/configmaps/ns1/cm", StoredKey("", "configmaps", "ns1", "cm", True)),
    ],
)
def test_parse_key(key: str | bytes, expected: StoredKey) -> None:
    assert parse_key(key, CUSTOM) == expected


@pytest.mark.parametrize(
    ("key", "resource", "reason_part"),
    [
        ("/registry/ranges/serviceips", "ranges", "no API serves it"),
        ("/registry/ranges/servicenodeports", "ranges", "no API serves it"),
        ("/registry/masterleases/10.0.0.1", "masterleases", "no API serves it"),
        ("/registry/peerserverleases/apiserver-abc", "peerserverleases", "no API serves it"),
        ("/registry/nonsense/x", "nonsense", "no known resource"),
        ("/registry/services/other/ns/x", "services", "no known resource"),
        ("compact_rev_key", "compact_rev_key", "outside /registry/"),
        ("/registry/secrets/too/many/parts", "secrets", "namespaced"),
        ("/registry/namespaces/a/b", "namespaces", "cluster-scoped"),
        ("/registry/secrets//x", "/registry/secrets//x", "empty path segment"),
        ("/registry/cr.example.com/widgets/c1", "widgets", "does not match the CRD scope"),
        ("/registry/gone.example.com/things/ns/t", "things", "no served custom resource definition"),
    ],
)
def test_not_rewritable_keys_are_labelled(key: str, resource: str, reason_part: str) -> None:
    stored = parse_key(key, CUSTOM)
    assert stored.rewritable is False
    assert stored.resource == resource
    assert stored.reason is not None
    assert reason_part in stored.reason


def test_orphaned_custom_resource_keeps_its_identity() -> None:
    stored = parse_key("/registry/gone.example.com/things/ns/t", {})
    assert (stored.group, stored.resource, stored.namespace, stored.name) == (
        "gone.example.com",
        "things",
        "ns",
        "t",
    )


def test_unknown_scope_in_index_is_read_from_the_key_shape() -> None:
    index = {("cr.example.com", "widgets"): None}
    assert parse_key("/registry/cr.example.com/widgets/ns/w", index).namespace == "ns"
    assert parse_key("/registry/cr.example.com/widgets/w", index) == StoredKey(
        "cr.example.com", "widgets", None, "w", True
    )


def test_non_utf8_key_is_not_rewritable() -> None:
    assert parse_key(b"/registry/secrets/\xff/x", {}).rewritable is False


def test_custom_root() -> None:
    assert parse_key("/prefix/secrets/a/b", {}, root=EtcdRoot("/prefix")) == StoredKey(
        "", "secrets", "a", "b", True
    )


def test_events_are_owned_by_the_core_group() -> None:
    assert canonical("events.k8s.io", "events") == GroupResource("", "events")
    assert canonical("", "events") == GroupResource("", "events")
    assert etcd_prefix("events.k8s.io", "events", {}) == etcd_prefix("", "events", {}) == "/registry/events/"


def test_canonical_of_unshared_resources_is_identity() -> None:
    assert canonical("apps", "deployments") == GroupResource("apps", "deployments")
    assert canonical("cr.example.com", "widgets") == GroupResource("cr.example.com", "widgets")


@pytest.mark.parametrize(
    ("group", "resource", "prefix"),
    [
        ("", "services", "/registry/services/specs/"),
        ("", "nodes", "/registry/minions/"),
        ("networking.k8s.io", "ingresses", "/registry/ingress/"),
        ("coordination.k8s.io", "leases", "/registry/leases/"),
        ("cr.example.com", "widgets", "/registry/cr.example.com/widgets/"),
    ],
)
def test_etcd_prefix(group: str, resource: str, prefix: str) -> None:
    assert etcd_prefix(group, resource, CUSTOM) == prefix


def test_etcd_prefix_of_an_unknown_resource_raises() -> None:
    with pytest.raises(UnknownResourceError, match=r"things\.gone\.example\.com"):
        etcd_prefix("gone.example.com", "things", CUSTOM)


def test_prefixes_never_contain_one_another() -> None:
    # Scanning one resource's prefix must never pick up another's keys ("leases/" vs "leasecandidates/").
    prefixes = {etcd_prefix(entry.group, entry.resource, {}) for entry in BUILTIN_LOCATIONS}
    for first in prefixes:
        for second in prefixes - {first}:
            assert not second.startswith(first), (first, second)


@pytest.mark.parametrize("entry", BUILTIN_LOCATIONS, ids=lambda entry: f"{entry.resource}.{entry.group}")
def test_every_builtin_round_trips(entry: BuiltinLocation) -> None:
    prefix = etcd_prefix(entry.group, entry.resource, {})
    key = prefix + ("ns1/obj" if entry.namespaced else "obj")
    stored = parse_key(key, {})
    owner = canonical(entry.group, entry.resource)
    assert stored == StoredKey(owner.group, owner.resource, "ns1" if entry.namespaced else None, "obj", True)


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.:", min_size=1, max_size=40)


@given(namespace=names, name=names)
def test_custom_resource_keys_round_trip(namespace: str, name: str) -> None:
    namespaced = parse_key(etcd_prefix("cr.example.com", "widgets", CUSTOM) + f"{namespace}/{name}", CUSTOM)
    assert namespaced == StoredKey("cr.example.com", "widgets", namespace, name, True)
    cluster = parse_key(etcd_prefix("cr.example.com", "clusterwidgets", CUSTOM) + name, CUSTOM)
    assert cluster == StoredKey("cr.example.com", "clusterwidgets", None, name, True)


@given(st.binary(max_size=200))
def test_arbitrary_keys_never_raise(key: bytes) -> None:
    assert isinstance(parse_key(key, CUSTOM), StoredKey)


def test_scan_boundaries_enclose_every_location() -> None:
    boundaries = scan_boundaries(CUSTOM)
    assert boundaries == sorted(set(boundaries))
    keys = [etcd_prefix(entry.group, entry.resource, {}) + "ns/x" for entry in BUILTIN_LOCATIONS]
    keys += ["/registry/cr.example.com/widgets/ns/w", "/registry/ranges/serviceips"]
    for key in keys:
        encoded = key.encode()
        # The boundary just below the key opens its location's range; the one just above closes it.
        below = max(boundary for boundary in boundaries if boundary <= encoded)
        above = min(boundary for boundary in boundaries if boundary > encoded)
        assert encoded.startswith(below), (key, below)
        assert above == below[:-1] + b"0" or not above.startswith(below), (key, above)


@pytest.mark.parametrize(
    ("flag", "path", "shown"),
    [
        ("/registry", "/registry", "/registry"),
        ("/registry/", "/registry", "/registry"),
        ("//registry//", "/registry", "/registry"),
        ("/", "", "/"),
        ("/a/b/", "/a/b", "/a/b"),
    ],
)
def test_an_etcd_root_is_normalised_as_the_apiserver_joins_it(flag: str, path: str, shown: str) -> None:
    root = EtcdRoot.parse(flag)
    assert root.path == path
    assert str(root) == shown
    assert root.location("configmaps") == f"{path}/configmaps/"


def test_the_root_slash_puts_objects_at_the_top_of_the_keyspace() -> None:
    """``--etcd-prefix /``: the apiserver writes ``/secrets/a/b``, not ``/registry/secrets/a/b``."""
    root = EtcdRoot.parse("/")
    assert etcd_prefix("", "secrets", {}, root=root) == "/secrets/"
    assert parse_key("/secrets/a/b", {}, root=root) == StoredKey("", "secrets", "a", "b", True)
    assert not parse_key("/registry/secrets/a/b", {}, root=root).rewritable


def test_a_relative_etcd_prefix_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="'registry' must be an absolute path"):
        EtcdRoot.parse("registry")
