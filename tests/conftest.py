"""Shared fixtures. Every test runs with its own REVATI_HOME (nothing leaks into ~)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("revati_home")
    monkeypatch.setenv("REVATI_HOME", str(home))
    return home
