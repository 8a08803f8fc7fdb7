"""A strict little CSV reader for source files: every problem names the file and the row.

Rows are numbered from 0 after the header (as ``op_samples.origin_row``); messages also give
the 1-based line, so ``sed -n <line>p FILE`` shows the culprit.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from revati.errors import BadInput

from revati.replay.kernel_db.importers.common import row_label

LINE_OFFSET = 2   # data row 0 is line 2


@dataclass
class CsvFile:
    path: Path
    header: list[str]
    rows: list[list[str]]

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    def where(self, row: int) -> str:
        return row_label(row, LINE_OFFSET)

    def strings(self, name: str) -> list[str]:
        i = self.header.index(name)
        return [r[i] for r in self.rows]

    def floats(self, name: str) -> np.ndarray:
        """A numeric column; empty cells become NaN, anything else unparsable is an error."""
        i = self.header.index(name)
        out = np.empty(len(self.rows), dtype=np.float64)
        for j, row in enumerate(self.rows):
            cell = row[i].strip()
            if cell == "":
                out[j] = np.nan
                continue
            try:
                out[j] = float(cell)
            except ValueError:
                raise BadInput(self.path, f"{self.where(j)}: column {name!r} holds {cell[:40]!r}, "
                                          f"not a number") from None
        return out

    def ints(self, name: str) -> np.ndarray:
        values = self.floats(name)
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            j = int(bad.argmax())
            raise BadInput(self.path, f"{self.where(j)}: column {name!r} holds "
                                      f"{self.rows[j][self.header.index(name)][:40]!r}, not an integer")
        return values.astype(np.int64)

    def bools(self, name: str) -> np.ndarray:
        i = self.header.index(name)
        out = np.empty(len(self.rows), dtype=bool)
        for j, row in enumerate(self.rows):
            cell = row[i].strip().lower()
            if cell not in ("true", "false", "1", "0"):
                raise BadInput(self.path, f"{self.where(j)}: column {name!r} holds {row[i][:40]!r}, "
                                          f"not true/false")
            out[j] = cell in ("true", "1")
        return out


def read_csv(path: Path) -> CsvFile:
    path = Path(path)
    if not path.exists():
        raise BadInput(path, "no such file")
    if not path.is_file():
        raise BadInput(path, "not a file")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            records = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise BadInput(path, "not a text CSV file (undecodable bytes)") from None
    except csv.Error as exc:
        raise BadInput(path, f"not a readable CSV file ({exc})") from None
    if not records or not any(cell.strip() for cell in records[0]):
        raise BadInput(path, "empty file (no header)")
    header = [h.strip() for h in records[0]]
    rows = records[1:]
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()   # a trailing blank line
    for j, row in enumerate(rows):
        if len(row) != len(header):
            raise BadInput(path, f"{row_label(j, LINE_OFFSET)}: {len(row)} fields, the header has "
                                 f"{len(header)} (truncated or not this source's CSV?)")
    if not rows:
        raise BadInput(path, "no data rows")
    return CsvFile(path, header, rows)
