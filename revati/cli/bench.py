"""``revati bench serve``: benchmark an OpenAI-compatible server with a revati workload.

Flags are named as in ``vllm bench serve`` where they mean the same. Under ``revati emulate``
every clock the client reads is virtual, so the numbers are those of the emulated GPU.

\b
Examples:
  revati bench serve --base-url http://127.0.0.1:8000 --model M \\
      --dataset-name random --random-input-len 512 --random-output-len 128 \\
      --num-prompts 200 --request-rate 4 --goodput ttft:500 tpot:50 --result-dir out/
  revati bench serve --model M --dataset-name azure --dataset-path azure_code_2023 \\
      --num-prompts 500 --result-dir out/          # replay at recorded timestamps
"""

from __future__ import annotations

import json

import click

from revati.bench.client import BACKENDS, LENGTH_CONTROLS, PROMPT_FORMATS
from revati.workload.options import click_options as workload_options


def _key_values(items: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        out[key.strip()] = value.strip()
    return out


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint=what) from None


@click.group()
def bench() -> None:
    """Benchmark a serving endpoint (revati's own client).

    \b
    Examples:
      revati bench serve --base-url http://127.0.0.1:8000 --model M --num-prompts 200 --request-rate 4
    """


@bench.command("serve")
@click.option("--backend", type=click.Choice(sorted(BACKENDS)), default="openai", show_default=True,
              help="openai: /v1/completions; openai-chat: /v1/chat/completions.")
@click.option("--base-url", default=None, help="Server base URL (default http://HOST:PORT).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Server host, when no --base-url.")
@click.option("--port", default=8000, show_default=True, type=int, help="Server port, when no --base-url.")
@click.option("--endpoint", default=None, help="API path (default: the backend's).")
@click.option("--model", default=None, help="Model name; default: the server's first model (/v1/models).")
@click.option("--served-model-name", default=None, help="Name the server knows the model by, if not --model.")
@click.option("--tokenizer", default=None, help="Tokenizer path/name for text prompts (default: --model if a local directory).")
@workload_options()   # vllm bench serve's defaults
@click.option("--percentile-metrics", default="ttft,tpot,itl,e2el", show_default=True,
              help="Metrics whose percentiles are reported (comma-separated).")
@click.option("--metric-percentiles", default="50,90,95,99", show_default=True,
              help="Percentiles reported for those metrics (comma-separated).")
@click.option("--length-control", type=click.Choice(LENGTH_CONTROLS), default="ignore_eos", show_default=True,
              help="How output lengths are fixed: vLLM's ignore_eos, or a generation_config for transformers serve.")
@click.option("--prompt-format", type=click.Choice(PROMPT_FORMATS), default=None,
              help="Default: text when a tokenizer is available, else token ids.")
@click.option("--vocab-size", default=32000, show_default=True, type=int, help="Token-id prompts draw ids below this.")
@click.option("--hash-block-size", default=512, show_default=True, type=int,
              help="Prompt tokens per Mooncake hash id (requests sharing ids share those tokens).")
@click.option("--extra-body", default=None, help="JSON object merged into every request body.")
@click.option("--header", multiple=True, help="KEY=VALUE header sent with every request.")
@click.option("--metadata", multiple=True, help="KEY=VALUE stored in the result JSON.")
@click.option("--label", default=None, help="Free-text label stored in the result JSON.")
@click.option("--save-result", is_flag=True, help="Write the result files (to --result-dir, else the current directory).")
@click.option("--result-dir", default=None, type=click.Path(file_okay=False), help="Write metrics.json and requests.jsonl here.")
@click.option("--result-filename", default="metrics.json", show_default=True, help="Name of the result JSON in --result-dir.")
@click.option("--ready-check-timeout-sec", default=0, show_default=True, type=float,
              help="Wait up to this long for the server to answer /v1/models.")
