"""Type stubs of the tquant package (the native module's classes and the Python wrappers)."""

import os
from collections.abc import Mapping
from typing import Any, Iterator, NamedTuple, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

_Path = Union[str, os.PathLike[str]]
_Block = Union[int, str]

class TquantError(ValueError):
    """An error of the tquant library, with the library's message."""

class Format(NamedTuple):
    """One catalog format: its name, bits per code, values in code order and their source."""

    name: str
    bits: int
    values: list[float]
    source: str

class QuantizedMatrix:
    """A quantized matrix (or 3-D expert tensor): packed codes, block scales and codebook."""

    @property
    def shape(self) -> tuple[int, ...]:
        """`(rows, cols)`, or `(experts, rows, cols)`."""
    @property
    def format(self) -> str:
        """The exact codebook name (`"sf4:nu=4.237"`); expert 0's for an expert tensor."""
    @property
    def formats(self) -> list[str]:
        """Every matrix's exact codebook name."""
    @property
    def block(self) -> int:
        """Elements per block along a row."""
    @property
    def scale_dtype(self) -> str:
        """`"f32"`, `"f16"`, `"bf16"` or `"e8m0"`."""
    @property
    def scale_rule(self) -> Optional[str]:
        """`"absmax"` or `"search"`, if recorded."""
    @property
    def layout(self) -> str:
        """`"tquant"`, `"bnb"` or `"mxfp4"`."""
    @property
    def nu(self) -> list[Optional[float]]:
        """Student Float's degrees of freedom per matrix (None for other formats)."""
    @property
    def codes(self) -> npt.NDArray[np.uint8]:
        """Packed codes (a copy): `[..., rows, ceil(cols / 2)]`, element 2j in the low nibble."""
    @property
    def scales(self) -> npt.NDArray[np.float32]:
        """Block scales as float32 (a copy): `[..., rows, ceil(cols / block)]`."""
    @property
    def table(self) -> npt.NDArray[np.float32]:
        """The codebook in code order: `[2^bits]`, or `[experts, 2^bits]`."""
    @property
    def nbytes(self) -> int:
        """Bytes of codes and scales."""
    @property
    def bits_per_weight(self) -> float:
        """(code bits x weights + scale bits) / weights."""
    def dequantize(self) -> npt.NDArray[np.float32]:
        """The float32 values in the logical shape."""
    def __matmul__(self, x: Any) -> npt.NDArray[np.float32]:
        """`W @ x`: `[cols]` gives `[rows]`, `[cols, n]` gives `[rows, n]`."""

class Checkpoint(Mapping[str, Union[QuantizedMatrix, np.ndarray]]):
    """A checkpoint opened with `open`: tensor names to QuantizedMatrix or NumPy arrays."""

    def __getitem__(self, name: str) -> Union[QuantizedMatrix, np.ndarray]: ...
    def __iter__(self) -> Iterator[str]: ...
    def __len__(self) -> int: ...
    @property
    def path(self) -> str:
        """The checkpoint's directory (or file)."""
    @property
    def is_quantized(self) -> bool:
        """Whether it holds quantized tensors."""
    @property
    def config(self) -> Optional[dict[str, Any]]:
        """config.json beside the weights, or None."""

def formats() -> list[Format]:
    """The format catalog."""

def kernel_isa() -> str:
    """The kernels' instruction-set path on this CPU."""

def quantize(
    w: Any,
    format: str = "sf4_fit",
    block: _Block = 64,
    scale_dtype: str = "f16",
    scale_rule: Optional[str] = None,
    nu: Union[str, float, None] = None,
    dtype: Optional[str] = None,
) -> QuantizedMatrix:
    """Quantize `w` (`[rows, cols]` or `[experts, rows, cols]`) to `format`."""

def fake_quantize(
    w: Any,
    format: str = "sf4_fit",
    block: _Block = 64,
    scale_dtype: str = "f16",
    scale_rule: Optional[str] = None,
    nu: Union[str, float, None] = None,
    dtype: Optional[str] = None,
) -> Any:
    """Quantize and dequantize `w`, returned in w's own type and dtype."""

def matmul(
    q: QuantizedMatrix,
    x: Any,
    fast: bool = False,
    threads: Optional[int] = None,
    dtype: Optional[str] = None,
) -> npt.NDArray[np.float32]:
    """`x @ W.T` through the kernels: `[cols]` gives `[rows]`, `[n, cols]` gives `[n, rows]`."""

def open(path: _Path) -> Checkpoint:
    """Open an original or quantized checkpoint (file or directory)."""

def convert(src: _Path, dst: _Path, **options: Any) -> dict[str, Any]:
    """Convert `src` into a quantized checkpoint at `dst`; the summary as a dict."""

def report(
    model: _Path,
    text: Optional[_Path] = None,
    recipes: Union[Sequence[str], str] = "all",
    block: _Block = 64,
    scale_dtype: str = "f16",
    window: int = 256,
    max_bytes: int = 65792,
) -> list[dict[str, Any]]:
    """The rows of `tquant report`'s report.json for `model` and `recipes`."""
