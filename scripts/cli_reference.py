"""Write docs/cli.md, the CLI reference, from the ``--help`` of every ``revati`` command.

usage: python scripts/cli_reference.py            # (re)write docs/cli.md
       python scripts/cli_reference.py --check    # exit 1 with one line if docs/cli.md is stale

Walks the click command tree (every group and subcommand, recursively, in sorted order) and
renders each command's help the way ``revati ... --help`` prints it, but at a fixed width, so
the file is the same on every machine and in every terminal (Note [Deterministic CLI reference]).
tests/test_cli_reference.py runs the check in CI: a CLI change that is not regenerated fails it.

Example:
  python scripts/cli_reference.py && git diff docs/cli.md
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "cli.md"
REGENERATE = "python scripts/cli_reference.py"
PROG = "revati"
# Note [Deterministic CLI reference]
# click wraps help to the terminal: HelpFormatter's width is min(terminal columns, 80) - 2 unless
# the context fixes it, and the columns come from $COLUMNS or the tty. Every context made here
# gets terminal_width = max_content_width = WIDTH, so neither the terminal nor the environment
# reaches the text. No help text may embed a value computed from the machine (paths, $HOME or
# $REVATI_HOME expanded, CPU counts or names): options whose default depends on the machine show
# a fixed description instead (e.g. `--jobs`: "default: ... the number of cores"), and
# tests/test_cli_reference.py renders under two different environments and compares.
WIDTH = 80


def _context(command: click.Command, name: str, parent: click.Context | None) -> click.Context:
    """The context ``revati ... NAME --help`` would build (the command's own context_settings,
    e.g. ``-h`` as a help option), at the fixed width."""
    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    return click.Context(command, info_name=name, parent=parent, **settings)


def walk(command: click.Command, name: str = PROG, parent: click.Context | None = None):
    """Yield (command path, help text) for ``command`` and everything under it, parents first,
    subcommands in sorted order."""
    ctx = _context(command, name, parent)
    yield ctx.command_path, command.get_help(ctx)
    if isinstance(command, click.Group):
        for sub_name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, sub_name)
            if sub is None or sub.hidden:
                continue
            yield from walk(sub, sub_name, ctx)


def render() -> str:
    """The whole of docs/cli.md."""
    from revati.cli import cli

    parts = [
        "# revati command-line reference\n",
        f"Generated from each command's `--help`; do not edit by hand. Regenerate with "
        f"`{REGENERATE}` (CI runs `{REGENERATE} --check` through tests/test_cli_reference.py).\n",
    ]
    for path, text in walk(cli):
        parts.append(f"## {path}\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


def is_current(path: Path) -> bool:
    """Whether ``path`` holds exactly what :func:`render` writes now."""
    return path.is_file() and path.read_text(encoding="utf-8") == render()


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"]):
        print("\n".join(__doc__.strip().splitlines()[2:4]), file=sys.stderr)
        return 2
    if argv == ["--check"]:
        if not is_current(OUTPUT):
            shown = OUTPUT.relative_to(ROOT) if OUTPUT.is_relative_to(ROOT) else OUTPUT
            print(f"cli_reference: {shown} is out of date with the CLI; regenerate it with `{REGENERATE}`",
                  file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
