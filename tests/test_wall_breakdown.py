"""Note [Wall-time breakdown] (revati/shim/breakdown.py): a program with known host work and known
shim work reports them within 10%."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from revati.shim.breakdown import format_line, run_breakdown

PROGRAMS = Path(__file__).parent / "programs"


def test_known_host_work_and_known_shim_work_are_reported(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "-q", "--stats-dir", str(tmp_path), "--",
                           sys.executable, str(PROGRAMS / "known_work.py")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    known = json.loads(proc.stdout.strip().splitlines()[-1])
    (summary,) = [json.loads(f.read_text()) for f in tmp_path.glob("process-*.json")]
    b = summary["breakdown"]
    # the program's own work: its 0.5 s loop and the few ms of Python around the op loop
    assert abs(b["framework_cpu_s"] - known["host_s"]) < 0.1 * known["host_s"], (b, known)
    # revati's: first use and the op loop are dispatch, all but the Python call of each op (a
    # full collection that fires meanwhile has its own bucket)
    shim = b["shim_cpu_s"] + b["gc_full_cpu_s"]
    assert abs(shim - known["ops_s"]) < 0.1 * known["ops_s"] + 0.02, (b, known)
    assert b["wall_s"] >= known["host_s"] + known["ops_s"] - 0.01
    assert 0 < b["efficiency"] < 1 and b["startup_s"] > 0
    total = run_breakdown([summary], b["wall_s"])
    assert total["framework_cpu_s"] == b["framework_cpu_s"] and total["processes"] == 1
    assert "efficiency" in format_line("known_work.py", b)


def test_a_forked_child_counts_its_own_host_time():
    # its CPU time restarts from zero at the fork: measured against the parent's readings, its
    # clock stood still (a forked vLLM engine core's host work went uncounted)
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "-q", "--raw-host-cpu", "--",
                           sys.executable, str(PROGRAMS / "fork_host_time.py")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert abs(out["child_virtual_s"] - out["child_cpu_s"]) < 0.1 * out["child_cpu_s"], out


def test_a_forked_multiprocessing_child_reports_its_breakdown(tmp_path):
    # it leaves through os._exit, past atexit: multiprocessing's exit function reports instead
    code = ("import multiprocessing as mp, time\n"
            "def work():\n    t = time.thread_time()\n    while time.thread_time() - t < 0.2: pass\n"
            "p = mp.get_context('fork').Process(target=work); p.start(); p.join()\n")
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "-q", "--stats-dir", str(tmp_path), "--",
                           sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(f.read_text()) for f in tmp_path.glob("process-*.json")]
    assert len(summaries) == 2, summaries
    child = min(summaries, key=lambda s: s["breakdown"]["wall_s"])
    assert 0.18 < child["breakdown"]["framework_cpu_s"] < 0.3, child["breakdown"]


def _emulate_with_summaries(tmp_path: Path, code: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run ``code`` under `revati emulate --stats-dir`; the finished process and every summary."""
    program = tmp_path / "program.py"
    program.write_text(code)
    stats = tmp_path / "stats"
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "-q", "--stats-dir", str(stats), "--",
                           sys.executable, str(program)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, [json.loads(f.read_text()) for f in stats.glob("process-*.json")]


@pytest.mark.parametrize("kill_after_s", [0.5, 0.0], ids=["killed-later", "killed-at-once"])
def test_a_child_stopped_by_sigterm_and_killed_still_reports(tmp_path, kill_after_s):
    # vLLM's engine core and TP workers: their parent sends SIGTERM, then SIGKILL at once; the
    # program's SIGTERM handler only starts its shutdown. The summary is written at the signal,
    # the killer waits for it (revati/shim/stop_signals.py), and the program still sees its own
    # handler.
    code = (
        "import multiprocessing as mp, os, signal, time\n"
        "def work(ready):\n"
        "    def on_term(sig, frame):\n"
        "        print('handler ran', flush=True)\n"
        "    signal.signal(signal.SIGTERM, on_term)\n"
        "    assert signal.getsignal(signal.SIGTERM) is on_term\n"
        "    t = time.thread_time()\n"
        "    while time.thread_time() - t < 0.2: pass\n"
        "    ready.set()\n"
        "    while True: time.sleep(1)\n"
        "if __name__ == '__main__':\n"
        "    ready = mp.get_context('spawn').Event()\n"
        "    p = mp.get_context('spawn').Process(target=work, args=(ready,), name='EngineCore'); p.start()\n"
        "    ready.wait()\n"
        f"    os.kill(p.pid, signal.SIGTERM); time.sleep({kill_after_s}); os.kill(p.pid, signal.SIGKILL)\n"
        "    p.join()\n")
    proc, summaries = _emulate_with_summaries(tmp_path, code)
    if kill_after_s:
        assert "handler ran" in proc.stdout   # the program's own handler still runs
    stopped = [s for s in summaries if s.get("ended_by") == "SIGTERM"]
    assert len(stopped) == 1, summaries
    assert 0.18 < stopped[0]["breakdown"]["framework_cpu_s"] < 0.4, stopped[0]["breakdown"]
    assert stopped[0]["process_name"] == "EngineCore"   # a spawned child is named by its Process


def test_a_child_killed_without_sigterm_still_reports(tmp_path):
    # SGLang's scheduler and detokenizer: no SIGTERM handler of their own, and their parent kills
    # them with SIGKILL alone. The killer first asks for the summary (REPORT_SIGNAL,
    # revati/shim/stop_signals.py); the child still dies by SIGKILL.
    code = (
        "import multiprocessing as mp, os, signal, time\n"
        "def work(ready):\n"
        "    t = time.thread_time()\n"
        "    while time.thread_time() - t < 0.2: pass\n"
        "    ready.set()\n"
        "    while True: time.sleep(1)\n"
        "if __name__ == '__main__':\n"
        "    ready = mp.get_context('spawn').Event()\n"
        "    p = mp.get_context('spawn').Process(target=work, args=(ready,), name='scheduler'); p.start()\n"
        "    ready.wait()\n"
        "    os.kill(p.pid, signal.SIGKILL); p.join()\n"
        "    print('exit', p.exitcode, flush=True)\n")
    proc, summaries = _emulate_with_summaries(tmp_path, code)
    assert "exit -9" in proc.stdout   # still killed by SIGKILL
    killed = [s for s in summaries if s.get("ended_by") == "SIGKILL"]
    assert len(killed) == 1 and killed[0]["process_name"] == "scheduler", summaries
    assert 0.18 < killed[0]["breakdown"]["framework_cpu_s"] < 0.4, killed[0]["breakdown"]
