"""The shipped flavors and the matrix's `backend` key: the CUDA image matches its binaries, the
vulkan flavor is built, tagged and published like the CPU one (no Docker)."""

from __future__ import annotations

import json
import re

import pytest

from llama_images.core.bake import RenderOptions, bake_name, familiar, render
from llama_images.core.errors import MatrixError
from llama_images.core.matrix import parse_matrix
from llama_images.core.targets import ImageTarget, expand, select
from tests import shipped
from tests.conftest import REPO_ROOT
from tests.matrices import VALID, broken
from tests.pipeline.test_tasks import WORKFLOW_SETTINGS, invoke_env, workflow_env
from tests.shipped import SHIPPED

OPTIONS = RenderOptions(revision="abc", created="2026-12-01T00:00:00Z")
VULKAN = """\
  vulkan:
    source: debian-package
    backend: vulkan
    upstreams: [debian-forky]
    releases: [b11669]
    tag: "{release}-vulkan"
"""


def test_the_shipped_cuda_image_runs_the_binaries_on_their_own_cuda() -> None:
    cuda = [t for t in expand(SHIPPED) if isinstance(t, ImageTarget) and t.flavor.backend == "cuda"]
    assert cuda and all(t.base.upstream.cuda == t.binary_cuda for t in cuda)
    assert all(t.tag == f"{t.release}-cuda-{t.binary_cuda}" for t in cuda)  # the published convention
    assert all(t.base.upstream.image.startswith("nvidia/cuda:") for t in cuda)


def test_the_shipped_vulkan_flavor_is_the_cpu_flavor_plus_its_backend() -> None:
    vulkan, cpu = shipped.target("vulkan"), shipped.target("cpu")
    assert vulkan.tag == f"{cpu.release}-vulkan" and vulkan.flavor.backend == "vulkan"
    assert vulkan.platforms == cpu.platforms == ("linux/amd64", "linux/arm64")
    assert vulkan.base == cpu.base and cpu.flavor.backend == "cpu" and vulkan.release == cpu.release
    bake = render(SHIPPED, select(expand(SHIPPED), ["vulkan/*"]), OPTIONS)
    args = bake["target"][bake_name(vulkan.id)]["args"]
    # The cpu image's build arguments but the stage: BuildKit shares the cpu install layer.
    cpu_args = render(SHIPPED, select(expand(SHIPPED), ["cpu/*"]), OPTIONS)["target"][bake_name(cpu.id)]["args"]
    assert args == {**cpu_args, "LLAMA_CPP_FLAVOR": "vulkan"}
    assert args == {"BASE_IMAGE": familiar(cpu.base.image), "LLAMA_CPP_FLAVOR": "vulkan",
                    "LLAMA_CPP_VERSION": cpu.release}  # fmt: skip


def test_invoke_matrix_lists_the_vulkan_image() -> None:
    from tests.pipeline.test_tasks import invoke

    vulkan = shipped.target("vulkan")
    listed = invoke("matrix").stdout
    assert re.search(rf"^{re.escape(vulkan.id)} +{re.escape(vulkan.image)} ", listed, re.M)


def test_the_workflow_publishes_the_vulkan_image_on_native_runners() -> None:
    from llama_images.core.options import parse_selection
    from llama_images.core.workflow import job_values
    from tests.matrices import selected
    from tests.support.loopback import Answer, Loopback, release, serve, tag_path

    with serve(Loopback()) as api:
        api.route(tag_path("b9300"), Answer(body=release("b9300", shipped.tarballs())))
        result = invoke_env(workflow_env(api.url, TARGETS="*", LLAMA_CPP_VERSION="b9300"), "plan", "--workflow")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    jobs = {(j["target"], j["platform"], j["runner"]): j for j in plan["jobs"]}
    vulkan = shipped.target("vulkan", namespace="someone")  # a Debian package's build: not the run's release
    assert (vulkan.id, "linux/amd64", "ubuntu-24.04") in jobs
    arm64 = jobs[(vulkan.id, "linux/arm64", "ubuntu-24.04-arm")]
    assert plan["targets"][vulkan.id] == ["linux/amd64", "linux/arm64"]
    targets = selected(parse_selection(REPO_ROOT, job_values(arm64["selection"], WORKFLOW_SETTINGS)))
    assert [t.image for t in targets][-1] == vulkan.image


def test_the_backend_defaults_to_cpu_and_release_tarballs_are_cuda() -> None:
    matrix = parse_matrix(VALID + VULKAN)
    assert {name: f.backend for name, f in matrix.flavors.items()} == {"cuda": "cuda", "cpu": "cpu", "vulkan": "vulkan"}
    bake = render(matrix, select(expand(matrix), ["*"]), OPTIONS)
    images = [t["args"] for t in bake["target"].values() if "LLAMA_CPP_FLAVOR" in t["args"]]
    assert {args["LLAMA_CPP_FLAVOR"] for args in images} == {"cuda", "cpu", "vulkan"}
    for args in images:
        assert ("LLAMA_CPP_CUDA_VERSION" in args) == (args["LLAMA_CPP_FLAVOR"] == "cuda"), args


@pytest.mark.parametrize(
    ("text", "message", "fix"),
    [
        (
            VALID + VULKAN.replace("backend: vulkan", "backend: vulkn"),
            "matrix.yaml:40: flavors.vulkan.backend: unknown backend 'vulkn' for a debian-package flavor",
            "use one of: cpu, vulkan (did you mean 'vulkan'?)",
        ),
        (
            broken("    source: release-tarball\n", "    source: release-tarball\n    backend: vulkan\n"),
            "matrix.yaml:27: flavors.cuda.backend: backend 'vulkan' does not apply to release-tarball flavors",
            "use source: debian-package for Debian's cpu and vulkan backends",
        ),
    ],
)
def test_a_wrong_backend_is_named_with_its_line_and_the_fix(text: str, message: str, fix: str) -> None:
    with pytest.raises(MatrixError) as raised:
        parse_matrix(text)
    shown = str(raised.value)
    assert message in shown and fix in shown, shown
