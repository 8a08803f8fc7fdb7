"""`revati models predict`: predict a table of ops (CSV or Parquet) in the common vocabulary.

One op per row: column ``op`` (a family of :mod:`revati.vocab`), the family's parameter
columns (``m, n, k`` for gemm, ``batch_size, q_tokens, kv_len, ...`` for attention, ...) and
optionally ``dtype`` (default bf16). A file may mix families; a row leaves the columns its
family does not use empty. The output is the same rows plus ``predicted_ms`` and
``predicted_by`` (the rung that answered: ``measured``, ``interpolated``, ``model``,
``regression`` or ``roofline`` -- the fallback is shown, never hidden) and, with ``detail``,
``predicted_stack``.

Errors name the row (1-based, counting data rows) and the column: an unknown op or dtype, a
missing or non-positive parameter, a value in a column the row's op does not use, a column
no op uses.

Example::

    from revati.replay.prediction import predict_table
    from revati.replay.prediction.predictor import load_predictor
    out = predict_table.predict_file(load_predictor("h100"), "ops.csv")
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa

from revati import vocab
from revati.errors import BadInput, BadRow, UnsupportedOp

OP_COLUMN = "op"
DTYPE_COLUMN = "dtype"
OUTPUT_COLUMNS = ("predicted_ms", "predicted_by", "predicted_stack")


def param_columns() -> list[str]:
    seen: list[str] = []
    for fam in vocab.FAMILIES.values():
        for p in fam.params:
            if p not in seen:
                seen.append(p)
    return seen


def read_input(path: str | Path) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise BadInput(path, "no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix in (".csv", ".txt", ""):
            import pyarrow.csv as pcsv

            return pcsv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as exc:
        text = str(exc).strip().splitlines()
        raise BadInput(path, f"cannot read ({text[0] if text else type(exc).__name__})") from None
    raise BadInput(path, f"unsupported file type {suffix!r} (use .csv or .parquet)")


def _number(value, path, row: int, column: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise BadRow(path, row, f"column {column!r} is not a number: {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise BadRow(path, row, f"column {column!r} must be a positive number, got {value!r}")
    return v


def validate_rows(table: pa.Table, path: object = "input") -> list[tuple[str, dict[str, float], str]]:
    """(op, params, dtype) per row; raises BadInput / BadRow naming what is wrong."""
    names = table.column_names
    if OP_COLUMN not in names:
        raise BadInput(path, f"no {OP_COLUMN!r} column (columns: {', '.join(names) or 'none'})")
    known = {OP_COLUMN, DTYPE_COLUMN, *param_columns(), *OUTPUT_COLUMNS}  # outputs of a previous run are replaced
    unknown = [c for c in names if c not in known]
    if unknown:
        raise BadInput(path, f"unknown column(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join([OP_COLUMN, DTYPE_COLUMN, *param_columns()])}")
    present = [c for c in param_columns() if c in names]
    cols = {c: table.column(c).to_pylist() for c in names}
    out = []
    for i in range(table.num_rows):
        row = i + 1
        op = cols[OP_COLUMN][i]
        if op is None or str(op).strip() == "":
            raise BadRow(path, row, f"empty {OP_COLUMN!r}")
        op = str(op).strip()
        try:
            fam = vocab.family(op)
        except UnsupportedOp:
            raise BadRow(path, row, f"unknown op {op!r}; known: {', '.join(vocab.FAMILIES)}") from None
        raw_dtype = cols[DTYPE_COLUMN][i] if DTYPE_COLUMN in cols else None
        dtype = vocab.canonical_dtype(raw_dtype) if raw_dtype not in (None, "") else "bf16"
        if dtype not in vocab.DTYPE_BYTES:
            raise BadRow(path, row, f"unknown dtype {raw_dtype!r}; known: {', '.join(vocab.DTYPE_BYTES)}")
        params: dict[str, float] = {}
        for p in fam.params:
            if p not in cols:
                raise BadRow(path, row, f"op {op!r} needs column {p!r}, which the file does not have")
            if cols[p][i] is None:
                raise BadRow(path, row, f"op {op!r} needs a value in column {p!r}")
            params[p] = _number(cols[p][i], path, row, p)
        for c in present:
            if c not in fam.params and cols[c][i] is not None:
                raise BadRow(path, row, f"column {c!r} is not a parameter of {op!r} "
                                        f"(its parameters: {', '.join(fam.params)}); leave it empty")
        out.append((op, params, dtype))
    return out


def predict_rows(predictor, table: pa.Table, path: object = "input", detail: bool = False) -> pa.Table:
    """Adds ``predicted_ms`` and ``predicted_by`` (the rung of Note [Prediction ladder]:
    measured, interpolated, model, regression, roofline); with ``detail`` also
    ``predicted_stack``, the software stack whose measurement or model answered."""
    rows = validate_rows(table, path)
    ms, by, stack = [], [], []
    for op, params, dtype in rows:
        value_ns, rung, from_stack = predictor.predict_full(op, params, dtype)
        ms.append(value_ns / 1e6)
        by.append(rung)
        stack.append(from_stack or None)
    for c in OUTPUT_COLUMNS:
        if c in table.column_names:
            table = table.drop([c])
    table = table.append_column("predicted_ms", pa.array(ms, pa.float64())).append_column(
        "predicted_by", pa.array(by, pa.string()))
    return table.append_column("predicted_stack", pa.array(stack, pa.string())) if detail else table


def predict_file(predictor, path: str | Path, detail: bool = False) -> pa.Table:
    return predict_rows(predictor, read_input(path), path, detail)
