"""Shared helpers: the repository's paths, the numpy reader of scripts/dequantize.py, a
safetensors writer (numpy only) and the `tquant` binary for cross-checks."""

import importlib.util
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "examples" / "tiny-lite"
HELDOUT = REPO / "tests" / "data" / "model" / "heldout_head.txt"
# A name the converter's default policy quantizes (a linear weight inside a decoder layer).
WEIGHT = "model.layers.0.mlp.down_proj.weight"


def _load_reader():
    spec = importlib.util.spec_from_file_location("tquant_dequantize", REPO / "scripts" / "dequantize.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


reader = _load_reader()

_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.uint16): "BF16"}


def write_safetensors(path, tensors):
    """Writes {name: array} as a .safetensors file (uint16 arrays are stored as BF16 bits)."""
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        data = a.tobytes()
        header[name] = {"dtype": _DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def student_t(shape, seed=0, nu=5.0, scale=0.02):
    """Heavy-tailed weights like an LLM's, float32."""
    return (np.random.default_rng(seed).standard_t(nu, size=shape) * scale).astype(np.float32)


def tquant_binary():
    """The `tquant` CLI built by `cargo build --release` / `cargo test --release`, or None."""
    if os.environ.get("TQUANT_BIN"):
        return os.environ["TQUANT_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    exe = target / "release" / "tquant"
    return str(exe) if exe.exists() else shutil.which("tquant")


@pytest.fixture
def cli():
    """Path of the CLI; missing is a failure under CI (CI=true) and a skip elsewhere."""
    exe = tquant_binary()
    if exe is None:
        msg = "the tquant binary is not built (cargo build --release) and TQUANT_BIN is unset"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return exe
