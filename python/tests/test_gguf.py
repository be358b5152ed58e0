"""`tquant convert --layout gguf` read back with gguf-py (llama.cpp's own GGUF reader): the
metadata llama.cpp's deepseek2 loader needs, every tensor where and how llama.cpp's converter
puts it, and the quantized ones as ggml's encoders make them."""

import json
import subprocess

import numpy as np
import pytest

import gguf  # noqa: E402
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

from deepseek_tiny import CONFIGS, from_bf16, make  # noqa: E402

# Keys src/models/deepseek2.cpp and llama-model.cpp read without a default, for these configs.
REQUIRED = [
    "general.architecture", "general.alignment", "general.file_type",
    "deepseek2.block_count", "deepseek2.context_length", "deepseek2.embedding_length",
    "deepseek2.feed_forward_length", "deepseek2.attention.head_count",
    "deepseek2.attention.head_count_kv", "deepseek2.attention.layer_norm_rms_epsilon",
    "deepseek2.attention.q_lora_rank", "deepseek2.attention.kv_lora_rank",
    "deepseek2.attention.key_length", "deepseek2.attention.value_length",
    "deepseek2.attention.key_length_mla", "deepseek2.attention.value_length_mla",
    "deepseek2.expert_feed_forward_length", "deepseek2.expert_shared_count",
    "deepseek2.expert_count", "deepseek2.expert_used_count", "deepseek2.expert_gating_func",
    "deepseek2.leading_dense_block_count", "deepseek2.rope.dimension_count",
    "deepseek2.rope.freq_base", "deepseek2.rope.scaling.type", "deepseek2.rope.scaling.factor",
    "deepseek2.rope.scaling.original_context_length", "deepseek2.rope.scaling.yarn_log_multiplier",
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
]


def value(reader, key):
    f = reader.fields[key]
    v = f.contents()
    return v


def expected_tensors(src, c):
    """The checkpoint's tensors as llama.cpp's converter lays them out, float32."""
    out = {}
    f = {k: (from_bf16(v) if v.dtype == np.uint16 else v) for k, v in src.items()}
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    short = {
        "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_a_proj.weight": "attn_q_a.weight", "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight",
        "self_attn.q_b_proj.weight": "attn_q_b.weight",
        "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
        "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight", "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight", "mlp.gate.weight": "ffn_gate_inp.weight",
        "mlp.gate.e_score_correction_bias": "exp_probs_b.bias",
        "mlp.shared_experts.gate_proj.weight": "ffn_gate_shexp.weight",
        "mlp.shared_experts.up_proj.weight": "ffn_up_shexp.weight",
        "mlp.shared_experts.down_proj.weight": "ffn_down_shexp.weight",
    }
    heads, nope, v = c["num_attention_heads"], c["qk_nope_head_dim"], c["v_head_dim"]
    for name, a in f.items():
        if name in top:
            out[top[name]] = a
            continue
        _, _, b, rest = name.split(".", 3)
        if int(b) >= c["num_hidden_layers"] or ".experts." in name:
            continue
        if rest == "self_attn.kv_b_proj.weight":
            kv = a.reshape(heads, nope + v, -1)
            out[f"blk.{b}.attn_k_b.weight"] = kv[:, :nope].transpose(0, 2, 1)
            out[f"blk.{b}.attn_v_b.weight"] = kv[:, nope:]
        else:
            out[f"blk.{b}.{short[rest]}"] = a
    for b in range(c["first_k_dense_replace"], c["num_hidden_layers"]):
        for proj in ["gate", "up", "down"]:
            out[f"blk.{b}.ffn_{proj}_exps.weight"] = np.stack(
                [f[f"model.layers.{b}.mlp.experts.{e}.{proj}_proj.weight"] for e in range(c["n_routed_experts"])])
    return out


