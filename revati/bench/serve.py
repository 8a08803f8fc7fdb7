"""``revati bench serve``: run a workload against a server and write the metrics.

Pieces: the workload (revati.workload), prompts (revati.workload.prompts), the client
(revati.bench.client), metrics (revati.metrics). Files written to ``result_dir``:
``metrics.json`` (vLLM's result keys plus revati's extras) and ``requests.jsonl`` (one record
per request). Works the same under ``revati emulate`` (virtual clocks) and outside it; the
clocks come from the caller (:class:`revati.bench.clock.Clock`): under emulation it passes the
real clock as ``wall``, so ``wall_duration_s`` is real time.

Example::

    from revati.bench.serve import BenchConfig, run_bench
    result = run_bench(BenchConfig(client=ClientConfig("http://127.0.0.1:8000", "m"),
                                   workload=WorkloadConfig(num_prompts=10)))
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from revati.bench.client import PROMPT_FORMATS, ClientConfig, run_benchmark, wait_until_ready
from revati.bench.clock import DEFAULT_CLOCK, Clock
from revati.errors import BadInput, RevatiError
from revati.metrics.aggregate import MetricsConfig, compute_metrics
from revati.metrics.records import write_jsonl
from revati.metrics.result import METRICS_FILE, REQUESTS_FILE, RunExtras, build_result, write_result
from revati.metrics.summary import print_summary
from revati.workload.prompts import PromptBuilder
from revati.workload.spec import WorkloadConfig, build_workload
from revati.workload.traces import MOONCAKE_BLOCK_SIZE


class ServerNotReady(RevatiError):
    def __init__(self, base_url: str, timeout_s: float):
        self.base_url = base_url
        self.timeout_s = timeout_s
        super().__init__(f"no answer from {base_url}/v1/models within {timeout_s:g} s")


@dataclass
class BenchConfig:
    client: ClientConfig
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tokenizer: str | None = None            # path or name; default: the model, if a local dir
    prompt_format: str | None = None        # token-ids | text; default: text iff a tokenizer
    vocab_size: int = 32000                 # token-id prompts without a tokenizer
    hash_block_size: int = MOONCAKE_BLOCK_SIZE  # tokens per Mooncake hash id
    result_dir: str | None = None
    result_filename: str = METRICS_FILE
    save_result: bool = False
    label: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    extras: RunExtras = field(default_factory=RunExtras)
    ready_check_timeout_s: float = 0.0
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.prompt_format is not None and self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}")
        if self.hash_block_size < 1:
            raise ValueError(f"hash_block_size must be >= 1, got {self.hash_block_size}")
        if self.vocab_size < 11:
            raise ValueError(f"vocab_size must be > 10, got {self.vocab_size}")
        if self.ready_check_timeout_s < 0:
            raise ValueError("ready_check_timeout_s must be >= 0")


def load_tokenizer(cfg: BenchConfig) -> Any:
    name = cfg.tokenizer
    if name is None and Path(cfg.client.model).is_dir():
        name = cfg.client.model
    if name is None:
        return None
    from transformers import AutoTokenizer  # heavy: only when a tokenizer is wanted

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise BadInput(name, f"cannot load a tokenizer ({str(exc).splitlines()[0]})") from None


def make_prompts(cfg: BenchConfig, requests, tokenizer) -> tuple[list, str]:
    fmt = cfg.prompt_format or ("text" if tokenizer is not None else "token-ids")
    if fmt == "text" and tokenizer is None:
        raise BadInput(cfg.client.model, "text prompts need --tokenizer (or a local model directory)")
    if cfg.client.backend == "openai-chat" and fmt != "text":
        raise BadInput(cfg.client.backend, "chat completions need text prompts (give --tokenizer)")
    added = int(tokenizer.num_special_tokens_to_add()) if fmt == "text" else 0
    builder = PromptBuilder(vocab_size=cfg.vocab_size, seed=cfg.workload.seed, tokenizer=tokenizer,
                            block_size=cfg.hash_block_size, added_special_tokens=added)
    if fmt == "text":
        return [builder.text(r) for r in requests], fmt
    return [builder.token_ids(r) for r in requests], fmt


def run_bench(cfg: BenchConfig, console: Console | None = None, clock: Clock = DEFAULT_CLOCK) -> dict:
    """Run the benchmark; write files if asked; return the result dict.

    ``clock.now`` times the requests (virtual under ``revati emulate``); ``clock.wall`` times the
    benchmark phase for ``wall_duration_s``, so a caller under emulation passes the real clock."""
    console = console or Console(stderr=True, quiet=cfg.quiet)
    tokenizer = load_tokenizer(cfg)
    encode = None if tokenizer is None else (lambda text: tokenizer(text, add_special_tokens=False)["input_ids"])
    requests = build_workload(cfg.workload, encode)
    prompts, prompt_format = make_prompts(cfg, requests, tokenizer)
    count_tokens = None
    if tokenizer is not None:
        def count_tokens(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    phase = {}

    async def main():
        if cfg.ready_check_timeout_s > 0 and not await wait_until_ready(
                cfg.client.base_url, cfg.ready_check_timeout_s, clock=clock):
            raise ServerNotReady(cfg.client.base_url, cfg.ready_check_timeout_s)
        phase["wall0"] = clock.wall()
        with Progress(TextColumn("requests"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=cfg.quiet, transient=True) as progress:
            task = progress.add_task("requests", total=len(requests))
            return await run_benchmark(
                cfg.client, requests, prompts, cfg.workload.max_concurrency,
                on_done=lambda _rec: progress.advance(task), count_tokens=count_tokens, clock=clock,
            )

    records, duration_s = asyncio.run(main())
    wall_s = clock.wall() - phase["wall0"]
    metrics = compute_metrics(records, duration_s, cfg.metrics)
    extras = cfg.extras
    if extras.wall_duration_s is None and wall_s > 0:
        # The benchmark phase on clock.wall, the real clock: under `revati emulate` clock.now is
        # virtual and duration_s is what the run would take on the GPU; outside, both are wall time.
        extras = RunExtras(**{**extras.__dict__, "wall_duration_s": wall_s})
    if extras.model is None:
        extras = RunExtras(**{**extras.__dict__, "model": cfg.client.model})
    workload = cfg.workload.to_json() | {"prompt_format": prompt_format}
    result = build_result(
        metrics,
        backend=cfg.client.backend,
        model_id=cfg.client.model,
        tokenizer_id=cfg.tokenizer or (cfg.client.model if tokenizer is not None else None),
        num_prompts=cfg.workload.num_prompts,
        request_rate=cfg.workload.request_rate,
        burstiness=cfg.workload.burstiness,
        max_concurrency=cfg.workload.max_concurrency,
        label=cfg.label,
        workload=workload,
        goodput_slos_ms=dict(cfg.metrics.goodput_slos_ms),
        extras=extras,
        metadata=cfg.metadata,
    )
    if cfg.result_dir is not None or cfg.save_result:
        out = Path(cfg.result_dir or os.getcwd())
        write_jsonl(records, out / REQUESTS_FILE)
        write_result(result, out / cfg.result_filename)
    if not cfg.quiet:
        print_summary(result, Console())
        failed = [r for r in records if not r.success]
        for r in failed[:5]:
            console.print(f"[red]request {r.request_id} failed:[/red] {r.error}")
    return result


def first_model(base_url: str, ready_timeout_s: float = 0.0, clock: Clock = DEFAULT_CLOCK) -> str:
    """The id of the server's first model (``GET /v1/models``), as vLLM does without --model."""
    from revati.bench.http import open_request

    async def fetch() -> str:
        if ready_timeout_s > 0 and not await wait_until_ready(base_url, ready_timeout_s, clock=clock):
            raise ServerNotReady(base_url, ready_timeout_s)
        try:
            resp = await open_request("GET", base_url, "/v1/models")
        except OSError as exc:
            raise BadInput(base_url, f"cannot reach the server ({exc})") from None
        try:
            data = await resp.json()
        except ValueError:
            raise BadInput(base_url, "/v1/models did not answer JSON") from None
        finally:
            resp.close()
        models = data.get("data") if isinstance(data, dict) else None
        if resp.status != 200 or not models:
            raise BadInput(base_url, "the server lists no model at /v1/models; pass --model")
        return str(models[0]["id"])

    return asyncio.run(fetch())
