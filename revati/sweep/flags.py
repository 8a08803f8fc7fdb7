"""Check a sweep's parameter names before the first run: each key must be a flag of the program
it is passed to (GPU names are checked when the file is read: revati.sweep.config).

``{engine_args}`` and ``{workload_args}`` become ``--key value`` flags of some program in the
command (see :func:`revati.sweep.plan.render_args`). A misspelt key would otherwise fail every
run with the reason only in its ``stderr.log`` -- or worse, argparse would take ``--num-prompt``
as an abbreviation of ``--num-prompts``. So before anything runs, the command is rendered with
markers in place of the two placeholders; the program receiving each marker (after the last
``--`` before it, e.g. ``revati emulate`` for the workload of the default command and the
engine command for the engine) is asked for its ``--help``, and every key must be one of the
flags listed there, exactly.

Only programs known to answer ``--help`` without running are asked: revati's own commands and
modules (``revati ...``, ``python -m revati...``) and vLLM (``vllm ...``, ``python -m vllm...``;
its ``--help=all``). For any other program, or when it is not installed here (its runs may
happen on Ray workers), the keys are not checked.

Example::

    from revati.sweep.flags import check_sweep
    check_sweep(cfg, where="sweep.yaml")     # BadInput naming the first unknown key
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import shutil
import subprocess
import sys
from typing import Any

from revati.errors import BadInput
from revati.sweep.config import SweepConfig
from revati.sweep.plan import render_command

_MARKS = {"engine": "@@revati-engine-args@@", "workload": "@@revati-workload-args@@"}
_FLAG = re.compile(r"(?<![\w-])--([A-Za-z0-9][A-Za-z0-9_-]*)")
_OPTION_LINE = re.compile(r"^ {1,6}-")   # argparse's and click's option column (not prose, not examples)
_PYTHON = re.compile(r"^python[0-9.]*$")
_NOT_KEYS = {"help", "version"}
_LIST_AT_MOST = 40
PROBE_TIMEOUT_S = 180.0


def check_sweep(cfg: SweepConfig, where: object = None) -> None:
    """Raise BadInput unless every engine/workload key is a flag of the program it goes to."""
    where = where if where is not None else cfg.name
    receivers = arg_receivers(cfg)
    keys = {"engine": list(cfg.engine), "workload": list(cfg.workload)}
    if cfg.slo_search is not None and "request_rate" not in keys["workload"]:
        keys["workload"].append("request_rate")      # the search sets the rate of every probe
    for section in ("workload", "engine"):
        argv = receivers.get(section)
        if not keys[section] or argv is None:
            continue
        probe = probe_argv(argv)
        if probe is None:
            continue
        flags = accepted_flags(probe, tuple(sorted(cfg.env.items())))
        if flags is None:
            continue
        program = " ".join(_shown(argv, probe))
        for key in keys[section]:
            if _flag_name(key) not in flags:
                raise BadInput(where, f"{section} key {key!r} is not a flag of `{program}`{_valid(key, flags, program)}")


def arg_receivers(cfg: SweepConfig) -> dict[str, list[str]]:
    """For ``engine`` and ``workload``: the argv (program and what precedes the flags) that the
    section's ``--key value`` flags are appended to, where the command has the placeholder as a
    word of its own."""
    first = {s: {k: (v[0] if isinstance(v, list) else v) for k, v in getattr(cfg, s).items()} for s in _MARKS}
    fields: dict[str, Any] = {**first["engine"], **first["workload"], "gpu": cfg.gpus[0] if cfg.gpus else "",
                              "run_id": "r-check", "engine_command": cfg.engine_command,
                              "engine_args": _MARKS["engine"], "workload_args": _MARKS["workload"]}
    argv = list(render_command(cfg.command, fields))
    out = {}
    for section, mark in _MARKS.items():
        if mark not in argv:
            continue
        i = argv.index(mark)
        start = max((j + 1 for j in range(i) if argv[j] == "--"), default=0)
        out[section] = [a for a in argv[start:i] if a not in _MARKS.values()]
    return out


def probe_argv(argv: list[str]) -> list[str] | None:
    """The command that prints the flags of ``argv``'s program, or None if it is not one to ask.

    The program and its leading words (sub-commands, positional arguments: ``vllm serve MODEL``)
    are kept, options dropped. revati itself is asked through this interpreter.
    """
    if not argv:
        return None
    name = os.path.basename(argv[0])
    if _PYTHON.match(name) or argv[0] == sys.executable:
        if len(argv) < 3 or argv[1] != "-m":
            return None
        module, rest = argv[2], argv[3:]
        top = module.split(".")[0]
        if top == "revati":
            head = [sys.executable, "-m", module]
        elif top == "vllm":
            head = argv[:3]
        else:
            return None
    elif name == "revati":
        head, rest = [sys.executable, "-m", "revati"], argv[1:]
    elif name == "vllm":
        head, rest = argv[:1], argv[1:]
    else:
        return None
    found = shutil.which(head[0])
    if found is None:
        return None                  # not installed here: its runs may happen elsewhere (Ray)
    head[0] = found
    for word in rest:
        if word.startswith("-"):
            break
        head.append(word)
    return head


@functools.lru_cache(maxsize=32)
def _help_flags(probe: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> frozenset[str] | None:
    def ask(extra: str) -> str | None:
        try:
            proc = subprocess.run([*probe, extra], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                  timeout=PROBE_TIMEOUT_S, env={**os.environ, **dict(env)}, errors="replace")
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout + proc.stderr if proc.returncode == 0 else None

    text = ask("--help")
    if text is not None and "--help=all" in text:   # vLLM lists its engine flags only there
        text = ask("--help=all") or text
    if text is None:
        return None
    flags = frozenset(f.replace("_", "-") for line in text.splitlines() if _OPTION_LINE.match(line)
                      for f in _FLAG.findall(line.strip().split("  ")[0]))
    return flags if "help" in flags else None        # no help text: cannot tell


def accepted_flags(probe: list[str], env: tuple[tuple[str, str], ...] = ()) -> frozenset[str] | None:
    """The ``--flags`` (dashes, no leading ``--``) that ``probe --help`` lists; None if it cannot say."""
    return _help_flags(tuple(probe), env)


def _flag_name(key: str) -> str:
    return key.replace("_", "-")


def _shown(argv: list[str], probe: list[str]) -> list[str]:
    """The program as the sweep file names it (not this interpreter's path)."""
    if probe[:2] == [sys.executable, "-m"] and os.path.basename(argv[0]) == "revati":
        return ["revati", *probe[3:]]
    return argv[:len(probe)] if len(argv) >= len(probe) else probe


def _valid(key: str, flags: frozenset[str], program: str) -> str:
    keys = sorted(f.replace("-", "_") for f in flags if f not in _NOT_KEYS)
    close = difflib.get_close_matches(key, keys, n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    if len(keys) <= _LIST_AT_MOST:
        return f"{hint}; valid keys: {', '.join(keys)}"
    return f"{hint}; see `{program} --help` for its {len(keys)} flags"
