"""A workload from its configuration: the flags of ``revati bench serve`` as one dataclass.

``dataset_name`` picks where lengths (and times) come from:

- ``random``: lengths uniform around ``random_input_len`` / ``random_output_len`` with
  ``random_range_ratio`` (0 = fixed), arrivals from ``request_rate`` and ``burstiness``;
- ``sharegpt-like``: lengths from :data:`revati.workload.lengths.SHAREGPT_LIKE`, same arrivals;
- ``azure``: replay of a ``request_trace`` (``dataset_path``: a shipped name such as
  ``azure_conv_2023``, the default, or a Parquet file) at its recorded timestamps;
  ``request_rate``, if finite, instead resamples the trace's lengths under synthetic arrivals;
- ``mooncake``: replay of a Mooncake JSONL file (``dataset_path``), prefixes from its hash ids;
- ``sharegpt`` / ``custom``: a ShareGPT JSON or a JSONL of prompts (``dataset_path``), read as
  ``vllm bench serve`` reads them (:mod:`revati.workload.datasets`; needs a tokenizer), same
  arrivals as random.

``trace_time_scale`` > 1 replays a trace faster. ``max_concurrency`` caps requests in flight
(with an infinite rate that is a fixed-concurrency closed loop).

Example::

    from revati.workload.spec import WorkloadConfig, build_workload
    reqs = build_workload(WorkloadConfig(num_prompts=100, request_rate=4, random_input_len=512))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from revati.errors import BadInput
from revati.workload import arrivals, lengths
from revati.workload.flags import check_flag_values, flag
from revati.workload.request import WorkloadRequest
from revati.workload.traces import load_request_trace, read_mooncake_jsonl, trace_requests

DATASETS = ("random", "sharegpt-like", "azure", "mooncake", "sharegpt", "custom")
PROMPT_FILE_DATASETS = ("sharegpt", "custom")  # prompts from a file, token counts from a tokenizer
DEFAULT_AZURE_TRACE = "azure_conv_2023"


@dataclass(frozen=True)
class WorkloadConfig:
    # Each field is also a flag of every command that takes a workload (``revati bench serve``,
    # ``revati emulate``, the main job's driver): its help text and accepted values live here,
    # and revati.workload.options makes the click and argparse options from them. The defaults
    # are ``vllm bench serve``'s; the main job overrides some (revati.workload.options).
    dataset_name: str = flag("random", "Where prompts and lengths come from: random, sharegpt-like (lengths only), "
                                       "or a file named by --dataset-path (azure, mooncake, sharegpt, custom).",
                             choices=DATASETS)
    dataset_path: str | None = flag(None, "azure: shipped trace name or request_trace Parquet; mooncake: JSONL file; "
                                          "sharegpt: ShareGPT JSON; custom: JSONL with a \"prompt\" per line.")
    num_prompts: int = flag(1000, "Requests to send.", min=1)
    request_rate: float = flag(math.inf, "Requests/s (inf: all at once; an azure trace then replays its timestamps).",
                               min=0, min_open=True)
    burstiness: float = flag(1.0, "Gamma shape of inter-arrival gaps: 1 = Poisson, <1 burstier, >1 smoother.",
                             min=0, min_open=True)
    max_concurrency: int | None = flag(None, "Most requests in flight (default: no limit).", min=1)
    random_input_len: int = flag(1024, "random dataset: prompt tokens per request.", aliases=("--input-len",), min=1)
    random_output_len: int = flag(128, "random dataset: output tokens per request (EOS ignored, as vllm bench serve).",
                                  aliases=("--output-len",), min=1)
    random_range_ratio: float = flag(0.0, "random dataset: lengths uniform in [len*(1-r), len*(1+r)].",
                                     min=0, max=1, max_open=True)
    trace_time_scale: float = flag(1.0, "Replay a trace this many times faster.", min=0, min_open=True)
    seed: int = flag(0, "Seed of the workload's draws.")
    sharegpt_output_len: int | None = flag(None, "sharegpt: output tokens per request (default: the reply's own length).",
                                           min=1)
    custom_output_len: int = flag(256, "custom: output tokens per prompt.", min=1)

    def __post_init__(self) -> None:
        check_flag_values(self)   # choices and ranges, as declared above
        if self.dataset_name == "mooncake" and not self.dataset_path:
            raise ValueError("dataset mooncake needs dataset_path (a JSONL file)")
        if self.dataset_name in PROMPT_FILE_DATASETS and not self.dataset_path:
            raise ValueError(f"dataset {self.dataset_name} needs dataset_path "
                             f"({'a ShareGPT JSON file' if self.dataset_name == 'sharegpt' else 'a JSONL file of prompts'})")
        if self.dataset_name in ("random", "sharegpt-like") and self.dataset_path:
            raise ValueError(f"dataset {self.dataset_name} takes no dataset_path")

    @property
    def replays_timestamps(self) -> bool:
        return self.dataset_name == "mooncake" or (self.dataset_name == "azure" and math.isinf(self.request_rate))

    def to_json(self) -> dict:
        d = asdict(self)
        d["request_rate"] = "inf" if math.isinf(self.request_rate) else self.request_rate
        d["burstiness"] = "inf" if math.isinf(self.burstiness) else self.burstiness
        return d


def check_dataset_path(cfg: WorkloadConfig) -> None:
    """Raise BadInput unless ``cfg.dataset_path`` names something that exists: a shipped request
    trace (azure) or a file. Callers check before they start anything (a server, an emulation)."""
    if not cfg.dataset_path:
        return
    if cfg.dataset_name == "azure":
        from revati.workload.traces import shipped_traces

        shipped = shipped_traces()
        if cfg.dataset_path in shipped:
            return
        where = f"neither a shipped request trace ({', '.join(shipped) or 'none'}) nor a file"
    else:
        where = "no such file"
    path = Path(cfg.dataset_path).expanduser()
    if path.is_dir():
        raise BadInput(cfg.dataset_path, "a folder, not a trace file")
    if not path.is_file():
        raise BadInput(cfg.dataset_path, where)


def build_workload(cfg: WorkloadConfig, encode=None) -> list[WorkloadRequest]:
    """The requests of ``cfg``, in arrival order, deterministic in ``cfg.seed``.

    ``encode`` (text -> token ids) is the tokenizer that sharegpt and custom datasets need.
    """
    if cfg.dataset_name in PROMPT_FILE_DATASETS:
        return _prompt_file_workload(cfg, encode)
    if cfg.dataset_name == "mooncake":
        return read_mooncake_jsonl(cfg.dataset_path, max_requests=cfg.num_prompts, time_scale=cfg.trace_time_scale)
    if cfg.dataset_name == "azure" and cfg.replays_timestamps:
        table = load_request_trace(cfg.dataset_path or DEFAULT_AZURE_TRACE)
        return trace_requests(table, max_requests=cfg.num_prompts, time_scale=cfg.trace_time_scale)

    rng = np.random.default_rng(cfg.seed)
    if cfg.dataset_name == "random":
        dist = lengths.uniform_around(cfg.random_input_len, cfg.random_output_len, cfg.random_range_ratio)
    elif cfg.dataset_name == "sharegpt-like":
        dist = lengths.SHAREGPT_LIKE
    else:  # azure lengths under synthetic arrivals
        dist = lengths.azure_lengths_from(cfg.dataset_path or DEFAULT_AZURE_TRACE)
    # Lengths first, then arrivals, from one generator: changing the rate keeps the lengths.
    inputs, outputs = dist.sample(cfg.num_prompts, rng)
    offsets = arrivals.from_rate(cfg.request_rate, cfg.burstiness).offsets_s(cfg.num_prompts, rng)
    return [
        WorkloadRequest(request_id=i, arrival_s=float(offsets[i]), prompt_tokens=int(inputs[i]),
                        output_tokens=int(outputs[i]))
        for i in range(cfg.num_prompts)
    ]


def _prompt_file_workload(cfg: WorkloadConfig, encode) -> list[WorkloadRequest]:
    from revati.workload import datasets

    if encode is None:
        raise BadInput("--tokenizer", f"dataset {cfg.dataset_name} needs a tokenizer to count its prompts' tokens "
                                      "(--tokenizer, or a local model directory)")
    if cfg.dataset_name == "sharegpt":
        pairs = datasets.read_sharegpt(cfg.dataset_path, encode, cfg.num_prompts, cfg.seed, cfg.sharegpt_output_len)
    else:
        pairs = datasets.read_custom(cfg.dataset_path, encode, cfg.num_prompts, cfg.custom_output_len)
    offsets = arrivals.from_rate(cfg.request_rate, cfg.burstiness).offsets_s(cfg.num_prompts, np.random.default_rng(cfg.seed))
    return [WorkloadRequest(request_id=i, arrival_s=float(offsets[i]), prompt_tokens=len(ids), output_tokens=out,
                            prompt_token_ids=tuple(ids))
            for i, (ids, out) in enumerate(pairs)]
