"""The llama image's launcher without Docker: LLAMA_* settings -> llama-server's command line,
secrets kept out of arguments and logs, llama-server's output read (llama_serving, shipped in
derivatives/llama-cpp/ROOT/opt/llama-images/lib)."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from llama_serving import config, gpu, output, service, status
from llama_serving.config import ConfigError, ModelSource, Plan, make_plan, shown_command

from tests.conftest import REPO_ROOT
from tests.llama_serving.stand_in import stand_in_server

PORT = 18000
# The endpoints the portal's model panel reads, on unless LLAMA_ARGS says otherwise.
MONITORING = ["--metrics", "--slots"]
# The options whose llama-server default the image changes (no prompt cache in RAM: issue 28).
DEFAULTS = ["--cache-ram", "0"]
ADDED = [*MONITORING, *DEFAULTS]
TAKEN = {8000: "the proxy (external port of llama)", 11111: "service 'portal' (internal_port)"}


def plan(**env: str) -> Plan:
    made = make_plan(env, PORT, TAKEN)
    assert made is not None
    return made


# LLAMA_ARGS


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('--alias "my model"', ["--alias", "my model"]),
        ("--alias 'my model' -c 512", ["--alias", "my model", "-c", "512"]),
        (r"--alias my\ model", ["--alias", "my model"]),
        ("--port=9000", ["--port", "9000"]),
        ("-c=512 -hft=hf_x=y", ["-c", "512", "-hft", "hf_x=y"]),
        ('--chat-template-kwargs \'{"a": "b=c"}\'', ["--chat-template-kwargs", '{"a": "b=c"}']),
        ("--alias $(id) `id` ;rm", ["--alias", "$(id)", "`id`", ";rm"]),
        ("  -c\n512\t", ["-c", "512"]),
        ("", []),
    ],
)
def test_llama_args_are_split_like_shell_words_and_never_executed(text: str, words: list[str]) -> None:
    assert config.split_args(text) == words


def test_an_unbalanced_quote_is_one_clear_error() -> None:
    with pytest.raises(ConfigError) as error:
        make_plan({"LLAMA_MODEL": "/m/x.gguf", "LLAMA_ARGS": '--alias "my model'}, PORT)
    message = str(error.value)
    assert message.startswith("LLAMA_ARGS: no closing quotation") and "\n" not in message


# Host and port


def test_host_and_port_default_to_the_declaration_and_are_always_passed() -> None:
    made = plan(LLAMA_MODEL="/m/x.gguf")
    assert made.command()[:5] == ["llama-server", "--host", "127.0.0.1", "--port", "18000"]
    assert (made.listen.port, made.listen.reach_host) == (18000, "127.0.0.1")


@pytest.mark.parametrize("args", ["--port 9000", "--port=9000", "-c 512 --port 8999 --port 9000"])
def test_a_port_in_llama_args_replaces_the_default(args: str) -> None:
    made = plan(LLAMA_MODEL="/m/x.gguf", LLAMA_ARGS=args)
    assert made.listen.port == 9000
    command = made.command()
    assert command.count("--port") == args.count("--port")  # theirs, and no second one of ours
    assert command[-2:] == ["--port", "9000"]


def test_llama_servers_own_port_variable_is_honoured_and_passed_explicitly() -> None:
    made = plan(LLAMA_MODEL="/m/x.gguf", LLAMA_ARG_PORT="9100")
    assert made.listen.port == 9100 and made.command()[3:5] == ["--port", "9100"]


def test_a_host_in_llama_args_is_kept_and_reached_on_loopback() -> None:
    made = plan(LLAMA_MODEL="/m/x.gguf", LLAMA_ARGS="--host 0.0.0.0")
    assert made.command().count("--host") == 1 and made.listen.reach_host == "127.0.0.1"
    assert plan(LLAMA_MODEL="/m/x.gguf", LLAMA_ARGS="--host 10.1.2.3").listen.reach_host == "10.1.2.3"
    assert plan(LLAMA_MODEL="/m/x.gguf", LLAMA_ARGS="--host ::1").listen.reach_host == "::1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("--port abc", "LLAMA_ARGS --port: 'abc' is not a port number"),
        ("--port 70000", "is not a port number (1-65535)"),
        ("--port", "LLAMA_ARGS: --port needs a value"),
        ("--port 8000", "port 8000 is taken by the proxy"),
        ("--port 11111", "port 11111 is taken by service 'portal'"),
        ("--host /run/llama.sock", "UNIX socket"),
        ('--host "a\nb"', "is not a list of addresses or host names"),
    ],
)
def test_a_port_or_host_that_cannot_work_is_refused(args: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_plan({"LLAMA_MODEL": "/m/x.gguf", "LLAMA_ARGS": args}, PORT, TAKEN)


# Models


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("org/repo-GGUF", "hf"),
        ("bartowski/Meta-Llama-3.1-8B-Instruct-GGUF:Q4_K_M", "hf"),
        ("/models/tiny.gguf", "file"),
        ("models/tiny.gguf", "file"),
        ("./tiny", "file"),
        ("https://example.org/files/tiny.gguf?download=true", "url"),
        ("HTTP://example.org/tiny.gguf", "url"),
    ],
)
def test_llama_model_names_a_repo_a_file_or_a_url(value: str, kind: str) -> None:
    assert config.classify(value).kind == kind


@pytest.mark.parametrize(
    "value", ["$(id)", "`id`", "org", "org/repo/extra", "a b/c", "org/repo:Q4 K", "ftp://x/y.gguf"]
)
def test_anything_else_in_llama_model_is_refused_and_never_run(value: str) -> None:
    with pytest.raises(ConfigError, match=r"is not a \.gguf path, an http"):
        config.classify(value)


def test_each_source_becomes_llama_servers_own_option() -> None:
    assert plan(LLAMA_MODEL="org/repo-GGUF:Q8_0").command()[5:] == ["-hf", "org/repo-GGUF:Q8_0", *ADDED]
    assert plan(LLAMA_MODEL="/m/x.gguf").command()[5:] == ["-m", "/m/x.gguf", *ADDED]
    from_url = plan(LLAMA_MODEL="https://host/dir/tiny.gguf", LLAMA_CACHE="/c")
    assert from_url.command()[5] == "-m" and re.fullmatch(r"/c/url/[0-9a-f]{12}-tiny\.gguf", from_url.command()[6])
    assert from_url.environment() == {}  # the launcher downloads it: llama-server gets only the file
    by_itself = plan(LLAMA_MODEL="https://host/dir/tiny.gguf", LLAMA_DOWNLOAD_CONNECTIONS="0")
    assert by_itself.environment() == {"LLAMA_ARG_MODEL_URL": "https://host/dir/tiny.gguf"}  # not in `ps`


@pytest.mark.parametrize(
    ("args", "downloads"),
    [("-c 512 -hff m-Q8_0.gguf", False), ("-hfd org/draft-GGUF", True), ("--mmproj-url https://h/p.gguf", True),
     ("--hf-repo-draft org/d", True), ("-mu https://h/m.gguf", True), ("--model-draft /m/d.gguf", False)],
)  # fmt: skip
def test_llama_args_that_download_keep_llama_server_online(args: str, downloads: bool) -> None:
    assert plan(LLAMA_MODEL="org/r", LLAMA_ARGS=args).args_download is downloads


def test_a_prepared_hub_model_is_served_from_the_cache_by_name() -> None:
    made = plan(LLAMA_MODEL="org/r:Q8_0", LLAMA_ARGS="-c 512")
    assert made.command(hf_file="m-Q8_0.gguf", offline=True)[5:] == [
        "-hf", "org/r:Q8_0", "-hff", "m-Q8_0.gguf", "--offline", *ADDED, "-c", "512",
    ]  # fmt: skip


def test_llama_args_come_last_so_they_override() -> None:
    assert plan(LLAMA_MODEL="/m/x.gguf", LLAMA_ARGS="-c 256 --alias x").command()[-4:] == ["-c", "256", "--alias", "x"]


@pytest.mark.parametrize(
    ("env", "added"),
    [
        ({}, ["--metrics", "--slots"]),
        ({"LLAMA_ARGS": "--no-slots"}, ["--metrics"]),
        ({"LLAMA_ARGS": "--slots --metrics"}, []),
        ({"LLAMA_ARG_ENDPOINT_METRICS": "0"}, ["--slots"]),
        ({"LLAMA_ARG_ENDPOINT_SLOTS": "false"}, ["--metrics"]),
    ],
)
def test_the_metrics_and_slots_endpoints_are_on_unless_llama_args_decide(env: dict[str, str], added: list[str]) -> None:
    made = plan(LLAMA_MODEL="/m/x.gguf", **env)
    assert list(made.monitoring) == added
    command = made.command()
    # Added before LLAMA_ARGS, so a choice there still wins; never twice.
    assert all(command.count(option) == 1 for option in added)
    assert "--no-slots" not in command or "--slots" not in command


@pytest.mark.parametrize(
    ("env", "added"),
    [
        ({}, ["--cache-ram", "0"]),
        ({"LLAMA_ARGS": "--cache-ram 2048"}, []),
        ({"LLAMA_ARGS": "-cram=512"}, []),
        ({"LLAMA_ARG_CACHE_RAM": "1024"}, []),
    ],
)
def test_the_prompt_cache_in_ram_is_off_unless_llama_args_turn_it_on(env: dict[str, str], added: list[str]) -> None:
    """llama-server's RAM prompt cache grows by each distinct prompt's state and slows every
    request down (the soak's finding, issue 28): off by default, a choice in LLAMA_ARGS or
    llama-server's own variable wins, and comes after it on the command line."""
    made = plan(LLAMA_MODEL="/m/x.gguf", **env)
    assert list(made.defaults) == added
    command = made.command()
    assert command.count("--cache-ram") + command.count("-cram") == (1 if env.get("LLAMA_ARGS") or added else 0)
    if env.get("LLAMA_ARGS"):
        assert command[-2:] == config.split_args(env["LLAMA_ARGS"])


@pytest.mark.parametrize(("value", "mode"), [("", "summary"), ("full", "full"), (" None ", "none")])
def test_llama_log_requests_chooses_what_docker_logs_gets_of_each_request(value: str, mode: str) -> None:
    assert plan(LLAMA_MODEL="/m/x.gguf", LLAMA_LOG_REQUESTS=value).log_requests == mode


def test_an_unknown_llama_log_requests_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"LLAMA_LOG_REQUESTS='all' is not one of summary, full, none"):
        plan(LLAMA_MODEL="/m/x.gguf", LLAMA_LOG_REQUESTS="all")


