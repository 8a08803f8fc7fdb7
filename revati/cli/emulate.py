"""``revati emulate``: run an unmodified CUDA program on virtual GPUs with time-warp clocks."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from revati import gpus
from revati.errors import BadInput, UnknownGPU
from revati.hostcpu import NOT_COUNTED
from revati.workload.options import MAIN_JOB_DEFAULTS, WorkloadOptions, from_values, to_argv
from revati.workload.options import click_options as workload_options


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
@click.option("--launch-overhead-us", default=8.0, show_default=True, type=click.FloatRange(0),
              help="Host time a real GPU box spends per kernel launch that does not happen here "
                   "(8 us: an aten op that launches one kernel, measured on an H100 box).")
@click.option("--kernel-stack", default=None, metavar="NAME",
              help="Answer kernel times from this software stack's measurements first (e.g. vllm-0.24.0, vllm, "
                   "torch-2.11, sarathi-serve) [default: your own traces, then the emulated engine's stack].")
@click.option("--host-cpu", default="native", show_default=True, metavar="NAME|auto|native",
              help="Host CPU the measured host time stands for: native (this machine's), auto (the host "
                   "recorded in the target GPU's traces) or a reference host of `revati calibrate`.")
@click.option("--host-speed", default=None, type=click.FloatRange(min=0.01),
              help="Instead of --host-cpu: target host CPU speed relative to this machine (2.0 = twice as fast).")
@click.option("--raw-host-cpu", is_flag=True,
              help="Count host CPU time as measured, without the drift filter that divides out this machine's "
                   "momentary slowness (Note [Host-time drift filter]).")
@click.option("--no-host-cpu", is_flag=True,
              help="Do not count the program's CPU time: clocks move only by GPU time and waits (repeatable).")
@click.option("--timeline", "timeline_dir", type=click.Path(file_okay=False), default=None,
              help="Write a Chrome/Perfetto trace of each process's virtual timeline into this folder.")
@click.option("--stats-dir", type=click.Path(file_okay=False), default=None,
              help="Keep each process's emulation summary (JSON) in this folder.")
@click.option("--model", default="llama-2-7b", show_default=True,
              help="Main job only: a shipped model (llama-2-7b, llama-2-70b, llama-3-8b, qwen2.5-7b, mistral-7b, "
                   "tiny-llama; shapes only, no weights) or an HF model directory.")
# the workload flags, with the main job's own defaults (small on purpose: see MAIN_JOB_DEFAULTS)
@workload_options(defaults=MAIN_JOB_DEFAULTS, scope="Main job")
@click.option("--result-dir", type=click.Path(file_okay=False), default=None,
              help="Main job: write metrics.json and requests.jsonl here.")
@click.option("--serve-port", type=click.IntRange(1, 65535), default=None,
              help="COMMAND is a server listening on this port (e.g. `vllm serve`): run revati's benchmark "
                   "client against it under the same emulation with the workload flags, then stop it.")
@click.option("--client", "client_command", default=None, metavar="'COMMAND ARGS'",
              help="With --serve-port: run this benchmark client (one shell-quoted string, e.g. `vllm bench "
                   "serve ...`) instead of revati's, under the same emulation; it writes its own results.")
@click.option("--deadlock-timeout-s", default=30.0, show_default=True, type=click.FloatRange(0.1),
              help="Real seconds every process may stay blocked with no pending wake-up before the run is stopped.")
@click.option("--explain", is_flag=True,
              help="Print the injected set-up and what revati patches (Note [Patch registry]), and exit without running.")
@click.option("-v", "--verbose", is_flag=True, help="Also print each process's summary and the timekeeper's counters.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but the program's own output.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def emulate(gpu, num_gpus, launch_overhead_us, kernel_stack, host_cpu, host_speed, raw_host_cpu, no_host_cpu, timeline_dir,
            stats_dir, model, result_dir, serve_port, client_command, deadlock_timeout_s, explain, verbose, quiet,
            command, **workload_flags):
    """Run COMMAND with every CUDA kernel replaced by a jump of the virtual clock.

    Every Python process COMMAND starts (children included) sees NUM_GPUS virtual GPUs: tensors
    on `cuda` have shapes but no memory, kernels are not run, and each process's clocks (time.*,
    asyncio, sleeps, timeouts) advance by the time the kernels would take on the target GPU.

    With no COMMAND, runs the main job: HF transformers continuous batching of a model (default:
    Llama-2-7B shape, no weights) serving a workload, and prints vllm bench serve's metrics.

    \b
    Examples:
      revati emulate                                   # the main job on a virtual H100
      revati emulate --gpu a100 --num-prompts 64 --request-rate 8 --result-dir out/
      revati emulate --gpu h100 -- python my_inference.py
      revati emulate --gpu h100 --serve-port 8000 --num-prompts 200 --request-rate 4 \\
          --result-dir out/ -- vllm serve DIR --port 8000 --load-format dummy
      revati emulate --gpu h100 --serve-port 8000 --client "vllm bench serve --model DIR \\
          --port 8000 --num-prompts 200 --request-rate 4 --save-result" -- vllm serve DIR --port 8000
      revati emulate --gpu a100 --timeline out/ -- python -m my.server --port 8000
    """
    from revati.shim.config import EmulationConfig
    from revati.shim import launcher

    main_job = not command
    if command and not explain:
        _check_command(command)
    workload: list[str] = []   # the workload flags, for the main job's driver or the benchmark client
    if main_job or serve_port is not None:
        workload = to_argv(_check_workload(workload_flags))
    if main_job:
        from revati.drivers.hf_cb import model_source

        model_source(model, build=False)
    client_cmd = None
    if client_command is not None and serve_port is None:
        raise click.UsageError("--client needs --serve-port (the port the server listens on)")
    if serve_port is not None:
        if not command:
            raise click.UsageError("--serve-port needs the server command after --, e.g. "
                                   "`-- vllm serve DIR --port 8000 --load-format dummy`")
        if client_command is not None:
            given = _given_workload_flags(workload_flags)
            if given:
                raise click.UsageError(f"{', '.join(given)}: with --client the workload is the client's own; "
                                       "give it in the --client command")
            client_cmd = _user_client(client_command)
        else:
            result_dir = result_dir or tempfile.mkdtemp(prefix="revati-serve-")
            client_cmd = [sys.executable, "-m", "revati", "bench", "serve", "--base-url",
                          f"http://127.0.0.1:{serve_port}", "--ready-check-timeout-sec", "36000",
                          "--result-dir", result_dir, "--quiet", *workload]
    if not command:
        # the main job's driver takes the same workload flags as revati's benchmark client
        command = (sys.executable, "-m", "revati.drivers.hf_cb", "--model", model, *workload)
        command += ("--result-dir", result_dir) if result_dir else ()
        command += ("--quiet",) if quiet else ()
    host = _host_target(host_cpu, host_speed, gpu, no_host_cpu)
    cfg = EmulationConfig(
        gpu=gpu, num_gpus=num_gpus, launch_overhead_ns=int(launch_overhead_us * 1000), kernel_stack=kernel_stack,
        host_speed=host.speed_factor, host_cpu=host.name, count_host_cpu=not no_host_cpu,
        host_drift_filter=not raw_host_cpu,
        timeline_path=f"{timeline_dir}/timeline-{{pid}}.json" if timeline_dir else None,
        stats_dir=stats_dir,
    )
    if explain:
        env = launcher.emulation_env(cfg)
        shown = {k: env[k] for k in sorted(env) if k.startswith(("REVATI", "PYTHONPATH", "OMP_", "HF_HUB"))}
        # what activation patches and which import hooks it sets (Note [Patch registry]): which
        # of them fire depends on what the program imports, which -v reports after a run
        patched = launcher.explain_patches(cfg)
        click.echo(json.dumps({"command": list(command), "environment": shown, "patches": patched["patches"],
                               "import_hooks": [h["module"] for h in patched["hooks"]]}, indent=2))
        return
    try:
        result = launcher.run(list(command), cfg, deadlock_timeout_s=deadlock_timeout_s, client_cmd=client_cmd,
                              serve_port=serve_port if client_cmd is not None else None)
    except (FileNotFoundError, PermissionError) as exc:   # _check_command missed it (a race, an odd PATH)
        raise BadInput(exc.filename or command[0], f"cannot run it ({exc.strerror or exc})") from None
    if timeline_dir:
        from revati.shim.timeline import merge_timelines

        merged = merge_timelines(timeline_dir)
        if merged and not quiet:
            click.echo(f"revati: timeline of all processes: {merged} (open in ui.perfetto.dev)", err=True)
    if client_cmd is not None and client_command is None:
        _finish_serve_run(result, result_dir, gpu, quiet, cfg)
    elif result_dir and (Path(result_dir) / "metrics.json").exists():   # the main job wrote it
        from revati.metrics.result import METRICS_FILE, RunExtras, merge_extras

        merge_extras(Path(result_dir) / METRICS_FILE, RunExtras(wall_breakdown=result.wall_breakdown()))
    if result.deadlock is not None:
        click.echo("revati: deadlock: every emulated process was blocked with nothing to wake it "
                   f"for {deadlock_timeout_s:g} s (each process's state is listed above); the run was stopped",
                   err=True)
    if verbose:
        from revati.shim.breakdown import format_line

        for proc in result.processes:
            click.echo("revati: process " + json.dumps({k: proc.get(k) for k in (
                "pid", "process_name", "virtual_now_ns", "shim_cpu_ns", "ops", "signatures", "kernels_launched",
                "syncs", "fallback_op_count", "dispatch")}), err=True)
        click.echo(f"revati: timekeeper {json.dumps(result.timekeeper)}", err=True)
        for proc in result.processes:   # Note [Wall-time breakdown]
            if proc.get("breakdown"):
                name = f"{proc.get('process_name')} ({proc.get('pid')})"
                click.echo(f"revati: {format_line(name, proc['breakdown'])}", err=True)
        total = result.wall_breakdown()
        if total["processes"]:
            click.echo("revati: " + format_line(f"all {total['processes']} processes, against the run's wall", total),
                       err=True)
    if not quiet or verbose:
        for hook in result.hooks_not_fired():   # Note [Patch registry]
            click.echo(f"revati: warning: the import hook for {hook} fired in no process although its engine "
                       "was imported: that engine moved a module revati relies on; its timing may be wrong", err=True)
    # A failed main job has said why in one line; the summary would only bury it.
    if not quiet and (verbose or not main_job or result.returncode == 0):
        click.echo(
            f"revati: {len(result.processes)} emulated process(es) on {num_gpus}x {gpu}; "
            f"host CPU {host.name if not no_host_cpu else 'not counted'}"
            f"{f' (x{host.speed_factor:.3g})' if not no_host_cpu and host.speed_factor != 1.0 else ''}"
            f"{f', {result.host_time_share:.0%} of virtual time' if not no_host_cpu and result.host_time_share is not None else ''}; "
            f"processes ran {result.virtual_s:.3f} s virtual (start-up included) in {result.wall_s:.3f} s wall, "
            f"roofline fallbacks {result.fallback_op_count}", err=True)
    sys.exit(result.returncode)


def _given_workload_flags(workload_flags: dict) -> list[str]:
    """The workload flags set on the command line (not left at their defaults)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return [f"--{name.replace('_', '-')}" for name in workload_flags
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]


