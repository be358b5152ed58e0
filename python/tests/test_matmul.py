"""Products through the kernels against NumPy, within the kernels' documented budgets
(tquant_kernels::exact_budget and FAST_RMS_BUDGET): exact mode
|y - y_ref| <= (cols / 8 + 32) * 2^-24 * sum_k |w_k x_k| against float64 arithmetic on the
dequantized weights; fast mode's RMS error at most 2% of the outputs' RMS."""

import numpy as np
import pytest

import tquant
from conftest import WEIGHT, student_t, write_safetensors

U = 2.0 ** -24
FAST_RMS_BUDGET = 0.02


def exact_budget(cols):
    return (cols / 8 + 32) * U


@pytest.fixture(scope="module")
def q():
    return tquant.quantize(student_t((96, 512), seed=2), "sf4")


def within_budget(y, w, x):
    """y (float32) against W x in float64, per output."""
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    ref = w64 @ x64
    bound = exact_budget(w.shape[1]) * (np.abs(w64) @ np.abs(x64))
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert np.all(np.abs(y - ref) <= bound), np.max(np.abs(y - ref) / bound)


def test_gemv(q):
    x = np.random.default_rng(3).standard_normal(512).astype(np.float32)
    w = q.dequantize()
    within_budget(q @ x, w, x)
    within_budget(tquant.matmul(q, x), w, x)


def test_gemm_numpy_layout_and_kernel_layout(q):
    x = np.random.default_rng(4).standard_normal((512, 7)).astype(np.float32)
    w = q.dequantize()
    within_budget(q @ x, w, x)  # W @ x, x C-ordered [cols, n]
    within_budget(q @ np.asfortranarray(x), w, x)
    # The kernels' layout: activation rows [n, cols] -> [n, rows] (x @ W^T).
    y = tquant.matmul(q, np.ascontiguousarray(x.T))
    assert y.shape == (7, 96)
    within_budget(y.T, w, x)


def test_threads_do_not_change_results(q):
    x = np.random.default_rng(5).standard_normal((9, 512)).astype(np.float32)
    y = tquant.matmul(q, x)
    for t in (1, 2, 3):
        np.testing.assert_array_equal(tquant.matmul(q, x, threads=t), y)


def test_fast_mode_within_its_budget(q):
    x = np.random.default_rng(6).standard_normal((4, 512)).astype(np.float32)
    exact = x.astype(np.float64) @ q.dequantize().astype(np.float64).T
    fast = tquant.matmul(q, x, fast=True)
    rms = lambda a: np.sqrt(np.mean(a ** 2))
    assert rms(fast - exact) <= FAST_RMS_BUDGET * rms(exact)
    assert not np.array_equal(fast, tquant.matmul(q, x))  # it is the int8 path


def test_half_precision_activations_are_widened(q):
    x = np.random.default_rng(7).standard_normal(512).astype(np.float16)
    np.testing.assert_array_equal(tquant.matmul(q, x), tquant.matmul(q, x.astype(np.float32)))


def test_matrix_from_a_checkpoint_multiplies_in_place(tmp_path):
    w = student_t((64, 256), seed=8)
    write_safetensors(tmp_path / "model.safetensors", {WEIGHT: w})
    tquant.convert(tmp_path / "model.safetensors", tmp_path / "q", format="nf4")
    mapped = tquant.open(tmp_path / "q")[WEIGHT]
    x = np.random.default_rng(9).standard_normal(256).astype(np.float32)
    np.testing.assert_array_equal(mapped @ x, tquant.quantize(w, "nf4") @ x)
    within_budget(mapped @ x, mapped.dequantize(), x)
