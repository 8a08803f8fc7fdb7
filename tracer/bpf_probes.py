"""The bpf backend's probes: which CUDA API calls are traced, how each one's arguments are
read from registers and stack, and the BPF C program generated from that table.

One table (:data:`APIS`) feeds the C program, the attach plan and the decoder, and one field
list (:data:`EVENT_FIELDS`) defines both the C ``struct revati_event`` and its ctypes mirror, so
writer and reader cannot drift apart. ``revati trace --backend bpf --print-probes`` shows the
generated program. Pure Python: importable without bcc.

# Note [Reading CUDA API arguments in a uprobe] (x86-64 System V calling convention)
At function entry the first six integer arguments are in rdi, rsi, rdx, rcx, r8, r9
(``PT_REGS_PARM1..6``); the rest are on the stack at sp+8, sp+16, ... (sp points at the return
address), one 8-byte slot each. A ``dim3`` (three uint32, 12 bytes) passed by value takes two
registers: x and y packed in the first (x in the low half), z in the low half of the second. So:

- ``cudaLaunchKernel(func, dim3 grid, dim3 block, void** args, size_t sharedMem, cudaStream_t
  stream)``: func=rdi, grid.xy=rsi, grid.z=rdx, block.xy=rcx, block.z=r8, args=r9,
  sharedMem=[sp+8], stream=[sp+16] (verified with bcc against a fake library, see
  shared/spikes/TRACING_REPORT.md and tests/test_trace_bpf.py);
- ``cuLaunchKernel(f, gx, gy, gz, bx, by, bz, sharedMem, stream, params, extra)``: f, gx..by in
  the six registers, bz=[sp+8], sharedMem=[sp+16], stream=[sp+24];
- ``cudaLaunchKernelExC(const cudaLaunchConfig_t*, func, args)`` and ``cuLaunchKernelEx(const
  CUlaunchConfig*, f, ...)`` pass a struct pointer: grid/block (6 x uint32) at offset 0, then
  dynamic shared memory (size_t at 24 / uint32 at 24) and the stream (at 32 in both).
Return values are in rax (``PT_REGS_RC``) at the uretprobe.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass

NAME_LEN = 128

# (C type, field name); the order is the struct layout. 8-byte fields first: no padding.
EVENT_FIELDS: tuple[tuple[str, str], ...] = (
    ("u64", "start_ns"), ("u64", "end_ns"),
    ("u64", "func"),      # kernel host stub / CUfunction / CUkernel / graph exec
    ("u64", "stream"),
    ("u64", "addr"),      # memcpy dst, memset/free/malloc pointer, event, kernel handle, name pointer
    ("u64", "addr2"),     # memcpy src; out-pointer of alloc/lookup calls until the return
    ("u64", "size"),      # bytes moved/allocated, or a launch's dynamic shared memory
    ("u32", "pid"), ("u32", "tid"), ("u32", "api"), ("s32", "ret"),
    ("u32", "grid_x"), ("u32", "grid_y"), ("u32", "grid_z"),
    ("u32", "block_x"), ("u32", "block_y"), ("u32", "block_z"),
    ("u32", "kind"),      # cudaMemcpyKind
    ("u32", "pad"),
)

_CTYPES = {"u64": ctypes.c_uint64, "u32": ctypes.c_uint32, "s32": ctypes.c_int32}


class Event(ctypes.Structure):
    _fields_ = [(name, _CTYPES[ctype]) for ctype, name in EVENT_FIELDS] + [("name", ctypes.c_char * NAME_LEN)]


@dataclass(frozen=True)
class Api:
    name: str        # exported symbol
    library: str     # runtime (libcudart) | driver (libcuda)
    category: str    # launch | graph | memcpy | memset | alloc | free | sync | name
    entry: str       # C statements filling `e` (a struct revati_event) at entry
    on_return: str = ""   # C statements run at the uretprobe with `e` a pointer
    returns: bool = True  # False: submit at entry (no uretprobe)
    sync_kind: str = ""

    @property
    def api_id(self) -> int:
        return API_IDS[self.name]


def _stack(offset: int, field: str, size: int = 8) -> str:
    return f"bpf_probe_read_user(&e.{field}, {size}, (void *)(PT_REGS_SP(ctx) + {offset}));"


_LAUNCH_DIM3 = """
    e.func = PT_REGS_PARM1(ctx);
    u64 grid_xy = PT_REGS_PARM2(ctx), block_xy = PT_REGS_PARM4(ctx);
    e.grid_x = (u32)grid_xy; e.grid_y = (u32)(grid_xy >> 32); e.grid_z = (u32)PT_REGS_PARM3(ctx);
    e.block_x = (u32)block_xy; e.block_y = (u32)(block_xy >> 32); e.block_z = (u32)PT_REGS_PARM5(ctx);
    """ + _stack(8, "size") + "\n    " + _stack(16, "stream")

# cudaLaunchConfig_t: dim3 grid, dim3 block (24 bytes), size_t dynamicSmemBytes at 24, stream at 32.
_LAUNCH_EXC = """
    struct { u32 dim[6]; u64 smem; u64 stream; } cfg = {};
    bpf_probe_read_user(&cfg, sizeof(cfg), (void *)PT_REGS_PARM1(ctx));
    e.func = PT_REGS_PARM2(ctx);
    e.grid_x = cfg.dim[0]; e.grid_y = cfg.dim[1]; e.grid_z = cfg.dim[2];
    e.block_x = cfg.dim[3]; e.block_y = cfg.dim[4]; e.block_z = cfg.dim[5];
    e.size = cfg.smem; e.stream = cfg.stream;"""

# CUlaunchConfig: 6 x uint grid/block, uint sharedMemBytes at 24, CUstream at 32.
_CU_LAUNCH_EX = """
    struct { u32 dim[6]; u32 smem; u32 pad; u64 stream; } cfg = {};
    bpf_probe_read_user(&cfg, sizeof(cfg), (void *)PT_REGS_PARM1(ctx));
    e.func = PT_REGS_PARM2(ctx);
    e.grid_x = cfg.dim[0]; e.grid_y = cfg.dim[1]; e.grid_z = cfg.dim[2];
    e.block_x = cfg.dim[3]; e.block_y = cfg.dim[4]; e.block_z = cfg.dim[5];
    e.size = cfg.smem; e.stream = cfg.stream;"""

_CU_LAUNCH = """
    e.func = PT_REGS_PARM1(ctx);
    e.grid_x = (u32)PT_REGS_PARM2(ctx); e.grid_y = (u32)PT_REGS_PARM3(ctx); e.grid_z = (u32)PT_REGS_PARM4(ctx);
    e.block_x = (u32)PT_REGS_PARM5(ctx); e.block_y = (u32)PT_REGS_PARM6(ctx);
    """ + _stack(8, "block_z", 4) + "\n    " + _stack(16, "size", 4) + "\n    " + _stack(24, "stream")

_GRAPH = "e.func = PT_REGS_PARM1(ctx); e.stream = PT_REGS_PARM2(ctx);"
_MEMCPY = ("e.addr = PT_REGS_PARM1(ctx); e.addr2 = PT_REGS_PARM2(ctx); e.size = PT_REGS_PARM3(ctx); "
           "e.kind = (u32)PT_REGS_PARM4(ctx);")
_MEMSET = "e.addr = PT_REGS_PARM1(ctx); e.size = PT_REGS_PARM3(ctx);"
# alloc(void **out, size_t size, ...): the pointer exists only when the call returns
_ALLOC = "e.addr2 = PT_REGS_PARM1(ctx); e.size = PT_REGS_PARM2(ctx);"
_ALLOC_RET = "bpf_probe_read_user(&e->addr, 8, (void *)e->addr2); e->addr2 = 0;"
_FREE = "e.addr = PT_REGS_PARM1(ctx);"
_STREAM1 = "e.stream = PT_REGS_PARM1(ctx);"
_EVENT1 = "e.addr = PT_REGS_PARM1(ctx);"
_WAIT = "e.stream = PT_REGS_PARM1(ctx); e.addr = PT_REGS_PARM2(ctx);"
# Name strings are read here when their page is resident; `addr` keeps the pointer so that user
# space can read them from /proc/<pid>/mem when it is not (a uprobe cannot fault a page in, and
# a fresh process's .rodata often is not yet touched).
# __cudaRegisterFunction(fatCubinHandle, hostFun, deviceFun, deviceName, ...): name the stub
_REGISTER = ("e.func = PT_REGS_PARM2(ctx); e.addr = PT_REGS_PARM4(ctx); "
             "bpf_probe_read_user_str(&e.name, sizeof(e.name), (void *)PT_REGS_PARM4(ctx));")
# lookup(T *out, ..., const char *name) -> *out named `name`
_LOOKUP_NAMED = ("e.addr2 = PT_REGS_PARM1(ctx); e.addr = PT_REGS_PARM3(ctx); "
                 "bpf_probe_read_user_str(&e.name, sizeof(e.name), (void *)PT_REGS_PARM3(ctx));")
# at the return the callee has usually read the name: its page is resident now
_NAME_RETRY = "if (e->name[0] == 0) bpf_probe_read_user_str(&e->name, sizeof(e->name), (void *)e->addr);"
_LOOKUP_RET = "bpf_probe_read_user(&e->func, 8, (void *)e->addr2); e->addr2 = 0; " + _NAME_RETRY
# __cudaGetKernel(cudaKernel_t *out, const void *hostFun); cuKernelGetFunction(CUfunction *out, CUkernel k)
_GET_KERNEL = "e.addr2 = PT_REGS_PARM1(ctx); e.func = PT_REGS_PARM2(ctx);"
_GET_KERNEL_RET = "bpf_probe_read_user(&e->addr, 8, (void *)e->addr2); e->addr2 = 0;"


def _variants(names: list[str], **kw) -> list[Api]:
    return [Api(name=n, **kw) for n in names]


APIS: tuple[Api, ...] = tuple(
    _variants(["cudaLaunchKernel", "cudaLaunchKernel_ptsz", "cudaLaunchCooperativeKernel",
               "cudaLaunchCooperativeKernel_ptsz"], library="runtime", category="launch", entry=_LAUNCH_DIM3)
    + _variants(["cudaLaunchKernelExC", "cudaLaunchKernelExC_ptsz"], library="runtime", category="launch",
                entry=_LAUNCH_EXC)
    + _variants(["cuLaunchKernel", "cuLaunchKernel_ptsz"], library="driver", category="launch", entry=_CU_LAUNCH)
    + _variants(["cuLaunchKernelEx", "cuLaunchKernelEx_ptsz"], library="driver", category="launch",
                entry=_CU_LAUNCH_EX)
    + _variants(["cudaGraphLaunch", "cudaGraphLaunch_ptsz"], library="runtime", category="graph", entry=_GRAPH)
    + _variants(["cuGraphLaunch", "cuGraphLaunch_ptsz"], library="driver", category="graph", entry=_GRAPH)
    + _variants(["cudaMemcpy"], library="runtime", category="memcpy", entry=_MEMCPY)
    + _variants(["cudaMemcpyAsync", "cudaMemcpyAsync_ptsz"], library="runtime", category="memcpy",
                entry=_MEMCPY + " e.stream = PT_REGS_PARM5(ctx);")
    + _variants(["cudaMemset"], library="runtime", category="memset", entry=_MEMSET)
    + _variants(["cudaMemsetAsync", "cudaMemsetAsync_ptsz"], library="runtime", category="memset",
                entry=_MEMSET + " e.stream = PT_REGS_PARM4(ctx);")
    + _variants(["cudaMalloc"], library="runtime", category="alloc", entry=_ALLOC, on_return=_ALLOC_RET)
    + _variants(["cudaMallocAsync", "cudaMallocAsync_ptsz"], library="runtime", category="alloc",
                entry=_ALLOC + " e.stream = PT_REGS_PARM3(ctx);", on_return=_ALLOC_RET)
    + _variants(["cuMemAlloc_v2"], library="driver", category="alloc", entry=_ALLOC, on_return=_ALLOC_RET)
    + _variants(["cudaFree", "cuMemFree_v2"], library="any", category="free", entry=_FREE)
    + _variants(["cudaFreeAsync", "cudaFreeAsync_ptsz"], library="runtime", category="free",
                entry=_FREE + " e.stream = PT_REGS_PARM2(ctx);")
    + [Api("cudaStreamSynchronize", "runtime", "sync", _STREAM1, sync_kind="stream"),
       Api("cudaStreamSynchronize_ptsz", "runtime", "sync", _STREAM1, sync_kind="stream"),
       Api("cudaDeviceSynchronize", "runtime", "sync", "", sync_kind="device"),
       Api("cudaEventSynchronize", "runtime", "sync", _EVENT1, sync_kind="event"),
       Api("cudaStreamWaitEvent", "runtime", "sync", _WAIT, sync_kind="stream_wait_event"),
       Api("cudaStreamWaitEvent_ptsz", "runtime", "sync", _WAIT, sync_kind="stream_wait_event"),
       Api("cuStreamSynchronize", "driver", "sync", _STREAM1, sync_kind="stream"),
       Api("cuStreamSynchronize_ptsz", "driver", "sync", _STREAM1, sync_kind="stream"),
       Api("cuCtxSynchronize", "driver", "sync", "", sync_kind="device"),
       Api("cuEventSynchronize", "driver", "sync", _EVENT1, sync_kind="event"),
       Api("cuStreamWaitEvent", "driver", "sync", _WAIT, sync_kind="stream_wait_event"),
       Api("cuStreamWaitEvent_ptsz", "driver", "sync", _WAIT, sync_kind="stream_wait_event"),
       # names: registered host stubs, module functions, library kernels and their handles
       Api("__cudaRegisterFunction", "runtime", "name", _REGISTER, on_return=_NAME_RETRY),
       Api("__cudaGetKernel", "runtime", "name", _GET_KERNEL, on_return=_GET_KERNEL_RET),
       Api("cuModuleGetFunction", "driver", "name", _LOOKUP_NAMED, on_return=_LOOKUP_RET),
       Api("cuLibraryGetKernel", "driver", "name", _LOOKUP_NAMED, on_return=_LOOKUP_RET),
       Api("cuKernelGetFunction", "driver", "name", _GET_KERNEL, on_return=_GET_KERNEL_RET)]
)

API_IDS: dict[str, int] = {api.name: i for i, api in enumerate(APIS)}
BY_ID: dict[int, Api] = {i: api for i, api in enumerate(APIS)}

# A library is probed when its file name matches one of these prefixes.
LIBRARY_PREFIXES = {"runtime": ("libcudart",), "driver": ("libcuda.so",)}


def library_kind(path: str) -> str | None:
    base = str(path).rsplit("/", 1)[-1]
    for kind, prefixes in LIBRARY_PREFIXES.items():
        if base.startswith(prefixes):
            return kind
    return None


def apis_for_library(kind: str) -> list[Api]:
    return [a for a in APIS if a.library in (kind, "any")]


def program(ringbuf_pages: int = 256) -> str:
    """The BPF C program (bcc dialect) for every API in :data:`APIS`."""
    fields = "\n".join(f"    {ctype} {name};" for ctype, name in EVENT_FIELDS)
    parts = [
        "// Generated by revati (tracer/bpf_probes.py): uprobes on CUDA runtime/driver API calls.",
        "#include <uapi/linux/ptrace.h>",
        "",
        "struct revati_event {",
        fields,
        f"    char name[{NAME_LEN}];",
        "};",
        "",
        f"BPF_RINGBUF_OUTPUT(events, {ringbuf_pages});",
        "// calls in flight, keyed by (thread id << 32 | api id): entry data waiting for the return",
        "BPF_HASH(inflight, u64, struct revati_event, 65536);",
        "BPF_PERCPU_ARRAY(scratch, struct revati_event, 1);",
        "",
    ]
    for api in APIS:
        parts.append(_entry_fn(api))
        if api.returns:
            parts.append(_return_fn(api))
    return "\n".join(parts)


def _as_pointer(body: str) -> str:
    """The table's entry snippets say ``e.field``; the generated code holds a pointer ``e``."""
    return re.sub(r"\be\.", "e->", body)


