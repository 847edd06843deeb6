"""The one error boundary: what an API, transport or etcd error means for a migration.

Every error ends up as one of five things, and only here is that decided:

- retry later: a transient answer (429, 5xx, 408, 401, timeout, no connection); the request is
  tried again under the transient policy (:func:`as_retryable`);
- final outcome for one object: 409 conflict, 404 gone, any other refusal (:func:`outcome_of_error`);
- stop: the migration was deleted or the operator exits (:class:`MigrationStopped`);
- infrastructure unavailable: retries ran out while etcd or the apiserver does not answer; the
  phase is kept, the status says what it waits for, and the driver tries again after a backoff
  (:class:`InfrastructureUnavailable`), never terminal. The apiserver failing to encrypt (its
  KMS plugin down, the key disabled) is one too (:class:`KmsUnavailable`): every write fails
  alike, so it is no outcome of any one object;
- fatal: the migration cannot go on as specified; it ends Failed with the reason (:class:`MigrationFailed`).

:func:`at_phase_level` maps what escapes a phase to the last three.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kube import KMS_PREFIX, ApiError, TransportError
from kms_storage_migrator.migration.outcome import Outcome
from kms_storage_migrator.migration.plan import PlanError
from kms_storage_migrator.migration.ratelimit import RetryableFailure, is_retryable_status, transient_retrying
from kms_storage_migrator.storage.etcd import EtcdUnavailable


class MigrationStopped(Exception):
    """The migration was asked to stop (deleted, or the operator is exiting): leave status as is."""


class MigrationFailed(Exception):
    """Fatal: the migration ends Failed; the message names the field or the cause."""


class DiscoveryError(Exception):
    """Discovery of a group kube-apiserver serves itself failed: migrating without it would be silent."""


APISERVER = "the apiserver"
ETCD = "etcd"
KMS = "the KMS"


class InfrastructureUnavailable(Exception):
    """etcd or the apiserver does not answer: keep the phase, say so, wait, try again."""

    def __init__(self, what: str, cause: str) -> None:
        super().__init__(f"{what} unavailable: {cause}")
        self.what = what
        self.cause = cause


@dataclass(frozen=True)
class KmsTrouble:
    """Why the apiserver cannot encrypt, from the content-free KMS summary kube.py keeps."""

    reason: str  # the Degraded condition's reason
    summary: str
    advice: str


KMS_UNAVAILABLE = "KMSUnavailable"
KMS_KEY_DISABLED = "KMSKeyDisabled"
_DISABLED_KEY = re.compile(r"key ([A-Za-z0-9._-]{1,128}) is disabled")
_SUMMARY_END = re.compile(r"[);]| InternalError")


def kms_trouble(text: str) -> KmsTrouble | None:
    """The KMS failure an error's text reports, or None when it reports none."""
    start = text.find(KMS_PREFIX)
    if start < 0:
        return None
    # kube.py's summary holds no ")" or ";": text after it is whoever quoted it (a failure message).
    summary = _SUMMARY_END.split(text[start + len(KMS_PREFIX) :], maxsplit=1)[0].strip()
    disabled = _DISABLED_KEY.search(summary)
    if disabled:
        key = disabled.group(1)
        advice = f"re-enable key {key} in your KMS (or rotate to a new key); the migration goes on by itself"
        return KmsTrouble(KMS_KEY_DISABLED, summary, advice)
    advice = (
        "make the KMS plugin answer again (is it running? can it reach its KMS?); "
        "the migration goes on by itself"
    )
    return KmsTrouble(KMS_UNAVAILABLE, summary, advice)


class KmsUnavailable(InfrastructureUnavailable):
    """The apiserver cannot encrypt: writes fail until its KMS plugin and key work again."""

    def __init__(self, trouble: KmsTrouble) -> None:
        super().__init__(
            KMS, f"the apiserver cannot encrypt: {trouble.summary}; what to do: {trouble.advice}"
        )
        self.trouble = trouble


class ResourceAbandoned(Exception):
    """Final for one resource (every write forbidden, a list that keeps expiring): move on."""


class RunAgainLater(Exception):
    """The final status could not be stored: the caller runs the migration again after a delay."""


def outcome_of_error(status: int) -> Outcome | None:
    """The final outcome an HTTP error status means for one object, or None to retry it."""
    if status == 409:
        return Outcome.CONFLICT
    if status == 404:
        return Outcome.GONE
    if is_retryable_status(status):
        return None
    return Outcome.REFUSED


def as_retryable(error: ApiError | TransportError) -> RetryableFailure | None:
    """The transient failure an error is (to be retried), or None when it is an answer to act on."""
    if isinstance(error, TransportError):
        return RetryableFailure("ConnectionError", str(error))
    if is_retryable_status(error.status):
        return RetryableFailure(error.reason, error.message, error.retry_after)
    return None


T = TypeVar("T")


async def with_transient_retries(
    request: Callable[[], Awaitable[T]],
    attempts: int,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """One read under the transient retry policy: a single 503 must not end or shrink a migration."""
    async for attempt in transient_retrying(attempts, sleep):
        with attempt:
            try:
                return await request()
            except (ApiError, TransportError) as error:
                retryable = as_retryable(error)
                if retryable is None:
                    raise
                raise retryable from error
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover


def at_phase_level(error: Exception) -> Exception | None:
    """What an error escaping a phase means: stop, unavailable or fatal; None if it is not ours."""
    if isinstance(error, MigrationStopped | MigrationFailed | InfrastructureUnavailable):
        return error
    if isinstance(error, EtcdUnavailable):
        return InfrastructureUnavailable(ETCD, str(error))
    if isinstance(error, RetryableFailure):
        # The request's own retries ran out: the apiserver is down or overloaded for a while.
        trouble = kms_trouble(error.message)
        return KmsUnavailable(trouble) if trouble else InfrastructureUnavailable(APISERVER, str(error))
    if isinstance(error, TransportError):
        return InfrastructureUnavailable(APISERVER, str(error))
    if isinstance(error, ApiError):
        if is_retryable_status(error.status):
            trouble = kms_trouble(error.message)
            if trouble:
                return KmsUnavailable(trouble)
            return InfrastructureUnavailable(APISERVER, f"{error.status} {error.reason}")
        return MigrationFailed(f"the apiserver refused a request the migration needs: {error}")
    if isinstance(error, PlanError | DiscoveryError | UserError):
        # UserError here is an etcd problem no wait fixes (certificates, permissions).
        return MigrationFailed(str(error))
    return None
