//! Text in and out of the CLI on a small generated DeepSeek-V2 model whose vocabulary is the real
//! DeepSeek-V2 tokenizer's (tokenizer files copied beside it): `tokenize`, `run --prompt`,
//! `run --chat`, `eval --text`, `report --text` and `convert --calibrate`.

use crate::support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::{path, root, stderr_of_failure, stdout_ok};
use tquant::model::synthetic::SyntheticSource;
use tquant::model::{Config, TensorData, TensorSource};
use tquant::text::{Message, Tokenizer};

const VOCAB: usize = 100002;
const EOS: u32 = 100001;
const HIDDEN: usize = 16;

fn config_json() -> String {
    format!(
        r#"{{"model_type":"deepseek_v2","architectures":["DeepseekV2ForCausalLM"],
        "vocab_size":{VOCAB},"hidden_size":{HIDDEN},"intermediate_size":32,
        "moe_intermediate_size":8,"num_hidden_layers":2,"num_attention_heads":2,
        "q_lora_rank":null,"kv_lora_rank":8,"qk_nope_head_dim":8,"qk_rope_head_dim":4,
        "v_head_dim":8,"n_routed_experts":4,"n_shared_experts":1,"num_experts_per_tok":2,
        "first_k_dense_replace":1,"topk_method":"greedy","n_group":1,"topk_group":1,
        "routed_scaling_factor":1.0,"max_position_embeddings":64,"rope_theta":10000,
        "rms_norm_eps":1e-6,"tie_word_embeddings":false,"torch_dtype":"float32",
        "bos_token_id":100000,"eos_token_id":{EOS}}}"#
    )
}

