//! A Hugging Face tokenizer (`tokenizer.json`) with the special tokens its checkpoint adds.

use crate::chat::ChatTemplate;
use crate::{Result, TextError};
use serde_json::Value;
use std::path::Path;

/// A `tokenizer.json` tokenizer plus what `tokenizer_config.json` (and, as a fallback,
/// `config.json`) say about BOS, EOS and the chat template.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    chat_template: Option<ChatTemplate>,
}

/// Ids of a text with, for each token, the byte offset in the text where it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The token ids.
    pub ids: Vec<u32>,
    /// For each token, the byte offset in the text where it ends.
    pub ends: Vec<usize>,
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(TextError::Io {
                path: path.into(),
                err,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TextError::Invalid {
            path: path.into(),
            msg: format!("not valid JSON: {e}"),
        })
}

fn invalid(path: &Path, msg: String) -> TextError {
    TextError::Invalid {
        path: path.into(),
        msg,
    }
}

/// A token given as `"text"` or `{"content": "text", ...}`; `None` for null or absent.
fn token_text(path: &Path, config: &Value, key: &str) -> Result<Option<String>> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(invalid(path, format!("`{key}` has no string `content`"))),
        },
        Some(v) => Err(invalid(
            path,
            format!("`{key}` must be a string or {{\"content\": ...}}, got {v}"),
        )),
    }
}

fn flag(path: &Path, config: &Value, key: &str) -> Result<bool> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(invalid(
            path,
            format!("`{key}` must be true or false, got {v}"),
        )),
    }
}

/// `bos_token_id` / `eos_token_id` of a `config.json`: one id or a list.
fn config_ids(path: &Path, config: &Value, key: &str) -> Result<Vec<u32>> {
    let one = |v: &Value| {
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| invalid(path, format!("`{key}` must be a token id, got {v}")))
    };
    match config.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

impl Tokenizer {
    /// Reads `dir/tokenizer.json`, and `dir/tokenizer_config.json` and `dir/config.json` where
    /// present.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(TextError::Io {
                path: dir.into(),
                err: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            });
        }
        let file = dir.join("tokenizer.json");
        if !file.is_file() {
            return Err(TextError::Unsupported {
                dir: dir.into(),
                msg: "no tokenizer.json (a Hugging Face tokenizer file is needed)".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&file)
            .map_err(|e| invalid(&file, format!("not a tokenizer this version reads: {e}")))?;
        let config_path = dir.join("tokenizer_config.json");
        let config = read_json(&config_path)?.unwrap_or(Value::Null);
        let model_path = dir.join("config.json");
        let model = read_json(&model_path)?.unwrap_or(Value::Null);

        let id_of = |text: String| {
            inner.token_to_id(&text).ok_or_else(|| {
                invalid(
                    &config_path,
                    format!("the token {text:?} is not in the vocabulary of tokenizer.json"),
                )
            })
        };
        let bos_text = match token_text(&config_path, &config, "bos_token")? {
            Some(t) => Some(t),
            None => config_ids(&model_path, &model, "bos_token_id")?
                .first()
                .and_then(|&i| inner.id_to_token(i)),
        };
        let bos = bos_text.clone().map(id_of).transpose()?;
        let eos_text = token_text(&config_path, &config, "eos_token")?;
        let mut eos = match &eos_text {
            Some(t) => vec![id_of(t.clone())?],
            None => Vec::new(),
        };
        let model_eos = config_ids(&model_path, &model, "eos_token_id")?;
        let eos_text = eos_text.or_else(|| model_eos.first().and_then(|&i| inner.id_to_token(i)));
        for id in model_eos {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
        let add_bos = flag(&config_path, &config, "add_bos_token")?;
        let add_eos = flag(&config_path, &config, "add_eos_token")?;
        if add_bos && bos.is_none() {
            return Err(invalid(
                &config_path,
                "`add_bos_token` is true but no BOS token is named".into(),
            ));
        }
        if add_eos && eos.is_empty() {
            return Err(invalid(
                &config_path,
                "`add_eos_token` is true but no EOS token is named".into(),
            ));
        }
        let chat_template = chat_template(&config_path, &config)?
            .map(|source| {
                ChatTemplate::new(&source, bos_text, eos_text)
                    .map_err(|e| invalid(&config_path, e.to_string()))
            })
            .transpose()?;
        Ok(Self {
            inner,
            bos,
            eos,
            add_bos,
            add_eos,
            chat_template,
        })
    }

    /// The ids of `text`; with `add_special`, the BOS and EOS the tokenizer config asks for (and
    /// whatever `tokenizer.json`'s own post-processor adds).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        Ok(self.encode_with_ends(text, add_special)?.ids)
    }

    /// As [`encode`](Self::encode), with the byte offset where each token ends in `text` (0 for
    /// an added BOS, `text.len()` for an added EOS).
    pub fn encode_with_ends(&self, text: &str, add_special: bool) -> Result<Encoded> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|err| TextError::Tokenizer { err })?;
        let mut ids = enc.get_ids().to_vec();
        let mut ends: Vec<usize> = enc.get_offsets().iter().map(|o| o.1).collect();
        if add_special {
            if let Some(b) = self.bos.filter(|_| self.add_bos) {
                if ids.first() != Some(&b) {
                    ids.insert(0, b);
                    ends.insert(0, 0);
                }
            }
            if let Some(&e) = self.eos.first().filter(|_| self.add_eos) {
                if ids.last() != Some(&e) {
                    ids.push(e);
                    ends.push(text.len());
                }
            }
        }
        Ok(Encoded { ids, ends })
    }

    /// The text of `ids`, special tokens included; ids the vocabulary lacks are left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|err| TextError::Tokenizer { err })
    }

    /// The BOS id, where the tokenizer config or config.json names one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// Ids that end a generation: the tokenizer config's EOS and config.json's `eos_token_id`s.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// Whether `encode(text, true)` puts BOS first.
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Tokens, added ones included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The checkpoint's chat template, if its tokenizer config has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// The token's text, if the vocabulary has the id.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

/// `chat_template` as one string, or the one named "default" (else the first) of a list of
/// `{"name", "template"}`.
fn chat_template(path: &Path, config: &Value) -> Result<Option<String>> {
    match config.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(list)) => {
            let named = |want: Option<&str>| {
                list.iter()
                    .find(|t| want.is_none_or(|w| t.get("name").and_then(Value::as_str) == Some(w)))
            };
            let Some(t) = named(Some("default")).or_else(|| named(None)) else {
                return Ok(None);
            };
            match t.get("template") {
                Some(Value::String(s)) => Ok(Some(s.clone())),
                _ => Err(invalid(
                    path,
                    "a `chat_template` entry has no string `template`".into(),
                )),
            }
        }
        Some(v) => Err(invalid(
            path,
            format!("`chat_template` must be a string or a list of named templates, got {v}"),
        )),
    }
}
