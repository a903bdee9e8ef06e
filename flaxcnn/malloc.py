"""glibc malloc tuning that keeps a train step's freed memory in the process.

XLA:CPU allocates each step's temporaries with ``malloc`` from its worker threads and frees
them when the step ends. glibc serves blocks that large with ``mmap`` and hands them back with
``munmap``, so every step page-faults them in again, in kernel time that can be a large share
of the step. One arena, no ``mmap`` and no trimming make the next step reuse the same pages.

The cost is a larger peak RSS, since the heap is never returned and fragments, and for large
models it grows far beyond the step's working memory. So the arena limit is set when a command
starts (``cli.start``; it only affects threads that have not allocated yet, i.e. before XLA
starts its threads), and no-mmap / no-trim only once a compiled step's working memory is known
to be small next to the machine's RAM: twice the working memory within half the RAM. Measured
effects are in docs/performance-notes.md. No-ops off glibc.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

# The heap may grow to about twice the step's working memory (fragmentation); keep that
# within this share of physical RAM.
MAX_SHARE_OF_RAM = 0.5


def _mallopt(*settings: tuple[int, int]) -> bool:
    try:
        mallopt = ctypes.CDLL('libc.so.6').mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(option, value) == 1 for option, value in settings)


def limit_arenas() -> bool:
    """One malloc arena for all threads (called by ``cli.start``); False off glibc."""
    return _mallopt((M_ARENA_MAX, 1))


def keep_freed_memory(compiled) -> bool:
    """No mmap and no trimming if ``compiled``'s working memory is small next to the RAM.

    ``compiled`` is a compiled jax function (``jit(...).lower(...).compile()``). Returns
    whether the setting was made (False too off glibc).
    """
    working = compiled.memory_analysis().temp_size_in_bytes
    ram = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    if 2 * working > MAX_SHARE_OF_RAM * ram:
        return False
    # A trim threshold of -1 is SIZE_MAX for glibc: never trim.
    return _mallopt((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
