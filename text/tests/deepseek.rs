//! DeepSeek-V2's and V3's real tokenizers against Python `tokenizers` and transformers
//! (tests/data/tokenizers/reference.json, written by scripts/fixtures/tokenizer_ids.py).

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use tquant_text::{ChatTemplate, Message, StreamDecoder, TextError, Tokenizer, Vocabulary};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tokenizers")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(data().join("reference.json")).unwrap()).unwrap()
}

/// A folder with `name`'s tokenizer.json (decompressed) and tokenizer_config.json.
fn folder(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let gz = std::fs::File::open(data().join(name).join("tokenizer.json.gz")).unwrap();
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut json)
        .unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), json).unwrap();
    std::fs::copy(
        data().join(name).join("tokenizer_config.json"),
        dir.path().join("tokenizer_config.json"),
    )
    .unwrap();
    dir
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

const NAMES: [&str; 2] = ["deepseek-v2", "deepseek-v3"];

#[test]
fn ids_equal_python_tokenizers_exactly() {
    let r = reference();
    let heldout = std::fs::read_to_string(data().join("../model/heldout_head.txt")).unwrap();
    for name in NAMES {
        let want = &r["tokenizers"][name];
        let dir = folder(name);
        let t = Tokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(t.vocab_size() as u64, want["vocab_size"].as_u64().unwrap());
        assert_eq!(
            t.encode(&heldout, false).unwrap(),
            ids(&want["heldout_ids"])
        );
        let hard = want["hard"].as_array().unwrap();
        assert!(hard.len() >= 20);
        for case in hard {
            let text = case["text"].as_str().unwrap();
            let got = t.encode(text, false).unwrap();
            assert_eq!(got, ids(&case["ids"]), "{name}: {text:?}");
            assert_eq!(
                t.decode(&got).unwrap(),
                text,
                "{name}: round trip of {text:?}"
            );
        }
        for case in want["special"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            assert_eq!(
                t.encode(text, true).unwrap(),
                ids(&case["ids"]),
                "{name}: {text:?}"
            );
        }
    }
}

#[test]
fn special_tokens_follow_the_tokenizer_config() {
    let v2 = folder("deepseek-v2");
    let t = Tokenizer::from_dir(v2.path()).unwrap();
    assert_eq!(t.bos_id(), Some(100000));
    assert_eq!(t.eos_ids(), [100001]);
    assert!(t.adds_bos());
    let v3 = folder("deepseek-v3");
    let t = Tokenizer::from_dir(v3.path()).unwrap();
    assert_eq!(t.bos_id(), Some(0));
    assert_eq!(t.eos_ids(), [1]);
    assert!(!t.adds_bos());
}

fn pieces(s: &mut StreamDecoder, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&i| s.push(i).unwrap()).collect()
}

#[test]
fn stream_prints_a_split_character_once_whole() {
    for name in NAMES {
        let dir = folder(name);
        let v = Vocabulary::open(dir.path(), None).unwrap();
        let ids = v.encode("ok 🦀 done", false).unwrap();
        let mut s = v.stream();
        let got = pieces(&mut s, &ids);
        assert!(
            ids.len() > 4,
            "{name}: the emoji takes several byte-level tokens"
        );
        assert_eq!(
            got.iter().filter(|p| p.contains('🦀')).count(),
            1,
            "{got:?}"
        );
        assert!(got.iter().all(|p| !p.contains('\u{FFFD}')), "{got:?}");
        assert_eq!(got.concat() + &s.flush().unwrap(), "ok 🦀 done");

        // Every hard string streams to its decoding; a cut-off character comes out at flush.
        for case in reference()["tokenizers"][name]["hard"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let mut s = v.stream();
            let streamed = pieces(&mut s, &ids_of(&v, text)).concat() + &s.flush().unwrap();
            assert_eq!(streamed, text, "{name}: {text:?}");
        }
        let cut = &v.encode("😀", false).unwrap()[..1];
        let mut s = v.stream();
        assert_eq!(pieces(&mut s, cut).concat(), "");
        assert_eq!(s.flush().unwrap(), "\u{FFFD}");
    }
}

fn ids_of(v: &Vocabulary, text: &str) -> Vec<u32> {
    v.encode(text, false).unwrap()
}

#[test]
fn byte_vocabulary_streams_whole_characters() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vocabulary::open(dir.path(), Some(256)).unwrap();
    let ids = v.encode("é😀", false).unwrap();
    assert_eq!(ids, [0xc3, 0xa9, 0xf0, 0x9f, 0x98, 0x80]);
    let mut s = v.stream();
    assert_eq!(pieces(&mut s, &ids), ["", "é", "", "", "", "😀"]);
    assert_eq!(v.decode(&ids).unwrap(), "é😀");
}

