"""Fixtures of the attack suite: real controller processes on Unix sockets and loopback, a
PKI with a revoked client certificate, and secrets.

The certificate helpers and the import fallback come from ``tests/agent/control/conftest.py``
(loaded by path: ``--import-mode=importlib`` gives test directories no package names).
"""

from __future__ import annotations

import datetime
import importlib.util
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization


def _load_control_conftest() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "control" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_sgflows_control_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)  # also makes sgflows.agent importable without the core
    return module


_control = _load_control_conftest()
# The test modules import attack_harness and attackhelpers from this directory (names no
# other test directory uses).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attackhelpers import controller_process, pytest_terminal_summary  # noqa: E402

__all__ = ["attack_pki", "controller_process", "pytest_terminal_summary", "short_tmp"]


@dataclass(frozen=True)
class AttackPKI:
    """A CA, the controller's certificate, a good and a revoked client certificate, the CRL."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # CN=compute-cert
    client_key: Path
    revoked_cert: Path  # CN=revoked-cert, listed in the CRL
    revoked_key: Path
    crl: Path


def _crl(ca_key: object, ca_cert: x509.Certificate, revoked: x509.Certificate) -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc)
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(revoked.serial_number)
        .revocation_date(now - datetime.timedelta(minutes=5))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=10))
        .next_update(now + datetime.timedelta(days=1))
        .add_revoked_certificate(entry)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return crl.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="session")
def attack_pki(tmp_path_factory: pytest.TempPathFactory) -> AttackPKI:
    d = tmp_path_factory.mktemp("attack-pki")
    ca_key, ca_cert = _control._ca("sgflows attack-suite CA")
    srv_key, srv_cert = _control._leaf(ca_key, ca_cert, "localhost", server=True)
    cli_key, cli_cert = _control._leaf(ca_key, ca_cert, "compute-cert", server=False)
    rev_key, rev_cert = _control._leaf(ca_key, ca_cert, "revoked-cert", server=False)
    pki = AttackPKI(
        ca=d / "ca.pem",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        client_cert=d / "client.pem",
        client_key=d / "client.key",
        revoked_cert=d / "revoked.pem",
        revoked_key=d / "revoked.key",
        crl=d / "crl.pem",
    )
    _control._write_cert(pki.ca, ca_cert)
    _control._write_cert(pki.server_cert, srv_cert)
    _control._write_key(pki.server_key, srv_key)
    _control._write_cert(pki.client_cert, cli_cert)
    _control._write_key(pki.client_key, cli_key)
    _control._write_cert(pki.revoked_cert, rev_cert)
    _control._write_key(pki.revoked_key, rev_key)
    pki.crl.write_bytes(_crl(ca_key, ca_cert, rev_cert))
    return pki


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory path: Unix socket paths are limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="sgf-atk-") as d:
        yield Path(d)
