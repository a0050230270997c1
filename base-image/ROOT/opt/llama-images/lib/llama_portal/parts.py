"""The portal's plug-in seam: what an image adds to the portal for one of its services.

A service's declaration (services.d/<name>.toml) may name its part, a module of the image that
ships it, importable by the portal's Python (PYTHONPATH=/opt/llama-images/lib):

    portal_part = "my_server.portal_part"

The module has a function `portal_part(service: str) -> Part` (`service`: the declaring
service's name). The portal imports every declared part at its start and knows none by name: a
part that fails to load is a problem shown on the page, never a crash. A part has

  routes   its JSON API: (method, path, handler); a handler takes a `PartRequest` and gives a
           `PartAnswer`, and runs in a worker thread (it may block on its server's HTTP API)
  panel    a script the page loads after its own (portal.js), with the service's name in the
           script tag's data-service; it draws the part's panel from its routes' answers
  secrets  the values the log views and the logs archive mask (its API keys, tokens in URLs)
  summary  its line in the services list (else the service's status file)

No web framework here: the routes are plain data, app.py and api.py put them on the page.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_runtime.services import Service

FACTORY = "portal_part"  # the function a part's module defines
METHODS = frozenset({"GET", "POST"})


@dataclass(frozen=True)
class PartRequest:
    """What a part's handler is told of a request."""

    path_params: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    body: Any = None  # the request's JSON; None when it sent none or it does not parse
    scheme: str = "http"  # as the browser reached the page (X-Forwarded-Proto behind the proxy)
    host: str = "localhost"  # the page's host, as the browser named it
    port: int | None = None  # the page's port


@dataclass(frozen=True)
class PartAnswer:
    body: Mapping[str, Any]  # sent as JSON
    status: int = 200


Handler = Callable[[PartRequest], PartAnswer]


@dataclass(frozen=True)
class PartRoute:
    method: str  # GET or POST
    path: str  # Starlette's syntax: /api/thing/{name:str}
    handler: Handler


@dataclass(frozen=True)
class Part:
    routes: Sequence[PartRoute] = ()
    panel: Path | None = None  # a script file of the image (served as /static/parts/<service>.js)
    secrets: Callable[[], Sequence[str]] = lambda: ()
    summary: Callable[[], str | None] | None = None


@dataclass(frozen=True)
class LoadedPart:
    service: str
    module: str
    part: Part


@dataclass(frozen=True)
class Parts:
    parts: tuple[LoadedPart, ...] = ()
    problems: tuple[str, ...] = ()

    def secrets(self) -> list[str]:
        """Every part's secrets (a part whose secrets cannot be read fails the view that masks)."""
        return [value for loaded in self.parts for value in loaded.part.secrets() if value]

    def summary(self, service: str) -> str | None:
        """A part's own line for its service in the services list, None where it has none."""
        for loaded in self.parts:
            if loaded.service == service and loaded.part.summary is not None:
                return loaded.part.summary()
        return None

    def panels(self) -> list[tuple[str, Path]]:
        return [(loaded.service, loaded.part.panel) for loaded in self.parts if loaded.part.panel is not None]


Importer = Callable[[str], Any]


def load(services: Sequence[Service], importer: Importer = importlib.import_module) -> Parts:
    """The parts the services declare, imported by their declared names; what failed as problems."""
    loaded: list[LoadedPart] = []
    problems: list[str] = []
    taken: set[tuple[str, str]] = set()
    for service in services:
        if not service.portal_part:
            continue
        where = f"service {service.name!r}: portal_part = {service.portal_part!r}"
        try:
            module = importer(service.portal_part)
            factory = getattr(module, FACTORY, None)
            if not callable(factory):
                problems.append(f"{where}: the module has no function {FACTORY}(service); its panel is left out")
                continue
            part = factory(service.name)
        except Exception as exc:
            problems.append(f"{where} did not load ({type(exc).__name__}: {exc}); its panel is left out")
            continue
        if not isinstance(part, Part):
            problems.append(f"{where}: {FACTORY}() gave a {type(part).__name__}, not a Part; its panel is left out")
            continue
        bad = [route for route in part.routes if route.method not in METHODS or not route.path.startswith("/api/")]
        clashing = [route for route in part.routes if (route.method, route.path) in taken]
        if bad or clashing:
            shown = ", ".join(f"{r.method} {r.path}" for r in [*bad, *clashing])
            problems.append(
                f"{where}: routes {shown} are not GET or POST under /api/, or another part has them; "
                "its panel is left out"
            )
            continue
        taken.update((route.method, route.path) for route in part.routes)
        loaded.append(LoadedPart(service.name, service.portal_part, part))
    return Parts(tuple(loaded), tuple(problems))
