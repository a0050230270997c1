"""Bad matrix files: every problem names file:line, the key and a fix; exit code 2."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llama_images.core.errors import MatrixError
from llama_images.core.matrix import parse_matrix
from llama_images.edges.files import load_matrix
from tests.conftest import REPO_ROOT
from tests.matrices import VALID, broken

# (case id, text replaced, replacement, line, key, words in the message, words in the fix)
CASES = [
    ("unknown-key-with-suggestion", "    platforms: [linux/amd64]\n", "    platform: [linux/amd64]\n",
     20, "upstreams.cuda-13.1.platform", "unknown key 'platform'", "did you mean 'platforms'?"),
    ("unknown-top-level-key", "default_targets:", "default_target:",
     6, "default_target", "unknown key 'default_target'", "did you mean 'default_targets'?"),
    ("missing-required-key", "    image: debian:forky-slim\n", "",
     21, "upstreams.debian-forky.image", "required key is missing", "e.g. nvidia/cuda:"),
    ("list-expected", "releases: [b11669]", "releases: b11669",
     36, "flavors.cpu.releases", "expected a list, found a string", "[b11669]"),
    ("mapping-expected", "  cpu:\n    source: debian-package",
     "  cpu: debian-package\n  cpux:\n    source: debian-package",
     33, "flavors.cpu", "expected a mapping of keys, found a string", "key: value"),
    ("malformed-cuda-version", 'cuda: "12.9"', 'cuda: "12.9.1"',
     15, "upstreams.cuda-12.9.cuda", "'12.9.1' is not a CUDA version", "MAJOR.MINOR"),
    ("malformed-platform", "[linux/amd64, linux/arm64]\n  cuda-13.1", "[linux/amd64, linux/arm]\n  cuda-13.1",
     16, "upstreams.cuda-12.9.platforms[1]", "'linux/arm' is not a linux platform", "linux/arm64"),
    ("malformed-release-tag", "[b9159, b9000]", "[b9159, v9000]",
     28, "flavors.cuda.releases[1]", "'v9000' is not a release tag", "latest"),
    ("duplicate-release", "[b9159, b9000]", "[b9159, b9159]",
     28, "flavors.cuda.releases[1]", "'b9159' is listed twice", "remove"),
    ("undefined-upstream", "upstreams: [debian-forky]", "upstreams: [debian-forkey]",
     35, "flavors.cpu.upstreams[0]", "upstream 'debian-forkey' is not declared", "did you mean 'debian-forky'?"),
    ("unknown-source", "source: debian-package", "source: debian-packages",
     34, "flavors.cpu.source", "unknown source 'debian-packages'", "did you mean 'debian-package'?"),
    ("untagged-image", "image: debian:forky-slim", "image: debian",
     22, "upstreams.debian-forky.image", "'debian' has no tag", "pin a tag"),
    ("tag-template-unknown-field", '"{release}-cpu"', '"{release}-{arch}"',
     37, "flavors.cpu.tag", "unknown field '{arch}'", "{release}"),
    ("tag-template-without-release", '"{release}-cpu"', '"cpu"',
     37, "flavors.cpu.tag", "lacks {release}", "each release needs its own tag"),
    ("cuda-field-on-cpu-upstream", '"{release}-cpu"', '"{release}-cuda-{cuda}"',
     37, "flavors.cpu.tag", "has no CUDA version", "drop {cuda}"),
    ("duplicate-tags", '"{release}-cuda-{cuda}"', '"{release}-cuda"',
     32, "flavors.cuda.tag", "would both be tagged docker.io/example/llama-cpp:b9159-cuda", "{upstream}"),
    ("latest-on-debian-flavor", "releases: [b11669]", "releases: [latest]",
     36, "flavors.cpu.releases[0]", "'latest' cannot be resolved", "b11669"),
    ("binary-cuda-missing-for-upstream", '      cuda-13.1: "13.0"\n', "",
     29, "flavors.cuda.binary_cuda", "no binary CUDA version for upstream 'cuda-13.1'", 'cuda-13.1: "MAJOR.MINOR"'),
    ("binary-cuda-unknown-upstream", '      cuda-13.1: "13.0"\n', '      cuda-13.1: "13.0"\n      cuda-12.8: "12.8"\n',
     32, "flavors.cuda.binary_cuda.cuda-12.8", "'cuda-12.8' is not an upstream of this flavor", "cuda-12.9"),
    ("duplicate-key", "  debian-forky:\n", "  cuda-12.9:\n",
     21, "upstreams.cuda-12.9", "key given twice", "YAML keeps only the last"),
    ("default-target-matches-nothing", "  - cpu/*", "  - gpu/*",
     7, "default_targets[0]", "'gpu/*' matches no target", "invoke matrix"),
    ("bad-registry", "registry: docker.io", "registry: Docker Hub",
     2, "images.registry", "'Docker Hub' is not a registry host", "docker.io"),
    ("yaml-syntax-error", "    tag: \"{release}-cpu\"", "    tag: \"{release}-cpu",
     38, "", "not valid YAML: found unexpected end of stream (while scanning a quoted scalar at line 37)", "quoting"),
    ("cuda-architecture-malformed", "13.0: [75-virtual, 120a-real]", "13.0: [75-virtual, sm_120]",
     11, "release_source.cuda_architectures.13.0[1]", "'sm_120' is not a CUDA architecture", "75-virtual"),
    ("cuda-architectures-missing-for-a-binary-cuda", "13.0: [75-virtual, 120a-real]", "13.1: [75-virtual]",
     31, "flavors.cuda.binary_cuda.cuda-13.1", "no GPU architectures are declared for the CUDA 13.0 tarballs",
     "release_source.cuda_architectures"),
    ("tarball-platform-unsupported", "platforms: [linux/amd64]\n", "platforms: [linux/amd64, linux/s390x]\n",
     27, "flavors.cuda.upstreams", "lists linux/s390x, for which no prebuilt tarball exists", "linux/amd64"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "message", "fix"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_matrix_names_line_key_and_fix(old: str, new: str, line: int, key: str, message: str, fix: str) -> None:
    with pytest.raises(MatrixError) as caught:
        parse_matrix(broken(old, new), "matrix.yaml")
    problems = caught.value.problems
    matching = [p for p in problems if message in p.message]
    assert matching, f"no problem says {message!r}; got:\n{caught.value}"
    problem = matching[0]
    assert (problem.file, problem.line, problem.key) == ("matrix.yaml", line, key), str(problem)
    assert fix in problem.fix
    assert caught.value.exit_code == 2
    assert f"matrix.yaml:{line}:" in str(caught.value)


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    text = broken('cuda: "12.9"', 'cuda: "twelve"').replace("source: debian-package", "source: deb")
    with pytest.raises(MatrixError) as caught:
        parse_matrix(text)
    assert [p.line for p in caught.value.problems] == [15, 34]


def test_unquoted_versions_keep_the_text_as_written() -> None:
    matrix = parse_matrix(broken('cuda: "12.9"', "cuda: 12.10"))
    assert matrix.upstreams["cuda-12.9"].cuda == "12.10"
    assert matrix.upstreams["cuda-13.1"].cuda == "13.1"


def test_empty_file_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="the file is empty"):
        parse_matrix("")
    with pytest.raises(MatrixError, match=r"gone\.yaml:1: cannot read the file"):
        load_matrix(tmp_path / "gone.yaml")


def test_the_valid_matrix_and_the_shipped_one_load() -> None:
    assert set(parse_matrix(VALID).flavors) == {"cuda", "cpu"}
    shipped = load_matrix(REPO_ROOT / "matrix.yaml")
    # A CUDA upstream and a CPU one (test_flavors checks each CUDA image runs its binaries' CUDA).
    assert {u.cuda is None for u in shipped.upstreams.values()} == {True, False}


ALIAS_BOMB = b"""\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.parametrize(
    ("data", "line", "message"),
    [
        pytest.param(b"images:\n  registry: caf\xe9\n", 2, "byte 0xe9 at offset 23 is not UTF-8 text", id="latin-1"),
        pytest.param(b"images:\n  registry: a\x01b\n", 2, "character U+0001 at offset 21 is not allowed", id="control"),
        pytest.param(ALIAS_BOMB, 5, "aliases expand this file to more than 20000 values", id="alias-bomb"),
        pytest.param(b"a: &a [*a]\n", 1, "an alias refers to the collection that contains it", id="recursive"),
        pytest.param(b"[" * 5000, 1, "nested too deeply", id="deep"),
    ],
)
def test_any_bytes_give_a_located_problem_not_a_traceback(tmp_path: Path, data: bytes, line: int, message: str) -> None:
    path = tmp_path / "matrix.yaml"
    path.write_bytes(data)
    started = time.monotonic()
    with pytest.raises(MatrixError) as caught:
        load_matrix(path)
    assert time.monotonic() - started < 5
    assert any(p.line == line and message in p.message for p in caught.value.problems), str(caught.value)


