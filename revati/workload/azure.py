"""Convert the Azure LLM inference trace 2023 (CSV) into revati ``request_trace`` Parquet.

The source (Azure/AzurePublicDataset, ``AzureLLMInferenceTrace_{code,conv}.csv``, CC-BY-4.0)
has one row per request: ``TIMESTAMP`` (wall-clock, 100 ns resolution), ``ContextTokens``,
``GeneratedTokens``. The converted tables keep every request; ``arrival_ns`` is relative to the
first request. The shipped copies in ``traces/workloads/`` were made with::

    python -m revati.workload.azure /work/shared/data/azure_llm_inference_2023 traces/workloads
"""

from __future__ import annotations

import csv
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from revati import parquet_io
from revati.errors import BadInput
from revati.workload.traces import trace_file_name

SOURCE = "Azure/AzurePublicDataset@b469a113"
KINDS = ("conv", "code")


def parse_timestamp_ns(text: str) -> int:
    """``2023-11-16 18:17:03.9799600`` -> ns since the epoch (the trace's clock, taken as UTC)."""
    base, _, frac = text.strip().partition(".")
    try:
        seconds = datetime.strptime(base, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
        frac_ns = int((frac + "000000000")[:9]) if frac else 0
    except ValueError:
        raise BadInput(text, "not a 'YYYY-MM-DD HH:MM:SS[.fffffff]' timestamp") from None
    return int(seconds) * 1_000_000_000 + frac_ns


def convert_csv(csv_path: Path, run_id: str) -> pa.Table:
    csv_path = Path(csv_path)
    if not csv_path.exists():
        raise BadInput(csv_path, "no such file")
    times: list[int] = []
    inputs: list[int] = []
    outputs: list[int] = []
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        need = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
        if not need <= set(reader.fieldnames or ()):
            raise BadInput(csv_path, f"expected columns {sorted(need)}, got {reader.fieldnames}")
        for row in reader:
            try:
                times.append(parse_timestamp_ns(row["TIMESTAMP"]))
                inputs.append(int(row["ContextTokens"]))
                outputs.append(int(row["GeneratedTokens"]))
            except ValueError:
                raise BadInput(csv_path, f"line {reader.line_num}: bad row {row}") from None
    if not times:
        raise BadInput(csv_path, "no rows")
    order = sorted(range(len(times)), key=lambda i: times[i])
    t0 = times[order[0]]
    return pa.table({
        "run_id": [run_id] * len(order),
        "request_id": list(range(len(order))),
        "arrival_ns": [times[i] - t0 for i in order],
        "input_tokens": [inputs[i] for i in order],
        "output_tokens": [outputs[i] for i in order],
        "source": [f"{SOURCE} {csv_path.name}"] * len(order),
    })


def convert_folder(src: Path, dst: Path) -> list[Path]:
    written = []
    for kind in KINDS:
        table = convert_csv(Path(src) / f"AzureLLMInferenceTrace_{kind}.csv", f"azure_{kind}_2023")
        written.append(parquet_io.write_table(table, "request_trace", Path(dst) / trace_file_name(f"azure_{kind}_2023")))
    return written


if __name__ == "__main__":  # pragma: no cover - a maintenance command
    if len(sys.argv) != 3:
        sys.exit("usage: python -m revati.workload.azure SRC_DIR DST_DIR")
    for p in convert_folder(Path(sys.argv[1]), Path(sys.argv[2])):
        print(p, p.stat().st_size, "bytes")
