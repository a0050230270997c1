"""The GPU architectures a CUDA build of llama.cpp carries code for, and which GPUs can run it.

- `parse`: CMake's CUDA_ARCHITECTURES as the matrix declares them (`75-virtual;86-real;90`).
- `runs_on`: whether a GPU of compute capability X.Y can run any of them. PTX (`-virtual`) is
  compiled by the driver for its GPU: it runs on its own capability and every newer one. Machine
  code (`-real`) runs on its major version from its minor up (`86-real` on 8.6 and 8.9, not 9.0);
  an `a` variant (`90a-real`) on its exact capability only.
- `fatbin_code`: what an ELF file's `.nv_fatbin` section carries, read from the fat binary's
  entry headers (what `cuobjdump --list-ptx/--list-elf` lists, without the CUDA toolkit, which
  the runtime images lack).
- `main`: the image build's check (derivatives/llama-cpp/Dockerfile, stage llama-cuda): the
  declared architectures against the code the release's files carry, and against the
  `Architectures:` line of its VERSION.txt; any difference fails the build, naming both.

Stdlib only; the build runs this file as a script (no package imports).
"""

from __future__ import annotations

import argparse
import mmap
import re
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ARCHITECTURE = re.compile(r"([1-9][0-9]{1,2})([af]?)(?:-(real|virtual))?")
FATBIN_SECTION = b".nv_fatbin"
FATBIN_MAGIC = 0xBA55ED50
PTX_KIND = 1
MACHINE_CODE_KINDS = (2, 0x10)  # ELF cubins (cuobjdump --list-elf counts both)
ELF_MAGIC = b"\x7fELF"

Capability = tuple[int, int]


