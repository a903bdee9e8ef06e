"""glibc malloc tuning: one arena from a command's start (not on import), kept memory only when a
step's working set is small next to the RAM."""

import ctypes.util
import os
import subprocess
import sys
import types

import pytest

from flaxcnn import malloc

from helpers import REPO

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


_ARENAS = '''
import ctypes, logging, os, sys, tempfile
import jax.numpy as jnp
import flaxcnn.train, flaxcnn.sizes  # the modules the commands import
from flaxcnn import cli

def arenas():  # glibc's malloc_info lists one <heap> per arena
    libc = ctypes.CDLL('libc.so.6')
    libc.fopen.restype = ctypes.c_void_p
    path = tempfile.mktemp()
    f = ctypes.c_void_p(libc.fopen(path.encode(), b'w'))
    libc.malloc_info(0, f)
    libc.fclose(f)
    return open(path).read().count('<heap nr=')

filters = list(logging.getLogger('absl').filters)
cli.start()
x = jnp.ones((256, 256))
(x @ x).block_until_ready()  # XLA's CPU client and its threads start here
print(len(filters), arenas())
'''


@pytest.mark.slow
@glibc
def test_importing_changes_nothing_and_a_command_start_limits_the_arenas():
    # Threads started by imports (numpy's pool, Orbax) have allocated nothing before
    # cli.start(), so XLA's threads, started later, all share the one arena (without the
    # limit, glibc gives them up to 8 per core).
    out = subprocess.run(
        [sys.executable, '-c', _ARENAS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    filters, arenas = map(int, out.stdout.split())
    assert filters == 0  # importing flaxcnn installed no logging filter
    assert arenas == 1
