"""Who may talk to the controller, and with which roles.

Two ways to prove an identity:

* a per-principal shared secret, proved by an HMAC-SHA256 challenge-response: the server sends
  a fresh nonce, the client answers with ``HMAC(secret, server_nonce, client_nonce, identity)``
  and the server answers with its own proof over the same nonces, so each side knows the other
  holds the secret and the secret itself never crosses the wire;
* a client certificate (TLS) whose subject common name names a principal, or, on the Unix
  socket, the peer's uid (``SO_PEERCRED``) listed for a principal.

Roles follow Neutron's secure-RBAC phase 2: ``agent`` for what agents do (report, fetch
security-group data, receive notifications), ``service`` for server-to-server operations such as
port-binding activation, ``admin`` for reading the agent table. ``admin`` does not imply
``service``: an admin-only principal is refused a service operation.

Files holding secrets must not be readable by group or others (mode ``0600``); loading one that is
refuses to go on rather than warning.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

#: The roles a principal can hold.
ROLES = frozenset({"agent", "service", "admin"})

#: Domain separation for the proofs; bump when the construction changes.
PROTOCOL = b"sgflows-auth-v1"

#: Nonces are this many random bytes.
NONCE_BYTES = 32

#: A shared secret shorter than this is refused (it would be guessable).
MIN_SECRET_BYTES = 16


class CredentialError(Exception):
    """A secret or credentials file is missing, malformed or not private enough."""


@dataclass(frozen=True)
class Principal:
    """One identity the controller knows, with its roles and ways to prove it."""

    name: str
    roles: frozenset[str]
    secret: bytes | None = field(default=None, repr=False)
    cert_cn: str | None = None
    uids: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        unknown = self.roles - ROLES
        if unknown:
            raise CredentialError(
                f"principal {self.name!r}: unknown roles {sorted(unknown)} (known: {sorted(ROLES)})"
            )
        if self.secret is not None and len(self.secret) < MIN_SECRET_BYTES:
            raise CredentialError(
                f"principal {self.name!r}: secret shorter than {MIN_SECRET_BYTES} bytes"
            )


def check_private_file(path: str | os.PathLike[str]) -> None:
    """Refuse a secret-bearing file that group or others may read or write."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CredentialError(f"{path}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise CredentialError(f"{path}: not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise CredentialError(
            f"{path}: mode {mode:04o} lets group or others access a secret; run chmod 600"
        )


def load_secret(path: str | os.PathLike[str]) -> bytes:
    """Read a secret file (mode 0600), stripping surrounding whitespace."""
    check_private_file(path)
    data = Path(path).read_bytes().strip()
    if len(data) < MIN_SECRET_BYTES:
        raise CredentialError(f"{path}: secret shorter than {MIN_SECRET_BYTES} bytes")
    return data


def generate_secret() -> bytes:
    """A fresh random secret, printable (hex) so operators can copy it."""
    return secrets.token_hex(32).encode("ascii")


def write_private_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, created with mode 0600."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def write_secret(path: str | os.PathLike[str], secret: bytes | None = None) -> bytes:
    """Create a secret file (mode 0600) and return the secret written."""
    value = secret if secret is not None else generate_secret()
    write_private_file(path, value + b"\n")
    return value


def _fields(*parts: bytes) -> bytes:
    # Length-prefix every field so that no two different tuples hash the same input.
    out = bytearray(PROTOCOL)
    for part in parts:
        out += len(part).to_bytes(4, "big")
        out += part
    return bytes(out)


