"""Each service of the images is one unit: its declaration (/etc/llama-images/services.d/<name>.toml)
names its files (`files`: its Supervisor program, start script, boot step, code), which stay at
the reference image's paths. Every program, start script, boot step and runtime package in the
overlays belongs to a declared service or to the runtime's own parts listed here: a derivative
adds a service by adding its declaration and the files it names."""

from __future__ import annotations

import configparser
from pathlib import Path, PurePosixPath

import pytest
from llama_runtime.services import Service, load_services

from tests.conftest import REPO_ROOT

BASE = REPO_ROOT / "base-image/ROOT"
DERIVATIVES = sorted((REPO_ROOT / "derivatives").glob("*/ROOT"))
# The runtime's own parts, which are not services (no port of their own): its boot, the proxy and
# its login verifier, the log copier, first-boot packages and provisioning, and their helpers.
RUNTIME_OWN = {
    "boot": ["/opt/boot/boot.sh"],
    "packages": ["/etc/boot.d/10-packages.sh"],
    "environment": ["/etc/boot.d/05-environment.sh"],  # PATH and the thread caps in /etc/environment
    "cron": ["/etc/supervisor/conf.d/cron.conf", "/opt/supervisor-scripts/cron.sh"],
    "proxy": ["/etc/supervisor/conf.d/proxy.conf", "/opt/supervisor-scripts/proxy.sh"],
    "auth": ["/etc/supervisor/conf.d/auth.conf"],
    "logs": ["/etc/supervisor/conf.d/logs.conf"],
    "provisioning": [
        "/etc/supervisor/conf.d/provisioning.conf",
        "/opt/supervisor-scripts/provisioning.sh",
        "/etc/boot.d/20-provisioning.sh",
        "/opt/llama-images/lib/llama_provisioner",
    ],
    "runtime": [
        "/opt/llama-images/bin/llama-runtime",
        "/opt/llama-images/lib/llama_runtime",
        "/opt/supervisor-scripts/after-api.sh",  # the API's head start, for the programs not on its path
        "/usr/local/bin/supervisorctl",  # takes the reference image's program names
    ],
}
# Where a service's parts live: the places a fork of the reference image edits.
PART_PLACES = (
    "etc/supervisor/conf.d",
    "opt/supervisor-scripts",
    "etc/boot.d",
    "opt/llama-images/bin",
    "opt/llama-images/lib",
)


def declared(overlay: Path) -> tuple[Service, ...]:
    loaded = load_services(overlay / "etc/llama-images/services.d", overlay / "no-overrides", {})
    assert loaded.problems == (), loaded.problems
    return loaded.services


def parts(overlay: Path) -> list[str]:
    """The overlay's programs, start scripts, boot steps, commands and Python packages, as paths in
    the image (a package is its directory)."""
    found = []
    for place in PART_PLACES:
        for path in sorted((overlay / place).glob("*")):
            if path.name != "__pycache__":
                found.append(f"/{path.relative_to(overlay).as_posix()}")
    return found


def in_overlay(overlay: Path, image_path: str) -> Path:
    return overlay / PurePosixPath(image_path).relative_to("/")


def owners(overlay: Path, extra: dict[str, list[str]]) -> dict[str, list[str]]:
    """Image path -> who names it: the overlay's services, and `extra`."""
    found: dict[str, list[str]] = {}
    for service in declared(overlay):
        for file in service.files:
            found.setdefault(file, []).append(f"service {service.name}")
    for name, files in extra.items():
        for file in files:
            found.setdefault(file, []).append(name)
    return found


OVERLAYS = [pytest.param(BASE, RUNTIME_OWN, id="base-image")] + [
    pytest.param(overlay, {}, id=overlay.parent.name) for overlay in DERIVATIVES
]


@pytest.mark.parametrize(("overlay", "own"), OVERLAYS)
def test_every_file_a_service_names_is_in_its_image_s_overlay(overlay: Path, own: dict[str, list[str]]) -> None:
    assert declared(overlay), f"no service declared in {overlay}"
    for service in declared(overlay):
        assert service.files, f"{service.name}.toml names no files"
        for file in service.files:
            assert in_overlay(overlay, file).exists(), f"{service.name}.toml names {file}, not in {overlay}"
    for name, files in own.items():
        for file in files:
            assert in_overlay(overlay, file).exists(), f"{name}: {file} is not in {overlay}"


@pytest.mark.parametrize(("overlay", "own"), OVERLAYS)
def test_every_program_script_and_boot_step_belongs_to_one_service_or_to_the_runtime(
    overlay: Path, own: dict[str, list[str]]
) -> None:
    named = owners(overlay, own)
    unowned = [part for part in parts(overlay) if part not in named]
    assert unowned == [], f"in {overlay}, not named by a service's `files` (or the runtime's own list): {unowned}"
    shared = {file: names for file, names in named.items() if len(names) > 1}
    assert shared == {}, f"named twice: {shared}"


@pytest.mark.parametrize(("overlay", "own"), OVERLAYS)
def test_each_service_s_program_is_its_own_and_starts_its_start_script(
    overlay: Path, own: dict[str, list[str]]
) -> None:
    for service in declared(overlay):
        confs = [file for file in service.files if file.startswith("/etc/supervisor/conf.d/")]
        conf = configparser.RawConfigParser(inline_comment_prefixes=(";",), interpolation=None)
        conf.read([in_overlay(overlay, file) for file in confs])
        assert conf.has_section(f"program:{service.program}"), f"{service.name}: no [program:{service.program}]"
        command = conf.get(f"program:{service.program}", "command")
        for file in service.files:
            if file.startswith("/opt/supervisor-scripts/"):
                assert file in command.split(), f"{service.name}: its program does not run {file}: {command}"


def test_a_derivative_adds_a_service_by_adding_a_file(tmp_path: Path) -> None:
    """A derivative's new service is checked like the shipped ones: its declaration names its
    program, and a program nobody names is found."""
    overlay = tmp_path / "ROOT"
    (overlay / "etc/llama-images/services.d").mkdir(parents=True)
    (overlay / "etc/supervisor/conf.d").mkdir(parents=True)
    (overlay / "opt/supervisor-scripts").mkdir(parents=True)
    (overlay / "etc/llama-images/services.d/comfy.toml").write_text(
        'name = "comfy"\nlabel = "ComfyUI"\nexternal_port = 8188\ninternal_port = 18188\npath = "/"\n'
        'program = "comfy"\nfiles = ["/etc/supervisor/conf.d/comfy.conf", "/opt/supervisor-scripts/comfy.sh"]\n',
        encoding="utf-8",
    )
    (overlay / "etc/supervisor/conf.d/comfy.conf").write_text(
        "[program:comfy]\ncommand=/opt/supervisor-scripts/comfy.sh\n", encoding="utf-8"
    )
    (overlay / "opt/supervisor-scripts/comfy.sh").write_text("#!/bin/bash\n", encoding="utf-8")
    test_every_file_a_service_names_is_in_its_image_s_overlay(overlay, {})
    test_every_program_script_and_boot_step_belongs_to_one_service_or_to_the_runtime(overlay, {})
    test_each_service_s_program_is_its_own_and_starts_its_start_script(overlay, {})
    (overlay / "opt/supervisor-scripts/forgotten.sh").write_text("#!/bin/bash\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"forgotten\.sh"):
        test_every_program_script_and_boot_step_belongs_to_one_service_or_to_the_runtime(overlay, {})
