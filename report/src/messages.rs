//! Error messages for a front end: an error and its causes on one line, with the settings they
//! name spelled the front end's way (a command line's flags).

use crate::ReportError;
use std::error::Error;
use tquant_convert::gguf::GgufError;
use tquant_convert::{ConvertError, Setting};
use tquant_model::ModelError;

/// How a front end names what its errors mention.
pub struct Spelling<'a> {
    /// The name of each converter setting (e.g. `--format`).
    pub setting: &'a dyn Fn(Setting) -> &'static str,
    /// The name of the number of tokens a generation writes at most (e.g. `--max-tokens`).
    pub max_tokens: &'a str,
}

impl std::fmt::Debug for Spelling<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spelling")
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

/// The error and its causes, `: `-separated, with the settings spelled by `spelling`; a cause
/// its parent already quotes is not repeated (a converter error quotes all of its own).
pub fn one_line<'e>(
    chain: impl IntoIterator<Item = &'e (dyn Error + 'static)>,
    spelling: &Spelling,
) -> String {
    let mut out = Vec::new();
    for cause in chain {
        let spelled = spelled(cause, spelling);
        let quotes_its_causes = spelled.is_some();
        let text = spelled.unwrap_or_else(|| cause.to_string());
        if !out.join(": ").contains(&text) {
            out.push(text);
        }
        if quotes_its_causes {
            break;
        }
    }
    out.join(": ")
}

/// The message of a converter error (also inside the report's and the model's errors) or of a
/// model error that names a setting, with the names `spelling` gives; `None` for other errors.
pub fn spelled(e: &(dyn Error + 'static), spelling: &Spelling) -> Option<String> {
    let spell = |c: &ConvertError| Some(c.with_flags(spelling.setting).to_string());
    if let Some(c) = e.downcast_ref::<ConvertError>() {
        return spell(c);
    }
    if let Some(GgufError::Checkpoint(c)) = e.downcast_ref::<GgufError>() {
        return spell(c);
    }
    match e.downcast_ref::<ModelError>() {
        Some(ModelError::Convert(c)) => return spell(c),
        Some(&ModelError::ContextTooLong {
            prompt,
            max_tokens,
            positions,
            limit,
        }) => {
            let name = spelling.max_tokens;
            return Some(format!(
                "the prompt ({prompt} tokens) plus {name} ({max_tokens}) make {positions} \
                 positions, more than the model's max_position_embeddings ({limit})"
            ));
        }
        Some(_) => return None,
        None => {}
    }
    match e.downcast_ref::<ReportError>()? {
        ReportError::Convert(c) | ReportError::Model(ModelError::Convert(c)) => spell(c),
        ReportError::Context { context, source } => {
            spelled(source.as_ref(), spelling).map(|t| format!("{context}: {t}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spelling() -> Spelling<'static> {
        Spelling {
            setting: &|s| if s == Setting::Nu { "--nu" } else { s.name() },
            max_tokens: "--max-tokens",
        }
    }

    #[test]
    fn a_model_error_names_the_generation_length() {
        let e = ModelError::ContextTooLong {
            prompt: 3,
            max_tokens: 9,
            positions: 12,
            limit: 8,
        };
        assert_eq!(
            one_line([&e as &(dyn Error + 'static)], &spelling()),
            "the prompt (3 tokens) plus --max-tokens (9) make 12 positions, more than the \
             model's max_position_embeddings (8)"
        );
    }

    #[test]
    fn a_converter_error_in_context_names_its_setting_once() {
        let e = ReportError::Convert(ConvertError::NuNotApplicable {
            format: "nf4".into(),
        })
        .context("converting x");
        let chain = [&e as &(dyn Error + 'static), e.source().unwrap()];
        let line = one_line(chain, &spelling());
        assert!(line.starts_with("converting x: "), "{line}");
        assert_eq!(line.matches("--nu applies").count(), 1, "{line}");
    }
}
