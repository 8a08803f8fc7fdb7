"""The ``revati`` command line.

Subcommands live in their own modules and are imported only when used, so ``revati db`` never
pays for importing torch. Typed errors (revati.errors) become one-line messages here and
nowhere else.
"""

from __future__ import annotations

import importlib
import sys

import click

from revati import __version__
from revati.errors import RevatiError

# command name -> (module, attribute, one-line help shown in `revati --help`)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "db": ("revati.cli.db", "db", "Kernel database: import measurements, query traces with SQL."),
    "models": ("revati.cli.models", "models", "Per-op duration models: fit, predict, report held-out error."),
    "emulate": ("revati.cli.emulate", "emulate", "Run a CUDA program on virtual GPUs with time-warp clocks."),
    "bench": ("revati.cli.bench", "bench", "Benchmark an OpenAI-compatible server (vllm bench serve's metrics)."),
    "sweep": ("revati.cli.sweep", "sweep", "Run a grid of configurations (locally or on Ray), collect one results table."),
    "report": ("revati.cli.report", "report", "Plots and an HTML report from a sweep's results table."),
    "replay": ("revati.cli.replay", "replay", "Re-time a traced run with the predictor: predicted vs measured."),
    "trace": ("revati.cli.trace", "trace", "Run a command on a GPU box and record every kernel into a run folder."),
    "calibrate": ("revati.cli.calibrate", "calibrate", "Measure this machine's host-CPU speed against reference hosts."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = _COMMANDS.get(name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        return getattr(module, entry[1])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RevatiError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="revati")
def cli() -> None:
    """Predict how an LLM-serving deployment performs on GPUs, without GPUs.

    \b
    Examples:
      revati db info                      # what the kernel database holds
      revati db kernels --gpu h100        # top ops by time on an H100
    """


def main(argv: list[str] | None = None) -> None:
    from revati.lifetime import Terminated

    try:
        cli.main(args=argv, prog_name="revati")
    except Terminated as exc:  # everything revati started is stopped by now (Note [No orphans])
        click.echo(f"revati: {exc}; stopped what it had started", err=True)
        sys.exit(128 + exc.signum)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
