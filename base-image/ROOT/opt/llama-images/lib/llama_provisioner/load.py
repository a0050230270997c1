"""Reading a manifest: YAML text -> `Manifest`, every problem at once, each naming the file, the
line and the key and saying how to fix it. `${VAR}`, `${VAR:-default}` and `${VAR:=default}` in
any string are expanded from the environment first, as the reference image does (a default is
used only when the variable is unset). A problem quotes what the file says, never an expanded
value (it may be a token). Unknown keys are warnings, as there: a manifest written for a newer
reference still runs.

Then what the environment adds (the reference's conventions): PROVISIONING_DOWNLOADS,
PROVISIONING_GIT_REPOS, PROVISIONING_APT, PROVISIONING_PIP, PROVISIONING_CONDA,
PROVISIONING_POST_COMMANDS, the `env_merge` variables, and PROVISIONER_* settings.

Pure (given the text and the environment); PyYAML from the portal's pinned environment.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from .model import (
    CONDITIONS,
    ENV_MERGE_TARGETS,
    FAILURE_ACTIONS,
    PIP_TOOLS,
    Auth,
    Concurrency,
    CondaBlock,
    ConditionalDownloads,
    Download,
    Extension,
    FileWrite,
    GitRepo,
    Manifest,
    OnFailure,
    PipBlock,
    Retry,
    ServiceSpec,
    Settings,
)

STR_TAG = "tag:yaml.org,2002:str"
NULL_TAG = "tag:yaml.org,2002:null"
TEXT_LIKE_TAGS = frozenset({STR_TAG, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})
MAX_EXPANDED_NODES = 50_000
ENV_PATTERN = re.compile(r"\$\{([^}]+)\}")
SERVICE_NAME = re.compile(r"[A-Za-z0-9_-]+")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
OCTAL_MODE = re.compile(r"0?[0-7]{3,4}")
SHA256 = re.compile(r"[0-9a-fA-F]{64}")
MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a manifest: where, what and how to fix it."""

    source: str
    line: int
    key: str
    message: str
    fix: str
    warning: bool = False

    def __str__(self) -> str:
        key = f" {self.key}:" if self.key else ""
        kind = "warning: " if self.warning else ""
        return f"{self.source}:{self.line}:{key} {kind}{self.message}\n    fix: {self.fix}"


