"""``revati emulate``: run an unmodified CUDA program on virtual GPUs with time-warp clocks."""

from __future__ import annotations

import json
import sys

import click

from revati import gpus
from revati.errors import UnknownGPU


def _gpu_choice(ctx, param, value: str) -> str:
    try:
        return gpus.resolve_key(value)
    except UnknownGPU as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--gpu", default="h100", show_default=True, callback=_gpu_choice,
              help=f"Target GPU ({', '.join(gpus.known_names())} or an alias).")
@click.option("--num-gpus", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Virtual GPUs visible to every process.")
@click.option("--launch-overhead-us", default=4.0, show_default=True, type=click.FloatRange(0),
              help="Host time a real GPU box spends per kernel launch that does not happen here.")
@click.option("--host-speed", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Target host CPU speed relative to this machine (2.0 = twice as fast).")
@click.option("--no-host-cpu", is_flag=True,
              help="Do not count the program's CPU time: clocks move only by GPU time and waits (repeatable).")
@click.option("--timeline", "timeline_dir", type=click.Path(file_okay=False), default=None,
              help="Write a Chrome/Perfetto trace of each process's virtual timeline into this folder.")
@click.option("--stats-dir", type=click.Path(file_okay=False), default=None,
              help="Keep each process's emulation summary (JSON) in this folder.")
@click.option("--explain", is_flag=True, help="Print the injected set-up and exit without running.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but the program's own output.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def emulate(gpu, num_gpus, launch_overhead_us, host_speed, no_host_cpu, timeline_dir, stats_dir,
            explain, quiet, command):
    """Run COMMAND with every CUDA kernel replaced by a jump of the virtual clock.

    Every Python process COMMAND starts (children included) sees NUM_GPUS virtual GPUs: tensors
    on `cuda` have shapes but no memory, kernels are not run, and each process's clocks (time.*,
    asyncio, sleeps, timeouts) advance by the time the kernels would take on the target GPU.

    \b
    Examples:
      revati emulate --gpu h100 -- python my_inference.py
      revati emulate --gpu a100 --timeline out/ -- python -m my.server --port 8000
    """
    from revati.shim.config import EmulationConfig
    from revati.shim import launcher

    if not command:
        raise click.UsageError("give a command after --, e.g. `revati emulate -- python script.py`")
    cfg = EmulationConfig(
        gpu=gpu, num_gpus=num_gpus, launch_overhead_ns=int(launch_overhead_us * 1000),
        host_speed=host_speed, count_host_cpu=not no_host_cpu,
        timeline_path=f"{timeline_dir}/timeline-{{pid}}.json" if timeline_dir else None,
        stats_dir=stats_dir,
    )
    if explain:
        env = launcher.emulation_env(cfg)
        shown = {k: env[k] for k in sorted(env) if k.startswith(("REVATI", "PYTHONPATH", "OMP_", "HF_HUB"))}
        click.echo(json.dumps({"command": list(command), "environment": shown}, indent=2))
        return
    result = launcher.run(list(command), cfg)
    if not quiet:
        click.echo(
            f"revati: {len(result.processes)} emulated process(es) on {num_gpus}x {gpu}; "
            f"virtual {result.virtual_s:.3f} s, wall {result.wall_s:.3f} s, "
            f"roofline fallbacks {result.fallback_op_count}", err=True)
    sys.exit(result.returncode)
