"""The dev cluster's PKI: one CA, serving and client certificates, service-account keys.

Everything is ECDSA P-256 (small, fast to make) and written with mode 0600 for private keys.
The CA signs both the apiserver's and etcd's serving certificates and every client
certificate, which is enough for a single-machine cluster and keeps the layout easy to read.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)
LOOPBACK_NAMES = ("localhost",)
LOOPBACK_ADDRESSES = ("127.0.0.1",)
# The first address of --service-cluster-ip-range: in-cluster clients reach the apiserver there.
SERVICE_ADDRESS = "10.0.0.1"


@dataclass(frozen=True)
class CertificatePair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPki:
    """Paths of every file the PKI writes; see :func:`create_pki`."""

    directory: Path

    @property
    def ca(self) -> CertificatePair:
        return CertificatePair(self.directory / "ca.crt", self.directory / "ca.key")

    @property
    def apiserver(self) -> CertificatePair:
        return CertificatePair(self.directory / "apiserver.crt", self.directory / "apiserver.key")

    @property
    def etcd_server(self) -> CertificatePair:
        return CertificatePair(self.directory / "etcd-server.crt", self.directory / "etcd-server.key")

    @property
    def apiserver_etcd_client(self) -> CertificatePair:
        return CertificatePair(
            self.directory / "apiserver-etcd-client.crt", self.directory / "apiserver-etcd-client.key"
        )

    @property
    def etcd_reader(self) -> CertificatePair:
        """A client certificate for tools that read etcd (the scanner, etcdctl, tests)."""
        return CertificatePair(self.directory / "etcd-reader.crt", self.directory / "etcd-reader.key")

    @property
    def admin(self) -> CertificatePair:
        return CertificatePair(self.directory / "admin.crt", self.directory / "admin.key")

    @property
    def service_account_key(self) -> Path:
        return self.directory / "service-account.key"

    @property
    def service_account_public_key(self) -> Path:
        return self.directory / "service-account.pub"

    def exists(self) -> bool:
        return self.admin.cert.exists() and self.service_account_public_key.exists()


def create_pki(directory: Path) -> ClusterPki:
    """Write a fresh CA and every certificate the dev cluster needs into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = ClusterPki(directory)
    ca_key = _new_key()
    ca_name = _name("kms-storage-migrator dev-cluster CA")
    ca_cert = _certificate(
        subject=ca_name, issuer=ca_name, public_key=ca_key.public_key(), signing_key=ca_key, is_ca=True
    )
    _write_pair(pki.ca, ca_cert, ca_key)

    def issue(pair: CertificatePair, subject: x509.Name, *, server: bool, client: bool) -> None:
        key = _new_key()
        cert = _certificate(
            subject=subject,
            issuer=ca_name,
            public_key=key.public_key(),
            signing_key=ca_key,
            server=server,
            client=client,
        )
        _write_pair(pair, cert, key)

    issue(pki.apiserver, _name("kube-apiserver"), server=True, client=False)
    issue(pki.etcd_server, _name("etcd"), server=True, client=False)
    issue(pki.apiserver_etcd_client, _name("kube-apiserver-etcd-client"), server=False, client=True)
    issue(pki.etcd_reader, _name("kms-storage-migrator-etcd-reader"), server=False, client=True)
    # O=system:masters makes the admin certificate cluster-admin through RBAC's bootstrap binding.
    issue(pki.admin, _name("admin", organization="system:masters"), server=False, client=True)

    service_account_key = _new_key()
    _write_private_key(pki.service_account_key, service_account_key)
    pki.service_account_public_key.write_bytes(
        service_account_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def issue_serving_pair(directory: Path, common_name: str) -> bytes:
    """A throwaway CA and a serving certificate for loopback, for an HTTPS server the apiserver
    calls (an admission or conversion webhook in a test): writes ``server.crt``/``server.key``
    into ``directory`` and returns the CA certificate (PEM) for the caller's ``caBundle``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _new_key()
    ca_name = _name(f"{common_name} CA")
    ca_cert = _certificate(
        subject=ca_name, issuer=ca_name, public_key=ca_key.public_key(), signing_key=ca_key, is_ca=True
    )
    key = _new_key()
    cert = _certificate(
        subject=_name(common_name),
        issuer=ca_name,
        public_key=key.public_key(),
        signing_key=ca_key,
        server=True,
    )
    _write_pair(CertificatePair(directory / "server.crt", directory / "server.key"), cert, key)
    return ca_cert.public_bytes(serialization.Encoding.PEM)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, *, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _certificate(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signing_key: ec.EllipticCurvePrivateKey,
    is_ca: bool = False,
    server: bool = False,
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # A minute of slack so a certificate made just now is valid on a clock a bit behind.
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server:
        alternative_names: list[x509.GeneralName] = [x509.DNSName(name) for name in LOOPBACK_NAMES]
        alternative_names += [
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
        ]
        alternative_names += [
            x509.IPAddress(ipaddress.ip_address(address))
            for address in (*LOOPBACK_ADDRESSES, SERVICE_ADDRESS)
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _write_pair(pair: CertificatePair, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private_key(pair.key, key)


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Created 0600 from the start: never world-readable, not even for an instant.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
