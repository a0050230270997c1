"""PROVISIONING_MANIFEST in the CPU image (issue 27): the reference image's own example manifests,
unmodified, from a clone of its repository (tests/container/reference_suite.py), run against
loopback servers. Only base URLs are swapped: git's `url.<base>.insteadOf` (through git's
GIT_CONFIG_* variables) for github.com, HF_ENDPOINT for the hub; the manifests still say
https://github.com/... and https://huggingface.co/...

(The provisioner without Docker: tests/provisioner/test_provisioner_run.py; PROVISIONING_SCRIPT alone:
test_provisioning.py.)"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container import reference_suite
from tests.container.conftest import CPU_IMAGE, exec_text, loopback_ports, wait_for
from tests.container.llama.support import bridge_gateway
from tests.container.runtime_support import TOKEN, bearer, program_states, request, wait_answering
from tests.container.test_provisioning import probe_wheel
from tests.support.fake_hf_hub import FakeHub
from tests.support.loopback import serve_directory

pytestmark = pytest.mark.container

HF_TOKEN = "hf_" + "Gat3dM0d3ls" * 4
APP = """\
import http.server
import sys

port = int(sys.argv[sys.argv.index("--port") + 1])


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"your app, served from the minimal manifest"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.HTTPServer(("127.0.0.1", port), Answer).serve_forever()
"""


def boot_status(container: Any) -> str:
    return str(request(container, 1111, "/api/boot", headers=bearer()).json()["provisioning"] or "")


def wait_provisioned(container: Any, seconds: float = 180) -> None:
    wait_for(lambda: boot_status(container) == "done" or boot_status(container).startswith("failed"), seconds,
             "provisioning did not finish", container)  # fmt: skip
    log = exec_text(container, "cat", "/var/log/provisioning.log")[1]
    assert boot_status(container) == "done", log


def app_repository(root: Path, index: str) -> None:
    """github.com/your-org/your-app as the minimal example names it, served over git's dumb HTTP."""
    work = root.parent / "your-app-work"
    work.mkdir()
    (work / "app.py").write_text(APP)
    (work / "requirements.txt").write_text(f"--index-url {index}/simple\nllama-images-probe==1.0\n")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    for command in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "app"]):
        subprocess.run([*git, "-C", str(work), *command], check=True)
    target = root / "your-org" / "your-app"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(target)], check=True)
    subprocess.run(["git", "-C", str(target), "update-server-info"], check=True)


def package_index(root: Path) -> None:
    name, data = probe_wheel()
    (root / "simple" / "llama-images-probe").mkdir(parents=True)
    (root / name).write_bytes(data)
    (root / "simple" / "llama-images-probe" / "index.html").write_text(
        f'<a href="../../{name}#sha256={hashlib.sha256(data).hexdigest()}">{name}</a>\n'
    )


def test_the_minimal_example_clones_installs_and_starts_its_app_behind_the_token(
    run_container: Callable[..., Any], client: Any, tmp_path: Path
) -> None:
    mirror = reference_suite.require_mirror()
    root = tmp_path / "srv"
    root.mkdir()
    with serve_directory(root, bridge_gateway(client)) as url:
        package_index(root)
        app_repository(root, url)
        (root / "minimal.yaml").write_text(reference_suite.example(mirror, "minimal"))
        container = run_container(
            environment={
                "PROVISIONING_MANIFEST": f"{url}/minimal.yaml",
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": f"url.{url}/.insteadOf",
                "GIT_CONFIG_VALUE_0": "https://github.com/",
                "PORTAL_CONFIG": reference_suite.PORTAL_CONFIG + "|localhost:17860:7860:/:Your App",
                "OPEN_BUTTON_TOKEN": TOKEN,
            },
            ports=loopback_ports((1111, 8000, 8080, 17860)),
        )
        wait_answering(container, 1111, "/api/health")
        wait_provisioned(container)
        wait_for(lambda: program_states(container).get("your-app") == "RUNNING", 60, "your-app not RUNNING", container)
        wait_for(lambda: request(container, 17860, "/", headers=bearer()).status == 200, 30, "no answer", container)
        assert request(container, 17860, "/", headers=bearer()).body == b"your app, served from the minimal manifest"
        assert request(container, 17860, "/").status == 401
        probe = "import llama_images_probe; print(llama_images_probe.VALUE)"
        assert exec_text(container, "/venv/main/bin/python", "-c", probe) == (0, "42\n")
        assert exec_text(container, "test", "-e", "/.provisioning_complete")[0] == 0
        container.restart(timeout=10)
        wait_answering(container, 1111, "/api/health")
        wait_for(lambda: boot_status(container).startswith("done on an earlier boot"), 30, "not skipped", container)
        wait_for(lambda: request(container, 17860, "/", headers=bearer()).status == 200, 60, "not back", container)


