"""revati.replay: from measured kernels to predicted durations.

Sub-packages, in dependency order (each imports only those before it and the shared modules):

- ``kernel_db``: the kernel database (traces and imported public measurements, DuckDB views);
- ``model_fit``: per-op duration models fitted from it;
- ``prediction``: the predictor the shim asks at emulation time;
- ``trace_replay``: re-timing a traced run with the predictor.

Shared by all of them: ``op_mapping`` (framework ops -> the common vocabulary), ``features``
(analytic shape features), ``roofline`` (the spec-table fallback), ``stacks`` (software stacks).
tests/test_import_graph.py keeps the order.
"""
