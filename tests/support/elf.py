"""What `readelf -d` shows of a 64-bit little-endian ELF file's search paths (RUNPATH, RPATH),
for tests on hosts without binutils."""

from __future__ import annotations

import struct

PT_LOAD, PT_DYNAMIC = 1, 2
DT_NULL, DT_STRTAB, DT_RPATH, DT_RUNPATH = 0, 5, 15, 29


def search_paths(data: bytes) -> dict[str, str]:
    """{'RUNPATH': '$ORIGIN'} and/or 'RPATH' of the file's dynamic section; {} without one."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    headers = [struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize) for i in range(phnum)]
    loads = [(h[3], h[2], h[5]) for h in headers if h[0] == PT_LOAD]  # (vaddr, file offset, file size)
    dynamic = next((h for h in headers if h[0] == PT_DYNAMIC), None)
    if dynamic is None:
        return {}

    def file_offset(address: int) -> int:
        for vaddr, offset, size in loads:
            if vaddr <= address < vaddr + size:
                return int(offset + address - vaddr)
        raise ValueError(f"address {address:#x} is in no loaded segment")

    entries: list[tuple[int, int]] = []
    for position in range(dynamic[2], dynamic[2] + dynamic[5], 16):
        tag, value = struct.unpack_from("<qQ", data, position)
        if tag == DT_NULL:
            break
        entries.append((tag, value))
    strtab = file_offset(next(value for tag, value in entries if tag == DT_STRTAB))
    names = {DT_RUNPATH: "RUNPATH", DT_RPATH: "RPATH"}
    found = {}
    for tag, value in entries:
        if tag in names:
            start = strtab + value
            found[names[tag]] = data[start : data.index(b"\0", start)].decode()
    return found
