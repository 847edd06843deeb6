"""The dev cluster's PKI: who signs what, for which names and uses, with private files."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kms_storage_migrator.devcluster.pki import ClusterPki, create_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPki:
    return create_pki(tmp_path_factory.mktemp("pki"))


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_every_certificate_is_signed_by_the_ca(pki: ClusterPki) -> None:
    ca = load(pki.ca.cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for pair in (pki.apiserver, pki.etcd_server, pki.apiserver_etcd_client, pki.etcd_reader, pki.admin):
        cert = load(pair.cert)
        cert.verify_directly_issued_by(ca)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_serving_certificates_cover_loopback_and_the_service_address(pki: ClusterPki) -> None:
    for pair in (pki.apiserver, pki.etcd_server):
        cert = load(pair.cert)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in names.get_values_for_type(x509.DNSName)
        addresses = names.get_values_for_type(x509.IPAddress)
        assert ipaddress.ip_address("127.0.0.1") in addresses
        assert (
            ExtendedKeyUsageOID.SERVER_AUTH
            in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        )


def test_admin_is_a_system_masters_client(pki: ClusterPki) -> None:
    cert = load(pki.admin.cert)
    organizations = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [attribute.value for attribute in organizations] == ["system:masters"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_private_keys_are_readable_by_the_owner_only(pki: ClusterPki) -> None:
    keys = [pair.key for pair in (pki.ca, pki.apiserver, pki.etcd_server, pki.admin, pki.etcd_reader)]
    for key in [*keys, pki.service_account_key]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
