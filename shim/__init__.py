"""revati.shim: the GPU-free runtime (virtual CUDA device, op interception, virtual time)."""

# The real primitives, captured before any installer can patch them (Note [Patch registry]).
from revati.shim import real as _real  # noqa: F401
