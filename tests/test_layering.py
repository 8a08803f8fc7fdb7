"""Layering: where two packages meet, imports go one way only.

- **replay never imports the tracer.** The tracer calls into replay (after a run it derives the
  op samples, revati.replay.kernel_db.trace_samples); what both need -- the run-folder layout and the
  table builders -- lives in the core (revati.run_folder, revati.tables, revati.schema).
- **the bench never imports the shim.** The benchmark client and server read the clocks their
  caller gives them (revati.bench.clock.Clock); the caller that runs under ``revati emulate``
  passes the real, unpatched clock as ``wall``.

Every import counts: at module level or inside a function, absolute or relative, and
``importlib.import_module`` / ``__import__`` with a literal name. tests/test_import_graph.py
finds cycles between all packages; these tests name the two directions that must never come back.
"""
from __future__ import annotations

import ast
import asyncio
import json
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def module_name(root: str, folder: Path, path: Path) -> tuple[str, bool]:
    """(dotted module name, is a package) of ``path`` in the package ``root`` kept in ``folder``."""
    parts = path.relative_to(folder).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join((root, *parts[:-1])), True
    return ".".join((root, *parts)), False


def imports_of(source: str, module: str, is_package: bool = False, filename: str = "<src>") -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source`` (the module ``module``)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names if a.name != "*"]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module"))
                   or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"))):
            found.append((node.lineno, node.args[0].value))
    return found


def is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(root: str, folder: Path, forbidden: str) -> tuple[list[str], int]:
    """Every import of ``forbidden`` in the package ``root`` (kept in ``folder``), and how many
    files were read."""
    bad: dict[str, str] = {}
    files = [p for p in sorted(folder.rglob("*.py")) if "__pycache__" not in p.parts]
    for path in files:
        module, is_package = module_name(root, folder, path)
        for line, name in imports_of(path.read_text(), module, is_package, str(path)):
            where = f"{path.relative_to(REPO)}:{line}"
            if is_within(name, forbidden) and len(name) < len(bad.get(where, name + ".")):
                bad[where] = name     # one line per import statement, the module it names
    return [f"{where} imports {name}" for where, name in sorted(bad.items())], len(files)


def test_the_checker_sees_every_kind_of_import():
    flagged = {
        "import revati.tracer.run": "revati.replay.x",
        "from revati.tracer import run_folder": "revati.replay.x",
        "from revati import tracer": "revati.replay.x",
        "from ..tracer import run_folder": "revati.replay.x",
        "from ...tracer.run import x": "revati.replay.importers.common",
        "def f():\n    from revati.tracer.run import run_trace\n": "revati.replay.x",
        "import importlib\nimportlib.import_module('revati.tracer.run')": "revati.replay.x",
        "__import__('revati.tracer.run', fromlist=['x'])": "revati.replay.x",
    }
    for source, module in flagged.items():
        assert any(is_within(n, "revati.tracer") for _, n in imports_of(source, module)), source
    assert any(is_within(n, "revati.tracer") for _, n in imports_of("from ..tracer import x", "revati.replay", True))
    clean = ["from revati import run_folder, tables", "from revati.tracers import x", "from .trace_ops import y",
             "import tracer", "x = 'revati.tracer'"]
    for source in clean:
        assert not any(is_within(n, "revati.tracer") for _, n in imports_of(source, "revati.replay.x")), source


def test_replay_does_not_import_the_tracer():
    bad, n_files = violations("revati.replay", REPO / "replay", "revati.tracer")
    assert n_files > 10  # the walk found replay's modules
    assert bad == [], "replay must import only the core, never the tracer that calls it:\n" + "\n".join(bad)


def test_bench_does_not_import_the_shim():
    bad, n_files = violations("revati.bench", REPO / "revati" / "bench", "revati.shim")
    assert n_files >= 5
    assert bad == [], ("the bench takes its clocks from the caller (revati.bench.clock.Clock), "
                       "never from the shim:\n" + "\n".join(bad))


# ---- the bench reads the clocks it is given -------------------------------------------------

@pytest.fixture
def sse_server():
    """An OpenAI-style streaming completions server on its own thread and event loop."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict = {}

    async def handler(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in head.decode().split("\r\n")[1:] if line)}
        body = json.loads(await reader.readexactly(int(headers.get("content-length", 0))) or b"{}")
        n = int(body.get("max_tokens", 1))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        for i in range(n):
            writer.write(f'data: {json.dumps({"choices": [{"index": 0, "text": f" t{i}"}]})}\n\n'.encode())
        final = {"choices": [{"index": 0, "text": "", "finish_reason": "length"}],
                 "usage": {"prompt_tokens": len(body.get("prompt", [])), "completion_tokens": n}}
        writer.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
        await writer.drain()
        writer.close()

    def run():
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(handler, "127.0.0.1", 0))
        box["port"] = server.sockets[0].getsockname()[1]
        started.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "the test server did not start"
    yield f"http://127.0.0.1:{box['port']}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _ticking(step: float):
    """A fake clock: step, 2*step, 3*step, ... one tick per reading."""
    ticks = iter(range(1, 1 << 30))
    return lambda: step * next(ticks)


def test_the_client_times_requests_on_the_given_clock(sse_server):
    from revati.bench.client import ClientConfig, run_benchmark
    from revati.bench.clock import Clock
    from revati.workload import WorkloadRequest

    clock = Clock(now=_ticking(1000.0), wall=lambda: pytest.fail("the client reads clock.now only"))
    records, duration = asyncio.run(run_benchmark(
        ClientConfig(sse_server, "m"), [WorkloadRequest(0, 0.0, 2, 3)], [[5, 6]], clock=clock))
    rec = records[0]
    assert rec.success, rec.error
    times = [rec.send_s, *rec.token_times_s, rec.done_s, duration]
    # whole thousands of seconds: every time came from the fake clock, none from time.perf_counter
    assert len(rec.token_times_s) == 3 and all(t >= 1000.0 and t % 1000.0 == 0 for t in times), times
    assert times == sorted(times) and len(set(times)) == len(times)


def test_run_bench_reports_wall_time_on_the_given_wall_clock(sse_server, tmp_path):
    from revati.bench.client import ClientConfig
    from revati.bench.clock import Clock
    from revati.bench.serve import BenchConfig, run_bench
    from revati.workload import WorkloadConfig

    cfg = BenchConfig(client=ClientConfig(sse_server, "m"), quiet=True, result_dir=str(tmp_path),
                      workload=WorkloadConfig(num_prompts=2, random_input_len=4, random_output_len=3))
    result = run_bench(cfg, clock=Clock(wall=_ticking(123.0)))
    assert result["completed"] == 2
    assert result["wall_duration_s"] == 123.0              # two readings of the wall clock, one tick apart
    assert 0 < result["virtual_duration_s"] < 60           # clock.now stayed time.perf_counter