def test_without_any_model_there_is_no_plan() -> None:
    assert make_plan({}, PORT) is None
    assert make_plan({"LLAMA_MODEL": " ", "LLAMA_ARGS": "-c 512"}, PORT) is None


@pytest.mark.parametrize(
    "env", [{"LLAMA_ARGS": "-m /m/x.gguf"}, {"LLAMA_ARGS": "-hf a/b"}, {"LLAMA_ARG_MODEL": "/m/x"}]
)
def test_a_model_named_only_in_llama_servers_own_terms_is_started(env: dict[str, str]) -> None:
    made = make_plan(env, PORT)
    assert made is not None and not made.router and made.command()[:5] == [
        "llama-server", "--host", "127.0.0.1", "--port", "18000",
    ]  # fmt: skip


def test_a_models_dir_or_a_list_starts_router_mode() -> None:
    by_dir = plan(LLAMA_MODELS_DIR="/models")
    assert by_dir.router and by_dir.command()[5:] == ["--models-max", "1", "--models-dir", "/models", *ADDED]
    listed = plan(LLAMA_MODEL="org/a-GGUF, /models/b.gguf,\nhttps://h/c.gguf", LLAMA_MODELS_MAX="2", LLAMA_CACHE="/c")
    assert listed.router and [s.name for s in listed.sources] == ["org/a-GGUF", "b", "c"]
    assert listed.command("/run/models.ini")[5:] == [
        "--models-max", "2", "--models-preset", "/run/models.ini", *ADDED
    ]  # fmt: skip
    preset = listed.preset()
    assert "[org/a-GGUF]\nhf-repo = org/a-GGUF\n" in preset
    assert "[b]\nmodel = /models/b.gguf\n" in preset
    assert re.search(r"\[c\]\nmodel = /c/url/[0-9a-f]{12}-c\.gguf\n", preset)  # downloaded before it starts
    by_itself = plan(LLAMA_MODEL="https://h/c.gguf,/m/d.gguf", LLAMA_CACHE="/c", LLAMA_DOWNLOAD_CONNECTIONS="0")
    assert re.search(r"\[c\]\nmodel-url = https://h/c.gguf\nmodel = /c/url/[0-9a-f]{12}-c\.gguf\n", by_itself.preset())


