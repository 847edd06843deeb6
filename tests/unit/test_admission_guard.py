"""The mutation guard in the page writer: with Refuse an object a mutating webhook may change is
never written and is a failure naming the webhook; with Allow it is written and a change the
answer shows is a MutatedByWebhook failure; each counted once. Configurations are re-read per
resource and every 30 s; transient errors are retried, a refusal to list them ends a Refuse run.

The apiserver is a scripted stand-in (unit tests of the engine's own decisions); the integration
test test_faults_mutating_webhook.py runs the same guard against the real apiserver and webhook.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from kms_storage_migrator.admission.mutation import ListedMetadata, mutations
from kms_storage_migrator.admission.policy import MutatingWebhookPolicy
from kms_storage_migrator.admission.reader import WebhookReader, intercepting_webhooks
from kms_storage_migrator.admission.webhooks import WebhookKind
from kms_storage_migrator.kube import ApiError, PatchAnswer
from kms_storage_migrator.migration.boundary import MigrationFailed
from kms_storage_migrator.migration.format_learning import FormatLearner
from kms_storage_migrator.migration.mutation_guard import MUTATED_BY_WEBHOOK, MUTATING_WEBHOOK, MutationGuard
from kms_storage_migrator.migration.page_writer import PageWriter
from kms_storage_migrator.migration.progress import MigrationProgress, ResourceProgress
from kms_storage_migrator.migration.ratelimit import AdaptiveRateLimiter
from kms_storage_migrator.migration.resource_choice import ServedResource
from kms_storage_migrator.migration.rewrite import Rewriter, RewriteTarget
from kms_storage_migrator.migration.status_publisher import NullObserver
from kms_storage_migrator.storage.keys import EtcdRoot

CONFIGMAPS = ServedResource("", "v1", "configmaps", "ConfigMap", True, frozenset({"list", "patch"}))
SECRETS = ServedResource("", "v1", "secrets", "Secret", True, frozenset({"list", "patch"}))
MUTATING = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
VALIDATING = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
POLICIES = "/apis/admissionregistration.k8s.io/v1/mutatingadmissionpolicies"
BINDINGS = "/apis/admissionregistration.k8s.io/v1/mutatingadmissionpolicybindings"
STAMP = "stamp.example.com"


def _stamp_configuration(namespace: str = "mutated", **webhook: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": STAMP,
        "clientConfig": {"url": "https://127.0.0.1:9443/mutate"},
        "rules": [
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["configmaps"]}
        ],
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "failurePolicy": "Fail",
    }
    body.update(webhook)
    return {"metadata": {"name": "stamp"}, "webhooks": [body]}


class WebhookApi:
    """Lists configurations and namespaces; answers patches as the apiserver would after a
    mutating webhook added a label (``stamped``), or as a plain no-op write."""

    def __init__(self, configurations: list[dict[str, Any]], *, stamped: bool = False) -> None:
        self.configurations: dict[str, list[dict[str, Any]]] = {
            MUTATING: configurations,
            VALIDATING: [],
            POLICIES: [],
            BINDINGS: [],
        }
        self.namespaces = {"mutated": {"kubernetes.io/metadata.name": "mutated"}, "plain": {}}
        self.stamped = stamped
        self.patched: list[str] = []
        self.answers: list[PatchAnswer] = []
        self.reads: list[str] = []
        self.failures: list[Exception] = []

    async def get_json(self, path: str) -> dict[str, Any]:
        self.reads.append(path)
        if self.failures:
            raise self.failures.pop(0)
        if path not in self.configurations:
            raise ApiError(404, "NotFound", "")
        return {"items": self.configurations[path]}

    async def list_metadata(self, path: str, *, limit: int, continue_token: str | None) -> dict[str, Any]:
        self.reads.append(path)
        return {
            "items": [
                {"metadata": {"name": name, "labels": labels}} for name, labels in self.namespaces.items()
            ]
        }

    async def patch(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        content_type: str = "",
        params: Mapping[str, str] | None = None,
        answer: PatchAnswer = PatchAnswer.TABLE,
    ) -> dict[str, Any]:
        self.patched.append(path)
        self.answers.append(answer)
        labels = {"app": "web", **({"stamped-by-webhook": "yes"} if self.stamped else {})}
        name = path.rsplit("/", 1)[1]
        version = "101" if self.stamped else str(body["metadata"]["resourceVersion"])
        return {
            "kind": "PartialObjectMetadata",
            "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": version, "labels": labels},
        }


class MemorySink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    async def publish(self, status: dict[str, Any]) -> None:
        return None

    async def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))


async def _no_sleep(_: float) -> None:
    return None


def _writer(
    api: WebhookApi, policy: MutatingWebhookPolicy | None, progress: MigrationProgress
) -> tuple[PageWriter, MemorySink]:
    sink = MemorySink()
    rewriter = Rewriter(api, AdaptiveRateLimiter(1000), max_attempts=3, sleep=_no_sleep)
    guard = MutationGuard(api, policy, sleep=_no_sleep) if policy is not None else None
    writer = PageWriter(
        rewriter,
        progress,
        sink,
        NullObserver(),
        FormatLearner(None, progress, EtcdRoot("/registry")),
        concurrency=4,
        root=EtcdRoot("/registry"),
        should_stop=lambda: False,
        admission=guard,
    )
    return writer, sink


def _targets(namespace: str, *names: str, listed: bool = True) -> list[RewriteTarget]:
    metadata = ListedMetadata.of({"labels": {"app": "web"}}) if listed else None
    return [
        RewriteTarget(CONFIGMAPS, namespace, name, "100", f"uid-{name}", listed=metadata) for name in names
    ]


async def test_refuse_writes_no_object_a_mutating_webhook_intercepts_and_names_the_webhook() -> None:
    api = WebhookApi([_stamp_configuration()])
    progress = MigrationProgress()
    entry = ResourceProgress("", "v1", "configmaps")
    writer, sink = _writer(api, MutatingWebhookPolicy.REFUSE, progress)
    await writer.write(entry, [*_targets("mutated", "a", "b"), *_targets("plain", "c")])
    await writer.announce()

    assert api.patched == ["/api/v1/namespaces/plain/configmaps/c"]  # never the webhook's two
    assert (entry.counts.failed, entry.counts.unchanged, entry.counts.retries) == (2, 1, 0)
    assert progress.failures_total == 2
    assert {(f.namespace, f.name, f.reason) for f in progress.failures} == {
        ("mutated", "a", MUTATING_WEBHOOK),
        ("mutated", "b", MUTATING_WEBHOOK),
    }
    message = progress.failures[0].message
    assert f"mutating webhook {STAMP} (MutatingWebhookConfiguration stamp) intercepts the write" in message
    assert "spec.mutatingWebhooks is Refuse" in message
    # The event carries the failure and the one-line guidance.
    (kind, reason, text), *_ = sink.events
    assert (kind, reason) == ("Warning", "ObjectNotRewritten")
    assert "what to do:" in text
    assert "spec.mutatingWebhooks: Allow" in text


async def test_refuse_counts_an_object_with_unknown_labels_as_intercepted_when_a_selector_needs_them() -> (
    None
):
    selector = {"matchLabels": {"stamp": "yes"}}
    api = WebhookApi([_stamp_configuration(namespaceSelector=None, objectSelector=selector)])
    progress = MigrationProgress()
    entry = ResourceProgress("", "v1", "configmaps")
    writer, _ = _writer(api, MutatingWebhookPolicy.REFUSE, progress)
    # Full mode knows the labels: the selector does not pick {"app": "web"}; Targeted does not.
    await writer.write(entry, _targets("plain", "listed"))
    await writer.write(entry, _targets("plain", "from-etcd", listed=False))
    assert api.patched == ["/api/v1/namespaces/plain/configmaps/listed"]
    (failure,) = progress.failures
    assert failure.name == "from-etcd"
    assert "may intercept" in failure.message
    assert "objectSelector (stamp=yes) cannot be checked" in failure.message


async def test_allow_writes_and_reports_a_label_the_webhook_added_counted_once() -> None:
    api = WebhookApi([_stamp_configuration()], stamped=True)
    progress = MigrationProgress()
    entry = ResourceProgress("", "v1", "configmaps")
    writer, _ = _writer(api, MutatingWebhookPolicy.ALLOW, progress)
    await writer.write(entry, _targets("mutated", "a"))
    assert api.patched == ["/api/v1/namespaces/mutated/configmaps/a"]
    assert api.answers == [PatchAnswer.METADATA]  # the answer must show the labels
    assert (entry.counts.failed, entry.counts.rewritten, entry.counts.done) == (1, 0, 1)
    (failure,) = progress.failures
    assert failure.reason == MUTATED_BY_WEBHOOK
    assert f"by mutating webhook {STAMP}" in failure.message
    assert "label stamped-by-webhook added" in failure.message


async def test_allow_does_not_report_an_object_no_webhook_intercepts() -> None:
    api = WebhookApi([_stamp_configuration()])
    progress = MigrationProgress()
    entry = ResourceProgress("", "v1", "configmaps")
    writer, _ = _writer(api, MutatingWebhookPolicy.ALLOW, progress)
    await writer.write(entry, [*_targets("mutated", "a"), *_targets("plain", "b")])
    await writer.write(entry, _targets("mutated", "from-etcd", listed=False))
    assert len(api.patched) == 3
    assert (entry.counts.unchanged, entry.counts.failed) == (3, 0)
    # Metadata only where it can be compared: the intercepted object with listed metadata.
    assert sorted(api.answers) == [PatchAnswer.METADATA, PatchAnswer.TABLE, PatchAnswer.TABLE]


async def test_without_a_guard_nothing_is_listed_and_every_object_is_written() -> None:
    api = WebhookApi([_stamp_configuration()])
    progress = MigrationProgress()
    writer, _ = _writer(api, None, progress)
    await writer.write(ResourceProgress("", "v1", "configmaps"), _targets("mutated", "a"))
    assert api.reads == []
    assert len(api.patched) == 1


async def test_configurations_are_read_again_for_each_resource_and_after_30_seconds() -> None:
    api = WebhookApi([_stamp_configuration()])
    now = [0.0]
    reader = WebhookReader(api, clock=lambda: now[0])
    guard = MutationGuard(api, MutatingWebhookPolicy.REFUSE, reader=reader, sleep=_no_sleep)
    await guard.prepare(CONFIGMAPS)
    await guard.prepare(CONFIGMAPS)
    assert reader.reads == 1
    now[0] = 31.0
    await guard.prepare(CONFIGMAPS)
    assert reader.reads == 2
    await guard.prepare(SECRETS)  # a new resource: webhooks may have come meanwhile
    assert reader.reads == 3
    # Namespaces are listed only where a namespaceSelector needs them (not for Secrets here).
    assert api.reads.count("/api/v1/namespaces") == 2


async def test_a_webhook_added_during_the_run_is_seen_at_the_next_read() -> None:
    api = WebhookApi([])
    progress = MigrationProgress()
    entry = ResourceProgress("", "v1", "configmaps")
    writer, _ = _writer(api, MutatingWebhookPolicy.REFUSE, progress)
    await writer.write(entry, _targets("mutated", "before"))
    api.configurations[MUTATING] = [_stamp_configuration()]
    secret = RewriteTarget(SECRETS, "mutated", "s", "100", "uid-s", listed=ListedMetadata())
    await writer.write(ResourceProgress("", "v1", "secrets"), [secret])  # the next resource: read again
    await writer.write(ResourceProgress("", "v1", "configmaps"), _targets("mutated", "after"))
    assert api.patched == [
        "/api/v1/namespaces/mutated/configmaps/before",
        "/api/v1/namespaces/mutated/secrets/s",
    ]
    assert [f.name for f in progress.failures] == ["after"]


async def test_a_transient_error_listing_configurations_is_retried() -> None:
    api = WebhookApi([_stamp_configuration()])
    api.failures = [ApiError(503, "ServiceUnavailable", "")]
    guard = MutationGuard(api, MutatingWebhookPolicy.REFUSE, sleep=_no_sleep)
    await guard.prepare(CONFIGMAPS)
    assert api.reads.count(MUTATING) == 2
    assert guard.refusal(CONFIGMAPS, "mutated", {}) is not None


async def test_refuse_ends_the_migration_when_webhooks_cannot_be_listed_allow_goes_on() -> None:
    api = WebhookApi([_stamp_configuration()])
    api.failures = [ApiError(403, "Forbidden", "")]
    with pytest.raises(MigrationFailed, match=r"HTTP 403 Forbidden.*mutatingwebhookconfigurations.*Allow"):
        await MutationGuard(api, MutatingWebhookPolicy.REFUSE, sleep=_no_sleep).prepare(CONFIGMAPS)
    api.failures = [ApiError(403, "Forbidden", "")]
    allow = MutationGuard(api, MutatingWebhookPolicy.ALLOW, sleep=_no_sleep)
    await allow.prepare(CONFIGMAPS)
    assert allow.intercepting(CONFIGMAPS, "mutated", {}) == []


async def test_preflight_lists_per_resource_the_webhooks_of_both_kinds_that_intercept_writes() -> None:
    api = WebhookApi([_stamp_configuration()])
    api.configurations[VALIDATING] = [
        {
            "metadata": {"name": "policy"},
            "webhooks": [
                {
                    "name": "deny.example.com",
                    "clientConfig": {"service": {"namespace": "hooks", "name": "deny", "port": 8443}},
                    "rules": [
                        {"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]}
                    ],
                    "failurePolicy": "Ignore",
                }
            ],
        }
    ]
    found = await intercepting_webhooks(api, [CONFIGMAPS, SECRETS])
    by_resource = {
        each.resource.resource: [(i.webhook.kind, i.webhook.name, i.certain) for i in each.interceptions]
        for each in found
    }
    assert by_resource == {
        "configmaps": [
            (WebhookKind.MUTATING, STAMP, False),
            (WebhookKind.VALIDATING, "deny.example.com", True),
        ],
        "secrets": [(WebhookKind.VALIDATING, "deny.example.com", True)],
    }
    validating = found[1].interceptions[0].webhook
    assert (validating.failure_policy, validating.endpoint) == ("Ignore", "service hooks/deny:8443")


def test_mutations_name_keys_never_values_and_ignore_a_table_answer() -> None:
    listed = ListedMetadata.of(
        {
            "labels": {"a": "1", "b": "2"},
            "annotations": {"note": "secret-ish value"},
            "finalizers": ["x"],
            "generation": 3,
        }
    )
    answer = {
        "kind": "PartialObjectMetadata",
        "metadata": {
            "uid": "u",
            "labels": {"a": "9", "c": "3"},
            "annotations": {"note": "another value"},
            "finalizers": ["x", "y"],
            "ownerReferences": [{"kind": "X", "name": "y", "uid": "z"}],
            "generation": 4,
        },
    }
    assert mutations(listed, answer) == [
        "label c added",
        "label b removed",
        "label a changed",
        "annotation note changed",
        "finalizers changed",
        "ownerReferences changed",
        "generation 3 -> 4 (its spec changed)",
    ]
    assert "value" not in " ".join(mutations(listed, answer))
    same = {"kind": "PartialObjectMetadata", "metadata": {"uid": "u", "labels": {"a": "1", "b": "2"}}}
    unchanged = ListedMetadata.of({"labels": {"a": "1", "b": "2"}})
    assert mutations(unchanged, same) == []
    # A Table answer has only a resourceVersion: no clause, not "every label removed".
    assert mutations(listed, {"kind": "Table", "metadata": {"resourceVersion": "5"}}) == []


def _policy(name: str, **constraints: Any) -> dict[str, Any]:
    rules = [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["configmaps"]}
    ]
    return {
        "metadata": {"name": name},
        "spec": {"matchConstraints": {"resourceRules": rules, **constraints}, "mutations": []},
    }


def _binding(policy: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": f"{policy}-binding"}, "spec": {"policyName": policy, **spec}}


async def test_a_bound_mutating_admission_policy_is_refused_like_a_webhook_an_unbound_one_is_not() -> None:
    api = WebhookApi([])
    api.configurations[POLICIES] = [
        _policy("add-owner"),
        _policy("never-bound"),
        _policy(
            "not-here",
            excludeResourceRules=[{**_policy("x")["spec"]["matchConstraints"]["resourceRules"][0]}],
        ),
        _policy("narrowed"),
    ]
    api.configurations[BINDINGS] = [
        _binding("add-owner"),
        _binding("not-here"),
        _binding("narrowed", matchResources={"namespaceSelector": {"matchLabels": {"team": "b"}}}),
    ]
    guard = MutationGuard(api, MutatingWebhookPolicy.REFUSE, sleep=_no_sleep)
    await guard.prepare(CONFIGMAPS)
    found = {i.webhook.name: i for i in guard.intercepting(CONFIGMAPS, "plain", {})}
    assert set(found) == {"add-owner", "narrowed"}  # unbound, and excluded, policies do nothing
    assert found["add-owner"].certain
    assert "bindings' matchResources are not evaluated" in found["narrowed"].describe()
    refusal = guard.refusal(CONFIGMAPS, "plain", {})
    assert refusal is not None
    assert "mutating admission policy add-owner (MutatingAdmissionPolicy)" in refusal


async def test_an_apiserver_that_serves_no_mutating_admission_policies_has_none() -> None:
    api = WebhookApi([_stamp_configuration()])
    del api.configurations[POLICIES]  # answered 404, as by an apiserver without the API
    guard = MutationGuard(api, MutatingWebhookPolicy.REFUSE, sleep=_no_sleep)
    await guard.prepare(CONFIGMAPS)
    assert [i.webhook.name for i in guard.intercepting(CONFIGMAPS, "mutated", {})] == [STAMP]