def client_proof(secret: bytes, identity: str, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """What a client sends to prove it holds ``secret``."""
    msg = _fields(b"client", identity.encode(), server_nonce, client_nonce)
    return hmac.new(secret, msg, hashlib.sha256).digest()


def server_proof(secret: bytes, identity: str, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """What the server answers to prove it holds the same ``secret``."""
    msg = _fields(b"server", identity.encode(), server_nonce, client_nonce)
    return hmac.new(secret, msg, hashlib.sha256).digest()


def new_nonce() -> bytes:
    """A fresh challenge."""
    return secrets.token_bytes(NONCE_BYTES)


class Credentials:
    """The controller's table of principals, looked up by name, certificate CN or uid."""

    def __init__(self, principals: Iterable[Principal]) -> None:
        self._by_name: dict[str, Principal] = {}
        self._by_cn: dict[str, Principal] = {}
        self._by_uid: dict[int, Principal] = {}
        for principal in principals:
            if principal.name in self._by_name:
                raise CredentialError(f"principal {principal.name!r} defined twice")
            self._by_name[principal.name] = principal
            if principal.cert_cn:
                self._by_cn[principal.cert_cn] = principal
            for uid in principal.uids:
                self._by_uid[uid] = principal

    def __len__(self) -> int:
        return len(self._by_name)

    def by_name(self, name: str) -> Principal | None:
        """The principal called ``name``, if any."""
        return self._by_name.get(name)

    def by_cert_cn(self, common_name: str) -> Principal | None:
        """The principal a verified client certificate with this CN stands for."""
        return self._by_cn.get(common_name)

    def by_uid(self, uid: int) -> Principal | None:
        """The principal a Unix-socket peer with this uid stands for."""
        return self._by_uid.get(uid)

    def verify(
        self, identity: str, server_nonce: bytes, client_nonce: bytes, proof: bytes
    ) -> Principal | None:
        """The principal if ``proof`` is right for it, else ``None`` (constant-time compare)."""
        principal = self._by_name.get(identity)
        # Compute a proof even for unknown identities so timing does not reveal which exist.
        secret = principal.secret if principal and principal.secret else b"\0" * 32
        expected = client_proof(secret, identity, server_nonce, client_nonce)
        if hmac.compare_digest(expected, proof) and principal and principal.secret:
            return principal
        return None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<mapping>") -> Credentials:
        """Build the table from ``{"principals": {name: {...}}}`` (see :meth:`load`)."""
        principals_raw = data.get("principals")
        if not isinstance(principals_raw, Mapping):
            raise CredentialError(f"{source}: expected an object with a 'principals' object")
        principals = []
        for name, entry in principals_raw.items():
            if not isinstance(entry, Mapping):
                raise CredentialError(f"{source}: principal {name!r} must be an object")
            roles = entry.get("roles", [])
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                raise CredentialError(f"{source}: principal {name!r}: roles must be strings")
            secret_raw = entry.get("secret")
            secret: bytes | None = None
            if secret_raw is not None:
                if not isinstance(secret_raw, str):
                    raise CredentialError(f"{source}: principal {name!r}: secret must be a string")
                secret = secret_raw.encode()
            if "secret_file" in entry:
                secret = load_secret(str(entry["secret_file"]))
            uids = entry.get("uids", [])
            if not isinstance(uids, list) or not all(isinstance(u, int) for u in uids):
                raise CredentialError(f"{source}: principal {name!r}: uids must be integers")
            cert_cn = entry.get("cert_cn")
            if cert_cn is not None and not isinstance(cert_cn, str):
                raise CredentialError(f"{source}: principal {name!r}: cert_cn must be a string")
            principals.append(
                Principal(
                    name=str(name),
                    roles=frozenset(roles),
                    secret=secret,
                    cert_cn=cert_cn,
                    uids=frozenset(uids),
                )
            )
        return cls(principals)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Credentials:
        """Load a JSON credentials file, which must be mode 0600 since it may hold secrets.

        Format::

            {"principals": {
                "compute-1": {"secret": "…", "roles": ["agent"]},
                "nova":      {"secret_file": "/etc/sgflows/nova.secret", "roles": ["service"]},
                "ops":       {"uids": [0], "cert_cn": "ops", "roles": ["admin"]}}}
        """
        check_private_file(path)
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise CredentialError(f"{path}: {exc}") from exc
        if not isinstance(data, Mapping):
            raise CredentialError(f"{path}: expected a JSON object")
        creds = cls.from_mapping(data, source=str(path))
        LOG.info("loaded %d principals from %s", len(creds), path)
        return creds