@pytest.mark.parametrize("url", ["https://me:pa55word@h/c.gguf", "https://h/c.gguf?X-Amz-Signature=s1gned"])
def test_router_mode_refuses_a_url_with_credentials(url: str) -> None:
    """The router passes each model's settings to its model process as arguments (ps would show them)."""
    with pytest.raises(ConfigError, match="carries credentials") as caught:
        make_plan({"LLAMA_MODEL": f"/models/a.gguf,{url}", "LLAMA_DOWNLOAD_CONNECTIONS": "0"}, PORT)
    assert "pa55word" not in str(caught.value) and "s1gned" not in str(caught.value)
    assert plan(LLAMA_MODEL=url).sources[0].kind == "url"  # alone, it travels in the environment
    # Downloaded by the launcher, the URL never reaches llama-server: the router gets the file.
    downloaded = plan(LLAMA_MODEL=f"/models/a.gguf,{url}")
    assert "pa55word" not in downloaded.preset() and "s1gned" not in downloaded.preset()


def test_two_list_entries_with_one_name_are_refused() -> None:
    with pytest.raises(ConfigError, match="both be named 'tiny'"):
        make_plan({"LLAMA_MODEL": "/a/tiny.gguf,/b/tiny.gguf"}, PORT)


# Secrets


def test_secret_options_move_from_the_arguments_to_llama_servers_environment() -> None:
    made = plan(LLAMA_MODEL="org/r", LLAMA_ARGS="--api-key k-from-args -hft hf_fromargs --alias a", HF_TOKEN="hf_env")
    assert made.secrets == {"LLAMA_API_KEY": "k-from-args", "HF_TOKEN": "hf_fromargs"}
    assert "k-from-args" not in made.command() and "hf_fromargs" not in made.command()
    assert made.command()[-2:] == ["--alias", "a"]
    assert plan(LLAMA_MODEL="org/r", LLAMA_API_KEY="k1,k2").secrets == {"LLAMA_API_KEY": "k1,k2"}


