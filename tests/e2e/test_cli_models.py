"""The model-building verbs of the real CLI against a live server: create from a Modelfile
(from a model, and from a local F16 GGUF uploaded as a blob and quantized by the server),
pull with its progress lines, push's clear error when no registry listens, help and
--version."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.e2e.conftest import MODEL, cli
from trio_llm import __version__
from trio_llm.config import Host
from trio_llm.server import EngineBackend
from trio_llm.testing.tiny_gguf import F16, tiny_llama


def tiny_f16_gguf(path: Path) -> Path:
    """A small complete F16 llama-architecture GGUF: one the server can import, quantize and
    run (create checks that a model file runs)."""
    return tiny_llama(kind=F16, seed=7).write(path)


async def test_create_from_a_model_keeps_the_modelfile_settings(
        live: tuple[Host, EngineBackend], tmp_path: Path) -> None:
    host = live[0]
    (tmp_path / "Modelfile").write_text(
        f'FROM {MODEL}\nSYSTEM """Answer in French."""\nPARAMETER temperature 0.3\n'
        "PARAMETER num_ctx 1024\nPARAMETER num_predict 48\n")  # an unseeded answer can run long
    code, out = await cli(host, "create", "french:1", cwd=tmp_path)
    assert code == 0, out
    assert out.splitlines()[0] == "gathering model components"
    assert out.splitlines()[-2:] == ["writing manifest", "success"]
    code, out = await cli(host, "show", "french:1", "--system")
    assert code == 0 and out.strip() == "Answer in French."
    code, out = await cli(host, "show", "french:1", "--parameters")
    assert "temperature" in out and "0.3" in out and "num_ctx" in out and "1024" in out
    code, out = await cli(host, "run", "french:1", "Say hi.")
    assert code == 0 and out.strip()
    assert (await cli(host, "rm", "french:1"))[0] == 0


async def test_create_uploads_a_local_gguf_once_and_quantizes_it(
        live: tuple[Host, EngineBackend], tmp_path: Path) -> None:
    host = live[0]
    tiny_f16_gguf(tmp_path / "tiny.gguf")
    modelfile = tmp_path / "build" / "Tiny.modelfile"
    modelfile.parent.mkdir()
    modelfile.write_text("FROM ../tiny.gguf\n")
    code, out = await cli(host, "create", "tiny:q4", "-f", str(modelfile), "-q", "q4_K_M")
    assert code == 0, out
    lines = out.splitlines()
    assert any(line.startswith("copied tiny.gguf (sha256:") for line in lines)
    assert "quantizing F16 model to Q4_K_M 100%" in lines
    assert lines[-1] == "success"
    code, out = await cli(host, "show", "tiny:q4")
    assert code == 0 and "Q4_K_M" in out
    code, out = await cli(host, "create", "tiny:f16", "-f", str(modelfile))
    assert code == 0 and "using existing layer sha256:" in out
    code, out = await cli(host, "list")
    assert "tiny:q4" in out and "tiny:f16" in out
    assert (await cli(host, "rm", "tiny:q4", "tiny:f16"))[0] == 0


async def test_create_reports_modelfile_mistakes_and_changes_nothing(
        live: tuple[Host, EngineBackend], tmp_path: Path) -> None:
    host = live[0]
    code, out = await cli(host, "create", "broken", cwd=tmp_path)
    assert code == 1 and "cannot read Modelfile" in out
    (tmp_path / "Modelfile").write_text(f"FROM {MODEL}\nPARAMETR temperature 1\n")
    code, out = await cli(host, "create", "broken", cwd=tmp_path)
    assert code == 1 and "Error: (line 2)" in out
    (tmp_path / "Modelfile").write_text("FROM no-such-model:7b\n")
    code, out = await cli(host, "create", "broken", cwd=tmp_path)
    assert code == 1 and "Error:" in out
    code, out = await cli(host, "list")
    assert "broken" not in out


async def test_pull_prints_plain_progress_lines_when_not_on_a_terminal(
        live: tuple[Host, EngineBackend]) -> None:
    code, out = await cli(live[0], "pull", MODEL)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "pulling manifest" and lines[-1] == "success"
    assert any(line.endswith("100%") and line.startswith("pulling ") for line in lines)
    assert "\r" not in out


async def test_push_to_a_host_where_no_registry_listens_fails_clearly(
        live: tuple[Host, EngineBackend]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{s.getsockname()[1]}"
    name = f"{host}/library/nowhere:1"
    assert (await cli(live[0], "cp", MODEL, name))[0] == 0
    code, out = await cli(live[0], "push", name, "--insecure")
    assert code == 1
    assert (f"Error: connection refused by registry http://{host}: is a registry listening "
            "there?") in out
    assert (await cli(live[0], "rm", name))[0] == 0


async def test_help_and_version(live: tuple[Host, EngineBackend]) -> None:
    code, out = await cli(live[0], "--version")
    assert code == 0 and out.strip() == f"trio-llm {__version__}"
    code, out = await cli(live[0], "help", "create")
    assert code == 0 and "--quantize" in out and "Modelfile" in out
    code, out = await cli(live[0], "help")
    assert code == 0 and all(verb in out for verb in ("serve", "run", "pull", "push",
                                                       "create", "list", "ps", "stop",
                                                       "rm", "cp", "show"))
