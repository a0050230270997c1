"""The package's shape, read from its folders: `core/` is pure (no process, network, file or
environment access; it imports nothing outside the core but the standard library's pure parts
and PyYAML), `edges/` wrap the outside world and never call up into the task shell `cli/`, there
are no import cycles, and nothing finds project files from the package's own install location.
README.md's layout table says the same (its rows for the layers are LAYER_ROWS below)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "llama_images"
LAYERS = ("core", "edges", "cli")  # each may import the ones before it, never one after
# What each layer is, as README.md's layout table says it: what the tests below enforce (core: no
# I/O; edges: never import cli). A test compares the table with these rows, in LAYERS order.
LAYER_ROWS = {
    "core": "The pure core: model, targets, plans, bake file, reports; no I/O",
    "edges": "The I/O edges: docker, registries, GitHub, files; never call the task shell",
    "cli": "The task shell: options checked into one value, task bodies",
}
# Top-level files the layout table leaves out: they describe or configure the project.
NOT_IN_LAYOUT = {"README.md", "pyproject.toml", ".gitignore"}
# Standard library modules that talk to processes, the network, files or the environment.
IO_MODULES = {"subprocess", "socket", "urllib", "http", "os", "sys", "shutil", "tempfile", "secrets", "time",
              "configparser", "docker", "invoke", "requests"}  # fmt: skip
# Calls that read or write files: `open(...)`, and methods such as `path.read_bytes()`.
IO_FUNCTIONS = {"open", "print", "input"}
IO_METHODS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "mkdir", "unlink", "cwd", "home",
              "resolve", "exists", "is_file", "is_dir", "iterdir", "glob"}  # fmt: skip


def modules() -> dict[str, Path]:
    """`layer.module` -> its file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """What a module imports: `layer.module` (and `layer`) for the package's own, the top-level
    name otherwise; function-level imports included."""
    package = name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join([*package[: len(package) - (node.level - 1)], *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("llama_images."):
                base = node.module.removeprefix("llama_images.")
            else:
                found.add((node.module or "").split(".")[0])
                continue
            found.add(base)
            found.update(f"{base}.{alias.name}".lstrip(".") for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    known = modules()
    return {name: imports(name, path) & set(known) for name, path in known.items()}


def layer(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def test_every_module_lives_in_a_layer() -> None:
    stray = [name for name in modules() if layer(name) not in LAYERS and name != "__init__"]
    assert stray == [], f"put these in {', '.join(LAYERS)}: {stray}"


def test_the_core_is_pure() -> None:
    core = {name: path for name, path in modules().items() if layer(name) == "core"}
    assert len(core) > 10
    for name, path in core.items():
        found = imports(name, path)
        assert not found & IO_MODULES, f"{name} imports {found & IO_MODULES}"
        calls = [
            node.func for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(node, ast.Call)
        ]
        functions = {call.id for call in calls if isinstance(call, ast.Name)}
        methods = {call.attr for call in calls if isinstance(call, ast.Attribute)}
        assert not functions & IO_FUNCTIONS, f"{name} calls {functions & IO_FUNCTIONS}"
        assert not methods & IO_METHODS, f"{name} calls {methods & IO_METHODS}"


def test_layers_import_only_the_layers_below_them() -> None:
    for module, dependencies in graph().items():
        if layer(module) not in LAYERS:
            continue
        allowed = LAYERS[: LAYERS.index(layer(module)) + 1]
        upward = sorted(d for d in dependencies if layer(d) not in allowed)
        assert upward == [], f"{module} imports {upward}: {layer(module)} may use only {', '.join(allowed)}"


def test_the_architecture_check_sees_the_imports() -> None:
    """The graph is read correctly: known edges are found, so the checks above can fail."""
    found = graph()
    assert "core.errors" in found["core.matrix"]
    assert "core.plan" in found["edges.github"] or "core.releases" in found["edges.github"]
    assert {"edges.engine", "edges.registry"} <= found["cli.build"]


def test_no_import_cycles() -> None:
    dependencies = graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dependency in sorted(dependencies[module]):
            assert state.get(dependency) != "open", "import cycle: " + " -> ".join([*path, module, dependency])
            if dependency not in state:
                visit(dependency, [*path, module])
        state[module] = "done"

    for module in sorted(dependencies):
        if module not in state:
            visit(module, [])


def test_nothing_locates_project_files_from_the_install_location() -> None:
    for name, path in modules().items():
        assert "__file__" not in path.read_text(encoding="utf-8"), f"{name} uses __file__"


def test_the_benchmarks_are_not_shipped() -> None:
    assert not (PACKAGE / "bench").exists()
    assert (REPO_ROOT / "benchmarks" / "__main__.py").is_file()


def test_the_package_imports_only_its_runtime_dependencies() -> None:
    """pyproject.toml's `dependencies` are what the tasks import (the publishing workflow installs
    only those); the docker SDK, nox and the test tools are development dependencies."""
    declared = {
        re.split(r"[=<>~!;\[ ]", requirement, maxsplit=1)[0].lower()
        for requirement in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
            "dependencies"
        ]
    }
    distributions = importlib.metadata.packages_distributions()
    third_party = {
        name
        for module, path in modules().items()
        for name in imports(module, path)
        if "." not in name and name not in sys.stdlib_module_names and name not in LAYERS and name != "__future__"
    }
    used = {dist.lower() for name in third_party for dist in distributions.get(name, [name])}
    assert used == declared, f"imported {sorted(used)}, declared {sorted(declared)}"


def readme_layout() -> dict[str, str]:
    """README.md's layout table: each path a row names -> what the row says it holds."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for path_cell, meaning in re.findall(r"^\| (.+?) \| (.+?) \|$", section, re.MULTILINE):
        for path in re.findall(r"`([^`]+)`", path_cell):
            rows[path] = meaning
    return rows


def test_the_readme_layout_table_says_what_these_tests_check() -> None:
    rows = readme_layout()
    layers = [path for path in rows if path.startswith("src/llama_images/")]
    assert layers == [f"src/llama_images/{name}/" for name in LAYERS], "one row per layer, in import order"
    for name in LAYERS:
        assert rows[f"src/llama_images/{name}/"] == LAYER_ROWS[name]
    assert set(LAYER_ROWS) == set(LAYERS)


def test_the_readme_layout_table_has_a_row_for_every_part_of_the_repository() -> None:
    listed = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    tracked = set(listed.split())
    rows = readme_layout()
    top = {path.split("/", 1)[0] for path in tracked} - NOT_IN_LAYOUT
    missing = [entry for entry in sorted(top) if not any(row.rstrip("/").split("/", 1)[0] == entry for row in rows)]
    assert missing == [], f"add rows for {missing} to README.md's layout table"
    derivatives = {path.split("/")[1] for path in tracked if path.startswith("derivatives/")}
    assert {f"derivatives/{name}/" for name in derivatives} <= set(rows)
    stale = [row for row in rows if not any(path == row.rstrip("/") or path.startswith(row) for path in tracked)]
    assert stale == [], f"README.md's layout table names what the repository no longer has: {stale}"


# ---- the images' libraries ----------------------------------------------------------------------

BASE_LIB = REPO_ROOT / "base-image" / "ROOT" / "opt" / "llama-images" / "lib"
BASE_PACKAGES = ("llama_runtime", "llama_portal", "llama_provisioner")
DERIVATIVE_LIBS = sorted((REPO_ROOT / "derivatives").glob("*/ROOT/opt/llama-images/lib"))


def image_packages() -> dict[str, Path]:
    """Every package of the images' libraries -> its folder: the base's and each derivative's."""
    found = {path.name: path for path in sorted(BASE_LIB.iterdir()) if (path / "__init__.py").is_file()}
    for lib in DERIVATIVE_LIBS:
        found.update({path.name: path for path in sorted(lib.iterdir()) if (path / "__init__.py").is_file()})
    return found


def image_modules() -> dict[str, Path]:
    """`package.module` -> its file, for every module of the images' libraries."""
    found = {}
    for package, folder in image_packages().items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            found[".".join([package, *parts]).removesuffix(".__init__")] = path
    return found


def image_imports(name: str, path: Path, *, module_level: bool) -> set[str]:
    """What a module of the images imports, package-relative imports resolved: the module (and
    each name imported from it, which may be a module); function-level ones too unless
    `module_level`. An import under `if TYPE_CHECKING:` counts: it names a real dependency."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = ast.walk(tree) if not module_level else [
        node for top in tree.body for node in ([top] if not isinstance(top, ast.If) else ast.walk(top))
    ]  # fmt: skip
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join([*package[: len(package) - (node.level - 1)], *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def image_graph() -> dict[str, set[str]]:
    """Module -> the images' modules it imports at module level (a package's own __init__
    included: importing a module runs its package's)."""
    known = image_modules()
    graph_: dict[str, set[str]] = {}
    for name, path in known.items():
        found = image_imports(name, path, module_level=True)
        graph_[name] = {module for module in found if module in known and module != name}
    return graph_


def cycles(dependencies: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Each import circle, as the sorted names of its modules (strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[tuple[str, ...]] = set()

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for dependency in dependencies[module]:
            if dependency not in index:
                visit(dependency)
                low[module] = min(low[module], low[dependency])
            elif dependency in stack:
                low[module] = min(low[module], index[dependency])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for module in sorted(dependencies):
        if module not in index:
            visit(module)
    return found


def test_the_base_image_never_imports_a_derivative() -> None:
    """llama_runtime, llama_portal and llama_provisioner name no derivative's package, not even
    in a function: a derivative plugs into the base through its declarations (services.d)."""
    derivative_packages = set(image_packages()) - set(BASE_PACKAGES)
    assert {"llama_serving", "llama_worker"} <= derivative_packages
    upward = [
        f"{name} imports {found}"
        for name, path in image_modules().items()
        if name.split(".")[0] in BASE_PACKAGES
        for found in sorted(image_imports(name, path, module_level=False))
        if found.split(".")[0] in derivative_packages
    ]
    assert upward == [], "the base image must not know its derivatives: " + "; ".join(upward)


# What README.md's layout table says of the images: what the tests above and below enforce.
IMAGE_ROWS = {
    "base-image/": "The runtime every image stands on: proxy, portal, Jupyter, boot; never imports a derivative",
    "derivatives/llama-cpp/": (
        "The llama.cpp image: llama-server, its launcher and portal part, declared in `services.d`"
    ),
}


def test_the_readme_layout_table_says_what_the_image_checks_check() -> None:
    rows = readme_layout()
    assert {path: rows.get(path) for path in IMAGE_ROWS} == IMAGE_ROWS


def test_the_images_architecture_check_sees_the_imports() -> None:
    """The images' graph is read correctly (relative imports resolved), so the checks can fail."""
    found = image_graph()
    assert "llama_portal.parts" in found["llama_portal.api"]
    assert "llama_runtime.services" in found["llama_portal.parts"]
    assert "llama_serving.status" in found["llama_serving.portal_part"]
    assert "llama_portal.parts" in found["llama_serving.portal_part"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {("a", "b", "c")}


def test_no_image_library_has_an_import_circle() -> None:
    found = cycles(image_graph())
    assert found == set(), f"import circles: {sorted(found)}"


def test_the_base_images_tests_pass_with_only_the_bases_library() -> None:
    """tests/runtime, tests/portal and tests/provisioner import the base's packages alone: with
    the derivatives' libraries off the path they still pass (a derivative's package would fail
    to import)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
               f"pythonpath={BASE_LIB.relative_to(REPO_ROOT)}", "tests/runtime", "tests/portal",
               "tests/provisioner"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "error" not in done.stdout.splitlines()[-1]
