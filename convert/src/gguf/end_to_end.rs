//! The exporter end to end on small checkpoints written here, read back with a GGUF reader of
//! the tests' own, and its errors on bad input.

use super::*;
use crate::gguf::vocab::tests::unpack_fixture;
use safetensors::tensor::TensorView as StView;
use safetensors::Dtype;

const VOCAB: usize = 129_280;

/// A DeepSeek-V3-shaped config: 1 dense layer, 1 MoE layer of 2 experts, MTP layer 2.
fn config(hidden: usize) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "vocab_size": VOCAB, "hidden_size": hidden, "intermediate_size": 64,
        "moe_intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 2, "kv_lora_rank": 32, "q_lora_rank": 32,
        "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32,
        "n_routed_experts": 2, "n_shared_experts": 1, "num_experts_per_tok": 1,
        "first_k_dense_replace": 1, "rms_norm_eps": 1e-6, "scoring_func": "sigmoid",
        "norm_topk_prob": true, "routed_scaling_factor": 2.5, "max_position_embeddings": 512,
        "num_nextn_predict_layers": 1, "rope_theta": 10000.0
    })
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i * 2654435761 + seed * 40503) % 10007;
            (h as f32 / 10007.0 - 0.5) * 0.1
        })
        .collect()
}

/// `name -> (shape, f32 values)` of the checkpoint; stored F32.
fn tensors(hidden: usize) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut t = Vec::new();
    let mut add = |name: String, shape: Vec<usize>| {
        let n = shape.iter().product();
        let seed = t.len();
        t.push((name, shape, values(n, seed)));
    };
    add("model.embed_tokens.weight".into(), vec![VOCAB, hidden]);
    add("lm_head.weight".into(), vec![VOCAB, hidden]);
    add("model.norm.weight".into(), vec![hidden]);
    for l in 0..3 {
        let p = format!("model.layers.{l}.");
        add(format!("{p}input_layernorm.weight"), vec![hidden]);
        add(format!("{p}self_attn.q_a_proj.weight"), vec![32, hidden]);
        add(format!("{p}self_attn.kv_b_proj.weight"), vec![2 * 64, 32]);
        if l == 1 {
            add(format!("{p}mlp.gate.weight"), vec![2, hidden]);
            add(format!("{p}mlp.gate.e_score_correction_bias"), vec![2]);
            for e in 0..2 {
                add(
                    format!("{p}mlp.experts.{e}.down_proj.weight"),
                    vec![hidden, 32],
                );
            }
        }
    }
    t
}

