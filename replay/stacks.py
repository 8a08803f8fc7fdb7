"""Software stacks: which kernels a measurement ran, as data.

Note [Kernel stacks]
====================
The same GEMM shape runs 10-20% faster or slower under another software stack (another cuBLAS,
another kernel choice), so a measurement answers for the stack it ran: ``stack_of(source,
software)`` names it from an ``op_samples`` row --

- ``torch-2.11``: a ``revati trace`` of a PyTorch program (cuBLAS and PyTorch's own attention,
  as HF transformers runs them), named by torch's version;
- ``vllm-0.24.0``: AIConfigurator's measurements of what that vLLM version runs;
- ``sarathi-serve``: Vidur's per-layer profiles; ``nccl-2.29.2``: nccl-tests collectives;
- ``own:<stack>``: any of those from the user's own traces (``$REVATI_HOME/traces``), which win
  over everything shipped.

A prediction asks for stacks in an order: the user's own first, then the stack the user names
(``--kernel-stack``, a name or the start of one: ``vllm``, ``torch-2.11``), then the default for
the engine being emulated (:data:`ENGINE_ORDER`: vLLM's own measurements for vLLM; PyTorch's for
anything else, HF transformers among them), then the rest, newest version first in each kind.
"""

from __future__ import annotations

import re

OWN = "own:"
KINDS = ("vllm", "torch", "sarathi-serve", "nccl")
ENGINE_ORDER: dict[str, tuple[str, ...]] = {
    "vllm": ("vllm", "torch", "sarathi-serve", "nccl"),
    "torch": ("torch", "vllm", "sarathi-serve", "nccl"),
}


def _version(text: str) -> tuple[int, ...]:
    m = re.search(r"(\d+(?:\.\d+)*)", text or "")
    return tuple(int(x) for x in m.group(1).split(".")) if m else ()


def stack_of(source: str, software: str, own: bool = False) -> str:
    """The stack a measurement ran on, from op_samples' ``source`` and ``software``."""
    software = software or ""
    torch_v = re.search(r"\btorch (\d+)\.(\d+)", software)
    if torch_v and source not in ("aiconfigurator", "vidur"):
        name = f"torch-{torch_v.group(1)}.{torch_v.group(2)}"
    elif m := re.match(r"\s*(vllm|sglang|nccl|trtllm)\s+(\d+(?:\.\d+)*)", software, flags=re.IGNORECASE):
        name = f"{m.group(1).lower()}-{m.group(2)}"
    elif "sarathi" in software.lower() or source == "vidur":
        name = "sarathi-serve"
    else:
        name = source or "unknown"
    return OWN + name if own else name


def kind_of(stack: str) -> str:
    name = stack[len(OWN):] if stack.startswith(OWN) else stack
    return re.sub(r"-\d+(\.\d+)*$", "", name)


def order(available: list[str], engine: str = "torch", preferred: str | None = None) -> list[str]:
    """``available`` stacks in the order a prediction asks them (Note [Kernel stacks])."""
    kinds = ENGINE_ORDER.get(engine, ENGINE_ORDER["torch"])

    def key(stack: str) -> tuple:
        own = stack.startswith(OWN)
        bare = stack[len(OWN):] if own else stack
        named = preferred is not None and (bare == preferred or bare.startswith(preferred))
        kind = kind_of(stack)
        return (not own, not named, kinds.index(kind) if kind in kinds else len(kinds),
                tuple(-v for v in _version(bare)), bare)

    return sorted(set(available), key=key)


def matches(stack: str, name: str) -> bool:
    """Whether ``--kernel-stack NAME`` names this stack (exactly, or the start of its name)."""
    bare = stack[len(OWN):] if stack.startswith(OWN) else stack
    return bare == name or bare.startswith(name) or stack == name