@dataclass(frozen=True)
class Architecture:
    """One entry of CMake's CUDA_ARCHITECTURES: 75-virtual, 86-real, 90 (both), 90a-real."""

    number: int  # 75, 86, 120
    variant: str  # "", "a" (this exact GPU) or "f" (its family)
    ptx: bool
    machine_code: bool

    @property
    def capability(self) -> Capability:
        return (self.number // 10, self.number % 10)

    def runs_on(self, gpu: Capability) -> bool:
        if self.ptx and gpu >= self.capability:
            return True
        if not self.machine_code:
            return False
        if self.variant == "a":
            return gpu == self.capability
        return gpu[0] == self.capability[0] and gpu[1] >= self.capability[1]

    def __str__(self) -> str:
        kind = "" if self.ptx and self.machine_code else "-virtual" if self.ptx else "-real"
        return f"{self.number}{self.variant}{kind}"


def parse(declared: str) -> tuple[Architecture, ...]:
    """'75-virtual;86-real;90' (CMake's separators, or spaces and commas) -> Architectures;
    ValueError names an entry that is not one."""
    found = []
    for entry in (e for e in re.split(r"[;,\s]+", declared.strip()) if e):
        match = ARCHITECTURE.fullmatch(entry)
        if match is None:
            raise ValueError(f"{entry!r} is not a CUDA architecture like 75-virtual, 86-real or 90")
        kind = match.group(3)
        found.append(Architecture(int(match.group(1)), match.group(2), kind != "real", kind != "virtual"))
    return tuple(found)


def runs_on(architectures: Iterable[Architecture], gpu: Capability) -> bool:
    return any(architecture.runs_on(gpu) for architecture in architectures)


def oldest_capability(architectures: Iterable[Architecture]) -> Capability | None:
    """The oldest GPU any of them runs on."""
    return min((a.capability for a in architectures), default=None)


def show_capability(capability: Capability) -> str:
    return f"{capability[0]}.{capability[1]}"


def describe(architectures: tuple[Architecture, ...], listed: bool = True) -> str:
    """'compute capability 7.5 and newer (75-virtual, ..., 120-virtual)' for the messages (without
    the list: 'compute capability 7.5 and newer')."""
    names = f" ({', '.join(str(a) for a in architectures)})" if listed else ""
    oldest = oldest_capability(architectures)
    if oldest is None:
        return "no GPU architecture"
    if all(a.ptx for a in architectures) or any(a.ptx and a.capability == oldest for a in architectures):
        return f"compute capability {show_capability(oldest)} and newer{names}"
    return f"compute capability {', '.join(show_capability(a.capability) for a in architectures)}{names}"


# The fat binary (CUDA's container of GPU code in a library's .nv_fatbin section): a 16-byte
# header (magic, version, header size, size of the entries), then entries, each a header (kind
# at 0: 1 PTX, 2 ELF; its own size at 4; the padded size of its code at 8; the architecture at
# 28, e.g. 75) followed by its code. A library holds one container per compiled source file.
FATBIN_HEADER = struct.Struct("<IHHQ")
ENTRY_HEADER = struct.Struct("<HHIQ")
ENTRY_ARCHITECTURE_OFFSET = 28


def fatbin_code(data: bytes | mmap.mmap) -> set[tuple[str, int]]:
    """('ptx' | 'machine code', architecture number) for every entry of every fat binary in
    `data` (a .nv_fatbin section's bytes)."""
    found: set[tuple[str, int]] = set()
    magic = struct.pack("<I", FATBIN_MAGIC)
    position = data.find(magic)
    while position >= 0 and position + FATBIN_HEADER.size <= len(data):
        _, _, header_size, size = FATBIN_HEADER.unpack_from(data, position)
        end = min(position + header_size + size, len(data))
        entry = position + header_size
        while entry + ENTRY_ARCHITECTURE_OFFSET + 4 <= end:
            kind, _, entry_size, code_size = ENTRY_HEADER.unpack_from(data, entry)
            if entry_size < ENTRY_ARCHITECTURE_OFFSET + 4:
                break
            (architecture,) = struct.unpack_from("<I", data, entry + ENTRY_ARCHITECTURE_OFFSET)
            if kind == PTX_KIND:
                found.add(("ptx", architecture))
            elif kind in MACHINE_CODE_KINDS:
                found.add(("machine code", architecture))
            entry += entry_size + code_size
        position = data.find(magic, max(end, position + 1))
    return found


class NotElf(ValueError):
    """The file is not a 64-bit little-endian ELF file (or is cut short)."""


def elf_sections(data: bytes | mmap.mmap) -> Iterator[tuple[bytes, int, int]]:
    """(name, offset, size) of each section of a 64-bit little-endian ELF file (amd64, arm64)."""
    if data[:4] != ELF_MAGIC or data[4] != 2 or data[5] != 1:
        raise NotElf("not a 64-bit little-endian ELF file")
    try:
        (table,) = struct.unpack_from("<Q", data, 0x28)
        entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
        headers = [struct.unpack_from("<IIQQQQ", data, table + i * entry_size) for i in range(count)]
        names_offset, names_size = (headers[names_index][4], headers[names_index][5]) if count else (0, 0)
    except (struct.error, IndexError) as exc:
        raise NotElf(f"its section table cannot be read ({exc})") from None
    names = data[names_offset : names_offset + names_size]
    for name_at, _type, _flags, _address, offset, size in headers:
        name = names[name_at : names.find(b"\0", name_at)] if name_at < len(names) else b""
        if offset + size > len(data) and _type != 8:  # SHT_NOBITS takes no room in the file
            raise NotElf(f"section {name.decode(errors='replace')} runs past the end of the file")
        yield name, offset, size


def file_code(path: Path) -> set[tuple[str, int]]:
    """The GPU code in one file's .nv_fatbin section (empty when it has none, or is not ELF)."""
    with path.open("rb") as handle:
        try:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file
            return set()
        with data:
            try:
                sections = list(elf_sections(data))
            except NotElf:
                return set()
            found: set[tuple[str, int]] = set()
            for name, offset, size in sections:
                if name == FATBIN_SECTION:
                    found |= fatbin_code(data[offset : offset + size])
            return found


def expected_code(architectures: Iterable[Architecture]) -> set[tuple[str, int]]:
    code = set()
    for architecture in architectures:
        if architecture.ptx:
            code.add(("ptx", architecture.number))
        if architecture.machine_code:
            code.add(("machine code", architecture.number))
    return code


def show_code(code: set[tuple[str, int]]) -> str:
    parts = []
    for kind in ("ptx", "machine code"):
        numbers = sorted(number for found_kind, number in code if found_kind == kind)
        if numbers:
            parts.append(f"{'PTX' if kind == 'ptx' else 'machine code'} for {', '.join(map(str, numbers))}")
    return "; ".join(parts) or "no GPU code"


def version_file_architectures(text: str) -> str | None:
    """The 'Architectures: 75-virtual;80-virtual' line of a release's VERSION.txt."""
    found = re.search(r"^Architectures:\s*(.+?)\s*$", text, re.MULTILINE)
    return found.group(1) if found else None


def check(declared: str, files: Iterable[Path], version_file: Path | None) -> list[str]:
    """The build's check: problems, each one line naming what to change (none: they agree)."""
    fix = "correct release_source.cuda_architectures in matrix.yaml (or --build-arg LLAMA_CPP_CUDA_ARCHITECTURES)"
    try:
        architectures = parse(declared)
    except ValueError as exc:
        return [f"LLAMA_CPP_CUDA_ARCHITECTURES: {exc}; {fix}"]
    found: set[tuple[str, int]] = set()
    carriers = []
    for path in files:
        code = file_code(path)
        if code:
            carriers.append(path.name)
            found |= code
    problems = []
    if not architectures:
        problems.append(f"LLAMA_CPP_CUDA_ARCHITECTURES is empty; the release carries {show_code(found)}: {fix}")
    elif not found:
        problems.append("no file of the release carries CUDA code (an .nv_fatbin section): not a CUDA build")
    elif found != expected_code(architectures):
        problems.append(
            f"declared {declared} ({show_code(expected_code(architectures))}), but the release's "
            f"{', '.join(sorted(carriers))} carry {show_code(found)}: {fix}"
        )
    if version_file is not None and version_file.is_file():
        listed = version_file_architectures(version_file.read_text(encoding="utf-8", errors="replace"))
        if listed is not None and listed != "" and architectures:
            try:
                same = expected_code(parse(listed)) == expected_code(architectures)
            except ValueError:
                same = False
            if not same:
                problems.append(f"declared {declared}, but {version_file.name} says 'Architectures: {listed}': {fix}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="check a CUDA build's GPU code against its declared architectures")
    parser.add_argument("--declared", required=True, help="CMake CUDA_ARCHITECTURES, e.g. 75-virtual;80-virtual")
    parser.add_argument("--version-file", type=Path, help="the release's VERSION.txt")
    parser.add_argument("files", nargs="+", type=Path, help="files, or directories to read every file of")
    args = parser.parse_args(argv)
    files = [f for path in args.files for f in (sorted(path.rglob("*")) if path.is_dir() else [path]) if f.is_file()]
    problems = check(args.declared, files, args.version_file)
    for problem in problems:
        print(f"CUDA architectures: {problem}", file=sys.stderr)
    if not problems:
        print(f"CUDA architectures: {args.declared}, as the release's GPU code says")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
