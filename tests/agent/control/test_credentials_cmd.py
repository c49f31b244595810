"""`sgflows credentials`: secret files and principals without Python (issue 16, newcomers)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from click.testing import CliRunner
from sgflows.agent import auth
from sgflows.agent.__main__ import cli


def test_secrets_and_principals_load_as_the_controller_loads_them(tmp_path: Path) -> None:
    runner = CliRunner()
    creds = tmp_path / "etc" / "credentials.json"
    secret = tmp_path / "etc" / "compute-1.secret"
    result = runner.invoke(cli, ["credentials", "new-secret", str(secret)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(auth.load_secret(secret)) == 64
    assert str(auth.load_secret(secret), "ascii") not in result.output  # never printed
    # Never silently replaced.
    again = runner.invoke(cli, ["credentials", "new-secret", str(secret)])
    assert again.exit_code == 1 and "--force" in again.output
    for args in (
        ["compute-1", "--role", "agent", "--secret-file", str(secret)],
        ["nova", "--role", "service", "--new-secret", str(tmp_path / "etc" / "nova.secret")],
        ["ops", "--role", "admin", "--uid", "0", "--cert-cn", "ops"],
    ):
        result = runner.invoke(cli, ["credentials", "add-principal", *args, "--file", str(creds)])
        assert result.exit_code == 0, result.output
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    table = auth.Credentials.load(creds)
    assert table.by_name("compute-1") is not None
    assert table.by_name("compute-1").secret == auth.load_secret(secret)  # type: ignore[union-attr]
    assert table.by_uid(0) is table.by_name("ops") and table.by_cert_cn("ops") is not None
    nova = table.by_name("nova")
    assert nova is not None and nova.roles == frozenset({"service"})


def test_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    creds = tmp_path / "credentials.json"
    add = ["credentials", "add-principal", "--file", str(creds)]
    result = runner.invoke(cli, [*add, "x", "--role", "agent"])
    assert result.exit_code == 2 and "needs --secret-file" in result.output
    result = runner.invoke(cli, [*add, "x", "--role", "root", "--uid", "0"])
    assert result.exit_code == 2 and "root" in result.output
    assert runner.invoke(cli, [*add, "x", "--role", "admin", "--uid", "0"]).exit_code == 0
    result = runner.invoke(cli, [*add, "x", "--role", "admin", "--uid", "1"])
    assert result.exit_code == 1 and "--replace" in result.output
    assert (
        runner.invoke(cli, [*add, "x", "--role", "admin", "--uid", "1", "--replace"]).exit_code == 0
    )
    assert json.loads(creds.read_text())["principals"]["x"]["uids"] == [1]
    creds.chmod(0o644)  # the controller would refuse it: so do we
    result = runner.invoke(cli, [*add, "y", "--role", "admin", "--uid", "2"])
    assert result.exit_code == 1 and "chmod 600" in result.output
    assert "Traceback" not in result.output
