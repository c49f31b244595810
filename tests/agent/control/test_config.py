"""INI configuration (oslo.config) and the click commands' argument handling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner
from sgflows.agent import config, rpc, service
from sgflows.agent.__main__ import cli


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_agent_config_from_ini(tmp_path: Path) -> None:
    ini = write(
        tmp_path / "agent.ini",
        """[DEFAULT]
debug = true
[agent]
host = compute-7
controller = tls:controller.example:6640
secret_file = /etc/sgflows/agent.secret
ca_file = /etc/sgflows/ca.pem
report_interval = 10
devices = p1, p2
[rpc]
max_message_bytes = 2048
write_timeout = 3.5
request_timeout = 7
""",
    )
    cfg = config.load_agent_config([ini])
    assert cfg.host == "compute-7" and cfg.controller == "tls:controller.example:6640"
    assert cfg.report_interval == 10.0 and cfg.report_jitter == 0.1  # default kept
    assert cfg.devices == ["p1", "p2"]
    assert cfg.limits.max_message_bytes == 2048 and cfg.limits.write_timeout == 3.5
    assert cfg.request_timeout == 7.0
    assert cfg.log.debug is True
    # A later file overrides an earlier one.
    override = write(tmp_path / "override.ini", "[agent]\nreport_interval = 2\n")
    assert config.load_agent_config([ini, override]).report_interval == 2.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[agent]\nhost = x\n", "controller is required"),
        ("[agent]\ncontroller = tcp:1.2.3.4:5\n", "plaintext TCP"),
        ("[agent]\ncontroller = unix:/x\nreport_interval = soon\n", "report_interval"),
        ("[agent]\ncontroller = unix:/x\nreport_jitter = 5\n", "report_jitter"),
    ],
)
def test_agent_config_errors(tmp_path: Path, text: str, message: str) -> None:
    ini = write(tmp_path / "agent.ini", text)
    with pytest.raises(config.ConfigError, match=message):
        config.load_agent_config([ini])


def test_controller_config(tmp_path: Path) -> None:
    ini = write(
        tmp_path / "c.ini",
        "[controller]\nmodel = /srv/model\nlisten = unix:/run/c.sock\nallowed_uids = 0, 997\n",
    )
    cfg = config.load_controller_config([ini])
    assert cfg.model == "/srv/model" and cfg.allowed_uids == [0, 997]
    assert cfg.agent_down_time == 75.0 and cfg.limits == rpc.Limits()
    no_cert = write(tmp_path / "bad.ini", "[controller]\nmodel = m\nlisten = tls:0.0.0.0:6640\n")
    with pytest.raises(config.ConfigError, match="cert_file"):
        config.load_controller_config([no_cert])
    with pytest.raises(config.ConfigError, match="model is required"):
        config.load_controller_config([write(tmp_path / "e.ini", "[controller]\n")])


def test_every_option_is_documented() -> None:
    for _group, opts in config.list_opts():
        for opt in opts:
            assert opt.help, opt.name


def test_cli_reports_configuration_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    ini = write(tmp_path / "agent.ini", "[agent]\nhost = x\n")
    result = runner.invoke(cli, ["agent", "--config-file", ini])
    assert result.exit_code == 2 and "controller is required" in result.output
    # Plain `status` asks the controller's default Unix socket (not running here).
    result = runner.invoke(cli, ["status", "--controller", "unix:/nonexistent/c.sock"])
    assert result.exit_code == 1 and "unix:/nonexistent/c.sock" in result.output
    assert "Traceback" not in result.output
    # A world-readable secret is refused before anything starts.
    secret = tmp_path / "secret"
    secret.write_text("x" * 40)
    secret.chmod(0o644)
    ini = write(
        tmp_path / "agent2.ini",
        f"[agent]\ncontroller = unix:{tmp_path}/none.sock\nsecret_file = {secret}\n"
        f"state_dir = {tmp_path}/state\n",
    )
    result = runner.invoke(cli, ["agent", "--config-file", ini])
    assert result.exit_code != 0 and "chmod 600" in result.output
    assert service.main(["--help"]) == 0


def test_every_rpc_limit_is_an_option(tmp_path: Path) -> None:
    ini = write(
        tmp_path / "c.ini",
        """[controller]
model = m
[rpc]
max_connections = 100
max_unauthenticated = 7
max_decoded_bytes = 4096
unauthenticated_message_bytes = 2048
idle_timeout = 0
close_timeout = 0.5
max_auth_failures = 1
""",
    )
    limits = config.load_controller_config([ini]).limits
    assert (limits.max_connections, limits.max_unauthenticated) == (100, 7)
    assert (limits.max_decoded_bytes, limits.unauthenticated_message_bytes) == (4096, 2048)
    assert (limits.idle_timeout, limits.close_timeout, limits.max_auth_failures) == (0, 0.5, 1)
    # Every Limits field but the read size can be set from the file.
    names = {opt.dest for opt in dict(config.list_opts())["rpc"]}
    fields = {f.name for f in dataclasses.fields(rpc.Limits)}
    assert fields - names == {"read_chunk"}


@pytest.mark.parametrize("group", ["rpc", "controller", "agent", "metadata"])
def test_unknown_options_in_our_groups_are_errors(tmp_path: Path, group: str) -> None:
    ini = write(tmp_path / "c.ini", f"[controller]\nmodel = m\n[{group}]\nmax_conections = 5\n")
    with pytest.raises(config.ConfigError, match=rf"\[{group}\] has unknown option"):
        config.load_controller_config([ini])


def test_other_groups_are_not_ours_to_check(tmp_path: Path) -> None:
    ini = write(
        tmp_path / "c.ini",
        "[DEFAULT]\ntransport_url = rabbit://\n[controller]\nmodel = m\n"
        "[sgflows_metadata_privsep]\nhelper_command = sudo x\n",
    )
    assert config.load_controller_config([ini]).model == "m"


def test_cli_reports_an_unknown_option_with_exit_2(tmp_path: Path) -> None:
    ini = write(tmp_path / "c.ini", "[controller]\nmodel = m\n[rpc]\nmax_conections = 5\n")
    result = CliRunner().invoke(cli, ["controller", "--config-file", ini])
    assert result.exit_code == 2 and "max_conections" in result.output
