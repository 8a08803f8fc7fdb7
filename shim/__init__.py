"""revati.shim: the GPU-free runtime (virtual CUDA device, op interception, virtual time)."""