def _user_client(client_command: str) -> list[str]:
    """``--client``'s command as an argument list; a usage error when it cannot be run."""
    import shlex

    try:
        argv = shlex.split(client_command)
    except ValueError as exc:
        raise click.UsageError(f"--client {client_command!r}: {exc}") from None
    if not argv:
        raise click.UsageError("--client needs a command, e.g. --client \"vllm bench serve --model DIR ...\"")
    try:
        _check_command(tuple(argv))
    except BadInput as exc:
        raise click.UsageError(f"--client: {exc}") from None
    return argv


def _host_target(host_cpu: str, host_speed: float | None, gpu: str, no_host_cpu: bool):
    """--host-cpu / --host-speed -> what measured host time is scaled to (Note [Host-speed calibration])."""
    from revati import hostcpu

    if host_speed is not None:
        if host_cpu != hostcpu.NATIVE:
            raise click.UsageError("give --host-cpu or --host-speed, not both")
        return hostcpu.HostTarget(f"custom (x{host_speed:g} this machine)", host_speed, None, None)
    if no_host_cpu:
        return hostcpu.HostTarget(hostcpu.NATIVE, 1.0, None, None)
    traced = None
    if host_cpu == hostcpu.AUTO:
        from revati.replay.kernel_db.db import traced_host_score

        traced = traced_host_score(gpu)
    return hostcpu.resolve_target(host_cpu, traced=traced)


