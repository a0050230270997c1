"""Reading YAML while keeping line numbers, so every problem can point at `file:line key`.

PyYAML's composer gives nodes with source marks; a `NodeReader` walks a mapping node, reads
typed values from it and records a `Problem` (instead of raising) for each thing that is wrong,
so a user sees every mistake of a file at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from .errors import MatrixError, Problem, did_you_mean

STR_TAG = "tag:yaml.org,2002:str"
NULL_TAG = "tag:yaml.org,2002:null"
# Versions such as 12.9 may be written unquoted; YAML then resolves them to numbers, but the
# node keeps the text as written ("13.10" stays "13.10"), which is what a version means.
TEXT_LIKE_TAGS = frozenset({STR_TAG, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})


@dataclass
class Problems:
    """Problems found in one file, collected while reading it."""

    file: str
    found: list[Problem] = field(default_factory=list)

    def add(self, node: yaml.Node, key: str, message: str, fix: str) -> None:
        self.found.append(Problem(self.file, node.start_mark.line + 1, key, message, fix))

    def at_line(self, line: int, message: str, fix: str) -> None:
        self.found.append(Problem(self.file, line, "", message, fix))

    def raise_if_any(self) -> None:
        if self.found:
            raise MatrixError(sorted(self.found, key=lambda p: p.line))


# A matrix is a few dozen nodes; aliases may repeat a list, never blow the tree up (an "alias
# bomb" of 500 bytes expands to billions of nodes when walked).
MAX_EXPANDED_NODES = 20_000


def compose(text: str, problems: Problems) -> yaml.Node | None:
    """Parse YAML text into a node tree; anything wrong becomes a problem with its line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        context = ""
        if exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
            context = f" ({exc.context} at line {exc.context_mark.line + 1})"
        problems.at_line(
            line,
            f"not valid YAML: {exc.problem or exc}{context}",
            "check indentation, quoting and ':' after each key near that line",
        )
        return None
    except yaml.reader.ReaderError as exc:
        # Control characters and the like: PyYAML reports a character offset, not a mark.
        line = text.count("\n", 0, exc.position) + 1
        problems.at_line(
            line,
            f"character U+{exc.character:04X} at offset {exc.position} is not allowed in YAML",
            "remove control characters; a matrix file is plain UTF-8 text",
        )
        return None
    except yaml.YAMLError as exc:
        problems.at_line(1, f"not valid YAML: {exc}", "check the file's syntax")
        return None
    except RecursionError:
        problems.at_line(1, "the YAML is nested too deeply to read", "a matrix is a few levels deep: check the file")
        return None
    if root is not None and not expansion_is_bounded(root, problems):
        return None
    return root


def expansion_is_bounded(root: yaml.Node, problems: Problems) -> bool:
    """False (with a problem) when aliases make the tree cyclic or larger than MAX_EXPANDED_NODES.

    Sizes are counted once per distinct node, so the check itself stays linear in the file.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int | None:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            problems.add(node, "", "an alias refers to the collection that contains it", "remove the recursive alias")
            return None
        open_nodes.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        total = 1
        for child in children:
            child_size = size(child)
            if child_size is None:
                return None
            total += child_size
            if total > MAX_EXPANDED_NODES:
                problems.add(
                    node,
                    "",
                    f"aliases expand this file to more than {MAX_EXPANDED_NODES} values",
                    "write the values out, or use fewer nested aliases",
                )
                return None
        open_nodes.discard(key)
        sizes[key] = total
        return total

    try:
        return size(root) is not None
    except RecursionError:
        problems.at_line(1, "the YAML is nested too deeply to read", "a matrix is a few levels deep: check the file")
        return False


def kind_of(node: yaml.Node) -> str:
    """How a node reads to a person: 'a mapping', 'a list', 'a number', ..."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return {
        STR_TAG: "a string",
        NULL_TAG: "nothing (null)",
        "tag:yaml.org,2002:int": "a number",
        "tag:yaml.org,2002:float": "a number",
        "tag:yaml.org,2002:bool": "a boolean",
    }.get(str(node.tag), "a scalar")