fn write_checkpoint(dir: &Path, cfg: &serde_json::Value, t: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = t
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, StView)> = t
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (n.clone(), StView::new(Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    unpack_fixture("deepseek-v3", dir);
}

/// A minimal GGUF reader: tensor name -> (ggml type id, dims fastest first, data).
/// (ggml type id, dimensions fastest first, data bytes) of a tensor read back.
type ReadTensor = (u32, Vec<u64>, Vec<u8>);

fn read_gguf(path: &Path) -> (Vec<String>, BTreeMap<String, ReadTensor>) {
    let b = std::fs::read(path).unwrap();
    let mut at = 0usize;
    let u64_ = |at: &mut usize| {
        let v = u64::from_le_bytes(b[*at..*at + 8].try_into().unwrap());
        *at += 8;
        v
    };
    assert_eq!(&b[..4], b"GGUF");
    at += 8;
    let (nt, nkv) = (u64_(&mut at), u64_(&mut at));
    let u32_ = |at: &mut usize| {
        let v = u32::from_le_bytes(b[*at..*at + 4].try_into().unwrap());
        *at += 4;
        v
    };
    let string = |at: &mut usize| {
        let n = u64::from_le_bytes(b[*at..*at + 8].try_into().unwrap()) as usize;
        let s = String::from_utf8(b[*at + 8..*at + 8 + n].to_vec()).unwrap();
        *at += 8 + n;
        s
    };
    fn skip(b: &[u8], at: &mut usize, ty: u32) {
        let size = |t: u32| match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            _ => 0,
        };
        match ty {
            8 => *at += 8 + u64::from_le_bytes(b[*at..*at + 8].try_into().unwrap()) as usize,
            9 => {
                let et = u32::from_le_bytes(b[*at..*at + 4].try_into().unwrap());
                let n = u64::from_le_bytes(b[*at + 4..*at + 12].try_into().unwrap());
                *at += 12;
                for _ in 0..n {
                    skip(b, at, et);
                }
            }
            t => *at += size(t),
        }
    }
    let mut keys = Vec::new();
    for _ in 0..nkv {
        keys.push(string(&mut at));
        let ty = u32_(&mut at);
        skip(&b, &mut at, ty);
    }
    let mut infos = Vec::new();
    for _ in 0..nt {
        let name = string(&mut at);
        let nd = u32_(&mut at);
        let dims: Vec<u64> = (0..nd).map(|_| u64_(&mut at)).collect();
        let ty = u32_(&mut at);
        infos.push((name, dims, ty, u64_(&mut at)));
    }
    let data = at.div_ceil(32) * 32;
    let mut out = BTreeMap::new();
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Bf16,
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Iq4Nl,
    ];
    for (name, dims, ty, off) in infos {
        assert_eq!(off % 32, 0);
        let t = types.iter().find(|t| t.id() == ty).unwrap();
        let n = t.bytes(dims.iter().product::<u64>() as usize);
        let start = data + off as usize;
        out.insert(name, (ty, dims, b[start..start + n].to_vec()));
    }
    (keys, out)
}

fn opts(recipe: &str) -> GgufOptions {
    GgufOptions {
        recipe: recipe.parse().unwrap(),
        ..GgufOptions::default()
    }
}

#[test]
fn every_tensor_decodes_to_tquants_own_encoding_of_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let t = tensors(64);
    write_checkpoint(dir.path(), &config(64), &t);
    let out = dir.path().join("m.gguf");
    for recipe in ["q4_0", "iq4_nl+search+q8_0"] {
        let o = opts(recipe);
        let s = convert_gguf(
            dir.path(),
            &out,
            &GgufOptions {
                force: true,
                ..o.clone()
            },
        )
        .unwrap();
        // Layer 2 is the multi-token-prediction layer: its 3 tensors are not written.
        assert_eq!(s.skipped, 3);
        let (keys, got) = read_gguf(&out);
        assert!(keys.iter().any(|k| k == "deepseek2.expert_gating_func"));
        let src: BTreeMap<&str, &Vec<f32>> = t.iter().map(|(n, _, v)| (n.as_str(), v)).collect();
        let c = DeepseekConfig {
            layers: 2,
            heads: 2,
            qk_nope: 32,
            qk_rope: 16,
            v_head: 32,
            kv_lora: 32,
            experts: 2,
            vocab: VOCAB,
        };
        let q = o.recipe.ty;
        let kept = if o.recipe.keep_q8_0 {
            GgmlType::Q8_0
        } else {
            GgmlType::F32
        };
        let mut expect: Vec<(&str, GgmlType, Vec<f32>)> = vec![
            (
                "token_embd.weight",
                kept,
                src["model.embed_tokens.weight"].clone(),
            ),
            ("output.weight", kept, src["lm_head.weight"].clone()),
            (
                "output_norm.weight",
                GgmlType::F32,
                src["model.norm.weight"].clone(),
            ),
            (
                "blk.1.ffn_gate_inp.weight",
                GgmlType::F32,
                src["model.layers.1.mlp.gate.weight"].clone(),
            ),
            (
                "blk.1.exp_probs_b.bias",
                GgmlType::F32,
                src["model.layers.1.mlp.gate.e_score_correction_bias"].clone(),
            ),
            (
                "blk.1.ffn_down_exps.weight",
                q,
                [
                    src["model.layers.1.mlp.experts.0.down_proj.weight"].as_slice(),
                    src["model.layers.1.mlp.experts.1.down_proj.weight"],
                ]
                .concat(),
            ),
        ];
        let k_b = deepseek::split_kv_b(src["model.layers.0.self_attn.kv_b_proj.weight"], &c, true);
        let v_b = deepseek::split_kv_b(src["model.layers.0.self_attn.kv_b_proj.weight"], &c, false);
        expect.push(("blk.0.attn_k_b.weight", q, k_b));
        expect.push(("blk.0.attn_v_b.weight", q, v_b));
        expect.push((
            "blk.0.attn_q_a.weight",
            q,
            src["model.layers.0.self_attn.q_a_proj.weight"].clone(),
        ));
        for (name, ty, values) in expect {
            let (id, _, data) = &got[name];
            assert_eq!(*id, ty.id(), "{recipe} {name}");
            let mine = blocks::dequantize(ty, &blocks::quantize(ty, o.recipe.rule, &values));
            assert_eq!(blocks::dequantize(ty, data), mine, "{recipe} {name}");
        }
        assert_eq!(got["blk.0.attn_k_b.weight"].1, vec![32, 32, 2]);
        assert_eq!(got["blk.1.ffn_down_exps.weight"].1, vec![32, 64, 2]);
        // 3 outside the layers; per layer attn_norm, q_a, k_b, v_b; layer 1's router, bias, experts.
        assert_eq!(got.len(), 3 + 2 * 4 + 3);
    }
}

