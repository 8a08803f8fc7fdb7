"""revati: predict LLM-serving performance on GPUs without GPUs.

Record real kernels once on a GPU box (``revati trace``), keep them in a DuckDB kernel database
(``revati db``), fit per-op duration models (``revati models``), then run the real, unmodified
serving framework on a laptop under a virtual CUDA device whose clocks jump by predicted kernel
times (``revati emulate``).
"""

__version__ = "0.1.0"