fn copy_tokenizer(dir: &Path) {
    let data = root().join("tests/data/tokenizers/deepseek-v2");
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(data.join("tokenizer.json.gz")).unwrap())
        .read_to_end(&mut json)
        .unwrap();
    std::fs::write(dir.join("tokenizer.json"), json).unwrap();
    std::fs::copy(
        data.join("tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .unwrap();
}

/// Writes the model (f32 safetensors) into `dir`. With `eos_model`, every token embeds to the
/// same vector of ones, attention and MLP outputs are zero, and lm_head's EOS row is ones: the
/// final hidden state is ones and EOS scores 16 against about N(0, 1) for every other token.
fn write_model(dir: &Path, eos_model: bool, tokenizer: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let text = config_json();
    std::fs::write(dir.join("config.json"), &text).unwrap();
    let config = Config::from_json(&text, "test config").unwrap();
    let src = SyntheticSource::new(&config, 5, false);
    let mut names: Vec<&String> = src.shapes().keys().collect();
    names.sort();
    let mut tensors = Vec::new();
    for name in names {
        let TensorData::Dense { shape, mut values } = src.tensor(name).unwrap() else {
            panic!("synthetic tensors are dense")
        };
        if eos_model {
            if name == "model.embed_tokens.weight" {
                values.fill(1.0);
            } else if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
                values.fill(0.0);
            } else if name == "lm_head.weight" {
                let row = EOS as usize * HIDDEN;
                values[row..row + HIDDEN].fill(1.0);
            }
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((name.clone(), shape, bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
            (n.clone(), v.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    if tokenizer {
        copy_tokenizer(dir);
    }
}

struct Models {
    _tmp: tempfile::TempDir,
    random: PathBuf,
    eos: PathBuf,
}

fn models() -> Models {
    let tmp = tempfile::tempdir().unwrap();
    let (random, eos) = (tmp.path().join("random"), tmp.path().join("eos"));
    write_model(&random, false, true);
    write_model(&eos, true, true);
    Models {
        _tmp: tmp,
        random,
        eos,
    }
}

fn tokenizer(dir: &Path) -> Tokenizer {
    Tokenizer::from_dir(dir).unwrap()
}

/// Runs tquant with stdin from /dev/null (not a terminal); (stdout, stderr), must succeed.
fn run_ok(args: &[&str]) -> (String, String) {
    let out = support::tquant(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "tquant {args:?} failed: {err}");
    (String::from_utf8(out.stdout).unwrap(), err)
}

/// `N` of the "prefill: N tokens" and "decode: N tokens" stderr line.
fn counts(stderr: &str) -> (usize, usize) {
    let line = stderr.lines().find(|l| l.starts_with("prefill:")).unwrap();
    let num = |key: &str| -> usize {
        let rest = &line[line.find(key).unwrap() + key.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    (num("prefill: "), num("decode: "))
}

#[test]
fn tokenize_prints_ids_special_tokens_and_text() {
    let dir = tempfile::tempdir().unwrap();
    copy_tokenizer(dir.path());
    let d = path(dir.path());
    let want = tokenizer(dir.path())
        .encode("Hello, world! 中文", false)
        .unwrap();
    assert_eq!(want.len(), 6, "{want:?}");
    let plain = stdout_ok(&["tokenize", d, "--prompt", "Hello, world! 中文"]);
    let got: Vec<u32> = plain
        .trim_end()
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(got, want);
    let json: serde_json::Value =
        serde_json::from_str(&stdout_ok(&["tokenize", d, "--prompt", "Hello", "--json"])).unwrap();
    let hello = json["ids"].as_array().unwrap().clone();
    let special: serde_json::Value = serde_json::from_str(&stdout_ok(&[
        "tokenize",
        d,
        "--prompt",
        "Hello",
        "--json",
        "--special",
    ]))
    .unwrap();
    // DeepSeek-V2's tokenizer config adds BOS.
    let s = special["ids"].as_array().unwrap();
    assert_eq!(s[0], 100000);
    assert_eq!(s[1..], hello[..]);

    let file = dir.path().join("t.txt");
    std::fs::write(&file, "Hello, world! 中文").unwrap();
    assert_eq!(stdout_ok(&["tokenize", d, "--text", path(&file)]), plain);
    let ids: Vec<String> = want.iter().map(u32::to_string).collect();
    let decoded = stdout_ok(&["tokenize", d, "--decode", &ids.join(",")]);
    assert_eq!(decoded, "Hello, world! 中文\n");

    let e = stderr_of_failure(&["tokenize", "/nonexistent/model-dir", "--prompt", "x"]);
    assert!(e.contains("/nonexistent/model-dir"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = stderr_of_failure(&["tokenize", path(empty.path()), "--prompt", "x"]);
    assert!(e.contains("no tokenizer.json"), "{e}");
}

#[test]
fn run_adds_bos_stops_at_eos_and_goes_past_it_when_told() {
    let m = models();
    let eos = path(&m.eos);
    let prompt = tokenizer(&m.eos).encode("Hello there", false).unwrap();
    let (out, err) = run_ok(&["run", eos, "--prompt", "Hello there", "--max-tokens", "8"]);
    // BOS first (add_bos_token), then the prompt; EOS comes first and ends the answer unprinted.
    assert_eq!(counts(&err), (prompt.len() + 1, 1), "{err}");
    assert_eq!(out, "\n");
    let (out, err) = run_ok(&[
        "run",
        eos,
        "--prompt",
        "Hello there",
        "--max-tokens",
        "8",
        "--ignore-eos",
    ]);
    assert_eq!(counts(&err).1, 8, "{err}");
    assert_eq!(out.matches("<｜end▁of▁sentence｜>").count(), 8, "{out}");
    // Ids in, ids out, comma-separated.
    let (out, _) = run_ok(&[
        "run",
        eos,
        "--prompt-tokens",
        "5,6,7",
        "--max-tokens",
        "3",
        "--ignore-eos",
    ]);
    assert_eq!(out, format!("{EOS},{EOS},{EOS}\n"));
    let (out, _) = run_ok(&["run", eos, "--prompt-tokens", "5,6,7", "--max-tokens", "3"]);
    assert_eq!(out, "\n");
}

#[test]
fn run_samples_deterministically_by_seed_with_top_k_and_top_p() {
    let m = models();
    let r = path(&m.random);
    let sample = |extra: &[&str]| {
        let mut a = vec![
            "run",
            r,
            "--prompt-tokens",
            "11,12,13",
            "--max-tokens",
            "16",
        ];
        a.extend_from_slice(extra);
        run_ok(&a).0
    };
    let greedy = sample(&[]);
    let s7 = sample(&[
        "--temperature",
        "1",
        "--top-k",
        "50",
        "--top-p",
        "0.9",
        "--seed",
        "7",
    ]);
    assert_eq!(
        s7,
        sample(&[
            "--temperature",
            "1",
            "--top-k",
            "50",
            "--top-p",
            "0.9",
            "--seed",
            "7"
        ])
    );
    assert_ne!(
        s7,
        sample(&[
            "--temperature",
            "1",
            "--top-k",
            "50",
            "--top-p",
            "0.9",
            "--seed",
            "8"
        ])
    );
    assert_ne!(s7, greedy);
    // Top-k 1 (or a tiny nucleus) leaves the most likely token: greedy whatever the seed.
    assert_eq!(
        sample(&["--temperature", "1", "--top-k", "1", "--seed", "3"]),
        greedy
    );
    assert_eq!(
        sample(&["--temperature", "1", "--top-p", "1e-9", "--seed", "3"]),
        greedy
    );
    assert_eq!(greedy.trim().split(',').count(), 16);
    // Text out: the streamed pieces make the decoding of the same generation's ids.
    let t = tokenizer(&m.random);
    let prompt: Vec<String> = t
        .encode("Once upon", true)
        .unwrap()
        .iter()
        .map(u32::to_string)
        .collect();
    let args = ["--max-tokens", "10", "--temperature", "1", "--seed", "4"];
    let (text, _) = run_ok(&[&["run", r, "--prompt", "Once upon"][..], &args].concat());
    let (ids, _) = run_ok(&[&["run", r, "--prompt-tokens", &prompt.join(",")][..], &args].concat());
    let ids: Vec<u32> = ids.trim().split(',').map(|x| x.parse().unwrap()).collect();
    assert_eq!(ids.len(), 10);
    assert_eq!(text, t.decode(&ids).unwrap() + "\n");
}

#[test]
fn run_refuses_to_pass_the_context_limit() {
    let m = models();
    let e = stderr_of_failure(&[
        "run",
        path(&m.random),
        "--prompt-tokens",
        "1,2,3,4,5,6,7,8,9,10",
        "--max-tokens",
        "60",
    ]);
    assert!(
        e.contains("max_position_embeddings (64)") && e.contains("10 tokens") && e.contains("70"),
        "{e}"
    );
    let e = stderr_of_failure(&["run", path(&m.random), "--prompt", "hi", "--top-p", "0"]);
    assert!(e.contains("top-p"), "{e}");
}

fn chat_prompt_tokens(dir: &Path, messages: &[Message]) -> usize {
    let t = tokenizer(dir);
    let text = t.chat_template().unwrap().render(messages, true).unwrap();
    assert!(text.starts_with("<｜begin▁of▁sentence｜>") && text.ends_with("Assistant:"));
    t.encode(&text, false).unwrap().len()
}

#[test]
fn chat_renders_the_template_once_with_its_own_bos() {
    let m = models();
    let eos = path(&m.eos);
    let (_, err) = run_ok(&[
        "run",
        eos,
        "--chat",
        "--prompt",
        "Hi there",
        "--max-tokens",
        "4",
    ]);
    let want = chat_prompt_tokens(&m.eos, &[Message::new("user", "Hi there")]);
    assert_eq!(counts(&err), (want, 1), "{err}");
    let (_, err) = run_ok(&[
        "run",
        eos,
        "--chat",
        "--system",
        "Be brief.",
        "--prompt",
        "Hi there",
        "--max-tokens",
        "4",
    ]);
    let with_system = [
        Message::new("system", "Be brief."),
        Message::new("user", "Hi there"),
    ];
    assert_eq!(counts(&err).0, chat_prompt_tokens(&m.eos, &with_system));

    // The message from standard input when it is not a terminal.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tquant"))
        .args(["run", eos, "--chat", "--max-tokens", "4", "--ignore-eos"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hi there\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(counts(&err), (want, 4), "{err}");

    // A byte-vocabulary model has no template.
    let e = stderr_of_failure(&[
        "run",
        path(&support::tiny_lite()),
        "--chat",
        "--prompt",
        "x",
    ]);
    assert!(e.contains("--chat needs a tokenizer.json"), "{e}");
}

/// The held-out text's ASCII characters: every chunk boundary falls between characters, so
/// decoding a chunk's scored ids gives exactly the bytes they cover.
fn ascii_text(dir: &Path) -> (PathBuf, String) {
    let text: String = std::fs::read_to_string(root().join("tests/data/model/heldout_head.txt"))
        .unwrap()
        .chars()
        .filter(char::is_ascii)
        .take(6000)
        .collect();
    let file = dir.join("ascii.txt");
    std::fs::write(&file, &text).unwrap();
    (file, text)
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&stdout_ok(args)).unwrap()
}

#[test]
fn eval_text_reports_bits_per_byte_of_the_text_and_perplexity() {
    let m = models();
    let r = path(&m.random);
    let (file, text) = ascii_text(m._tmp.path());
    let max = 4000;
    let e = json(&[
        "eval",
        r,
        "--text",
        path(&file),
        "--window",
        "32",
        "--max-bytes",
        "4000",
        "--json",
    ]);
    let t = tokenizer(&m.random);
    let ids = t.encode(&text[..max], false).unwrap();
    let chunks = ids.len() / 33;
    assert_eq!(e["tokens"], chunks * 32);
    let bytes: usize = ids
        .chunks_exact(33)
        .map(|c| t.decode(&c[1..]).unwrap().len())
        .sum();
    assert_eq!(e["bytes"], bytes);
    let (bpb, bpt) = (
        e["bits_per_byte"].as_f64().unwrap(),
        e["bits_per_token"].as_f64().unwrap(),
    );
    let total_bits = bpt * (chunks * 32) as f64;
    assert!((bpb - total_bits / bytes as f64).abs() < 1e-9, "{e}");
    assert!((e["perplexity"].as_f64().unwrap() - bpt.exp2()).abs() < 1e-6 * bpt.exp2());
    // A random model is near uniform over its 100002 tokens.
    assert!(bpt > 15.0 && bpt < 19.0, "{bpt}");

    // The same ids as a token file give the same bits per token.
    let tokens_file = m._tmp.path().join("ids.bin");
    let raw: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(&tokens_file, raw).unwrap();
    let f = json(&[
        "eval",
        r,
        "--tokens-file",
        path(&tokens_file),
        "--window",
        "32",
        "--json",
    ]);
    assert!(
        (f["bits_per_token"].as_f64().unwrap() - bpt).abs() < 1e-9,
        "{f}"
    );

    // The window must leave room in max_position_embeddings (64).
    let e = stderr_of_failure(&["eval", r, "--text", path(&file), "--window", "64"]);
    assert!(
        e.contains("max_position_embeddings is 64") && e.contains("at most 63"),
        "{e}"
    );

    // No tokenizer.json and no byte vocabulary: what is needed is named.
    let bare = m._tmp.path().join("bare");
    write_model(&bare, false, false);
    let e = stderr_of_failure(&["eval", path(&bare), "--text", path(&file), "--window", "32"]);
    assert!(
        e.contains("tokenizer.json") && e.contains("--tokens-file"),
        "{e}"
    );
}

#[test]
fn report_and_calibration_tokenize_text_with_the_models_tokenizer() {
    let m = models();
    let r = path(&m.random);
    let (file, _) = ascii_text(m._tmp.path());
    let out = m._tmp.path().join("report");
    stdout_ok(&[
        "report",
        r,
        "--text",
        path(&file),
        "--window",
        "32",
        "--max-bytes",
        "3000",
        "--formats",
        "nf4",
        "--block",
        "16",
        "--scale-dtype",
        "f32",
        "-o",
        path(&out),
    ]);
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let e = json(&[
        "eval",
        r,
        "--text",
        path(&file),
        "--window",
        "32",
        "--max-bytes",
        "3000",
        "--json",
    ]);
    let text = serde_json::to_string(&rep).unwrap();
    let base = e["bits_per_byte"].as_f64().unwrap();
    assert!(
        text.contains(&format!("{base}")),
        "the f32 baseline {base} is eval's: {text}"
    );
    let row = &rep["rows"][0];
    assert_eq!(row["format"], "nf4");
    assert!(row["bits_per_byte"].as_f64().unwrap() > 0.0);

    let q = m._tmp.path().join("q");
    stdout_ok(&[
        "convert",
        r,
        "-o",
        path(&q),
        "--format",
        "nf4",
        "--block",
        "16",
        "--calibrate",
        path(&file),
        "--calibrate-bytes",
        "2000",
        "--calibrate-window",
        "32",
    ]);
    let q2 = m._tmp.path().join("q2");
    stdout_ok(&[
        "convert",
        r,
        "-o",
        path(&q2),
        "--format",
        "nf4",
        "--block",
        "16",
        "--calibrate-self",
        "64",
        "--calibrate-window",
        "32",
    ]);
    let bare = m._tmp.path().join("bare");
    write_model(&bare, false, false);
    let e = stderr_of_failure(&[
        "convert",
        path(&bare),
        "-o",
        path(&m._tmp.path().join("q3")),
        "--calibrate",
        path(&file),
    ]);
    assert!(
        e.contains("tokenizer.json") && e.contains("--calibrate-ids"),
        "{e}"
    );
}

/// Every "prefill: N tokens" count of a run's output, in order.
fn prefills(text: &str) -> Vec<usize> {
    text.lines()
        .filter_map(|l| l.find("prefill: ").map(|i| &l[i + 9..]))
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn chat_on_a_terminal_is_a_conversation_that_keeps_its_history() {
    // `script` gives the run a terminal for its standard input.
    let m = models();
    let cmd = format!(
        "{} run {} --chat --system 'Be brief.' --max-tokens 4",
        env!("CARGO_BIN_EXE_tquant"),
        path(&m.eos)
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all("Hi there\n中文 please\n\n".as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // Each answer stops at EOS at once (empty); the second prompt holds the whole conversation.
    let system = Message::new("system", "Be brief.");
    let first = [system.clone(), Message::new("user", "Hi there")];
    let second = [
        system,
        Message::new("user", "Hi there"),
        Message::new("assistant", ""),
        Message::new("user", "中文 please"),
    ];
    let want = vec![
        chat_prompt_tokens(&m.eos, &first),
        chat_prompt_tokens(&m.eos, &second),
    ];
    assert_eq!(prefills(&text), want, "{text}");
}