#[test]
fn bad_checkpoints_get_errors_naming_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    // Rows of 48 values cannot be cut into ggml's blocks of 32.
    write_checkpoint(dir.path(), &config(48), &tensors(48));
    let e = convert_gguf(dir.path(), &out, &opts("q4_0"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.layers.0.self_attn.q_a_proj.weight") && e.contains("rows of 48"),
        "{e}"
    );
    assert!(!out.exists());

    // A tensor llama.cpp's deepseek2 has no place for.
    let mut t = tensors(64);
    t.push((
        "model.layers.0.self_attn.rotary.scale".into(),
        vec![2],
        vec![0.0, 1.0],
    ));
    write_checkpoint(dir.path(), &config(64), &t);
    let e = convert_gguf(dir.path(), &out, &opts("q4_0"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.layers.0.self_attn.rotary.scale")
            && e.contains(&dir.path().display().to_string()),
        "{e}"
    );

    // A non-finite value.
    let mut t = tensors(64);
    t[1].2[5] = f32::NAN;
    write_checkpoint(dir.path(), &config(64), &t);
    let e = convert_gguf(dir.path(), &out, &opts("q4_0"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lm_head.weight") && e.contains("not finite"),
        "{e}"
    );
    assert!(!out.exists());

    // A missing expert.
    let t: Vec<_> = tensors(64)
        .into_iter()
        .filter(|(n, _, _)| !n.contains("experts.1."))
        .collect();
    write_checkpoint(dir.path(), &config(64), &t);
    let e = convert_gguf(dir.path(), &out, &opts("q4_0"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.layers.1.mlp.experts.0.down_proj.weight")
            && e.contains("config.json says 2"),
        "{e}"
    );

    // Another architecture.
    let mut cfg = config(64);
    cfg["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    write_checkpoint(dir.path(), &cfg, &tensors(64));
    let e = convert_gguf(dir.path(), &out, &opts("q4_0"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("config.json") && e.contains("LlamaForCausalLM"),
        "{e}"
    );

    // No tokenizer; the output exists.
    write_checkpoint(dir.path(), &config(64), &tensors(64));
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let e = convert_gguf(dir.path(), &out, &opts("q4_0")).unwrap_err();
    assert!(matches!(e, GgufError::NoTokenizer { .. }), "{e}");
    std::fs::write(&out, b"x").unwrap();
    unpack_fixture("deepseek-v3", dir.path());
    let e = convert_gguf(dir.path(), &out, &opts("q4_0")).unwrap_err();
    assert!(matches!(e, GgufError::OutputExists { .. }), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"x");
}

/// A tquant checkpoint quantized with IQ4_NL's table (block 32, f16 scales) is moved into the
/// GGUF file as it is: every block decodes to tquant's own dequantization of that checkpoint.
#[test]
fn tquant_codes_in_a_ggml_types_terms_are_moved_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("float");
    std::fs::create_dir(&src).unwrap();
    write_checkpoint(&src, &config(64), &tensors(64));
    let table: Vec<String> = blocks::IQ4_NL_VALUES
        .iter()
        .map(|v| v.to_string())
        .collect();
    let recipe: crate::Recipe = format!("custom:{}", table.join(",")).parse().unwrap();
    let mut copts = recipe
        .options(
            tquant_formats::BlockSize::Elements(32),
            tquant_formats::ScaleDtype::F16,
        )
        .unwrap();
    // kv_b_proj's key half is transposed for llama.cpp: it stays unquantized here.
    copts.policy.exclude.push("*kv_b_proj*".into());
    let q = dir.path().join("quantized");
    let run = crate::RunOptions {
        force: false,
        threads: Some(1),
    };
    crate::convert(&src, &q, &copts, &run, &crate::NoProgress).unwrap();
    unpack_fixture("deepseek-v3", &q);
    let out = dir.path().join("m.gguf");
    let mut o = opts("iq4_nl");
    o.policy.exclude.push("*kv_b_proj*".into());
    convert_gguf(&q, &out, &o).unwrap();
    let (_, got) = read_gguf(&out);
    let ckpt = Checkpoint::open(&q).unwrap();
    let own = |n: &str| {
        let w = ckpt.get(n).unwrap();
        assert!(matches!(w, crate::Weight::Quantized(_)), "{n}");
        w.to_f32().unwrap()
    };
    let (id, _, data) = &got["blk.0.attn_q_a.weight"];
    assert_eq!(*id, GgmlType::Iq4Nl.id());
    assert_eq!(
        blocks::dequantize(GgmlType::Iq4Nl, data),
        own("model.layers.0.self_attn.q_a_proj.weight")
    );
    let experts = [
        own("model.layers.1.mlp.experts.0.down_proj.weight"),
        own("model.layers.1.mlp.experts.1.down_proj.weight"),
    ]
    .concat();
    let data = &got["blk.1.ffn_down_exps.weight"].2;
    assert_eq!(blocks::dequantize(GgmlType::Iq4Nl, data), experts);
    // Kept unquantized in both: F32 as stored.
    assert_eq!(got["blk.0.attn_k_b.weight"].0, GgmlType::F32.id());
    // The q8_0 embeddings and lm_head (the tquant layout's default) move into Q8_0 bit for
    // bit, though the recipe has no +q8_0: ggml's Q8_0 of the source values.
    let float = Checkpoint::open(&src).unwrap();
    for (tq, gg) in [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("lm_head.weight", "output.weight"),
    ] {
        assert!(ckpt.quant_info(tq).unwrap().is_q8_0(), "{tq}");
        let values = float.get(tq).unwrap().to_f32().unwrap();
        let want = tquant_formats::q8_0::Q8Matrix::quantize(&values, VOCAB, 64).unwrap();
        let (id, _, data) = &got[gg];
        assert_eq!(*id, GgmlType::Q8_0.id(), "{gg}");
        assert!(*data == want.to_ggml().unwrap(), "{gg}");
    }

    // Another table is refused, naming the tensor, rather than rounded again.
    let e = convert_gguf(
        &q,
        &out,
        &GgufOptions {
            force: true,
            ..opts("q4_0")
        },
    )
    .unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("self_attn.q_a_proj.weight") && e.contains("Q4_0"),
        "{e}"
    );
    // So is a quantized kv_b_proj, whose key half llama.cpp wants transposed.
    let q2 = dir.path().join("quantized2");
    copts.policy.exclude.clear();
    crate::convert(&src, &q2, &copts, &run, &crate::NoProgress).unwrap();
    unpack_fixture("deepseek-v3", &q2);
    let e = convert_gguf(
        &q2,
        &out,
        &GgufOptions {
            force: true,
            ..opts("iq4_nl")
        },
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("kv_b_proj.weight: it is quantized"),
        "{e}"
    );
}
