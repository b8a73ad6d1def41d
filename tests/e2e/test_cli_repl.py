"""`trio-llm run MODEL` at a terminal: the interactive session, driven through a pseudo-terminal
with pexpect against a real server (a subprocess, so that pexpect may block) holding the real
smollm2:135m."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pexpect
import pytest

import trio_llm
from trio_llm.cli.repl import go_duration, stats_text

MODEL = "smollm2:135m"
ROOT = Path(trio_llm.__file__).resolve().parent.parent   # the trio_llm these tests import
GREEDY = {"temperature": 0, "num_predict": 12, "num_ctx": 1024}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`trio-llm serve` on a free loopback port, as a separate process; its OLLAMA_HOST."""
    host = f"127.0.0.1:{free_port()}"
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "OLLAMA_HOST": host, "OLLAMA_MODELS": str(models_dir),
           "OLLAMA_CONTEXT_LENGTH": "2048", "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "trio_llm.cli", "serve"], env=env,
                                   stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://{host}/").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield host
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{server}", timeout=60) as client:
        yield client


def spawn(server: str, home: Path, *args: str) -> pexpect.spawn:
    """`trio-llm run MODEL` at a fresh pseudo-terminal, once its first prompt is up."""
    env = {**os.environ, "OLLAMA_HOST": server, "TERM": "dumb", "HOME": str(home),
           "PYTHONPATH": str(ROOT)}
    child = pexpect.spawn(sys.executable, ["-m", "trio_llm.cli", "run", MODEL, *args],
                          env=env, cwd=str(ROOT), encoding="utf-8", timeout=30,
                          dimensions=(40, 200))
    child.expect_exact(">>> ")
    return child


def say(child: pexpect.spawn, line: str, prompt: str = ">>> ") -> str:
    """Type a line; what the session printed before its next prompt (the echo left out)."""
    child.sendline(line)
    child.expect_exact(prompt)
    return child.before.replace("\r\n", "\n").split("\n", 1)[-1]


def set_options(child: pexpect.spawn, options: dict[str, object]) -> None:
    for name, value in options.items():
        assert say(child, f"/set parameter {name} {value}").strip() == (
            f"Set parameter '{name}' to '{value}'")


def test_repl_answers_with_the_whole_history_options_and_multiline_input(
        server: str, http: httpx.Client, tmp_path: Path) -> None:
    child = spawn(server, tmp_path)
    set_options(child, GREEDY)
    first = say(child, "What is the capital of France?")
    second = say(child, "And of Italy?")
    assert first.strip() and second.strip()
    [running] = http.get("/api/ps").json()["models"]
    assert running["context_length"] == 1024            # /set parameter reached the server

    shown = say(child, "/show parameters")
    assert shown.index("Model defined parameters:") < shown.index("User defined parameters:")
    assert "<|im_end|>" in shown and "num_ctx                        1024" in shown

    child.sendline('"""Say the word')
    child.expect_exact("... ")
    multiline = say(child, 'blue."""')
    assert multiline.strip()

    assert say(child, "/save repl-session:1").strip() == "Created new model 'repl-session:1'"
    assert say(child, "/load nothing-like-it").strip() == "Error: model 'nothing-like-it' not found"
    child.sendline("/load repl-session:1")                  # shows the saved conversation
    for shown in ("Loading model 'repl-session:1'\r\n>>> What is the capital of France?\r\n",
                  ">>> And of Italy?\r\n", ">>> Say the word\r\nblue.\r\n", ">>> "):
        child.expect_exact(shown)
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "What is the capital of France?" in (tmp_path / ".trio-llm" / "history").read_text()

    saved = http.post("/api/show", json={"model": "repl-session:1"}).json()
    http.request("DELETE", "/api/delete", json={"model": "repl-session:1"})
    messages = saved["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    assert [m["content"] for m in messages[::2]] == [
        "What is the capital of France?", "And of Italy?", "Say the word\nblue."]
    assert messages[1]["content"].strip() == first.strip()
    assert saved["parameters"].count("num_ctx") == 1 and "1024" in saved["parameters"]
    # the second answer is the greedy answer to the whole conversation, not to its last line
    again = http.post("/api/chat", json={"model": MODEL, "messages": messages[:3],
                                         "options": GREEDY, "stream": False}).json()
    assert again["message"]["content"] == messages[3]["content"]


