"""A model of PyTorch's CUDA caching allocator: the memory a virtual GPU would hand out.

Nothing is allocated; sizes and addresses are bookkeeping. The rules follow the caching
allocator's documented behaviour:

- requests round up to multiples of 512 bytes (minimum 512);
- requests up to 1 MiB are served from the small pool, whose segments are 2 MiB; larger ones from
  the large pool, whose segments are 20 MiB for requests under 10 MiB and the request rounded up
  to 2 MiB otherwise;
- a free cached block is reused best-fit (same stream, same pool) and split when the remainder
  is at least 512 B (small pool) or more than 1 MiB (large pool); freed neighbours merge;
- when a new segment would exceed the device, unused cached segments are released first
  (what ``empty_cache`` does), and only then is it an out-of-memory error.

``allocated`` counts rounded block sizes in use, ``reserved`` counts segments: the same numbers
``torch.cuda.memory_allocated``/``memory_reserved`` report on a real GPU.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field

MIN_BLOCK = 512
SMALL_SIZE = 1 << 20
SMALL_BUFFER = 2 << 20
LARGE_BUFFER = 20 << 20
MIN_LARGE_ALLOC = 10 << 20
ROUND_LARGE = 2 << 20
_ADDRESS_BASE = 0x7F00_0000_0000


class AllocatorOOM(Exception):
    """The model ran out of device memory (the shim turns it into torch.cuda.OutOfMemoryError)."""

    def __init__(self, requested_bytes: int, stats: "AllocatorStats", capacity_bytes: int):
        self.requested_bytes = requested_bytes
        self.stats = stats
        self.capacity_bytes = capacity_bytes
        # ``stats`` is live (frees while the error unwinds change it): the numbers at the failure
        self.allocated_bytes = stats.allocated_bytes
        self.free_bytes = max(capacity_bytes - stats.reserved_bytes, 0)
        super().__init__(requested_bytes)


def round_size(nbytes: int) -> int:
    if nbytes < MIN_BLOCK:
        return MIN_BLOCK
    return (nbytes + MIN_BLOCK - 1) // MIN_BLOCK * MIN_BLOCK


def segment_size(rounded: int) -> int:
    if rounded <= SMALL_SIZE:
        return SMALL_BUFFER
    if rounded < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return (rounded + ROUND_LARGE - 1) // ROUND_LARGE * ROUND_LARGE


@dataclass(eq=False)
class Block:
    address: int
    size: int
    stream: int
    small: bool
    segment: "Segment"
    requested: int = 0
    allocated: bool = False
    prev: "Block | None" = None
    next: "Block | None" = None


@dataclass(eq=False)
class Segment:
    address: int
    size: int
    stream: int
    small: bool
    head: Block | None = None


@dataclass
class AllocatorStats:
    allocated_bytes: int = 0
    reserved_bytes: int = 0
    requested_bytes: int = 0
    peak_allocated_bytes: int = 0
    peak_reserved_bytes: int = 0
    num_allocs: int = 0
    num_frees: int = 0
    num_ooms: int = 0
    num_segments: int = 0
    num_releases: int = 0


@dataclass
class CachingAllocatorModel:
    capacity_bytes: int
    stats: AllocatorStats = field(default_factory=AllocatorStats)

    def __post_init__(self) -> None:
        if self.capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be positive, got {self.capacity_bytes}")
        # free blocks per pool, sorted by (stream, size, address)
        self._free: dict[bool, list[tuple[int, int, int, Block]]] = {True: [], False: []}
        self._segments: list[Segment] = []
        self._next_address = _ADDRESS_BASE
        self._ids = itertools.count()

    # -- public -----------------------------------------------------------------------------
    def malloc(self, nbytes: int, stream: int = 0) -> Block:
        size = round_size(max(int(nbytes), 0))
        small = size <= SMALL_SIZE
        block = self._take_free(size, stream, small)
        if block is None:
            block = self._new_segment(size, stream, small)
        self._maybe_split(block, size)
        block.allocated = True
        block.requested = int(nbytes)
        st = self.stats
        st.allocated_bytes += block.size
        st.requested_bytes += block.requested
        st.num_allocs += 1
        st.peak_allocated_bytes = max(st.peak_allocated_bytes, st.allocated_bytes)
        return block

    def free(self, block: Block) -> None:
        if not block.allocated:
            return
        block.allocated = False
        st = self.stats
        st.allocated_bytes -= block.size
        st.requested_bytes -= block.requested
        st.num_frees += 1
        block = self._merge(block)
        self._insert_free(block)

    def empty_cache(self) -> None:
        """Release every segment that holds no allocated block."""
        for seg in list(self._segments):
            if seg.head is not None and not seg.head.allocated and seg.head.next is None:
                self._release(seg)

    def reset_peak(self) -> None:
        self.stats.peak_allocated_bytes = self.stats.allocated_bytes
        self.stats.peak_reserved_bytes = self.stats.reserved_bytes

    @property
    def free_bytes(self) -> int:
        return self.capacity_bytes - self.stats.reserved_bytes

    def memory_stats(self) -> dict[str, int]:
        """The subset of torch.cuda.memory_stats() keys serving engines read."""
        st = self.stats
        out: dict[str, int] = {}
        for pool in ("all", "large_pool", "small_pool"):
            out[f"allocated_bytes.{pool}.current"] = st.allocated_bytes if pool == "all" else self._pool_allocated(pool)
            out[f"reserved_bytes.{pool}.current"] = st.reserved_bytes if pool == "all" else self._pool_reserved(pool)
        out.update({
            "allocated_bytes.all.peak": st.peak_allocated_bytes,
            "reserved_bytes.all.peak": st.peak_reserved_bytes,
            "active_bytes.all.current": st.allocated_bytes,
            "active_bytes.all.peak": st.peak_allocated_bytes,
            "requested_bytes.all.current": st.requested_bytes,
            "allocation.all.current": st.num_allocs - st.num_frees,
            "allocation.all.allocated": st.num_allocs,
            "allocation.all.freed": st.num_frees,
            "segment.all.current": len(self._segments),
            "num_alloc_retries": st.num_releases,
            "num_ooms": st.num_ooms,
            "num_device_alloc": st.num_segments,
            "num_device_free": st.num_releases,
        })
        return out

    # -- internals --------------------------------------------------------------------------
    def _pool_allocated(self, pool: str) -> int:
        small = pool == "small_pool"
        total = 0
        for seg in self._segments:
            if seg.small == small:
                b = seg.head
                while b is not None:
                    total += b.size if b.allocated else 0
                    b = b.next
        return total

    def _pool_reserved(self, pool: str) -> int:
        small = pool == "small_pool"
        return sum(s.size for s in self._segments if s.small == small)

    def _insert_free(self, block: Block) -> None:
        bisect.insort(self._free[block.small], (block.stream, block.size, block.address, block))

    def _remove_free(self, block: Block) -> None:
        pool = self._free[block.small]
        i = bisect.bisect_left(pool, (block.stream, block.size, block.address))
        while i < len(pool) and pool[i][3] is not block:
            i += 1
        if i < len(pool):
            del pool[i]

    def _take_free(self, size: int, stream: int, small: bool) -> Block | None:
        pool = self._free[small]
        i = bisect.bisect_left(pool, (stream, size, -1))
        if i < len(pool) and pool[i][0] == stream and pool[i][1] >= size:
            block = pool.pop(i)[3]
            return block
        return None

    def _new_segment(self, size: int, stream: int, small: bool) -> Block:
        seg_bytes = segment_size(size)
        if self.stats.reserved_bytes + seg_bytes > self.capacity_bytes:
            self.stats.num_releases += 1
            self.empty_cache()
            if self.stats.reserved_bytes + seg_bytes > self.capacity_bytes:
                self.stats.num_ooms += 1
                raise AllocatorOOM(size, self.stats, self.capacity_bytes)
        seg = Segment(self._next_address, seg_bytes, stream, small)
        self._next_address += seg_bytes + ROUND_LARGE  # never-adjacent segments
        block = Block(seg.address, seg_bytes, stream, small, seg)
        seg.head = block
        self._segments.append(seg)
        self.stats.reserved_bytes += seg_bytes
        self.stats.num_segments += 1
        self.stats.peak_reserved_bytes = max(self.stats.peak_reserved_bytes, self.stats.reserved_bytes)
        return block

    def _maybe_split(self, block: Block, size: int) -> None:
        remaining = block.size - size
        if (block.small and remaining >= MIN_BLOCK) or (not block.small and remaining > SMALL_SIZE):
            rest = Block(block.address + size, remaining, block.stream, block.small, block.segment,
                         prev=block, next=block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = size
            self._insert_free(rest)

    def _merge(self, block: Block) -> Block:
        nxt = block.next
        if nxt is not None and not nxt.allocated:
            self._remove_free(nxt)
            block.size += nxt.size
            block.next = nxt.next
            if nxt.next is not None:
                nxt.next.prev = block
        prv = block.prev
        if prv is not None and not prv.allocated:
            self._remove_free(prv)
            prv.size += block.size
            prv.next = block.next
            if block.next is not None:
                block.next.prev = prv
            block = prv
        return block

    def _release(self, seg: Segment) -> None:
        assert seg.head is not None
        self._remove_free(seg.head)
        self._segments.remove(seg)
        self.stats.reserved_bytes -= seg.size
