"""The HEALTHCHECK's decision, the portal's log rendering and the log copier (pure parts, files in a
temporary folder)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from llama_runtime import logs
from llama_runtime.health import problems, waiting_for
from llama_runtime.logs import Follower, clean_copy, followed_files, program_log, render_progress, tail
from llama_runtime.services import Service

LLAMA = Service("llama", "llama.cpp server", 8000, 18000, program="llama", essential=True)
JUPYTER = Service("jupyter", "Jupyter", 8080, 18080, program="jupyter")


def running(*names: str, **states: str) -> dict[str, dict[str, str]]:
    found = {name: {"statename": "RUNNING"} for name in names}
    found.update({name: {"statename": state} for name, state in states.items()})
    return found


def test_healthy_when_the_proxy_and_essential_services_answer(tmp_path: Path) -> None:
    assert problems((LLAMA, JUPYTER), running("proxy", "llama"), lambda h, p: True, tmp_path) == []


def test_unhealthy_when_the_proxy_is_down(tmp_path: Path) -> None:
    assert problems((LLAMA,), running("llama", proxy="FATAL"), lambda h, p: True, tmp_path) == ["proxy is FATAL"]
    assert problems((LLAMA,), running("proxy", "llama"), lambda h, p: p != 8000, tmp_path) == [
        "proxy does not answer on port 8000"
    ]


def test_an_essential_service_fatal_or_silent_is_unhealthy_unless_it_says_it_is_starting(tmp_path: Path) -> None:
    assert problems((LLAMA,), running("proxy", llama="FATAL"), lambda h, p: True, tmp_path) == [
        "llama: program llama is FATAL"
    ]
    silent = problems((LLAMA,), running("proxy", "llama"), lambda h, p: p != 18000, tmp_path)
    assert silent == ["llama: RUNNING but port 18000 does not answer"]
    (tmp_path / "llama").write_text("downloading 42%\n")
    assert problems((LLAMA,), running("proxy", "llama"), lambda h, p: p != 18000, tmp_path) == []
    # Stopped on purpose (no model) is not a failure; a non-essential FATAL neither.
    assert (
        problems((LLAMA, JUPYTER), running("proxy", llama="EXITED", jupyter="FATAL"), lambda h, p: True, tmp_path) == []
    )


def test_carriage_return_progress_renders_as_its_last_state(tmp_path: Path) -> None:
    assert render_progress("start\n 10%\r 50%\r100%\ndone") == "start\n100%\ndone"
    log = tmp_path / "x.log"
    log.write_bytes(b"a" * 100 + b"\nline\n 1%\r 2%\r")
    assert tail(log, max_bytes=20) == "line\n 2%"


PORTAL = Service("portal", "Instance Portal", 1111, 11111, program="portal", essential=True)


def test_jupyter_waits_for_essential_services_that_are_still_coming_up() -> None:
    asked: list[bool] = []

    def programs(**states: str) -> Callable[[], dict[str, dict[str, str]]]:
        def read() -> dict[str, dict[str, str]]:
            asked.append(True)
            return running("proxy", "llama", "portal", **states)

        return read

    services = (LLAMA, PORTAL, JUPYTER)
    assert waiting_for(services, lambda h, p: True, programs()) == []
    assert asked == []  # every port answers: Supervisor is not asked
    assert waiting_for(services, lambda h, p: p != 18000, programs()) == [LLAMA]
    assert waiting_for(services, lambda h, p: False, programs()) == [LLAMA, PORTAL]
    # A program that gave up or ended (no model configured) is not waited for; Jupyter never is.
    for state in ("FATAL", "EXITED", "STOPPED"):
        assert waiting_for(services, lambda h, p: p != 18000, programs(llama=state)) == []
    assert waiting_for(services, lambda h, p: p != 18000, programs(llama="BACKOFF")) == [LLAMA]
    # The portal waits for the others, not for itself.
    assert waiting_for(services, lambda h, p: False, programs(), exclude="portal") == [LLAMA]


def test_each_programs_log_gets_a_clean_copy_beside_the_portal_folder(tmp_path: Path) -> None:
    """The reference's layout: raw output in portal/<program>.log (the portal tails it), a clean
    copy in <program>.log, growing as the program writes, and the same lines in `docker logs`."""
    raw = program_log("llama", tmp_path)
    raw.parent.mkdir()
    raw.write_bytes(b"old line from an earlier boot\n")
    quiet = program_log("portal", tmp_path)
    quiet.touch()
    out = io.StringIO()
    follower = Follower(out, start={raw: raw.stat().st_size})
    follower.copy_new_lines(followed_files(tmp_path))
    assert (tmp_path / "portal.log").read_text() == (tmp_path / "llama.log").read_text() == ""  # there, empty
    with raw.open("ab") as handle:
        handle.write(b"\x1b[32mloading\x1b[0m model\n 10%\r 60%\r100%\npartial")
    follower.copy_new_lines(followed_files(tmp_path))
    assert clean_copy(raw) == tmp_path / "llama.log"
    assert (tmp_path / "llama.log").read_text() == "loading model\n100%\n"
    assert out.getvalue() == "llama | loading model\nllama | 100%\n"
    with raw.open("ab") as handle:
        handle.write(b" line\n")
    follower.copy_new_lines(followed_files(tmp_path))
    assert (tmp_path / "llama.log").read_text() == "loading model\n100%\npartial line\n"
    assert raw.read_bytes().startswith(b"old line")  # the raw log keeps what was written


def test_a_clean_copy_that_cannot_be_written_is_said_once_and_the_copy_to_stdout_goes_on(tmp_path: Path) -> None:
    raw = program_log("jupyter", tmp_path)
    raw.parent.mkdir()
    (tmp_path / "jupyter.log").mkdir()  # not a file: cannot be appended to
    out = io.StringIO()
    follower = Follower(out)
    for line in (b"one\n", b"two\n"):
        with raw.open("ab") as handle:
            handle.write(line)
        follower.copy_new_lines([raw])
    lines = out.getvalue().splitlines()
    assert [line for line in lines if line.startswith("jupyter | ")] == ["jupyter | one", "jupyter | two"]
    assert sum("cannot write the clean copy" in line for line in lines) == 1


def test_a_clean_copy_past_its_limit_is_moved_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "CLEAN_COPY_MAX_BYTES", 10)
    raw = logs.program_log("proxy", tmp_path)
    raw.parent.mkdir()
    raw.write_bytes(b"0123456789abc\n")
    follower = logs.Follower(io.StringIO())
    follower.copy_new_lines([raw])
    assert (tmp_path / "proxy.log.1").read_text() == "0123456789abc\n"
    with raw.open("ab") as handle:
        handle.write(b"next\n")
    follower.copy_new_lines([raw])
    assert (tmp_path / "proxy.log").read_text() == "next\n"


def test_a_programs_detail_log_stays_out_of_docker_logs(tmp_path: Path) -> None:
    """portal/<program>.detail.log is kept in the files, never copied to the container's output."""
    raw = program_log("llama", tmp_path)
    raw.parent.mkdir()
    raw.write_bytes(b"[llama] task 5: 20 prompt + 4 generated tokens in 4.7 ms\n")
    logs.detail_log("llama", tmp_path).write_bytes(b"0.02.311.470 I slot launch_slot_: id  1 | task 5 |\n")
    assert followed_files(tmp_path) == [raw]
    out = io.StringIO()
    Follower(out).copy_new_lines(followed_files(tmp_path))
    assert out.getvalue() == "llama | [llama] task 5: 20 prompt + 4 generated tokens in 4.7 ms\n"


