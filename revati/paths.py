"""Where revati keeps things: the per-user home and the embedded data shipped with the package."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

HOME_ENV = "REVATI_HOME"


def revati_home() -> Path:
    """``$REVATI_HOME``, else ``$XDG_DATA_HOME/revati``, else ``~/.local/share/revati``."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "revati"


def ensure_home() -> Path:
    home = revati_home()
    home.mkdir(parents=True, exist_ok=True)
    return home


def _embedded(name: str) -> Path:
    # A source checkout (and the editable install README uses) has the folder next to revati/;
    # a wheel installs it as the namespace package revati._<name>.
    source = Path(__file__).resolve().parent.parent / name
    if source.is_dir():
        return source
    spec = importlib.util.find_spec(f"revati._{name}")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return source


def embedded_traces_dir() -> Path:
    return _embedded("traces")


def embedded_models_dir() -> Path:
    return _embedded("models")


def user_traces_dir() -> Path:
    return revati_home() / "traces"


def user_models_dir() -> Path:
    return revati_home() / "models"
