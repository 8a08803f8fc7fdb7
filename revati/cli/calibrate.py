"""``revati calibrate``: this machine's host-CPU score and the factor to each reference host."""

from __future__ import annotations

import json

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--repeats", default=7, show_default=True, type=click.IntRange(1, 1000),
              help="Passes of the calibration workload; the score is the fastest.")
@click.option("--remeasure", is_flag=True, help="Measure again even if this machine's score is cached.")
@click.option("--json", "as_json", is_flag=True, help="Print the score as one JSON object.")
def calibrate(repeats: int, remeasure: bool, as_json: bool) -> None:
    """Measure how fast this machine runs serving host work (Note [Host-speed calibration]).

    The score is the CPU seconds one thread needs for a fixed workload of scheduler-, API-server-,
    tokenizer- and numpy-like Python; `revati emulate --host-cpu NAME` scales measured host time
    by score(here) / score(NAME). The score is cached under REVATI_HOME; the first emulation
    that needs it measures it too.

    \b
    Examples:
      revati calibrate                      # measure (or show the cached score)
      revati calibrate --remeasure --repeats 15
      revati emulate --host-cpu revati-ci-vm   # host time as that machine would spend it
    """
    from dataclasses import asdict

    from revati import hostcpu

    score = hostcpu.cached_score(remeasure=remeasure, repeats=repeats)
    if as_json:
        click.echo(json.dumps(asdict(score)))
        return
    click.echo(f"this machine: {score.cpu_model}, score {score.score_s * 1e3:.1f} ms "
               f"(fastest of {score.repeats}; median {score.spread:+.1%} slower), python {score.python}")
    for name, ref in sorted(hostcpu.REFERENCE_HOSTS.items()):
        factor = score.score_s / ref.score_s
        click.echo(f"  --host-cpu {name}: host time x {1 / factor:.3f} (score {ref.score_s * 1e3:.1f} ms; "
                   f"{ref.cpu}; {ref.how})")