def test_the_start_line_masks_every_secret() -> None:
    made = plan(
        LLAMA_MODEL="https://user:pw-secret@host/tiny.gguf?token=q-secret",
        LLAMA_ARGS="--api-key=key-secret --hf-token hf_secret",
        LLAMA_API_KEY="other-key",
        LLAMA_DOWNLOAD_CONNECTIONS="0",
    )
    line = shown_command(made.command(), made)
    for secret in ("pw-secret", "q-secret", "key-secret", "hf_secret", "other-key"):
        assert secret not in line
    assert "pw-secret" not in " ".join(made.command())
    assert line.endswith(
        "(environment: HF_TOKEN=***, LLAMA_API_KEY=***, LLAMA_ARG_MODEL_URL=https://user:***@host/tiny.gguf?***)"
    )


def test_a_short_secret_option_with_an_equals_sign_is_taken_out_and_masked() -> None:
    made = plan(LLAMA_MODEL="org/r", LLAMA_ARGS="-hft=hf_shortform-secret --alias a")
    assert made.secrets == {"HF_TOKEN": "hf_shortform-secret"}
    assert not any("hf_shortform-secret" in word for word in made.command())
    line = shown_command(made.command(), made)
    assert "hf_shortform-secret" not in line and "-hft" not in line
    assert line.endswith("--alias a (environment: HF_TOKEN=***)")


def test_log_lines_are_masked_including_llama_servers_own_key_tail() -> None:
    made = plan(LLAMA_MODEL="org/r", LLAMA_API_KEY="first-key,second-key", HF_TOKEN="hf_abcdefgh")
    text = "keys first-key and second-key, token hf_abcdefgh; srv init: api_keys: ****-key"
    assert config.mask(text, made.secret_values()) == "keys *** and ***, token ***; srv init: api_keys: ****"


# Retries


def test_retry_defaults_are_small_and_the_docs_state_them() -> None:
    defaults = plan(LLAMA_MODEL="/m/x.gguf").retries
    assert (defaults.attempts, defaults.delay, defaults.stall_timeout) == (3, 5.0, 300.0)
    assert [defaults.delay_after(n) for n in (1, 2)] == [5.0, 10.0]
    serving = (REPO_ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    for variable, value in (("LLAMA_START_ATTEMPTS", "3"), ("LLAMA_RETRY_DELAY", "5"), ("LLAMA_STALL_TIMEOUT", "300")):
        assert re.search(rf"^\| `{variable}` \| `{value}` \|", serving, re.MULTILINE), variable
    assert re.search(r"^\| `LLAMA_MODELS_MAX` \| `1` \|", serving, re.MULTILINE)


@pytest.mark.parametrize(
    "env", [{"LLAMA_START_ATTEMPTS": "0"}, {"LLAMA_RETRY_DELAY": "soon"}, {"LLAMA_MODELS_MAX": "-1"}]
)
def test_bad_retry_settings_are_refused_by_name(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(env))):
        make_plan({"LLAMA_MODEL": "/m/x.gguf", **env}, PORT)


