"""The allocator setting: in effect on Linux glibc, off on request."""
import ctypes
import os
import subprocess
import sys

import pytest

from anfcodec import allocator

glibc = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")


@pytest.mark.skipif(not glibc, reason="glibc only")
def test_keep_freed_blocks_takes_effect_once_per_process():
    assert allocator.keep_freed_blocks() is True
    assert allocator.keep_freed_blocks() is True


def test_it_can_be_turned_off():
    code = "from anfcodec import allocator; print(allocator.keep_freed_blocks())"
    env = {**os.environ, allocator.ENV: "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
