//! The tokenizer metadata llama.cpp reads (`tokenizer.ggml.*`), from a checkpoint's
//! `tokenizer.json` and `tokenizer_config.json` as llama.cpp's converter exports a byte-level
//! BPE ("gpt2") tokenizer: `get_vocab_base`, `_set_vocab_gpt2` and gguf-py's `SpecialVocab`.

use super::error::GgufError;
use super::file::{GgufFile, Value};
use serde_json::Value as Json;
use std::path::Path;

/// gguf-py's `TokenType` numbers.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// DeepSeek's pre-tokenizers, named as llama.cpp names them (`tokenizer.ggml.pre`), each known
/// by a fingerprint of the `pre_tokenizer` of its `tokenizer.json` ([`fingerprint`]). llama.cpp's
/// converter finds the same names by hashing the ids of a check text
/// (`scripts/fixtures/gguf_reference.py` confirms them for the fixture tokenizers).
pub const DEEPSEEK_PRE_TOKENIZERS: [(u64, &str); 2] = [
    // DeepSeek-V2, V2-Lite, V2.5 and deepseek-llm share this tokenizer.
    (0xcc1c_934e_477c_996c, "deepseek-llm"),
    // DeepSeek-V3, V3.1, R1.
    (0x19c6_6f03_9f08_6a03, "deepseek-v3"),
];

/// FNV-1a (64-bit) of the compact JSON of the `pre_tokenizer` object, keys sorted.
pub fn fingerprint(pre_tokenizer: &Json) -> u64 {
    let text = serde_json::to_string(pre_tokenizer).unwrap_or_default();
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The name of a known DeepSeek pre-tokenizer.
pub fn pre_tokenizer_name(pre_tokenizer: &Json) -> Option<&'static str> {
    let f = fingerprint(pre_tokenizer);
    DEEPSEEK_PRE_TOKENIZERS
        .iter()
        .find(|(k, _)| *k == f)
        .map(|(_, n)| *n)
}

fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

fn read_json(path: &Path) -> Result<Json, GgufError> {
    let text = std::fs::read_to_string(path).map_err(|e| GgufError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| GgufError::Tokenizer {
        path: path.to_path_buf(),
        reason: format!("not JSON: {e}"),
    })
}

