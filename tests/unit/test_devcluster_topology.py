"""The HA dev cluster's layout: names, stop order, host names, HAProxy's and the KMS settings."""

from __future__ import annotations

import pytest
import yaml

from kms_storage_migrator.devcluster import topology
from kms_storage_migrator.devcluster.encryption import (
    EncryptionMode,
    encryption_configuration,
    validate_kms_endpoint,
    validate_provider_name,
)


def test_component_names_keep_the_single_apiserver_names_for_the_first() -> None:
    assert topology.apiserver_component(1) == "kube-apiserver"
    assert topology.apiserver_component(3) == "kube-apiserver-3"
    assert topology.kms_plugin_component(2) == "kms-plugin-2"
    assert topology.split_component("kube-apiserver-3") == ("kube-apiserver", 3)
    assert topology.split_component("kms-plugin") == ("kms-plugin", 1)
    assert topology.split_component("kube-controller-manager") == ("kube-controller-manager", 1)
    assert topology.program_of("kube-apiserver-2") == "kube-apiserver"
    assert topology.program_of("load-balancer") == "haproxy"


def test_clients_stop_before_what_they_use() -> None:
    components = [
        "etcd",
        "kms-plugin",
        "kms-plugin-2",
        "kube-apiserver",
        "kube-apiserver-2",
        "load-balancer",
        "kube-controller-manager",
    ]
    assert topology.stop_order(reversed(components)) == [
        "kube-controller-manager",
        "load-balancer",
        "kube-apiserver-2",
        "kube-apiserver",
        "kms-plugin-2",
        "kms-plugin",
        "etcd",
    ]


def test_several_apiservers_get_host_names_of_their_own() -> None:
    # kube-apiserver's identity comes from its host name: one name each, or they share a Lease.
    names = {topology.apiserver_hostname(index, 3, "laptop") for index in (1, 2, 3)}
    assert len(names) == 3
    assert "laptop" not in names
    assert topology.apiserver_hostname(1, 1, "laptop") == "laptop"
    assert {topology.advertise_address(index) for index in (1, 2, 3)} == {
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.3",
    }
    with pytest.raises(ValueError, match="--apiservers must be between 1 and 9"):
        topology.validate_apiserver_count(0)


def test_haproxy_balances_tcp_round_robin_with_a_readyz_check_on_each() -> None:
    config = topology.haproxy_config(
        6443, [topology.Backend("kube-apiserver", 7001), topology.Backend("b", 7002)]
    )
    lines = [line.strip() for line in config.splitlines()]
    assert "mode tcp" in lines
    assert "balance roundrobin" in lines
    assert "bind 127.0.0.1:6443" in lines
    assert "option httpchk GET /readyz" in lines
    assert "option redispatch" in lines
    assert "server kube-apiserver 127.0.0.1:7001 check check-ssl verify none" in lines
    assert "server b 127.0.0.1:7002 check check-ssl verify none" in lines


def test_the_default_audit_policy_records_requests_and_responses() -> None:
    policy = yaml.safe_load(topology.DEFAULT_AUDIT_POLICY)
    assert policy["kind"] == "Policy"
    assert policy["rules"] == [{"level": "RequestResponse"}]


def test_an_external_plugin_is_named_in_the_encryption_configuration() -> None:
    document = yaml.safe_load(
        encryption_configuration(EncryptionMode.KMS, "unix:///run/cloud-kms.sock", provider_name="cloud-kms")
    )
    kms = document["resources"][0]["providers"][0]["kms"]
    assert kms["name"] == "cloud-kms"
    assert kms["endpoint"] == "unix:///run/cloud-kms.sock"


def test_bad_kms_settings_name_the_flag_and_say_what_to_pass() -> None:
    with pytest.raises(ValueError, match=r"--kms-endpoint 'localhost:9000'.*unix:///absolute/path"):
        validate_kms_endpoint("localhost:9000")
    with pytest.raises(ValueError, match=r"--kms-provider-name 'a:b'.*no ':'"):
        validate_provider_name("a:b")
    assert validate_provider_name("cloud-kms.v2") == "cloud-kms.v2"
