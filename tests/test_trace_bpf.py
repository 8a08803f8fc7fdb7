"""The bpf backend: generated program, decoding, joins, and real uprobes on a fake CUDA library.

The ``bpf``-marked test compiles a shared library exporting the real CUDA runtime/driver
signatures (and a driver program calling it) with gcc, traces the program with
``revati trace --backend bpf`` and checks every decoded argument. It needs root, bcc
(python3-bpfcc) and kernel headers: ``sudo tracer/install_bpf_deps.sh``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from revati.tracer import bpf_backend, bpf_probes, cuda_libs
from revati.tracer.launch_join import join_launches
from revati.run_folder import read_run_table

REVATI = [sys.executable, "-m", "revati"]


def test_program_has_probes_for_every_api_and_one_event_layout():
    src = bpf_probes.program()
    for api in bpf_probes.APIS:
        assert f"int entry_{api.name}(struct pt_regs *ctx)" in src
        assert (f"int return_{api.name}(" in src) == api.returns
    assert "BPF_RINGBUF_OUTPUT(events" in src
    # the C struct and the ctypes mirror come from one field list: same size
    assert bpf_probes.ctypes.sizeof(bpf_probes.Event) == 7 * 8 + 12 * 4 + bpf_probes.NAME_LEN


def test_print_probes_needs_no_root(tmp_path):
    out = subprocess.run(REVATI + ["trace", "--backend", "bpf", "--print-probes"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "int entry_cudaLaunchKernel(struct pt_regs *ctx)" in out.stdout
    assert "runtime libraries (libcudart*)" in out.stdout


def _ev(api, pid=10, tid=10, start=0, end=0, **kw):
    base = {name: 0 for _c, name in bpf_probes.EVENT_FIELDS if name != "pad"}
    base.update(pid=pid, tid=tid, api=bpf_probes.API_IDS[api], start_ns=start, end_ns=end, name="")
    base.update(kw)
    return base


def test_decode_folds_nested_driver_launches_and_names_kernels():
    events = [
        _ev("__cudaRegisterFunction", start=1, func=0x1000, name="_Z4gemmv"),
        _ev("__cudaGetKernel", start=2, end=3, func=0x1000, addr=0xAA),        # CUDA 13 handle -> stub
        _ev("cuModuleGetFunction", start=4, end=5, func=0xF00D, name="triton_fused"),
        _ev("cudaLaunchKernel", start=10, end=20, func=0xAA, grid_x=4, grid_y=1, grid_z=1, block_x=64,
            block_y=1, block_z=1, size=128, stream=0x5),
        _ev("cuLaunchKernel", start=12, end=18, func=0x999),                 # made by libcudart: folded
        _ev("cuLaunchKernel", start=30, end=35, func=0xF00D, grid_x=2),       # Triton's own launch
        _ev("cudaMalloc", start=40, end=41, addr=0x7000, size=4096),
        _ev("cudaStreamSynchronize", start=50, end=60, stream=0x5),
    ]
    rows, stats = bpf_backend.decode(events, "r", offset_ns=1_000, names=bpf_backend.KernelNames())
    launches = rows["launches"]
    assert [r["api_name"] for r in launches] == ["cudaLaunchKernel", "cuLaunchKernel", "cudaMalloc",
                                                 "cudaStreamSynchronize"]
    assert stats["nested_driver_calls_folded"] == 1
    assert launches[0]["kernel_name"] == "_Z4gemmv" and launches[1]["kernel_name"] == "triton_fused"
    assert launches[0]["start_ns"] == 1_010 and launches[0]["seq_in_thread"] == 0
    assert rows["memory_ops"][0]["kind"] == "alloc" and rows["memory_ops"][0]["address"] == 0x7000
    assert rows["syncs"][0]["kind"] == "stream"


def test_join_pairs_by_thread_order_and_time_despite_gaps():
    rt = [{"pid": 1, "tid": 1, "api_name": "cudaLaunchKernel", "start_ns": 1_000_000 + i * 50_000,
           "correlation_id": 500 + i} for i in range(6)]
    # bpf saw the same calls 30 µs earlier (clock offset) but missed call 2; runtime missed none
    bpf = [{"pid": 1, "tid": 1, "api_name": "cudaLaunchKernel", "start_ns": r["start_ns"] - 30_000,
            "correlation_id": None} for i, r in enumerate(rt) if i != 2]
    bpf.append({"pid": 1, "tid": 2, "api_name": "cudaLaunchKernel", "start_ns": 0, "correlation_id": None})
    stats = join_launches(bpf, rt)
    assert [b["correlation_id"] for b in bpf] == [500, 501, 503, 504, 505, None]
    assert stats.paired == 5


def test_names_are_read_from_live_process_memory():
    buf = bpf_probes.ctypes.create_string_buffer(b"_Z6kernelPf\0trailing")
    assert bpf_backend.read_user_string(os.getpid(), bpf_probes.ctypes.addressof(buf)) == "_Z6kernelPf"
    assert bpf_backend.read_user_string(2**31 + 7, 4096) is None  # no such process


def test_maps_parsing_finds_cuda_libraries_once():
    maps = """\
