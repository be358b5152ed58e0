"""What the entry points accept besides NumPy arrays: DLPack objects, buffer-protocol objects,
nested lists, and PyTorch tensors (PyTorch is not installed by python/test.sh; the torch test
runs where it is importable, and TQUANT_REQUIRE_TORCH=1 makes its absence a failure)."""

import os

import numpy as np
import pytest

import tquant
from conftest import student_t

W = student_t((8, 64), seed=21)


class DLPackOnly:
    """An object that exposes nothing but the DLPack protocol (as JAX, CuPy or TF arrays do)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_dlpack_object():
    np.testing.assert_array_equal(tquant.fake_quantize(DLPackOnly(W), "nf4"), tquant.fake_quantize(W, "nf4"))
    q = tquant.quantize(W, "nf4")
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    np.testing.assert_array_equal(q @ DLPackOnly(x), q @ x)


def test_buffer_protocol_and_lists():
    np.testing.assert_array_equal(tquant.fake_quantize(memoryview(W), "int4"), tquant.fake_quantize(W, "int4"))
    q = tquant.quantize(W, "int4")
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    np.testing.assert_array_equal(tquant.matmul(q, memoryview(x)), q @ x)
    # A Python list becomes float64, which is refused rather than silently narrowed.
    with pytest.raises(tquant.TquantError, match="float64"):
        tquant.matmul(q, x.tolist())


def test_non_contiguous_views_are_read_in_logical_order():
    wide = student_t((8, 128), seed=22)
    view = wide[:, ::2]
    np.testing.assert_array_equal(tquant.fake_quantize(view, "nf4"), tquant.fake_quantize(view.copy(), "nf4"))


def test_torch_tensors():
    if os.environ.get("TQUANT_REQUIRE_TORCH") == "1":
        import torch
    else:
        torch = pytest.importorskip("torch")
    w = torch.from_numpy(W.copy()).to(torch.bfloat16).requires_grad_()
    fake = tquant.fake_quantize(w, "sf4")
    assert isinstance(fake, torch.Tensor) and fake.dtype == torch.bfloat16
    widened = tquant.fake_quantize(w.detach().float().numpy(), "sf4")
    assert torch.equal(fake, torch.from_numpy(widened).to(torch.bfloat16))
    # The bf16 tensor is read in place through an int16 view, not copied.
    a, bf16, _ = tquant._as_array(w, None, "w")
    assert bf16 and a.ctypes.data == w.data_ptr()
    q = tquant.quantize(w, "sf4")
    x = torch.linspace(-1, 1, 64)
    np.testing.assert_array_equal(q @ x, q @ x.numpy())
    f16 = tquant.fake_quantize(w.detach().half(), "nf4")
    assert f16.dtype == torch.float16
