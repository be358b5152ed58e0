#!/usr/bin/env python3
"""Fake-quantize every linear layer of a Hugging Face causal LM with tquant and measure the
perplexity (and bits per byte) of a text, against the unquantized model.

    python python/examples/fake_quantize_hf.py MODEL --text FILE [--format sf4_fit] [--block 64]
        [--scale-dtype f16] [--window 256] [--max-bytes 65792] [--exclude GLOB ...]

MODEL is a local folder `transformers` loads (`AutoModelForCausalLM`; no download: set
HF_HUB_OFFLINE=1 for a hub name). Every `nn.Linear` weight, and every 3-D expert tensor of a
mixture-of-experts block (`gate_up_proj` split into its gate and up halves, as checkpoints
store them), is replaced by `tquant.fake_quantize` of itself: the exact values a `tquant
convert` checkpoint dequantizes to, in the weight's dtype. `--exclude` (default: `lm_head` and
the MoE router `*.mlp.gate`, as the converter leaves them) keeps layers in full precision.

The text is tokenized with the model's tokenizer, or byte by byte for a 256-token byte
vocabulary; it is cut to `--max-bytes` and scored in chunks of window + 1 tokens, each scoring
its last `window` (as `tquant eval` does), so the figures compare with
`tquant eval QUANTIZED --text FILE --window W --max-bytes N`.

Needs torch and transformers; not run by the tests.
"""

import argparse
import fnmatch
import math
import time

import torch
from transformers import AutoModelForCausalLM

import tquant


def token_ids(model_dir, model, text):
    if model.config.vocab_size == 256:
        return list(text)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return tok(text.decode("utf-8", errors="replace"))["input_ids"]


@torch.no_grad()
def bits_and_perplexity(model, ids, window):
    """Mean negative log-likelihood over the scored tokens: (bits in total, perplexity)."""
    chunk = window + 1
    n = len(ids) // chunk
    if n == 0:
        raise SystemExit(f"the text has {len(ids)} tokens, fewer than one chunk of {chunk}")
    x = torch.tensor(ids[: n * chunk], dtype=torch.long).view(n, chunk)
    nll, count = 0.0, 0
    for i in range(0, n, 8):
        batch = x[i : i + 8]
        logits = model(batch[:, :-1]).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
        )
        nll += loss.item()
        count += batch[:, 1:].numel()
    return nll / math.log(2), math.exp(nll / count), count


def excluded(name, globs):
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


@torch.no_grad()
def fake_quantize_model(model, args):
    """Replaces the weights in place; returns (matrices, parameters) quantized."""
    opts = dict(format=args.format, block=args.block, scale_dtype=args.scale_dtype)
    matrices = params = 0
    for mod_name, module in model.named_modules():
        if excluded(mod_name, args.exclude):
            continue
        if isinstance(module, torch.nn.Linear):
            w = module.weight
            w.copy_(tquant.fake_quantize(w.data, **opts))
            matrices, params = matrices + 1, params + w.numel()
        elif type(module).__name__.endswith("Experts"):
            for p_name, p in module.named_parameters(recurse=False):
                if p.dim() != 3:
                    continue
                # A fused gate_up tensor holds two matrices per expert; quantize each alone.
                parts = p.data.chunk(2, dim=1) if "gate_up" in p_name else (p.data,)
                for part in parts:
                    part.copy_(tquant.fake_quantize(part.contiguous(), **opts))
                    matrices, params = matrices + part.shape[0], params + part.numel()
    return matrices, params


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--text", required=True)
    ap.add_argument("--format", default="sf4_fit", help="a recipe, as tquant convert --format takes it")
    ap.add_argument("--block", default="64")
    ap.add_argument("--scale-dtype", default="f16")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--max-bytes", type=int, default=65792)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--exclude", action="append", help="module-name glob kept unquantized")
    args = ap.parse_args()
    args.exclude = args.exclude or ["lm_head", "*.mlp.gate"]

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype))
    model.eval()
    text = open(args.text, "rb").read()[: args.max_bytes]
    ids = token_ids(args.model, model, text)
    scored_bytes = len(text) if model.config.vocab_size != 256 else (len(ids) // (args.window + 1)) * args.window

    bits, ppl, tokens = bits_and_perplexity(model, ids, args.window)
    print(f"{args.model} ({args.dtype}): {tokens} tokens scored")
    print(f"  unquantized: perplexity {ppl:.4f}, bits per byte {bits / scored_bytes:.7f}")

    t = time.perf_counter()
    matrices, params = fake_quantize_model(model, args)
    seconds = time.perf_counter() - t
    bits_q, ppl_q, _ = bits_and_perplexity(model, ids, args.window)
    print(
        f"  {args.format} (block {args.block}, {args.scale_dtype} scales; {matrices} matrices, "
        f"{params} parameters fake-quantized in {seconds:.2f} s): perplexity {ppl_q:.4f}, "
        f"bits per byte {bits_q / scored_bytes:.7f}"
    )


if __name__ == "__main__":
    main()