7f0000000000-7f0000001000 r--p 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000001000-7f0000002000 r-xp 00001000 08:01 456 /opt/venv/lib/python3.11/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12
7f0000002000-7f0000003000 r--p 00002000 08:01 456 /opt/venv/lib/python3.11/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12
7f0000004000-7f0000005000 r-xp 00000000 08:01 789 /usr/lib/x86_64-linux-gnu/libcuda.so.575.57.08
7f0000006000-7f0000007000 rw-p 00000000 00:00 0 [heap]
"""
    assert cuda_libs.parse_maps(maps) == [
        "/opt/venv/lib/python3.11/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12",
        "/usr/lib/x86_64-linux-gnu/libcuda.so.575.57.08"]
    assert cuda_libs.is_descendant(os.getpid(), os.getppid()) is True


def test_missing_requirements_say_how_to_install(monkeypatch):
    monkeypatch.setattr(bpf_backend.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(bpf_backend, "import_bcc", lambda: None)
    missing = bpf_backend.missing_requirements()
    assert any("root" in m for m in missing) and any("python3-bpfcc" in m for m in missing)
    with pytest.raises(bpf_backend.BackendUnavailable, match="install_bpf_deps.sh"):
        bpf_backend.check_available()


# -- real uprobes ----------------------------------------------------------------------------------
FAKE_CUDART = r"""
#include <stddef.h>
typedef struct { unsigned x, y, z; } dim3;
typedef struct { dim3 gridDim; dim3 blockDim; size_t dynamicSmemBytes; void *stream; void *attrs; unsigned numAttrs; } cudaLaunchConfig_t;
extern int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                          unsigned smem, void *stream, void **params, void **extra);
#include <string.h>
static volatile unsigned long sink;
/* like the real runtime, registering reads the kernel's name */
void __cudaRegisterFunction(void **fatCubinHandle, const char *hostFun, char *deviceFun, const char *deviceName,
                            int thread_limit, void *tid, void *bid, void *bDim, void *gDim, int *wSize)
{ sink += (unsigned long)hostFun + strlen(deviceName); }
int cudaLaunchKernel(const void *func, dim3 grid, dim3 block, void **args, size_t sharedMem, void *stream)
{ sink += grid.x + block.x + sharedMem; return 0; }
int cudaLaunchKernelExC(const cudaLaunchConfig_t *config, const void *func, void **args)
{ sink += config->gridDim.x; return 0; }
/* like the real runtime, launches through the driver: a nested call to fold */
int cudaLaunchCooperativeKernel(const void *func, dim3 grid, dim3 block, void **args, size_t sharedMem, void *stream)
{ return cuLaunchKernel((void *)func, grid.x, grid.y, grid.z, block.x, block.y, block.z, (unsigned)sharedMem, stream, args, 0); }
int cudaGraphLaunch(void *graphExec, void *stream) { sink += 1; return 0; }
int cudaMalloc(void **devPtr, size_t size) { *devPtr = (void *)0x7f0000100000UL; return 0; }
int cudaFree(void *devPtr) { sink += 1; return 0; }
int cudaMemcpyAsync(void *dst, const void *src, size_t count, int kind, void *stream) { sink += count; return 0; }
int cudaMemsetAsync(void *devPtr, int value, size_t count, void *stream) { sink += count; return 0; }
int cudaStreamSynchronize(void *stream) { sink += 1; return 0; }
int cudaDeviceSynchronize(void) { sink += 1; return 0; }
"""

FAKE_CUDA = r"""
#include <string.h>
static volatile unsigned long sink;
int cuModuleGetFunction(void **hfunc, void *hmod, const char *name) { *hfunc = (void *)0xf00dUL; return (int)(strlen(name) == 0); }
int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned smem, void *stream, void **params, void **extra) { sink += gx + bz + smem; return 0; }
"""

DRIVER = r"""
#include <stdio.h>
#include <stddef.h>
typedef struct { unsigned x, y, z; } dim3;
typedef struct { dim3 gridDim; dim3 blockDim; size_t dynamicSmemBytes; void *stream; void *attrs; unsigned numAttrs; } cudaLaunchConfig_t;
void __cudaRegisterFunction(void **, const char *, char *, const char *, int, void *, void *, void *, void *, int *);
int cudaLaunchKernel(const void *, dim3, dim3, void **, size_t, void *);
int cudaLaunchKernelExC(const cudaLaunchConfig_t *, const void *, void **);
int cudaLaunchCooperativeKernel(const void *, dim3, dim3, void **, size_t, void *);
int cudaGraphLaunch(void *, void *);
int cudaMalloc(void **, size_t);
int cudaFree(void *);
int cudaMemcpyAsync(void *, const void *, size_t, int, void *);
int cudaMemsetAsync(void *, int, size_t, void *);
int cudaStreamSynchronize(void *);
int cudaDeviceSynchronize(void);
int cuModuleGetFunction(void **, void *, const char *);
int cuLaunchKernel(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void *, void **, void **);

