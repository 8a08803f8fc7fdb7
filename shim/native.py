"""Native helpers, built on first use with the system compiler into a cache under REVATI_HOME.

- ``cuda_guard()``: the fake CUDA device guard for CPU builds of torch (native/fake_cuda_guard.cpp).
- ``stub_libcuda()``: a libcuda.so.1 whose calls report "no device", for CUDA builds of
  extensions on machines without a driver (native/stub_libcuda.c).

A build is keyed by the source, the torch version and the compiler, so upgrading either builds
afresh; concurrent first uses (several emulated processes starting at once) build once under a
file lock; a missing compiler or a failed build raises NativeBuildError with the compiler's
last lines.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from revati.errors import NativeBuildError
from revati.paths import revati_home

_SRC_DIR = Path(__file__).resolve().parent / "native"
_loaded: dict[str, ctypes.CDLL] = {}


def _compiler(kind: str) -> str:
    env = os.environ.get("CXX" if kind == "c++" else "CC")
    candidates = [env] if env else (["c++", "g++", "clang++"] if kind == "c++" else ["cc", "gcc", "clang"])
    for name in candidates:
        if name and shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    raise NativeBuildError(
        f"a {kind} compiler", f"none found on PATH (tried {', '.join(c for c in candidates if c)}); "
        "install one, e.g. `apt-get install g++`, or set " + ("CXX" if kind == "c++" else "CC"))


def _build(name: str, source: Path, command: list[str], key_parts: list[str]) -> Path:
    digest = hashlib.sha256("\0".join([source.read_text(), *key_parts]).encode()).hexdigest()[:16]
    out_dir = revati_home() / "native" / f"{name}-{digest}"
    target = out_dir / f"lib{name}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        tmp = out_dir / f".lib{name}.{os.getpid()}.so"
        cmd = [c.replace("{out}", str(tmp)) for c in command]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise NativeBuildError(name, f"compiler exited {proc.returncode}: {tail}")
        os.replace(tmp, target)
    return target


def cuda_guard_library() -> Path:
    import torch

    torch_dir = Path(torch.__file__).resolve().parent
    cxx = _compiler("c++")
    abi = int(bool(torch._C._GLIBCXX_USE_CXX11_ABI))
    source = _SRC_DIR / "fake_cuda_guard.cpp"
    command = [
        cxx, "-O2", "-shared", "-fPIC", "-std=c++17", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        f"-I{torch_dir / 'include'}", str(source), "-o", "{out}",
        f"-L{torch_dir / 'lib'}", "-lc10", f"-Wl,-rpath,{torch_dir / 'lib'}",
    ]
    return _build("revati_cuda_guard", source, command, [torch.__version__, str(torch_dir), cxx, str(abi)])


def cuda_guard() -> ctypes.CDLL:
    lib = _loaded.get("cuda_guard")
    if lib is None:
        lib = ctypes.CDLL(str(cuda_guard_library()))
        lib.revati_install_cuda_guard.argtypes = [ctypes.c_int]
        lib.revati_current_device.restype = ctypes.c_int
        lib.revati_set_current_device.argtypes = [ctypes.c_int]
        _loaded["cuda_guard"] = lib
    return lib


def stub_libcuda_library() -> Path:
    """Build native/stub_libcuda.c as a library whose soname is libcuda.so.1."""
    cc = _compiler("c")
    source = _SRC_DIR / "stub_libcuda.c"
    command = [cc, "-O2", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", str(source), "-o", "{out}"]
    return _build("revati_stub_libcuda", source, command, [cc])


def stub_libcuda() -> ctypes.CDLL:
    """Load the stand-in libcuda.so.1 globally, so CUDA-build extension modules can be imported."""
    lib = _loaded.get("stub_libcuda")
    if lib is None:
        lib = ctypes.CDLL(str(stub_libcuda_library()), mode=ctypes.RTLD_GLOBAL)
        _loaded["stub_libcuda"] = lib
    return lib