# llama-server's output (lines captured from the bundled build 11669)


def test_download_progress_is_read_from_its_progress_bar() -> None:
    segment = "\x1b[1A\x1b[2KDownloading tiny-Q8_0.gguf \u2595\u2588\u2588   \u258f  42%\x1b[K\x1b[1B"
    assert output.progress(segment) == output.Progress("tiny-Q8_0.gguf", 42)
    assert output.progress("0.00.039.617 I srv    load_model: loading model 'org/repo-GGUF'") is None
    assert output.split_output("a\rb\nc") == (["a", "b"], "c")


@pytest.mark.parametrize(
    ("lines", "cause"),
    [
        (
            [
                "0.00.036.696 E llama_model_load: error loading model: tensor 'blk.0.ffn_gate.weight' data is not "
                "within the file bounds, model is corrupted or incomplete",
                "0.00.036.729 E llama_model_load_from_file_impl: failed to load model",
                "0.00.037.327 E srv  llama_server: exiting due to model loading error",
            ],
            "llama_model_load: error loading model: tensor 'blk.0.ffn_gate.weight' data is not within the file "
            "bounds, model is corrupted or incomplete",
        ),
        (
            [
                "0.00.015.817 W api_get: invalid token, authentication disabled",
                "0.00.017.394 E get_repo_commit: error: GET failed (401): Access to model org/r is restricted.",
                "0.00.019.749 E llama_model_load_from_file_impl: exactly one out metadata, path_model, and file "
                "must be defined",
            ],
            "get_repo_commit: error: GET failed (401): Access to model org/r is restricted.",
        ),
        (["error: invalid argument: --bogus", "usage:"], "error: invalid argument: --bogus"),
        (["0.00.001.461 I srv  llama_server: initializing ..."], None),
    ],
)
def test_the_cause_of_a_failed_start_is_its_first_real_error(lines: list[str], cause: str | None) -> None:
    assert output.failure_cause(lines) == cause


def test_a_served_request_is_counted_from_llama_servers_output() -> None:
    # Lines of the bundled llama-server (build 11669), alone and as a router's child ("[port] ").
    done = "0.12.496.316 I slot      release: id  0 | task 2 | stop processing: n_tokens = 22, truncated = 0"
    assert output.request_done(done)
    assert output.request_done("[51595] " + done)
    assert not output.request_done("0.06.448.922 I slot launch_slot_: id  0 | task 2 | processing task, is_child = 0")
    assert not output.request_done("0.12.496.266 I slot print_timing: id  0 | task 2 | total time = 6047.19 ms")


# One request as the bundled llama-server (build 11669) logs it at its default verbosity.
REQUEST = [
    "0.02.311.403 I slot get_availabl: id  1 | task -1 | selected slot by LRU, n_tokens = 0, t_last = -1",
    "0.02.311.470 I slot launch_slot_: id  1 | task 5 | processing task, is_child = 0",
    "0.02.316.332 I slot print_timing: id  1 | task 5 | prompt eval time =       1.55 ms /    20 tokens "
    "(    0.08 ms per token, 12878.30 tokens per second)",
    "0.02.316.473 I slot print_timing: id  1 | task 5 |        eval time =       3.15 ms /     4 tokens "
    "(    1.05 ms per token,   951.78 tokens per second)",
    "0.02.316.576 I slot print_timing: id  1 | task 5 |       total time =       4.71 ms /    24 tokens",
    "0.02.316.619 I slot print_timing: id  1 | task 5 |    graphs reused =          5",
    "0.02.316.653 I slot print_timing: id  1 | task 5 |   graph reallocs =          0    /     0        "
    "(same size) / (changed size)",
    "0.02.317.803 I slot      release: id  1 | task 5 | stop processing: n_tokens = 23, truncated = 0",
]


