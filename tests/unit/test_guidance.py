"""Each failure reason maps to a next step that names what to change (pure table)."""

from __future__ import annotations

import pytest

from kms_storage_migrator.migration.guidance import FALLBACK, what_to_do


@pytest.mark.parametrize(
    ("reason", "message", "resource", "expected"),
    [
        (
            "BadRequest",
            "denied by admission webhook deny.example.com",
            "core/configmaps",
            ["deny.example.com", "spec.resources.exclude", "core/configmaps"],
        ),
        # A denial is about the webhook whatever Status reason it came with.
        (
            "Forbidden",
            "denied by admission webhook deny.example.com",
            "core/configmaps",
            ["admission webhook deny.example.com"],
        ),
        (
            "InternalError",
            "admission webhook slow.example.com could not be called (its failurePolicy is Fail)",
            "apps/deployments",
            ["slow.example.com", "failurePolicy", "Service"],
        ),
        ("Invalid", "denied by ValidatingAdmissionPolicy no-edits", "core/secrets", ["no-edits", "binding"]),
        (
            "Forbidden",
            'secrets "s" is forbidden: User ... cannot patch',
            "core/secrets",
            ["grant 'patch'", "kubectl auth can-i patch secrets", "spec.resources.exclude"],
        ),
        ("Invalid", "invalid fields: spec.replicas", "apps/deployments", ["kubectl edit"]),
        (
            "CannotDecrypt",
            "the apiserver cannot decrypt it: etcd holds it under aescbc key 'retired-key'",
            "core/configmaps",
            ["secondary provider", "new migration", "kubernetes.io/docs"],
        ),
        (
            "StorageReadError",
            "the apiserver cannot decode stored object(s): /registry/secrets/a/b",
            "core/secrets",
            ["EncryptionConfiguration", "kubernetes.io/docs"],
        ),
        (
            "InternalError",
            "",
            "core/secrets",
            ["500", "KMS provider or key no longer configured", "kubernetes.io/docs"],
        ),
        ("Conflict", "", "core/configmaps", ["re-encrypted"]),
        ("NotFound", "", "core/configmaps", ["deleted meanwhile"]),
        ("Timeout", "", "core/configmaps", ["Timeout", "spec.qps", "maxAttemptsPerObject"]),
        ("TooManyRequests", "", "core/configmaps", ["TooManyRequests", "spec.qps"]),
        # The mutation guard's failures: not written (Refuse), and written but changed (Allow).
        (
            "MutatingWebhook",
            "mutating webhook stamp.example.com (MutatingWebhookConfiguration stamp) intercepts the "
            "write: not written, it could change the object (spec.mutatingWebhooks is Refuse)",
            "core/configmaps",
            [
                "mutating webhook stamp.example.com",
                "namespaceSelector or objectSelector",
                "request.userInfo.username",
                "spec.mutatingWebhooks: Allow",
            ],
        ),
        (
            "MutatingWebhook",
            "mutating admission policy add-owner (MutatingAdmissionPolicy) intercepts the write: not written",
            "core/configmaps",
            ["mutating admission policy add-owner", "make the admission policy skip"],
        ),
        (
            "MutatedByWebhook",
            "changed on the no-op write by mutating webhook stamp.example.com: label x added",
            "core/configmaps",
            ["admission (stamp.example.com) changed the object", "put them back"],
        ),
        (
            "MutatedByWebhook",
            "changed on the no-op write by admission (a mutating webhook or policy): label x added",
            "core/configmaps",
            ["admission (a mutating webhook) changed the object"],
        ),
    ],
)
def test_each_reason_says_what_to_do(reason: str, message: str, resource: str, expected: list[str]) -> None:
    advice = what_to_do(reason, message, resource)
    for fragment in expected:
        assert fragment in advice, advice
    assert "\n" not in advice


def test_an_unknown_reason_still_gets_a_next_step() -> None:
    assert what_to_do("Teapot", "", "core/configmaps") == FALLBACK


def test_advice_never_repeats_the_message_beyond_names() -> None:
    """The message is already free of object data; the advice quotes only the webhook name."""
    message = "denied by admission webhook deny.example.com"
    advice = what_to_do("BadRequest", message, "core/configmaps")
    assert message not in advice
