//! `--format auto[:LIST]`: per matrix (per expert), the candidate format whose dequantized
//! matrix is closest to the original.
//!
//! Every candidate shares the block size and the scale dtype, so they all store the same bits per
//! weight and the choice costs nothing in size; the kernels take any codebook, so a checkpoint
//! that mixes formats runs unchanged. Each matrix records the format it got, the tensor records
//! the candidate list (`auto:nf4,sf4_search,...`) as its base format. The error that decides is
//! pluggable ([`SelectionError`]): the weights' squared error by default.

use crate::fitting::{fit_for_codebook, fit_for_profile, round_nu};
use crate::options::{ConvertOptions, NuChoice};
use crate::schema::{FitInfo, MatrixInfo, QuantizedMatrixOut};
use rayon::prelude::*;
use tquant_formats::block::ScaleRule;
use tquant_formats::nu_search::search_nu_min_error_with_screen;
use tquant_formats::select::{argmin, evaluate_with_screen, selection_sample, SelectionError};
use tquant_formats::{BlockQuantizer, Format, FormatError, QuantizedMatrix};

pub use crate::options::{is_auto, AutoSpec, Candidate, AUTO, DEFAULT_CANDIDATES};

impl Candidate {
    /// The concrete format for one matrix, and the block-standardised fit when it was fitted.
    pub fn resolve(
        &self,
        values: &[f32],
        rows: usize,
        cols: usize,
        q: &BlockQuantizer,
        rule: ScaleRule,
    ) -> Result<(Format, Option<FitInfo>), FormatError> {
        match self {
            Self::Fixed(f) => Ok((f.clone(), None)),
            Self::StudentFloat { bits, nu } => match nu {
                NuChoice::Fit => {
                    let block = q.block.len_for(cols);
                    let fit = fit_for_codebook(values, block);
                    let f = Format::student_float(*bits, round_nu(fit.nu))?;
                    Ok((f, Some(FitInfo::from(fit))))
                }
                NuChoice::Search => {
                    // Under the search rule every trial costs ~80 encodes per block: search nu
                    // on fewer rows (it only picks the table; the selection judges it on more).
                    let (sample, n) = match rule {
                        ScaleRule::Search => even_rows(values, rows, cols, NU_SEARCH_SAMPLES_SLOW),
                        _ => (std::borrow::Cow::Borrowed(values), rows),
                    };
                    let screen = tquant_kernels::ScaleScreen::detect();
                    let best =
                        search_nu_min_error_with_screen(&sample, n, cols, *bits, q, rule, &screen)?;
                    Ok((Format::student_float(*bits, round_nu(best.nu))?, None))
                }
                NuChoice::Fixed(v) => Ok((Format::student_float(*bits, *v)?, None)),
            },
        }
    }
}

/// With `ScaleRule::Search`, the nu search of a Student Float candidate sees at most about this
/// many elements (whole rows); with absmax it sees `nu_search`'s own sample (2^20).
pub const NU_SEARCH_SAMPLES_SLOW: usize = 1 << 17;

/// Every row when the matrix has at most `budget` elements, else about `budget / cols` evenly
/// spaced whole rows (at least one): `(values, rows)`.
fn even_rows(
    values: &[f32],
    rows: usize,
    cols: usize,
    budget: usize,
) -> (std::borrow::Cow<'_, [f32]>, usize) {
    if values.len() <= budget || rows <= 1 {
        return (std::borrow::Cow::Borrowed(values), rows);
    }
    let keep = (budget / cols.max(1)).clamp(1, rows);
    let mut out = Vec::with_capacity(keep * cols);
    for i in 0..keep {
        let r = i * rows / keep;
        out.extend_from_slice(&values[r * cols..(r + 1) * cols]);
    }
    (std::borrow::Cow::Owned(out), keep)
}
/// One candidate's outcome on one matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateError {
    /// The concrete format (`sf4:nu=23.45` for a searched Student Float).
    pub format: String,
    /// Its error on the matrix (the selection error, less is better).
    pub error: f64,
}

/// What [`quantize_matrix_auto`] chose and why.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoMatrix {
    /// The stored matrix of the chosen candidate.
    pub out: QuantizedMatrixOut,
    /// Index of the chosen candidate in the spec.
    pub chosen: usize,
    /// Every candidate's error, in the spec's order.
    pub errors: Vec<CandidateError>,
}

