"""The rewrite engine's decisions: outcome per answer, retries, Retry-After, attempt cap.

The apiserver is replaced here by a scripted stand-in because these are unit tests of the
engine's own logic; the integration tests run the same engine against the real apiserver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from kms_storage_migrator.kube import APPLY_PATCH, MERGE_PATCH, ApiError, TransportError
from kms_storage_migrator.migration.discovery import ServedResource
from kms_storage_migrator.migration.progress import Outcome
from kms_storage_migrator.migration.ratelimit import AdaptiveRateLimiter
from kms_storage_migrator.migration.rewrite import (
    RewriteMethod,
    Rewriter,
    RewriteTarget,
    outcome_of_error,
    outcome_of_success,
    rewrite_body,
)

SECRETS = ServedResource("", "v1", "secrets", "Secret", True, frozenset({"list", "patch"}))
ROLES = ServedResource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False)
TARGET = RewriteTarget(SECRETS, "team-a", "db", "100", "uid-1")


class ScriptedApi:
    """Answers each patch with the next scripted reply (a resourceVersion or an exception)."""

    def __init__(self, *replies: str | Exception) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[str, Mapping[str, Any], str, Mapping[str, str] | None]] = []

    async def patch(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        content_type: str = MERGE_PATCH,
        metadata_only: bool = True,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        self.calls.append((path, body, content_type, params))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return {"metadata": {"resourceVersion": reply}}


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def _rewriter(api: ScriptedApi, *, attempts: int = 5, method: RewriteMethod = RewriteMethod.MERGE_PATCH):
    sleeps = Sleeps()
    limiter = AdaptiveRateLimiter(1000, sleep=sleeps)
    rewriter = Rewriter(api, limiter, max_attempts=attempts, method=method, sleep=sleeps)  # type: ignore[arg-type]
    return rewriter, limiter, sleeps


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (409, Outcome.CONFLICT),
        (404, Outcome.GONE),
        (403, Outcome.REFUSED),
        (422, Outcome.REFUSED),
        (400, Outcome.REFUSED),
        (429, None),
        (500, None),
        (503, None),
        (504, None),
        (408, None),
        (401, None),
    ],
)
def test_error_status_to_outcome(status: int, expected: Outcome | None) -> None:
    assert outcome_of_error(status) is expected


def test_moved_resource_version_means_rewritten() -> None:
    assert outcome_of_success("100", "101") is Outcome.REWRITTEN


def test_same_resource_version_means_unchanged() -> None:
    assert outcome_of_success("100", "100") is Outcome.UNCHANGED


def test_merge_patch_body_carries_only_the_preconditions() -> None:
    assert rewrite_body(TARGET, RewriteMethod.MERGE_PATCH) == {
        "metadata": {"resourceVersion": "100", "uid": "uid-1"}
    }


def test_targeted_body_without_uid_still_pins_the_resource_version() -> None:
    target = RewriteTarget(SECRETS, "team-a", "db", "7")
    assert rewrite_body(target, RewriteMethod.MERGE_PATCH) == {"metadata": {"resourceVersion": "7"}}


def test_apply_body_names_the_object_like_the_in_tree_migrator() -> None:
    target = RewriteTarget(ROLES, None, "admin", "5", "u")
    assert rewrite_body(target, RewriteMethod.APPLY) == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"resourceVersion": "5", "uid": "u", "name": "admin"},
    }


async def test_rewrite_patches_the_object_path_with_a_field_manager() -> None:
    api = ScriptedApi("101")
    rewriter, _, _ = _rewriter(api)
    result = await rewriter.rewrite(TARGET)
    assert result.outcome is Outcome.REWRITTEN
    assert result.new_resource_version == "101"
    path, _, content_type, params = api.calls[0]
    assert path == "/api/v1/namespaces/team-a/secrets/db"
    assert content_type == MERGE_PATCH
    assert params == {"fieldManager": "kms-storage-migrator"}


async def test_apply_method_forces_ownership() -> None:
    api = ScriptedApi("100")
    rewriter, _, _ = _rewriter(api, method=RewriteMethod.APPLY)
    assert (await rewriter.rewrite(TARGET)).outcome is Outcome.UNCHANGED
    assert api.calls[0][2] == APPLY_PATCH
    assert api.calls[0][3] == {"fieldManager": "kms-storage-migrator", "force": "true"}


async def test_conflict_is_final_and_never_retried() -> None:
    api = ScriptedApi(ApiError(409, "Conflict", "the object has been modified"))
    rewriter, _, _ = _rewriter(api)
    result = await rewriter.rewrite(TARGET)
    assert (result.outcome, result.attempts, len(api.calls)) == (Outcome.CONFLICT, 1, 1)


async def test_webhook_denial_is_refused_once_with_its_message() -> None:
    denial = ApiError(400, "BadRequest", 'admission webhook "deny.example.com" denied the request: no')
    api = ScriptedApi(denial)
    rewriter, _, _ = _rewriter(api)
    result = await rewriter.rewrite(TARGET)
    assert result.outcome is Outcome.REFUSED
    assert "denied the request" in result.message
    assert len(api.calls) == 1


async def test_transient_errors_are_retried_then_succeed() -> None:
    api = ScriptedApi(ApiError(503, "ServiceUnavailable", "busy"), TransportError("reset"), "101")
    rewriter, _, sleeps = _rewriter(api)
    result = await rewriter.rewrite(TARGET)
    assert (result.outcome, result.attempts) == (Outcome.REWRITTEN, 3)
    assert len(sleeps.delays) == 2


async def test_never_more_than_max_attempts() -> None:
    api = ScriptedApi(*[ApiError(500, "InternalError", "boom")] * 10)
    rewriter, _, _ = _rewriter(api, attempts=3)
    result = await rewriter.rewrite(TARGET)
    assert result.outcome is Outcome.EXHAUSTED
    assert result.attempts == 3
    assert len(api.calls) == 3


async def test_retry_after_is_a_floor_for_the_backoff() -> None:
    api = ScriptedApi(ApiError(429, "TooManyRequests", "slow down", retry_after=7), "101")
    rewriter, _, sleeps = _rewriter(api)
    await rewriter.rewrite(TARGET)
    assert sleeps.delays == [7]  # the first backoff is at most 1 s: Retry-After wins


async def test_backoff_has_full_jitter_within_the_exponential_cap() -> None:
    api = ScriptedApi(*[ApiError(500, "InternalError", "x")] * 4, "101")
    rewriter, _, sleeps = _rewriter(api)
    await rewriter.rewrite(TARGET)
    caps = [0.5 * 2**n for n in range(4)]
    assert all(0 <= delay <= cap for delay, cap in zip(sleeps.delays, caps, strict=True))


async def test_overload_answers_slow_the_shared_limiter_down() -> None:
    api = ScriptedApi(ApiError(429, "TooManyRequests", "x"), ApiError(503, "ServiceUnavailable", "y"), "101")
    rewriter, limiter, _ = _rewriter(api)
    await rewriter.rewrite(TARGET)
    assert limiter.current_qps == 250


async def test_refusals_do_not_slow_the_limiter() -> None:
    api = ScriptedApi(ApiError(403, "Forbidden", "no"))
    rewriter, limiter, _ = _rewriter(api)
    await rewriter.rewrite(TARGET)
    assert limiter.current_qps == 1000
