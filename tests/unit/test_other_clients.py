"""The latency probe's pure parts (benchmarks/other_clients.py): its percentiles, its summary,
the bound the load test judges by, the request mix, and reading APF counts from /metrics."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from other_clients import (
    ProbeTarget,
    RequestKind,
    Sample,
    dispatched_by_flow,
    dispatched_since,
    kind_of,
    latency_bound,
    percentile,
    summarise,
)


def sample(seconds: float, status: int = 200, kind: RequestKind = RequestKind.GET) -> Sample:
    return Sample(kind, 0.0, seconds, status, "fs-uid", "pl-uid")


def test_percentile_is_the_nearest_rank_so_it_is_a_measured_value() -> None:
    values = [float(v) for v in range(1, 401)]  # 1..400
    assert percentile(values, 0.99) == 396.0  # ceil(0.99 * 400) = 396th smallest
    assert percentile(values, 0.50) == 200.0
    assert percentile(values, 1.0) == 400.0
    assert percentile([7.0], 0.99) == 7.0
    # Order of the input does not matter.
    assert percentile(list(reversed(values)), 0.99) == 396.0


def test_p99_of_a_hundred_samples_is_the_largest_but_one() -> None:
    values = [0.001] * 98 + [0.5, 2.0]
    assert percentile(values, 0.99) == 0.5


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_percentile_refuses_a_fraction_outside_0_1(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        percentile([1.0], fraction)


def test_percentile_of_nothing_is_an_error_not_zero() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 0.99)


def test_summary_counts_every_non_2xx_and_unanswered_request_as_an_error() -> None:
    samples = [sample(0.01), sample(0.02, 201), sample(0.03, 429), sample(0.5, 0), sample(0.04, 500)]
    summary = summarise(samples, seconds=0.25)
    assert summary.requests == 5
    assert summary.errors == 3
    assert summary.slowest == 0.5
    assert summary.p50 == 0.03
    assert summary.per_second == 20.0


def test_summary_of_an_empty_window_is_an_error() -> None:
    with pytest.raises(ValueError, match="no requests"):
        summarise([], seconds=10)


def test_bound_is_twice_the_idle_p99_or_twice_the_floor_whichever_is_larger() -> None:
    assert latency_bound(0.4, factor=2, floor=0.25) == pytest.approx(0.8)
    assert latency_bound(0.01, factor=2, floor=0.25) == pytest.approx(0.5)
    assert latency_bound(0.01, factor=2, floor=0) == pytest.approx(0.02)


@pytest.mark.parametrize(("factor", "floor"), [(0.5, 0.1), (2, -1)])
def test_bound_refuses_a_factor_below_one_or_a_negative_floor(factor: float, floor: float) -> None:
    with pytest.raises(ValueError, match="factor"):
        latency_bound(0.1, factor=factor, floor=floor)


def test_mix_sends_get_list_patch_in_turn() -> None:
    kinds = [kind_of(n) for n in range(7)]
    assert kinds == [
        RequestKind.GET,
        RequestKind.LIST,
        RequestKind.PATCH,
        RequestKind.GET,
        RequestKind.LIST,
        RequestKind.PATCH,
        RequestKind.GET,
    ]


DISPATCHED = "apiserver_flowcontrol_dispatched_requests_total"
REJECTED = "apiserver_flowcontrol_rejected_requests_total"
METRICS = "\n".join(
    [
        f"# HELP {DISPATCHED} [BETA] Number of requests executed by API Priority and Fairness subsystem.",
        f"# TYPE {DISPATCHED} counter",
        DISPATCHED + '{flow_schema="exempt",priority_level="exempt"} 63',
        DISPATCHED + '{flow_schema="service-accounts",priority_level="workload-low"} 1041',
        DISPATCHED + '{flow_schema="kms-storage-migrator",priority_level="kms-storage-migrator"} 1644',
        f"# HELP {REJECTED} [BETA] Number of requests rejected by API Priority and Fairness subsystem.",
        f"# TYPE {REJECTED} counter",
        REJECTED + '{flow_schema="global-default",priority_level="global-default",reason="queue-full"} 9',
        "",
    ]
)


def test_dispatched_counts_are_read_per_flow_schema_and_priority_level() -> None:
    assert dispatched_by_flow(METRICS) == {
        ("exempt", "exempt"): 63,
        ("service-accounts", "workload-low"): 1041,
        ("kms-storage-migrator", "kms-storage-migrator"): 1644,
    }


def test_dispatched_since_keeps_only_flows_that_grew_and_counts_new_ones_from_zero() -> None:
    before = {("exempt", "exempt"): 60.0, ("service-accounts", "workload-low"): 1000.0}
    after = {
        ("exempt", "exempt"): 60.0,
        ("service-accounts", "workload-low"): 1041.0,
        ("kms-storage-migrator", "kms-storage-migrator"): 1644.0,
    }
    assert dispatched_since(before, after) == {
        ("service-accounts", "workload-low"): 41.0,
        ("kms-storage-migrator", "kms-storage-migrator"): 1644.0,
    }


def _kubeconfig(tmp_path: Path, user: dict[str, str]) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {
                        "name": "dev",
                        "cluster": {
                            "server": "https://127.0.0.1:6443",
                            "certificate-authority-data": base64.b64encode(b"PEM").decode(),
                        },
                    }
                ],
                "users": [{"name": "probe", "user": user}],
                "contexts": [{"name": "probe", "context": {"cluster": "dev", "user": "probe"}}],
                "current-context": "probe",
            }
        )
    )
    return path


def test_target_comes_from_a_token_kubeconfig_and_its_repr_hides_the_token(tmp_path: Path) -> None:
    target = ProbeTarget.from_kubeconfig(_kubeconfig(tmp_path, {"token": "s3cret-token"}), "probe-ns")
    assert (target.server, target.ca_pem, target.token, target.namespace) == (
        "https://127.0.0.1:6443",
        "PEM",
        "s3cret-token",
        "probe-ns",
    )
    assert "s3cret-token" not in repr(target)


def test_a_kubeconfig_without_a_token_is_refused_naming_the_user_and_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"user 'probe' needs a 'token'.*kubectl create token"):
        ProbeTarget.from_kubeconfig(_kubeconfig(tmp_path, {"client-certificate": "x.crt"}), "probe-ns")
