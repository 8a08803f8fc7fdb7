"""Python children started with exec are announced to the timekeeper; one that cannot be
announced starts anyway, and revati says so (once)."""
from __future__ import annotations

import subprocess
import sys

import _posixsubprocess


class _Coordinator:
    def __init__(self, fail: bool):
        self.fail = fail
        self.announced: list[str] = []
        self.started: list[tuple[str, int]] = []

    def announce_child(self, timeout_s=None):
        if self.fail:
            raise ConnectionError("timekeeper unreachable")
        self.announced.append(f"t{len(self.announced)}")
        return self.announced[-1]

    def child_env(self, ticket):
        return {"REVATI_COORD_TICKET": ticket}

    def child_started(self, ticket, pid):
        self.started.append((ticket, pid))

    def cancel_child(self, ticket):
        pass


def _install(monkeypatch, coordinator):
    from revati.shim import vtime

    monkeypatch.setattr(_posixsubprocess, "fork_exec", _posixsubprocess.fork_exec)  # restored afterwards
    monkeypatch.setattr(subprocess, "_fork_exec", getattr(subprocess, "_fork_exec", None))
    monkeypatch.setattr(vtime, "_UNANNOUNCED", [])
    vtime._install_child_announcement(coordinator)


ENV = {"REVATI_INJECT": "{}", "PATH": "/usr/bin:/bin"}


def test_subprocess_children_are_announced(monkeypatch):
    # subprocess binds fork_exec at its own import: patching _posixsubprocess alone missed them.
    coord = _Coordinator(fail=False)
    _install(monkeypatch, coord)
    out = subprocess.run([sys.executable, "-c", "import os; print(os.environ['REVATI_COORD_TICKET'])"], env=ENV,
                         capture_output=True, text=True)
    assert out.stdout.strip() == "t0"
    assert coord.announced == ["t0"] and coord.started[0][0] == "t0"
    subprocess.run(["true"], env=ENV)  # not Python: not announced
    assert coord.announced == ["t0"]


def test_failed_announcement_is_reported_not_swallowed(capfd, monkeypatch):
    _install(monkeypatch, _Coordinator(fail=True))
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", "print('child ran')"], env=ENV, capture_output=True, text=True)
        assert out.stdout.strip() == "child ran"
    err = capfd.readouterr().err
    assert err.count("could not announce a child process") == 1 and "timekeeper unreachable" in err
