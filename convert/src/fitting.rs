//! The Student-t fits the converter makes of a matrix: the block-standardised one that picks a
//! Student Float table, and the whole-matrix one every quantized matrix records.

use tquant_formats::{fit_block_standardized_with, fit_student_t_with, FitSampling, TFit};

/// The block-standardised fit (which picks the codebook) sees about this many values of a
/// matrix: whole blocks, one drawn from each of equal strata of the matrix
/// ([`FitSampling::DEFAULT`]). `docs/fit.md` has the measurements: at this size the sf4 table
/// of the sampled nu is within a few thousandths of the table of the fit on every value, and the
/// fit costs a small part of the quantization.
pub const FIT_SAMPLES: usize = tquant_formats::fit::FIT_SAMPLE_VALUES;
/// The whole-matrix fit is only recorded (the paper's per-tensor profile), and costs about three
/// times as much per value (its heavier tails take more EM steps): a smaller sample, whose sf4
/// table is within 0.02 of the full fit's on the matrices of `docs/fit.md`.
pub const PROFILE_FIT_SAMPLES: usize = 1 << 13;

/// The block-standardised fit the converter picks a Student Float table with, on the sample of
/// [`FitSampling::DEFAULT`] (a function of the matrix alone, whatever the thread count).
pub fn fit_for_codebook(values: &[f32], block: usize) -> TFit {
    fit_for_codebook_with(values, block, FitSampling::DEFAULT)
}

/// [`fit_for_codebook`] on the values `sampling` picks.
pub fn fit_for_codebook_with(values: &[f32], block: usize, sampling: FitSampling) -> TFit {
    fit_block_standardized_with(values, block, sampling)
}

/// The whole-matrix fit the converter records, on a sample of [`PROFILE_FIT_SAMPLES`] values.
pub fn fit_for_profile(values: &[f32], block: usize) -> TFit {
    let sampling = match FitSampling::DEFAULT {
        FitSampling::Blocks { seed, .. } => FitSampling::Blocks {
            values: PROFILE_FIT_SAMPLES,
            seed,
        },
        FitSampling::Full => FitSampling::Full,
    };
    fit_student_t_with(values, block, sampling)
}

/// Whole blocks of `values` (blocks of `block` elements), evenly spaced, about `budget` values
/// in all; the input itself when it is smaller. (The converter's fits sample with
/// [`tquant_formats::fit::sample_blocks`], whose strata do not line up with the rows.)
pub fn fit_sample(values: &[f32], block: usize, budget: usize) -> std::borrow::Cow<'_, [f32]> {
    let block = block.max(1);
    let blocks = values.len() / block;
    let want = (budget / block).max(1);
    if values.len() <= budget || blocks <= want {
        return std::borrow::Cow::Borrowed(values);
    }
    let mut out = Vec::with_capacity(want * block);
    for i in 0..want {
        let b = i * blocks / want;
        out.extend_from_slice(&values[b * block..(b + 1) * block]);
    }
    std::borrow::Cow::Owned(out)
}

/// Rounds a fitted nu to 3 decimals so the format name (`sf4:nu=4.237`) rebuilds the exact
/// codebook stored in the file.
pub fn round_nu(nu: f64) -> f64 {
    (nu * 1000.0).round() / 1000.0
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_sample_takes_whole_blocks_evenly() {
        let x: Vec<f32> = (0..(FIT_SAMPLES * 4)).map(|i| i as f32).collect();
        let s = fit_sample(&x, 64, FIT_SAMPLES);
        assert_eq!(s.len(), FIT_SAMPLES);
        // Every 4th block, each whole and in order.
        assert_eq!(&s[..64], &x[..64]);
        assert_eq!(&s[64..128], &x[256..320]);
        let small = &x[..1000];
        assert!(matches!(
            fit_sample(small, 64, FIT_SAMPLES),
            std::borrow::Cow::Borrowed(_)
        ));
        // A block longer than the budget: one block.
        assert_eq!(
            fit_sample(&x, FIT_SAMPLES * 2, FIT_SAMPLES).len(),
            FIT_SAMPLES * 2
        );
    }
}
