"""Which CUDA runtime/driver libraries a traced command maps, found before and while it runs.

Uprobes attach to a library *file* (its inode): every process that maps it is probed, from the
moment of attaching. Kernel names come from ``__cudaRegisterFunction``, which runs when a
library holding kernels is loaded, so the probes should be in place before the command starts.
Before the start we therefore collect the libraries the command will most likely load:

- ``--bpf-lib PATH`` given by the user;
- for an ELF executable, what ``ldd`` resolves (its RPATH/RUNPATH included);
- for a Python command, ``nvidia/*/lib/libcudart.so*`` and ``torch/lib/libcudart*`` in that
  Python's site-packages (pip wheels load these, not ``/usr/local/cuda``: bcc issue #3616);
- ``LD_LIBRARY_PATH``, ``ldconfig -p`` and ``/usr/local/cuda*/lib64``.

While the command runs, ``/proc/<pid>/maps`` of every process in its tree is read and any other
``libcudart*``/``libcuda.so*`` it mapped is probed from then on (registrations made before that
are missed; launches are still recorded, named by symbol lookup where possible).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Iterator

from revati.tracer.bpf_probes import library_kind


def parse_maps(text: str) -> list[str]:
    """File paths of the CUDA libraries in a /proc/<pid>/maps text (each once, in order)."""
    seen, out = set(), []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue
        path = parts[5].strip()
        if path.endswith(" (deleted)") or not path.startswith("/"):
            continue
        if library_kind(path) and path not in seen:
            seen.add(path)
            out.append(path)
    return out


def mapped_libraries(pid: int) -> list[str]:
    try:
        return parse_maps(Path(f"/proc/{pid}/maps").read_text())
    except (OSError, UnicodeDecodeError):
        return []


def process_tree(root: int) -> set[int]:
    """``root`` and its live descendants (from /proc/*/stat parent links)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        ppid = parent_pid(int(entry.name))
        if ppid is not None:
            parents[int(entry.name)] = ppid
    tree, changed = {root}, True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                changed = True
    return tree


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ')'
    rest = stat.rsplit(")", 1)[-1].split()
    try:
        return int(rest[1])
    except (IndexError, ValueError):
        return None


def is_descendant(pid: int, root: int, max_depth: int = 64) -> bool | None:
    """True/False while ``pid`` is alive; None when it is gone and cannot be placed."""
    current = pid
    for _ in range(max_depth):
        if current == root:
            return True
        ppid = parent_pid(current)
        if ppid is None:
            return None if current == pid else False
        if ppid <= 1:
            return False
        current = ppid
    return False


def candidate_libraries(cmd: list[str], env: dict[str, str], explicit: Iterable[str] = ()) -> list[str]:
    """Library files to probe before ``cmd`` starts, real paths, each file once."""
    found: list[str] = []
    for path in _candidates(cmd, env, explicit):
        real = os.path.realpath(path)
        if os.path.isfile(real) and real not in found:
            found.append(real)
    return found


def _candidates(cmd: list[str], env: dict[str, str], explicit: Iterable[str]) -> Iterator[str]:
    yield from explicit
    exe = _resolve_executable(cmd[0], env) if cmd else None
    if exe is not None and _is_elf(exe) and not _is_python(exe):
        yield from _ldd(exe, env)
    if exe is not None and _is_python(exe):
        for site in _python_site_dirs(exe, env):
            yield from _wheel_libraries(site)
    for folder in env.get("LD_LIBRARY_PATH", "").split(":"):
        if folder:
            yield from _libs_in(folder)
    yield from _ldconfig()
    for folder in sorted(glob.glob("/usr/local/cuda*/lib64")) + sorted(glob.glob("/usr/local/cuda*/targets/*/lib")):
        yield from _libs_in(folder)


def _libs_in(folder: str) -> Iterator[str]:
    for pattern in ("libcudart.so*", "libcuda.so*"):
        yield from sorted(glob.glob(os.path.join(folder, pattern)))


def _wheel_libraries(site: str) -> Iterator[str]:
    yield from sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib", "libcudart.so*")))
    yield from sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "lib", "libcudart.so*")))
    yield from sorted(glob.glob(os.path.join(site, "torch", "lib", "libcudart*.so*")))


def _resolve_executable(name: str, env: dict[str, str]) -> str | None:
    if os.sep in name:
        return name if os.path.exists(name) else None
    return shutil.which(name, path=env.get("PATH"))


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def _is_python(path: str) -> bool:
    base = os.path.basename(os.path.realpath(path))
    return base.startswith("python") or os.path.basename(path).startswith("python") or _shebang_python(path)


def _shebang_python(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            first = fh.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


def _python_site_dirs(exe: str, env: dict[str, str]) -> list[str]:
    """site-packages folders of the Python that will run the command (asked, with -S -I)."""
    python = exe
    if _shebang_python(exe) and not os.path.basename(exe).startswith("python"):
        try:
            with open(exe, "rb") as fh:
                python = fh.readline(200)[2:].decode().split()[0]
        except (OSError, UnicodeDecodeError, IndexError):
            python = sys.executable
    code = "import site,sys;print('\\n'.join(site.getsitepackages()+[site.getusersitepackages()]+sys.path))"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=20,
                             env={k: v for k, v in env.items() if k != "REVATI_INJECT"})
    except (OSError, subprocess.SubprocessError):
        return []
    dirs = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if line.endswith(("site-packages", "dist-packages")) and os.path.isdir(line) and line not in dirs:
            dirs.append(line)
    return dirs


def _ldd(exe: str, env: dict[str, str]) -> Iterator[str]:
    try:
        out = subprocess.run(["ldd", exe], capture_output=True, text=True, timeout=20, env=env)
    except (OSError, subprocess.SubprocessError):
        return
    for line in out.stdout.splitlines():
        if "=>" in line:
            path = line.split("=>", 1)[1].strip().split(" (", 1)[0].strip()
            if path.startswith("/") and library_kind(path):
                yield path


def _ldconfig() -> Iterator[str]:
    for ldconfig in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            continue
        for line in out.stdout.splitlines():
            if "=>" in line and ("libcudart" in line or "libcuda.so" in line):
                yield line.split("=>", 1)[1].strip()
        return