def test_ctrl_c_stops_a_long_answer_and_the_server_serves_the_next(
        server: str, tmp_path: Path) -> None:
    child = spawn(server, tmp_path)
    set_options(child, {**GREEDY, "num_predict": 4000, "num_ctx": 2048})
    story = "Write a very long story about a dragon and a knight."
    child.sendline(story)
    child.expect_exact(story + "\r\n")                    # the echo of what was typed
    child.expect(r"\w+ \w+ \w+ \w+ \w+ ")                  # then the answer is on its way
    began = time.monotonic()
    child.sendintr()
    child.expect_exact(">>> ", timeout=5)
    set_options(child, {"num_predict": 8})
    assert say(child, "Say hi.").strip()          # one slot, so the story must have been cancelled
    assert time.monotonic() - began < 20          # (an open stream would hold it for minutes)
    child.sendintr()                                        # Ctrl-C at an empty prompt
    child.expect_exact("Use Ctrl + d or /bye to exit.")
    child.expect_exact(">>> ")
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_commands_system_clear_help_and_ctrl_d(server: str, tmp_path: Path) -> None:
    child = spawn(server, tmp_path)
    assert say(child, "/set system You are a pirate.").strip() == "Set system message."
    assert say(child, "/show system").strip() == "You are a pirate."
    assert "/set parameter <name> <value>" in say(child, "/? set")
    assert "/bye" in say(child, "/?")
    assert say(child, "/set verbose").strip() == "Set 'verbose' mode."
    assert say(child, "/clear").strip() == "Cleared session context"
    assert say(child, "/frobnicate").strip() == "Unknown command '/frobnicate'. Type /? for help"
    assert "unknown parameter 'colour'" in say(child, "/set parameter colour red")
    child.send("half a line")
    child.expect_exact("half a line")                       # echoed: readline has it
    child.sendintr()                                        # Ctrl-C drops a half-typed line
    child.expect_exact(">>> ")
    assert "Use Ctrl + d" not in child.before
    set_options(child, {**GREEDY, "num_predict": 4})
    answer = say(child, "Hello")
    assert "eval count:" in answer and "prompt eval rate:" in answer   # /set verbose
    child.sendeof()                                         # Ctrl-D at the prompt
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_run_pulls_a_missing_model_before_anything_else(server: str) -> None:
    env = {**os.environ, "OLLAMA_HOST": server, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "trio_llm.cli", "run", "nothing-like-it",
                           "Hi"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    out = done.stdout + done.stderr       # the pull's error, not /api/show's 404
    assert done.returncode == 1 and "file does not exist" in out and "not found" not in out


def test_durations_print_as_go_prints_a_time_duration() -> None:
    assert [go_duration(ns) for ns in (0, 850, 12_500, 3_200_000, 1_500_000_000,
                                       123_250_000_000, 3_600_000_000_000)] == [
        "0s", "850ns", "12.5µs", "3.2ms", "1.5s", "2m3.25s", "1h0m0s"]


def test_verbose_stats_list_the_final_chunks_counters_and_rates() -> None:
    text = stats_text({"total_duration": 2_000_000_000, "load_duration": 5_000_000,
                       "prompt_eval_count": 30, "prompt_eval_duration": 500_000_000,
                       "eval_count": 1, "eval_duration": 250_000_000})
    assert text.splitlines() == [
        "total duration:       2s", "load duration:        5ms",
        "prompt eval count:    30 token(s)", "prompt eval duration: 500ms",
        "prompt eval rate:     60.00 tokens/s", "eval count:           1 token(s)",
        "eval duration:        250ms", "eval rate:            4.00 tokens/s"]
