"""Fixtures for the agent control-plane tests: a throw-away PKI and secrets, made per session."""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PYTHON_DIR = Path(__file__).resolve().parents[3] / "python"
#: ``tests/``, for ``support.waiting`` (``--import-mode=importlib`` puts no test directory on
#: ``sys.path``); the attack suite loads this conftest too.
TESTS_DIR = Path(__file__).resolve().parents[2]
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))


def _import_agent_without_the_compiled_core() -> None:
    """The control plane is pure Python: let these tests run before the Rust core is built.

    ``sgflows/__init__.py`` imports the compiled extension; if it is not built, register a bare
    package for ``sgflows`` so that ``sgflows.agent`` still imports from the source tree.
    """
    try:
        import sgflows  # noqa: F401
    except ImportError:
        for name in [m for m in sys.modules if m == "sgflows" or m.startswith("sgflows.")]:
            del sys.modules[name]
        package = types.ModuleType("sgflows")
        package.__path__ = [str(PYTHON_DIR / "sgflows")]
        sys.modules["sgflows"] = package


_import_agent_without_the_compiled_core()


@dataclass(frozen=True)
class PKI:
    """Paths of a CA, a server certificate for localhost/127.0.0.1 and client certificates."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # CN=compute-cert, signed by the CA
    client_key: Path
    rogue_ca: Path  # an unrelated CA
    rogue_cert: Path  # CN=compute-cert, signed by the rogue CA
    rogue_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(path, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, cn: str, *, server: bool
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A CA, a server certificate, a client certificate and a rogue CA with its own client."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _ca("sgflows test CA")
    srv_key, srv_cert = _leaf(ca_key, ca_cert, "localhost", server=True)
    cli_key, cli_cert = _leaf(ca_key, ca_cert, "compute-cert", server=False)
    rogue_ca_key, rogue_ca_cert = _ca("rogue CA")
    rogue_key, rogue_cert = _leaf(rogue_ca_key, rogue_ca_cert, "compute-cert", server=False)
    paths = PKI(
        ca=d / "ca.pem",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        client_cert=d / "client.pem",
        client_key=d / "client.key",
        rogue_ca=d / "rogue-ca.pem",
        rogue_cert=d / "rogue.pem",
        rogue_key=d / "rogue.key",
    )
    _write_cert(paths.ca, ca_cert)
    _write_cert(paths.server_cert, srv_cert)
    _write_key(paths.server_key, srv_key)
    _write_cert(paths.client_cert, cli_cert)
    _write_key(paths.client_key, cli_key)
    _write_cert(paths.rogue_ca, rogue_ca_cert)
    _write_cert(paths.rogue_cert, rogue_cert)
    _write_key(paths.rogue_key, rogue_key)
    return paths


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory path: Unix socket paths are limited to 107 bytes."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sgf-") as d:
        yield Path(d)
