"""The weight blob: every constant array of a generated library in one buffer, for
builds that are handed their weights instead of compiling them in (the MicroPython
natmod, whose code and data are copied into RAM on import, reads them from a
`bytes` constant that stays in flash). Normal builds are unchanged.

The kernel templates declare their constants with templates/array.j2, which
places each array here as it renders it and adds, under -DTINYDS_WEIGHTS_EXTERNAL,
a macro that makes the array's name a pointer into the blob at its offset, so
every use of the name in a template (indexing, pointer arithmetic, an argument)
compiles either way. The fast kernels' assembly takes its tables through pointer
operands, so a blob works for them as for the C kernels.

Layout: a 16-byte header (MAGIC, format VERSION, the blob's size, the Adler-32 of
everything after the header; little-endian uint32s), then the arrays, each on a
4-byte boundary (the fast kernels read int16 streams with LDR/LDRD, which fault on
unaligned addresses: LDRD on ARMv7-M, any word access on ARMv6-M). It holds 8-,
16- and 32-bit arrays; a 16x8 layer's int64 biases stay compiled in (MicroPython
takes int8 models only).
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

MAGIC = b"TDSW"
VERSION = 1
HEADER_SIZE = 16
ALIGN = 4


class Blob:
    """The arrays added so far, each 4-byte aligned after the header."""

    def __init__(self):
        self.payload = bytearray()

    def place(self, a: np.ndarray) -> int | None:
        """Append a constant array on the next 4-byte boundary (templates/array.j2 calls
        this as it renders one); its offset in the blob, or None for an int64 array,
        which stays compiled in."""
        if a.dtype.itemsize > 4:
            return None
        self.payload += bytes(-len(self.payload) % ALIGN)
        offset = HEADER_SIZE + len(self.payload)
        self.payload += a.astype(a.dtype.newbyteorder("<")).tobytes()
        return offset

    @property
    def size(self) -> int:
        return HEADER_SIZE + len(self.payload) + (-len(self.payload) % ALIGN)

    @property
    def checksum(self) -> int:
        return zlib.adler32(self.body())

    def body(self) -> bytes:
        return bytes(self.payload) + bytes(-len(self.payload) % ALIGN)

    def to_bytes(self) -> bytes:
        return struct.pack("<4sIII", MAGIC, VERSION, self.size, self.checksum) + self.body()
