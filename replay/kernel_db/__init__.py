"""The kernel database: measured op durations from traces and imported public data, in DuckDB.

``db`` (the views and queries), ``samples`` / ``trace_samples`` / ``trace_ops`` (the
``op_samples`` rows and where they come from), ``importers`` (Vidur, AIConfigurator), ``db_output``.
"""
