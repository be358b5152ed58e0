"""Bad input raises tquant.TquantError (a ValueError) with the library's message."""

import numpy as np
import pytest

import tquant
from conftest import student_t


W = student_t((16, 128))


def test_error_class():
    assert issubclass(tquant.TquantError, ValueError)


def test_bad_format_name():
    with pytest.raises(tquant.TquantError, match="unknown format 'nf5'.*known: nf4"):
        tquant.quantize(W, "nf5")
    with pytest.raises(tquant.TquantError, match="unknown format"):
        tquant.fake_quantize(W, "nf5")


def test_bad_options():
    with pytest.raises(tquant.TquantError, match="scale dtype"):
        tquant.quantize(W, "nf4", scale_dtype="f8")
    with pytest.raises(tquant.TquantError, match="Student Float"):
        tquant.quantize(W, "nf4", nu=3.0)
    with pytest.raises(tquant.TquantError, match="block"):
        tquant.quantize(W, "nf4", block=7)
    with pytest.raises(tquant.TquantError, match="calibration"):
        tquant.quantize(W, "gptq:nf4")


def test_shapes():
    with pytest.raises(tquant.TquantError, match=r"shape \[128\]: only 2-D matrices"):
        tquant.quantize(W[0], "nf4")
    with pytest.raises(tquant.TquantError, match="only 2-D matrices"):
        tquant.quantize(W.reshape(2, 2, 4, 128), "nf4")
    q = tquant.quantize(W, "nf4")
    with pytest.raises(tquant.TquantError, match=r"x must be \[128\] or \[128, n\]"):
        q @ np.ones(100, np.float32)
    with pytest.raises(tquant.TquantError, match=r"x must be \[128\] or \[n, 128\]"):
        tquant.matmul(q, np.ones((128, 3), np.float32))


def test_wrong_dtype():
    with pytest.raises(tquant.TquantError, match="dtype int32; tquant takes float32, float16 or bfloat16"):
        tquant.quantize(W.astype(np.int32), "nf4")
    with pytest.raises(tquant.TquantError, match="dtype float64"):
        tquant.quantize(W.astype(np.float64), "nf4")
    with pytest.raises(tquant.TquantError, match='dtype="bf16" takes the bfloat16 bits'):
        tquant.quantize(W, "nf4", dtype="bf16")


def test_non_finite_values():
    bad = W.copy()
    bad[3, 5] = np.nan
    with pytest.raises(tquant.TquantError, match="1 NaN or infinite values"):
        tquant.quantize(bad, "nf4")


def test_missing_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(tquant.TquantError, match="nowhere"):
        tquant.open(missing)
    with pytest.raises(tquant.TquantError, match="nowhere"):
        tquant.convert(missing, tmp_path / "out")
    with pytest.raises(tquant.TquantError, match="nowhere"):
        tquant.report(missing, recipes=["nf4"])


def test_missing_tensor_is_a_key_error(tmp_path):
    from conftest import WEIGHT, write_safetensors

    write_safetensors(tmp_path / "model.safetensors", {WEIGHT: W})
    c = tquant.open(tmp_path / "model.safetensors")
    with pytest.raises(KeyError):
        c["no.such.tensor"]


def test_unknown_convert_option(tmp_path):
    with pytest.raises(tquant.TquantError, match="unknown option.*fromat"):
        tquant.convert(tmp_path, tmp_path / "out", fromat="nf4")
