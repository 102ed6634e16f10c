"""The weight blob: every constant array of a generated library in one buffer, for
builds that are handed their weights instead of compiling them in (the MicroPython
natmod, whose code and data are copied into RAM on import, reads them from a
`bytes` constant that stays in flash). Normal builds are unchanged.

Kernel templates declare their constants as `static const T NAME[N] = {...};`.
`externalize` keeps each declaration as it is and adds, under
-DTINYDS_WEIGHTS_EXTERNAL, a macro that makes NAME a pointer into the blob at the
array's offset, so every use of NAME in a template (indexing, pointer arithmetic,
an argument) compiles either way and no template changes. Layers with inline
assembly keep their constants (see externalize).

Layout: a 16-byte header (MAGIC, format VERSION, the blob's size, the Adler-32 of
everything after the header; little-endian uint32s), then the arrays, each on a
4-byte boundary (the fast kernels read int16 streams with LDR/LDRD, which fault on
unaligned addresses: LDRD on ARMv7-M, any word access on ARMv6-M).
"""
from __future__ import annotations

import re
import struct
import zlib

import numpy as np

MAGIC = b"TDSW"
VERSION = 1
HEADER_SIZE = 16
ALIGN = 4
CTYPES = {"int8_t": "<i1", "uint8_t": "<u1", "int16_t": "<i2", "uint16_t": "<u2",
          "int32_t": "<i4", "uint32_t": "<u4"}
# A constant array exactly as the kernel templates write one.
DECLARATION = re.compile(r"^static const (u?int(?:8|16|32)_t) (\w+)\[(\d+)\] = \{\n(.*?)^\};\n",
                         re.M | re.S)


class Blob:
    """The arrays added so far, each 4-byte aligned after the header."""

    def __init__(self):
        self.payload = bytearray()

    def add(self, data: bytes) -> int:
        """Append data on the next 4-byte boundary; returns its offset in the blob."""
        self.payload += bytes(-len(self.payload) % ALIGN)
        offset = HEADER_SIZE + len(self.payload)
        self.payload += data
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


def externalize(c_text: str, macro: str, blob: Blob) -> str:
    """A layer's C with each constant array also placed in blob and, under
    TINYDS_WEIGHTS_EXTERNAL, its name defined as macro(type, offset).

    A layer whose function embeds inline assembly keeps its constants compiled
    in: that assembly may take all fourteen registers (the fast depthwise kernel
    does), and a base pointer the compiler must keep live besides leaves GCC
    with "impossible constraints"."""
    if "__asm__" in c_text:
        return c_text
    seen = set()

    def move(m: re.Match) -> str:
        ctype, array, length, body = m.groups()
        values = [int(v.rstrip("uUlL"), 0) for v in body.replace("\n", " ").split(",")
                  if v.strip()]
        info = np.iinfo(np.dtype(CTYPES[ctype]))
        # The templates' own output: anything else is a bug in tinyds, not user input.
        assert len(values) == int(length) and array not in seen, array
        assert all(info.min <= v <= info.max for v in values), array
        seen.add(array)
        offset = blob.add(np.array(values, dtype=CTYPES[ctype]).tobytes())
        return (f"#ifndef TINYDS_WEIGHTS_EXTERNAL\n{m.group(0)}#else\n"
                f"#define {array} {macro}({ctype}, {offset})\n#endif\n")

    return DECLARATION.sub(move, c_text)
