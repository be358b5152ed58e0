//! Generation with its output as it comes: decoded text through a vocabulary (streaming, so a
//! multi-byte character or a merged token is given whole), or the ids themselves.

use crate::{ReportError, ReportInput};
use std::path::Path;
use tquant_model::generate::Stats;
use tquant_model::{Generation, ModelError};
use tquant_text::{Conversation, TextError, Vocabulary};

/// A generation's prompt as a front end's settings give it ([`respond`]).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Prompt<'a> {
    /// Token ids (any vocabulary); the output is ids too.
    Ids(&'a [u32]),
    /// A text, through the vocabulary (with the tokens its configuration adds, e.g. BOS).
    Text(&'a str),
    /// A chat through the chat template of the model at `model`: one answer per user message.
    Chat {
        /// The system message.
        system: Option<&'a str>,
        /// The model directory, whose tokenizer_config.json holds the chat template.
        model: &'a Path,
    },
}

/// Whether a generation from the model at `dir` needs its vocabulary: always for a text or a
/// chat; for a prompt of ids only to know which ids end the generation, so not when it goes
/// on past them (`ignore_eos`) nor when no tokenizer.json beside the model says which.
pub fn needs_vocabulary(dir: &Path, ids: bool, ignore_eos: bool) -> bool {
    !(ids && (ignore_eos || !dir.join("tokenizer.json").is_file()))
}

/// Answers `prompt` with `generation`, which stops at the vocabulary's end-of-sequence ids
/// unless `ignore_eos`: one answer streamed to `sink` as [`generate`] does (ids without a
/// vocabulary), or a [`chat`] over the messages `next_message` gives. After each answer,
/// `answered` gets the generation and its timings. A text or a chat needs `vocab`
/// ([`ReportError::Input`] otherwise); a chat needs a tokenizer with a chat template
/// ([`ReportError::NoChatTemplate`]).
pub fn respond<E: From<ModelError> + From<TextError> + From<ReportError>>(
    mut generation: Generation,
    vocab: Option<&Vocabulary>,
    prompt: Prompt,
    ignore_eos: bool,
    next_message: impl FnMut() -> Result<Option<String>, E>,
    mut sink: impl FnMut(&str) -> Result<(), E>,
    mut answered: impl FnMut(&Generation, &Stats) -> Result<(), E>,
) -> Result<(), E> {
    if let Some(v) = vocab.filter(|_| !ignore_eos) {
        generation = generation.stop_at(v.eos_ids());
    }
    let input = |input, source| ReportError::Input {
        input,
        source: Box::new(source),
    };
    let (ids, vocab) = match (prompt, vocab) {
        (Prompt::Ids(ids), _) => (ids.to_vec(), None),
        (Prompt::Text(text), Some(v)) => {
            let ids = v.encode(text, true);
            (
                ids.map_err(|e| input(ReportInput::Prompt, e.into()))?,
                Some(v),
            )
        }
        (Prompt::Chat { system, model }, Some(v)) => {
            let (model, template) = (
                model.to_path_buf(),
                v.tokenizer().map(|t| t.chat_template()),
            );
            let Some(Some(template)) = template else {
                let tokenizer = template.is_some();
                return Err(ReportError::NoChatTemplate { model, tokenizer }.into());
            };
            let mut conversation = Conversation::new(template, system);
            let g = &mut generation;
            return chat(g, v, &mut conversation, next_message, sink, answered);
        }
        (_, None) => return Err(ReportError::NoVocabulary.into()),
    };
    let (_, stats) = generate(&mut generation, vocab, &ids, &mut sink)?;
    answered(&generation, &stats)
}

/// Generates after `prompt`, giving `sink` each piece of output as it comes: text decoded with
/// `vocab`, or comma-separated ids without one. Returns the whole output and the timings; the
/// first error of `sink` ends the generation and is returned.
///
/// ```
/// use tquant_model::{generate::Sampler, Generation, Model, Options};
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tiny-lite");
/// let model = Model::open(dir.as_ref(), Options::default())?;
/// let mut generation = Generation::new(&model, Sampler::new(0.0, 0), 3);
/// let (ids, _) = tquant_report::streaming::generate(&mut generation, None, &[1, 2], |_| {
///     Ok::<_, tquant_report::ReportError>(())
/// })?;
/// assert_eq!(ids.split(',').count(), 3);
/// # Ok::<(), tquant_report::ReportError>(())
/// ```
pub fn generate<E: From<ModelError> + From<TextError>>(
    generation: &mut Generation,
    vocab: Option<&Vocabulary>,
    prompt: &[u32],
    mut sink: impl FnMut(&str) -> Result<(), E>,
) -> Result<(String, Stats), E> {
    let mut stream = vocab.map(Vocabulary::stream);
    let mut output = String::new();
    let stats = generation.run(prompt, |t| {
        let piece = match &mut stream {
            Some(s) => s.push(t).map_err(E::from)?,
            None if output.is_empty() => t.to_string(),
            None => format!(",{t}"),
        };
        sink(&piece)?;
        output.push_str(&piece);
        Ok::<_, E>(())
    })?;
    if let Some(rest) = stream
        .as_mut()
        .map(|s| s.flush())
        .transpose()
        .map_err(E::from)?
    {
        sink(&rest)?;
        output.push_str(&rest);
    }
    Ok((output, stats))
}

/// A chat: for each user message `next_message` gives, the whole `conversation` so far (with
/// the message) is the prompt of one answer, streamed to `sink` as [`generate`] does; after each
/// answer, `answered` gets the generation and the answer's timings. Ends when `next_message`
/// gives `None`; the first error ends the chat and is returned.
pub fn chat<E: From<ModelError> + From<TextError>>(
    generation: &mut Generation,
    vocab: &Vocabulary,
    conversation: &mut Conversation,
    mut next_message: impl FnMut() -> Result<Option<String>, E>,
    mut sink: impl FnMut(&str) -> Result<(), E>,
    mut answered: impl FnMut(&Generation, &Stats) -> Result<(), E>,
) -> Result<(), E> {
    while let Some(user) = next_message()? {
        // The template writes BOS itself.
        let ids = vocab.encode(&conversation.ask(&user)?, false)?;
        let (text, stats) = generate(generation, Some(vocab), &ids, &mut sink)?;
        answered(generation, &stats)?;
        conversation.answered(&text);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tquant_model::{generate::Sampler, Generation, Model, Options};
    use tquant_text::{ChatTemplate, Conversation, Vocabulary};

    #[test]
    fn ids_need_the_vocabulary_only_to_stop_at_its_end_of_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A text or a chat always needs it; ids without a tokenizer.json to say where to stop
        // do not.
        assert!(super::needs_vocabulary(d, false, true));
        assert!(!super::needs_vocabulary(d, true, false));
        std::fs::write(d.join("tokenizer.json"), "{}").unwrap();
        assert!(super::needs_vocabulary(d, true, false));
        assert!(!super::needs_vocabulary(d, true, true));
    }

    #[test]
    fn a_chat_answers_each_message_with_the_conversation_as_the_prompt() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tiny-lite").as_ref();
        let model = Model::open(dir, Options::default()).unwrap();
        let vocab = Vocabulary::open(dir, Some(model.config().vocab_size)).unwrap();
        let source = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}";
        let template = ChatTemplate::new(source, None, None).unwrap();
        let mut conversation = Conversation::new(&template, Some("Be brief."));
        let mut generation = Generation::new(&model, Sampler::new(0.0, 0), 2);
        let mut messages = vec!["Bye".to_string(), "Hi".to_string()];
        let (mut streamed, mut prompts) = (String::new(), Vec::new());
        super::chat(
            &mut generation,
            &vocab,
            &mut conversation,
            || Ok::<_, crate::ReportError>(messages.pop()),
            |piece| {
                streamed.push_str(piece);
                Ok(())
            },
            |_, stats| {
                prompts.push(stats.prompt_tokens);
                Ok(())
            },
        )
        .unwrap();
        let m = conversation.messages();
        assert_eq!(m.len(), 5);
        assert_eq!(streamed, format!("{}{}", m[2].content, m[4].content));
        assert!(prompts[1] > prompts[0], "{prompts:?}");
    }
}
