"""The package's shape: a pure core (matrix, targets, bake rendering, release and publishing
decisions) that imports no I/O, edges around it, no import cycles, and nothing that finds project
files from the package's own install location."""

from __future__ import annotations

import ast

from .conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "llama_images"
CORE = {"errors", "model", "yamlnodes", "matrix", "targets", "bake", "releases", "options", "plan", "publishing",
        "report", "workflow", "tag_state"}  # fmt: skip
# Modules that talk to processes, the network or the engine.
IO_MODULES = {"subprocess", "socket", "urllib", "http", "requests", "docker", "invoke", "shutil", "tempfile"}
IO_PACKAGE_MODULES = {
    "engine", "buildx", "registry", "upstream_images", "github", "web", "gitinfo", "pipcert", "cli", "tasks"
}  # fmt: skip


def imports() -> dict[str, set[str]]:
    """Module -> everything it imports, function-level imports included."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    found.update([node.module] if node.module else [a.name for a in node.names])
                elif node.module:
                    found.add(node.module.split(".")[0])
        graph[path.stem] = found
    return graph


def test_core_modules_import_no_io() -> None:
    graph = imports()
    assert set(graph) >= CORE
    for module in CORE:
        assert not graph[module] & IO_MODULES, f"{module} imports {graph[module] & IO_MODULES}"
        assert not graph[module] & IO_PACKAGE_MODULES, f"{module} imports {graph[module] & IO_PACKAGE_MODULES}"


def test_no_import_cycles() -> None:
    graph = {module: found & set(imports()) for module, found in imports().items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dependency in sorted(graph[module]):
            assert state.get(dependency) != "open", "import cycle: " + " -> ".join([*path, module, dependency])
            if dependency not in state:
                visit(dependency, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_nothing_locates_project_files_from_the_install_location() -> None:
    for path in PACKAGE.glob("*.py"):
        assert "__file__" not in path.read_text(encoding="utf-8"), f"{path.name} uses __file__"
