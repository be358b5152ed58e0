"""Every catalog format, quantized in Python, against the checkpoint the converter writes for
the same matrix read back by the numpy reader (scripts/dequantize.py): values, codes, scales
and codebook must be identical, and `fake_quantize` must equal the checkpoint's values."""

import numpy as np
import pytest

import tquant
from conftest import WEIGHT, reader, student_t, write_safetensors, REPO

CATALOG = [f.name for f in tquant.formats()]


def test_catalog_lists_every_format_with_its_table():
    names = CATALOG
    assert len(names) == len(set(names)) == 16
    for f in tquant.formats():
        assert len(f.values) == 2 ** f.bits, f.name
        assert f.source, f.name
    nf4 = next(f for f in tquant.formats() if f.name == "nf4")
    # bitsandbytes' NF4 table ends at -1 and 1 with 0 at code 7.
    assert nf4.values[0] == -1.0 and nf4.values[7] == 0.0 and nf4.values[15] == 1.0


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    # 48 x 200: the last block of each row is short (200 = 3 x 64 + 8).
    w = student_t((48, 200), seed=1)
    src = tmp_path_factory.mktemp("src") / "model.safetensors"
    write_safetensors(src, {WEIGHT: w})
    return w, src


@pytest.mark.parametrize("fmt", CATALOG)
def test_quantize_equals_the_converted_checkpoint(fmt, weights, tmp_path):
    w, src = weights
    dst = tmp_path / "q"
    summary = tquant.convert(src, dst, format=fmt)
    assert summary["quantized"] == 1
    files = reader.Checkpoint(str(dst))
    expected = files.dequantize(WEIGHT)

    q = tquant.quantize(w, fmt)
    assert q.shape == (48, 200) and q.block == 64 and q.scale_dtype == "f16"
    np.testing.assert_array_equal(q.dequantize(), expected)
    np.testing.assert_array_equal(q.codes, files.raw(WEIGHT + ".codes"))
    np.testing.assert_array_equal(q.scales, files.raw(WEIGHT + ".scales").astype(np.float32))
    np.testing.assert_array_equal(q.table, files.raw(WEIGHT + ".codebook").reshape(-1))
    assert q.nbytes == 48 * 100 + 48 * 4 * 2
    assert q.bits_per_weight == pytest.approx(summary["tensors"][0]["bits_per_weight"])
    assert q.format == summary["tensors"][0]["formats"][0]

    fake = tquant.fake_quantize(w, fmt)
    assert fake.dtype == np.float32
    np.testing.assert_array_equal(fake, expected)

    mapped = tquant.open(dst)[WEIGHT]
    assert isinstance(mapped, tquant.QuantizedMatrix)
    np.testing.assert_array_equal(mapped.dequantize(), expected)


@pytest.mark.parametrize(
    "opts",
    [
        dict(format="sf4", block="row", scale_dtype="f32"),
        dict(format="int4", block=32, scale_dtype="bf16"),
        dict(format="e2m1", block=32, scale_dtype="e8m0"),
        dict(format="nf4", scale_rule="search"),
        dict(format="sf4", nu=3.5),
        dict(format="sf4", nu="search"),
        dict(format="custom:-1,-0.5,0,0.5,1,2,3,4"),
        dict(format="auto"),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_options_as_the_converter_takes_them(opts, weights, tmp_path):
    w, src = weights
    tquant.convert(src, tmp_path / "q", **opts)
    expected = reader.Checkpoint(str(tmp_path / "q")).dequantize(WEIGHT)
    np.testing.assert_array_equal(tquant.fake_quantize(w, **opts), expected)


def test_float16_input_quantizes_its_own_values(weights, tmp_path):
    w, _ = weights
    w16 = w.astype(np.float16)
    src = tmp_path / "model.safetensors"
    write_safetensors(src, {WEIGHT: w16})
    tquant.convert(src, tmp_path / "q", format="nf4")
    expected = reader.Checkpoint(str(tmp_path / "q")).dequantize(WEIGHT)
    np.testing.assert_array_equal(tquant.quantize(w16, "nf4").dequantize(), expected)
    fake = tquant.fake_quantize(w16, "nf4")
    assert fake.dtype == np.float16
    np.testing.assert_array_equal(fake, expected.astype(np.float16))


def test_expert_tensor(tmp_path):
    w = student_t((3, 16, 128), seed=4)
    name = "model.layers.1.mlp.experts.down_proj"
    src = tmp_path / "model.safetensors"
    write_safetensors(src, {name: w})
    tquant.convert(src, tmp_path / "q", format="sf4", include=[name])
    expected = reader.Checkpoint(str(tmp_path / "q")).dequantize(name)
    q = tquant.quantize(w, "sf4")
    assert q.shape == (3, 16, 128) and q.table.shape == (3, 16) and len(q.formats) == 3
    np.testing.assert_array_equal(q.dequantize(), expected)
    with pytest.raises(tquant.TquantError, match="expert"):
        q @ np.ones(128, np.float32)


def test_open_reads_bitsandbytes_files():
    ckpt = REPO / "tests" / "data" / "convert" / "bnb_nf4"
    files = reader.Checkpoint(str(ckpt))
    c = tquant.open(ckpt)
    quantized = [n for n in c if isinstance(c[n], tquant.QuantizedMatrix)]
    assert quantized
    for name in quantized:
        assert c[name].layout == "bnb"
        np.testing.assert_array_equal(c[name].dequantize(), files.dequantize(name))
    for name in set(c) - set(quantized):
        np.testing.assert_array_equal(np.asarray(c[name], np.float32), files.float(name))


def test_a_recipe_name_means_what_it_means_to_the_cli():
    # `sf4` is the paper's nu = 5 everywhere a recipe is parsed; the default, `sf4_fit`, fits nu
    # to the matrix (here drawn with nu = 3, so the fit lands well away from 5).
    w = student_t((64, 512), seed=3, nu=3.0)
    assert tquant.quantize(w, "sf4").nu == [5.0]
    fitted = tquant.quantize(w).nu[0]
    assert fitted == tquant.quantize(w, "sf4_fit").nu[0]
    assert abs(fitted - 5.0) > 0.5, fitted
    assert tquant.quantize(w, "sf4", nu="fit").nu == [fitted]
