"""glibc malloc tuning that keeps freed memory in the process (called on ``import flaxcnn``).

XLA:CPU allocates each step's temporaries (0.9 GB for MyNet v2 at batch 512) with ``malloc``
from its worker threads and frees them when the step ends. glibc serves blocks that large
with ``mmap`` and hands them back with ``munmap``, so every step page-faults them in again:
about 0.5 s of kernel time per step on a 2-core VM, half the step. One arena, no ``mmap``
and no trimming make the next step reuse the same pages (MyNet v2 b512: 420-480 -> 740-840 img/s
together with the fast ops). The cost is a larger peak RSS, since the heap is never
returned and fragments: 1.7 -> 2.3-3.1 GB for MyNet v2 b512 (flat over 40 steps),
2.3 -> 2.4-3.8 GB for BasicCNN b256, 12.6 -> 23 GB for ResNet-lite-11 b512. Without the
no-trim setting the top of the heap is returned after every step and most of the gain is
lost (MyNet v2: 930 -> 540 img/s). A no-op off glibc.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to one arena, no mmap, no trimming; False if not on glibc."""
    try:
        mallopt = ctypes.CDLL('libc.so.6').mallopt
    except (OSError, AttributeError):
        return False
    # Applies to threads that have not allocated yet, hence before XLA starts its threads.
    # A threshold of -1 is SIZE_MAX for glibc: never trim.
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
    return all(mallopt(option, value) == 1 for option, value in settings)
