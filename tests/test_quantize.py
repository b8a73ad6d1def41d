"""The C block codecs against the gguf package: bit-exact decoding, encoding and error bounds."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader
from gguf import quants as gq

from tests.kernel_calls import size_of
from trio_llm._kernels import ffi, lib

QT = GGMLQuantizationType
TL_OK, TL_ERR_TYPE, TL_ERR_SIZE, TL_ERR_ARG = (lib.TL_OK, lib.TL_ERR_TYPE, lib.TL_ERR_SIZE,
                                               lib.TL_ERR_ARG)

# Offsets of the f16 scale fields in each block, read from the C structs themselves.
HALF_FIELDS = {
    "Q4_0": ["d"], "Q4_1": ["d", "m"], "Q5_0": ["d"], "Q5_1": ["d", "m"], "Q8_0": ["d"],
    "Q8_1": ["d", "s"], "Q2_K": ["d", "dmin"], "Q3_K": ["d"], "Q4_K": ["d", "dmin"],
    "Q5_K": ["d", "dmin"], "Q6_K": ["d"],
}
GGUF_DECODED = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]

# Q4_K round-trip bound on N(0, 1) data, as RMS(error) / RMS(x). Our encoder reaches 0.0698
# (gguf's Q4_0: 0.0857, Q4_1: 0.0782); 4 bits over the ~4.3 sigma range of 32 samples cannot go
# far below step / sqrt(12) ~ 0.08 of sigma, so 0.05 is out of reach: the bound keeps ~7% margin.
Q4_K_RMS_BOUND = 0.075


def struct_name(name: str) -> str:
    """The C struct of a block format: Q4_K -> tl_block_q4_K."""
    return f"tl_block_{name[:-1].lower()}{name[-1]}"


def dequantize(type_id: int, raw: np.ndarray, n: int) -> np.ndarray:
    """tl_dequantize of n elements; asserts success."""
    out = np.full(n, np.nan, np.float32)
    status = lib.tl_dequantize(type_id, ffi.from_buffer(raw),
                               ffi.from_buffer("float[]", out, require_writable=True), n)
    assert status == TL_OK
    return out


def quantize(type_id: int, x: np.ndarray) -> np.ndarray:
    """tl_quantize of a float32 vector into fresh bytes; asserts success."""
    x = np.ascontiguousarray(x, np.float32)
    nbytes = size_of(lib.tl_row_bytes, type_id, x.size)
    assert nbytes >= 0
    raw = np.zeros(nbytes, np.uint8)
    status = lib.tl_quantize(type_id, ffi.from_buffer("float[]", x),
                             ffi.from_buffer(raw, require_writable=True), x.size)
    assert status == TL_OK
    return raw


def random_halves(rng: np.random.Generator, n: int) -> np.ndarray:
    """Finite f16 values of either sign from 2^-18 (subnormal) to 2^4."""
    mag = np.exp2(rng.uniform(-18.0, 4.0, n))
    return (mag * rng.choice([-1.0, 1.0], n)).astype(np.float16)


def random_blocks(rng: np.random.Generator, name: str, n_blocks: int) -> np.ndarray:
    """Random bytes for n_blocks of a format, with finite f16 scales (float d for Q8_K)."""
    size = GGML_QUANT_SIZES[QT[name]][1] if name != "Q8_1" else ffi.sizeof("tl_block_q8_1")
    raw = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    for field in HALF_FIELDS.get(name, []):
        off = ffi.offsetof(struct_name(name), field)
        raw[:, off:off + 2] = random_halves(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    if name == "Q8_K":
        off = ffi.offsetof("tl_block_q8_K", "d")
        d = rng.standard_normal(n_blocks).astype(np.float32)
        raw[:, off:off + 4] = d.view(np.uint8).reshape(n_blocks, 4)
    return raw


def bits(a: np.ndarray) -> np.ndarray:
    """float32 values as their bit patterns, so -0.0 != 0.0 and comparisons are exact."""
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def gaussian_blocks(rng: np.random.Generator, n: int, block: int) -> np.ndarray:
    """N(0, 1) values with each block scaled by its own factor (1e-3 .. 1e2)."""
    x = rng.standard_normal(n).astype(np.float32)
    scale = np.exp(rng.uniform(np.log(1e-3), np.log(1e2), n // block)).astype(np.float32)
    return (x.reshape(-1, block) * scale[:, None]).ravel()


# --- decoding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n_blocks", [1, 5, 64])
@pytest.mark.parametrize("name", GGUF_DECODED)
def test_dequantize_matches_gguf_bit_for_bit(name: str, n_blocks: int) -> None:
    rng = np.random.default_rng(1000 * n_blocks + QT[name].value)
    raw = random_blocks(rng, name, n_blocks)
    n = n_blocks * GGML_QUANT_SIZES[QT[name]][0]
    ours = dequantize(QT[name].value, raw, n)
    ref = gq.dequantize(raw, QT[name]).ravel()
    np.testing.assert_array_equal(bits(ours), bits(ref))


@pytest.mark.parametrize("name", ["F16", "BF16", "F32"])
def test_float_formats_decode_like_gguf_bit_for_bit(name: str) -> None:
    rng = np.random.default_rng(7)
    n = 4099
    if name == "F32":
        vals = rng.integers(0, 2**32, n, dtype=np.uint32)
        vals[(vals & 0x7F800000) == 0x7F800000] &= 0xBFFFFFFF  # no inf or NaN
        raw = vals.view(np.uint8)
    else:
        exp_mask = 0x7C00 if name == "F16" else 0x7F80
        vals = rng.integers(0, 2**16, n, dtype=np.uint16)
        vals[(vals & exp_mask) == exp_mask] &= ~np.uint16(0x4000)
        raw = vals.view(np.uint8)
    ours = dequantize(QT[name].value, raw, n)
    ref = gq.dequantize(raw, QT[name]).ravel()
    np.testing.assert_array_equal(bits(ours), bits(ref))


@pytest.mark.parametrize("name", ["Q8_1", "Q8_K"])
def test_q8_1_and_q8_k_decode_as_scale_times_quant(name: str) -> None:
    """gguf has no decoder for these activation formats: the definition is y = d * q."""
    rng = np.random.default_rng(3)
    raw = random_blocks(rng, name, 9)
    n_per = 32 if name == "Q8_1" else 256
    ours = dequantize(getattr(lib, f"TL_{name}"), raw, 9 * n_per)
    st = struct_name(name)
    d_off, q_off = ffi.offsetof(st, "d"), ffi.offsetof(st, "qs")
    if name == "Q8_1":
        d = raw[:, d_off:d_off + 2].copy().view(np.float16).astype(np.float32)
    else:
        d = raw[:, d_off:d_off + 4].copy().view(np.float32)
    q = raw[:, q_off:q_off + n_per].view(np.int8).astype(np.float32)
    np.testing.assert_array_equal(bits(ours), bits((d * q).ravel()))


def test_smollm2_tensors_decode_like_gguf(smollm2_reader: GGUFReader) -> None:
    """Real Q8_0 embeddings and Q4_1 weights decode exactly as the gguf package decodes them."""
    tensors = {t.name: t for t in smollm2_reader.tensors}
    for name, rows in [("token_embd.weight", slice(0, 2048)),
                       ("token_embd.weight", slice(47104, 49152)),
                       ("blk.0.attn_q.weight", slice(None)),
                       ("blk.29.ffn_down.weight", slice(None))]:
        t = tensors[name]
        raw = np.ascontiguousarray(t.data[rows])
        row_len = int(t.shape[0])  # ggml order: ne0 is the row length
        assert raw.shape[1] == size_of(lib.tl_row_bytes, t.tensor_type.value, row_len)
        ours = dequantize(t.tensor_type.value, raw, raw.shape[0] * row_len)
        ref = gq.dequantize(raw, t.tensor_type).ravel()
        np.testing.assert_array_equal(bits(ours), bits(ref), err_msg=name)
    assert tensors["token_embd.weight"].tensor_type == QT.Q8_0
    assert tensors["blk.0.attn_q.weight"].tensor_type == QT.Q4_1

    embd = tensors["token_embd.weight"]
    ids = np.array([0, 1, 49151, 576, 1], np.int32)
    out = get_rows(embd.tensor_type.value, np.ascontiguousarray(embd.data), 576, 49152, ids)
    ref = gq.dequantize(np.ascontiguousarray(embd.data[ids]), QT.Q8_0)
    np.testing.assert_array_equal(bits(out), bits(ref))


# --- encoding ---------------------------------------------------------------------------------

def special_blocks() -> np.ndarray:
    """Blocks of 32 that stress the reference scheme: zeros, ties, halves, tiny and huge."""
    blocks = [np.zeros(32), np.full(32, -1.5), np.full(32, 2.0)]
    tie = np.linspace(-3, 3, 32)
    tie[5], tie[20] = 3.0, -3.0                               # equal magnitudes, both signs
    blocks.append(tie)
    blocks.append(np.arange(-16, 16) * 0.5)                   # exact halves of the step
    blocks.append(np.arange(32) * 127.0 / 31 - 63.5)
    blocks.append(np.linspace(-1, 1, 32) * 1e-6)              # d becomes an f16 subnormal
    blocks.append(np.linspace(-1, 1, 32) * 1e5)
    blocks.append(np.where(np.arange(32) == 7, 8.0, 0.01))
    return np.concatenate(blocks).astype(np.float32)


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0"])
def test_quantize_matches_gguf_byte_for_byte(name: str) -> None:
    rng = np.random.default_rng(11)
    x = np.concatenate([special_blocks(), gaussian_blocks(rng, 32 * 2000, 32)])
    ours = quantize(QT[name].value, x)
    ref = gq.quantize(x.reshape(-1, 32), QT[name]).ravel()
    np.testing.assert_array_equal(ours, ref)


def test_f16_quantize_rounds_to_nearest_even_like_numpy() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([
        rng.standard_normal(5000) * np.exp2(rng.uniform(-30, 18, 5000)),
        [65504.0, 65519.99, 65520.0, 1e6, -1e6, 2.0**-24, 2.0**-25, 2.0**-25 * 1.0001, 0.0, -0.0],
        np.float32(1.0) + np.float32(2.0**-11) * np.arange(0, 8),  # ties between halves
    ]).astype(np.float32)
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16)
    ours = quantize(lib.TL_F16, x).view(np.uint16)
    np.testing.assert_array_equal(ours, ref.view(np.uint16))
    back = dequantize(lib.TL_F16, ours.view(np.uint8), x.size)
    np.testing.assert_array_equal(bits(back), bits(ref.astype(np.float32)))


def test_bf16_quantize_matches_gguf_including_nan_and_inf() -> None:
    rng = np.random.default_rng(6)
    specials = np.array([np.inf, -np.inf, np.nan, 3.4e38, -0.0, 1e-40], np.float32)
    ties = (np.arange(1, 9, dtype=np.uint32) << 16 | 0x8000).view(np.float32) + np.float32(0)
    x = np.concatenate([rng.standard_normal(4000).astype(np.float32) * 100, specials,
                        np.ascontiguousarray(ties)])
    ours = quantize(lib.TL_BF16, x)
    ref = gq.quantize(x.reshape(1, -1), QT.BF16).ravel()
    np.testing.assert_array_equal(ours, ref)
    back = dequantize(lib.TL_BF16, ours, x.size)
    finite = np.isfinite(x) & (np.abs(x) < 3e38)
    np.testing.assert_allclose(back[finite], x[finite], rtol=2.0**-8, atol=1e-38)


def test_f32_quantize_is_a_copy() -> None:
    x = np.random.default_rng(8).standard_normal(100).astype(np.float32)
    np.testing.assert_array_equal(quantize(lib.TL_F32, x).view(np.float32), x)


def block_scales(raw: np.ndarray, name: str) -> np.ndarray:
    """The stored f16 d of each Q8_0 / Q4_0 block, as float32."""
    size = GGML_QUANT_SIZES[QT[name]][1]
    return raw.reshape(-1, size)[:, :2].copy().view(np.float16).astype(np.float32).ravel()


def test_q8_0_round_trip_error_is_at_most_half_a_step() -> None:
    """|x - y| <= d/2 per element, plus the f16 rounding of d times |q| <= 127: at most
    127 * 2^-11 d < d/16 where d is a normal f16 (subnormal d rounds more coarsely)."""
    rng = np.random.default_rng(12)
    x = gaussian_blocks(rng, 32 * 4000, 32)
    raw = quantize(lib.TL_Q8_0, x)
    y = dequantize(lib.TL_Q8_0, raw, x.size)
    d16 = np.repeat(block_scales(raw, "Q8_0"), 32)
    d32 = np.repeat(np.abs(x).reshape(-1, 32).max(axis=1) / np.float32(127), 32)
    q = raw.reshape(-1, 34)[:, 2:].view(np.int8).astype(np.float64).ravel()
    bound = d32 / 2 + np.abs(q) * np.abs(d16 - d32) + 1e-6 * np.abs(x)
    assert (np.abs(x - y) <= bound).all()
    normal = d16 >= 2.0**-14
    assert normal.sum() > x.size // 2
    assert (np.abs(x - y)[normal] <= 0.5625 * d16[normal] * (1 + 1e-6)).all()


def test_q4_0_round_trip_error_is_at_most_half_a_step_inside_the_range() -> None:
    """Q4_0 maps the largest-magnitude value m to -8 d; values beyond +7.5 d on the other side
    clamp to 7 d. So |x - y| <= |d|/2 inside, <= |d| at that clamped end (plus f16 rounding)."""
    rng = np.random.default_rng(13)
    x = gaussian_blocks(rng, 32 * 4000, 32)
    raw = quantize(lib.TL_Q4_0, x)
    y = dequantize(lib.TL_Q4_0, raw, x.size)
    d16 = np.repeat(block_scales(raw, "Q4_0"), 32).astype(np.float64)
    m = x.reshape(-1, 32)[np.arange(x.size // 32), np.abs(x).reshape(-1, 32).argmax(axis=1)]
    d32 = np.repeat(m / np.float32(-8), 32).astype(np.float64)
    err = np.abs(x.astype(np.float64) - y)
    f16_term = 8 * np.abs(d16 - d32) + 1e-6 * np.abs(x)
    inside = x / d32 <= 7.5
    assert (err[inside] <= np.abs(d32[inside]) / 2 + f16_term[inside]).all()
    assert (err <= np.abs(d32) + f16_term).all()
    assert (~inside).sum() > 0  # the clamped end does occur in Gaussian data


def rms_ratio(x: np.ndarray, y: np.ndarray) -> float:
    """RMS(x - y) / RMS(x) in float64."""
    x64 = x.astype(np.float64)
    return float(np.sqrt(np.mean((x64 - y) ** 2) / np.mean(x64 ** 2)))


def test_q4_k_round_trip_error_is_small_on_gaussian_data() -> None:
    rng = np.random.default_rng(14)
    x = rng.standard_normal(256 * 256).astype(np.float32)
    raw = quantize(lib.TL_Q4_K, x)
    y = dequantize(lib.TL_Q4_K, raw, x.size)
    ratio = rms_ratio(x, y)
    assert ratio < Q4_K_RMS_BOUND
    for other in (QT.Q4_0, QT.Q4_1):  # a 4.5-bit code should beat the 4.5/5-bit simple ones
        ref = gq.dequantize(gq.quantize(x.reshape(-1, 256), other), other).ravel()
        assert ratio < rms_ratio(x, ref), other.name


def test_q4_k_keeps_per_block_scale_differences() -> None:
    """Super-blocks of very different magnitudes each keep their relative precision."""
    rng = np.random.default_rng(15)
    x = gaussian_blocks(rng, 256 * 64, 256)
    y = dequantize(lib.TL_Q4_K, quantize(lib.TL_Q4_K, x), x.size)
    per_block = [rms_ratio(a, b) for a, b in zip(x.reshape(-1, 256), y.reshape(-1, 256),
                                                 strict=True)]
    assert max(per_block) < 0.09


def test_q4_k_output_decodes_identically_in_gguf() -> None:
    """Our packing of scales, mins and nibbles is the one the format (and gguf) reads."""
    rng = np.random.default_rng(16)
    x = gaussian_blocks(rng, 256 * 32, 32)  # sub-blocks of different magnitudes
    raw = quantize(lib.TL_Q4_K, x)
    ours = dequantize(lib.TL_Q4_K, raw, x.size)
    ref = gq.dequantize(raw.reshape(-1, 144), QT.Q4_K).ravel()
    np.testing.assert_array_equal(bits(ours), bits(ref))
    assert rms_ratio(x, ours) < Q4_K_RMS_BOUND


@pytest.mark.parametrize("kind", ["zeros", "constant_negative", "constant_positive",
                                  "all_positive", "one_spike"])
def test_q4_k_handles_degenerate_blocks(kind: str) -> None:
    rng = np.random.default_rng(17)
    x = {
        "zeros": np.zeros(256),
        "constant_negative": np.full(256, -0.75),
        "constant_positive": np.full(256, 3.0),
        "all_positive": rng.uniform(1.0, 2.0, 256),
        "one_spike": np.where(np.arange(256) == 100, 50.0, rng.standard_normal(256) * 0.01),
    }[kind].astype(np.float32)
    y = dequantize(lib.TL_Q4_K, quantize(lib.TL_Q4_K, x), 256)
    assert np.isfinite(y).all()
    if kind == "zeros":
        assert (y == 0).all()
    else:  # constants are exact up to the f16 rounding of d or dmin
        bound = 1e-3 if kind.startswith("constant") else 0.05
        assert np.max(np.abs(x - y)) <= bound * np.max(np.abs(x))


# --- get_rows ---------------------------------------------------------------------------------

def get_rows(type_id: int, table: np.ndarray, row_len: int, n_rows: int,
             ids: np.ndarray) -> np.ndarray:
    """tl_get_rows into a fresh [len(ids), row_len] array; asserts success."""
    out = np.full((ids.size, row_len), np.nan, np.float32)
    status = lib.tl_get_rows(type_id, ffi.from_buffer(table), row_len, n_rows,
                             ffi.from_buffer("int32_t[]", ids), ids.size,
                             ffi.from_buffer("float[]", out, require_writable=True))
    assert status == TL_OK
    return out


@pytest.mark.parametrize("name", ["F32", "F16", "Q8_0", "Q4_1", "Q4_K", "Q6_K"])
def test_get_rows_gathers_dequantized_rows(name: str) -> None:
    rng = np.random.default_rng(21)
    row_len, n_rows = 512, 10
    if name in ("F32", "F16"):
        dtype = np.float32 if name == "F32" else np.float16
        table = rng.standard_normal((n_rows, row_len)).astype(dtype).view(np.uint8)
    else:
        blocks_per_row = row_len // GGML_QUANT_SIZES[QT[name]][0]
        table = random_blocks(rng, name, n_rows * blocks_per_row).reshape(n_rows, -1)
    ids = np.array([3, 0, 9, 3], np.int32)
    out = get_rows(QT[name].value, table, row_len, n_rows, ids)
    full = dequantize(QT[name].value, table, n_rows * row_len).reshape(n_rows, row_len)
    np.testing.assert_array_equal(bits(out), bits(full[ids]))


@pytest.mark.parametrize("bad_id", [10, -1, 2**31 - 1, -(2**31)])
def test_get_rows_refuses_out_of_range_ids_without_writing(bad_id: int) -> None:
    rng = np.random.default_rng(22)
    table = random_blocks(rng, "Q8_0", 10 * 2)  # 10 rows of 64
    ids = np.array([1, 2, bad_id, 4], np.int32)
    out = np.full(5 * 64, 7.0, np.float32)  # one row more than asked for: a guard zone
    status = lib.tl_get_rows(lib.TL_Q8_0, ffi.from_buffer(table), 64, 10,
                             ffi.from_buffer("int32_t[]", ids), ids.size,
                             ffi.from_buffer("float[]", out, require_writable=True))
    assert status == TL_ERR_ARG
    assert (out == 7.0).all()


def test_get_rows_checks_type_and_row_length() -> None:
    table = np.zeros(4096, np.uint8)
    ids = np.array([0], np.int32)
    out = np.zeros(256, np.float32)

    def call(type_id: int, row_len: int) -> int:
        return lib.tl_get_rows(type_id, ffi.from_buffer(table), row_len, 4,
                               ffi.from_buffer("int32_t[]", ids), 1,
                               ffi.from_buffer("float[]", out, require_writable=True))

    assert call(99, 256) == TL_ERR_TYPE
    assert call(lib.TL_Q4_K, 100) == TL_ERR_SIZE
    assert call(lib.TL_Q4_K, 256) == TL_OK


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0", "Q4_K", "F16", "BF16"])
def test_quantize_survives_nan_and_inf_input(name: str) -> None:
    """Bad floats give some (unspecified) bytes and a success status, never a crash."""
    rng = np.random.default_rng(23)
    x = rng.standard_normal(512).astype(np.float32)
    x[[3, 40, 300]] = [np.nan, np.inf, -np.inf]
    x[256:288] = np.nan
    raw = quantize(getattr(lib, f"TL_{name}"), x)
    dequantize(getattr(lib, f"TL_{name}"), raw, x.size)