class ManifestError(Exception):
    """A manifest that cannot run: every error found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(problems)
        heading = "1 problem" if count == 1 else f"{count} problems"
        super().__init__(f"{heading} in the manifest:\n" + "\n".join(str(p) for p in problems))


def expand(text: str, env: Mapping[str, str]) -> str:
    """`${VAR}`, `${VAR:-default}`, `${VAR:=default}`: the variable's value, or the default
    (empty without one) when it is unset."""

    def one(match: re.Match[str]) -> str:
        expression = match.group(1)
        for separator in (":-", ":="):
            if separator in expression:
                name, default = expression.split(separator, 1)
                return env.get(name, default)
        return env.get(expression, "")

    return ENV_PATTERN.sub(one, text)


def did_you_mean(word: str, choices: list[str]) -> str:
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{found[0]}'?)" if found else ""


def join(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def kind_of(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return {
        STR_TAG: "a string",
        NULL_TAG: "nothing",
        "tag:yaml.org,2002:int": "a number",
        "tag:yaml.org,2002:float": "a number",
        "tag:yaml.org,2002:bool": "a boolean",
    }.get(str(node.tag), "a scalar")


Field = Callable[[yaml.Node, str], Any]
T = TypeVar("T")
MISSING = object()


class Reader:
    """Reads nodes into values, recording a Problem (never raising) for each thing wrong."""

    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env
        self.problems: list[Problem] = []

    def add(self, node: yaml.Node | None, key: str, message: str, fix: str, warning: bool = False) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.problems.append(Problem(self.source, line, key, message, fix, warning))

    # -- scalars ------------------------------------------------------------------------------

    def text(self, node: yaml.Node, key: str) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG:
            return ""
        if not isinstance(node, yaml.ScalarNode) or node.tag not in TEXT_LIKE_TAGS:
            fix = 'quote it: key: "yes"' if str(node.tag).endswith(":bool") else "write a string"
            self.add(node, key, f"expected a string, found {kind_of(node)}", fix)
            return None
        return expand(str(node.value), self.env) if node.tag == STR_TAG else str(node.value)

    def path(self, node: yaml.Node, key: str) -> str | None:
        value = self.text(node, key)
        if value is not None and value and not value.startswith("/"):
            self.add(node, key, f"'{node.value}' is not an absolute path", "write a path starting with '/'")
            return None
        return value

    def integer(self, node: yaml.Node, key: str, minimum: int = 0) -> int | None:
        value = self.text(node, key)
        if value is None:
            return None
        if not value.strip().isdigit() or int(value) < minimum:
            self.add(node, key, f"'{node.value}' is not a whole number >= {minimum}", f"write e.g. {max(minimum, 3)}")
            return None
        return int(value)

    def number(self, node: yaml.Node, key: str, minimum: float = 0.0) -> float | None:
        value = self.text(node, key)
        if value is None:
            return None
        try:
            number = float(value)
        except ValueError:
            number = minimum - 1
        if not number >= minimum:
            self.add(node, key, f"'{node.value}' is not a number >= {minimum:g}", "write e.g. 2 or 0.5")
            return None
        return number

    def boolean(self, node: yaml.Node, key: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode):
            word = expand(str(node.value), self.env).strip().lower() if node.tag == STR_TAG else str(node.value).lower()
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
        self.add(node, key, f"expected true or false, found {kind_of(node)} '{getattr(node, 'value', '')}'",
                 "write true or false")  # fmt: skip
        return None

    def choice(self, node: yaml.Node, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.text(node, key)
        if value is not None and value not in choices:
            hint = did_you_mean(value, list(choices))
            self.add(node, key, f"'{node.value}' is not one of {', '.join(choices)}", f"write one of them{hint}")
            return None
        return value

    def matching(self, node: yaml.Node, key: str, pattern: re.Pattern[str], what: str, fix: str) -> str | None:
        value = self.text(node, key)
        if value is not None and not pattern.fullmatch(value):
            self.add(node, key, f"'{node.value}' is not {what}", fix)
            return None
        return value

    # -- collections ----------------------------------------------------------------------------

    def items(self, node: yaml.Node, key: str, single_is_list: bool = False) -> list[yaml.Node] | None:
        """A list's items; nothing (null) is an empty list; with `single_is_list` one mapping
        stands for a list of one (the reference's old pip_packages/conda_packages form)."""
        if isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG:
            return []
        if single_is_list and isinstance(node, yaml.MappingNode):
            return [node]
        if not isinstance(node, yaml.SequenceNode):
            example = node.value if isinstance(node, yaml.ScalarNode) and node.value else "..."
            self.add(node, key, f"expected a list, found {kind_of(node)}", f"write a YAML list, e.g. [{example}]")
            return None
        return list(node.value)

    def text_list(self, node: yaml.Node, key: str) -> tuple[str, ...] | None:
        items = self.items(node, key)
        if items is None:
            return None
        values = [self.text(item, join(key, index)) for index, item in enumerate(items)]
        if any(value is None for value in values):
            return None
        return tuple(value for value in values if value)

    def text_map(self, node: yaml.Node, key: str) -> tuple[tuple[str, str], ...] | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG:
            return ()
        if not isinstance(node, yaml.MappingNode):
            self.add(node, key, f"expected a mapping, found {kind_of(node)}", "write NAME: value lines here")
            return None
        pairs = []
        ok = True
        for key_node, value_node in node.value:
            name = str(key_node.value)
            if not ENV_NAME.fullmatch(name):
                self.add(key_node, join(key, name), f"'{name}' is not a variable name",
                         "use letters, digits and '_', not starting with a digit")  # fmt: skip
                ok = False
                continue
            value = self.text(value_node, join(key, name))
            if value is None:
                ok = False
                continue
            pairs.append((name, value))
        return tuple(pairs) if ok else None

    def mapping(
        self, node: yaml.Node, key: str, known: Mapping[str, Field], required: tuple[str, ...] = ()
    ) -> dict[str, Any] | None:
        """The known keys' values (a problem for each bad one); unknown keys are warnings."""
        if isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG and not required:
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.add(node, key, f"expected a mapping, found {kind_of(node)}", "write 'key: value' lines here")
            return None
        values: dict[str, Any] = {}
        seen: set[str] = set()
        ok = True
        for key_node, value_node in node.value:
            name = str(key_node.value)
            where = join(key, name)
            if name in seen:
                self.add(key_node, where, "key given twice", "remove one of them: YAML keeps only the last")
                ok = False
            seen.add(name)
            if name not in known:
                hint = did_you_mean(name, list(known))
                fix = f"remove it or rename it{hint}; known keys here: {', '.join(known)}"
                self.add(key_node, where, f"unknown key '{name}' is ignored", fix, warning=True)
                continue
            value = known[name](value_node, where)
            if value is None:
                ok = False
                continue
            values[name] = value
        for name in required:
            if name not in values and name not in seen:
                self.add(node, join(key, name), "required key is missing", f"add '{name}: ...' to this entry")
                ok = False
        return values if ok else None

    def objects(self, node: yaml.Node, key: str, read: Callable[[yaml.Node, str], Any], single: bool = False) -> Any:
        items = self.items(node, key, single_is_list=single)
        if items is None:
            return None
        values = [read(item, join(key, index)) for index, item in enumerate(items)]
        return None if any(value is None for value in values) else tuple(values)


# ---- the sections ------------------------------------------------------------------------------


def section_readers(r: Reader) -> dict[str, Field]:
    def settings(node: yaml.Node, key: str) -> Settings | None:
        concurrency_keys: dict[str, Field] = {
            "hf_downloads": lambda n, k: r.integer(n, k, 1),
            "wget_downloads": lambda n, k: r.integer(n, k, 1),
        }
        retry_keys: dict[str, Field] = {
            "max_attempts": lambda n, k: r.integer(n, k, 1),
            "initial_delay": lambda n, k: r.number(n, k, 0),
            "backoff_multiplier": lambda n, k: r.number(n, k, 1),
        }
        found = r.mapping(node, key, {
            "venv": r.text,
            "conda_env": r.text,
            "log_file": r.path,
            "concurrency": lambda n, k: wrap(r.mapping(n, k, concurrency_keys), Concurrency),
            "retry": lambda n, k: wrap(r.mapping(n, k, retry_keys), Retry),
        })  # fmt: skip
        return wrap(found, Settings)

    def auth(node: yaml.Node, key: str) -> Auth | None:
        def provider(n: yaml.Node, k: str) -> str | None:
            found = r.mapping(
                n,
                k,
                {
                    "token_env": lambda n2, k2: r.matching(
                        n2, k2, ENV_NAME, "a variable name", "write the variable that holds the token, e.g. HF_TOKEN"
                    )
                },
            )
            return None if found is None else found.get("token_env", "")  # fmt: skip

        found = r.mapping(node, key, {"huggingface": provider, "civitai": provider})
        if found is None:
            return None
        names = {"huggingface": "huggingface_token_env", "civitai": "civitai_token_env"}
        return Auth(**{names[k]: v for k, v in found.items() if v})

    def on_failure(node: yaml.Node, key: str) -> OnFailure | None:
        found = r.mapping(node, key, {
            "action": lambda n, k: r.choice(n, k, FAILURE_ACTIONS),
            "max_retries": lambda n, k: r.integer(n, k, 0),
            "retry_delay": lambda n, k: r.number(n, k, 0),
            "webhook": url_or_empty,
            "webhook_on_success": r.boolean,
        })  # fmt: skip
        return wrap(found, OnFailure)

    def url_or_empty(node: yaml.Node, key: str) -> str | None:
        value = r.text(node, key)
        if value and not re.match(r"https?://", value, re.I):
            r.add(node, key, f"'{node.value}' is not an http(s) URL", "write https://... or leave it out")
            return None
        return value

    def url(node: yaml.Node, key: str) -> str | None:
        value = r.text(node, key)
        if value is not None and not (re.match(r"https?://", value, re.I) and urlsplit(value).netloc):
            r.add(node, key, f"'{node.value}' is not an http(s) URL", "write the URL in full, https://host/path")
            return None
        return value

    def file_write(node: yaml.Node, key: str) -> FileWrite | None:
        found = r.mapping(node, key, {
            "path": r.path,
            "content": r.text,
            "permissions": lambda n, k: r.matching(n, k, OCTAL_MODE, "an octal mode", 'write it quoted, e.g. "0644"'),
            "owner": r.text,
        }, required=("path",))  # fmt: skip
        return wrap(found, FileWrite)

    def pip_block(node: yaml.Node, key: str) -> PipBlock | None:
        found = r.mapping(node, key, {
            "packages": r.text_list,
            "tool": lambda n, k: r.choice(n, k, PIP_TOOLS),
            "args": r.text,
            "requirements": r.text_list,
            "venv": r.text,
            "python": r.text,
        })  # fmt: skip
        return wrap(found, PipBlock)

    def conda_block(node: yaml.Node, key: str) -> CondaBlock | None:
        found = r.mapping(node, key, {
            "packages": r.text_list, "channels": r.text_list, "args": r.text, "env": r.text, "python": r.text,
        })  # fmt: skip
        return wrap(found, CondaBlock)

    def git_repo(node: yaml.Node, key: str) -> GitRepo | None:
        found = r.mapping(node, key, {
            "url": r.text,
            "dest": r.path,
            "ref": r.text,
            "recursive": r.boolean,
            "pull_if_exists": r.boolean,
            "post_commands": r.text_list,
        }, required=("url",))  # fmt: skip
        if found is None:
            return None
        if not found.get("dest"):
            found["dest"] = repo_dest(found["url"], r.env)
        return GitRepo(**found)

    def download(node: yaml.Node, key: str) -> Download | None:
        found = r.mapping(node, key, {
            "url": url,
            "dest": r.text,
            "sha256": lambda n, k: r.matching(n, k, SHA256, "a sha256 (64 hex digits)", "copy it from the hub's page"),
        }, required=("url",))  # fmt: skip
        return wrap(found, Download)

    def conditional(node: yaml.Node, key: str) -> ConditionalDownloads | None:
        found = r.mapping(node, key, {
            "when": lambda n, k: r.choice(n, k, CONDITIONS),
            "downloads": lambda n, k: r.objects(n, k, download),
            "else_downloads": lambda n, k: r.objects(n, k, download),
        }, required=("when",))  # fmt: skip
        return wrap(found, ConditionalDownloads)

    def env_merge(node: yaml.Node, key: str) -> tuple[tuple[str, str], ...] | None:
        pairs = r.text_map(node, key)
        if pairs is None:
            return None
        for name, target in pairs:
            if target not in ENV_MERGE_TARGETS:
                r.add(node, join(key, name), f"'{target}' is not a target env_merge supports",
                      f"write {name}: downloads")  # fmt: skip
                return None
        return pairs

    def extension(node: yaml.Node, key: str) -> Extension | None:
        found = r.mapping(node, key, {
            "module": lambda n, k: r.matching(n, k, MODULE, "a Python module name", "write e.g. provisioner_comfyui"),
            "config": lambda n, k: any_value(r, n, k),
            "enabled": r.boolean,
        }, required=("module",))  # fmt: skip
        return wrap(found, Extension)

    def service(node: yaml.Node, key: str) -> ServiceSpec | None:
        found = r.mapping(node, key, {
            "name": lambda n, k: r.matching(n, k, SERVICE_NAME, "a service name",
                                            "use letters, digits, '-' and '_' only"),
            "command": r.text,
            "portal_search_term": r.text,
            "skip_on_serverless": r.boolean,
            "venv": r.text,
            "workdir": r.path,
            "pre_commands": r.text_list,
            "wait_for_provisioning": r.boolean,
            "environment": r.text_map,
        }, required=("name", "command"))  # fmt: skip
        if found is not None and not found["command"].strip():
            r.add(node, join(key, "command"), "the command is empty", "write the command that starts the service")
            return None
        return wrap(found, ServiceSpec)

    return {
        "version": lambda n, k: version(r, n, k),
        "settings": settings,
        "auth": auth,
        "on_failure": on_failure,
        "extensions": lambda n, k: r.objects(n, k, extension),
        "conditional_downloads": lambda n, k: r.objects(n, k, conditional),
        "env_merge": env_merge,
        "write_files": lambda n, k: r.objects(n, k, file_write),
        "apt_packages": r.text_list,
        "git_repos": lambda n, k: r.objects(n, k, git_repo),
        "pip_packages": lambda n, k: r.objects(n, k, pip_block, single=True),
        "conda_packages": lambda n, k: r.objects(n, k, conda_block, single=True),
        "downloads": lambda n, k: r.objects(n, k, download),
        "services": lambda n, k: r.objects(n, k, service),
        "write_files_late": lambda n, k: r.objects(n, k, file_write),
        "post_commands": r.text_list,
    }


def wrap(found: dict[str, Any] | None, kind: type[T]) -> T | None:
    return None if found is None else kind(**found)


def version(r: Reader, node: yaml.Node, key: str) -> int | None:
    if not (isinstance(node, yaml.ScalarNode) and str(node.value).strip() == "1"):
        r.add(node, key, f"version '{getattr(node, 'value', '')}' is not supported", "write version: 1")
        return None
    return 1


def any_value(r: Reader, node: yaml.Node, key: str) -> dict[str, Any] | None:
    """An extension's config: any YAML, strings expanded, handed to the extension as it is."""

    def value(n: yaml.Node) -> Any:
        if isinstance(n, yaml.MappingNode):
            return {str(k.value): value(v) for k, v in n.value}
        if isinstance(n, yaml.SequenceNode):
            return [value(v) for v in n.value]
        if n.tag == STR_TAG:
            return expand(str(n.value), r.env)
        return yaml.safe_load(yaml.serialize(n))

    if isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG:
        return {}
    if not isinstance(node, yaml.MappingNode):
        r.add(node, key, f"expected a mapping, found {kind_of(node)}", "write the extension's settings as key: value")
        return None
    found = value(node)
    return found if isinstance(found, dict) else None


def repo_dest(url: str, env: Mapping[str, str]) -> str:
    """Where a repository goes without `dest`: ${WORKSPACE:-/workspace}/<name>."""
    name = PurePosixPath(urlsplit(url).path).name.removesuffix(".git")
    return f"{env.get('WORKSPACE') or '/workspace'}/{name}" if name else ""


# ---- the file --------------------------------------------------------------------------------


def compose(text: str, r: Reader) -> yaml.Node | None:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        r.problems.append(Problem(r.source, line, "", f"not valid YAML: {exc.problem or exc}",
                                  "check indentation, quoting and ':' after each key near that line"))  # fmt: skip
        return None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        r.problems.append(Problem(r.source, line, "", f"character U+{exc.character:04X} is not allowed in YAML",
                                  "remove control characters: a manifest is plain UTF-8 text"))  # fmt: skip
        return None
    except (yaml.YAMLError, RecursionError) as exc:
        r.problems.append(Problem(r.source, 1, "", f"not readable YAML: {exc}", "check the file's syntax"))
        return None
    if root is not None and node_count(root) > MAX_EXPANDED_NODES:
        r.problems.append(Problem(r.source, 1, "", f"aliases expand this file to more than {MAX_EXPANDED_NODES} values",
                                  "write the values out, or use fewer nested aliases"))  # fmt: skip
        return None
    return root


def node_count(root: yaml.Node) -> int:
    """Values the tree expands to (aliases counted each time; a cycle counts as too many)."""
    total, stack, seen_path = 0, [root], 0
    while stack:
        node = stack.pop()
        total += 1
        seen_path += 1
        if total > MAX_EXPANDED_NODES or seen_path > MAX_EXPANDED_NODES * 4:
            return total
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)
    return total


