"""What a registry said, read from the exact lines docker printed (recorded from the engine of
this project's machines with `docker buildx imagetools inspect`), and what the tasks do with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_images.core.errors import EngineError, RegistryError
from llama_images.core.matrix import Upstream
from llama_images.core.tag_state import Lookup, TagState, classify
from llama_images.edges import registry
from llama_images.edges.upstream_images import LocalImage, ensure_upstreams

# Each: what was asked, what docker printed on stderr (exit status 1).
RECORDED = {
    # Docker Hub from a machine with no route to it (the first run on a fresh machine here).
    "unresolvable Docker Hub": (
        'ERROR: failed to do request: Head "https://registry-1.docker.io/v2/library/debian/manifests/forky-slim": '
        "dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host"
    ),
    "unresolvable name": (
        'ERROR: failed to do request: Head "https://nonexistent-registry.invalid/v2/library/debian/manifests/'
        'forky-slim": dial tcp: lookup nonexistent-registry.invalid on 10.255.255.53:53: no such host'
    ),
    "closed loopback port": (
        'ERROR: failed to do request: Head "http://127.0.0.1:5999/v2/debian/manifests/forky-slim": '
        "dial tcp 127.0.0.1:5999: connect: connection refused"
    ),
    "plain HTTP where TLS is expected": (
        'ERROR: failed to do request: Head "https://192.0.2.2:56888/v2/debian/manifests/forky-slim": '
        "tls: first record does not look like a TLS handshake"
    ),
    "certificate not valid": (
        'ERROR: failed to do request: Head "https://192.0.2.2:56777/v2/debian/manifests/forky-slim": '
        "tls: failed to verify certificate: x509: cannot validate certificate for 192.0.2.2 because it doesn't "
        "contain any IP SANs"
    ),
    "500": (
        "ERROR: unexpected status from HEAD request to http://127.0.0.1:56500/v2/debian/manifests/forky-slim: "
        "500 Internal Server Error"
    ),
    "503": (
        "ERROR: unexpected status from HEAD request to http://127.0.0.1:56503/v2/debian/manifests/forky-slim: "
        "503 Service Unavailable"
    ),
    "absent tag in the loopback registry": "ERROR: 127.0.0.1:5000/debian:nope: not found",
    "absent tag behind a login": "ERROR: 127.0.0.1:56100/debian:forky-slim: not found",
    "anonymous at a registry that needs a login": (
        "ERROR: pull access denied, repository does not exist or may require authorization: authorization failed: "
        "no basic auth credentials"
    ),
    "wrong credentials": (
        "ERROR: unexpected status from HEAD request to http://127.0.0.1:56100/v2/debian/manifests/forky-slim: "
        "401 Unauthorized"
    ),
    "403": (
        "ERROR: unexpected status from HEAD request to http://127.0.0.1:56403/v2/debian/manifests/forky-slim: "
        "403 Forbidden"
    ),
    "rate limit": (
        "ERROR: unexpected status from HEAD request to http://127.0.0.1:56429/v2/debian/manifests/forky-slim: "
        "429 Too Many Requests"
    ),
}
EXPECTED = {
    "unresolvable Docker Hub": TagState.UNREACHABLE,
    "unresolvable name": TagState.UNREACHABLE,
    "closed loopback port": TagState.UNREACHABLE,
    "plain HTTP where TLS is expected": TagState.UNREACHABLE,
    "certificate not valid": TagState.UNREACHABLE,
    "500": TagState.UNREACHABLE,
    "503": TagState.UNREACHABLE,
    "absent tag in the loopback registry": TagState.ABSENT,
    "absent tag behind a login": TagState.ABSENT,
    "anonymous at a registry that needs a login": TagState.REFUSED,
    "wrong credentials": TagState.REFUSED,
    "403": TagState.REFUSED,
    "rate limit": TagState.REFUSED,
}

DEBIAN = Upstream("debian-forky", "debian:forky-slim", None, ("linux/amd64", "linux/arm64"))
CUDA = Upstream("cuda-12.8", "nvidia/cuda:12.8.1-runtime-ubuntu24.04", "12.8", ("linux/amd64",))
NOT_IN_ENGINE = LocalImage(False, None)


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_each_recorded_answer_is_read_as_what_the_registry_meant(case: str) -> None:
    found = classify(1, RECORDED[case] + "\n")
    assert found.state is EXPECTED[case]
    assert found.detail == RECORDED[case]


def test_a_published_tag_and_an_unknown_answer() -> None:
    assert classify(0, "").state is TagState.PUBLISHED
    assert classify(1, "ERROR: something docker never said before").state is TagState.UNKNOWN
    assert classify(1, "").detail == "no answer"


@pytest.fixture
def docker_printing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `docker` on PATH that answers `imagetools inspect` with the line in $FAKE_DOCKER_ERROR:
    the real lookup code reads what the real CLI prints."""
    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$FAKE_DOCKER_ERROR" >&2\nexit 1\n', encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    return fake


