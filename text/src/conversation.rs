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
