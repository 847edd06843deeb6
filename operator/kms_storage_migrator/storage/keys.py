"""etcd key ↔ API resource, for the kube-apiserver key layout. Pure: no I/O.

kube-apiserver stores an object at ``<root>/<location>/<namespace>/<name>`` (namespaced) or
``<root>/<location>/<name>`` (cluster-scoped). Built-in resources use a location without the
group, a few under historical names (``minions``, ``controllers``, ``services/specs``...);
custom resources, CRDs and APIServices use ``<group>/<plural>``. The table below follows the
upstream integration test ``test/integration/etcd/data.go`` for Kubernetes 1.37, and the
key-map integration test checks it against a real apiserver.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "BUILTIN_LOCATIONS",
    "DEFAULT_ROOT",
    "NOT_REWRITABLE_LOCATIONS",
    "BuiltinLocation",
    "EtcdRoot",
    "GroupResource",
    "ResourceIndex",
    "StoredKey",
    "UnknownResourceError",
    "canonical",
    "etcd_prefix",
    "parse_key",
    "scan_boundaries",
]


@dataclass(frozen=True, slots=True)
class EtcdRoot:
    """The apiserver's ``--etcd-prefix``, normalised the way the apiserver joins it to keys.

    kube-apiserver builds keys with Go's ``path.Join``, so repeated and trailing slashes vanish:
    ``/registry/`` and ``/registry`` are the same root, and ``/`` puts objects at
    ``/configmaps/...``. ``path`` is that root without a trailing slash (``""`` for ``/``); every
    key of the apiserver starts with ``path + "/"``. Build one with :meth:`parse`.
    """

    path: str

    @classmethod
    def parse(cls, text: str) -> EtcdRoot:
        """``--etcd-prefix`` as given on a command line; raises ValueError naming what is wrong."""
        stripped = text.strip()
        if not stripped.startswith("/"):
            raise ValueError(
                f"etcd prefix {text!r} must be an absolute path like the apiserver's --etcd-prefix "
                "(default /registry)"
            )
        return cls("".join(f"/{segment}" for segment in stripped.split("/") if segment))

    @property
    def base(self) -> str:
        """What every key of the apiserver starts with: the root and one slash."""
        return f"{self.path}/"

    def location(self, location: str) -> str:
        """The key prefix (with a trailing slash) of a location under the root."""
        return f"{self.base}{location}/"

    def __str__(self) -> str:
        return self.path or "/"


DEFAULT_ROOT = EtcdRoot("/registry")

# Custom resources served by the apiserver: (group, plural) → namespaced. None means the scope is
# not known (e.g. learnt from CRD keys alone); it is then read from the key's shape.
ResourceIndex = Mapping[tuple[str, str], bool | None]


@dataclass(frozen=True, slots=True, order=True)
class GroupResource:
    group: str
    resource: str

    def __str__(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource


@dataclass(frozen=True, slots=True)
class StoredKey:
    """Which API object an etcd key holds, and whether a write through the API can re-encrypt it."""

    group: str
    resource: str
    namespace: str | None
    name: str
    rewritable: bool
    reason: str | None = None  # why it is not rewritable

    @property
    def group_resource(self) -> GroupResource:
        return GroupResource(self.group, self.resource)


@dataclass(frozen=True, slots=True)
class BuiltinLocation:
    group: str
    resource: str
    location: str  # path under the root, without slashes at either end
    namespaced: bool


def _builtin(group: str, resource: str, namespaced: bool, location: str | None = None) -> BuiltinLocation:
    return BuiltinLocation(group, resource, location or resource, namespaced)


# Every resource kube-apiserver 1.37 persists (GA, beta and alpha APIs; an API that is not enabled
# simply has no keys). Order matters only for the inverse map: the first entry for a location is
# its canonical owner.
BUILTIN_LOCATIONS: tuple[BuiltinLocation, ...] = (
    # core
    _builtin("", "configmaps", True),
    _builtin("", "endpoints", True, "services/endpoints"),
    _builtin("", "events", True),
    _builtin("", "limitranges", True),
    _builtin("", "namespaces", False),
    _builtin("", "nodes", False, "minions"),
    _builtin("", "persistentvolumeclaims", True),
    _builtin("", "persistentvolumes", False),
    _builtin("", "pods", True),
    _builtin("", "podtemplates", True),
    _builtin("", "replicationcontrollers", True, "controllers"),
    _builtin("", "resourcequotas", True),
    _builtin("", "secrets", True),
    _builtin("", "serviceaccounts", True),
    _builtin("", "services", True, "services/specs"),
    # events.k8s.io serves the same objects as core events (see canonical())
    _builtin("events.k8s.io", "events", True),
    _builtin("admissionregistration.k8s.io", "mutatingadmissionpolicies", False),
    _builtin("admissionregistration.k8s.io", "mutatingadmissionpolicybindings", False),
    _builtin("admissionregistration.k8s.io", "mutatingwebhookconfigurations", False),
    _builtin("admissionregistration.k8s.io", "validatingadmissionpolicies", False),
    _builtin("admissionregistration.k8s.io", "validatingadmissionpolicybindings", False),
    _builtin("admissionregistration.k8s.io", "validatingwebhookconfigurations", False),
    _builtin(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        False,
        "apiextensions.k8s.io/customresourcedefinitions",
    ),
    _builtin("apiregistration.k8s.io", "apiservices", False, "apiregistration.k8s.io/apiservices"),
    _builtin("apps", "controllerrevisions", True),
    _builtin("apps", "daemonsets", True),
    _builtin("apps", "deployments", True),
    _builtin("apps", "replicasets", True),
    _builtin("apps", "statefulsets", True),
    _builtin("autoscaling", "horizontalpodautoscalers", True),
    _builtin("batch", "cronjobs", True),
    _builtin("batch", "jobs", True),
    _builtin("certificates.k8s.io", "certificatesigningrequests", False),
    _builtin("certificates.k8s.io", "clustertrustbundles", False),
    _builtin("certificates.k8s.io", "podcertificaterequests", True),
    _builtin("coordination.k8s.io", "leasecandidates", True),
    _builtin("coordination.k8s.io", "leases", True),
    _builtin("discovery.k8s.io", "endpointslices", True),
    _builtin("flowcontrol.apiserver.k8s.io", "flowschemas", False),
    _builtin("flowcontrol.apiserver.k8s.io", "prioritylevelconfigurations", False),
    _builtin("internal.apiserver.k8s.io", "storageversions", False),
    _builtin("networking.k8s.io", "ingressclasses", False),
    _builtin("networking.k8s.io", "ingresses", True, "ingress"),
    _builtin("networking.k8s.io", "ipaddresses", False),
    _builtin("networking.k8s.io", "networkpolicies", True),
    _builtin("networking.k8s.io", "servicecidrs", False),
    _builtin("node.k8s.io", "runtimeclasses", False),
    _builtin("policy", "poddisruptionbudgets", True),
    _builtin("rbac.authorization.k8s.io", "clusterrolebindings", False),
    _builtin("rbac.authorization.k8s.io", "clusterroles", False),
    _builtin("rbac.authorization.k8s.io", "rolebindings", True),
    _builtin("rbac.authorization.k8s.io", "roles", True),
    _builtin("resource.k8s.io", "deviceclasses", False),
    _builtin("resource.k8s.io", "devicetaintrules", False),
    _builtin("resource.k8s.io", "resourceclaims", True),
    _builtin("resource.k8s.io", "resourceclaimtemplates", True),
    _builtin("resource.k8s.io", "resourcepoolstatusrequests", False),
    _builtin("resource.k8s.io", "resourceslices", False),
    _builtin("scheduling.k8s.io", "podgroups", True),
    _builtin("scheduling.k8s.io", "priorityclasses", False),
    _builtin("scheduling.k8s.io", "workloads", True),
    _builtin("storage.k8s.io", "csidrivers", False),
    _builtin("storage.k8s.io", "csinodes", False),
    _builtin("storage.k8s.io", "csistoragecapacities", True),
    _builtin("storage.k8s.io", "storageclasses", False),
    _builtin("storage.k8s.io", "volumeattachments", False),
    _builtin("storage.k8s.io", "volumeattributesclasses", False),
    _builtin("storagemigration.k8s.io", "storageversionmigrations", False),
)

# Internal apiserver state with no REST endpoint: only the apiserver itself ever rewrites it.
NOT_REWRITABLE_LOCATIONS: Mapping[str, str] = {
    "ranges": "service IP / node port allocator state; no API serves it",
    "masterleases": "apiserver endpoint lease; no API serves it",
    "peerserverleases": "apiserver peer-proxy endpoint lease; no API serves it",
}

_BY_LOCATION: dict[str, BuiltinLocation] = {}
for _entry in BUILTIN_LOCATIONS:
    _BY_LOCATION.setdefault(_entry.location, _entry)
_BY_GROUP_RESOURCE = {GroupResource(entry.group, entry.resource): entry for entry in BUILTIN_LOCATIONS}
# Locations of two segments must be tried before their one-segment parents ("services/specs").
_TWO_SEGMENT_LOCATIONS = frozenset(location for location in _BY_LOCATION if "/" in location)
_TWO_SEGMENT_HEADS = frozenset(location.split("/")[0] for location in _TWO_SEGMENT_LOCATIONS)


class UnknownResourceError(ValueError):
    """A group/resource that is neither built in nor in the custom resource index."""


def canonical(group: str, resource: str) -> GroupResource:
    """The one group/resource that owns a shared location.

    ``events.k8s.io/events`` and core ``events`` are the same stored objects at
    ``/registry/events``; the core group is canonical because it is always served (and has been
    since 1.0) while ``events.k8s.io`` can be disabled, so each object is counted and rewritten
    once, through an API that is certain to exist.
    """
    entry = _BY_GROUP_RESOURCE.get(GroupResource(group, resource))
    if entry is None:
        return GroupResource(group, resource)
    owner = _BY_LOCATION[entry.location]
    return GroupResource(owner.group, owner.resource)


def etcd_prefix(group: str, resource: str, index: ResourceIndex, *, root: EtcdRoot = DEFAULT_ROOT) -> str:
    """The key prefix (with a trailing slash) that holds every object of one resource."""
    entry = _BY_GROUP_RESOURCE.get(GroupResource(group, resource))
    if entry is not None:
        return root.location(entry.location)
    if (group, resource) in index:
        return root.location(f"{group}/{resource}")
    raise UnknownResourceError(
        f"{GroupResource(group, resource)} is neither built in nor a served custom resource"
    )


def scan_boundaries(index: ResourceIndex, *, root: EtcdRoot = DEFAULT_ROOT) -> list[bytes]:
    """Where every known location starts and ends, to cut a scan of the root into one range per
    location (the gaps between them, where unknown keys would be, are still scanned)."""
    locations = [entry.location for entry in BUILTIN_LOCATIONS]
    locations += list(NOT_REWRITABLE_LOCATIONS)
    locations += [f"{group}/{plural}" for group, plural in index]
    boundaries: set[bytes] = set()
    for location in locations:
        start = root.location(location).encode()
        boundaries.add(start)
        boundaries.add(start[:-1] + b"0")  # "/" + 1: the first key after the whole location
    return sorted(boundaries)


def _to_text(key: bytes | str) -> str | None:
    if isinstance(key, str):
        return key
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def parse_key(key: bytes | str, index: ResourceIndex, *, root: EtcdRoot = DEFAULT_ROOT) -> StoredKey:
    """Which object an etcd key holds. Never raises: unrecognised keys come back not rewritable."""
    text = _to_text(key)
    if text is None:
        return _unmapped("", "key is not UTF-8")
    if not text.startswith(root.base):
        return _unmapped(text, f"outside {root.base}")
    segments = text[len(root.base) :].split("/")
    if "" in segments:
        return _unmapped(text, "empty path segment")
    head = segments[0]
    if head in _TWO_SEGMENT_HEADS and len(segments) >= 3:
        location = f"{head}/{segments[1]}"
        if location in _TWO_SEGMENT_LOCATIONS:
            return _builtin_key(_BY_LOCATION[location], segments[2:])
    if head in NOT_REWRITABLE_LOCATIONS:
        return StoredKey("", head, None, "/".join(segments[1:]), False, NOT_REWRITABLE_LOCATIONS[head])
    if head in _BY_LOCATION:
        return _builtin_key(_BY_LOCATION[head], segments[1:])
    # CRD groups must contain a dot, built-in locations never do: this is a custom resource.
    if "." in head and len(segments) >= 3:
        return _custom_key(head, segments[1], segments[2:], index)
    return _unmapped(head, f"no known resource is stored under {root.location(head)}")


def _unmapped(resource: str, reason: str) -> StoredKey:
    return StoredKey("", resource, None, "", False, reason)


def _split_object(rest: list[str], namespaced: bool | None) -> tuple[str | None, str] | None:
    if namespaced is None:
        namespaced = len(rest) == 2
    if namespaced and len(rest) == 2:
        return rest[0], rest[1]
    if not namespaced and len(rest) == 1:
        return None, rest[0]
    return None


def _builtin_key(entry: BuiltinLocation, rest: list[str]) -> StoredKey:
    split = _split_object(rest, entry.namespaced)
    if split is None:
        reason = f"key shape is not {'namespaced' if entry.namespaced else 'cluster-scoped'}"
        return StoredKey(entry.group, entry.resource, None, "/".join(rest), False, reason)
    namespace, name = split
    return StoredKey(entry.group, entry.resource, namespace, name, True)


def _custom_key(group: str, plural: str, rest: list[str], index: ResourceIndex) -> StoredKey:
    if (group, plural) not in index:
        guess = _split_object(rest, None)
        namespace, name = guess if guess is not None else (None, "/".join(rest))
        reason = f"no served custom resource definition for {plural}.{group}"
        return StoredKey(group, plural, namespace, name, False, reason)
    split = _split_object(rest, index[(group, plural)])
    if split is None:
        return StoredKey(group, plural, None, "/".join(rest), False, "key shape does not match the CRD scope")
    namespace, name = split
    return StoredKey(group, plural, namespace, name, True)