def make_upstreams(case: str, monkeypatch: pytest.MonkeyPatch, upstream: Upstream) -> tuple[list[str], list[str]]:
    """Runs ensure_upstreams with docker printing the recorded line; returns (log, made)."""
    monkeypatch.setenv("FAKE_DOCKER_ERROR", RECORDED[case])
    logged: list[str] = []
    made: list[str] = []
    ensure_upstreams(
        {upstream.name: upstream},
        logged.append,
        inspect=lambda _: NOT_IN_ENGINE,
        create=lambda image, suite, platforms, log: made.append(f"{image} {suite} {','.join(platforms)}"),
    )
    return logged, made


@pytest.mark.usefixtures("docker_printing")
@pytest.mark.parametrize(
    ("case", "because"),
    [
        ("unresolvable Docker Hub", "its registry cannot be reached"),
        ("closed loopback port", "its registry cannot be reached"),
        ("500", "its registry cannot be reached"),
        ("absent tag in the loopback registry", "its registry says the tag is absent"),
    ],
)
def test_a_debian_upstream_is_made_here_when_unreachable_or_absent(
    case: str, because: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged, made = make_upstreams(case, monkeypatch, DEBIAN)
    assert made == ["debian:forky-slim forky linux/amd64,linux/arm64"]
    assert logged == [
        f"upstream debian:forky-slim: {because} ({RECORDED[case]}); creating it from Debian 'forky' "
        "for linux/amd64, linux/arm64"
    ]


@pytest.mark.usefixtures("docker_printing")
@pytest.mark.parametrize("case", ["wrong credentials", "anonymous at a registry that needs a login", "rate limit"])
def test_a_refusing_registry_is_an_error_naming_the_fix_and_nothing_is_made(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(EngineError) as caught:
        make_upstreams(case, monkeypatch, DEBIAN)
    assert caught.value.exit_code == 5
    message = str(caught.value)
    assert "refused the lookup" in message and RECORDED[case] in message and "docker login" in message


@pytest.mark.usefixtures("docker_printing")
def test_an_unreachable_non_debian_upstream_is_an_upstream_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # A build job on a host that cannot reach NVIDIA's registry: exit 5 (upstream), not 7 (issue 13).
    with pytest.raises(
        EngineError, match=r"nvidia/cuda:12\.8\.1-runtime-ubuntu24\.04 \(cuda-12\.8\) is not in"
    ) as caught:
        make_upstreams("unresolvable Docker Hub", monkeypatch, CUDA)
    assert caught.value.exit_code == 5


def test_an_upstream_its_registry_has_needs_nothing_here() -> None:
    made: list[str] = []
    ensure_upstreams(
        {"cuda": CUDA},
        made.append,
        lookup=lambda _: Lookup(TagState.PUBLISHED),
        inspect=lambda _: NOT_IN_ENGINE,
        create=lambda *args: made.append("made"),
    )
    assert made == []


@pytest.mark.usefixtures("docker_printing")
@pytest.mark.parametrize(
    ("case", "exists"), [("absent tag in the loopback registry", False), ("absent tag behind a login", False)]
)
def test_skip_existing_reads_an_absent_tag_as_not_published(
    case: str, exists: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_ERROR", RECORDED[case])
    assert registry.tag_exists("127.0.0.1:5000/someone/llama-cpp:b1-cpu") is exists


@pytest.mark.usefixtures("docker_printing")
@pytest.mark.parametrize("case", ["unresolvable Docker Hub", "closed loopback port", "wrong credentials", "503"])
def test_skip_existing_stays_strict_when_the_answer_is_not_yes_or_no(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_ERROR", RECORDED[case])
    with pytest.raises(RegistryError, match="cannot tell whether") as caught:
        registry.tag_exists("docker.io/someone/llama-cpp:b1-cpu")
    assert RECORDED[case] in str(caught.value)
    assert caught.value.exit_code == 7


def test_a_registry_that_never_answers_is_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\nsleep 5\n", encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    found = registry.lookup_tag("127.0.0.1:56999/debian:forky-slim", timeout=0.5)
    assert found == Lookup(TagState.UNREACHABLE, "no answer within 0.5 seconds")