def test_a_request_becomes_one_line_and_its_eight_lines_are_detail() -> None:
    requests = output.Requests()
    routed = [requests.route(line) for line in REQUEST]
    assert all(detail for detail, _ in routed)
    assert [line for _, line in routed if line] == ["[llama] task 5: 20 prompt + 4 generated tokens in 4.7 ms"]
    assert requests.tasks == {}


def test_interleaved_requests_and_a_routers_children_are_told_apart() -> None:
    requests = output.Requests()
    other = [line.replace("task 5", "task 6").replace("id  1", "id  2") for line in REQUEST]
    child = ["[51595] " + line for line in REQUEST]
    summaries = [
        found for pair in zip(REQUEST, other, child, strict=True) for _, found in map(requests.route, pair) if found
    ]
    assert summaries == [
        "[llama] task 5: 20 prompt + 4 generated tokens in 4.7 ms",
        "[llama] task 6: 20 prompt + 4 generated tokens in 4.7 ms",
        "[llama] [51595] task 5: 20 prompt + 4 generated tokens in 4.7 ms",
    ]


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        ("0.00.451.877 I srv  llama_server: listening on http://127.0.0.1:18000", False),
        ("0.00.111.611 W srv  llama_server: security: no API key is set", False),
        ("0.03.200.115 W slot   operator(): id  1 | task 697 | need to evaluate at least 1 token", True),
        ("0.03.200.115 E slot   operator(): id  1 | task 697 | failed to decode the batch", False),
        ("0.00.252.077 D que    start_loop: processing new tasks", True),
        ("[boot] something else entirely", False),
    ],
)
def test_what_is_detail_warnings_and_errors_about_the_server_are_not(line: str, detail: bool) -> None:
    assert output.Requests().route(line) == (detail, None)


def test_a_line_continuing_a_debug_line_is_detail_too() -> None:
    requests = output.Requests()
    requests.route("0.02.201.577 D slot launch_slot_: id  0 | task -1 | sampler params: ")
    assert requests.route("\trepeat_last_n = 64, repeat_penalty = 1.000") == (True, None)
    requests.route("0.00.451.877 I srv  llama_server: listening on http://127.0.0.1:18000")
    assert requests.route("an unprefixed line after a server line") == (False, None)


def test_refused_arguments_are_final() -> None:
    assert output.is_argument_error(['error while handling argument "--port": stoi'])
    assert not output.is_argument_error(["0.00.1.2 E common_pull_file: download failed"])


def test_router_mode_reports_which_models_are_loaded() -> None:
    models = {
        "data": [
            {"id": "alpha", "status": {"value": "loaded"}},
            {"id": "beta", "status": {"value": "unloaded"}},
            {"id": "gamma", "status": {"value": "loading"}},
        ]
    }
    assert output.router_summary(models) == "serving 3 models (loaded: alpha; loading: gamma)"
    assert output.router_summary({"data": [{"id": "a", "status": {"value": "unloaded"}}]}) == (
        "serving 1 model (none loaded)"
    )


def test_model_names_in_router_mode() -> None:
    assert ModelSource("file", "/m/dir/alpha.gguf").name == "alpha"
    assert ModelSource("url", "https://h/x/beta.gguf?dl=1").name == "beta"
    assert ModelSource("hf", "org/r:Q8_0").name == "org/r:Q8_0"


# The Supervisor program (service.py)


@pytest.mark.parametrize(
    ("warning", "line", "shown"),
    [
        ("", "failed: boom", "failed: boom"),
        ("CPU fallback (GPU not used): ", "serving x", "CPU fallback (GPU not used): serving x"),
        ("CPU fallback (GPU not used): ", "failed: boom", "failed: CPU fallback (GPU not used): boom"),
    ],
)
def test_a_failed_status_starts_with_failed_even_on_a_cpu_fallback(warning: str, line: str, shown: str) -> None:
    """The health check and the portal tell a failure by a status line starting with "failed"."""
    assert status.shown_line(warning, line) == shown


def test_an_unwritable_download_directory_fails_the_attempt_with_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("", encoding="utf-8")
    cache = tmp_path / "file" / "cache"  # under a file: mkdir fails (as root too)
    status = tmp_path / "status" / "llama"
    monkeypatch.setattr(service, "STATUS_FILE", status)
    monkeypatch.setattr(gpu, "check", lambda env, log: gpu.Check(warning="CPU fallback (GPU not used): "))
    made = plan(LLAMA_MODEL="https://host/tiny.gguf", LLAMA_CACHE=str(cache), LLAMA_START_ATTEMPTS="1")
    cause = service.Runner(made, {}).run()
    assert cause is not None and cause.startswith(f"cannot create {cache}/url for the download: ")
    assert status.read_text(encoding="utf-8") == f"failed: CPU fallback (GPU not used): {cause}\n"


