"""Kineto Chrome-trace JSON as a CUDA run writes it, built event by event for the tests.

There is no GPU here, so GPU traces are assembled in the exact format libkineto writes
(``output_json.cpp``: ``ts``/``dur`` in µs relative to ``baseTimeNanoseconds``; CPU events with
``pid`` = process and ``tid`` = thread; GPU events with ``pid`` = device and ``tid`` = stream;
the argument names of ``CuptiActivity.h``/``MetadataFieldCatalog.h``). A CPU-only trace is
recorded for real in tests/test_trace_kineto_e2e.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BASE_NS = 1_790_000_000_000_000_000
PID = 4242
TID = 4242


@dataclass
class TraceBuilder:
    events: list = field(default_factory=list)
    next_ext: int = 1
    next_corr: int = 100

    def op(self, name, ts, dur, dims=None, types=None, cat="cpu_op", tid=TID, concrete=None, extra=None):
        ext = self.next_ext
        self.next_ext += 1
        args = {"External id": ext, "Record function id": 0, "Ev Idx": ext}
        if dims is not None:
            args["Input Dims"] = dims
            args["Input type"] = types or ["float"] * len(dims)
            args["Input Strides"] = [[] for _ in dims]
            args["Concrete Inputs"] = concrete or ["" for _ in dims]
        args.update(extra or {})
        self.events.append({"ph": "X", "cat": cat, "name": name, "pid": PID, "tid": tid,
                            "ts": ts, "dur": dur, "args": args})
        return ext

    def launch(self, api, ts, dur, ext=None, tid=TID, cbid=211):
        corr = self.next_corr
        self.next_corr += 1
        args = {"cbid": cbid, "correlation": corr}
        if ext is not None:
            args["External id"] = ext
        self.events.append({"ph": "X", "cat": "cuda_runtime", "name": api, "pid": PID, "tid": tid,
                            "ts": ts, "dur": dur, "args": args})
        return corr

    def kernel(self, name, corr, ts, dur, ext=None, grid=(1, 1, 1), block=(128, 1, 1), smem=0, regs=32,
               stream=7, graph_id=None, graph_node=None):
        args = {"queued": 0, "device": 0, "context": 1, "stream": stream, "correlation": corr,
                "registers per thread": regs, "shared memory": smem, "blocks per SM": 0.5,
                "warps per SM": 2.0, "grid": list(grid), "block": list(block), "est. achieved occupancy %": 12}
        if ext is not None:
            args["External id"] = ext
        if graph_id is not None:
            args["graph id"] = graph_id
            args["graph node id"] = graph_node
        self.events.append({"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": stream,
                            "ts": ts, "dur": dur, "args": args})

    def memcpy(self, kind, corr, ts, dur, nbytes, ext=None, stream=7):
        args = {"device": 0, "context": 1, "stream": stream, "correlation": corr, "bytes": nbytes,
                "memory bandwidth (GB/s)": 1.0}
        if ext is not None:
            args["External id"] = ext
        self.events.append({"ph": "X", "cat": "gpu_memcpy", "name": f"Memcpy {kind} (Pageable -> Device)",
                            "pid": 0, "tid": stream, "ts": ts, "dur": dur, "args": args})

    def cuda_sync(self, corr, ts, dur, kind="Stream Sync", stream=7):
        self.events.append({"ph": "X", "cat": "cuda_sync", "name": kind, "pid": 0, "tid": stream, "ts": ts,
                            "dur": dur, "args": {"cuda_sync_kind": kind, "stream": stream, "correlation": corr,
                                                 "device": 0, "context": 1}})

    def trace(self) -> dict:
        meta = [{"ph": "M", "name": "process_name", "ts": 0, "pid": PID, "tid": 0, "args": {"name": "python"}}]
        return {"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "NVIDIA H100 80GB HBM3", "numSms": 132}],
                "record_shapes": 1, "baseTimeNanoseconds": BASE_NS, "displayTimeUnit": "ms",
                "traceEvents": meta + self.events}


BF16 = "c10::BFloat16"


def gpu_step(b: TraceBuilder, t0: float) -> None:
    """One decoder-ish step at t0 (µs): linear (gemm via addmm), a copy, sdpa, softmax launched
    without External id, a graph replay, an all-reduce and a stream sync."""
    lin = b.op("aten::linear", t0, 50, [[8, 4096], [11008, 4096], [11008]], [BF16, BF16, BF16])
    b.op("aten::t", t0 + 1, 2, [[11008, 4096]], [BF16])
    mm = b.op("aten::addmm", t0 + 5, 40, [[11008], [8, 4096], [4096, 11008], [], []],
              [BF16, BF16, BF16, "Scalar", "Scalar"])
    corr = b.launch("cudaLaunchKernel", t0 + 10, 8, ext=mm)
    b.kernel("void cutlass::Kernel<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align8>(Params)",
             corr, t0 + 60, 30, ext=mm, grid=(172, 1, 1), block=(128, 1, 1), smem=49152, regs=168)
    _ = lin
    cp = b.op("aten::copy_", t0 + 100, 20, [[8, 4096], [8, 4096], []], [BF16, BF16, "Scalar"])
    corr = b.launch("cudaMemcpyAsync", t0 + 105, 5, ext=cp, cbid=41)
    b.memcpy("HtoD", corr, t0 + 130, 3, nbytes=8 * 4096 * 2, ext=cp)
    sd = b.op("aten::scaled_dot_product_attention", t0 + 150, 40,
              [[1, 32, 128, 128], [1, 32, 128, 128], [1, 32, 128, 128], [], [], [], [], []],
              [BF16, BF16, BF16, "", "Scalar", "Scalar", "", "Scalar"])
    fl = b.op("aten::_scaled_dot_product_flash_attention", t0 + 155, 30,
              [[1, 32, 128, 128], [1, 32, 128, 128], [1, 32, 128, 128], [], [], [], []],
              [BF16, BF16, BF16, "Scalar", "Scalar", "", ""])
    corr = b.launch("cudaLaunchKernel", t0 + 160, 6, ext=fl)
    b.kernel("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>, true>(Flash_fwd_params)",
             corr, t0 + 200, 25, ext=fl, grid=(2, 32, 1), block=(128, 1, 1), smem=65536, regs=255)
    _ = sd
    sm = b.op("aten::softmax", t0 + 230, 20, [[8, 32000], [], []], [BF16, "Scalar", ""])
    # a launch Kineto could not tie to an op (no External id): linked by time containment
    corr = b.launch("cudaLaunchKernel", t0 + 235, 5, ext=None)
    b.kernel("void at::native::(anonymous namespace)::cunn_SoftMaxForward<8, float>(float*, float const*, int)",
             corr, t0 + 260, 12, ext=None, grid=(8, 1, 1), block=(1024, 1, 1))
    _ = sm
    gr = b.op("aten::mul", t0 + 280, 30, [[8, 4096], [8, 4096]], [BF16, BF16])
    corr = b.launch("cudaGraphLaunch", t0 + 285, 10, ext=gr, cbid=311)
    b.kernel("void at::native::vectorized_elementwise_kernel<4, at::native::MulFunctor<c10::BFloat16>>(int)",
             corr, t0 + 300, 4, ext=gr, graph_id=5, graph_node=51)
    ar = b.op("c10d::allreduce_", t0 + 320, 40, [[8, 4096]], [BF16])
    pc = b.op("record_param_comms", t0 + 322, 30, [[8, 4096]], [BF16],
              extra={"Collective name": "allreduce", "dtype": "BFloat16", "In msg nelems": 32768,
                     "Out msg nelems": 32768, "Group size": 2, "Process Group Name": "0", "Seq": 3, "Rank": 0})
    corr = b.launch("cudaLaunchKernel", t0 + 325, 6, ext=pc)
    b.kernel("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)", corr, t0 + 340, 50,
             ext=pc, grid=(2, 1, 1), block=(640, 1, 1), stream=13)
    _ = ar
    it = b.op("aten::item", t0 + 400, 60, [[]], ["float"])
    corr = b.launch("cudaStreamSynchronize", t0 + 410, 45, ext=it, cbid=131)
    b.cuda_sync(corr, t0 + 412, 40)


def gpu_trace(steps: int = 3, step_ranges: bool = True) -> dict:
    b = TraceBuilder()
    for i in range(steps):
        t0 = 1000.0 + i * 1000.0
        if step_ranges:
            b.op("revati.step", t0 - 1, 600, cat="user_annotation")
        gpu_step(b, t0)
    return b.trace()


def write_gpu_run(run_dir, steps_count: int = 3, warmup_steps: int = 0, run_id: str = "gpu-run"):
    """A complete run folder as `revati trace` leaves it after tracing gpu_trace() on an H100."""
    from revati import parquet_io
    from revati import run_folder, tables
    from revati.tracer import kineto_convert, run_meta, steps

    trace = gpu_trace(steps=steps_count)
    marks = steps.StepMarks(ranges_ns=kineto_convert.find_step_ranges(trace))
    conv = kineto_convert.convert(trace, run_id, PID, assign=marks.assigner(), min_step=warmup_steps or None)
    run_folder.write_process_tables(run_dir, tables.rows_to_tables(conv.tables), "kineto", PID)
    host_gpu = {"gpu_name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 85_000_000_000, "cc_major": 9,
                "cc_minor": 0, "sm_clock_max_mhz": 1980, "clocks_locked": False, "driver_version": "575.57.08"}
    metas = [{"pid": PID, "packages": {"torch": "2.9.0+cu128", "vllm": "0.11.0"}, "engine": "vllm",
              "torch_version": "2.9.0+cu128", "cuda_version": "12.8", "python_version": "3.11.7",
              "devices": [{"name": "NVIDIA H100 80GB HBM3", "sm_count": 132}]}]
    row = run_meta.build_runs_row(run_id=run_id, started_at_ns=BASE_NS, cmd=["python", "serve.py"],
                                  backends=["kineto"], host_gpu=host_gpu, metas=metas, env={"NCCL_DEBUG": "WARN"},
                                  notes=[])
    parquet_io.write_table(tables.rows_to_table("runs", [row]), "runs", run_dir / run_folder.RUNS_FILE)
    return run_dir