/// Adds the tokenizer of the checkpoint directory `dir` to `file`, padded with unused
/// `[PADn]` tokens to the model's `vocab_size`.
pub fn add_tokenizer(file: &mut GgufFile, dir: &Path, vocab_size: usize) -> Result<(), GgufError> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Err(GgufError::NoTokenizer { path });
    }
    let tok = read_json(&path)?;
    let bad = |reason: String| GgufError::Tokenizer {
        path: path.clone(),
        reason,
    };
    let model = &tok["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(bad(format!(
            "model type {} is not byte-level BPE",
            model["type"]
        )));
    }
    let pre = pre_tokenizer_name(&tok["pre_tokenizer"]).ok_or_else(|| {
        bad(
            "its pre-tokenizer is none of DeepSeek's (deepseek-llm, deepseek-v3), \
             so llama.cpp would split text differently"
                .into(),
        )
    })?;
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("model.vocab is not an object".into()))?;
    let added: Vec<&Json> = tok["added_tokens"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab_size];
    let mut place = |id: u64, text: &str, ty: i32| -> Result<(), GgufError> {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            bad(format!(
                "token {text:?} has id {id}, beyond the model's vocab_size {vocab_size}"
            ))
        })?;
        *slot = Some((text.to_string(), ty));
        Ok(())
    };
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad(format!("token {text:?} has no integer id")))?;
        place(id, text, NORMAL)?;
    }
    for a in &added {
        let (Some(id), Some(text)) = (a["id"].as_u64(), a["content"].as_str()) else {
            return Err(bad("an added token lacks its id or content".into()));
        };
        let special = a["special"].as_bool().unwrap_or(false) || looks_special(text);
        let ty = if special { CONTROL } else { USER_DEFINED };
        let text = if special {
            text.to_string()
        } else {
            text.replace('\u{2581}', " ")
        };
        place(id, &text, ty)?;
    }
    let (list, types): (Vec<String>, Vec<i32>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| (format!("[PAD{i}]"), UNUSED)))
        .unzip();
    let merges = match &model["merges"] {
        Json::Array(m) => m
            .iter()
            .map(|m| match m {
                Json::String(s) => Ok(s.clone()),
                Json::Array(p) if p.len() == 2 => {
                    let part = |v: &Json| {
                        v.as_str()
                            .map(|s| s.replace(' ', "\u{0120}"))
                            .ok_or_else(|| bad("a merge is not two strings".into()))
                    };
                    Ok(format!("{} {}", part(&p[0])?, part(&p[1])?))
                }
                _ => Err(bad("a merge is neither \"a b\" nor [a, b]".into())),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(bad("model.merges is missing".into())),
    };
    file.set("tokenizer.ggml.model", Value::Str("gpt2".into()));
    file.set("tokenizer.ggml.pre", Value::Str(pre.into()));
    file.set("tokenizer.ggml.tokens", Value::Strs(list));
    file.set("tokenizer.ggml.token_type", Value::I32s(types));
    file.set("tokenizer.ggml.merges", Value::Strs(merges));
    add_special(file, dir, &tok, &added)
}

/// gguf-py's `SpecialVocab`: BOS/EOS/PAD ids by their text in `tokenizer_config.json`, whether
/// BOS/EOS are added (a ByteLevel post-processor says no), and the chat template.
fn add_special(
    file: &mut GgufFile,
    dir: &Path,
    tok: &Json,
    added: &[&Json],
) -> Result<(), GgufError> {
    let cfg_path = dir.join("tokenizer_config.json");
    let cfg = if cfg_path.is_file() {
        read_json(&cfg_path)?
    } else {
        Json::Null
    };
    let mut add_flags: [Option<bool>; 2] = [None, None];
    let post = &tok["post_processor"];
    let processors: Vec<&Json> = match post["processors"].as_array() {
        Some(p) => p.iter().collect(),
        None if post.is_object() => vec![post],
        None => vec![],
    };
    for p in processors {
        if p["type"].as_str() == Some("ByteLevel") {
            add_flags = add_flags.map(|f| f.or(Some(false)));
        }
    }
    for (i, typ) in ["bos", "eos"].iter().enumerate() {
        if add_flags[i].is_none() {
            add_flags[i] = cfg[format!("add_{typ}_token")].as_bool();
        }
        if let Some(f) = add_flags[i] {
            file.set(format!("tokenizer.ggml.add_{typ}_token"), Value::Bool(f));
        }
    }
    for (typ, key) in [
        ("bos", "bos_token_id"),
        ("eos", "eos_token_id"),
        ("pad", "padding_token_id"),
    ] {
        let entry = &cfg[format!("{typ}_token")];
        let content = entry.as_str().or_else(|| entry["content"].as_str());
        let id = content.and_then(|c| {
            added
                .iter()
                .find(|a| a["content"].as_str() == Some(c))
                .and_then(|a| a["id"].as_u64())
        });
        if let Some(id) = id {
            file.set(format!("tokenizer.ggml.{key}"), Value::U32(id as u32));
        }
    }
    if let Some(t) = cfg["chat_template"].as_str() {
        file.set("tokenizer.chat_template", Value::Str(t.to_string()));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;

    /// The fixture DeepSeek tokenizer `which` (`deepseek-v2`, `deepseek-v3`) unpacked into `dir`.
    pub(crate) fn unpack_fixture(which: &str, dir: &Path) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/tokenizers")
            .join(which);
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(src.join("tokenizer.json.gz")).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        std::fs::write(dir.join("tokenizer.json"), text).unwrap();
        std::fs::copy(
            src.join("tokenizer_config.json"),
            dir.join("tokenizer_config.json"),
        )
        .unwrap();
    }

    #[test]
    fn deepseek_pre_tokenizers_are_named_as_llama_cpp_names_them() {
        let want: Json = serde_json::from_str(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../tests/data/gguf/pre_tokenizers.json"),
            )
            .unwrap(),
        )
        .unwrap();
        for w in ["deepseek-v2", "deepseek-v3"] {
            let d = tempfile::tempdir().unwrap();
            unpack_fixture(w, d.path());
            let j = read_json(&d.path().join("tokenizer.json")).unwrap();
            assert_eq!(
                pre_tokenizer_name(&j["pre_tokenizer"]),
                want[w].as_str(),
                "{w}"
            );
        }
    }

    #[test]
    fn tokens_are_padded_typed_and_special_ids_found() {
        let d = tempfile::tempdir().unwrap();
        unpack_fixture("deepseek-v3", d.path());
        let mut f = GgufFile::default();
        add_tokenizer(&mut f, d.path(), 129_280).unwrap();
        let Some(Value::Strs(tokens)) = f.get("tokenizer.ggml.tokens") else {
            panic!()
        };
        let Some(Value::I32s(types)) = f.get("tokenizer.ggml.token_type") else {
            panic!()
        };
        assert_eq!((tokens.len(), types.len()), (129_280, 129_280));
        assert_eq!(tokens[0], "<｜begin▁of▁sentence｜>");
        assert_eq!(types[0], CONTROL);
        assert_eq!(
            (tokens[129_279].as_str(), types[129_279]),
            ("[PAD129279]", UNUSED)
        );
        assert_eq!(f.get("tokenizer.ggml.bos_token_id"), Some(&Value::U32(0)));
        assert_eq!(f.get("tokenizer.ggml.eos_token_id"), Some(&Value::U32(1)));
        assert_eq!(
            f.get("tokenizer.ggml.pre"),
            Some(&Value::Str("deepseek-v3".into()))
        );
        assert!(matches!(
            f.get("tokenizer.chat_template"),
            Some(Value::Str(_))
        ));
        // A vocab_size smaller than the tokenizer's ids is refused, naming the file.
        let e = add_tokenizer(&mut GgufFile::default(), d.path(), 128).unwrap_err();
        assert!(
            e.to_string().contains("tokenizer.json") && e.to_string().contains("vocab_size 128"),
            "{e}"
        );
    }

    #[test]
    fn missing_or_foreign_tokenizers_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = add_tokenizer(&mut GgufFile::default(), d.path(), 10).unwrap_err();
        assert!(
            matches!(e, GgufError::NoTokenizer { .. }) && e.to_string().contains("tokenizer.json"),
            "{e}"
        );
        let tok = serde_json::json!({
            "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
        });
        std::fs::write(d.path().join("tokenizer.json"), tok.to_string()).unwrap();
        let e = add_tokenizer(&mut GgufFile::default(), d.path(), 10).unwrap_err();
        assert!(
            e.to_string()
                .contains("pre-tokenizer is none of DeepSeek's"),
            "{e}"
        );
    }
}