@click.option("--gpu", default=None, help="Recorded in the result (revati emulate fills it in).")
@click.option("--quiet", "--disable-tqdm", "quiet", is_flag=True, help="No progress bar and no table.")
@click.argument("more_goodput", nargs=-1, metavar="")
def serve(more_goodput: tuple[str, ...], **kw) -> None:
    """Send a workload to an OpenAI-compatible server and report vLLM-style serving metrics.

    \b
    Examples:
      revati bench serve --base-url http://127.0.0.1:8000 --model M --num-prompts 200 \\
          --request-rate 4 --random-input-len 128 --random-output-len 128 --result-dir out/
      revati bench serve --base-url http://127.0.0.1:8000 --model M --dataset-name azure \\
          --dataset-path azure_conv_2023 --goodput ttft:500 tpot:50
    """
    # `--goodput ttft:500 tpot:50` as in vLLM: click options take one value, so the SLOs after the
    # first arrive as positional arguments.
    if more_goodput and not kw["goodput"]:
        raise click.UsageError(f"unexpected argument(s) {' '.join(more_goodput)}")
    # each SLO alone, whichever way it came: `--goodput "ttft:500 tpot:50"` is one value
    kw["goodput"] = tuple(slo for item in kw["goodput"] + more_goodput for slo in item.split())
    from revati.bench.client import ClientConfig
    from revati.bench.serve import BenchConfig, first_model, run_bench
    from revati.metrics.aggregate import MetricsConfig
    from revati.metrics.result import RunExtras
    from revati.workload.options import from_values
    from revati.workload.spec import check_dataset_path

    base_url = kw["base_url"] or f"http://{kw['host']}:{kw['port']}"
    try:
        options = from_values(kw)   # the workload and goodput flags, checked together
        extra_body = json.loads(kw["extra_body"]) if kw["extra_body"] else {}
        if not isinstance(extra_body, dict):
            raise ValueError("--extra-body must be a JSON object")
        workload = options.workload()
        check_dataset_path(workload)   # before waiting for the server: a typo is not worth a timeout
        clock = _bench_clock()
        model = kw["model"] or first_model(base_url, kw["ready_check_timeout_sec"], clock=clock)
        cfg = BenchConfig(
            client=ClientConfig(
                base_url=base_url, model=model, backend=kw["backend"], endpoint=kw["endpoint"],
                served_model_name=kw["served_model_name"], length_control=kw["length_control"],
                extra_body=extra_body, headers=_key_values(kw["header"], "--header"),
            ),
            workload=workload,
            metrics=MetricsConfig(
                percentiles=_floats(kw["metric_percentiles"], "--metric-percentiles"),
                percentile_metrics=tuple(m.strip() for m in kw["percentile_metrics"].split(",") if m.strip()),
                goodput_slos_ms=options.goodput_slos_ms,
            ),
            tokenizer=kw["tokenizer"], prompt_format=kw["prompt_format"], vocab_size=kw["vocab_size"],
            hash_block_size=kw["hash_block_size"],
            result_dir=kw["result_dir"], result_filename=kw["result_filename"], save_result=kw["save_result"],
            label=kw["label"], metadata=_key_values(kw["metadata"], "--metadata"),
            extras=RunExtras(gpu=kw["gpu"]),
            ready_check_timeout_s=kw["ready_check_timeout_sec"], quiet=kw["quiet"],
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    result = run_bench(cfg, clock=clock)
    if result["completed"] == 0:
        # The files are written all the same; a sweep must not count this run as a result.
        raise click.ClickException(f"all {result['failed']} requests failed; see requests.jsonl for the errors")


def _bench_clock():
    """The benchmark times requests on the program's clock (virtual under ``revati emulate``)
    and its own run on the real one (``wall_duration_s``, the emulation's speed-up)."""
    from revati.bench.clock import Clock
    from revati.inject import read_config

    if (read_config() or {}).get("mode") != "emulate":
        return Clock()
    from revati.shim import real   # captured before the shim patched time (revati/shim/real.py)

    return Clock(wall=real.perf_counter)