def test_random_bytes_and_mangled_matrices_never_crash_the_loader(tmp_path: Path) -> None:
    rng = random.Random(7)
    shipped = (REPO_ROOT / "matrix.yaml").read_bytes()
    samples = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(300)]
    for _ in range(300):
        mangled = bytearray(shipped)
        for _ in range(rng.randrange(1, 6)):
            mangled[rng.randrange(len(mangled))] = rng.randrange(256)
        samples.append(bytes(mangled))
    path = tmp_path / "matrix.yaml"
    for sample in samples:
        path.write_bytes(sample)
        try:
            load_matrix(path)
        except MatrixError as exc:
            assert exc.problems and all(p.line >= 1 for p in exc.problems)


@pytest.mark.parametrize("data", [b"\xe9", ALIAS_BOMB], ids=["latin-1", "alias-bomb"])
def test_the_task_exits_2_with_the_file_and_line(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "matrix", "--matrix", str(path)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}:" in result.stderr


def test_task_reports_bad_matrix_without_traceback(write_matrix: Callable[[str], Path]) -> None:
    path = write_matrix(broken("    platforms: [linux/amd64]\n", "    platform: [linux/amd64]\n"))
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "matrix", "--matrix", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert ":20: upstreams.cuda-13.1.platform: unknown key 'platform'" in result.stderr
    assert "did you mean 'platforms'?" in result.stderr
