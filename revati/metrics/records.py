"""Per-request records of a benchmark run, and their JSONL file.

Times are seconds on the client's clock (``time.perf_counter()``, virtual under emulation),
relative to the start of the benchmark. Definitions (as ``vllm bench serve`` measures them):

- ``send_s``: when the request was sent (after waiting for a ``max_concurrency`` slot);
- ``token_times_s``: when each chunk carrying generated text arrived (the first is TTFT's end);
- TTFT = first chunk - send; ITL = gaps between consecutive chunks; E2EL = last chunk - send;
  TPOT = (E2EL - TTFT) / (output_tokens - 1) for requests with more than one output token.

A server may put several tokens in one chunk; ``output_tokens`` comes from the server's usage
report when it sends one, so TPOT stays per token while ITL is per chunk (as in vLLM).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from revati.errors import BadInput
from revati.parquet_io import atomic_write_bytes


@dataclass
class RequestRecord:
    request_id: int
    scheduled_s: float              # the workload's arrival offset
    send_s: float = 0.0
    token_times_s: list[float] = field(default_factory=list)
    done_s: float | None = None     # the response stream ended
    prompt_tokens: int = 0
    output_tokens: int = 0
    success: bool = False
    error: str = ""

    @property
    def ttft_s(self) -> float | None:
        return self.token_times_s[0] - self.send_s if self.token_times_s else None

    @property
    def itls_s(self) -> list[float]:
        t = self.token_times_s
        return [b - a for a, b in zip(t, t[1:])]

    @property
    def e2el_s(self) -> float | None:
        return self.token_times_s[-1] - self.send_s if self.token_times_s else None

    @property
    def tpot_s(self) -> float | None:
        """None for a request with at most one output token (vLLM leaves those out of TPOT)."""
        if self.output_tokens <= 1 or not self.token_times_s:
            return None
        return (self.e2el_s - self.ttft_s) / (self.output_tokens - 1)

    @property
    def client_queue_s(self) -> float:
        """Time spent waiting for a concurrency slot before sending."""
        return max(0.0, self.send_s - self.scheduled_s)

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(ttft_ms=_ms(self.ttft_s), tpot_ms=_ms(self.tpot_s), e2el_ms=_ms(self.e2el_s),
                 itl_ms=[x * 1000 for x in self.itls_s])
        return d

    @classmethod
    def from_json(cls, d: dict) -> RequestRecord:
        keep = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**keep)


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1000


def write_jsonl(records: list[RequestRecord], path: str | os.PathLike) -> Path:
    path = Path(path)
    body = "".join(json.dumps(r.to_json()) + "\n" for r in records)
    atomic_write_bytes(path, body.encode())
    return path


def read_jsonl(path: str | os.PathLike) -> list[RequestRecord]:
    path = Path(path)
    if not path.exists():
        raise BadInput(path, "no such file")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(RequestRecord.from_json(json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise BadInput(path, f"line {lineno}: not a request record ({exc})") from None
    return out
