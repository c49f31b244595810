"""``sgflows credentials``: create secret files and principals without writing Python.

::

    sgflows credentials new-secret /etc/sgflows/compute-1.secret
    sgflows credentials add-principal compute-1 --role agent \\
        --secret-file /etc/sgflows/compute-1.secret
    sgflows credentials add-principal ops --role admin --uid 0
    sgflows credentials add-principal nova --role service --new-secret /etc/sgflows/nova.secret

Every file written holds a secret or names one, so it is created with mode 0600 (atomically: a
reader never sees half a file), and the credentials file is checked the way the controller loads
it before it replaces the old one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from . import auth
from .status import make_dirs

LOG = logging.getLogger(__name__)

DEFAULT_CREDENTIALS = "/etc/sgflows/credentials.json"


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


def create_secret_file(path: Path, *, force: bool) -> None:
    """A new random secret at ``path`` (mode 0600); refuses to replace one unless ``force``."""
    if path.exists() and not force:
        raise _fail(f"{path} exists; give --force to replace it (agents using it must change)")
    try:
        make_dirs(path.parent)
        auth.write_secret(path)
    except OSError as exc:
        raise _fail(f"cannot write {path}: {exc.strerror or exc}") from exc


def _read_credentials(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"principals": {}}
    try:
        auth.check_private_file(path)
        data = json.loads(path.read_text())
    except auth.CredentialError as exc:
        raise _fail(str(exc)) from exc
    except (OSError, ValueError) as exc:
        raise _fail(f"{path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("principals"), dict):
        raise _fail(f"{path}: expected an object with a 'principals' object")
    return data


def _entry(
    roles: tuple[str, ...],
    secret_file: Path | None,
    uids: tuple[int, ...],
    cert_cn: str | None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"roles": sorted(set(roles))}
    if secret_file is not None:
        entry["secret_file"] = str(secret_file.resolve())
    if uids:
        entry["uids"] = sorted(set(uids))
    if cert_cn:
        entry["cert_cn"] = cert_cn
    return entry


@click.group("credentials")
def credentials_command() -> None:
    """Create secret files and principals for the controller's credentials file."""


@credentials_command.command("new-secret")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing secret file.")
def new_secret(path: Path, force: bool) -> None:
    """Write a new random secret to PATH (mode 0600); the secret is not printed."""
    create_secret_file(path, force=force)
    click.echo(f"wrote a new secret to {path}")


@credentials_command.command("add-principal")
@click.argument("name")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice(sorted(auth.ROLES)),
    help="A role of the principal (repeatable).",
)
@click.option(
    "--file",
    "credentials_file",
    default=DEFAULT_CREDENTIALS,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The controller's credentials file (created, mode 0600, when missing).",
)
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="An existing secret file the principal proves (the file is referenced, not copied).",
)
@click.option(
    "--new-secret",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Create a secret file here (mode 0600) and reference it.",
)
@click.option("--uid", "uids", multiple=True, type=int, help="Unix-socket peer uid (repeatable).")
@click.option("--cert-cn", help="Common name of the principal's client certificate.")
@click.option("--replace", is_flag=True, help="Replace a principal of the same name.")
def add_principal(
    name: str,
    roles: tuple[str, ...],
    credentials_file: Path,
    secret_file: Path | None,
    new_secret: Path | None,
    uids: tuple[int, ...],
    cert_cn: str | None,
    replace: bool,
) -> None:
    """Add principal NAME to the credentials file (an agent's NAME is its host name)."""
    if secret_file is not None and new_secret is not None:
        raise click.UsageError("give --secret-file or --new-secret, not both")
    if secret_file is None and new_secret is None and not uids and not cert_cn:
        raise click.UsageError("a principal needs --secret-file, --new-secret, --uid or --cert-cn")
    data = _read_credentials(credentials_file)
    if name in data["principals"] and not replace:
        raise _fail(f"{credentials_file}: principal {name!r} exists; give --replace")
    if new_secret is not None:
        create_secret_file(new_secret, force=False)
        secret_file = new_secret
    data["principals"][name] = _entry(roles, secret_file, uids, cert_cn)
    try:
        auth.Credentials.from_mapping(data, source=str(credentials_file))  # as the controller
        make_dirs(credentials_file.parent)
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        auth.write_private_file(credentials_file, text.encode())
    except auth.CredentialError as exc:
        raise _fail(str(exc)) from exc
    except OSError as exc:
        raise _fail(f"cannot write {credentials_file}: {exc.strerror or exc}") from exc
    click.echo(f"{credentials_file}: principal {name} ({', '.join(sorted(set(roles)))})")
