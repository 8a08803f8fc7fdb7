"""The engine environments the real-engine tests run in (scripts/install_*_env.sh)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def engine_python_or_skip(engine: str, env_var: str, venv: str, script: str, modules: tuple[str, ...]) -> str:
    """The interpreter of ``engine``'s environment ($env_var, else REPO/venv); skips the calling
    test module when it is missing, lacks ``modules`` or imports revati from another checkout."""
    env = os.environ.get(env_var)
    candidate = Path(env) if env else REPO / venv / "bin" / "python"
    if not candidate.is_file():
        pytest.skip(f"the {engine} environment is not installed: run {script} or set {env_var} to its python",
                    allow_module_level=True)
    python = str(candidate)
    probe = ("import importlib.util, revati; "
             f"missing = [m for m in {list(modules)!r} if importlib.util.find_spec(m) is None]; "
             "assert not missing, f'not installed: {missing}'; print(revati.__file__)")
    proc = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.skip(f"{python} cannot run the {engine} tests: {proc.stderr.strip().splitlines()[-1:]}",
                    allow_module_level=True)
    if Path(proc.stdout.strip()).resolve().parent.parent != REPO:
        pytest.skip(f"{python} imports revati from {proc.stdout.strip()}, not this checkout "
                    "(pip install --no-deps -e . in that environment)", allow_module_level=True)
    return python