def _entry_fn(api: Api) -> str:
    body = _as_pointer(api.entry.strip())
    submit = ("    events.ringbuf_output(e, sizeof(*e), 0);" if not api.returns else
              "    u64 key = ((u64)e->tid << 32) | e->api;\n    inflight.update(&key, e);")
    # the event is 232 bytes: built in a per-CPU scratch slot, not on the 512-byte BPF stack
    return f"""int entry_{api.name}(struct pt_regs *ctx) {{
    int zero = 0;
    struct revati_event *e = scratch.lookup(&zero);
    if (!e) return 0;
    __builtin_memset(e, 0, sizeof(*e));
    u64 id = bpf_get_current_pid_tgid();
    e->pid = id >> 32; e->tid = (u32)id; e->api = {API_IDS[api.name]}; e->start_ns = bpf_ktime_get_ns();
    {body}
{submit}
    return 0;
}}
"""


def _return_fn(api: Api) -> str:
    extra = api.on_return.strip()
    return f"""int return_{api.name}(struct pt_regs *ctx) {{
    u64 key = ((bpf_get_current_pid_tgid() & 0xffffffffULL) << 32) | {API_IDS[api.name]};
    struct revati_event *e = inflight.lookup(&key);
    if (!e) return 0;
    e->end_ns = bpf_ktime_get_ns();
    e->ret = (s32)PT_REGS_RC(ctx);
    {extra}
    events.ringbuf_output(e, sizeof(*e), 0);
    inflight.delete(&key);
    return 0;
}}
"""