def _check_command(command: tuple[str, ...]) -> None:
    """COMMAND[0] must be a program this machine can start (else BadInput, before any set-up)."""
    program = command[0]
    if program.startswith("-") and program != "-":
        # ignore_unknown_options hands a misspelt option over as the command
        options = [opt for param in emulate.params for opt in getattr(param, "opts", ()) if opt.startswith("--")]
        close = difflib.get_close_matches(program.split("=")[0], options, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise BadInput(program, f"no such option of revati emulate{hint}; the program to run goes after `--`")
    if os.sep in program:
        path = Path(program)
        if not path.exists():
            raise BadInput(program, "command not found")
        if path.is_dir():
            raise BadInput(program, "is a folder, not a program")
        if not os.access(path, os.X_OK):
            raise BadInput(program, "not executable (chmod +x it, or run it with its interpreter)")
    elif shutil.which(program) is None:
        raise BadInput(program, "command not found")


def _check_workload(flags: dict) -> WorkloadOptions:
    """The main job's (or the serve client's) workload flags, checked before anything starts."""
    from revati.workload.spec import check_dataset_path

    try:
        options = from_values(flags)
    except ValueError as exc:
        raise BadInput("workload", str(exc)) from None
    check_dataset_path(options)
    return options


def _finish_serve_run(result, result_dir: str, gpu: str, quiet: bool, cfg) -> None:
    """Complete the client's metrics.json with what only the launcher knows, and show it."""
    from revati.metrics.result import METRICS_FILE, RunExtras, merge_extras
    from revati.metrics.summary import print_summary

    path = Path(result_dir) / METRICS_FILE
    if not path.exists():
        click.echo(f"revati: the benchmark client wrote no {path}", err=True)
        return
    merged = merge_extras(path, RunExtras(
        fallback_op_count=result.fallback_op_count, gpu=gpu, wall_breakdown=result.wall_breakdown(),
        host_cpu=cfg.host_cpu if cfg.count_host_cpu else NOT_COUNTED,
        host_speed_factor=cfg.host_speed if cfg.count_host_cpu else None))
    if not quiet:
        print_summary(merged)
        click.echo(f"revati: metrics in {path}", err=True)
