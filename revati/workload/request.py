"""One request of a serving workload, as the benchmark client sends it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkloadRequest:
    """A request: when it arrives and how long its prompt and its answer are.

    ``arrival_s`` is the offset from the start of the benchmark (seconds on whatever clock the
    client runs on -- virtual under ``revati emulate``). ``output_tokens`` is enforced by the
    client (``max_tokens`` plus ignore-EOS), as a benchmark on a real GPU does.
    ``prompt_token_ids`` is set when the workload fixes the prompt's tokens (prefix sharing from
    Mooncake ``hash_ids``); otherwise the client draws them. ``prefix_hash_ids`` are the
    Mooncake block hashes, kept for reporting.
    """

    request_id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prompt_token_ids: tuple[int, ...] | None = None
    prefix_hash_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.arrival_s < 0:
            raise ValueError(f"request {self.request_id}: arrival_s must be >= 0, got {self.arrival_s}")
        if self.prompt_tokens < 1:
            raise ValueError(f"request {self.request_id}: prompt_tokens must be >= 1, got {self.prompt_tokens}")
        if self.output_tokens < 1:
            raise ValueError(f"request {self.request_id}: output_tokens must be >= 1, got {self.output_tokens}")
        if self.prompt_token_ids is not None and len(self.prompt_token_ids) != self.prompt_tokens:
            raise ValueError(
                f"request {self.request_id}: {len(self.prompt_token_ids)} prompt token ids "
                f"for prompt_tokens={self.prompt_tokens}"
            )
