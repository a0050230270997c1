"""The portal's "Use it" panel for llama-server: copy-ready snippets that call this instance's
OpenAI-compatible API as a client elsewhere would. Pure; portal_part.py feeds it. Stdlib only."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass

from llama_portal.panels import host_for_url

TOKEN_PLACEHOLDER = "YOUR_TOKEN"
API_KEY_PLACEHOLDER = "YOUR_LLAMA_API_KEY"


@dataclass(frozen=True)
class Usage:
    base_url: str  # where clients reach the API: scheme, this page's host, the API's port
    chat_url: str  # llama-server's own chat page
    model: str | None
    token_needed: bool
    api_key_needed: bool
    token_hint: str
    port_note: str | None  # the host maps ports and the API's mapped port is unknown
    curl: str
    python: str

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def usage(
    *,
    scheme: str,
    host: str,
    port: int,
    declared_port: int,
    page_port: int | None,
    portal_port: int | None,
    model: str | None,
    token_needed: bool,
    api_key_needed: bool,
    token_file: str,
) -> Usage:
    """Snippets that call this instance's API as a client elsewhere would: the page's host (the
    address its user reached), the API's external `port` (mapped: see mapped_port), a placeholder
    where the token goes (the page never holds the token). When the page itself is reached on
    another port than the portal's (`page_port`, `portal_port`), the host maps ports: a note says
    the API's port is mapped too."""
    base = f"{scheme}://{host_for_url(host)}:{port}"
    hint = (
        f"Put your token where {TOKEN_PLACEHOLDER} stands: the OPEN_BUTTON_TOKEN you set, or the generated "
        f"one, which the owner reads with: docker exec <container> cat {token_file}"
        if token_needed
        else "This port is open without a token (ENABLE_AUTH or AUTH_EXCLUDE)."
    )
    if api_key_needed:
        hint += f" LLAMA_API_KEY is set too: send it where {API_KEY_PLACEHOLDER} stands."
    note = None
    if page_port is not None and portal_port is not None and page_port != portal_port and port == declared_port:
        note = (
            f"This page is reached on port {page_port}, not {portal_port}: the host maps the container's ports "
            f"to others. Use the port it maps to {declared_port} instead of {port}."
        )
    curl = curl_snippet(base, model, token_needed, api_key_needed)
    python = python_snippet(base, model, token_needed, api_key_needed)
    return Usage(base, f"{base}/", model, token_needed, api_key_needed, hint, note, curl, python)


def curl_snippet(base: str, model: str | None, token_needed: bool, api_key_needed: bool) -> str:
    headers = []
    if token_needed:
        headers.append(f"Authorization: Bearer {TOKEN_PLACEHOLDER}")
    if api_key_needed:
        headers.append(f"X-Api-Key: {API_KEY_PLACEHOLDER}")
    body: dict[str, object] = {"messages": [{"role": "user", "content": "Hello!"}]}
    if model:
        body = {"model": model, **body}
    lines = [f'curl -H "{header}" \\' for header in [*headers, "Content-Type: application/json"]]
    lines = [lines[0], *("     " + line.removeprefix("curl ") for line in lines[1:])]
    return "\n".join([*lines, f"     -d {shlex.quote(json.dumps(body))} \\", f"     {base}/v1/chat/completions"])


def python_snippet(base: str, model: str | None, token_needed: bool, api_key_needed: bool) -> str:
    client_args = [
        f"base_url={json.dumps(base + '/v1')}",
        f"api_key={json.dumps(TOKEN_PLACEHOLDER if token_needed else 'none')}",
    ]
    if api_key_needed:
        client_args.append(f"default_headers={{{json.dumps('X-Api-Key')}: {json.dumps(API_KEY_PLACEHOLDER)}}}")
    return "\n".join(
        [
            "from openai import OpenAI",
            "",
            "client = OpenAI(",
            *(f"    {argument}," for argument in client_args),
            ")",
            "reply = client.chat.completions.create(",
            f"    model={json.dumps(model or 'default')},",
            '    messages=[{"role": "user", "content": "Hello!"}],',
            ")",
            "print(reply.choices[0].message.content)",
        ]
    )
