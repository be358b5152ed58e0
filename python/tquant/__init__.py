"""tquant: 4-bit LLM weight formats on the CPU, from Python.

Quantize NumPy or PyTorch weights to any format of the catalog (INT4, NF4, Student Float,
the E2M1 family, E3M0, APoT, 3-bit variants, custom codebooks), multiply through tquant's
dequant-matmul kernels, convert and open checkpoints, and measure accuracy against hardware
cost. Everything is computed by the Rust library; this module only adapts arguments.

Inputs (weights and activations) may be NumPy arrays, PyTorch tensors, objects with
``__dlpack__`` or the buffer protocol, of float32, float16 or bfloat16:

- float32 in C order is read in place; float16 and bfloat16 are widened to one float32 copy
  (the library computes in float32), as is a non-contiguous array.
- bfloat16 has no NumPy dtype. A ``torch.bfloat16`` tensor is read in place through
  ``tensor.view(torch.int16)``; an ``ml_dtypes.bfloat16`` array through a uint16 view; any
  uint16 / int16 array holding bfloat16 bits with ``dtype="bf16"``.
- Other PyTorch tensors are read in place through ``tensor.numpy()`` (CPU) after ``detach()``;
  other DLPack objects through ``numpy.from_dlpack``; GPU tensors are copied to the CPU.

Errors of the library raise :class:`TquantError` (a ``ValueError``). The GIL is released while
the library quantizes, multiplies, converts or measures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Iterator, NamedTuple, Optional, Sequence, Union

import numpy as np

from . import _native
from ._native import QuantizedMatrix, TquantError

__all__ = [
    "Checkpoint",
    "Format",
    "QuantizedMatrix",
    "TquantError",
    "convert",
    "fake_quantize",
    "formats",
    "kernel_isa",
    "matmul",
    "open",
    "quantize",
    "report",
]


class Format(NamedTuple):
    """One catalog format: its name, bits per code, values in code order and their source."""

    name: str
    bits: int
    values: list
    source: str


def formats() -> list:
    """The format catalog (what ``tquant formats`` prints): a list of :class:`Format`."""
    return [Format(*f) for f in _native.formats()]


def kernel_isa() -> str:
    """The kernels' instruction-set path on this CPU: ``"avx512"``, ``"avx2"`` or ``"scalar"``."""
    return _native.kernel_isa()


# --- inputs -------------------------------------------------------------------------------------


def _is_torch(x: Any) -> bool:
    """Whether ``x`` is a PyTorch tensor (without importing torch)."""
    return type(x).__module__.split(".")[0] == "torch"


def _as_array(x: Any, dtype: Optional[str], what: str):
    """``x`` as a NumPy array the native module reads, whether it holds bfloat16 bits, and a
    function that gives an output (float32 values or bfloat16 bits) x's own type back."""
    if dtype not in (None, "bf16"):
        raise TquantError(f'{what}: dtype must be None or "bf16", not {dtype!r}')
    if _is_torch(x):
        import torch  # only reached with a torch.Tensor in hand

        t = x.detach()
        device = t.device
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype == torch.bfloat16:
            a = t.contiguous().view(torch.int16).numpy()

            def back(out):
                return torch.from_numpy(out.view(np.int16)).view(torch.bfloat16).to(device)

            return a, True, back
        a = t.numpy()
        return a, dtype == "bf16", lambda out: torch.from_numpy(out).to(device)
    if isinstance(x, np.ndarray):
        a = x
    elif hasattr(x, "__dlpack__"):
        try:
            a = np.from_dlpack(x)
        except (TypeError, BufferError, RuntimeError) as e:
            raise TquantError(
                f"{what}: NumPy cannot read this DLPack object ({e}); for bfloat16 pass its bits "
                'as a uint16 array with dtype="bf16"'
            ) from None
    else:
        a = np.asarray(x)
    if a.dtype.name == "bfloat16":  # ml_dtypes
        src = a.dtype
        return a.view(np.uint16), True, lambda out: out.view(src)
    return a, dtype == "bf16", lambda out: out


def _block(block: Union[int, str]) -> str:
    """A block argument (elements or ``"row"``) as the library's string."""
    if isinstance(block, bool) or not isinstance(block, (int, str)):
        raise TquantError(f"block must be a number of elements or 'row', not {block!r}")
    return str(block)


# --- matrices -----------------------------------------------------------------------------------


