"""Identity Leases -> live apiservers and their apiserver_id_hash (captured from the dev cluster)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kms_storage_migrator.convergence.identity import (
    ApiserverIdentity,
    IdentityLeaseError,
    apiserver_id_hash,
    expected_apiserver_id,
    live_identities,
    parse_identity_leases,
)

CAPTURED = json.loads((Path(__file__).parent / "data" / "apiserver-identity-leases.json").read_text())
# The same apiserver's apiserver_id_hash in the metrics captured beside the Lease list.
METRICS_ID_HASH = "sha256:73095bbbe8f317654631b5a70d7c53951e472e19c3daa5b71a50958a5e82991b"
RENEWED = datetime(2026, 12, 1, 9, 38, 15, 29978, tzinfo=UTC)


def test_captured_lease_maps_to_the_metrics_apiserver_id_hash() -> None:
    (identity,) = parse_identity_leases(CAPTURED)
    assert identity.apiserver_id == "apiserver-wlv32tlttr4jl3gtroqexyxapa"
    assert identity.id_hash == METRICS_ID_HASH
    assert identity.renewed_at == RENEWED
    assert identity.lease_duration_seconds == 3600
    assert identity.hostname == "vm"


def test_the_hash_is_of_the_lease_name_not_of_its_holder() -> None:
    holder = CAPTURED["items"][0]["spec"]["holderIdentity"]
    assert apiserver_id_hash(holder) != METRICS_ID_HASH
    assert apiserver_id_hash(holder.split("_")[0]) == METRICS_ID_HASH


def test_the_lease_name_derives_from_the_hostname_label() -> None:
    assert expected_apiserver_id("vm") == "apiserver-wlv32tlttr4jl3gtroqexyxapa"
    assert expected_apiserver_id("node-2") != expected_apiserver_id("vm")


def _lease(name: str, renew: str | None, *, component: str = "kube-apiserver") -> dict:
    spec: dict = {"holderIdentity": f"{name}_x", "leaseDurationSeconds": 3600}
    if renew is not None:
        spec["renewTime"] = renew
    return {
        "metadata": {"name": name, "labels": {"apiserver.kubernetes.io/identity": component}},
        "spec": spec,
    }


def test_other_components_and_invalid_leases_are_skipped() -> None:
    leases = {
        "items": [
            _lease("apiserver-b", "2026-12-01T09:00:00.000001Z"),
            _lease("aggregated-x", "2026-12-01T09:00:00Z", component="sample-apiserver"),
            _lease("apiserver-a", None),  # no renewTime: the apiserver's own GC deletes it
        ]
    }
    assert [i.apiserver_id for i in parse_identity_leases(leases)] == ["apiserver-b"]


def test_bad_renew_time_names_the_lease() -> None:
    with pytest.raises(IdentityLeaseError, match=r"kube-system/apiserver-a: spec\.renewTime"):
        parse_identity_leases({"items": [_lease("apiserver-a", "yesterday")]})


@pytest.mark.parametrize(
    ("age", "live"),
    [(timedelta(seconds=5), True), (timedelta(seconds=59), True), (timedelta(seconds=61), False)],
)
def test_an_apiserver_that_stopped_renewing_is_not_live_though_its_lease_lasts_an_hour(
    age: timedelta, live: bool
) -> None:
    identity = ApiserverIdentity("apiserver-a", "vm", RENEWED, 3600)
    assert identity.is_live(RENEWED + age) is live
    assert live_identities([identity], RENEWED + age) == ([identity] if live else [])


def test_an_expired_lease_is_not_live_even_when_freshness_is_not_checked() -> None:
    identity = ApiserverIdentity("apiserver-a", "vm", RENEWED, 15)
    assert not identity.is_live(RENEWED + timedelta(seconds=20), stale_after_seconds=3600)
