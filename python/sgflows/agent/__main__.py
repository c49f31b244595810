"""``python -m sgflows.agent {agent,controller,credentials,status}``: as ``sgflows``."""

from __future__ import annotations

import logging

import click

from .credentials_cmd import credentials_command
from .service import agent_command, controller_command, status_command

LOG = logging.getLogger(__name__)


@click.group()
def cli() -> None:
    """sgflows agent control plane."""


cli.add_command(agent_command, "agent")
cli.add_command(controller_command, "controller")
cli.add_command(credentials_command, "credentials")
cli.add_command(status_command, "status")

if __name__ == "__main__":
    cli(prog_name="python -m sgflows.agent")
