"""A KMS that fails under the apiserver: what its errors keep, what they mean, and what status says.

The error texts are the real kube-apiserver 1.37.2 answers measured on the dev cluster (a disabled
primary key; the plugin stopped).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kms_storage_migrator.kube import ApiError, _health_answer, api_error, safe_message
from kms_storage_migrator.migration.boundary import (
    KMS,
    KMS_KEY_DISABLED,
    KMS_UNAVAILABLE,
    InfrastructureUnavailable,
    KmsUnavailable,
    at_phase_level,
    kms_trouble,
)
from kms_storage_migrator.migration.conditions import KMS_AVAILABLE
from kms_storage_migrator.migration.outage import (
    KMS_CHECK_INTERVAL,
    KMS_CHECK_PATH,
    READINESS_PATH,
    OutageWatch,
)
from kms_storage_migrator.migration.progress import MAX_FAILURES, Failure, MigrationProgress, Phase, to_status
from kms_storage_migrator.migration.ratelimit import RetryableFailure
from kms_storage_migrator.migration.status_publisher import NullObserver, StatusPublisher

HASH = "sha256:" + "3d" * 32
DEK_EXPIRED = {
    "kind": "Status",
    "status": "Failure",
    "reason": "InternalError",
    "code": 500,
    "message": (
        f'Internal error occurred: encryptedDEKSource with keyID hash "{HASH}" expired at '
        "2026-12-01T13:45:08Z (current time is 2026-12-01T13:45:10Z)"
    ),
}
KEY_DISABLED_CHECK = (
    "internal server error: kms-provider-0: failed to perform status section of the healthz check "
    "for KMS Provider local-kms, error: rpc error: code = FailedPrecondition desc = primary "
    "KMS_KEY_DISABLED: key kek-2 is disabled (state: disabled); enable it with `kms-storage-migrator "
    "kms-plugin enable kek-2`; enable it or rotate to a new key"
)
PLUGIN_GONE_CHECK = (
    "internal server error: kms-provider-0: failed to perform status section of the healthz check "
    "for KMS Provider local-kms, error: rpc error: code = Unavailable desc = connection error: desc = "
    '"transport: Error while dialing: dial unix /tmp/x/kms.sock: connect: no such file or directory"'
)


def health_error(text: str, path: str = KMS_CHECK_PATH) -> ApiError:
    return api_error(500, _health_answer(path, text))


# --- what kube.py keeps ------------------------------------------------------------------


def test_an_expired_dek_seed_keeps_the_key_hash_and_time_only() -> None:
    message = safe_message("InternalError", DEK_EXPIRED)
    assert message.startswith("KMS: the apiserver's DEK seed under key id hash " + HASH)
    assert "expired at 2026-12-01T13:45:08Z" in message
    assert "current time" not in message


def test_a_failing_kms_check_keeps_provider_code_and_disabled_key() -> None:
    error = health_error(KEY_DISABLED_CHECK)
    assert error.status == 500
    assert error.message == (
        "KMS: provider local-kms: gRPC FailedPrecondition: KMS_KEY_DISABLED: key kek-2 is disabled"
    )
    gone = health_error(PLUGIN_GONE_CHECK).message
    assert gone == "KMS: provider local-kms: gRPC Unavailable"
    assert "/tmp/x" not in gone


def test_plain_text_errors_are_kept_only_from_health_paths() -> None:
    assert _health_answer("/api/v1/namespaces/a/configmaps/b", KEY_DISABLED_CHECK) == {}
    assert _health_answer("/readyz?verbose", "[-]kms-providers failed") != {}
    assert api_error(500, _health_answer("/api/v1/x", KEY_DISABLED_CHECK)).message == ""


def test_text_that_only_looks_like_kms_is_dropped_outside_server_errors() -> None:
    # A webhook's or admission's free text could say anything: only server errors are read.
    crafted = {"reason": "BadRequest", "message": "kms-provider: key hunter2 is disabled"}
    assert safe_message("BadRequest", crafted) == ""
    assert safe_message("InternalError", {"message": "etcdserver: request timed out"}) == ""


# --- what the boundary makes of it ----------------------------------------------------------


def test_a_disabled_key_says_which_key_to_re_enable() -> None:
    trouble = kms_trouble(health_error(KEY_DISABLED_CHECK).message)
    assert trouble is not None
    assert trouble.reason == KMS_KEY_DISABLED
    assert "re-enable key kek-2 in your KMS" in trouble.advice


def test_a_plugin_that_does_not_answer_is_kms_unavailable() -> None:
    trouble = kms_trouble("HTTP 500: " + safe_message("InternalError", DEK_EXPIRED))
    assert trouble is not None
    assert trouble.reason == KMS_UNAVAILABLE
    assert kms_trouble("HTTP 500: ") is None


def test_writes_that_ran_out_of_retries_on_a_kms_error_are_a_kms_outage() -> None:
    message = "HTTP 500: " + safe_message("InternalError", DEK_EXPIRED)
    meaning = at_phase_level(RetryableFailure("InternalError", message))
    assert isinstance(meaning, KmsUnavailable)
    assert meaning.what == KMS
    other = at_phase_level(RetryableFailure("InternalError", "HTTP 500"))
    assert isinstance(other, InfrastructureUnavailable)
    assert not isinstance(other, KmsUnavailable)


# --- the condition ----------------------------------------------------------------------


def degraded(progress: MigrationProgress) -> dict[str, Any]:
    conditions = to_status(progress, "2026-12-01T00:00:00Z")["conditions"]
    return next(c for c in conditions if c["type"] == "Degraded")


def kms_down(phase: Phase) -> MigrationProgress:
    progress = MigrationProgress(phase=phase)
    progress.conditions = [
        {"type": KMS_AVAILABLE, "status": "False", "reason": KMS_KEY_DISABLED, "message": "re-enable"}
    ]
    return progress


def test_degraded_names_the_kms_while_the_migration_is_active() -> None:
    condition = degraded(kms_down(Phase.MIGRATING))
    assert (condition["status"], condition["reason"], condition["message"]) == (
        "True",
        KMS_KEY_DISABLED,
        "re-enable",
    )
    assert degraded(kms_down(Phase.SUCCEEDED))["status"] == "False"


# --- the watch ----------------------------------------------------------------------------


class Api:
    """get_json answers from a table per path; anything else is not asked here."""

    def __init__(self) -> None:
        self.answers: dict[str, Exception | None] = {READINESS_PATH: None, KMS_CHECK_PATH: None}
        self.calls: list[str] = []

    async def get_json(self, path: str) -> dict[str, Any]:
        self.calls.append(path)
        answer = self.answers[path]
        if answer is not None:
            raise answer
        return {}

    async def list_metadata(self, path: str, *, limit: int, continue_token: str | None) -> dict[str, Any]:
        raise AssertionError("not used")

    async def patch(
        self, path: str, body: Any, *, content_type: str = "", params: Any = None
    ) -> dict[str, Any]:
        raise AssertionError("not used")


class Sink:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []

    async def publish(self, status: dict[str, Any]) -> None:
        self.published.append(status)

    async def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def no_sleep(seconds: float) -> None:
    return None


def watch(api: Api, sink: Sink, clock: Clock) -> tuple[OutageWatch, MigrationProgress]:
    progress = MigrationProgress(phase=Phase.MIGRATING)
    publisher = StatusPublisher(progress, sink, NullObserver(), interval=0)
    outage = OutageWatch(
        api,
        None,
        probe_key="/registry",
        progress=progress,
        publisher=publisher,
        sink=sink,
        sleep=no_sleep,
        check_stop=lambda: None,
        clock=clock,
    )
    return outage, progress


def stored_degraded(sink: Sink) -> dict[str, Any]:
    return next(c for c in sink.published[-1]["conditions"] if c["type"] == "Degraded")


def test_a_failing_kms_check_is_stored_while_writes_still_land_then_cleared() -> None:
    api, sink, clock = Api(), Sink(), Clock()
    outage, progress = watch(api, sink, clock)

    asyncio.run(outage.settled())
    assert KMS_CHECK_PATH not in api.calls  # not before one interval: short runs ask nothing

    api.answers[KMS_CHECK_PATH] = health_error(KEY_DISABLED_CHECK)
    clock.now += KMS_CHECK_INTERVAL
    asyncio.run(outage.settled())
    condition = stored_degraded(sink)
    assert (condition["status"], condition["reason"]) == ("True", KMS_KEY_DISABLED)
    assert "re-enable key kek-2" in condition["message"]
    assert [e[1] for e in sink.events] == [KMS_KEY_DISABLED]

    clock.now += KMS_CHECK_INTERVAL / 2
    asyncio.run(outage.settled())
    assert api.calls.count(KMS_CHECK_PATH) == 1  # at most once per interval

    api.answers[KMS_CHECK_PATH] = None
    clock.now += KMS_CHECK_INTERVAL
    asyncio.run(outage.settled())
    assert stored_degraded(sink)["status"] == "False"
    kms = next(c for c in progress.conditions if c["type"] == KMS_AVAILABLE)
    assert kms["status"] == "True"


def test_an_apiserver_without_a_kms_check_is_not_asked_again() -> None:
    api, sink, clock = Api(), Sink(), Clock()
    outage, progress = watch(api, sink, clock)
    api.answers[KMS_CHECK_PATH] = ApiError(404, "NotFound", "")
    for _ in range(3):
        clock.now += KMS_CHECK_INTERVAL
        asyncio.run(outage.settled())
    assert api.calls.count(KMS_CHECK_PATH) == 1
    assert not any(c.get("type") == KMS_AVAILABLE for c in progress.conditions)


def test_unready_because_of_the_kms_is_a_kms_outage_and_its_wait_says_so() -> None:
    api, sink, clock = Api(), Sink(), Clock()
    outage, progress = watch(api, sink, clock)
    api.answers[READINESS_PATH] = health_error("[-]kms-providers failed: reason withheld", READINESS_PATH)
    api.answers[KMS_CHECK_PATH] = health_error(KEY_DISABLED_CHECK)
    with pytest.raises(KmsUnavailable) as raised:
        asyncio.run(outage.require_available())
    assert raised.value.trouble.reason == KMS_KEY_DISABLED

    async def wait_then_recover() -> None:
        recovered = iter([False, True])

        async def sleep(seconds: float) -> None:
            if next(recovered):
                api.answers[READINESS_PATH] = api.answers[KMS_CHECK_PATH] = None

        outage._sleep = sleep
        await outage.wait_out(raised.value)

    asyncio.run(wait_then_recover())
    waiting = [s["message"] for s in sink.published]
    assert all("re-enable key kek-2" in m and "phase Migrating kept" in m for m in waiting), waiting
    assert any("retry 2 in 4s" in m for m in waiting)  # the wait backs off
    assert stored_degraded(sink)["reason"] == KMS_KEY_DISABLED
    asyncio.run(outage.settled())
    kms = next(c for c in progress.conditions if c["type"] == KMS_AVAILABLE)
    assert kms["status"] == "True"


def test_a_kms_check_without_the_provider_name_names_the_check() -> None:
    text = "internal server error: kms-provider-0: rpc error: code = FailedPrecondition desc = x"
    assert health_error(text).message == "KMS: provider kms-provider-0: gRPC FailedPrecondition"


def test_a_page_whose_writes_failed_on_the_kms_is_an_outage_even_when_readyz_passes() -> None:
    api, sink, clock = Api(), Sink(), Clock()
    outage, progress = watch(api, sink, clock)
    api.answers[KMS_CHECK_PATH] = health_error(KEY_DISABLED_CHECK)
    clock.now += KMS_CHECK_INTERVAL
    asyncio.run(outage.settled())  # the check fails while writes still land: the key is named
    api.answers[KMS_CHECK_PATH] = None  # then it answers from a cache, and /readyz passes
    expired = "HTTP 500: " + safe_message("InternalError", DEK_EXPIRED)
    progress.record_failure(Failure("core/configmaps", "a", "b", "InternalError", expired))
    with pytest.raises(KmsUnavailable) as raised:
        asyncio.run(outage.require_available())
    assert raised.value.trouble.reason == KMS_KEY_DISABLED  # the write's text, named by the check

    # Once the page is committed (its failures final), they are no longer the page's own.
    asyncio.run(outage.settled())
    asyncio.run(outage.require_available())


def test_the_wait_goes_on_until_a_write_lands_not_just_until_readyz_passes() -> None:
    api, sink, clock = Api(), Sink(), Clock()
    outage, progress = watch(api, sink, clock)
    # Status writes refused: each wait's own status update, then its probe; the 4th lands.
    refusals = [api_error(500, DEK_EXPIRED)] * 3

    async def publish(status: dict[str, Any]) -> None:
        if refusals:
            raise refusals.pop()
        sink.published.append(status)

    sink.publish = publish  # type: ignore[method-assign]
    trouble = kms_trouble("HTTP 500: " + safe_message("InternalError", DEK_EXPIRED))
    assert trouble is not None
    asyncio.run(outage.wait_out(KmsUnavailable(trouble)))
    assert not refusals
    assert "retry 2 in 4s" in progress.message  # the first probe refused: it waited again


def test_a_full_failure_list_is_not_mistaken_for_the_page_s_own_failures() -> None:
    api, sink, clock = Api(), Sink(), Clock()
    outage, progress = watch(api, sink, clock)
    expired = "HTTP 500: " + safe_message("InternalError", DEK_EXPIRED)
    for index in range(MAX_FAILURES):  # committed long ago; the last one a KMS error
        message = expired if index == MAX_FAILURES - 1 else "HTTP 403"
        progress.record_failure(Failure("core/configmaps", "a", f"o{index}", "Forbidden", message))
    asyncio.run(outage.settled())
    progress.record_failure(Failure("core/configmaps", "a", "new", "Forbidden", "HTTP 403"))
    asyncio.run(outage.require_available())  # the list keeps the first failures, not this one


def test_a_kms_summary_quoted_inside_another_message_is_cut_out_of_it() -> None:
    quoted = (
        "the apiserver cannot decrypt it (HTTP 500: " + safe_message("InternalError", DEK_EXPIRED) + " "
        "InternalError on every try): etcd holds it under KMS v2 provider 'local-kms'; add that key back"
    )
    trouble = kms_trouble(quoted)
    assert trouble is not None
    assert trouble.summary.endswith("no healthy answer from its KMS plugin for 3 minutes"), trouble.summary
