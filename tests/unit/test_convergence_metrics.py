"""Parsing the apiserver's /metrics into per-apiserver key observations (captured dev-cluster text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kms_storage_migrator.convergence.keyids import key_id_hash
from kms_storage_migrator.convergence.metrics import (
    STATUS_METRIC,
    USE_METRIC,
    KeySighting,
    MetricsFormatError,
    parse_apiserver_keys,
    relevant_lines,
)

CAPTURED = (Path(__file__).parent / "data" / "apiserver-metrics-after-rotation.txt").read_text()
APISERVER = "sha256:73095bbbe8f317654631b5a70d7c53951e472e19c3daa5b71a50958a5e82991b"
KEK_1 = "sha256:6ad4ff2bfd375211dd97cbb809e358fe8af9271fce7034f1a54618486f0488a0"
KEK_2 = "sha256:3dd688dad3aaf7242a117d950be775877a42d56b8204151c2bc90a747ba261bf"


def test_the_captured_hashes_are_sha256_of_the_plugins_key_ids() -> None:
    assert key_id_hash("kek-1") == KEK_1
    assert key_id_hash("kek-2") == KEK_2


def test_newest_status_and_newest_write_win_over_the_old_keys_series() -> None:
    keys = parse_apiserver_keys(CAPTURED)
    assert list(keys) == [APISERVER]
    (provider,) = keys[APISERVER].providers
    assert provider.provider_name == "local-kms"
    # The kek-1 series are still exported, with older timestamps.
    assert provider.latest_status == KeySighting(KEK_2, 1796117851.1714823)
    assert provider.latest_write == KeySighting(KEK_2, 1796117895.031795)


def test_reads_do_not_count_as_writes() -> None:
    # Keep only the from_storage series of the use metric: the apiserver has not written yet.
    text = "\n".join(
        line for line in CAPTURED.splitlines() if not (line.startswith(USE_METRIC) and "to_storage" in line)
    )
    (provider,) = parse_apiserver_keys(text)[APISERVER].providers
    assert provider.latest_write is None
    assert provider.latest_status is not None


def test_between_the_status_poll_and_the_next_write_the_write_shows_the_old_key() -> None:
    # Drop the kek-2 write series: the state seen on the dev cluster from 1796117851 to 1796117854.
    text = "\n".join(
        line
        for line in CAPTURED.splitlines()
        if not (line.startswith(USE_METRIC) and KEK_2 in line and "to_storage" in line)
    )
    (provider,) = parse_apiserver_keys(text)[APISERVER].providers
    assert provider.latest_status is not None
    assert provider.latest_status.key_id_hash == KEK_2
    assert provider.latest_write is not None
    assert provider.latest_write.key_id_hash == KEK_1


def test_an_apiserver_with_an_encryption_config_but_no_key_metrics_is_still_named() -> None:
    text = "\n".join(
        line for line in CAPTURED.splitlines() if not line.startswith((STATUS_METRIC, USE_METRIC))
    )
    keys = parse_apiserver_keys(text)
    assert keys[APISERVER].providers == ()


def test_plaintext_cluster_metrics_name_no_apiserver() -> None:
    assert parse_apiserver_keys("# TYPE up gauge\nup 1\n") == {}
    assert parse_apiserver_keys("") == {}


def test_several_apiservers_and_providers_are_kept_apart() -> None:
    text = (
        f'{STATUS_METRIC}{{apiserver_id_hash="a",key_id_hash="k1",provider_name="p"}} 10\n'
        f'{STATUS_METRIC}{{apiserver_id_hash="a",key_id_hash="k2",provider_name="q"}} 11\n'
        f'{STATUS_METRIC}{{apiserver_id_hash="b",key_id_hash="k1",provider_name="p"}} 12\n'
        f'{USE_METRIC}{{apiserver_id_hash="b",key_id_hash="k1",provider_name="p",'
        'transformation_type="to_storage"} 13\n'
    )
    keys = parse_apiserver_keys(text)
    assert [p.provider_name for p in keys["a"].providers] == ["p", "q"]
    assert keys["a"].providers[0].latest_write is None
    assert keys["b"].providers[0].latest_write == KeySighting("k1", 13.0)


def test_only_the_gate_metrics_are_parsed() -> None:
    kept = relevant_lines(CAPTURED).splitlines()
    assert kept
    assert all(STATUS_METRIC in line or USE_METRIC in line or "last_config_info" in line for line in kept)
    assert not any("key_id_hash_total" in line for line in kept)


def test_garbage_is_a_clear_error() -> None:
    with pytest.raises(MetricsFormatError, match="not Prometheus text"):
        parse_apiserver_keys(f'{STATUS_METRIC}{{apiserver_id_hash="a" 1 2 3\n')
