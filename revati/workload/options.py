"""The workload flags, declared once for every command that takes them.

``revati bench serve``, ``revati emulate`` (its main job, and the benchmark client it runs with
``--serve-port``) and the main job's driver (``python -m revati.drivers.hf_cb``) all take
the same workload flags. :class:`WorkloadOptions` holds them: the fields of
:class:`~revati.workload.spec.WorkloadConfig` plus the goodput SLOs, each declared with its
default, help text and accepted values (:mod:`revati.workload.flags`). From it:

- :func:`click_options`: a decorator adding the flags to a click command;
- :func:`add_argparse_arguments`: the same flags on an argparse parser;
- :func:`from_values`: the parsed values (click's keyword arguments, ``vars(namespace)``) back
  into a validated :class:`WorkloadOptions`;
- :func:`to_argv`: the flags that give the same options to a subprocess.

A command may change a default only on purpose: the main job's are :data:`MAIN_JOB_DEFAULTS`.

Example::

    @click.command()
    @click_options(defaults=MAIN_JOB_DEFAULTS, scope="Main job")
    def run(**kw):
        opts = from_values(kw)                                   # ValueError if invalid
        subprocess.run(["python", "-m", "driver", *to_argv(opts)])
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from revati.workload.flags import Range, flag, flag_fields, flag_names
from revati.workload.spec import WorkloadConfig

# The main job (`revati emulate` with no command, and its driver run on its own) is small on
# purpose: it is the first thing a user runs, and under emulation the program's host work runs
# for real, so a run's wall time grows with its requests. 16 short requests at 4/s show every
# serving metric; vllm bench serve's 1000 prompts of 1024 tokens are a benchmark's size.
MAIN_JOB_DEFAULTS: Mapping[str, Any] = types.MappingProxyType({
    "num_prompts": 16, "request_rate": 4.0, "random_input_len": 256, "random_output_len": 64})


@dataclass(frozen=True)
class WorkloadOptions(WorkloadConfig):
    """A workload and the goodput SLOs its metrics are judged by: everything the workload flags set."""

    goodput: tuple[str, ...] = flag((), "Goodput SLO as KEY:MS (ttft, tpot, e2el), e.g. ttft:500; "
                                        "repeat the flag for several.")

    def __post_init__(self) -> None:
        super().__post_init__()
        from revati.metrics.aggregate import parse_goodput

        parse_goodput(self.goodput)   # a malformed or unknown SLO fails here, before anything runs

    @property
    def goodput_slos_ms(self) -> tuple[tuple[str, float], ...]:
        """``(("ttft", 500.0), ...)``; ValueError for a malformed or unknown SLO."""
        from revati.metrics.aggregate import parse_goodput

        return parse_goodput(self.goodput)

    def workload(self) -> WorkloadConfig:
        """The workload alone (what build_workload takes and metrics.json records)."""
        return WorkloadConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(WorkloadConfig)})


def main_job_options() -> WorkloadOptions:
    """The options of `revati emulate` with no workload flag."""
    return WorkloadOptions(**MAIN_JOB_DEFAULTS)


def from_values(values: Mapping[str, Any]) -> WorkloadOptions:
    """The options from parsed flags, keyed by field name (click's keyword arguments or
    ``vars(namespace)``; the command's other keys are ignored). ValueError if invalid."""
    kwargs = {f.name: values[f.name] for f in flag_fields(WorkloadOptions)}
    kwargs["goodput"] = tuple(kwargs["goodput"] or ())   # argparse gives a list
    return WorkloadOptions(**kwargs)


def to_argv(options: WorkloadOptions) -> list[str]:
    """Flags that give ``options`` back when either parser reads them.

    Every set value is written, defaults included: the receiving command's defaults may differ
    (``revati bench serve``'s are vllm's, the main job's are small)."""
    argv: list[str] = []
    for f in flag_fields(options):
        value, name = getattr(options, f.name), flag_names(f)[0]
        if value is None:
            continue
        if isinstance(value, tuple):
            for item in value:
                argv += [name, str(item)]
        else:
            argv += [name, str(value)]   # str(float) reads back exactly, "inf" included
    return argv


def click_options(defaults: Mapping[str, Any] | None = None, scope: str = "") -> Callable:
    """Decorator adding every workload flag to a click command, in declaration order; each reaches
    the command as a keyword argument named like the field. ``scope`` starts each help text
    (``"Main job"``: the flags do not concern every use of the command)."""
    import click

    defaults = _checked(defaults)

    def decorate(command: Callable) -> Callable:
        for f in reversed(flag_fields(WorkloadOptions)):   # click lists the last-applied first
            kind, repeated = _value_type(f.name)
            default = defaults.get(f.name, f.default)
            choices, bounds = f.metadata["choices"], f.metadata["range"]
            if choices is not None:
                click_type = click.Choice(choices)
            elif bounds is not None:
                click_type = _click_range(click, kind, bounds)
            else:
                click_type = kind
            help_text = f"{scope}: {f.metadata['help']}" if scope else f.metadata["help"]
            command = click.option(*flag_names(f), f.name, type=click_type, default=default, multiple=repeated,
                                   show_default=default not in (None, ()), help=help_text)(command)
        return command

    return decorate


def add_argparse_arguments(parser: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None) -> None:
    """Every workload flag on ``parser``, with the same names, defaults and checks as click's."""
    defaults = _checked(defaults)
    for f in flag_fields(WorkloadOptions):
        kind, repeated = _value_type(f.name)
        default = defaults.get(f.name, f.default)
        shown = "" if default in (None, ()) else f" (default: {default})"
        kwargs: dict[str, Any] = dict(dest=f.name, help=(f.metadata["help"] + shown).replace("%", "%%"))
        if repeated:
            # both `--goodput a b` (vllm's way) and `--goodput a --goodput b` (what to_argv writes)
            kwargs.update(nargs="+", action="extend", type=kind, default=list(default))
        elif f.metadata["choices"] is not None:
            kwargs.update(choices=f.metadata["choices"], type=kind, default=default)
        elif f.metadata["range"] is not None:
            kwargs.update(type=_argparse_range(kind, f.metadata["range"]), default=default)
        else:
            kwargs.update(type=kind, default=default)
        parser.add_argument(*flag_names(f), **kwargs)


def _checked(defaults: Mapping[str, Any] | None) -> Mapping[str, Any]:
    defaults = dict(defaults or {})
    unknown = set(defaults) - {f.name for f in flag_fields(WorkloadOptions)}
    if unknown:   # a typo here would silently keep the shared default
        raise TypeError(f"no workload flag for default override(s) {sorted(unknown)}")
    return defaults


@functools.lru_cache(maxsize=None)
def _value_type(name: str) -> tuple[type, bool]:
    """(the type of one value, whether the flag repeats) from the field's annotation:
    ``int | None`` -> (int, False), ``tuple[str, ...]`` -> (str, True)."""
    hint = typing.get_type_hints(WorkloadOptions)[name]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return (args[0] if args else hint), False


def _click_range(click, kind: type, bounds: Range):
    make = click.IntRange if kind is int else click.FloatRange
    return make(bounds.min, bounds.max, min_open=bounds.min_open, max_open=bounds.max_open)


def _argparse_range(kind: type, bounds: Range) -> Callable[[str], Any]:
    def convert(text: str):
        value = kind(text)   # a ValueError: argparse says "invalid int value: 'x'"
        if not bounds.holds(value):
            raise argparse.ArgumentTypeError(f"{text} is not {bounds.describe()}")
        return value

    convert.__name__ = kind.__name__
    return convert
