"""glibc malloc tuning: kept memory only when a step's working set is small next to the RAM."""

import ctypes.util
import os
import types

import pytest

from flaxcnn import malloc

glibc = pytest.mark.skipif(ctypes.util.find_library('c') is None, reason='needs glibc')


def _compiled(temp_bytes: int):
    stats = types.SimpleNamespace(temp_size_in_bytes=temp_bytes)
    return types.SimpleNamespace(memory_analysis=lambda: stats)


def test_a_step_needing_much_of_the_ram_keeps_the_default_malloc():
    ram = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    assert not malloc.keep_freed_memory(_compiled(int(ram * malloc.MAX_SHARE_OF_RAM / 2) + 1))


@glibc
def test_a_small_step_keeps_its_freed_memory():
    assert malloc.limit_arenas()
    assert malloc.keep_freed_memory(_compiled(100 << 20))
