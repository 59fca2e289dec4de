"""Large freed blocks kept by glibc's malloc for reuse (``pipeline.runtime.allocator``)."""

from __future__ import annotations

import ctypes
import platform

import pytest

from pipeline.runtime import allocator

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip


def mapped_blocks() -> int:
    """Blocks malloc serves with a mapping of their own (``mallinfo2().hblks``)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2().hblks


@glibc
def test_a_47_mb_gradient_comes_from_the_heap_once_kept():
    import torch

    shape = (30522, 384)  # MiniLM's word embedding gradient: 47 MB
    if not allocator._state["kept"]:  # no job of this process has set it yet: glibc as it comes
        before = mapped_blocks()
        held = torch.empty(shape)
        assert mapped_blocks() == before + 1
        del held
    assert allocator.keep_freed_blocks()
    assert allocator.keep_freed_blocks()  # once per process: the second call only says so
    before = mapped_blocks()
    held = torch.empty(shape)
    assert mapped_blocks() == before, "a mapping of its own: fresh pages at every step"
    del held


def test_left_alone_when_turned_off(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "0")
    monkeypatch.setitem(allocator._state, "kept", False)
    assert allocator.keep_freed_blocks() is False