def convert(cli, src, out, fmt):
    r = subprocess.run([cli, "convert", str(src), "-o", str(out), "--layout", "gguf", "--format", fmt,
                        "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def is_f32(name):
    """Norms, routers and biases: F32, as llama.cpp's converter writes them."""
    return name.endswith("norm.weight") or "ffn_gate_inp" in name or name.endswith(".bias")


@pytest.mark.parametrize("which", ["v2", "v3"])
def test_gguf_reads_back_as_llama_cpp_lays_it_out(cli, tmp_path, which):
    c = CONFIGS[which]
    src = make(tmp_path / "ckpt", which)
    want = expected_tensors(src, c)
    errors = {}
    for fmt in ["q4_0", "iq4_nl", "iq4_nl+search"]:
        out = tmp_path / f"{fmt}.gguf"
        summary = convert(cli, tmp_path / "ckpt", out, fmt)
        assert summary["recipe"] == fmt
        r = gguf.GGUFReader(out)
        missing = [k for k in REQUIRED if k not in r.fields]
        assert not missing, missing
        assert value(r, "general.architecture") == "deepseek2"
        assert value(r, "general.alignment") == 32
        want_rounding = "search" if fmt.endswith("+search") else "ggml"
        assert value(r, "tquant.quantization_rounding") == want_rounding
        assert value(r, "deepseek2.block_count") == c["num_hidden_layers"]
        assert value(r, "deepseek2.attention.head_count_kv") == 1
        assert value(r, "deepseek2.attention.key_length") == c["kv_lora_rank"] + c["qk_rope_head_dim"]
        assert value(r, "deepseek2.attention.key_length_mla") == c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
        assert value(r, "deepseek2.leading_dense_block_count") == c["first_k_dense_replace"]
        assert value(r, "deepseek2.expert_gating_func") == (2 if which == "v3" else 1)
        assert value(r, "deepseek2.rope.scaling.yarn_log_multiplier") == pytest.approx(
            0.1 * c["rope_scaling"]["mscale_all_dim"])
        assert value(r, "tokenizer.ggml.pre") == ("deepseek-v3" if which == "v3" else "deepseek-llm")
        assert len(value(r, "tokenizer.ggml.tokens")) == c["vocab_size"]
        assert value(r, "tokenizer.ggml.bos_token_id") == c["bos_token_id"]
        names = {t.name for t in r.tensors}
        assert names == set(want), names ^ set(want)
        sse = {}
        for t in r.tensors:
            x = want[t.name]
            assert [int(d) for d in reversed(t.shape)] == list(x.shape), t.name
            got = dequantize(t.data, t.tensor_type).reshape(x.shape)
            if t.name.startswith("blk.") and not is_f32(t.name):
                qt = T.Q4_0 if fmt == "q4_0" else T.IQ4_NL
                assert t.tensor_type == qt, t.name
                if fmt == "q4_0":
                    # ggml's reference encoder, as gguf-py implements it: the same bytes.
                    assert t.data.tobytes() == quantize(x, T.Q4_0).tobytes(), t.name
                err = (got.astype(np.float64) - x) ** 2
                sse[t.name] = err.sum()
                rel = np.sqrt(err.mean() / (x.astype(np.float64) ** 2).mean())
                assert rel < 0.2, (t.name, rel)
            else:
                assert t.tensor_type == (T.F32 if is_f32(t.name) else T.BF16), t.name
                np.testing.assert_array_equal(got, x, err_msg=t.name)
        errors[fmt] = sse
    for name, e in errors["iq4_nl+search"].items():
        # tquant's scale search never does worse than ggml's 15 trial scales by much per
        # block, and wins over a whole matrix.
        assert e <= errors["iq4_nl"][name] * 1.01, name
    assert sum(errors["iq4_nl+search"].values()) < sum(errors["iq4_nl"].values())
    assert sum(errors["iq4_nl"].values()) < sum(errors["q4_0"].values())


def test_gguf_refuses_a_checkpoint_without_tokenizer(cli, tmp_path):
    make(tmp_path / "ckpt", "v2")
    (tmp_path / "ckpt" / "tokenizer.json").unlink()
    r = subprocess.run([cli, "convert", str(tmp_path / "ckpt"), "-o", str(tmp_path / "m.gguf"),
                        "--layout", "gguf"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "tokenizer.json not found" in r.stderr and "--tokenizer" in r.stderr, r.stderr
    assert not (tmp_path / "m.gguf").exists()


TABLES = {
    "q4_0": list(range(-8, 8)),
    "iq4_nl": [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
}


@pytest.mark.parametrize("fmt", ["q4_0", "iq4_nl"])
def test_searched_blocks_equal_tquants_own_quantization(cli, tmp_path, fmt):
    # `+search` is tquant's scale search over the type's table: every quantized tensor decodes
    # to what tquant.quantize makes of the same values with that table as its codebook.
    import tquant

    c = CONFIGS["v3"]
    want = expected_tensors(make(tmp_path / "ckpt", "v3"), c)
    out = tmp_path / "m.gguf"
    convert(cli, tmp_path / "ckpt", out, fmt + "+search")
    recipe = "custom:" + ",".join(map(str, TABLES[fmt])) + "+search"
    checked = 0
    for t in gguf.GGUFReader(out).tensors:
        if not t.name.startswith("blk.") or is_f32(t.name):
            continue
        x = np.ascontiguousarray(want[t.name])
        own = tquant.quantize(x, recipe, block=32, scale_dtype="f16").dequantize()
        got = dequantize(t.data, t.tensor_type).reshape(x.shape)
        np.testing.assert_array_equal(got, own, err_msg=t.name)
        checked += 1
    assert checked == 21


def test_codes_of_a_tquant_checkpoint_in_iq4_nl_terms_reach_the_gguf_unchanged(cli, tmp_path):
    # A tquant checkpoint quantized with IQ4_NL's table, block 32, f16 scales (as GPTQ would
    # write it) is moved into the GGUF file: it decodes to tquant's own dequantization.
    import tquant

    make(tmp_path / "ckpt", "v2")
    table = "custom:" + ",".join(map(str, TABLES["iq4_nl"]))
    tquant.convert(tmp_path / "ckpt", tmp_path / "q", format=table, block=32, scale_dtype="f16",
                   exclude=["*kv_b_proj*"])
    r = subprocess.run([cli, "convert", str(tmp_path / "q"), "-o", str(tmp_path / "m.gguf"), "--layout",
                        "gguf", "--tokenizer", str(tmp_path / "ckpt"), "--exclude", "*kv_b_proj*"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    q = tquant.open(tmp_path / "q")
    got = {t.name: t for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    pairs = [("blk.0.attn_q_a.weight", "model.layers.0.self_attn.q_a_proj.weight"),
             ("blk.1.ffn_up_shexp.weight", "model.layers.1.mlp.shared_experts.up_proj.weight")]
    for gname, name in pairs:
        t = got[gname]
        assert t.tensor_type == T.IQ4_NL
        np.testing.assert_array_equal(dequantize(t.data, t.tensor_type).reshape(q[name].shape),
                                      q[name].dequantize(), err_msg=name)
    t = got["blk.1.ffn_down_exps.weight"]
    experts = np.stack([q[f"model.layers.1.mlp.experts.{e}.down_proj.weight"].dequantize() for e in range(4)])
    np.testing.assert_array_equal(dequantize(t.data, t.tensor_type).reshape(experts.shape), experts)
