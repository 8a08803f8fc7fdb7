"""Every command's --help shows an example (walks the whole command tree, so a new command
without one fails here)."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from revati.cli import cli


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*path, name))
        else:
            out.append((*path, name))
    return out


COMMANDS = _commands(cli)


def test_the_walk_finds_the_commands():
    assert ("emulate",) in COMMANDS and ("models", "predict") in COMMANDS and ("db", "query") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "revati")
def test_help_has_an_example(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`revati {' '.join(path)} --help` shows no example"
    assert "revati " in result.output.split("Example", 1)[1]


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "revati")
def test_every_option_has_help_text(path):
    ctx = click.Context(cli)
    cmd = cli
    for name in path:
        cmd = cmd.get_command(ctx, name)
    missing = [p.opts[0] for p in cmd.params if isinstance(p, click.Option) and not p.help and not p.hidden
               and p.opts[0] not in ("--help",)]
    assert missing == [], f"`revati {' '.join(path)}` options without help: {missing}"
