//! A chat as a growing list of messages: each question is rendered with the whole conversation
//! before it as the prompt, and each answer joins the conversation.

use crate::{ChatTemplate, Message, Result};

/// A conversation through a chat template.
///
/// ```
/// use tquant_text::{ChatTemplate, Conversation};
/// let template = ChatTemplate::new(
///     "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}\
///      {% if add_generation_prompt %}<assistant>{% endif %}",
///     None,
///     None,
/// )?;
/// let mut chat = Conversation::new(&template, Some("Be brief."));
/// assert_eq!(chat.ask("Hi")?, "<system>Be brief.<user>Hi<assistant>");
/// chat.answered("Hello.");
/// assert_eq!(
///     chat.ask("Bye")?,
///     "<system>Be brief.<user>Hi<assistant>Hello.<user>Bye<assistant>"
/// );
/// # Ok::<(), tquant_text::TextError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Conversation<'t> {
    template: &'t ChatTemplate,
    messages: Vec<Message>,
}

impl<'t> Conversation<'t> {
    /// An empty conversation, opened by the `system` message if there is one.
    pub fn new(template: &'t ChatTemplate, system: Option<&str>) -> Self {
        Self {
            template,
            messages: system
                .map(|s| Message::new("system", s))
                .into_iter()
                .collect(),
        }
    }

    /// Adds the user's message and returns the prompt of the answer: the whole conversation
    /// with the opening of the assistant's turn. It holds the BOS the template writes: encode
    /// it without adding special tokens.
    pub fn ask(&mut self, user: &str) -> Result<String> {
        self.messages.push(Message::new("user", user));
        self.template.render(&self.messages, true)
    }

    /// Adds the assistant's answer to the conversation.
    pub fn answered(&mut self, text: &str) {
        self.messages.push(Message::new("assistant", text));
    }

    /// The messages so far.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }
}

/// Where a chat's user messages come from: one message given up front, then, from an
/// interactive input (a terminal), one message per line until an empty line or the end of the
/// input; from any other input (a pipe, a file), only the message given, or else the whole
/// input as one message without its trailing line breaks.
///
/// ```
/// use tquant_text::UserTurns;
/// let mut piped = UserTurns::new(&b"Hi\nthere\n"[..], false, None);
/// assert_eq!(piped.next_message(|_| {})?.as_deref(), Some("Hi\nthere"));
/// assert_eq!(piped.next_message(|_| {})?, None);
/// let mut typed = UserTurns::new(&b"Hi\nBye\n\nignored\n"[..], true, Some("Hello"));
/// let mut prompts = Vec::new();
/// let mut all = Vec::new();
/// while let Some(m) = typed.next_message(|first| prompts.push(first))? {
///     all.push(m);
/// }
/// assert_eq!(all, ["Hello", "Hi", "Bye"]);
/// assert_eq!(prompts, [true, false, false]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct UserTurns<R> {
    input: R,
    interactive: bool,
    given: Option<String>,
    lines_read: usize,
    done: bool,
}

impl<R: std::io::BufRead> UserTurns<R> {
    /// Messages from `input` (`interactive`: a person types them line by line), after `first`.
    pub fn new(input: R, interactive: bool, first: Option<&str>) -> Self {
        Self {
            input,
            interactive,
            given: first.map(str::to_string),
            lines_read: 0,
            done: false,
        }
    }

    /// The next message, or `None` when the conversation is over. `before_line(first)` is
    /// called before waiting for a typed line (`first`: the first such wait), so a front end
    /// can prompt for it.
    pub fn next_message(
        &mut self,
        before_line: impl FnOnce(bool),
    ) -> std::io::Result<Option<String>> {
        if self.done {
            return Ok(None);
        }
        if let Some(m) = self.given.take() {
            self.done = !self.interactive;
            return Ok(Some(m));
        }
        if !self.interactive {
            self.done = true;
            let mut all = String::new();
            self.input.read_to_string(&mut all)?;
            return Ok(Some(all.trim_end_matches(['\n', '\r']).to_string()));
        }
        before_line(self.lines_read == 0);
        self.lines_read += 1;
        let mut line = String::new();
        let n = self.input.read_line(&mut line)?;
        // As `BufRead::lines`: without its `\n` or `\r\n`.
        let line = match line.strip_suffix('\n') {
            Some(l) => l.strip_suffix('\r').unwrap_or(l),
            None => &line,
        };
        if n == 0 || line.trim().is_empty() {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(line.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::UserTurns;

    fn all(input: &str, interactive: bool, first: Option<&str>) -> (Vec<String>, Vec<bool>) {
        let mut turns = UserTurns::new(input.as_bytes(), interactive, first);
        let (mut messages, mut prompts) = (Vec::new(), Vec::new());
        while let Some(m) = turns.next_message(|f| prompts.push(f)).unwrap() {
            messages.push(m);
        }
        (messages, prompts)
    }

    #[test]
    fn piped_input_is_one_message_without_its_trailing_line_breaks() {
        let (m, p) = all("line one\r\nline two\n\n", false, None);
        assert_eq!(m, ["line one\r\nline two"]);
        assert!(p.is_empty());
        // Even an empty input is one (empty) message.
        assert_eq!(all("", false, None).0, [""]);
    }

    #[test]
    fn a_given_message_replaces_piped_input() {
        let (m, p) = all("never read\n", false, Some("given"));
        assert_eq!(m, ["given"]);
        assert!(p.is_empty());
    }

    #[test]
    fn typed_lines_end_at_a_blank_line_or_the_end() {
        let (m, p) = all("a\r\nb\n   \nc\n", true, None);
        assert_eq!(m, ["a", "b"]);
        assert_eq!(p, [true, false, false]);
        let (m, p) = all("a\nb", true, Some("first"));
        assert_eq!(m, ["first", "a", "b"]);
        assert_eq!(p, [true, false, false]);
        assert_eq!(all("", true, None), (vec![], vec![true]));
    }
}