def test_a_rotating_file_never_grows_past_its_cap_and_keeps_one_older_file(tmp_path: Path) -> None:
    path = tmp_path / "portal" / "llama.detail.log"
    detail = logs.RotatingFile(path, max_bytes=100)
    for number in range(47):
        detail.write(f"line {number:03d} of the detail")  # 25 bytes each: moved aside every 5th
    detail.close()
    assert path.stat().st_size <= 100 and (tmp_path / "portal/llama.detail.log.1").stat().st_size <= 125
    kept = (tmp_path / "portal/llama.detail.log.1").read_text() + path.read_text()
    assert kept.splitlines()[-1] == "line 046 of the detail"
    assert sorted(p.name for p in path.parent.iterdir()) == ["llama.detail.log", "llama.detail.log.1"]
    # Opened again (the next start of the program), it counts what is already there.
    again = logs.RotatingFile(path, max_bytes=100)
    for number in range(10):
        again.write(f"more {number:03d} of the detail")
    again.close()
    assert path.stat().st_size <= 100


def test_a_rotating_file_that_cannot_be_written_says_why_once(tmp_path: Path) -> None:
    (tmp_path / "portal").write_text("a file where the folder should be")
    detail = logs.RotatingFile(tmp_path / "portal" / "llama.detail.log")
    detail.write("one")
    detail.write("two")
    assert detail.problem.startswith(f"cannot write {tmp_path / 'portal' / 'llama.detail.log'}")
