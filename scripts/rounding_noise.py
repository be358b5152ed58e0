#!/usr/bin/env python3
"""How much of a gap in bits per byte between formats is the particular rounding, not the format.

    python3 scripts/rounding_noise.py [--model examples/tiny-lite] [--text FILE] [--formats ...]

Re-implements `--scale-rule search` (block 64, f16 scales) in numpy, quantizes every matrix the
converter's policy quantizes with each format under scale grids that are all equally reasonable
(tquant's 0.70..1.10 by 0.01, the same grid shifted by 0.005, finer, narrower, wider), writes the
dequantized weights as an f32 checkpoint and scores it with `tquant eval`. The spread of one
format's rows is the noise floor below which a difference between formats (or a target) is luck.
Needs numpy, safetensors and a built `tquant` (target/release/tquant).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dequantize import Checkpoint  # noqa: E402

GRIDS = {
    "tquant (0.70..1.10 by 0.01)": np.arange(0.70, 1.1001, 0.01),
    "shifted by 0.005": np.arange(0.705, 1.1001, 0.01),
    "finer (0.50..1.20 by 0.005)": np.arange(0.50, 1.2001, 0.005),
    "narrower (0.80..1.05)": np.arange(0.80, 1.0501, 0.01),
    "wider (0.40..1.30)": np.arange(0.40, 1.3001, 0.01),
}


def tables(tquant):
    out = {}
    for line in subprocess.run([tquant, "formats"], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4:
            out[parts[0]] = np.array(json.loads(parts[3]), np.float64)
    return out


def nearest(x, table):
    levels = np.unique(table)
    return levels[np.searchsorted((levels[1:] + levels[:-1]) / 2, x)]


def f16(s):
    s = s.astype(np.float16).astype(np.float64)
    s[s == 0] = 1
    return s


def quantize(w, fmt, table, grid, block=64):
    """Per block, the f16 scale among absmax x grid (both signs for asymmetric tables) with the
    least squared error; `int4_full` maps the block's signed extreme onto -8, as tquant does."""
    signs = [1, -1] if not np.allclose(np.sort(table), np.sort(-table)) else [1]
    out = np.empty_like(w, dtype=np.float64)
    for c0 in range(0, w.shape[1], block):
        x = w[:, c0:c0 + block].astype(np.float64)
        ext = x[np.arange(len(x)), np.abs(x).argmax(1)]
        base = -ext / 8.0 if fmt == "int4_full" else np.abs(ext) / np.abs(table).max()
        best, best_err = None, None
        for sign in signs:
            for a in grid:
                s = f16(base * a * sign)[:, None]
                q = nearest(x / s, table) * s
                err = ((x - q) ** 2).sum(1)
                if best is None:
                    best, best_err = q, err
                else:
                    better = err < best_err
                    best[better], best_err = q[better], np.minimum(err, best_err)
        out[:, c0:c0 + block] = best
    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(root, "examples/tiny-lite"))
    ap.add_argument("--text", default=os.path.join(root, "tests/data/model/heldout_head.txt"))
    ap.add_argument("--formats", default="apot4_sp,int4_full,nf4")
    ap.add_argument("--tquant", default=os.path.join(root, "target/release/tquant"))
    args = ap.parse_args()
    tab = tables(args.tquant)
    work = tempfile.mkdtemp()
    try:
        def bpb(model):
            r = subprocess.run([args.tquant, "eval", model, "--text", args.text, "--window", "256",
                                "--max-bytes", "65792", "--json"], capture_output=True, text=True, check=True)
            return json.loads(r.stdout)["bits_per_byte"]

        # Which tensors the converter's policy quantizes.
        plan = os.path.join(work, "plan")
        subprocess.run([args.tquant, "convert", args.model, "-o", plan, "--format", "nf4"],
                       capture_output=True, check=True)
        names = [n for n in Checkpoint(plan).names() if "tquant." + n in Checkpoint(plan).metadata]
        orig = Checkpoint(args.model)
        weights = {n: orig.float(n) for n in orig.names()}
        base = bpb(args.model)
        print(f"unquantized {base:.5f} bits per byte; {len(names)} matrices quantized")
        model = os.path.join(work, "model")
        os.makedirs(model)
        shutil.copy(os.path.join(args.model, "config.json"), model)
        for fmt in args.formats.split(","):
            deltas = []
            for label, grid in GRIDS.items():
                q = dict(weights)
                for n in names:
                    w = weights[n]
                    m = w.reshape(-1, w.shape[-1])
                    q[n] = quantize(m, fmt, tab[fmt], grid).reshape(w.shape).astype(np.float32)
                save_file(q, os.path.join(model, "model.safetensors"))
                deltas.append(bpb(model) - base)
                print(f"{fmt:10} {label:28} +{deltas[-1]:.4f}", flush=True)
            print(f"{fmt:10} {'spread':28} {min(deltas):.4f} .. {max(deltas):.4f}")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
