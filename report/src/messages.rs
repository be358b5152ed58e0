//! Error messages for a front end: an error and its causes on one line, with the settings they
//! name spelled the front end's way (a command line's flags).

use crate::verification::pairing_message;
use crate::{ReportError, ReportInput};
use std::error::Error;
use tquant_convert::gguf::GgufError;
use tquant_convert::{ConvertError, Setting};
use tquant_model::calibration_run::MemoryCheck;
use tquant_model::ModelError;
use tquant_text::TextError;

/// How a front end names what its errors mention.
pub struct Spelling<'a> {
    /// The name of each converter setting (e.g. `--format`).
    pub setting: &'a dyn Fn(Setting) -> &'static str,
    /// The name of the number of tokens a generation writes at most (e.g. `--max-tokens`).
    pub max_tokens: &'a str,
    /// The name of the tokens an evaluation scores per chunk (e.g. `--window`).
    pub window: &'a str,
    /// The command line's program and a space (e.g. `tquant `), before its subcommands.
    pub program: &'a str,
    /// The name of a generation's text prompt (e.g. `--prompt`).
    pub prompt: &'a str,
    /// The name of the chat a generation holds (e.g. `--chat`).
    pub chat: &'a str,
    /// The name of the token ids an evaluation takes in place of a text (e.g. `--tokens-file`).
    pub text_ids: &'a str,
    /// The name of a report's format list (e.g. `--formats`).
    pub formats: &'a str,
    /// Where a user scores a model on token ids (e.g. `` `tquant eval` ``).
    pub eval: &'a str,
    /// How a user has a quantized model write text at temperature 1 (e.g. `` `tquant run
    /// --temperature 1` ``), what calibration that does not fit beside the float model takes.
    pub generate: &'a str,
}

impl std::fmt::Debug for Spelling<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spelling")
            .field("max_tokens", &self.max_tokens)
            .field("window", &self.window)
            .field("program", &self.program)
            .field("prompt", &self.prompt)
            .field("chat", &self.chat)
            .field("text_ids", &self.text_ids)
            .field("formats", &self.formats)
            .field("eval", &self.eval)
            .field("generate", &self.generate)
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

