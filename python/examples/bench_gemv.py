#!/usr/bin/env python3
"""A 4096 x 4096 GEMV three ways in one run: tquant from Python (`timeit`, per call), the Rust
benchmark of the same format and shape (`tquant bench gemv --json`), and NumPy's float32
matrix-vector product on the dense weights.

    python python/examples/bench_gemv.py [--format sf4] [--threads 1] [--tquant PATH]

`--threads` applies to all three (OpenBLAS through OPENBLAS_NUM_THREADS, set before NumPy
loads). Python's figure is the median over rounds of back-to-back calls (caches warm, call
overhead included); `tquant bench` sweeps the caches between rounds, so its figure is the colder
one. Not run by the tests.
"""

import argparse
import json
import os
import subprocess
import sys

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--format", default="sf4")
ap.add_argument("--rows", type=int, default=4096)
ap.add_argument("--cols", type=int, default=4096)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--rounds", type=int, default=15)
ap.add_argument("--tquant", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "tquant"))
args = ap.parse_args()
os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)

import timeit  # noqa: E402

import numpy as np  # noqa: E402

import tquant  # noqa: E402


def per_call(fn):
    """Median seconds per call over rounds of enough calls to take ~0.2 s."""
    n, _ = timeit.Timer(fn).autorange()
    times = timeit.repeat(fn, number=n, repeat=args.rounds)
    return float(np.median(times)) / n


rng = np.random.default_rng(0)
w = (rng.standard_t(5, size=(args.rows, args.cols)) * 0.02).astype(np.float32)
x = rng.standard_normal(args.cols).astype(np.float32)
q = tquant.quantize(w, args.format)
rows = []
for fast in (False, True):
    s = per_call(lambda: tquant.matmul(q, x, fast=fast, threads=args.threads))
    rows.append((f"tquant from Python, {'fast' if fast else 'exact'} ({tquant.kernel_isa()})", s, q.nbytes))
rows.append(("numpy float32 w @ x", per_call(lambda: w @ x), w.nbytes))

bench = subprocess.run(
    [args.tquant, "bench", "gemv", "--rows", str(args.rows), "--cols", str(args.cols), "--format",
     args.format, "--threads", str(args.threads), "--json"],
    check=True, capture_output=True, text=True,
)
b = json.loads(bench.stdout)
isa = tquant.kernel_isa()
for r in b["results"]:
    if r["isa"] == isa:
        rows.append((f"tquant bench (Rust), {r['mode']} ({isa})", r["seconds"], q.nbytes))
rows.append(("tquant bench (Rust), f32 product", b["f32"]["seconds"], w.nbytes))

print(f"{args.rows} x {args.cols} GEMV, {args.format} block 64 f16 scales, {args.threads} thread(s); "
      f"read bandwidth {b['read_gbps']:.1f} GB/s (tquant bench)")
for name, s, nbytes in rows:
    print(f"  {name:<42} {s * 1e6:9.1f} us/call  {nbytes / s / 1e9:6.2f} GB/s of weights")
sys.exit(0)
