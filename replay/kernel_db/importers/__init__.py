"""Importers of public GPU measurements into revati's ``op_samples`` table.

Each source module has ``import_paths(paths, gpus=None, ..., progress=None) -> ImportResult``;
``common.write_import(result, dest)`` writes a result all-or-nothing. ``revati db import`` is the
command-line front end.
"""

SOURCES = ("vidur", "aiconfigurator")
