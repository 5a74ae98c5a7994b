"""Docs are part of the feature: every CLI command and every setting is in the README."""

from pathlib import Path

import click
import pytest

from node import wire
from node.cli import cli
from node.config import SETTINGS, env_name

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def commands(group: click.Group, prefix: str = "silbato"):
    for name, command in group.commands.items():
        full = f"{prefix} {name}"
        yield full
        if isinstance(command, click.Group):
            yield from commands(command, full)


@pytest.mark.parametrize("command", list(commands(cli)))
def test_every_cli_command_is_documented(command):
    assert f"`{command}" in README, f"README does not mention `{command}`"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_documented(setting):
    assert f"`{setting.name}`" in README, f"README does not document {setting.name}"


def test_the_environment_rule_is_documented():
    assert env_name("radio.port") in README


def test_the_frame_sizes_in_the_readme_are_the_codec_s():
    assert f"| transition | {wire.frame_size(wire.FrameType.TRANSITION)} |" in README
    assert f"| receipt, 30 nodes | {wire.frame_size(wire.FrameType.RECEIPT, 8)} |" in README
    assert f"| heartbeat, 30 nodes | {wire.frame_size(wire.FrameType.HEARTBEAT, 30)} |" in README


def test_the_two_setup_commands_are_in_the_readme_and_ci_runs_the_test_one():
    assert "bash .ci/demo" in README and "bash .ci/test" in README
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "bash .ci/test" in ci
