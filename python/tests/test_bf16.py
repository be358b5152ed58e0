"""bfloat16 input, which NumPy has no dtype for: through ml_dtypes' bfloat16 arrays (how JAX
and others hand it to NumPy) and as raw uint16 / int16 bits with dtype="bf16" (what
`torch.Tensor.view(torch.int16).numpy()` gives; tquant does this itself for a bf16 tensor).
The checkpoint path is the reference: the converter reading a BF16 safetensors tensor."""

import ml_dtypes
import numpy as np
import pytest

import tquant
from conftest import WEIGHT, reader, student_t, write_safetensors


@pytest.fixture(scope="module")
def bf16(tmp_path_factory):
    w = student_t((32, 192), seed=11).astype(ml_dtypes.bfloat16)
    d = tmp_path_factory.mktemp("bf16")
    write_safetensors(d / "model.safetensors", {WEIGHT: w.view(np.uint16)})
    tquant.convert(d / "model.safetensors", d / "q", format="sf4")
    return w, reader.Checkpoint(str(d / "q")).dequantize(WEIGHT)


def test_ml_dtypes_bfloat16(bf16):
    w, expected = bf16
    np.testing.assert_array_equal(tquant.quantize(w, "sf4").dequantize(), expected)
    fake = tquant.fake_quantize(w, "sf4")
    assert fake.dtype == ml_dtypes.bfloat16 and fake.shape == w.shape
    np.testing.assert_array_equal(fake, expected.astype(ml_dtypes.bfloat16))


@pytest.mark.parametrize("bits", [np.uint16, np.int16])
def test_raw_bits_with_dtype_bf16(bf16, bits):
    w, expected = bf16
    raw = w.view(bits)
    np.testing.assert_array_equal(tquant.quantize(raw, "sf4", dtype="bf16").dequantize(), expected)
    fake = tquant.fake_quantize(raw, "sf4", dtype="bf16")
    assert fake.dtype == np.uint16
    np.testing.assert_array_equal(fake.view(ml_dtypes.bfloat16), expected.astype(ml_dtypes.bfloat16))


def test_bf16_equals_its_float32_widening(bf16):
    w, _ = bf16
    widened = tquant.quantize(w.astype(np.float32), "nf4", block=32).dequantize()
    np.testing.assert_array_equal(tquant.quantize(w, "nf4", block=32).dequantize(), widened)
    np.testing.assert_array_equal(tquant.fake_quantize(w, "nf4", block=32), widened.astype(ml_dtypes.bfloat16))


def test_bf16_activations(bf16):
    w, _ = bf16
    q = tquant.quantize(w, "nf4")
    x = np.random.default_rng(12).standard_normal(192).astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(tquant.matmul(q, x), tquant.matmul(q, x.astype(np.float32)))
    np.testing.assert_array_equal(tquant.matmul(q, x.view(np.uint16), dtype="bf16"), tquant.matmul(q, x))
