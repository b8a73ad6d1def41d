"""create with quantize: an F16 GGUF (built from the real SmolLM2) becomes q4_K_M / q8_0 / q4_0
through the store's create path, and the result is a valid GGUF close to its source."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType
from gguf.quants import dequantize

from tests.store.conftest import tree
from trio_llm.formats.gguf_file import GGUFFile, read_gguf
from trio_llm.store import QuantizationNotSupported, Store, drain, quantize
from trio_llm.store.create import create, request_from_modelfile
from trio_llm.store.quantize import more_bits, parse_target

Q = GGMLQuantizationType
PROMPT = [504, 3575, 282, 4649, 314, 7042, 30, 378]
N_LAYERS = 30
MAX_RELATIVE_RMS = {Q.Q4_K: 0.08, Q.Q8_0: 0.01, Q.Q4_0: 0.15, Q.F32: 0.0}


def relative_rms(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.sqrt(np.mean((got - want) ** 2)) / np.sqrt(np.mean(want ** 2)))


def tensor_values(gguf: GGUFFile, name: str) -> np.ndarray:
    """A tensor decoded by the gguf package (the oracle), flat, as float32."""
    info = gguf.tensors[name]
    raw = np.frombuffer(gguf.tensor_bytes(name), np.uint8)
    return dequantize(raw, info.type).astype(np.float32).ravel()


def digest_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@pytest.fixture(scope="session")
def f16_path(tmp_path_factory: pytest.TempPathFactory, smollm2_reader: GGUFReader) -> Path:
    """SmolLM2 rewritten as an F16 model: 2-D weights F16, norms F32, all metadata copied."""
    path = tmp_path_factory.mktemp("f16") / "SmolLM2-135M-Instruct.F16.gguf"
    reader = smollm2_reader
    writer = GGUFWriter(path, reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        vtype = field.types[0]
        sub_type = field.types[1] if vtype == GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == "general.file_type":
            value = int(LlamaFileType.MOSTLY_F16)
        writer.add_key_value(field.name, value, vtype, sub_type)
    for tensor in reader.tensors:
        values = dequantize(tensor.data, tensor.tensor_type)
        values = values.reshape([int(d) for d in reversed(tensor.shape)])
        writer.add_tensor(tensor.name, values.astype(np.float32 if values.ndim == 1
                                                     else np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# Quantizing all of SmolLM2 to Q4_K_M takes ~10 s: the tests of that model are the full tier;
# the Q8_0 and Q4_0 creates below keep the quantizing create in the fast one
Q4_K_M_FULL = pytest.mark.full


@pytest.fixture(scope="module")
def q4km(tmp_path_factory: pytest.TempPathFactory, f16_path: Path) -> dict[str, Any]:
    """A store where the JSON form of create made "smol:q4km" from the uploaded F16 blob."""
    store = Store(tmp_path_factory.mktemp("q4km") / "models")
    digest = digest_of(f16_path)
    with open(f16_path, "rb") as f:
        drain(store.write_blob(f, digest))
    reports: list[dict[str, Any]] = []
    drain(store.create({"model": "smol:q4km", "files": {"model.gguf": digest},
                        "quantize": "q4_K_M"}), reports.append)
    record = store.get("smol:q4km")
    return {"store": store, "reports": reports, "record": record, "f16_digest": digest}


def expected_q4_k_m_type(name: str, shape: tuple[int, ...]) -> GGMLQuantizationType:
    """The documented q4_K_M mix, spelled out for SmolLM2 (rows of 576 or 1536, 30 layers)."""
    if len(shape) == 1:
        return Q.F32
    if name == "token_embd.weight" or shape[0] % 256:
        return Q.Q8_0
    layer = int(name.split(".")[1])
    assert name.endswith("ffn_down.weight")
    extra = layer < 3 or layer >= 26 or (layer - 3) % 3 == 2
    return Q.Q8_0 if extra else Q.Q4_K


@Q4_K_M_FULL
def test_create_quantize_reports_ollama_statuses_and_stores_a_new_layer(
        q4km: dict[str, Any], f16_path: Path) -> None:
    reports, record = q4km["reports"], q4km["record"]
    steps = [r["status"] for r in reports]
    quantizing = [r for r in reports if r["status"] == "quantizing F16 model to Q4_K_M"]
    assert quantizing and all(r["digest"] == "0000000000000000000" for r in quantizing)
    assert all(r["total"] == f16_path.stat().st_size for r in quantizing)
    assert quantizing[-1]["completed"] == quantizing[-1]["total"]
    assert steps.index("verifying conversion") > steps.index("quantizing F16 model to Q4_K_M")
    assert f"creating new layer {record.model_digest}" in steps
    assert steps[-2:] == ["writing manifest", "success"]
    assert record.model_digest != q4km["f16_digest"]
    assert record.details.quantization_level == "Q4_K_M"
    assert record.model_path.stat().st_size < f16_path.stat().st_size * 0.55
    leftovers = [p.name for p in record.model_path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@Q4_K_M_FULL
def test_quantized_gguf_opens_with_our_reader_and_the_gguf_package(
        q4km: dict[str, Any], f16_path: Path) -> None:
    path = q4km["record"].model_path
    reader = GGUFReader(path)
    assert reader.fields["general.file_type"].contents() == LlamaFileType.MOSTLY_Q4_K_M
    with read_gguf(path) as out, read_gguf(f16_path) as src:
        assert [t.name for t in reader.tensors] == list(out.tensors) == list(src.tensors)
        assert list(out.metadata) == list(src.metadata)      # same keys in the same order
        assert {k: v for k, v in out.metadata.items() if k != "general.file_type"} == {
            k: v for k, v in src.metadata.items() if k != "general.file_type"}
        assert len(out.metadata["tokenizer.ggml.tokens"]) == 49152
        for t in reader.tensors:
            info = out.tensors[t.name]
            assert tuple(int(d) for d in t.shape) == info.shape == src.tensors[t.name].shape
            assert t.tensor_type == info.type


@Q4_K_M_FULL
def test_q4_k_m_gives_each_tensor_the_documented_type(q4km: dict[str, Any]) -> None:
    with read_gguf(q4km["record"].model_path) as out:
        got = {name: info.type for name, info in out.tensors.items()}
        want = {name: expected_q4_k_m_type(name, info.shape)
                for name, info in out.tensors.items()}
    assert got == want
    assert sum(t == Q.Q4_K for t in got.values()) == 16


@Q4_K_M_FULL
def test_each_q4_k_m_tensor_dequantizes_close_to_the_f16_source(
        q4km: dict[str, Any], f16_path: Path) -> None:
    with read_gguf(q4km["record"].model_path) as out, read_gguf(f16_path) as src:
        for name, info in out.tensors.items():
            error = relative_rms(tensor_values(out, name), tensor_values(src, name))
            assert error <= MAX_RELATIVE_RMS[info.type], (name, info.type.name, error)


def test_modelfile_create_with_quantize_q8_0_any_case(tmp_path: Path, f16_path: Path) -> None:
    store = Store(tmp_path / "models")
    with store.pins() as pins:
        req = drain(request_from_modelfile(store, "smol:q8", f"FROM {f16_path}\n", None,
                                           True, pins))
        req.quantize = "Q8_0"
        steps: list[str] = []
        drain(create(store, req, pins), lambda r: steps.append(r["status"]))
    assert "quantizing F16 model to Q8_0" in steps
    record = store.get("smol:q8")
    assert record.details.quantization_level == "Q8_0"
    with read_gguf(record.model_path) as out, read_gguf(f16_path) as src:
        assert {info.type for info in out.tensors.values()} == {Q.Q8_0, Q.F32}
        for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight"):
            assert relative_rms(tensor_values(out, name), tensor_values(src, name)) < 0.01


def test_the_quantize_hook_writes_a_verified_q4_0_file_beside_its_source(
        f16_path: Path, tmp_path: Path) -> None:
    source = tmp_path / "model.gguf"
    source.symlink_to(f16_path)
    result = quantize(source, "q4_0")
    assert result.parent == tmp_path and result.name.startswith(".quantize-")
    with read_gguf(result) as out, read_gguf(f16_path) as src:
        assert out.metadata["general.file_type"] == LlamaFileType.MOSTLY_Q4_0
        types = {name: info.type for name, info in out.tensors.items()}
        assert types["token_embd.weight"] == Q.Q8_0       # tied: it is also the output
        assert types["blk.3.ffn_down.weight"] == Q.Q4_0 and types["output_norm.weight"] == Q.F32
        for name in ("blk.3.attn_k.weight", "blk.3.ffn_down.weight"):
            error = relative_rms(tensor_values(out, name), tensor_values(src, name))
            assert error < MAX_RELATIVE_RMS[Q.Q4_0]


def test_quantizing_an_already_quantized_model_is_refused(smol_store: Store) -> None:
    before = tree(smol_store.root)
    with pytest.raises(QuantizationNotSupported,
                       match="quantization is only supported for F16, BF16 and F32 models"):
        drain(smol_store.create({"model": "x", "from": "smollm2:135m", "quantize": "q4_K_M"}))
    assert tree(smol_store.root) == before   # no manifest, no blob, no temporary


@pytest.mark.parametrize("target", ["q5_K_M", "f16", "q4_k", "q4_K_M_extra"])
def test_an_unknown_target_is_refused_before_any_work(smol_store: Store, target: str) -> None:
    before = tree(smol_store.root)
    with pytest.raises(QuantizationNotSupported, match="unsupported quantization type"):
        drain(smol_store.create({"model": "x", "from": "absent:model", "quantize": target}))
    assert tree(smol_store.root) == before


@pytest.mark.parametrize(("text", "name"), [("q4_K_M", "Q4_K_M"), ("Q4_k_s", "Q4_K_S"),
                                            ("q8_0", "Q8_0"), (" Q4_0 ", "Q4_0")])
def test_targets_are_case_insensitive(text: str, name: str) -> None:
    assert parse_target(text).name == name


def test_the_more_bits_layers_are_the_first_and_last_eighth_and_every_third_between() -> None:
    assert [i for i in range(N_LAYERS) if more_bits(i, N_LAYERS)] == [
        0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]


def _matmul_works() -> bool:
    """The engine test needs the real matmul kernels (a weak placeholder refuses every type)."""
    from trio_llm._kernels import ffi, lib
    from trio_llm.engine.kernels import Pool
    pool = Pool(1)
    w = np.ones(32, np.float32)
    x = np.ones(32, np.float32)
    y = np.zeros(1, np.float32)
    status = lib.tl_matmul(pool.handle, lib.TL_F32, ffi.from_buffer(w), 1, 32,
                           ffi.cast("float *", ffi.from_buffer(x)), 1,
                           ffi.cast("float *", ffi.from_buffer(y)))
    return status != lib.TL_ERR_TYPE


def last_logits(path: Path) -> np.ndarray:
    from trio_llm.engine.batch import Batch
    from trio_llm.engine.model import Model
    model = Model.load(path, n_ctx=64, n_threads=2)
    return np.array(model.net.forward(Batch.sequence(PROMPT))[0], dtype=np.float64)


@pytest.mark.skipif(not _matmul_works(), reason="tl_matmul is still the weak placeholder")
@Q4_K_M_FULL
def test_the_engine_runs_the_q4_k_m_model_close_to_its_f16_source(
        q4km: dict[str, Any], f16_path: Path) -> None:
    want = last_logits(f16_path)
    got = last_logits(q4km["record"].model_path)
    assert int(np.argmax(got)) == int(np.argmax(want))
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.15


def test_f32_and_bf16_sources_quantize_too(tmp_path: Path) -> None:
    """A small synthetic model: F32 and BF16 weights, a custom alignment, a 1-D norm."""
    rng = np.random.default_rng(7)
    weights = {"blk.0.attn_q.weight": rng.standard_normal((8, 512)).astype(np.float32),
               "blk.0.ffn_down.weight": rng.standard_normal((4, 256)).astype(np.float32),
               "blk.0.attn_norm.weight": rng.standard_normal(512).astype(np.float32)}
    source = tmp_path / "tiny.gguf"
    writer = GGUFWriter(source, "llama")
    writer.add_uint32("llama.block_count", 1)
    writer.add_custom_alignment(64)
    writer.add_array("tokenizer.ggml.tokens", ["a", "b\u00e9", "<0x0A>"])
    writer.add_file_type(int(LlamaFileType.ALL_F32))
    for name, values in weights.items():
        if name.endswith("ffn_down.weight"):    # BF16: the top half of each float32
            raw = (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
            writer.add_tensor(name, raw.reshape(4, 512), raw_dtype=Q.BF16)
            weights[name] = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    result = quantize(source, "q4_K_M")
    with read_gguf(result) as out:
        assert out.metadata["general.alignment"] == 64
        assert out.metadata["tokenizer.ggml.tokens"] == ["a", "b\u00e9", "<0x0A>"]
        assert {n: t.type for n, t in out.tensors.items()} == {
            "blk.0.attn_q.weight": Q.Q4_K, "blk.0.ffn_down.weight": Q.Q8_0,   # layer 0: more bits
            "blk.0.attn_norm.weight": Q.F32}
        for name, values in weights.items():
            error = relative_rms(tensor_values(out, name), values.ravel())
            assert error <= MAX_RELATIVE_RMS[out.tensors[name].type], (name, error)
