"""The CPU image end to end: built by the README's main command, then booted and asked to serve.

These build real images on the engine (`invoke engine`); the first build takes minutes, later
ones come from the build cache.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from platform import machine
from typing import Any

import pytest

from llama_images.core.bake import bake_name, familiar, packages_name
from llama_images.core.targets import expand
from tests import shipped
from tests.conftest import REPO_ROOT
from tests.container.conftest import CPU_IMAGE, NAMESPACE, exec_text, invoke, wait_for
from tests.support.loopback import Answer, Loopback, release, serve, tag_path
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.container
# A llama.cpp build Debian's package does not carry.
WRONG_BUILD = "b1"


def supervisor_is_up(container: Any) -> bool:
    # 0: all programs running; 3: some stopped (llama without a model). Both mean it answers.
    return exec_text(container, "supervisorctl", "status")[0] in (0, 3)


def test_main_command_builds_the_cpu_image_for_this_machines_platform_only(
    main_build: subprocess.CompletedProcess[str], client: Any
) -> None:
    """Issue 25: a local build is for the host's platform (the other half, under emulation, took
    two thirds of a fresh machine's first build); publishing keeps both (test_publishing.py)."""
    assert main_build.returncode == 0, main_build.stdout[-4000:] + main_build.stderr[-4000:]
    cpu = shipped.target("cpu")
    assert cpu.id in main_build.stdout
    assert "for this machine's platform (a local build)" in main_build.stdout
    image = client.images.get(CPU_IMAGE)
    labels = image.attrs["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == cpu.tag
    assert len(labels["org.opencontainers.image.revision"]) >= 7
    output = client.containers.run(CPU_IMAGE, ["uname", "-m"], entrypoint=[], remove=True)
    assert output.decode().strip() == machine()
    other = {"x86_64": "linux/arm64", "aarch64": "linux/amd64"}[machine()]
    inspected = subprocess.run(["docker", "image", "inspect", "--platform", other, CPU_IMAGE],
                               capture_output=True, text=True, check=False)  # fmt: skip
    assert inspected.returncode != 0, f"{CPU_IMAGE} was built for {other} too"


def test_the_image_carries_the_llama_cpp_build_its_tag_names(main_build: Any, client: Any) -> None:
    output = client.containers.run(CPU_IMAGE, ["llama-server", "--version"], entrypoint=[], remove=True, stderr=True)
    assert f"build {shipped.target('cpu').release.removeprefix('b')}" in output.decode()


def test_llama_server_serves_a_local_model_from_one_env_var(
    main_build: Any, run_container: Callable[..., Any], tmp_path: Path
) -> None:
    model = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    container = run_container(
        environment={"LLAMA_MODEL": "/models/tiny.gguf"},
        volumes={str(tmp_path): {"bind": "/models", "mode": "ro"}},
    )
    wait_for(
        lambda: exec_text(container, "curl", "-fsS", "http://127.0.0.1:18000/health") == (0, '{"status":"ok"}'),
        60,
        "llama-server did not report healthy",
        container,
    )
    request = json.dumps({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4})
    code, body = exec_text(
        container,
        "curl", "-fsS", "-H", "Content-Type: application/json", "-d", request,
        "http://127.0.0.1:18000/v1/chat/completions",
    )  # fmt: skip
    assert code == 0, body
    answer = json.loads(body)
    assert answer["choices"][0]["message"]["role"] == "assistant"
    code, models = exec_text(container, "curl", "-fsS", "http://127.0.0.1:18000/v1/models")
    assert code == 0 and model.name in models
    # Healthy can come before supervisor's startsecs has passed; then it says RUNNING.
    wait_for(
        lambda: "RUNNING" in exec_text(container, "supervisorctl", "status", "llama")[1],
        10,
        "supervisor did not report llama RUNNING",
        container,
    )


def test_llama_server_is_not_reachable_from_outside_the_container(
    main_build: Any, run_container: Callable[..., Any], tmp_path: Path
) -> None:
    write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    container = run_container(
        environment={"LLAMA_MODEL": "/models/tiny.gguf"},
        volumes={str(tmp_path): {"bind": "/models", "mode": "ro"}},
    )
    wait_for(
        lambda: exec_text(container, "curl", "-fsS", "http://127.0.0.1:18000/health")[0] == 0,
        60,
        "llama-server did not start",
        container,
    )
    container.reload()
    address = container.attrs["NetworkSettings"]["IPAddress"]
    code, _ = exec_text(container, "curl", "-sS", "--max-time", "3", f"http://{address}:18000/health")
    assert code != 0, "the internal port answers on the container's network address"


def test_without_a_model_llama_stays_stopped_and_the_container_runs(
    main_build: Any, run_container: Callable[..., Any]
) -> None:
    container = run_container()

    def settled() -> bool:
        status = exec_text(container, "supervisorctl", "status", "llama")[1]
        return "EXITED" in status or "STOPPED" in status

    wait_for(settled, 30, "llama did not settle as stopped", container)
    time.sleep(2)
    container.reload()
    assert container.status == "running"
    assert "LLAMA_MODEL" in container.logs().decode(errors="replace")
    assert "FATAL" not in exec_text(container, "supervisorctl", "status", "llama")[1]


def test_a_failing_target_fails_the_build_and_names_it(main_build: Any, tmp_path: Path) -> None:
    # The Debian package carries the matrix's build; asking for another must fail, not mislabel.
    cpu = shipped.target("cpu")
    shipped_text = (REPO_ROOT / "matrix.yaml").read_text(encoding="utf-8")
    matrix = shipped_text.replace(f"releases: [{cpu.release}]", f"releases: [{WRONG_BUILD}]")
    assert matrix != shipped_text, f"matrix.yaml no longer writes `releases: [{cpu.release}]`"
    path = tmp_path / "wrong-build.yaml"
    path.write_text(matrix, encoding="utf-8")
    result = invoke("build", "--matrix", str(path), "--platform", "linux/amd64", "--namespace", "failing")
    assert result.returncode == 4, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"build failed for {cpu.id.rpartition('/')[0]}/{WRONG_BUILD}" in result.stderr
    assert f"llama-server is not build {WRONG_BUILD}" in result.stdout


def test_buildx_accepts_the_rendered_bake_file_for_the_whole_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    # --push looks the release up (checksums), as `build --push` does: a loopback API answers.
    api = Loopback()
    release_tag = shipped.target("cuda").release
    api.route(tag_path(release_tag), Answer(body=release(release_tag, shipped.tarballs())))
    with serve(api):
        monkeypatch.setenv("GITHUB_API_URL", api.url)
        check_rendered_bake_files()


def check_rendered_bake_files() -> None:
    for extra in ((), ("--push",)):
        rendered = invoke("bake", "--print", "--filter", "*", *extra, timeout=120)
        assert rendered.returncode == 0, rendered.stderr
        printed = subprocess.run(
            ["docker", "buildx", "bake", "--file", "-", "--print"],
            input=rendered.stdout, cwd=REPO_ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert printed.returncode == 0, printed.stderr
        bake = json.loads(printed.stdout)
        assert set(bake["group"]["default"]["targets"]) == {bake_name(t.id) for t in expand(shipped.SHIPPED)}
        target = shipped.target("cuda")
        cuda = bake["target"][bake_name(target.id)]
        assert cuda["contexts"] == {
            familiar(target.base.image): f"target:{packages_name(target.base)}",
            "base-overlay": "base-image/ROOT",
        }
        assert cuda["args"]["LLAMA_CPP_CUDA_VERSION"] == target.binary_cuda
        assert ("cache-to" in cuda) == ("--push" in extra)
        checked = invoke("bake", "--check", "--filter", "cuda/*", *extra, timeout=120)
        assert checked.returncode == 0, checked.stderr


def test_push_publishes_to_a_registry_and_skip_existing_builds_nothing_twice(
    main_build: Any, local_registry: str
) -> None:
    # No SBOM: BuildKit's scanner image lives on Docker Hub.
    publish = ("--filter", "cpu/*", "--platform", "linux/amd64", "--push", "--no-sbom",
               "--registry", local_registry, "--namespace", f"{NAMESPACE}-push{time.time_ns()}")  # fmt: skip
    first = invoke("build", *publish, "--skip-existing")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    cpu = shipped.target("cpu", registry=local_registry, namespace=publish[-1])
    image = cpu.image
    inspected = subprocess.run(
        ["docker", "buildx", "imagetools", "inspect", "--raw", image], capture_output=True, text=True, check=False
    )
    assert inspected.returncode == 0, inspected.stderr
    manifests = json.loads(inspected.stdout)["manifests"]
    kinds = {m.get("annotations", {}).get("vnd.docker.reference.type", "image") for m in manifests}
    assert kinds == {"image", "attestation-manifest"}  # provenance travels with the image
    second = invoke("build", *publish, "--skip-existing")
    assert second.returncode == 0, second.stderr
    assert f"skipped {cpu.id} [linux/amd64]: already published" in second.stdout
    assert "nothing to build" in second.stdout