/// Whether the error or one of its causes is a closed pipe: the reader of the output (`| head`)
/// has all it wanted, which a front end does not report as an error.
pub fn is_closed_pipe<'e>(chain: impl IntoIterator<Item = &'e (dyn Error + 'static)>) -> bool {
    chain.into_iter().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The message of a converter error (also inside the report's and the model's errors), of a
/// model error that names a setting or of an error a setting would avoid, with the names
/// `spelling` gives and the advice it leads to; `None` for other errors.
pub fn spelled(e: &(dyn Error + 'static), spelling: &Spelling) -> Option<String> {
    let spell = |c: &ConvertError| Some(c.with_flags(spelling.setting).to_string());
    if let Some(c) = e.downcast_ref::<ConvertError>() {
        return spell(c);
    }
    if let Some(g) = e.downcast_ref::<GgufError>() {
        return gguf(g, spelling);
    }
    if let Some(m) = e.downcast_ref::<ModelError>() {
        return model(m, spelling);
    }
    match e.downcast_ref::<ReportError>()? {
        ReportError::Convert(c) | ReportError::Model(ModelError::Convert(c)) => spell(c),
        ReportError::Context { context, source } => {
            spelled(source.as_ref(), spelling).map(|t| format!("{context}: {t}"))
        }
        ReportError::Input { input, source } => {
            let causes = one_line(chain(source.as_ref()), spelling);
            match input {
                ReportInput::FormatList => Some(format!("{}: {causes}", spelling.formats)),
                ReportInput::Vocabulary => Some(format!(
                    "text needs tokenizer.json beside the model (or a 256-token byte \
                     vocabulary); or give token ids with {}: {causes}",
                    spelling.text_ids
                )),
                ReportInput::Prompt => Some(format!("tokenizing {}: {causes}", spelling.prompt)),
                ReportInput::Text => Some(format!(
                    "text needs tokenizer.json beside the model (or a 256-token byte \
                     vocabulary); or give token ids to {}: {causes}",
                    spelling.eval
                )),
            }
        }
        ReportError::Gguf(g) => gguf(g, spelling),
        ReportError::NoChatTemplate { model, tokenizer } => Some(match tokenizer {
            true => format!(
                "{}: {} has no chat_template in tokenizer_config.json",
                spelling.chat,
                model.display()
            ),
            false => format!(
                "{} needs a tokenizer.json with a chat_template in its tokenizer_config.json \
                 beside {}",
                spelling.chat,
                model.display()
            ),
        }),
        ReportError::Pairing {
            pairing,
            original,
            quantized,
        } => Some(pairing_message(
            *pairing,
            original,
            quantized,
            spelling.program,
        )),
        ReportError::Scoring(e @ ModelError::TooFewTokens { .. }) => Some(format!(
            "{e}; use a smaller {} or more text",
            spelling.window
        )),
        ReportError::Scoring(m) => model(m, spelling),
        ReportError::Calibration { model, source } => {
            Some(calibration(source, spelling).unwrap_or_else(|| {
                let causes = one_line(chain(source.as_ref()), spelling);
                format!("loading {} for calibration: {causes}", model.display())
            }))
        }
        &ReportError::OnlyForLayout { setting, layout } => Some(format!(
            "{} is for {} {}",
            (spelling.setting)(setting),
            (spelling.setting)(Setting::Layout),
            layout.name()
        )),
        _ => None,
    }
}

/// `e` and its causes, in order.
fn chain<'e>(e: &'e (dyn Error + 'static)) -> impl Iterator<Item = &'e (dyn Error + 'static)> {
    std::iter::successors(Some(e), |&e| e.source())
}

/// A model error that names a setting, spelled.
fn model(e: &ModelError, spelling: &Spelling) -> Option<String> {
    match e {
        ModelError::Convert(c) => Some(c.with_flags(spelling.setting).to_string()),
        &ModelError::ContextTooLong {
            prompt,
            max_tokens,
            positions,
            limit,
        } => {
            let name = spelling.max_tokens;
            Some(format!(
                "the prompt ({prompt} tokens) plus {name} ({max_tokens}) make {positions} \
                 positions, more than the model's max_position_embeddings ({limit})"
            ))
        }
        _ => None,
    }
}

/// A GGUF converter error with the setting that avoids it.
fn gguf(e: &GgufError, spelling: &Spelling) -> Option<String> {
    let flag = spelling.setting;
    match e {
        GgufError::Checkpoint(c) => Some(c.with_flags(flag).to_string()),
        GgufError::NoTokenizer { .. } => Some(format!("{e} ({} DIR)", flag(Setting::Tokenizer))),
        GgufError::OutputExists { .. } => Some(format!("{e} ({})", flag(Setting::Force))),
        _ => None,
    }
}

/// A calibration error with the settings that would avoid it; `None` for the others, which
/// the model being loaded and the error's causes describe.
fn calibration(e: &ReportError, spelling: &Spelling) -> Option<String> {
    let flag = spelling.setting;
    let calibrate = flag(Setting::Calibration);
    Some(match e {
        ReportError::Model(ModelError::Memory { check, msg }) => match check {
            MemoryCheck::Stages => format!(
                "{msg}; take fewer tokens ({} or a smaller {})",
                flag(Setting::CalibrationBytes),
                flag(Setting::SelfCalibration)
            ),
            MemoryCheck::FloatModel => format!(
                "{msg}; generate the text with {} from a quantized checkpoint and pass it with \
                 {calibrate}",
                spelling.generate
            ),
        },
        ReportError::EmptyWindow {
            path,
            offset,
            len,
            unit,
        } => format!(
            "{calibrate} {}: nothing left after {} {offset} ({len} {unit} in the file)",
            path.display(),
            flag(Setting::CalibrationOffset)
        ),
        ReportError::Model(e @ ModelError::AlreadyQuantized { .. }) => format!("{calibrate}: {e}"),
        ReportError::Text(t @ TextError::Unsupported { .. }) => format!(
            "{calibrate}: text needs tokenizer.json beside the model (or a 256-token byte \
             vocabulary); or give token ids with {}: {t}",
            flag(Setting::CalibrationIds)
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spelling() -> Spelling<'static> {
        Spelling {
            setting: &|s| if s == Setting::Nu { "--nu" } else { s.name() },
            max_tokens: "--max-tokens",
            window: "--window",
            program: "tquant ",
            prompt: "--prompt",
            chat: "--chat",
            text_ids: "--tokens-file",
            formats: "--formats",
            eval: "`tquant eval`",
            generate: "`tquant run --temperature 1`",
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

    /// The command line's spelling (src/main.rs).
    fn cli() -> Spelling<'static> {
        Spelling {
            setting: &|s| match s {
                Setting::Calibration => "--calibrate",
                Setting::SelfCalibration => "--calibrate-self",
                Setting::CalibrationIds => "--calibrate-ids",
                Setting::CalibrationOffset => "--calibrate-offset",
                Setting::CalibrationBytes => "--calibrate-bytes",
                Setting::Quality => "--quality",
                Setting::Tokenizer => "--tokenizer",
                Setting::Layout => "--layout",
                Setting::Force => "--force",
                s => s.name(),
            },
            ..spelling()
        }
    }

    fn line(e: &ReportError) -> String {
        one_line(chain(e), &cli())
    }

    fn calibrating(e: impl Into<ReportError>) -> ReportError {
        let source = Box::new(e.into());
        let model = "/m".into();
        ReportError::Calibration { model, source }
    }

    // The texts below are those the command line printed when it added the hints itself.

    #[test]
    fn calibration_errors_name_the_options_that_avoid_them() {
        let memory = |check| ModelError::Memory {
            check,
            msg: "needs 9 GB, 2 GB available".into(),
        };
        assert_eq!(
            line(&calibrating(memory(MemoryCheck::Stages))),
            "needs 9 GB, 2 GB available; take fewer tokens (--calibrate-bytes or a smaller \
             --calibrate-self)"
        );
        assert_eq!(
            line(&calibrating(memory(MemoryCheck::FloatModel))),
            "needs 9 GB, 2 GB available; generate the text with `tquant run --temperature 1` \
             from a quantized checkpoint and pass it with --calibrate"
        );
        let empty = ReportError::EmptyWindow {
            path: "/t.txt".into(),
            offset: 10,
            len: 5,
            unit: "bytes",
        };
        assert_eq!(
            line(&calibrating(empty)),
            "--calibrate /t.txt: nothing left after --calibrate-offset 10 (5 bytes in the file)"
        );
        let quantized = ModelError::AlreadyQuantized { path: "/q".into() };
        let want = format!("--calibrate: {quantized}");
        assert_eq!(line(&calibrating(quantized)), want);
        let text = TextError::Unsupported {
            dir: "/m".into(),
            msg: "no tokenizer.json".into(),
        };
        assert_eq!(
            line(&calibrating(text)),
            "--calibrate: text needs tokenizer.json beside the model (or a 256-token byte \
             vocabulary); or give token ids with --calibrate-ids: /m: no tokenizer.json"
        );
        // Any other error: the model being loaded, then the error and its causes, spelled.
        assert_eq!(
            line(&calibrating(ReportError::EmptyFormatList)),
            "loading /m for calibration: the list names no format"
        );
        let layout = ConvertError::CalibrationLayout {
            layout: tquant_convert::Layout::Bnb,
        };
        let want = format!(
            "loading /m for calibration: {}",
            layout.with_flags(cli().setting)
        );
        assert!(want.contains("--calibrate needs --layout tquant"), "{want}");
        assert_eq!(line(&calibrating(layout)), want);
    }

    #[test]
    fn conversion_errors_name_the_options_that_avoid_them() {
        let only = |setting, layout| line(&ReportError::OnlyForLayout { setting, layout });
        let (quality, tokenizer) = (Setting::Quality, Setting::Tokenizer);
        let (tquant, gguf) = (tquant_convert::Layout::Tquant, tquant_convert::Layout::Gguf);
        assert_eq!(only(quality, tquant), "--quality is for --layout tquant");
        assert_eq!(only(tokenizer, gguf), "--tokenizer is for --layout gguf");
        let converting = |e: GgufError| line(&ReportError::from(e).context("converting /in"));
        let e = GgufError::NoTokenizer {
            path: "/in/tokenizer.json".into(),
        };
        let want = format!("converting /in: {e} (--tokenizer DIR)");
        assert_eq!(converting(e), want);
        let e = GgufError::OutputExists {
            path: "/o.gguf".into(),
        };
        let want = format!("converting /in: {e} (--force)");
        assert_eq!(converting(e), want);
    }

    #[test]
    fn evaluation_and_generation_errors_name_their_options() {
        let few = ModelError::TooFewTokens {
            tokens: 3,
            chunk: 257,
        };
        let want = format!("scoring /t: {few}; use a smaller --window or more text");
        let scoring = ReportError::Scoring(few).context("scoring /t");
        assert_eq!(line(&scoring), want);
        let input = |input, source: ReportError| ReportError::Input {
            input,
            source: Box::new(source),
        };
        let format_list = input(ReportInput::FormatList, ReportError::EmptyFormatList);
        assert_eq!(line(&format_list), "--formats: the list names no format");
        let unsupported = || {
            ReportError::Text(TextError::Unsupported {
                dir: "/m".into(),
                msg: "no tokenizer.json".into(),
            })
        };
        let hint = "text needs tokenizer.json beside the model (or a 256-token byte vocabulary); \
                    or give token ids";
        assert_eq!(
            line(&input(ReportInput::Text, unsupported())),
            format!("{hint} to `tquant eval`: /m: no tokenizer.json")
        );
        assert_eq!(
            line(&input(ReportInput::Vocabulary, unsupported())),
            format!("{hint} with --tokens-file: /m: no tokenizer.json")
        );
        assert_eq!(
            line(&input(ReportInput::Prompt, unsupported())),
            "tokenizing --prompt: /m: no tokenizer.json"
        );
        let chat = |tokenizer| {
            let model = "/m".into();
            line(&ReportError::NoChatTemplate { model, tokenizer })
        };
        assert_eq!(
            chat(false),
            "--chat needs a tokenizer.json with a chat_template in its tokenizer_config.json \
             beside /m"
        );
        assert_eq!(
            chat(true),
            "--chat: /m has no chat_template in tokenizer_config.json"
        );
    }

    #[test]
    fn a_verify_pair_in_the_wrong_order_says_how_to_give_it() {
        use crate::verification::Pairing;
        let pair = |pairing| {
            let (original, quantized) = ("/a".into(), "/b".into());
            let e = ReportError::Pairing {
                pairing,
                original,
                quantized,
            };
            (line(&e), e.to_string())
        };
        let (swapped, plain) = pair(Pairing::Swapped);
        assert_eq!(
            swapped,
            "the arguments look swapped: /a is quantized and /b is not; the original comes \
             first: tquant verify /b /a"
        );
        assert!(plain.ends_with("first: verify /b /a"), "{plain}");
        assert_eq!(
            pair(Pairing::BothQuantized).0,
            "/a is quantized: verify compares the original (unquantized) checkpoint, given \
             first, with a quantized one made from it"
        );
        assert_eq!(
            pair(Pairing::NoneQuantized).0,
            "/b holds no quantized tensor: verify compares an original checkpoint with one \
             `tquant convert` made from it"
        );
    }

    #[test]
    fn a_closed_pipe_is_found_among_the_causes() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let e = ReportError::Io {
            what: "writing".into(),
            err: pipe,
        };
        assert!(!is_closed_pipe(chain(&e)));
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(is_closed_pipe([&pipe as &(dyn Error + 'static)]));
    }
}