def quantize(
    w: Any,
    format: str = "sf4_fit",
    block: Union[int, str] = 64,
    scale_dtype: str = "f16",
    scale_rule: Optional[str] = None,
    nu: Union[str, float, None] = None,
    dtype: Optional[str] = None,
) -> QuantizedMatrix:
    """Quantize the matrix ``w`` (``[rows, cols]``, or ``[experts, rows, cols]``).

    ``format`` is a recipe, as ``tquant convert --format`` and ``tquant report`` take it: a
    catalog name (``nf4``, ``int4``, ``e2m1``, ...; see :func:`formats`), ``sf4`` (Student Float
    at the paper's nu = 5), ``sf4:nu=3.5``, ``sf4_fit`` (nu fitted per tensor, the converter's
    default), ``sf4_search``, ``custom:v0,v1,...``, ``auto[:A/B/...]``, each with an optional
    ``+search`` (searched block scales: ``nf4+search``). ``block`` is elements per block (16..4096) or
    ``"row"``; ``scale_dtype`` one of ``f32``, ``f16``, ``bf16``, ``e8m0``; ``scale_rule``
    ``absmax`` (the paper's) or ``search`` and ``nu`` (Student Float only: ``"fit"``,
    ``"search"`` or a number) replace the recipe's when given. ``dtype="bf16"`` reads a uint16 / int16 array as bfloat16 bits.

    Quantization is the converter's own: the result equals the tensor ``tquant convert`` writes
    with the same options.
    """
    a, bf16, _ = _as_array(w, dtype, "w")
    return _native.quantize(a, format, _block(block), scale_dtype, scale_rule, _nu(nu), bf16)


def _nu(nu: Union[str, float, None]) -> Optional[str]:
    """A nu argument (``"fit"``, ``"search"`` or a number) as the library's string."""
    if nu is None or isinstance(nu, str):
        return nu
    if isinstance(nu, (int, float)) and not isinstance(nu, bool):
        return repr(float(nu))
    raise TquantError(f"nu must be 'fit', 'search' or a number, not {nu!r}")


def fake_quantize(
    w: Any,
    format: str = "sf4_fit",
    block: Union[int, str] = 64,
    scale_dtype: str = "f16",
    scale_rule: Optional[str] = None,
    nu: Union[str, float, None] = None,
    dtype: Optional[str] = None,
) -> Any:
    """Quantize ``w`` and return the dequantized values in w's own type and dtype.

    Takes the arguments of :func:`quantize`. A float32 input gives float32 (exactly the values
    a quantized checkpoint dequantizes to); float16 and bfloat16 inputs get those values rounded
    to nearest-even in their dtype; a ``torch.Tensor`` gives a ``torch.Tensor`` on its device,
    an ``ml_dtypes.bfloat16`` array such an array, and ``dtype="bf16"`` bits uint16 bits.
    """
    a, bf16, back = _as_array(w, dtype, "w")
    out = _native.fake_quantize(a, format, _block(block), scale_dtype, scale_rule, _nu(nu), bf16)
    return back(out)


def matmul(
    q: QuantizedMatrix,
    x: Any,
    fast: bool = False,
    threads: Optional[int] = None,
    dtype: Optional[str] = None,
) -> np.ndarray:
    """``y = x @ W.T`` through tquant's kernels, in the kernels' layout (a linear layer's).

    ``x`` ``[cols]`` gives ``[rows]`` (a GEMV); ``x`` ``[n, cols]`` (activation rows) gives
    ``[n, rows]`` (a GEMM). A C-ordered float32 ``x`` is read in place. ``fast=True`` uses the
    int8 mode (activations quantized per 32 elements; about 0.5-0.8% RMS error against exact
    arithmetic); ``threads`` is the number of worker threads (None or 0: all cores). Returns
    float32. ``q @ x`` is the NumPy-style product ``W @ x`` instead.
    """
    a, bf16, _ = _as_array(x, dtype, "x")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise TquantError(f"threads must be None or a number >= 0, not {threads!r}")
    return _native.matmul(q, a, bool(fast), threads, bf16)


# --- checkpoints --------------------------------------------------------------------------------


class Checkpoint(Mapping):
    """A checkpoint opened with :func:`open`: a read-only mapping from tensor names to values.

    A quantized tensor is a :class:`QuantizedMatrix` reading the file's memory map (nothing is
    copied); a dense tensor a new NumPy array in its stored dtype (bfloat16 and FP8 widened to
    float32).
    """

    def __init__(self, native: Any) -> None:
        self._native = native
        self._names = native.names()

    def __getitem__(self, name: str) -> Any:
        """Tensor ``name``: a QuantizedMatrix or a NumPy array; KeyError if absent."""
        return self._native.get(name)

    def __iter__(self) -> Iterator[str]:
        """The tensor names in order."""
        return iter(self._names)

    def __len__(self) -> int:
        """The number of tensors."""
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        """Whether the checkpoint has tensor ``name``."""
        return name in self._names

    @property
    def path(self) -> str:
        """The checkpoint's directory (or file)."""
        return str(self._native.root())

    @property
    def is_quantized(self) -> bool:
        """Whether it holds quantized tensors."""
        return self._native.is_quantized()

    @property
    def config(self) -> Optional[dict]:
        """``config.json`` beside the weights, or None."""
        c = self._native.config_json()
        return None if c is None else json.loads(c)

    def __repr__(self) -> str:
        return f"tquant.Checkpoint({self.path!r}, {len(self)} tensors)"