void my_kernel_stub(float *x, int n) { (void)x; (void)n; }

int main(void) {
    void *fatbin = 0;
    void *stream = (void *)0xdeadbeefUL;
    char host[4096] = {0};
    void *dev = 0, *fn = 0;
    __cudaRegisterFunction(&fatbin, (const char *)my_kernel_stub, "_Z9my_kernelPfi", "_Z9my_kernelPfi",
                           -1, 0, 0, 0, 0, 0);
    dim3 grid = {1024, 2, 3}, block = {256, 1, 1};
    cudaLaunchKernel((const void *)my_kernel_stub, grid, block, 0, 49152, stream);
    cudaLaunchConfig_t cfg = {{7, 8, 9}, {32, 4, 2}, 1024, (void *)0xabcUL, 0, 0};
    cudaLaunchKernelExC(&cfg, (const void *)my_kernel_stub, 0);
    cuModuleGetFunction(&fn, (void *)0x1UL, "triton_poi_fused_add_0");
    cuLaunchKernel(fn, 64, 1, 1, 128, 1, 2, 2048, (void *)0xcafeUL, 0, 0);
    dim3 g2 = {5, 1, 1}, b2 = {96, 1, 1};
    cudaLaunchCooperativeKernel((const void *)my_kernel_stub, g2, b2, 0, 0, stream);
    cudaMalloc(&dev, 1 << 20);
    cudaMemcpyAsync(dev, host, sizeof host, 1, stream);
    cudaMemsetAsync(dev, 0, 512, stream);
    cudaStreamSynchronize(stream);
    cudaGraphLaunch((void *)0x5151UL, stream);
    cudaDeviceSynchronize();
    cudaFree(dev);
    printf("stub=%lu\n", (unsigned long)my_kernel_stub);
    return 0;
}
"""


def _bpf_skip_reason() -> str | None:
    missing = bpf_backend.missing_requirements()
    if missing:
        return "bpf backend unavailable: " + "; ".join(missing)
    if shutil.which("gcc") is None:
        return "gcc is needed to build the fake CUDA library"
    return None


@pytest.fixture(scope="module")
def fake_cuda(tmp_path_factory):
    reason = _bpf_skip_reason()
    if reason:
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("fakecuda")
    (d / "cuda.c").write_text(FAKE_CUDA)
    (d / "cudart.c").write_text(FAKE_CUDART)
    (d / "main.c").write_text(DRIVER)

    def cc(*args):
        subprocess.run(["gcc", *args], check=True, cwd=d, capture_output=True)

    cc("-O0", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", "libcuda.so.1", "cuda.c")
    os.symlink("libcuda.so.1", d / "libcuda.so")
    cc("-O0", "-shared", "-fPIC", "-Wl,-soname,libcudart.so.12", "-o", "libcudart.so.12", "cudart.c", "-L.", "-lcuda")
    os.symlink("libcudart.so.12", d / "libcudart.so")
    cc("-O0", "-o", "driver", "main.c", "-L.", "-lcudart", "-lcuda", f"-Wl,-rpath,{d}")
    return d


@pytest.mark.bpf
@pytest.mark.slow
def test_bpf_decodes_real_uprobe_arguments(fake_cuda, tmp_path):
    run = tmp_path / "run"
    out = subprocess.run(REVATI + ["trace", "--backend", "bpf", "-o", str(run), "--", str(fake_cuda / "driver")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    stub = int(out.stdout.split("stub=")[1].split()[0])
    launches = read_run_table(run, "launches").to_pylist()
    by_api: dict[str, list] = {}
    for row in launches:
        by_api.setdefault(row["api_name"], []).append(row)
    assert all(r["source"] == "bpf" and r["correlation_id"] is None for r in launches)

    (k,) = by_api["cudaLaunchKernel"]
    assert (k["grid_x"], k["grid_y"], k["grid_z"], k["block_x"], k["block_y"], k["block_z"]) == (1024, 2, 3, 256, 1, 1)
    assert (k["shared_mem_bytes"], k["stream_handle"], k["func_addr"]) == (49152, 0xDEADBEEF, stub)
    assert k["kernel_name"] == "_Z9my_kernelPfi" and k["return_code"] == 0 and k["end_ns"] >= k["start_ns"]

    (x,) = by_api["cudaLaunchKernelExC"]
    assert (x["grid_x"], x["grid_y"], x["grid_z"], x["block_x"], x["block_y"], x["block_z"]) == (7, 8, 9, 32, 4, 2)
    assert (x["shared_mem_bytes"], x["stream_handle"], x["kernel_name"]) == (1024, 0xABC, "_Z9my_kernelPfi")

    (d,) = by_api["cuLaunchKernel"]  # the nested one inside cudaLaunchCooperativeKernel is folded
    assert (d["grid_x"], d["block_x"], d["block_z"], d["shared_mem_bytes"], d["stream_handle"]) == (64, 128, 2, 2048, 0xCAFE)
    assert d["kernel_name"] == "triton_poi_fused_add_0"
    (c,) = by_api["cudaLaunchCooperativeKernel"]
    assert (c["grid_x"], c["block_x"]) == (5, 96)
    (g,) = by_api["cudaGraphLaunch"]
    assert (g["func_addr"], g["stream_handle"]) == (0x5151, 0xDEADBEEF)

    mem = {m["kind"]: m for m in read_run_table(run, "memory_ops").to_pylist()}
    assert (mem["alloc"]["address"], mem["alloc"]["size_bytes"]) == (0x7F0000100000, 1 << 20)
    assert (mem["memcpy"]["copy_kind"], mem["memcpy"]["size_bytes"], mem["memcpy"]["address"]) == ("HtoD", 4096, 0x7F0000100000)
    assert mem["memcpy"]["is_async"] is True and mem["memset"]["size_bytes"] == 512
    assert mem["free"]["address"] == 0x7F0000100000
    assert sorted(s["kind"] for s in read_run_table(run, "syncs").to_pylist()) == ["device", "stream"]

    seqs = [r["seq_in_thread"] for r in sorted(launches, key=lambda r: r["start_ns"])]
    assert seqs == list(range(len(launches)))
    runs = read_run_table(run, "runs").to_pylist()[0]
    assert runs["backends"] == ["bpf"] and "no device timing" in runs["notes"]
    assert runs["started_at_ns"] <= k["start_ns"]
    files = sorted(p.name for p in run.glob("*.parquet"))
    assert all(any(f.startswith(t) for t in ("launches.bpf.", "memory_ops.bpf.", "syncs.bpf.", "runs.")) for f in files)
    assert pq.read_schema(run / files[0]).metadata[b"revati.table"]