def test_an_unwritable_models_preset_fails_the_attempt_with_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("", encoding="utf-8")
    monkeypatch.setattr(service, "PRESET_FILE", tmp_path / "file" / "models.ini")
    made = plan(LLAMA_MODEL="org/a,org/b")
    attempt = service.Runner(made, {}).attempt(1)
    assert not attempt.served and attempt.cause.startswith(f"cannot write {tmp_path}/file/models.ini: ")


def test_the_launcher_ends_llama_server_before_supervisor_kills_it() -> None:
    conf = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    conf.read(REPO_ROOT / "derivatives/llama-cpp/ROOT/etc/supervisor/conf.d/llama.conf")
    assert conf.getfloat("program:llama", "stopwaitsecs") >= service.STOP_GRACE_SECONDS + 1


# llama-server's working directory is not the users' volume; relative paths keep their meaning.


@pytest.mark.parametrize(
    ("env", "command", "variables"),
    [
        ({"LLAMA_MODEL": "models/tiny.gguf"}, ["-m", "/workspace/models/tiny.gguf"], {}),
        ({"LLAMA_MODEL": "./tiny.gguf", "WORKSPACE": "/data"}, ["-m", "/data/tiny.gguf"], {}),
        ({"LLAMA_MODEL": "/models/tiny.gguf"}, ["-m", "/models/tiny.gguf"], {}),
        (
            {"LLAMA_MODEL": "org/repo", "LLAMA_ARGS": "--mmproj mm.gguf --alias a.gguf --lora-scaled l.gguf 0.5"},
            ["--mmproj", "/workspace/mm.gguf", "--alias", "a.gguf", "--lora-scaled", "/workspace/l.gguf", "0.5"],
            {},
        ),
        (
            {"LLAMA_ARG_MODEL": "tiny.gguf", "LLAMA_ARGS": "--chat-template-file=t.jinja"},
            ["--chat-template-file", "/workspace/t.jinja"],
            {"LLAMA_ARG_MODEL": "/workspace/tiny.gguf"},
        ),
        ({"LLAMA_MODELS_DIR": "models"}, ["--models-dir", "/workspace/models"], {}),
    ],
)
def test_relative_paths_keep_meaning_the_workspace(
    env: dict[str, str], command: list[str], variables: dict[str, str]
) -> None:
    made = plan(**env)
    line = made.command()
    assert any(line[i : i + len(command)] == command for i in range(len(line))), line
    assert {k: v for k, v in made.environment().items() if k.startswith("LLAMA_ARG_")} == variables


def test_llama_server_runs_in_a_directory_users_do_not_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ggml loads libggml-*.so from the working directory: not /workspace, the users' volume."""
    env, model = stand_in_server(tmp_path, f'pwd > "{tmp_path}/cwd"\nexit 1', monkeypatch)
    monkeypatch.setattr(service, "STATUS_FILE", tmp_path / "status")
    monkeypatch.chdir(tmp_path)  # where the launcher runs (Supervisor starts it in /workspace)
    service.Runner(plan(LLAMA_MODEL=str(model), LLAMA_CACHE=str(tmp_path / "cache")), env).attempt(1)
    assert (tmp_path / "cwd").read_text(encoding="utf-8").strip() == "/"


def test_llama_servers_output_falls_back_to_a_pipe_where_a_terminal_cannot_be_set_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """qemu's user emulation (an arm64 image on an amd64 machine) answers the terminal's settings
    with ENOSYS: the launcher then reads llama-server through a pipe instead of crashing."""
    import os
    import stat
    import termios

    from llama_serving import child

    def unsupported(fd: int) -> list[object]:
        raise termios.error(38, "Function not implemented")

    monkeypatch.setattr(termios, "tcgetattr", unsupported)
    reader, writer = child.open_terminal()
    try:
        assert stat.S_ISFIFO(os.fstat(reader).st_mode)
        os.write(writer, b"line\n")
        assert os.read(reader, 10) == b"line\n"
    finally:
        os.close(reader)
        os.close(writer)
