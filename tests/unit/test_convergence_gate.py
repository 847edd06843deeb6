"""The gate's rule: assess() over live identities and scraped key observations."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from kms_storage_migrator.convergence.gate import (
    NO_METRICS_SAFE_WAIT_SECONDS,
    STATUS_POLL_SECONDS,
    Converged,
    Lag,
    NoMetricsAccess,
    Waiting,
    assess,
)
from kms_storage_migrator.convergence.identity import ApiserverIdentity
from kms_storage_migrator.convergence.keyids import key_id_hash
from kms_storage_migrator.convergence.metrics import (
    ApiserverKeys,
    KeySighting,
    ProviderKeys,
    parse_apiserver_keys,
)

A, B = key_id_hash("kek-1"), key_id_hash("kek-2")
RENEWED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
START = 1000.0


def _identity(name: str) -> ApiserverIdentity:
    return ApiserverIdentity(name, "host", RENEWED, 3600)


def _keys(
    identity: ApiserverIdentity,
    status: tuple[str, float] | None,
    write: tuple[str, float] | None,
    provider: str = "kms",
) -> ApiserverKeys:
    return ApiserverKeys(
        identity.id_hash,
        (
            ProviderKeys(
                provider,
                KeySighting(*status) if status else None,
                KeySighting(*write) if write else None,
            ),
        ),
    )


ONE, TWO = _identity("apiserver-one"), _identity("apiserver-two")


def test_converged_when_every_apiserver_polled_after_start_and_writes_with_that_key() -> None:
    answers = {
        ONE.id_hash: [_keys(ONE, (B, START + 30), (B, START + 31))],
        TWO.id_hash: [_keys(TWO, (B, START + 50), (B, START + 52))],
    }
    result = assess([ONE, TWO], answers, START)
    assert result == Converged({"kms": B}, ("apiserver-one", "apiserver-two"))
    assert isinstance(result, Converged)
    assert result.key_id_hash == B
    assert "all 2 apiservers" in result.message


def test_a_status_poll_before_the_start_does_not_count() -> None:
    # The rotation happened just before the start: the last poll still saw kek-1.
    answers = {ONE.id_hash: [_keys(ONE, (A, START - 5), (A, START + 3))]}
    result = assess([ONE], answers, START)
    assert isinstance(result, Waiting)
    (lag,) = result.lagging
    assert (lag.apiserver_id, lag.reason) == ("apiserver-one", Lag.NO_STATUS_SINCE_START)
    assert lag.write_key_id_hash == A
    assert "apiserver-one has not polled its KMS Status" in result.message
    assert f"writes with {A[:19]}" in result.message


def test_a_poll_exactly_at_the_start_does_not_count_either() -> None:
    answers = {ONE.id_hash: [_keys(ONE, (B, START), (B, START + 1))]}
    assert isinstance(assess([ONE], answers, START), Waiting)


def test_new_status_key_but_last_write_with_the_old_one_waits_and_names_both() -> None:
    answers = {ONE.id_hash: [_keys(ONE, (B, START + 10), (A, START + 8))]}
    result = assess([ONE], answers, START)
    assert isinstance(result, Waiting)
    (lag,) = result.lagging
    assert lag.reason is Lag.WRITES_OTHER_KEY
    assert (lag.status_key_id_hash, lag.write_key_id_hash) == (B, A)
    assert f"latest Status {B[:19]}" in result.message


def test_apiservers_that_disagree_are_all_named_with_their_keys() -> None:
    # Each is consistent with its own plugin, but the plugins report different keys.
    answers = {
        ONE.id_hash: [_keys(ONE, (A, START + 10), (A, START + 11))],
        TWO.id_hash: [_keys(TWO, (B, START + 10), (B, START + 11))],
    }
    result = assess([ONE, TWO], answers, START)
    assert isinstance(result, Waiting)
    assert {(lag.apiserver_id, lag.reason, lag.write_key_id_hash) for lag in result.lagging} == {
        ("apiserver-one", Lag.DISAGREES, A),
        ("apiserver-two", Lag.DISAGREES, B),
    }


def test_a_live_apiserver_that_never_answered_holds_the_gate() -> None:
    answers = {ONE.id_hash: [_keys(ONE, (B, START + 10), (B, START + 11))]}
    result = assess([ONE, TWO], answers, START)
    assert isinstance(result, Waiting)
    assert [(lag.apiserver_id, lag.reason) for lag in result.lagging] == [("apiserver-two", Lag.NOT_REACHED)]


def test_answers_from_apiservers_without_a_live_lease_are_ignored() -> None:
    gone = _identity("apiserver-gone")
    answers = {
        ONE.id_hash: [_keys(ONE, (B, START + 10), (B, START + 11))],
        gone.id_hash: [_keys(gone, (A, START - 100), (A, START - 99))],
    }
    assert isinstance(assess([ONE], answers, START), Converged)


def test_one_identity_answering_twice_must_pass_both_times() -> None:
    # Apiservers on one host share an identity: one of the two processes still writes with kek-1.
    answers = {
        ONE.id_hash: [
            _keys(ONE, (B, START + 10), (B, START + 11)),
            _keys(ONE, (A, START - 20), (A, START + 11)),
        ]
    }
    result = assess([ONE], answers, START)
    assert isinstance(result, Waiting)
    assert [lag.reason for lag in result.lagging] == [Lag.NO_STATUS_SINCE_START]


def test_no_kms_metrics_and_no_writes_are_reasons_of_their_own() -> None:
    answers = {
        ONE.id_hash: [ApiserverKeys(ONE.id_hash, ())],
        TWO.id_hash: [_keys(TWO, (B, START + 10), None)],
    }
    result = assess([ONE, TWO], answers, START)
    assert isinstance(result, Waiting)
    assert [lag.reason for lag in result.lagging] == [Lag.NO_KMS_METRICS, Lag.NO_WRITES]


def test_a_decrypt_only_provider_needs_no_writes() -> None:
    # Second provider in the config list: polled for Status, never written with.
    keys = ApiserverKeys(
        ONE.id_hash,
        (
            ProviderKeys("new-kms", KeySighting(B, START + 10), KeySighting(B, START + 12)),
            ProviderKeys("old-kms", KeySighting(A, START - 50), None),
        ),
    )
    assert assess([ONE], {ONE.id_hash: [keys]}, START) == Converged({"new-kms": B}, ("apiserver-one",))


def test_two_writing_providers_converge_each_on_its_own_key() -> None:
    keys = ApiserverKeys(
        ONE.id_hash,
        (
            ProviderKeys("p", KeySighting(A, START + 10), KeySighting(A, START + 12)),
            ProviderKeys("q", KeySighting(B, START + 10), KeySighting(B, START + 12)),
        ),
    )
    result = assess([ONE], {ONE.id_hash: [keys]}, START)
    assert isinstance(result, Converged)
    assert result.key_id_hashes == {"p": A, "q": B}
    with pytest.raises(ValueError, match="2 KMS v2 providers"):
        _ = result.key_id_hash


def test_no_live_identity_waits_with_a_note() -> None:
    result = assess([], {}, START)
    assert isinstance(result, Waiting)
    assert result.lagging == ()
    assert "no live kube-apiserver identity Lease" in result.message


def test_forbidden_metrics_is_no_metrics_access_with_a_safe_wait() -> None:
    result = assess([ONE], {}, START, metrics_forbidden='403 Forbidden: cannot get path "/metrics"')
    assert isinstance(result, NoMetricsAccess)
    assert result.safe_wait_seconds == NO_METRICS_SAFE_WAIT_SECONDS > 2 * STATUS_POLL_SECONDS
    assert 'nonResourceURLs ["/metrics"]' in result.message
    assert "Waiting 150 s" in result.message


def test_captured_dev_cluster_metrics_judged_on_both_sides_of_the_status_poll() -> None:
    # Captured: rotation to kek-2 at 1796117805, the apiserver's next Status poll at 1796117851.
    text = (Path(__file__).parent / "data" / "apiserver-metrics-after-rotation.txt").read_text()
    keys = parse_apiserver_keys(text)
    lease_name = "apiserver-wlv32tlttr4jl3gtroqexyxapa"
    identity = _identity(lease_name)
    answers = {identity.id_hash: list(keys.values())}
    assert assess([identity], answers, 1796117806.0) == Converged({"local-kms": B}, (lease_name,))
    late_start = assess([identity], answers, 1796117860.0)
    assert isinstance(late_start, Waiting)
    assert late_start.lagging[0].reason is Lag.NO_STATUS_SINCE_START


def test_each_verdict_carries_a_condition_reason() -> None:
    assert Converged({"kms": B}, ("a",)).reason == "KeyConverged"
    assert Waiting(()).reason == "ApiserversLagging"
    assert NoMetricsAccess("403").reason == "NoMetricsAccess"


def test_a_long_list_of_laggards_is_cut_and_counted() -> None:
    servers = [_identity(f"apiserver-{n}") for n in range(8)]
    result = assess(servers, {}, START)
    assert isinstance(result, Waiting)
    assert len(result.lagging) == 8
    assert "apiserver-4 did not answer" in result.message
    assert "apiserver-5" not in result.message
    assert result.message.endswith("and 3 more")
