"""The GPU architectures of the release's CUDA build (llama_serving/cuda_architectures.py): which
GPUs they run on, and the image build's check of the declared ones against the code the
release's libraries carry (their .nv_fatbin sections, as tests/support/fatbin.py lays them out)."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_serving import cuda_architectures as arch

from tests import shipped
from tests.support.fatbin import elf_with_section, section

# What the shipped matrix declares for the release's 12.8 tarballs.
RELEASE = ";".join(shipped.SHIPPED.release_source.cuda_architectures["12.8"])


@pytest.mark.parametrize(
    ("declared", "gpu", "runs"),
    [
        (RELEASE, (7, 0), False),  # V100
        (RELEASE, (6, 1), False),  # P40, GTX 1080
        (RELEASE, (7, 5), True),  # T4
        (RELEASE, (9, 0), True),  # H100
        (RELEASE, (10, 3), True),  # B300: PTX for 10.0 is compiled for it
        (RELEASE, (12, 1), True),
        ("86-real", (8, 9), True),  # machine code runs on its major version, from its minor up
        ("86-real", (8, 0), False),
        ("86-real", (9, 0), False),
        ("90a-real", (9, 0), True),  # an "a" variant on its exact GPU only
        ("90a-real", (10, 0), False),
        ("90", (10, 0), True),  # plain: machine code and PTX
        ("61;70", (6, 1), True),
    ],
)
def test_which_gpus_an_architecture_list_runs_on(declared: str, gpu: tuple[int, int], runs: bool) -> None:
    assert arch.runs_on(arch.parse(declared), gpu) is runs


def test_the_list_reads_as_cmake_writes_it_and_describes_itself() -> None:
    parsed = arch.parse(RELEASE)
    assert [str(a) for a in parsed] == list(shipped.SHIPPED.release_source.cuda_architectures["12.8"])
    assert arch.describe(parsed).startswith("compute capability 7.5 and newer (75-virtual, 80-virtual")
    assert arch.parse("75-virtual 86-real, 90") == arch.parse("75-virtual;86-real;90")
    with pytest.raises(ValueError, match="'sm_75' is not a CUDA architecture"):
        arch.parse("sm_75")


def library(tmp_path: Path, name: str, architectures: list[str]) -> Path:
    path = tmp_path / name
    path.write_bytes(elf_with_section(".nv_fatbin", section(architectures)))
    return path


def test_the_code_of_a_library_is_read_from_its_fat_binaries(tmp_path: Path) -> None:
    path = library(tmp_path, "libggml-cuda.so", ["75-virtual", "86-real", "90"])
    assert arch.file_code(path) == {("ptx", 75), ("machine code", 86), ("ptx", 90), ("machine code", 90)}
    (tmp_path / "VERSION.txt").write_text("llama.cpp version: b9159\n", encoding="utf-8")
    assert arch.file_code(tmp_path / "VERSION.txt") == set()  # not ELF: no code, no error
    assert arch.file_code(library(tmp_path, "libother.so", [])) == set()


def test_the_build_check_passes_when_the_declaration_is_what_the_release_carries(tmp_path: Path) -> None:
    files = [library(tmp_path, "libggml-cuda.so", RELEASE.split(";")), tmp_path / "llama-server"]
    files[1].write_bytes(elf_with_section(".text", b"\x90" * 16))
    version = tmp_path / "VERSION.txt"
    version.write_text(f"llama.cpp version: b9159\nCUDA version: 12.8.1\nArchitectures: {RELEASE}\n", encoding="utf-8")
    assert arch.check(RELEASE, files, version) == []
    assert arch.main(["--declared", RELEASE, "--version-file", str(version), *map(str, files)]) == 0


@pytest.mark.parametrize(
    ("declared", "carried", "version_line", "problem"),
    [
        (
            "75-virtual;80-virtual",
            ["75-virtual", "86-virtual"],
            None,
            "declared 75-virtual;80-virtual (PTX for 75, 80), but the release's libggml-cuda.so carry PTX for 75, 86: "
            "correct release_source.cuda_architectures in matrix.yaml",
        ),
        (
            "75-virtual",
            ["75-virtual"],
            "75-virtual;80-virtual",
            "declared 75-virtual, but VERSION.txt says 'Architectures: 75-virtual;80-virtual'",
        ),
        ("", ["75-virtual"], None, "LLAMA_CPP_CUDA_ARCHITECTURES is empty; the release carries PTX for 75"),
        ("sm_75", ["75-virtual"], None, "LLAMA_CPP_CUDA_ARCHITECTURES: 'sm_75' is not a CUDA architecture"),
        ("75-virtual", [], None, "no file of the release carries CUDA code (an .nv_fatbin section)"),
    ],
)
def test_the_build_check_fails_naming_what_differs(
    tmp_path: Path, declared: str, carried: list[str], version_line: str | None, problem: str
) -> None:
    files = [library(tmp_path, "libggml-cuda.so", carried)]
    version = tmp_path / "VERSION.txt"
    version.write_text(
        f"Architectures: {version_line}\n" if version_line else "CUDA version: 12.8.1\n", encoding="utf-8"
    )
    problems = arch.check(declared, files, version)
    assert len(problems) == 1 and problems[0].startswith(problem), problems
    assert arch.main(["--declared", declared, "--version-file", str(version), str(files[0])]) == 1
