"""Tiny DeepSeek-V2 and -V3 checkpoints (seeded random bf16 weights, the real DeepSeek
tokenizers of tests/data/tokenizers) whose every matrix row is a multiple of ggml's block of 32:
what the gguf tests convert, and what a by-hand llama.cpp check loads.

    python deepseek_tiny.py OUT_DIR v2|v3
"""

import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO, write_safetensors  # noqa: E402

COMMON = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "kv_lora_rank": 32,
    "q_lora_rank": 32,
    "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 16,
    "v_head_dim": 32,
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "attention_bias": False,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
}

CONFIGS = {
    "v2": dict(COMMON, **{
        "architectures": ["DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v2",
        "vocab_size": 102400,
        "max_position_embeddings": 4096,
        "norm_topk_prob": False,
        "scoring_func": "softmax",
        "topk_method": "greedy",
        "routed_scaling_factor": 1.0,
        "bos_token_id": 100000,
        "eos_token_id": 100001,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
    }),
    "v3": dict(COMMON, **{
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": 129280,
        "max_position_embeddings": 4096,
        "norm_topk_prob": True,
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "n_group": 2,
        "topk_group": 1,
        "routed_scaling_factor": 2.5,
        "num_nextn_predict_layers": 1,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
    }),
}


def bf16(a):
    """float32 -> bf16 bits (round to nearest even), as uint16."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def tensors(c, seed):
    rng = np.random.default_rng(seed)
    h, heads = c["hidden_size"], c["num_attention_heads"]
    nope, rope, v, r, q = (c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"],
                           c["kv_lora_rank"], c["q_lora_rank"])
    layers = c["num_hidden_layers"] + c.get("num_nextn_predict_layers", 0)
    t = {}

    def w(name, *shape, scale=None):
        scale = scale if scale is not None else 1.0 / np.sqrt(shape[-1])
        t[name] = bf16(rng.standard_t(5, size=shape) * scale * 0.8)

    def norm(name, n):
        t[name] = bf16(1.0 + 0.1 * rng.standard_normal(n))

    w("model.embed_tokens.weight", c["vocab_size"], h, scale=1.0)
    w("lm_head.weight", c["vocab_size"], h)
    norm("model.norm.weight", h)
    for i in range(layers):
        p = f"model.layers.{i}."
        norm(p + "input_layernorm.weight", h)
        norm(p + "post_attention_layernorm.weight", h)
        w(p + "self_attn.q_a_proj.weight", q, h)
        norm(p + "self_attn.q_a_layernorm.weight", q)
        w(p + "self_attn.q_b_proj.weight", heads * (nope + rope), q)
        w(p + "self_attn.kv_a_proj_with_mqa.weight", r + rope, h)
        norm(p + "self_attn.kv_a_layernorm.weight", r)
        w(p + "self_attn.kv_b_proj.weight", heads * (nope + v), r)
        w(p + "self_attn.o_proj.weight", h, heads * v)
        if i < c["first_k_dense_replace"]:
            for proj, shape in [("gate_proj", (c["intermediate_size"], h)),
                                ("up_proj", (c["intermediate_size"], h)),
                                ("down_proj", (h, c["intermediate_size"]))]:
                w(p + f"mlp.{proj}.weight", *shape)
            continue
        ff = c["moe_intermediate_size"]
        w(p + "mlp.gate.weight", c["n_routed_experts"], h)
        if c["model_type"] == "deepseek_v3":
            t[p + "mlp.gate.e_score_correction_bias"] = (
                0.1 * rng.standard_normal(c["n_routed_experts"])).astype(np.float32)
        for e in range(c["n_routed_experts"]):
            w(p + f"mlp.experts.{e}.gate_proj.weight", ff, h)
            w(p + f"mlp.experts.{e}.up_proj.weight", ff, h)
            w(p + f"mlp.experts.{e}.down_proj.weight", h, ff)
        sff = ff * c["n_shared_experts"]
        w(p + "mlp.shared_experts.gate_proj.weight", sff, h)
        w(p + "mlp.shared_experts.up_proj.weight", sff, h)
        w(p + "mlp.shared_experts.down_proj.weight", h, sff)
    if i := c.get("num_nextn_predict_layers", 0):
        p = f"model.layers.{c['num_hidden_layers']}."
        w(p + "eh_proj.weight", h, 2 * h)
        norm(p + "enorm.weight", h)
        norm(p + "hnorm.weight", h)
        norm(p + "shared_head.norm.weight", h)
    return t


def make(out, which, seed=0):
    """Writes the tiny `which` ('v2' or 'v3') checkpoint into `out`; returns its tensors."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    c = CONFIGS[which]
    (out / "config.json").write_text(json.dumps(c, indent=1))
    t = tensors(c, seed)
    write_safetensors(out / "model.safetensors", t)
    tok = REPO / "tests" / "data" / "tokenizers" / f"deepseek-{which}"
    (out / "tokenizer.json").write_bytes(gzip.open(tok / "tokenizer.json.gz").read())
    shutil.copy(tok / "tokenizer_config.json", out / "tokenizer_config.json")
    return t


if __name__ == "__main__":
    make(sys.argv[1], sys.argv[2])
