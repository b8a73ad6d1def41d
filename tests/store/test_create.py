"""create: from a Modelfile (GGUF path, blob digest or existing model) and from the JSON form of
/api/create, with Ollama's statuses, layer inheritance and errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.store.conftest import tree
from trio_llm.prompt.library import CHATML
from trio_llm.store import (
    BlobNotFound,
    InvalidModelfile,
    InvalidParameter,
    InvalidRequest,
    ModelNotFound,
    NotGGUF,
    QuantizationNotSupported,
    Store,
    drain,
)

GGUF_DIGEST = "sha256:b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def statuses(stream) -> list[str]:   # type: ignore[no-untyped-def]
    reports: list[dict] = []
    drain(stream, reports.append)
    return [r["status"] for r in reports]


def test_modelfile_from_a_gguf_path_autodetects_chatml(store: Store, smollm2_path: Path) -> None:
    text = f"FROM ./{smollm2_path.name}\nPARAMETER temperature 0.2\n"
    seen = statuses(store.create_from_modelfile("mine", text, base_dir=smollm2_path.parent))
    assert seen[0] == "copying file" and "parsing GGUF" in seen
    assert "using autodetected template chatml" in seen
    assert f"using existing layer {GGUF_DIGEST}" in seen
    assert seen[-2:] == ["writing manifest", "success"]
    record = store.get("mine")
    assert record.model_digest == GGUF_DIGEST and record.template == CHATML
    assert record.params == {"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0.2}
    assert record.details.parameter_size == "135M" and record.details.parent_model == ""


def test_modelfile_from_an_existing_model_inherits_and_overrides(smol_store: Store) -> None:
    text = ('from smollm2:135m\nSYSTEM """You are a pirate."""\nPARAMETER temperature 0.5\n'
            'PARAMETER stop "Arr"\nMESSAGE user Hello\nMESSAGE assistant Arr!\n')
    seen = statuses(smol_store.create_from_modelfile("pirate", text))
    assert seen.count("writing manifest") == 1 and "parsing GGUF" not in seen
    pirate, base = smol_store.get("pirate"), smol_store.get("smollm2:135m")
    assert pirate.model_digest == base.model_digest and pirate.template == base.template
    assert pirate.licenses == base.licenses and pirate.system == "You are a pirate."
    assert pirate.params == {"stop": ["Arr"], "temperature": 0.5}   # a given list replaces
    assert pirate.messages == [{"role": "user", "content": "Hello"},
                               {"role": "assistant", "content": "Arr!"}]
    assert pirate.details.parent_model == "smollm2:135m"
    assert pirate.manifest.layers[0].source == "smollm2:135m"
    show = smol_store.show("pirate").to_json()
    assert show["system"] == "You are a pirate." and show["details"]["parent_model"]
    assert 'MESSAGE user Hello\nMESSAGE assistant Arr!\n' in show["modelfile"]
    assert "temperature                    0.5" in show["parameters"]


def test_json_create_from_uploaded_blob_files(store: Store, smollm2_path: Path) -> None:
    with open(smollm2_path, "rb") as f:
        drain(store.write_blob(f, GGUF_DIGEST))
    seen = statuses(store.create({
        "model": "ns/json:v1", "files": {"model.gguf": GGUF_DIGEST},
        "template": "{{ .Prompt }}", "system": "sys", "license": ["L1", "L2"],
        "parameters": {"num_ctx": 2048, "stop": ["</s>"]},
        "messages": [{"role": "user", "content": "hi"}]}))
    assert seen[:2] == ["parsing GGUF", f"using existing layer {GGUF_DIGEST}"]
    assert sum(s.startswith("creating new layer sha256:") for s in seen) == 6
    record = store.get("ns/json:v1")
    kinds = [x.media_type.rsplit(".", 1)[-1] for x in record.manifest.layers]
    assert kinds == ["model", "template", "system", "license", "license", "params", "messages"]
    assert record.template == "{{ .Prompt }}" and record.licenses == ["L1", "L2"]
    assert record.params == {"num_ctx": 2048, "stop": ["</s>"]}
    assert json.loads(store.blob_path(record.manifest.config.digest).read_bytes())[
        "model_family"] == "llama"


def test_json_create_from_existing_model_and_from_a_digest(smol_store: Store) -> None:
    drain(smol_store.create({"model": "a", "from": "smollm2:135m", "system": "S"}))
    assert smol_store.get("a").system == "S"
    drain(smol_store.create({"model": "b", "from": GGUF_DIGEST}))
    assert smol_store.get("b").template == CHATML   # autodetected from the GGUF


def test_recreating_a_model_replaces_it_under_its_stored_spelling(smol_store: Store) -> None:
    drain(smol_store.create({"model": "Mixed", "from": "smollm2:135m"}))
    drain(smol_store.create({"model": "mixed", "from": "smollm2:135m", "system": "new"}))
    assert [e.name.display for e in smol_store.list() if e.name.model.lower() == "mixed"] == [
        "Mixed:latest"]
    assert smol_store.get("MIXED").system == "new"


@pytest.mark.parametrize(("body", "error", "message"), [
    ({"model": "x"}, InvalidRequest, "neither 'from' or 'files' was specified"),
    ({}, InvalidRequest, "model is required"),
    ({"model": "x", "files": {"/etc/x.gguf": GGUF_DIGEST}}, InvalidRequest,
     "file path must be relative"),
    ({"model": "x", "files": {"../x.gguf": GGUF_DIGEST}}, InvalidRequest,
     "file path must be relative"),
    ({"model": "x", "files": {"m.gguf": "sha256:" + "0" * 64}}, BlobNotFound, "not found"),
    ({"model": "x", "from": "absent:model"}, ModelNotFound, "model 'absent:model' not found"),
    ({"model": "x", "from": "smollm2:135m", "quantize": "q4_K_M"}, QuantizationNotSupported,
     "quantization is only supported for F16, BF16 and F32 models"),
    ({"model": "x", "from": "smollm2:135m", "parameters": {"heat": 1}}, InvalidParameter,
     "unknown parameter 'heat'"),
    ({"model": "x", "from": "smollm2:135m", "messages": [{"role": "god", "content": ""}]},
     InvalidRequest, "role must be one of"),
    ({"model": "x", "from": "smollm2:135m", "adapters": {"a": GGUF_DIGEST, "b": GGUF_DIGEST}},
     InvalidRequest, "only one adapter is currently supported"),
])
def test_json_create_errors(smol_store: Store, body: dict, error: type, message: str) -> None:
    before = tree(smol_store.root / "manifests")
    with pytest.raises(error, match=message):
        drain(smol_store.create(body))
    assert tree(smol_store.root / "manifests") == before


def test_a_blob_that_is_not_gguf_is_refused(store: Store) -> None:
    digest, _ = store.blobs.write_bytes(b"not a gguf at all")
    with pytest.raises(NotGGUF, match="supplied file was not in GGUF format"):
        drain(store.create({"model": "x", "files": {"x.gguf": digest}}))


def test_modelfile_errors_carry_line_numbers(smol_store: Store, tmp_path: Path) -> None:
    with pytest.raises(InvalidModelfile, match=r"^\(line 3\): invalid float value 'hot'"):
        drain(smol_store.create_from_modelfile(
            "x", "FROM smollm2:135m\n# t\nPARAMETER temperature hot"))
    with pytest.raises(InvalidModelfile, match=r"^\(line 1\): no such file: ./missing.gguf"):
        drain(smol_store.create_from_modelfile("x", "FROM ./missing.gguf", base_dir=tmp_path))
    with pytest.raises(InvalidModelfile, match=r"^\(line 2\): DRAFT models are not supported"):
        drain(smol_store.create_from_modelfile("x", "FROM smollm2:135m\nDRAFT other"))


def test_servers_can_refuse_file_paths_in_modelfiles(store: Store, smollm2_path: Path) -> None:
    before = tree(store.root)
    with pytest.raises(InvalidModelfile, match="file paths are not allowed"):
        drain(store.create_from_modelfile("x", f"FROM {smollm2_path}", allow_paths=False))
    assert tree(store.root) == before


def test_an_adapter_layer_is_added_from_a_gguf_blob(smol_store: Store, tmp_path: Path,
                                                    smollm2_path: Path) -> None:
    os.link(smollm2_path, tmp_path / "lora.gguf")   # any GGUF will do for the store
    text = "FROM smollm2:135m\nADAPTER ./lora.gguf\n"
    drain(smol_store.create_from_modelfile("adapted", text, base_dir=tmp_path))
    record = smol_store.get("adapted")
    assert [p.name for p in record.adapter_paths] == [GGUF_DIGEST.replace(":", "-")]
    assert "ADAPTER " in smol_store.show("adapted").modelfile


def test_a_gguf_that_cannot_run_is_refused_naming_the_cause(store: Store, tmp_path: Path,
                                                            smollm2_path: Path) -> None:
    """create checks what loading would check: an unknown architecture is a 400 at create,
    not a 500 at the first request."""
    from trio_llm.errors import ModelFileError
    from trio_llm.testing.tiny_gguf import TinyModel, vocabulary_of

    model = TinyModel("mamba9", vocabulary_of(smollm2_path))
    model.meta("block_count", 1)
    model.tensor("token_embd.weight", (8, model.vocab_size))
    path = model.write(tmp_path / "odd.gguf")
    with pytest.raises(ModelFileError, match="unsupported model architecture 'mamba9'"):
        statuses(store.create_from_modelfile("odd", f"FROM ./{path.name}\n", base_dir=tmp_path))
    assert not store.exists("odd")