#[test]
fn chat_templates_render_as_transformers_does() {
    let r = reference();
    for name in NAMES {
        let dir = folder(name);
        let t = Tokenizer::from_dir(dir.path()).unwrap();
        let template = t
            .chat_template()
            .expect("both configs have a chat template");
        let cases = r["tokenizers"][name]["chat"].as_array().unwrap();
        assert_eq!(cases.len(), 4);
        for case in cases {
            let messages: Vec<Message> = case["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
                .collect();
            let gen = case["add_generation_prompt"].as_bool().unwrap();
            assert_eq!(
                template.render(&messages, gen).unwrap(),
                case["rendered"].as_str().unwrap(),
                "{name}: {messages:?} {gen}"
            );
        }
    }
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap();
}

#[test]
fn config_forms_and_config_json_fallback() {
    let dir = folder("deepseek-v2");
    let p = dir.path();
    // Plain-string tokens, a list of named templates, and config.json's eos ids as a list.
    write(
        p,
        "tokenizer_config.json",
        r#"{"bos_token": "<｜begin▁of▁sentence｜>", "add_bos_token": true,
            "chat_template": [{"name": "tool_use", "template": "tools"},
                              {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ raise_exception('no') if messages|length > 1 }}"}]}"#,
    );
    write(p, "config.json", r#"{"eos_token_id": [100001, 7]}"#);
    let t = Tokenizer::from_dir(p).unwrap();
    assert_eq!(t.eos_ids(), [100001, 7]);
    assert_eq!(t.encode("a", true).unwrap()[0], 100000);
    let c = t.chat_template().unwrap();
    assert_eq!(
        c.render(&[Message::new("user", "hi")], true).unwrap(),
        "<｜begin▁of▁sentence｜>hi"
    );
    let two = [Message::new("user", "a"), Message::new("user", "b")];
    let e = c.render(&two, true).unwrap_err();
    assert!(e.to_string().contains("no"), "{e}");

    // No tokenizer config: BOS from config.json.
    std::fs::remove_file(p.join("tokenizer_config.json")).unwrap();
    write(
        p,
        "config.json",
        r#"{"bos_token_id": 100000, "eos_token_id": 100001}"#,
    );
    let t = Tokenizer::from_dir(p).unwrap();
    assert_eq!((t.bos_id(), t.eos_ids()), (Some(100000), &[100001][..]));
    assert!(!t.adds_bos() && t.chat_template().is_none());
}

fn error(dir: &Path) -> String {
    Tokenizer::from_dir(dir).unwrap_err().to_string()
}

#[test]
fn bad_folders_and_files_are_named() {
    let e = error(Path::new("/nonexistent/tokenizer-dir"));
    assert!(e.contains("/nonexistent/tokenizer-dir"), "{e}");

    let empty = tempfile::tempdir().unwrap();
    assert!(error(empty.path()).contains("no tokenizer.json"));
    write(empty.path(), "tiktoken.model", "x");
    let e = Vocabulary::open(empty.path(), Some(1000))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tiktoken.model is not supported") && e.contains("needs tokenizer.json"),
        "{e}"
    );
    assert!(matches!(
        Vocabulary::open(empty.path(), Some(256)).unwrap(),
        Vocabulary::Bytes
    ));

    write(empty.path(), "tokenizer.json", "{not json");
    let e = error(empty.path());
    assert!(e.contains("tokenizer.json"), "{e}");

    let dir = folder("deepseek-v3");
    write(
        dir.path(),
        "tokenizer_config.json",
        r#"{"bos_token": "<no such token>"}"#,
    );
    let e = error(dir.path());
    assert!(
        e.contains("tokenizer_config.json") && e.contains("<no such token>"),
        "{e}"
    );
    write(
        dir.path(),
        "tokenizer_config.json",
        r#"{"chat_template": "{% if %}"}"#,
    );
    let e = error(dir.path());
    assert!(
        e.contains("tokenizer_config.json") && e.contains("syntax"),
        "{e}"
    );
    write(
        dir.path(),
        "tokenizer_config.json",
        r#"{"add_bos_token": "yes"}"#,
    );
    assert!(error(dir.path()).contains("add_bos_token"));

    let e = Vocabulary::open(folder("deepseek-v3").path(), Some(1000))
        .unwrap_err()
        .to_string();
    assert!(e.contains("128815") && e.contains("1000"), "{e}");
    let e = ChatTemplate::new("{% if %}", None, None).unwrap_err();
    assert!(matches!(e, TextError::Template { .. }), "{e:?}");
    let e = e.to_string();
    assert!(
        e.starts_with("chat template: ") && e.contains("syntax"),
        "{e}"
    );
}
