"""state.json: what a cluster records, read back the same, and records from before HA still read."""

from __future__ import annotations

import json
from dataclasses import asdict

from kms_storage_migrator.devcluster.cluster import ApiserverState, ClusterState


def test_a_recorded_ha_state_reads_back_the_same() -> None:
    state = ClusterState(
        apiserver_port=7000,
        apiservers=[
            ApiserverState(1, 7001, "ksm-dev-apiserver-1", "/d/kms/kms.sock"),
            ApiserverState(2, 7002, "h2"),
        ],
        load_balancer_port=7000,
        pids={"kube-apiserver": 10, "kube-apiserver-2": 11},
        start_ticks={"kube-apiserver": 500, "kube-apiserver-2": 501},
    )
    again = ClusterState.from_json(json.loads(json.dumps(asdict(state))))
    assert again == state
    assert again.apiserver(2).port == 7002


def test_a_state_from_before_several_apiservers_has_its_one_apiserver() -> None:
    legacy = {
        "encryption": "kms",
        "etcd_client_port": 2379,
        "etcd_peer_port": 2380,
        "apiserver_port": 6443,
        "controller_manager_port": 0,
        "kms_socket": "/d/kms/kms.sock",
        "pids": {"etcd": 1, "kms-plugin": 2, "kube-apiserver": 3},
    }
    state = ClusterState.from_json(legacy)
    (apiserver,) = state.apiservers
    assert (apiserver.index, apiserver.port, apiserver.kms_socket) == (1, 6443, "/d/kms/kms.sock")
    assert state.start_ticks == {}  # unknown: PIDs are then judged by their command line alone
    assert state.kms_endpoint == ""
