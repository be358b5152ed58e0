//! An original checkpoint against a quantized one made from it, with the two told apart first
//! (what `tquant verify` runs).

use crate::{ReportError, Result};
use std::path::Path;
use tquant_convert::inspect::{verify, VerifyReport};
use tquant_convert::Checkpoint;

/// Why two checkpoints are not an original and a quantized one made from it, in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pairing {
    /// The first one, which should be the original, is quantized too.
    BothQuantized,
    /// The first one is quantized and the second is not: they look swapped.
    Swapped,
    /// The second one holds no quantized tensor.
    NoneQuantized,
}

/// Opens the original checkpoint at `original` and the quantized one at `quantized`, refuses
/// a pair that is not that ([`ReportError::Pairing`]), and compares them tensor by tensor
/// ([`verify`]).
pub fn verify_checkpoints(original: &Path, quantized: &Path) -> Result<VerifyReport> {
    let open = |p: &Path| {
        Checkpoint::open(p)
            .map_err(|e| ReportError::from(e).context(format!("opening {}", p.display())))
    };
    let (a, b) = (open(original)?, open(quantized)?);
    let pairing = match (a.is_quantized(), b.is_quantized()) {
        (true, true) => Some(Pairing::BothQuantized),
        (true, false) => Some(Pairing::Swapped),
        (false, false) => Some(Pairing::NoneQuantized),
        (false, true) => None,
    };
    if let Some(pairing) = pairing {
        let (original, quantized) = (original.to_path_buf(), quantized.to_path_buf());
        return Err(ReportError::Pairing {
            pairing,
            original,
            quantized,
        });
    }
    Ok(verify(&a, &b)?)
}

/// The message of [`ReportError::Pairing`], with `program` the command that verifies
/// (`tquant`, or a plain `verify` where there is none).
pub(crate) fn pairing_message(
    pairing: Pairing,
    original: &Path,
    quantized: &Path,
    program: &str,
) -> String {
    let (a, b) = (original.display(), quantized.display());
    match pairing {
        Pairing::BothQuantized => format!(
            "{a} is quantized: verify compares the original (unquantized) checkpoint, given \
             first, with a quantized one made from it"
        ),
        Pairing::Swapped => format!(
            "the arguments look swapped: {a} is quantized and {b} is not; the original comes \
             first: {program}verify {b} {a}"
        ),
        Pairing::NoneQuantized => format!(
            "{b} holds no quantized tensor: verify compares an original checkpoint with one \
             `{program}convert` made from it"
        ),
    }
}
