"""The no-op write that re-encrypts one object, with preconditions, retries and a named outcome.

The write carries the object's uid and resourceVersion, so it can only ever land on the exact
version that was listed: a concurrent change makes it fail with 409 instead of overwriting.
The apiserver stores the object anew only when its stored form is stale, so the answer's
resourceVersion says which happened (moved: rewritten; same: unchanged).

Admission still runs on the write. When asked to (``spec.mutatingWebhooks: Allow``, an object a
mutating webhook intercepts), the answer's metadata is compared with the listed metadata, and
what differs is in :attr:`RewriteResult.mutations` (``admission/mutation.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from kms_storage_migrator.admission.mutation import ListedMetadata, mutations
from kms_storage_migrator.kube import (
    APPLY_PATCH,
    FIELD_MANAGER,
    MERGE_PATCH,
    ApiError,
    PatchAnswer,
    TransportError,
)
from kms_storage_migrator.migration.boundary import outcome_of_error
from kms_storage_migrator.migration.outcome import Outcome
from kms_storage_migrator.migration.ports import PatchPort

# The retry policy lives with the limiter: discovery and listing use it too.
from kms_storage_migrator.migration.ratelimit import AdaptiveRateLimiter, RetryableFailure, transient_retrying
from kms_storage_migrator.migration.resource_choice import ServedResource


class RewriteMethod(StrEnum):
    MERGE_PATCH = "merge-patch"  # {"metadata": {"uid", "resourceVersion"}}
    APPLY = "apply"  # server-side apply of apiVersion, kind and the same metadata


@dataclass(frozen=True)
class RewriteTarget:
    """One object to rewrite, identified by name and pinned to one version."""

    resource: ServedResource
    namespace: str | None
    name: str
    resource_version: str
    uid: str | None = None  # unknown in Targeted mode (etcd values stay encrypted to us)
    # What the list showed of its metadata (Full mode): labels for webhook selectors, and the
    # reference that tells a change made by admission on our write. None: unknown (Targeted).
    listed: ListedMetadata | None = None

    def describe(self) -> str:
        return (
            f"{self.resource.name} {self.namespace}/{self.name}"
            if self.namespace
            else (f"{self.resource.name} {self.name}")
        )


@dataclass(frozen=True)
class RewriteResult:
    target: RewriteTarget
    outcome: Outcome
    attempts: int
    new_resource_version: str | None = None
    reason: str = ""
    message: str = ""
    # What admission changed on this write, one clause each (only when the write was watched).
    mutations: tuple[str, ...] = ()


class RewriteObserver(Protocol):
    """Where request timings and retries go (Prometheus in the operator, nothing in tests)."""

    def request_done(self, resource: str, code: str, seconds: float) -> None: ...

    def retried(self, resource: str, reason: str) -> None: ...

    def walk_restarted(self, resource: str, cause: str) -> None:
        """A walk had to read again: an expired continue token, or etcd compacted its revision."""


class NoObserver:
    def request_done(self, resource: str, code: str, seconds: float) -> None:
        return None

    def retried(self, resource: str, reason: str) -> None:
        return None

    def walk_restarted(self, resource: str, cause: str) -> None:
        return None


def error_message(error: ApiError) -> str:
    """What a failure records: the HTTP code always, and the message kube.py judged safe to keep."""
    return f"HTTP {error.status}: {error.message}" if error.message else f"HTTP {error.status}"


def outcome_of_success(sent_resource_version: str, returned_resource_version: str | None) -> Outcome:
    """A write that stored nothing keeps the resourceVersion; one that re-encrypted moves it."""
    if returned_resource_version and returned_resource_version != sent_resource_version:
        return Outcome.REWRITTEN
    return Outcome.UNCHANGED


def rewrite_body(target: RewriteTarget, method: RewriteMethod) -> dict[str, Any]:
    metadata: dict[str, Any] = {"resourceVersion": target.resource_version}
    if target.uid:
        metadata["uid"] = target.uid
    if method is RewriteMethod.MERGE_PATCH:
        return {"metadata": metadata}
    metadata["name"] = target.name
    if target.namespace:
        metadata["namespace"] = target.namespace
    return {"apiVersion": target.resource.api_version, "kind": target.resource.kind, "metadata": metadata}


class Rewriter:
    """Rewrites objects one at a time per call; safe to call from many tasks at once."""

    def __init__(
        self,
        api: PatchPort,
        limiter: AdaptiveRateLimiter,
        *,
        max_attempts: int,
        method: RewriteMethod = RewriteMethod.MERGE_PATCH,
        observer: RewriteObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._api = api
        self._limiter = limiter
        self._max_attempts = max_attempts
        self._method = method
        self._observer: RewriteObserver = observer or NoObserver()
        self._sleep = sleep

    async def rewrite(self, target: RewriteTarget, *, watch: bool = False) -> RewriteResult:
        """Write one object; ``watch``: compare the answer with ``target.listed`` (see mutations)."""
        attempts = 0
        retrying = transient_retrying(self._max_attempts, self._sleep)
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    if attempts > 1:
                        self._observer.retried(target.resource.name, "transient")
                    return await self._attempt(target, attempts, watch)
        except RetryableFailure as failure:
            return RewriteResult(
                target, Outcome.EXHAUSTED, attempts, reason=failure.reason, message=failure.message
            )
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover

    async def _attempt(self, target: RewriteTarget, attempts: int, watch: bool) -> RewriteResult:
        await self._limiter.acquire()
        path = target.resource.object_path(target.namespace, target.name)
        content_type = MERGE_PATCH if self._method is RewriteMethod.MERGE_PATCH else APPLY_PATCH
        params = {"fieldManager": FIELD_MANAGER}
        if self._method is RewriteMethod.APPLY:
            params["force"] = "true"
        started = time.monotonic()
        try:
            if watch:
                # The answer must carry the object's metadata to show what admission changed.
                body = await self._api.patch(
                    path,
                    rewrite_body(target, self._method),
                    content_type=content_type,
                    params=params,
                    answer=PatchAnswer.METADATA,
                )
            else:
                body = await self._api.patch(
                    path, rewrite_body(target, self._method), content_type=content_type, params=params
                )
        except TransportError as error:
            # Unreachable is not overloaded: the backoff paces the retries, and the rate stays.
            self._observer.request_done(target.resource.name, "transport", time.monotonic() - started)
            raise RetryableFailure("ConnectionError", str(error)) from error
        except ApiError as error:
            self._observer.request_done(target.resource.name, str(error.status), time.monotonic() - started)
            outcome = outcome_of_error(error.status)
            if outcome is None:
                if error.status == 429 or error.status >= 500:
                    self._limiter.overloaded()
                raise RetryableFailure(error.reason, error_message(error), error.retry_after) from error
            return RewriteResult(target, outcome, attempts, reason=error.reason, message=error_message(error))
        self._observer.request_done(target.resource.name, "200", time.monotonic() - started)
        self._limiter.succeeded()
        returned = str((body.get("metadata") or {}).get("resourceVersion") or "") or None
        outcome = outcome_of_success(target.resource_version, returned)
        changed = tuple(mutations(target.listed, body)) if watch and target.listed is not None else ()
        return RewriteResult(target, outcome, attempts, new_resource_version=returned, mutations=changed)
