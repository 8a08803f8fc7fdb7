"""Expand a sweep into runs: the Cartesian product of GPUs x engine x workload parameters.

Each run gets an id from a hash of its configuration, so the same configuration always maps
to the same run folder (that is what makes a sweep resumable, and what lets the SLO search
reuse a grid run at the same rate). The command is rendered from the template now, except
``{run_dir}`` and ``{port}``, which are filled in where the run executes (a Ray worker has its
own folder; runs side by side on one machine need their own ports: ``vllm serve --port {port}``
with ``revati emulate --serve-port {port}``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import shlex
import socket
import string
import threading
from dataclasses import dataclass
from typing import Any

from revati.sweep.config import SweepConfig

RUN_DIR_MARK = "{run_dir}"
PORT_MARK = "{port}"
_FILLED_WHERE_RUN = ("run_dir", "port")
_RESERVED = {"gpu", "run_dir", "port", "run_id", "engine_command", "engine_args", "workload_args"}


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    config: dict[str, Any]          # {"gpu": .., "engine": {..}, "workload": {..}}
    argv: tuple[str, ...]           # may contain {run_dir} and {port}

    def command(self, run_dir: str, port: str | None = None) -> list[str]:
        """The argv to run in ``run_dir``; ``{port}`` becomes ``port``, by default a TCP port
        free on this machine now (``port="{port}"`` leaves it for a record of the command)."""
        argv = [a.replace(RUN_DIR_MARK, run_dir) for a in self.argv]
        if any(PORT_MARK in a for a in argv):
            port = str(free_port()) if port is None else port
            argv = [a.replace(PORT_MARK, port) for a in argv]
        return argv

    @property
    def request_rate(self) -> float | None:
        rate = self.config["workload"].get("request_rate")
        return None if rate is None else float(rate)

    @property
    def config_key(self) -> str:
        """The configuration without the request rate: one latency-vs-rate curve."""
        rest = dict(self.config, workload={k: v for k, v in self.config["workload"].items() if k != "request_rate"})
        return _digest(rest)


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def render_args(params: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in params.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False or value is None:
            continue
        else:
            out += [flag, _scalar(value)]
    return out


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def free_port() -> int:
    """A TCP port nobody listens on now, and not handed to another run of this process (the
    local executor starts runs from threads; the OS may give a closed port out again)."""
    with _HANDED_OUT_LOCK:
        for _ in range(64):
            with socket.socket() as s:
                s.bind(("", 0))
                port = s.getsockname()[1]
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port
    return port


def render_command(template: str, fields: dict[str, Any]) -> tuple[str, ...]:
    names = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    missing = sorted(n for n in names if n not in fields and n not in _FILLED_WHERE_RUN)
    if missing:
        raise TemplateError(f"command placeholder(s) {', '.join('{' + m + '}' for m in missing)} "
                            f"name no parameter; known: {', '.join(sorted(fields))}")
    quoted = {k: v if k in ("engine_args", "workload_args", "engine_command") else shlex.quote(_scalar(v))
              for k, v in fields.items()}
    quoted["run_dir"] = RUN_DIR_MARK
    quoted["port"] = PORT_MARK
    try:
        return tuple(shlex.split(template.format_map(quoted)))
    except (ValueError, IndexError) as exc:
        raise TemplateError(f"bad command template: {exc}") from None


def _normal(value: Any) -> Any:
    # 4 and 4.0 are one configuration (and one run id)
    return int(value) if isinstance(value, float) and value.is_integer() else value


def make_run(cfg: SweepConfig, gpu: str | None, engine: dict[str, Any], workload: dict[str, Any]) -> RunSpec:
    engine = {k: _normal(v) for k, v in engine.items()}
    workload = {k: _normal(v) for k, v in workload.items()}
    config = {"gpu": gpu, "engine": engine, "workload": workload}
    run_id = "r-" + _digest(config)
    fields: dict[str, Any] = {**engine, **workload, "gpu": gpu or "", "run_id": run_id,
                              "engine_command": cfg.engine_command,
                              "engine_args": shlex.join(render_args(engine)),
                              "workload_args": shlex.join(render_args(workload))}
    clash = _RESERVED & (set(engine) | set(workload))
    if clash:
        raise TemplateError(f"parameter name(s) {', '.join(sorted(clash))} are reserved")
    return RunSpec(run_id, config, render_command(cfg.command, fields))


def expand(cfg: SweepConfig) -> list[RunSpec]:
    """Every run of the grid, in a stable order (GPUs, then engine, then workload values)."""
    e_keys, w_keys = list(cfg.engine), list(cfg.workload)
    e_vals = [_as_list(cfg.engine[k]) for k in e_keys]
    w_vals = [_as_list(cfg.workload[k]) for k in w_keys]
    runs = []
    for gpu in (cfg.gpus or (None,)):
        for ev in itertools.product(*e_vals):
            for wv in itertools.product(*w_vals):
                runs.append(make_run(cfg, gpu, dict(zip(e_keys, ev)), dict(zip(w_keys, wv))))
    seen: set[str] = set()
    return [r for r in runs if not (r.run_id in seen or seen.add(r.run_id))]


def num_gpus(config: dict[str, Any]) -> int:
    """GPUs a configuration occupies: the product of its parallel sizes (1 when none given)."""
    n = 1
    for key in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
        v = config["engine"].get(key)
        if isinstance(v, (int, float)) and v >= 1:
            n *= int(v)
    return n
