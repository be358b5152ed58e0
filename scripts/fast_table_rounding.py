#!/usr/bin/env python3
"""What fast mode's int8 image of a codebook costs alone, with f32 activations.

    python3 scripts/fast_table_rounding.py TQUANT WORKDIR FORMAT_DIR...

Each FORMAT_DIR is a tquant checkpoint (e.g. from scripts/fast_vs_exact.sh). Its weights are
dequantized twice with numpy (scripts/dequantize.py): with the codebook as stored, and with the
codebook replaced by the int8 image fast mode multiplies by (tquant_kernels' `int8_table`: exact
when the table is an integer grid of one step, else the step of least squared error;
`MAPPING=max127` gives the earlier `max|t| / 127` steps instead). Both are written as f32
checkpoints and scored with `tquant eval` (exact kernels, so activations stay f32). The
difference is the table's share of fast mode's cost; the rest is the int8 activations. Prints a Markdown table. Needs numpy and safetensors.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dequantize import Checkpoint  # noqa: E402

TEXT = "tests/data/model/heldout_head.txt"
MAPPING = os.environ.get("MAPPING", "least")


def int8_image(table):
    """The values fast mode multiplies by, as tquant_kernels::qmatrix::int8_table makes them:
    exact for an integer grid; else the step of least squared error (`MAPPING=least`, the
    default) or `max|t| / 127` (`MAPPING=max127`, the earlier rule)."""
    t = np.zeros(16, np.float32)
    t[: len(table)] = table
    max_abs = np.float32(np.abs(t).max())
    nz = np.abs(t[t != 0])
    for k in range(1, 17):
        step = np.float32(nz.min() / np.float32(k))
        if max_abs / step > 127.5:
            break
        m = t / step
        if np.all(np.abs(m - np.round(m)) <= 1e-4 * np.maximum(np.abs(m), 1)):
            return (np.round(m) * step)[: len(table)].astype(np.float32)

    def image(step):
        q = np.trunc(t / step + np.copysign(0.5, t))  # half away from zero, as Rust's round
        if np.abs(q).max() > 127:
            return None
        return q, float(((t.astype(np.float64) - q * np.float64(step)) ** 2).sum())

    best = (*image(np.float32(max_abs / np.float32(127))), np.float32(max_abs / np.float32(127)))
    if MAPPING == "least":
        for m in range(127, 63, -1):
            q = np.trunc(t / (max_abs / np.float32(m)) + np.copysign(0.5, t)).astype(np.float64)
            step = np.float32((t * q).sum() / (q * q).sum())
            r = image(step) if step > 0 else None
            if r is not None and r[1] < best[1]:
                best = (*r, step)
    return (best[0] * best[2])[: len(table)].astype(np.float32)


class Imaged(Checkpoint):
    """A checkpoint whose 4-bit codebooks read as their int8 images."""

    def raw(self, name):
        r = super().raw(name)
        if not name.endswith(".codebook"):
            return r
        rows = r.reshape(-1, r.shape[-1])
        return np.stack([int8_image(t) for t in rows]).reshape(r.shape)


def write(ckpt, src_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    tensors = {n: np.ascontiguousarray(ckpt.dequantize(n)) for n in ckpt.names()}
    save_file(tensors, os.path.join(out_dir, "model.safetensors"))
    shutil.copy(os.path.join(src_dir, "config.json"), out_dir)


def bpb(tquant, d):
    out = subprocess.run([tquant, "eval", d, "--text", TEXT, "--max-bytes", "65792", "--json"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["bits_per_byte"]


def main():
    tquant, work, dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
    print("| format | stored table | int8 image | image - stored |")
    print("|---|---:|---:|---:|")
    for d in dirs:
        name = os.path.basename(os.path.normpath(d))
        scores = []
        for kind, ckpt in (("table", Checkpoint(d)), ("image", Imaged(d))):
            out = os.path.join(work, f"{name}-{kind}")
            write(ckpt, d, out)
            scores.append(bpb(tquant, out))
        print(f"| `{name}` | {scores[0]:.4f} | {scores[1]:.4f} | {scores[1] - scores[0]:+.4f} |",
              flush=True)


if __name__ == "__main__":
    main()
