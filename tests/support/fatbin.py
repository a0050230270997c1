"""Fat binaries as nvcc lays them out in a library's .nv_fatbin section, for the tests of the
CUDA architecture check (llama_serving/cuda_architectures.py) and the release stand-in.

The layout, from public descriptions of the format (cuobjdump's own, reverse-engineered): a
16-byte header (magic 0xBA55ED50, version 1, header size 16, size of what follows), then one
entry per architecture: a 64-byte header (kind 1 = PTX or 2 = ELF at 0, the header's size at 4,
the code's size padded to 8 bytes at 8, the code's size at 16, the architecture at 28, e.g. 75)
and the code. A library holds one such container per compiled source file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

PTX, ELF = 1, 2


def container(entries: Iterable[tuple[int, int]]) -> bytes:
    """One fat binary: an entry per (kind, architecture), with a little code each."""
    body = b""
    for kind, architecture in entries:
        code = f".version 8.7\n.target sm_{architecture}\n".encode() if kind == PTX else b"\x7fELF" + bytes(28)
        padded = code + bytes(-len(code) % 8)
        header = struct.pack("<HHIQII", kind, 0x0101, 64, len(padded), len(code), 0)
        header += struct.pack("<HHI", 0, 0, architecture) + bytes(64 - 32)
        body += header + padded
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def section(architectures: Iterable[str], files: int = 2) -> bytes:
    """A .nv_fatbin section as `-DCMAKE_CUDA_ARCHITECTURES=<architectures>` builds it for
    `files` source files: 75-virtual gives PTX for 75, 86-real an ELF for 86, 90 both."""
    entries = []
    for name in architectures:
        number = int(name.split("-")[0].rstrip("af"))
        if not name.endswith("-real"):
            entries.append((PTX, number))
        if not name.endswith("-virtual"):
            entries.append((ELF, number))
    one = container(entries)
    return b"".join(one + bytes(-len(one) % 8) for _ in range(files))


def elf_with_section(name: str, data: bytes) -> bytes:
    """A minimal 64-bit little-endian ELF file whose only section (besides the names) is `name`."""
    names = b"\0" + name.encode() + b"\0.shstrtab\0"
    data_at = 64
    names_at = data_at + len(data)
    table_at = names_at + len(names) + (-(names_at + len(names)) % 8)
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, table_at, 0, 64, 0, 0, 64, 3, 2)
    sections = bytes(64)  # the null section
    sections += struct.pack("<IIQQQQIIQQ", 1, 1, 2, 0, data_at, len(data), 0, 0, 8, 0)
    sections += struct.pack("<IIQQQQIIQQ", 2 + len(name), 3, 0, 0, names_at, len(names), 0, 0, 1, 0)
    return header + data + names + bytes(table_at - names_at - len(names)) + sections
