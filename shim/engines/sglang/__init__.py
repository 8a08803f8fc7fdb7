"""SGLang on the virtual GPUs: what runs today, and the version it is built against.

``install(sglang_module)`` runs when the program imports ``sglang`` (engines.install registers
it) and refuses versions revati was not built for (UnsupportedEngine, raised from ``import
sglang``, with the supported list), as the vLLM adapter does. That is all it does so far: SGLang's
CUDA path does not run under revati yet; docs/sglang.md says what it needs (a ``torch.version.cuda``
for its CUDA gate, a stand-in ``sgl_kernel``, the CuTe-DSL dual GEMM import) and
``scripts/install_sglang_env.sh`` installs the supported version.
"""

from __future__ import annotations

from typing import Any

from revati.shim.engines.versions import refuse_unsupported

SUPPORTED_VERSIONS = ("0.5.23",)


def check_version(version: str) -> None:
    refuse_unsupported("SGLang", version, SUPPORTED_VERSIONS, "scripts/install_sglang_env.sh installs it")


def install(sglang: Any) -> None:
    check_version(str(getattr(sglang, "__version__", "unknown")))