def load(text: str, source: str, env: Mapping[str, str]) -> tuple[Manifest, list[Problem]]:
    """The manifest and its warnings; ManifestError with every error when it cannot run."""
    r = Reader(source, env)
    root = compose(text, r)
    if root is None and not r.problems:
        r.add(None, "", "the manifest is empty", "start it with 'version: 1'")
    if root is not None:
        found = r.mapping(root, "", section_readers(r), required=("version",))
        if found is not None and not [p for p in r.problems if not p.warning]:
            manifest = Manifest(**found)
            return manifest, r.problems
    errors = [p for p in r.problems if not p.warning]
    if not errors:  # e.g. the top is a list: reported once by mapping()
        errors = [Problem(source, 1, "", "the manifest is not a mapping of sections", "start it with 'version: 1'")]
    raise ManifestError(sorted(errors, key=lambda p: p.line))


# ---- what the environment adds ---------------------------------------------------------------


def entries(value: str) -> list[str]:
    """`a;b;c`, blank entries and `#` comments skipped."""
    return [part.strip() for part in value.split(";") if part.strip() and not part.strip().startswith("#")]


def url_dest_pairs(value: str, variable: str, notes: list[str]) -> list[Download]:
    """`url|dest;url|dest` (the first `|` splits); an entry without one is skipped, named."""
    found = []
    for number, entry in enumerate(entries(value), 1):
        url, bar, dest = entry.partition("|")
        if not bar or not url.strip() or not dest.strip():
            notes.append(f"{variable} entry {number}: expected url|dest; skipped")
            continue
        found.append(Download(url.strip(), dest.strip()))
    return found


