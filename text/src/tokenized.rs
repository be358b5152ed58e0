//! A tokenizer's answer as `tquant tokenize` prints it: ids or text.

use serde::Serialize;
use std::fmt;

/// The ids of a text, or the text of ids. Its text (`Display`) is the ids comma-separated (as
/// token ids are given back to tquant) or the text, each with a newline; its JSON is
/// `{"ids": [...]}` or `{"text": "..."}`.
///
/// ```
/// use tquant_text::Tokenized;
/// let ids = Tokenized::Ids(vec![1, 22, 333]);
/// assert_eq!(ids.to_string(), "1,22,333\n");
/// assert_eq!(serde_json::to_string(&ids).unwrap(), r#"{"ids":[1,22,333]}"#);
/// let text = Tokenized::Text("hi".into());
/// assert_eq!(text.to_string(), "hi\n");
/// assert_eq!(serde_json::to_string(&text).unwrap(), r#"{"text":"hi"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokenized {
    /// A text's token ids.
    Ids(Vec<u32>),
    /// The text of token ids.
    Text(String),
}

impl fmt::Display for Tokenized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ids(ids) => {
                let list: Vec<String> = ids.iter().map(u32::to_string).collect();
                writeln!(f, "{}", list.join(","))
            }
            Self::Text(text) => writeln!(f, "{text}"),
        }
    }
}
