"""`trio-llm create`: a Modelfile becomes the JSON form of /api/create, with the local files
it names listed for upload by digest, as `ollama create` sends them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from trio_llm.cli.client import CLIError
from trio_llm.cli.create import request_body
from trio_llm.store.errors import InvalidModelfile, InvalidParameter


def test_a_modelfile_from_a_model_becomes_the_json_form(tmp_path: Path) -> None:
    text = '''FROM smollm2:135m
SYSTEM """You are terse."""
PARAMETER temperature 0.2
PARAMETER stop "<|im_end|>"
PARAMETER stop "User:"
PARAMETER num_ctx 4096
MESSAGE user Hi
MESSAGE assistant Hello.
LICENSE MIT
'''
    body, uploads = request_body("mine:latest", text, tmp_path)
    assert uploads == []
    assert body == {
        "model": "mine:latest", "from": "smollm2:135m", "system": "You are terse.",
        "parameters": {"temperature": 0.2, "stop": ["<|im_end|>", "User:"], "num_ctx": 4096},
        "messages": [{"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "Hello."}],
        "license": ["MIT"],
    }


def test_a_local_gguf_is_listed_for_upload_by_digest(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    model = tmp_path / "weights" / "model.gguf"
    model.write_bytes(b"GGUF" + bytes(100))
    body, uploads = request_body("mine", "FROM ./weights/model.gguf\n", tmp_path)
    digest = "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()
    assert body == {"model": "mine", "files": {"model.gguf": digest}}
    assert [(u.path, u.digest) for u in uploads] == [(model, digest)]


def test_missing_files_and_bad_lines_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CLIError, match="no such file: ./nothing.gguf"):
        request_body("mine", "FROM ./nothing.gguf\n", tmp_path)
    with pytest.raises(InvalidModelfile, match="line 2"):
        request_body("mine", "FROM smollm2:135m\nFLY away\n", tmp_path)
    with pytest.raises(InvalidParameter):
        request_body("mine", "FROM smollm2:135m\nPARAMETER temperature hot\n", tmp_path)
    with pytest.raises(InvalidModelfile, match="no such file"):
        request_body("mine", "FROM smollm2:135m\nADAPTER lora\n", tmp_path)
