//! Generation with its output as it comes: decoded text through a vocabulary (streaming, so a
//! multi-byte character or a merged token is given whole), or the ids themselves.

use tquant_model::generate::Stats;
use tquant_model::{Generation, ModelError};
use tquant_text::{TextError, Vocabulary};

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
