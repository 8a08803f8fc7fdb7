"""Dataclass fields that are also command-line flags.

A field made with :func:`flag` carries, in ``field.metadata``, its help text, its extra flag
names and the values it accepts (a :class:`Range`, or choices). One declaration then gives the
default, the check a dataclass runs on construction (:func:`check_flag_values`) and the
``--help`` line; :mod:`revati.workload.options` turns such fields into click and argparse options.
The flag of field ``random_input_len`` is ``--random-input-len``.

Example::

    @dataclass(frozen=True)
    class Load:
        num_prompts: int = flag(1000, "Requests to send.", min=1)

        def __post_init__(self):
            check_flag_values(self)      # ValueError: num_prompts must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Range:
    """Bounds of a number; ``None``: no bound on that side; ``*_open``: the bound itself is out."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False

    def holds(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        above = self.min is None or (value > self.min if self.min_open else value >= self.min)
        below = self.max is None or (value < self.max if self.max_open else value <= self.max)
        return above and below

    def describe(self) -> str:
        """``>= 1``, ``> 0`` or ``in [0, 1)``."""
        if self.min is not None and self.max is not None:
            return f"in {'(' if self.min_open else '['}{self.min:g}, {self.max:g}{')' if self.max_open else ']'}"
        if self.min is not None:
            return f"{'>' if self.min_open else '>='} {self.min:g}"
        if self.max is not None:
            return f"{'<' if self.max_open else '<='} {self.max:g}"
        return "a number"


def flag(default: Any, help: str, *, aliases: Sequence[str] = (), choices: Sequence[str] | None = None,
         min: float | None = None, max: float | None = None, min_open: bool = False,
         max_open: bool = False) -> Any:
    """A dataclass field with ``default`` that is also the flag ``--field-name`` (and ``aliases``)."""
    bounds = Range(min, max, min_open, max_open) if min is not None or max is not None else None
    return dataclasses.field(default=default, metadata={
        "help": help, "aliases": tuple(aliases), "choices": tuple(choices) if choices else None, "range": bounds})


def flag_fields(cls_or_obj: Any) -> list[dataclasses.Field]:
    """The fields of a dataclass that are flags, in declaration order (base class first)."""
    return [f for f in dataclasses.fields(cls_or_obj) if "help" in f.metadata]


def flag_names(f: dataclasses.Field) -> tuple[str, ...]:
    """``("--random-input-len", "--input-len")``: the field's own flag first, then its aliases."""
    return (f"--{f.name.replace('_', '-')}", *f.metadata["aliases"])


def check_flag_values(obj: Any) -> None:
    """ValueError naming the first flag field whose value is not a choice or lies outside its
    range (``None``, an unset optional value, is always accepted)."""
    for f in flag_fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        choices, bounds = f.metadata["choices"], f.metadata["range"]
        if choices is not None and value not in choices:
            raise ValueError(f"{f.name} must be one of {', '.join(choices)}, got {value!r}")
        if bounds is not None and not bounds.holds(value):
            raise ValueError(f"{f.name} must be {bounds.describe()}, got {value!r}")