/// Quantizes one row-major `[rows, cols]` matrix with every candidate of `spec` (in parallel,
/// each under `opts.scale_rule`), and keeps the one with the least `err`. Matrices larger than
/// `tquant_formats::select::SELECT_MAX_SAMPLES` are judged on a sample of whole rows, then
/// quantized whole with the winner. Also records the whole-matrix Student-t fit (the paper's
/// per-tensor profile), whichever format wins.
pub fn quantize_matrix_auto(
    values: &[f32],
    rows: usize,
    cols: usize,
    opts: &ConvertOptions,
    spec: &AutoSpec,
    err: &dyn SelectionError,
) -> Result<AutoMatrix, FormatError> {
    let q = BlockQuantizer {
        block: opts.block,
        scale_dtype: opts.scale_dtype,
    };
    let rule = opts.scale_rule;
    let (sample, sample_rows) = selection_sample(values, rows, cols);
    let sampled = sample_rows != rows;
    let outcomes = spec
        .candidates
        .par_iter()
        .map(|c| {
            let (format, fit) = c.resolve(values, rows, cols, &q, rule)?;
            let screen = tquant_kernels::ScaleScreen::detect();
            let cb = format.codebook();
            let ev = evaluate_with_screen(&sample, sample_rows, cols, cb, &q, rule, err, &screen)?;
            Ok((format, fit, ev))
        })
        .collect::<Result<Vec<_>, FormatError>>()?;
    let errors: Vec<f64> = outcomes.iter().map(|o| o.2.error).collect();
    let chosen = argmin(&errors).ok_or(FormatError::SelectionNan)?;
    let errors = outcomes
        .iter()
        .map(|(f, _, ev)| CandidateError {
            format: f.name().to_string(),
            error: ev.error,
        })
        .collect();
    let (format, fit, ev) = outcomes
        .into_iter()
        .nth(chosen)
        .expect("argmin is an index of the outcomes");
    let matrix = if sampled {
        let screen = tquant_kernels::ScaleScreen::detect();
        let encoder = tquant_kernels::Encoder::detect();
        q.quantize_with_kernels(
            format.codebook(),
            values,
            rows,
            cols,
            rule,
            &screen,
            &encoder,
        )?
    } else {
        ev.matrix
    };
    Ok(AutoMatrix {
        out: chosen_output(&format, fit, matrix, values, cols, opts),
        chosen,
        errors,
    })
}