def open(path: Union[str, "os.PathLike[str]"]) -> Checkpoint:
    """Open a checkpoint: a ``.safetensors`` file, or a directory with ``model.safetensors`` or
    shards and their index, original or written by ``tquant convert`` (every header is
    validated here). Returns a :class:`Checkpoint` mapping."""
    return Checkpoint(_native.open(os.fspath(path)))


_CONVERT_OPTIONS = {
    "format": None,
    "nu": None,
    "block": None,
    "scale_dtype": None,
    "scale_rule": None,
    "layout": "tquant",
    "include": [],
    "exclude": [],
    "drop": [],
    "threads": None,
    "force": False,
}
_CALIBRATION_OPTIONS = {
    "calibrate": None,
    "calibrate_self": None,
    "calibrate_seed": 0,
    "calibrate_ids": False,
    "calibrate_offset": 0,
    "calibrate_bytes": None,
    "calibrate_window": 256,
    "damp": None,
    "act_order": False,
    "router_weighting": "routed",
    "min_tokens_per_column": None,
}


def convert(src: Union[str, "os.PathLike[str]"], dst: Union[str, "os.PathLike[str]"], **options: Any) -> dict:
    """Convert the checkpoint ``src`` into a quantized checkpoint at ``dst`` (``tquant convert``).

    Options are the command's, as keywords: ``format``, ``nu``, ``block``, ``scale_dtype``,
    ``scale_rule``, ``layout``, ``include``, ``exclude``, ``drop`` (lists of globs), ``threads``,
    ``force``; calibration (GPTQ): ``calibrate`` (a text file), ``calibrate_self`` (tokens the
    model writes), ``calibrate_seed``, ``calibrate_ids``, ``calibrate_offset``,
    ``calibrate_bytes``, ``calibrate_window``, ``damp``, ``act_order``, ``router_weighting``,
    ``min_tokens_per_column``. Returns the summary ``tquant convert --json`` prints, as a dict.
    """
    unknown = sorted(set(options) - set(_CONVERT_OPTIONS) - set(_CALIBRATION_OPTIONS))
    if unknown:
        raise TquantError(f"convert: unknown option(s) {', '.join(unknown)}")
    conv = {k: options.get(k, d) for k, d in _CONVERT_OPTIONS.items()}
    if conv["block"] is not None:
        conv["block"] = _block(conv["block"])
    if conv["nu"] is not None:
        conv["nu"] = _nu(conv["nu"])
    for k in ("include", "exclude", "drop"):
        if isinstance(conv[k], str):
            conv[k] = [conv[k]]
        conv[k] = list(conv[k])
    cal = {k: options.get(k, d) for k, d in _CALIBRATION_OPTIONS.items()}
    if cal["calibrate"] is not None:
        cal["calibrate"] = os.fspath(cal["calibrate"])
    summary = _native.convert(os.fspath(src), os.fspath(dst), conv, cal)
    return json.loads(summary)


def report(
    model: Union[str, "os.PathLike[str]"],
    text: Union[str, "os.PathLike[str]", None] = None,
    recipes: Union[Sequence[str], str] = "all",
    block: Union[int, str] = 64,
    scale_dtype: str = "f16",
    window: int = 256,
    max_bytes: int = 65792,
) -> list:
    """Measure ``model`` quantized in memory with each recipe (``tquant report``).

    ``recipes`` is ``"all"`` or a list of recipe names (``nf4``, ``sf4`` (nu = 5), ``sf4_fit``,
    ``sf4_search``, ``auto``, ``nf4+search``, ``custom:...``). Without ``text`` only the weight
    errors are measured (any safetensors model); with it, bits per byte of the text's first
    ``max_bytes`` bytes in chunks of ``window`` tokens too. Returns the rows of ``report.json``
    as dicts (name, bits, bits_per_weight, nmse, bits_per_byte, MAC areas, Pareto flags, ...).
    """
    if isinstance(recipes, str):
        names = recipes
    else:
        names = ",".join(recipes)
    t = None if text is None else os.fspath(text)
    out = _native.report(os.fspath(model), t, names, _block(block), scale_dtype, int(window), int(max_bytes))
    return json.loads(out)["rows"]