def join_key(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


class NodeReader:
    """Typed access to one YAML mapping; unknown keys are reported by `finish()`."""

    def __init__(self, node: yaml.Node, path: str, problems: Problems, anchor: yaml.Node | None = None) -> None:
        self.node = node
        # Where "missing key" points: the line of this mapping's own key, not its first entry.
        self.anchor = anchor or node
        self.path = path
        self.problems = problems
        self.entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        self.used: set[str] = set()
        if not isinstance(node, yaml.MappingNode):
            problems.add(
                node, path, f"expected a mapping of keys, found {kind_of(node)}", "write 'key: value' lines here"
            )
            return
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in self.entries:
                problems.add(
                    key_node, join_key(path, key), "key given twice", "remove one of them: YAML keeps only the last"
                )
            self.entries[key] = (key_node, value_node)

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.node, yaml.MappingNode)

    def keys(self) -> list[str]:
        return list(self.entries)

    def mapping_keys(self, key: str) -> list[str]:
        """Keys of a nested mapping, without reading (or validating) it."""
        node = self.entries.get(key, (None, None))[1]
        if isinstance(node, yaml.MappingNode):
            return [str(k.value) for k, _ in node.value]
        return []

    def key_node(self, key: str) -> yaml.Node:
        return self.entries[key][0]

    def child(self, key: str) -> yaml.Node | None:
        """The value node of `key`, marking it as known; None (and a problem) when missing."""
        self.used.add(key)
        if key not in self.entries:
            return None
        return self.entries[key][1]

    def require(self, key: str, fix: str) -> yaml.Node | None:
        node = self.child(key)
        if node is None and self.is_mapping:
            self.problems.add(self.anchor, join_key(self.path, key), "required key is missing", fix)
        return node

    def text(
        self,
        key: str,
        *,
        pattern: re.Pattern[str] | None = None,
        expected: str = "",
        fix: str = "",
        required: bool = True,
        default: str | None = None,
    ) -> str | None:
        node = self.require(key, fix) if required else self.child(key)
        if node is None:
            return default
        return read_text(node, join_key(self.path, key), self.problems, pattern=pattern, expected=expected, fix=fix)

    def text_list(
        self,
        key: str,
        *,
        pattern: re.Pattern[str] | None = None,
        expected: str = "",
        fix: str = "",
        required: bool = True,
        default: tuple[str, ...] = (),
    ) -> tuple[str, ...] | None:
        node = self.require(key, fix) if required else self.child(key)
        if node is None:
            return default
        return read_text_list(
            node, join_key(self.path, key), self.problems, pattern=pattern, expected=expected, fix=fix
        )

    def mapping(self, key: str, fix: str, *, required: bool = True) -> NodeReader | None:
        node = self.require(key, fix) if required else self.child(key)
        if node is None:
            return None
        return NodeReader(node, join_key(self.path, key), self.problems, self.entries[key][0])

    def finish(self, allowed_hint: str = "") -> None:
        """Report keys that nothing read: typos, with the closest known key as a suggestion."""
        for key, (key_node, _) in self.entries.items():
            if key in self.used:
                continue
            known = sorted(self.used)
            hint = did_you_mean(key, known)
            fix = f"remove it or rename it{hint}; known keys here: {', '.join(known)}"
            if allowed_hint:
                fix = f"{allowed_hint}{hint}"
            self.problems.add(key_node, join_key(self.path, key), f"unknown key '{key}'", fix)


def read_text(
    node: yaml.Node,
    path: str,
    problems: Problems,
    *,
    pattern: re.Pattern[str] | None = None,
    expected: str = "",
    fix: str = "",
) -> str | None:
    """A scalar as the text written in the file, checked against `pattern`."""
    if not isinstance(node, yaml.ScalarNode) or node.tag not in TEXT_LIKE_TAGS:
        problems.add(node, path, f"expected {expected or 'a string'}, found {kind_of(node)}", fix or "write a string")
        return None
    value = str(node.value)
    if pattern is not None and not pattern.fullmatch(value):
        problems.add(node, path, f"'{value}' is not {expected}", fix)
        return None
    return value


def read_text_list(
    node: yaml.Node,
    path: str,
    problems: Problems,
    *,
    pattern: re.Pattern[str] | None = None,
    expected: str = "",
    fix: str = "",
) -> tuple[str, ...] | None:
    """A non-empty list of distinct strings; a single string is not silently promoted."""
    if not isinstance(node, yaml.SequenceNode):
        example = node.value if isinstance(node, yaml.ScalarNode) and node.value else "..."
        problems.add(node, path, f"expected a list, found {kind_of(node)}", f"write a YAML list, e.g. [{example}]")
        return None
    if not node.value:
        problems.add(node, path, "the list is empty", fix or "list at least one entry")
        return None
    values: list[str] = []
    ok = True
    for index, item in enumerate(node.value):
        value = read_text(item, join_key(path, index), problems, pattern=pattern, expected=expected, fix=fix)
        if value is None:
            ok = False
            continue
        if value in values:
            problems.add(item, join_key(path, index), f"'{value}' is listed twice", "remove the repeated entry")
            ok = False
            continue
        values.append(value)
    return tuple(values) if ok else None