/// What the converter stores for the candidate an `auto` choice kept: its format and fit, the
/// matrix it quantized, and the whole-matrix Student-t fit every matrix records (the paper's
/// per-tensor profile).
pub(crate) fn chosen_output(
    format: &Format,
    fit: Option<FitInfo>,
    matrix: QuantizedMatrix,
    values: &[f32],
    cols: usize,
    opts: &ConvertOptions,
) -> QuantizedMatrixOut {
    let block = opts.block.len_for(cols);
    let whole = fit_for_profile(values, block);
    QuantizedMatrixOut {
        info: MatrixInfo {
            format: format.name().to_string(),
            nu: format.nu(),
            fit,
            fit_tensor: Some(FitInfo::from(whole)),
            codebook: format.codebook().values().to_vec(),
            row_tables: Vec::new(),
            global_scale: None,
        },
        codes: matrix.codes,
        scales: matrix.scales,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::FormatChoice;
    use crate::schema::Layout;
    use tquant_formats::sample::Rng;
    use tquant_formats::select::SquaredError;
    use tquant_formats::{BlockSize, ScaleDtype};

    fn auto_builder(format: &str) -> crate::options::ConvertOptionsBuilder {
        ConvertOptions::builder().format(FormatChoice::Auto(format.into()))
    }

    fn auto_opts(format: &str, nu: Option<NuChoice>, scale: ScaleDtype) -> ConvertOptions {
        let b = auto_builder(format)
            .block(BlockSize::Elements(32))
            .scale_dtype(scale);
        match nu {
            Some(nu) => b.nu(nu).build(),
            None => b.build(),
        }
        .unwrap()
    }

    #[test]
    fn default_list_has_searched_sf4_and_drops_int4_full_with_e8m0() {
        let o = auto_opts("auto", None, ScaleDtype::F16);
        let spec = o.auto.as_ref().unwrap();
        assert_eq!(
            spec.name(),
            "auto:nf4,sf4_search,apot4_sp,e2m1_sp,int4,int4_full"
        );
        assert_eq!(o.bits(), 4);
        let e8 = auto_opts("auto", None, ScaleDtype::E8m0);
        assert!(!e8.auto.unwrap().name().contains("int4_full"));
        assert!(auto_builder("auto:nf4,int4_full")
            .scale_dtype(ScaleDtype::E8m0)
            .build()
            .is_err());
    }

    #[test]
    fn lists_parse_and_names_round_trip() {
        let o = auto_opts(
            "auto:nf4,sf4,sf4:nu=3",
            Some(NuChoice::Fit),
            ScaleDtype::F32,
        );
        let spec = o.auto.unwrap();
        assert_eq!(spec.name(), "auto:nf4,sf4_fit,sf4:nu=3");
        assert_eq!(AutoSpec::from_name(&spec.name()).unwrap(), spec);
        let list = "auto:int4/custom:-1,-0.5,0,0.5,1,2,3,4,5,6,7,8,9,10,11,12";
        let custom = AutoSpec::parse(list, None, ScaleDtype::F32).unwrap();
        assert_eq!(custom.name(), list);
        assert_eq!(AutoSpec::from_name(&custom.name()).unwrap(), custom);
        assert!(custom.validate(Layout::Tquant, &q32()).is_ok());
        let e8 = BlockQuantizer {
            scale_dtype: ScaleDtype::E8m0,
            ..q32()
        };
        assert!(
            custom.validate(Layout::Tquant, &e8).is_err(),
            "one-sided table"
        );
        let mixed = AutoSpec::parse("auto:int4/custom:-1,0,0.5,1", None, ScaleDtype::F32);
        assert!(mixed.is_err(), "2-bit and 4-bit candidates");
        for bad in [
            "auto:",
            "auto:nf4,nf4",
            "auto:nf5",
            "auto:nf4,nf3",
            "automatic",
        ] {
            assert!(
                AutoSpec::parse(bad, None, ScaleDtype::F16).is_err(),
                "{bad} parsed"
            );
        }
        assert!(AutoSpec::parse("auto", Some("5"), ScaleDtype::F16).is_err());
        assert!(AutoSpec::parse("auto:nf4,int4", Some("fit"), ScaleDtype::F16).is_err());
        for layout in [Layout::Bnb, Layout::Mxfp4] {
            assert!(auto_builder("auto").layout(layout).build().is_err());
        }
    }

    fn q32() -> BlockQuantizer {
        BlockQuantizer {
            block: BlockSize::Elements(32),
            scale_dtype: ScaleDtype::F32,
        }
    }

    fn sq_err(w: &[f32], format: &Format, rule: ScaleRule, rows: usize, cols: usize) -> f64 {
        let m = q32()
            .quantize_with(format.codebook(), w, rows, cols, rule)
            .unwrap();
        let d = m.dequantize(format.codebook());
        w.iter()
            .zip(&d)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum()
    }

    #[test]
    fn auto_picks_the_candidate_with_the_least_error() {
        let mut rng = Rng::new(7);
        let (rows, cols) = (32, 128);
        // Normal weights favour nf4-like tables; uniform ones favour the evenly spaced integers.
        let normal = rng.normal_vec(rows * cols);
        let uniform: Vec<f32> = (0..rows * cols)
            .map(|_| rng.uniform() as f32 * 2.0 - 1.0)
            .collect();
        let list = "auto:nf4,apot4_sp,int4,int4_full,e2m1_sp,e3m0";
        for rule in ScaleRule::ALL {
            let opts = auto_opts(list, None, ScaleDtype::F32)
                .with_scale_rule(rule)
                .unwrap();
            let spec = opts.auto.clone().unwrap();
            let mut winners = Vec::new();
            for w in [&normal, &uniform] {
                let m = quantize_matrix_auto(w, rows, cols, &opts, &spec, &SquaredError).unwrap();
                let direct: Vec<f64> = spec
                    .candidates
                    .iter()
                    .map(|c| sq_err(w, &c.base_format(), rule, rows, cols))
                    .collect();
                let best = argmin(&direct).unwrap();
                assert_eq!(m.chosen, best, "{rule}: errors {direct:?}");
                for (c, d) in m.errors.iter().zip(&direct) {
                    assert_eq!(c.error, *d);
                }
                assert_eq!(m.out.info.format, spec.candidates[best].name());
                assert!(m.out.info.fit_tensor.is_some());
                // The stored bytes are the winner's own quantization.
                let f = spec.candidates[best].base_format();
                let direct_q = q32()
                    .quantize_with(f.codebook(), w, rows, cols, rule)
                    .unwrap();
                assert_eq!(
                    (m.out.codes.clone(), m.out.scales.clone()),
                    (direct_q.codes, direct_q.scales)
                );
                winners.push(m.out.info.format.clone());
            }
            assert_ne!(winners[0], winners[1], "{rule}: {winners:?}");
        }
    }

    #[test]
    fn the_error_is_pluggable() {
        let mut rng = Rng::new(8);
        let (rows, cols) = (16, 64);
        let w = rng.normal_vec(rows * cols);
        let opts = auto_opts("auto:nf4,int4", None, ScaleDtype::F32);
        let spec = opts.auto.clone().unwrap();
        let sq = quantize_matrix_auto(&w, rows, cols, &opts, &spec, &SquaredError).unwrap();
        // An error that inverts the ranking must flip the choice.
        let inverted = |a: &[f32], b: &[f32], r: usize, c: usize| -SquaredError.error(a, b, r, c);
        let inv = quantize_matrix_auto(&w, rows, cols, &opts, &spec, &inverted).unwrap();
        assert_eq!(
            sq.chosen + inv.chosen,
            1,
            "{:?} {:?}",
            sq.errors,
            inv.errors
        );
        let nan = |_: &[f32], _: &[f32], _: usize, _: usize| f64::NAN;
        assert!(quantize_matrix_auto(&w, rows, cols, &opts, &spec, &nan).is_err());
    }

    #[test]
    fn metadata_round_trips_the_choice_and_the_scale_rule() {
        use crate::quantized::QuantInfo;
        let opts = auto_opts("auto", None, ScaleDtype::F16)
            .with_scale_rule(ScaleRule::Search)
            .unwrap();
        let info = crate::quantize::plan_info(&[4, 96, 64], safetensors::Dtype::BF16, &opts);
        assert_eq!(info.format, opts.auto.as_ref().unwrap().name());
        assert_eq!(info.scale_rule, Some(ScaleRule::Search));
        let json = info.to_json();
        assert!(json.contains(r#""scale_rule":"search""#), "{json}");
        let back: QuantInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(back.scale_rule, info.scale_rule);
        assert_eq!(back.format, info.format);
        assert_eq!(
            AutoSpec::from_name(&back.format).unwrap(),
            *opts.auto.as_ref().unwrap()
        );
        // Files written before the rule was recorded read as "not recorded".
        let old = json.replace(r#""scale_rule":"search","#, "");
        assert_ne!(old, json);
        let back: QuantInfo = serde_json::from_str(&old).unwrap();
        assert_eq!(back.scale_rule, None);
        assert!(serde_json::from_str::<QuantInfo>(&json.replace("search", "median")).is_err());
    }

    #[test]
    fn even_rows_keeps_whole_rows_within_the_budget() {
        let (rows, cols) = (1000, 100);
        let w: Vec<f32> = (0..rows * cols).map(|i| (i / cols) as f32).collect();
        let (s, n) = even_rows(&w, rows, cols, 10_000);
        assert_eq!((n, s.len()), (100, 10_000));
        for (i, row) in s.chunks(cols).enumerate() {
            assert!(row.iter().all(|&v| v == (i * 10) as f32), "row {i}");
        }
        let (s, n) = even_rows(&w[..5000], 50, cols, 10_000);
        assert!(matches!(s, std::borrow::Cow::Borrowed(_)) && n == 50);
        let (_, n) = even_rows(&w, 2, 50_000, 10_000);
        assert_eq!(n, 1, "a row longer than the budget");
    }

    #[test]
    fn searched_student_float_records_its_nu() {
        let mut rng = Rng::new(9);
        let (rows, cols) = (64, 64);
        let w = rng.student_t_vec(rows * cols, 3.0);
        let opts = auto_opts("auto:sf4", None, ScaleDtype::F32);
        let spec = opts.auto.clone().unwrap();
        let m = quantize_matrix_auto(&w, rows, cols, &opts, &spec, &SquaredError).unwrap();
        let nu = m.out.info.nu.expect("sf4 records nu");
        assert_eq!(m.out.info.format, format!("sf4:nu={nu}"));
        assert!((1.0..=1000.0).contains(&nu));
        assert!(m.out.info.fit.is_none() && m.out.info.fit_tensor.is_some());
    }
}
