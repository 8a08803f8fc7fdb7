"""The one rule for engine versions: a release revati was not built against is refused by name."""

from __future__ import annotations

from revati.errors import UnsupportedEngine


def refuse_unsupported(engine: str, version: str, supported: tuple[str, ...], how_to_install: str) -> None:
    """Raise UnsupportedEngine unless ``version`` (a local suffix such as ``+cpu`` aside) is one of
    ``supported``; the message lists them and says how to install one."""
    if version.split("+", 1)[0] not in supported:
        raise UnsupportedEngine(engine, version, f"supported versions are {', '.join(supported)} ({how_to_install})")