@pytest.fixture(scope="module")
def gated(main_build: Any, client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, FakeHub]]:
    """A container provisioned from the reference's gated-models example with a valid token."""
    assert main_build.returncode == 0, main_build.stdout[-3000:] + main_build.stderr[-3000:]
    mirror = reference_suite.require_mirror()
    manifests = tmp_path_factory.mktemp("manifests")
    for name in ("gated-models", "full-reference"):
        (manifests / f"{name}.yaml").write_text(reference_suite.example(mirror, name))
    (manifests / "broken.yaml").write_text("version: 1\nsettings:\n  venv: /venv/main\napt_packages: ffmpeg\n")
    with FakeHub(bridge_gateway(client), cdn=True, lfs=(".safetensors", ".bin")) as hub:
        hub.add_repo(
            "Comfy-Org/stable-diffusion-v1-5-archive", {"v1-5-pruned-emaonly-fp16.safetensors": b"sd15" * 50_000}
        )
        hub.add_repo("stabilityai/stable-diffusion-xl-base-1.0", {"sd_xl_base_1.0.safetensors": b"sdxl" * 80_000},
                     token=HF_TOKEN)  # fmt: skip
        hub.add_repo("org/extra", {"extra.bin": b"extra" * 1000})
        container = client.containers.run(
            CPU_IMAGE,
            detach=True,
            environment={
                "PROVISIONING_MANIFEST": "/manifests/gated-models.yaml",
                "HF_ENDPOINT": hub.url,
                "HF_TOKEN": HF_TOKEN,
                "HF_MODELS": "https://huggingface.co/org/extra/resolve/main/extra.bin|/workspace/models/extra.bin",
                "OPEN_BUTTON_TOKEN": TOKEN,
            },
            volumes={str(manifests): {"bind": "/manifests", "mode": "ro"}},
            ports=loopback_ports(),
        )
        try:
            wait_answering(container, 1111, "/api/health")
            wait_provisioned(container)
            yield container, hub
        finally:
            container.remove(force=True)


def sha256(container: Any, path: str) -> str:
    code, output = exec_text(container, "sha256sum", path)
    assert code == 0, output
    return output.split()[0]


def test_the_gated_models_example_downloads_the_gated_model_with_a_valid_token(gated: tuple[Any, FakeHub]) -> None:
    container, hub = gated
    checkpoints = "/workspace/models/checkpoints"
    assert sha256(container, f"{checkpoints}/sd15.safetensors") == hashlib.sha256(b"sd15" * 50_000).hexdigest()
    assert sha256(container, f"{checkpoints}/sdxl_base.safetensors") == hashlib.sha256(b"sdxl" * 80_000).hexdigest()
    assert sha256(container, "/workspace/models/extra.bin") == hashlib.sha256(b"extra" * 1000).hexdigest()
    assert exec_text(container, "test", "-e", f"{checkpoints}/sd15_fallback.safetensors")[0] != 0
    log = exec_text(container, "cat", "/var/log/provisioning.log")[1]
    assert "hf_token_valid: true" in log and "the image's downloader (llama-serving)" in log
    assert "env_merge: 1 download(s) from HF_MODELS" in log and "(sha256 checked)" in log
    cdn = [r for r in hub.requests if r.origin == "cdn"]
    assert cdn and all(r.authorization is None for r in cdn)  # the token goes to the hub only
    assert HF_TOKEN not in log and HF_TOKEN not in container.logs().decode()


def test_without_a_token_the_open_model_is_the_one_downloaded(gated: tuple[Any, FakeHub]) -> None:
    container, _ = gated
    code, said = exec_text(container, "env", "-u", "HF_TOKEN", "PROVISIONER_STATE_DIR=/tmp/another-state",
                           "provisioner", "/manifests/gated-models.yaml")  # fmt: skip
    assert code == 0, said
    assert "hf_token_valid: false (HF_TOKEN not set)" in said
    # The same URL as sd15.safetensors: downloaded once, linked.
    code, target = exec_text(container, "readlink", "/workspace/models/checkpoints/sd15_fallback.safetensors")
    assert (code, target.strip()) == (0, "/workspace/models/checkpoints/sd15.safetensors")


def test_the_full_reference_example_is_planned_in_full_and_a_broken_manifest_says_where(
    gated: tuple[Any, FakeHub],
) -> None:
    container, _ = gated
    plain = ["env", "-u", "HF_MODELS", "-u", "HF_TOKEN"]  # the gated container's own additions left out
    code, said = exec_text(container, *plain, "provisioner", "--dry-run", "/manifests/full-reference.yaml")
    assert code == 0, said
    for phase in ("extensions", "write_files", "apt", "git", "pip", "conda", "downloads", "services",
                  "write_files_late", "post_commands"):  # fmt: skip
        assert f"--- {phase}\n" in said, phase
    assert "[DRY RUN] Would install apt packages: ffmpeg, libsndfile1" in said
    assert said.count("[DRY RUN] Would download ") == 6
    assert "[DRY RUN] Would write the Supervisor program /etc/supervisor/conf.d/my-app.conf" in said
    assert exec_text(container, "test", "-e", "/etc/supervisor/conf.d/my-app.conf")[0] != 0
    code, said = exec_text(container, "provisioner", "/manifests/broken.yaml")
    assert code == 2
    assert "/manifests/broken.yaml:4: apt_packages: expected a list, found a string\n" in said
    assert "    fix: write a YAML list, e.g. [ffmpeg]\n" in said