def with_environment(manifest: Manifest, env: Mapping[str, str]) -> tuple[Manifest, list[str]]:
    """The manifest with what the environment adds appended: env_merge's variables and the
    PROVISIONING_* conventions (a note for each entry skipped and each variable used)."""
    notes: list[str] = []
    downloads: list[Download] = []
    for variable, _target in manifest.env_merge:
        if env.get(variable, ""):
            found = url_dest_pairs(env[variable], variable, notes)
            downloads += found
            notes.append(f"env_merge: {len(found)} download(s) from {variable}")
    if env.get("PROVISIONING_DOWNLOADS", ""):
        downloads += url_dest_pairs(env["PROVISIONING_DOWNLOADS"], "PROVISIONING_DOWNLOADS", notes)
    repos = []
    for entry in entries(env.get("PROVISIONING_GIT_REPOS", "")):
        parts = [part.strip() for part in entry.split("|")]
        url, dest, ref = [*parts, "", ""][:3]
        if url:
            repos.append(GitRepo(url, dest or repo_dest(url, env), ref))
    pip = entries(env.get("PROVISIONING_PIP", ""))
    conda = entries(env.get("PROVISIONING_CONDA", ""))
    return (
        manifest.appended(
            downloads=tuple(downloads),
            git_repos=tuple(repos),
            apt_packages=tuple(entries(env.get("PROVISIONING_APT", ""))),
            pip_packages=(PipBlock(tuple(pip)),) if pip else (),
            conda_packages=(CondaBlock(tuple(conda)),) if conda else (),
            post_commands=tuple(entries(env.get("PROVISIONING_POST_COMMANDS", ""))),
        ),
        notes,
    )


