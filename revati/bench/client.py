"""The benchmark client: send a workload to an OpenAI-compatible server, time every token.

Requests go out at the workload's arrival offsets (``asyncio.sleep`` until each), at most
``max_concurrency`` in flight, each as a streaming (SSE) ``/v1/completions`` or
``/v1/chat/completions`` request with ``max_tokens`` = the request's output length and
ignore-EOS, so output lengths are fixed as on a real benchmark. Every chunk that carries
generated text is timestamped with the clock's ``now`` (revati.bench.clock; by default
``time.perf_counter()``, the ordinary clock, virtual under ``revati emulate``), giving TTFT, ITL,
TPOT and E2EL as ``vllm bench serve`` defines them.

How output lengths are fixed depends on the server (``length_control``):

- ``ignore_eos``: vLLM's (and SGLang's) extension field ``"ignore_eos": true``;
- ``hf_generation_config``: ``transformers serve`` rejects unknown fields (422) but accepts a
  ``generation_config`` JSON string; ``min_new_tokens = max_new_tokens = N`` fixes the length;
- ``none``: only ``max_tokens`` (a model may stop early at EOS).

Which chunk is a token: a ``choices`` chunk whose text is not empty, or an empty one that is
not the stream's terminator (no ``finish_reason``) nor a chat role header. vLLM's own client
counts every ``choices`` chunk; the difference shows only on servers that end with an empty
``finish_reason`` chunk (transformers serve), where vLLM's client would add a spurious ITL.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from revati.bench.clock import DEFAULT_CLOCK, Clock
from revati.bench.http import BaseUrl, open_request
from revati.bench.sse import SSEParser
from revati.metrics.records import RequestRecord
from revati.workload.request import WorkloadRequest

BACKENDS = {"openai": "/v1/completions", "openai-chat": "/v1/chat/completions"}
LENGTH_CONTROLS = ("ignore_eos", "hf_generation_config", "none")
PROMPT_FORMATS = ("token-ids", "text")
_ERROR_BODY_CHARS = 500


@dataclass(frozen=True)
class ClientConfig:
    base_url: str
    model: str
    backend: str = "openai"
    endpoint: str | None = None             # default: the backend's
    served_model_name: str | None = None    # the name the server knows the model by
    length_control: str = "ignore_eos"
    extra_body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    request_id_prefix: str = "revati-bench-"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.length_control not in LENGTH_CONTROLS:
            raise ValueError(f"length_control must be one of {', '.join(LENGTH_CONTROLS)}")
        BaseUrl.parse(self.base_url)

    @property
    def path(self) -> str:
        return self.endpoint or BACKENDS[self.backend]

    @property
    def api_model(self) -> str:
        return self.served_model_name or self.model


def build_payload(cfg: ClientConfig, prompt: str | list[int], output_tokens: int) -> dict:
    if cfg.backend == "openai-chat":
        if not isinstance(prompt, str):
            raise ValueError("chat completions need a text prompt (give a tokenizer)")
        payload: dict[str, Any] = {
            "model": cfg.api_model,
            "messages": [{"role": "user", "content": prompt}],
            "max_completion_tokens": output_tokens,
        }
    else:
        payload = {"model": cfg.api_model, "prompt": prompt, "max_tokens": output_tokens}
    payload["stream"] = True
    payload["stream_options"] = {"include_usage": True}
    if cfg.length_control == "ignore_eos":
        payload["ignore_eos"] = True
    elif cfg.length_control == "hf_generation_config":
        payload["generation_config"] = json.dumps(
            {"max_new_tokens": output_tokens, "min_new_tokens": output_tokens, "do_sample": False}
        )
    payload.update(cfg.extra_body)
    return payload


def _is_token_chunk(choice: dict, chat: bool) -> tuple[bool, str]:
    if chat:
        delta = choice.get("delta") or {}
        text = delta.get("content") or ""
        header_only = "role" in delta and not text
        return bool(text) or (choice.get("finish_reason") is None and not header_only), text
    text = choice.get("text") or ""
    return bool(text) or choice.get("finish_reason") is None, text


async def send_request(
    cfg: ClientConfig,
    req: WorkloadRequest,
    prompt: str | list[int],
    t0: float,
    count_tokens: Callable[[str], int] | None = None,
    clock: Clock = DEFAULT_CLOCK,
) -> RequestRecord:
    """Send one streaming request; never raises for a failed request (the record says why).
    Times are ``clock.now()`` less ``t0``."""
    now_fn = clock.now
    rec = RequestRecord(request_id=req.request_id, scheduled_s=req.arrival_s, prompt_tokens=req.prompt_tokens)
    chat = cfg.backend == "openai-chat"
    payload = build_payload(cfg, prompt, req.output_tokens)
    headers = {"x-request-id": f"{cfg.request_id_prefix}{req.request_id}", **cfg.headers}
    text_parts: list[str] = []
    usage_output: int | None = None
    rec.send_s = now_fn() - t0
    resp = None
    try:
        resp = await open_request("POST", cfg.base_url, cfg.path, json_body=payload, headers=headers)
        if resp.status != 200:
            body = (await resp.read())[:_ERROR_BODY_CHARS].decode("utf-8", "replace")
            rec.error = f"HTTP {resp.status} {resp.reason}: {body}"
            return rec
        parser = SSEParser()
        stream_error = None
        async for piece in resp.iter_body():
            for data in parser.feed(piece):
                now = now_fn() - t0
                if data.strip() == "[DONE]":
                    continue
                msg = json.loads(data)
                if "error" in msg:
                    stream_error = f"server error in stream: {msg['error']}"
                    continue
                choices = msg.get("choices") or []
                if choices:
                    is_token, text = _is_token_chunk(choices[0], chat)
                    if is_token:
                        rec.token_times_s.append(now)
                        text_parts.append(text)
                usage = msg.get("usage")
                if usage:
                    if usage.get("completion_tokens") is not None:
                        usage_output = int(usage["completion_tokens"])
                    if usage.get("prompt_tokens") is not None:
                        rec.prompt_tokens = int(usage["prompt_tokens"])
        rec.done_s = now_fn() - t0
        if stream_error:
            rec.error = stream_error
        elif not rec.token_times_s:
            rec.error = "the stream ended without a token"
        else:
            rec.success = True
        if usage_output is not None:
            rec.output_tokens = usage_output
        elif count_tokens is not None:
            rec.output_tokens = count_tokens("".join(text_parts))
        else:
            rec.output_tokens = len(rec.token_times_s)
    except Exception as exc:  # noqa: BLE001 - a failed request is recorded, not raised
        rec.success = False
        rec.error = f"{type(exc).__name__}: {exc}"
    finally:
        if resp is not None:
            resp.close()
    return rec


async def run_benchmark(
    cfg: ClientConfig,
    requests: list[WorkloadRequest],
    prompts: list[str | list[int]],
    max_concurrency: int | None = None,
    on_done: Callable[[RequestRecord], None] | None = None,
    count_tokens: Callable[[str], int] | None = None,
    clock: Clock = DEFAULT_CLOCK,
) -> tuple[list[RequestRecord], float]:
    """Send ``requests`` at their arrival offsets; return the records (in request order) and
    the benchmark duration in seconds (first arrival's wait included, as in vLLM), both on
    ``clock.now``."""
    if len(prompts) != len(requests):
        raise ValueError(f"{len(prompts)} prompts for {len(requests)} requests")
    sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    order = sorted(range(len(requests)), key=lambda i: (requests[i].arrival_s, i))
    t0 = clock.now()

    async def one(i: int) -> RequestRecord:
        if sem is None:
            rec = await send_request(cfg, requests[i], prompts[i], t0, count_tokens, clock)
        else:
            async with sem:
                rec = await send_request(cfg, requests[i], prompts[i], t0, count_tokens, clock)
        if on_done is not None:
            on_done(rec)
        return rec

    tasks: dict[int, asyncio.Task] = {}
    for i in order:
        wait_s = t0 + requests[i].arrival_s - clock.now()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        tasks[i] = asyncio.create_task(one(i))
    await asyncio.gather(*tasks.values())
    duration_s = clock.now() - t0
    return [tasks[i].result() for i in range(len(requests))], duration_s


async def wait_until_ready(base_url: str, timeout_s: float, poll_s: float = 0.5,
                           clock: Clock = DEFAULT_CLOCK) -> bool:
    """Poll ``GET /v1/models`` until it answers 200 or ``timeout_s`` passes on ``clock.now``."""
    deadline = clock.now() + timeout_s
    while True:
        try:
            resp = await open_request("GET", base_url, "/v1/models")
            try:
                await resp.read()
                if resp.status == 200:
                    return True
            finally:
                resp.close()
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if clock.now() >= deadline:
            return False
        await asyncio.sleep(poll_s)
