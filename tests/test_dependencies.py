"""Every import the package makes is declared: what a fresh install from README gets is enough.

A fresh install once failed 37 tests because ``replay/model_fit/gridmodel.py`` imports scipy inside a
function and nothing declared it; CI stayed green because its machine had scipy by hand. These
tests read the source (every import, also inside functions) and the environment they run in
(CI runs them in a new virtual environment built from README's install command).
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Source folders of the package (pyproject's package-dir); data-only packages are left out.
SOURCE_DIRS = {"revati": REPO / "revati", "revati.tracer": REPO / "tracer",
               "revati.replay": REPO / "replay", "revati.shim": REPO / "shim"}
# Imports that only an extra (or a system package) provides, and where the code needs them.
OPTIONAL_IMPORTS = {
    "vllm": "vllm", "triton": "vllm",          # inside the vLLM environment (engine adapters)
    "sglang": "sglang",                        # inside the SGLang environment (scripts/install_sglang_env.sh)
    "transformers": "hf", "tokenizers": "hf",  # the main job's engine, shipped tokenizers
    "matplotlib": "plot",                      # revati report
    "ray": "ray",                              # revati sweep --ray
    "cupti": "cupti",                          # revati trace --backend cupti
    "bcc": "bpf",                              # revati trace --backend bpf (Debian python3-bpfcc)
    "zmq": "test",                             # ZeroMQ adapter: only where the program uses zmq
}


def _requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")


def _source_files() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS.values() for p in d.rglob("*.py") if "__pycache__" not in p.parts)


def _third_party_imports() -> dict[str, list[str]]:
    """Top-level module name -> files importing it (any scope), stdlib and revati left out."""
    found: dict[str, list[str]] = {}
    for path in _source_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".", 1)[0]
                if top in sys.stdlib_module_names or top == "revati" or top.startswith("_"):
                    continue
                found.setdefault(top, []).append(str(path.relative_to(REPO)))
    return found


def _modules() -> list[str]:
    names = []
    for package, folder in SOURCE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts or path.name == "__main__.py":
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join((package, *parts)))
    return names


def test_every_module_imports_in_a_fresh_interpreter():
    # One interpreter of this environment, not the test process (whose imports could hide a gap).
    program = ("import importlib, json, sys\n"
               "bad = {}\n"
               "for name in sys.argv[1:]:\n"
               "    try:\n"
               "        importlib.import_module(name)\n"
               "    except Exception as exc:\n"
               "        bad[name] = repr(exc)\n"
               "print(json.dumps(bad))\n")
    modules = _modules()
    assert len(modules) > 100, modules  # the walk found the package
    proc = subprocess.run([sys.executable, "-c", program, *modules], capture_output=True, text=True,
                          timeout=300, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert failures == {}


def test_every_third_party_import_is_a_declared_dependency_or_a_named_extra():
    declared = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = PYPROJECT["project"]["optional-dependencies"]
    distributions = md.packages_distributions()
    undeclared = {}
    for module, files in sorted(_third_party_imports().items()):
        if module in OPTIONAL_IMPORTS:
            assert OPTIONAL_IMPORTS[module] in extras, (module, OPTIONAL_IMPORTS[module])
            continue
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
        if not dists & declared:
            undeclared[module] = (sorted(dists) or "not installed", files[:3])
    assert undeclared == {}, f"imported but not in [project] dependencies: {undeclared}"


def test_declared_dependencies_are_installed_here():
    missing = []
    for req in PYPROJECT["project"]["dependencies"]:
        name = _requirement_name(req)
        try:
            md.version(name)
        except md.PackageNotFoundError:
            missing.append(name)
    assert missing == []


def test_scipy_is_found_where_model_fitting_needs_it():
    # The import that a fresh install once lacked (replay/model_fit/gridmodel.py, replay/model_fit/fitting.py).
    assert importlib.util.find_spec("scipy.optimize") is not None
    assert importlib.util.find_spec("scipy.spatial") is not None


def test_the_vllm_environment_script_installs_every_dependency():
    # scripts/install_vllm_env.sh installs revati with --no-deps beside vLLM's own torch, so it
    # lists revati's dependencies itself; torch comes with vLLM.
    script = (REPO / "scripts" / "install_vllm_env.sh").read_text()
    line = next(ln for ln in script.splitlines() if ln.startswith('"${PIP[@]}" numpy'))
    listed = set(line.split()[1:])
    needed = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]} - {"torch"}
    assert needed <= listed, needed - listed


def test_the_sglang_environment_script_installs_every_dependency():
    # scripts/install_sglang_env.sh installs revati with --no-deps too, and lists its dependencies
    script = (REPO / "scripts" / "install_sglang_env.sh").read_text()
    line = next(ln for ln in script.splitlines() if ln.startswith("REVATI_DEPS=("))
    listed = set(line[len("REVATI_DEPS=("):].rstrip(")").split())
    needed = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]} - {"torch"}
    assert needed <= listed, needed - listed


@pytest.mark.parametrize("section", ["Set up and run", "Tests"])
def test_ci_runs_readme_commands_verbatim(section):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from readme_command import section_command
    finally:
        sys.path.pop(0)
    command = section_command((REPO / "README.md").read_text(), section)
    assert command.startswith(("pip install", "python -m pytest")), command
    ci = (REPO / ".ci" / "run").read_text()
    assert f'readme_command.py "{section}"' in ci
    assert "-m venv" in ci
