#!/usr/bin/env python3
"""Dequantize a tquant checkpoint with numpy alone: everything needed is in the files.

    python3 scripts/dequantize.py CHECKPOINT [--name NAME ...] -o OUT.safetensors

CHECKPOINT is a .safetensors file or a directory (model.safetensors, or shards with
model.safetensors.index.json). Every tensor (or each --name) is written to OUT as float32:
quantized tensors dequantized, kept tensors converted. Layouts (docs/checkpoint-format.md):

- tquant: `W.codes` u8 [E?, rows, ceil(cols/2)] (element 2j in the low nibble), `W.scales`
  [E?, rows, ceil(cols/block)] (f32, f16, bf16, or e8m0 bytes), `W.codebook` f32 [E?, 2^bits],
  and `__metadata__["tquant.W"]` (JSON: shape, block, scale_dtype, ...).
  W[e, r, c] = codebook[e, code(e, r, c)] * scales[e, r, c // block]   (float32 product)
- tquant q8_0 (format "q8_0" in the metadata; the embeddings and lm_head by default):
  `W.codes` i8 [E?, rows, cols], `W.scales` f16 [E?, rows, ceil(cols/32)], no codebook.
  W[e, r, c] = codes[e, r, c] * scales[e, r, c // 32]   (ggml's Q8_0)
- bitsandbytes NF4 (`W`, `W.absmax`, `W.quant_map`, `W.quant_state.bitsandbytes__nf4`) and
  Hugging Face MXFP4 (`W_blocks`, `W_scales`) are read too.

The safetensors package cannot hand bfloat16 to numpy, so the header is parsed here (8-byte
length, JSON, data) and tensors are viewed from the raw bytes. Writing OUT uses safetensors.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

E2M1 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float32)
RAW = {"F32": np.float32, "F16": np.float16, "U8": np.uint8, "BF16": np.uint16, "F64": np.float64,
       "I32": np.int32, "I64": np.int64, "I8": np.int8, "I16": np.int16, "U16": np.uint16}


def bf16_to_f32(u16):
    return (u16.astype(np.uint32) << 16).view(np.float32)


def e8m0_to_f32(b):
    bits = b.astype(np.uint32) << 23
    bits[b == 0] = 1 << 22  # 2^-127 is an f32 subnormal
    out = bits.view(np.float32)
    out[b == 255] = np.nan
    return out


class Checkpoint:
    def __init__(self, path):
        if os.path.isdir(path):
            index = os.path.join(path, "model.safetensors.index.json")
            if os.path.exists(index):
                with open(index) as f:
                    files = sorted(set(json.load(f)["weight_map"].values()))
            elif os.path.exists(os.path.join(path, "model.safetensors")):
                files = ["model.safetensors"]
            else:  # a directory with a single .safetensors file of another name
                (files,) = [[f] for f in os.listdir(path) if f.endswith(".safetensors")]
            files = [os.path.join(path, f) for f in files]
        else:
            files = [path]
        self.entries, self.metadata = {}, {}
        for file in files:
            with open(file, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
            data = np.memmap(file, np.uint8, "r", offset=8 + n) if os.path.getsize(file) > 8 + n else None
            self.metadata.update(header.pop("__metadata__", {}))
            for name, e in header.items():
                self.entries[name] = (data, e)

    def raw(self, name):
        """The stored tensor as numpy (bfloat16 as its uint16 bits)."""
        data, e = self.entries[name]
        begin, end = e["data_offsets"]
        buf = data[begin:end] if end > begin else np.zeros(0, np.uint8)
        return np.frombuffer(buf.tobytes(), RAW[e["dtype"]]).reshape(e["shape"])

    def float(self, name):
        x = self.raw(name)
        return bf16_to_f32(x) if self.entries[name][1]["dtype"] == "BF16" else x.astype(np.float32)

    def names(self):
        """Logical names: quantized tensors under their own name, without their parts."""
        out, parts = set(), set()
        for key in self.metadata:
            if key.startswith("tquant.") and key != "tquant.version":
                w = key[len("tquant."):]
                out.add(w)
                parts |= {w + ".codes", w + ".scales", w + ".codebook", w + ".row_tables"}
        for name in self.entries:
            if name.endswith(".quant_state.bitsandbytes__nf4"):
                w = name[: -len(".quant_state.bitsandbytes__nf4")]
                out.add(w)
                parts |= {w + ".absmax", w + ".quant_map", name}
            elif name.endswith("_blocks") and name[:-7] + "_scales" in self.entries:
                out.add(name[:-7])
                parts |= {name, name[:-7] + "_scales"}
        return sorted(out | (set(self.entries) - parts))

    def dequantize(self, name):
        if "tquant." + name in self.metadata:
            return self._tquant(name, json.loads(self.metadata["tquant." + name]))
        if name + ".quant_state.bitsandbytes__nf4" in self.entries:
            return self._bnb(name)
        if name + "_blocks" in self.entries:
            return self._mxfp4(name)
        return self.float(name)

    def _tquant(self, name, info):
        shape, block = info["shape"], info["block"]
        rows, cols = shape[-2], shape[-1]
        experts = shape[0] if len(shape) == 3 else 1
        if info["format"] == "q8_0":
            q = self.raw(name + ".codes").reshape(experts, rows, cols).astype(np.float32)
            s = self.raw(name + ".scales").reshape(experts, rows, -1).astype(np.float32)
            return (q * s[:, :, np.arange(cols) // block]).astype(np.float32).reshape(shape)
        codes = self.raw(name + ".codes").reshape(experts, rows, -1)
        idx = np.stack([codes & 0x0F, codes >> 4], axis=-1).reshape(experts, rows, -1)[:, :, :cols]
        if info["format"] == "learned_row":
            # A table per row: f16 [E?, rows, 2^bits], widened to float32.
            table = self.raw(name + ".row_tables").reshape(experts, rows, -1).astype(np.float32)
            e, r = np.arange(experts)[:, None, None], np.arange(rows)[None, :, None]
            values = table[e, r, idx]
        else:
            table = self.raw(name + ".codebook").reshape(experts, -1)
            values = table[np.arange(experts)[:, None, None], idx]
        s = self.raw(name + ".scales").reshape(experts, rows, -1)
        s = {"f32": lambda x: x, "f16": lambda x: x.astype(np.float32), "bf16": bf16_to_f32,
             "e8m0": e8m0_to_f32}[info["scale_dtype"]](s)
        scales = s[:, :, np.arange(cols) // block]
        return (values * scales).astype(np.float32).reshape(shape)

    def _bnb(self, name):
        state = json.loads(self.raw(name + ".quant_state.bitsandbytes__nf4").tobytes())
        n = int(np.prod(state["shape"]))
        packed = self.raw(name).reshape(-1)
        idx = np.stack([packed >> 4, packed & 0x0F], axis=-1).reshape(-1)[:n]  # high nibble first
        absmax = self.raw(name + ".absmax").astype(np.float32)
        values = self.raw(name + ".quant_map")[idx] * absmax[np.arange(n) // state["blocksize"]]
        return values.astype(np.float32).reshape(state["shape"])

    def _mxfp4(self, name):
        blocks, scales = self.raw(name + "_blocks"), self.raw(name + "_scales")
        idx = np.stack([blocks & 0x0F, blocks >> 4], axis=-1).reshape(*blocks.shape[:-1], 32)
        values = E2M1[idx] * e8m0_to_f32(scales)[..., None]
        return values.reshape(*blocks.shape[:-2], -1).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--name", action="append", help="tensor to dequantize (default: all)")
    ap.add_argument("-o", "--output", required=True, help="float32 .safetensors to write")
    args = ap.parse_args()
    ckpt = Checkpoint(args.checkpoint)
    names = args.name or ckpt.names()
    tensors = {n: np.ascontiguousarray(ckpt.dequantize(n)) for n in names}
    from safetensors.numpy import save_file
    save_file(tensors, args.output)
    print(f"{len(tensors)} tensors -> {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
