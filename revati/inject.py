"""Load revati into every Python process a command starts: sitecustomize on PYTHONPATH.

``injection_env(mode, config)`` returns the environment for the child: PYTHONPATH starts with a
folder holding revati's ``sitecustomize.py`` and ``REVATI_INJECT`` carries the JSON config.
Python imports sitecustomize at start-up in every interpreter -- the command itself, spawned and
forkserver children, and subprocesses -- and forked children inherit the loaded state. Our
sitecustomize then runs any sitecustomize it shadows, so the environment's own still loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from revati.paths import revati_home

ENV_CONFIG = "REVATI_INJECT"
MODES = ("emulate", "trace")

_SITECUSTOMIZE = '''\
# Written by revati (revati/inject.py). Loads revati when REVATI_INJECT is set.
import os as _os
import sys as _sys


def _revati_chain():
    # Run the sitecustomize this file shadows, if any.
    import importlib.machinery, importlib.util
    here = _os.path.dirname(_os.path.abspath(__file__))
    rest = [p for p in _sys.path if _os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)


_revati_chain()
if _os.environ.get("REVATI_INJECT"):
    import revati._bootstrap as _revati_bootstrap
    _revati_bootstrap.activate_from_env()
'''


def sitecustomize_dir() -> Path:
    """The folder holding revati's sitecustomize.py (written once, atomically)."""
    folder = revati_home() / "inject"
    target = folder / "sitecustomize.py"
    if not target.exists() or target.read_text() != _SITECUSTOMIZE:
        from revati.parquet_io import atomic_write_bytes

        atomic_write_bytes(target, _SITECUSTOMIZE.encode())
    return folder


def injection_env(mode: str, config: Mapping[str, Any], base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    if mode not in MODES:
        raise ValueError(f"unknown injection mode {mode!r}; expected one of {MODES}")
    env = dict(os.environ if base_env is None else base_env)
    folder = str(sitecustomize_dir())
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != folder]
    env["PYTHONPATH"] = os.pathsep.join([folder, *parts])
    env[ENV_CONFIG] = json.dumps({"mode": mode, **config}, sort_keys=True)
    return env


def read_config() -> dict[str, Any] | None:
    raw = os.environ.get(ENV_CONFIG)
    return json.loads(raw) if raw else None
