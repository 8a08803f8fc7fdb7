"""Rows (lists of dicts) -> validated Arrow tables of the trace schema."""

from __future__ import annotations

from typing import Iterable, Mapping

import pyarrow as pa

from revati import schema


def rows_to_table(table: str, rows: Iterable[Mapping]) -> pa.Table:
    """Build ``table`` from row dicts; keys starting with '_' are the producers' scratch space."""
    sch = schema.table_schema(table)
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    if not clean:
        return schema.empty(table)
    columns = {f.name: [r.get(f.name) for r in clean] for f in sch}
    arrays = [pa.array(columns[f.name], type=f.type) for f in sch]
    return schema.validate(pa.Table.from_arrays(arrays, schema=pa.schema(list(sch))), table)


def rows_to_tables(rows_by_table: Mapping[str, Iterable[Mapping]]) -> dict[str, pa.Table]:
    return {name: rows_to_table(name, rows) for name, rows in rows_by_table.items()}
