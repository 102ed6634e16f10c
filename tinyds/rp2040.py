"""What a Raspberry Pi Pico needs beyond a Cortex-M0+ image: the boot2 stage and a UF2 file.

The bootrom copies flash's first 256 bytes to SRAM and runs them only if their last 4
bytes are the CRC-32 (polynomial 0x04C11DB7, initial 0xFFFFFFFF, not reflected, no final
xor) of the first 252. BOOT2_CODE is firmware/rp2040_boot2.S assembled (a test
assembles the source and compares); boot2_image pads it and appends the CRC.
UF2 is the drag-and-drop format of the Pico's USB bootloader: 512-byte blocks of
256 payload bytes each, tagged with the RP2040 family ID.

`python3 -m tinyds.rp2040 build/firmware.bin firmware.uf2` converts an image linked at
XIP_BASE. This file needs only the standard library: generated rp2040 projects carry a copy
as rp2040_uf2.py, which their Makefile and CMake build run, so tinyds need not be installed.
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

XIP_BASE = 0x10000000
BOOT2_SIZE = 256
BOOT2_CODE = bytes.fromhex(
    "00b50c4b00219960042159610a4919600a480b490160002159600121996001bc"
    "002800d0004707480749086003c880f3088808470000001800031f00f4000018"
    "180200030001001008ed00e0")
UF2_MAGIC = (0x0A324655, 0x9E5D5157, 0x0AB16F30)
UF2_FAMILY_ID_PRESENT = 0x00002000
RP2040_FAMILY_ID = 0xE48BFF56
UF2_PAYLOAD = 256


def crc32_mpeg2(data: bytes) -> int:
    """The bootrom's CRC-32: MSB first, initial 0xFFFFFFFF, no final xor."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


def boot2_image() -> bytes:
    """The 256 bytes at the start of flash: code, zero padding, CRC (little-endian)."""
    body = BOOT2_CODE.ljust(BOOT2_SIZE - 4, b"\0")
    return body + struct.pack("<I", crc32_mpeg2(body))


def uf2(image: bytes, base: int = XIP_BASE, family: int = RP2040_FAMILY_ID) -> bytes:
    """A flat image that starts at `base` -> UF2 blocks of 256 bytes each."""
    chunks = [image[i:i + UF2_PAYLOAD] for i in range(0, len(image), UF2_PAYLOAD)]
    blocks = []
    for n, chunk in enumerate(chunks):
        header = struct.pack("<8I", UF2_MAGIC[0], UF2_MAGIC[1], UF2_FAMILY_ID_PRESENT,
                             base + n * UF2_PAYLOAD, UF2_PAYLOAD, n, len(chunks), family)
        blocks.append(header + chunk.ljust(476, b"\0") + struct.pack("<I", UF2_MAGIC[2]))
    return b"".join(blocks)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python3 rp2040_uf2.py firmware.bin firmware.uf2", file=sys.stderr)
        return 2
    image = Path(args[0]).read_bytes()
    stored = image[BOOT2_SIZE - 4:BOOT2_SIZE]
    if len(image) < BOOT2_SIZE or struct.unpack("<I", stored)[0] != crc32_mpeg2(
            image[:BOOT2_SIZE - 4]):
        print(f"tinyds: error: {args[0]}: does not start with a boot2 stage whose CRC checks; "
              "build it from a project generated with --mcu rp2040", file=sys.stderr)
        return 2
    Path(args[1]).write_bytes(uf2(image))
    return 0


if __name__ == "__main__":
    sys.exit(main())
