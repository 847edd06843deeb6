"""The production-scale benchmark's pure parts: its judge (etcd_truth) and its ratios (scale_report)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from etcd_truth import Holding, classify, kms_v2_key_id
from scale_report import Run, load_runs, scenario_table, speed_ratio


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _envelope(key_id: str, data: bytes = b"\x00" * 300) -> bytes:
    # EncryptedObject: encryptedData (1), keyID (2), encryptedDEKSource (3), a varint type (5).
    body = _field(1, data) + _field(2, key_id.encode()) + _field(3, b"seed") + _varint(5 << 3) + b"\x01"
    return b"k8s:enc:kms:v2:local-kms:" + body


def test_the_judge_reads_the_key_id_after_a_long_encrypted_payload() -> None:
    assert classify(_envelope("kek-2", b"\xff" * 70_000)) == "kms-v2:kek-2"


def test_the_judge_tells_plaintext_from_other_providers() -> None:
    assert classify(b"k8s\x00\n\x0fv1\x12\tConfigMap") == "plaintext"
    assert classify(b'{"kind":"Widget"}') == "plaintext"
    assert classify(b"k8s:enc:aescbc:v1:key1:\x01\x02") == "other"


def test_a_truncated_envelope_is_other_not_a_crash() -> None:
    envelope = _envelope("kek-1")
    assert classify(envelope[:40]) == "other"
    assert kms_v2_key_id(b"\x0a\xff\xff\xff\xff\x0f") is None


def test_stale_counts_everything_not_under_the_current_key() -> None:
    holding = Holding()
    holding.by_format.update({"kms-v2:kek-2": 90, "kms-v2:kek-1": 7, "plaintext": 2, "other": 1})
    assert holding.stale("kek-2") == 10
    assert holding.keys == 100


def _run(contender: str, per_second: float, *, stale_after: int = 0, scenario: str = "all-stale") -> Run:
    return Run(
        scenario=scenario,
        contender=contender,
        objects=1000,
        stale_before=1000,
        stale_after=stale_after,
        seconds=1000 / per_second,
        objects_per_second=per_second,
        api_requests=1100,
        api_writes=1000,
        etcd_puts=1010,
        apiserver_cpu_seconds=20,
        migrator_cpu_seconds=5,
        migrator_peak_rss_mb=80,
    )


def test_ratios_are_to_the_ceiling_and_to_each_peer_of_the_same_scenario() -> None:
    runs = [
        _run("ceiling", 500),
        _run("ours-full-fast", 400),
        _run("in-tree-svm", 50),
        _run("kubectl-replace", 160),
        _run("ceiling", 1000, scenario="ten-percent"),
        _run("ours-full-fast", 250, scenario="ten-percent"),
    ]
    table = scenario_table(runs)
    ours_all_stale = next(line for line in table.splitlines() if line.startswith("| ours-full-fast"))
    assert "| 0.80x | 8.00x | 2.50x |" in ours_all_stale
    ours_ten = [line for line in table.splitlines() if line.startswith("| ours-full-fast")][1]
    assert "| 0.25x |" in ours_ten
    assert "| 1.10 | 1.00 | 1.01 |" in ours_all_stale  # requests, writes, puts per stale object
    assert "| 0.25 |" in ours_all_stale  # migrator CPU / apiserver CPU


def test_a_run_that_left_stale_objects_is_failed_and_no_reference() -> None:
    failed_peer = _run("kubectl-replace", 300, stale_after=12)
    assert not failed_peer.ok
    assert speed_ratio(_run("ours-full-fast", 400), failed_peer) is None
    table = scenario_table([_run("ceiling", 500), failed_peer])
    assert "FAILED: 12 stale" in table


def test_saved_results_load_back(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps([vars(_run("ceiling", 500))]))
    assert load_runs([path]) == [_run("ceiling", 500)]


def test_a_foreign_json_is_refused_naming_what_it_lacks(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps([{"contender": "x"}]))
    with pytest.raises(ValueError, match=r"lacks .*stale_after"):
        load_runs([path])