def resolve_conditionals(manifest: Manifest, valid: Mapping[str, bool]) -> tuple[Manifest, list[str]]:
    """conditional_downloads into downloads: each entry's `downloads` when its condition holds,
    else its `else_downloads`."""
    notes = []
    chosen: list[Download] = []
    for conditional in manifest.conditional_downloads:
        holds = valid.get(conditional.when, False)
        picked = conditional.downloads if holds else conditional.else_downloads
        notes.append(f"{conditional.when} is {str(holds).lower()}: {len(picked)} download(s)")
        chosen += picked
    return replace(manifest.appended(downloads=tuple(chosen)), conditional_downloads=()), notes


# PROVISIONER_* settings: the environment overrides the manifest (the reference's variables).
def with_overrides(manifest: Manifest, env: Mapping[str, str]) -> tuple[Manifest, list[str]]:
    """The manifest with PROVISIONER_RETRY_MAX, _RETRY_DELAY, _FAILURE_ACTION, _WEBHOOK_URL,
    _WEBHOOK_ON_SUCCESS, _LOG_FILE, _VENV and _CONDA_ENV applied; a value that cannot work is
    named (never its value: a webhook URL is a secret) and ignored."""
    problems: list[str] = []
    failure, settings = manifest.on_failure, manifest.settings

    def get(name: str) -> str | None:
        value = env.get(name)
        return None if value is None else value.strip()

    if (value := get("PROVISIONER_RETRY_MAX")) is not None:
        if value.isdigit():
            failure = replace(failure, max_retries=int(value))
        else:
            problems.append("PROVISIONER_RETRY_MAX is not a whole number; ignored")
    if (value := get("PROVISIONER_RETRY_DELAY")) is not None:
        try:
            failure = replace(failure, retry_delay=max(float(value), 0.0))
        except ValueError:
            problems.append("PROVISIONER_RETRY_DELAY is not a number of seconds; ignored")
    if (value := get("PROVISIONER_FAILURE_ACTION")) is not None:
        if value in FAILURE_ACTIONS:
            failure = replace(failure, action=value)
        else:
            problems.append(f"PROVISIONER_FAILURE_ACTION is not one of {', '.join(FAILURE_ACTIONS)}; ignored")
    if (value := get("PROVISIONER_WEBHOOK_URL")) is not None:
        if not value or re.match(r"https?://", value, re.I):
            failure = replace(failure, webhook=value)
        else:
            problems.append("PROVISIONER_WEBHOOK_URL is not an http(s) URL; ignored")
    if (value := get("PROVISIONER_WEBHOOK_ON_SUCCESS")) is not None:
        failure = replace(failure, webhook_on_success=value.lower() in TRUE_WORDS)
    if (value := get("PROVISIONER_LOG_FILE")) is not None:
        settings = replace(settings, log_file=value)
    if (value := get("PROVISIONER_VENV")) is not None:
        settings = replace(settings, venv=value)
    if (value := get("PROVISIONER_CONDA_ENV")) is not None:
        settings = replace(settings, conda_env=value)
    return replace(manifest, on_failure=failure, settings=settings), problems
