"""Peak heap memory of a block of torch work on the CPU, measured after every operator.

CPU tensors live in glibc's heap (small blocks) and in mmapped chunks (large ones): mallinfo2's
`uordblks + hblkhd` is the bytes in use. A TorchDispatchMode samples it after each op, so the peak
includes activations, caches and outputs, not only what the caller holds. (On CUDA use
torch.cuda.max_memory_allocated instead.)
"""

from __future__ import annotations

import ctypes
import ctypes.util

from torch.utils._python_dispatch import TorchDispatchMode


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


_libc = ctypes.CDLL(ctypes.util.find_library("c"))
_libc.mallinfo2.restype = _MallInfo2


def heap_in_use() -> int:
    info = _libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


class PeakHeap(TorchDispatchMode):
    """`with PeakHeap() as m: ...` then m.peak_bytes: the highest heap use above the starting point."""

    def __enter__(self):
        self.base = heap_in_use()
        self.peak_bytes = 0
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak_bytes = max(self.peak_bytes, heap_in_use() - self.base)
        return out
