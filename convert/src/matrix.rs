//! Quantizing one matrix in memory: the Student-t fit or nu search that picks a Student Float
//! table, `auto`'s per-matrix choice, block quantization and packing in the chosen layout.

use crate::fitting::{fit_for_codebook_with, fit_for_profile, round_nu};
use crate::layouts;
use crate::options::{ConvertOptions, NuChoice};
use crate::schema::{FitInfo, Layout, MatrixInfo, QuantizedMatrixOut};
use tquant_formats::lloyd::{learn_row_tables, learn_table};
use tquant_formats::nu_search::search_nu_min_error_with_screen;
use tquant_formats::nvfp4::nvfp4_global_scale;
use tquant_formats::select::SquaredError;
use tquant_formats::{BlockQuantizer, Codebook, Format, FormatError, ScaleDtype};

/// Fits (when asked), picks the codebook and quantizes one row-major `[rows, cols]` matrix.
pub fn quantize_matrix(
    values: &[f32],
    rows: usize,
    cols: usize,
    opts: &ConvertOptions,
) -> Result<QuantizedMatrixOut, FormatError> {
    quantize_matrix_weighted(values, rows, cols, opts, None)
}

/// [`quantize_matrix`], with a weight per column for the error a learned table
/// (`opts.learned`) minimises (the calibration's `diag(H)`); other formats ignore it.
pub fn quantize_matrix_weighted(
    values: &[f32],
    rows: usize,
    cols: usize,
    opts: &ConvertOptions,
    col_weights: Option<&[f64]>,
) -> Result<QuantizedMatrixOut, FormatError> {
    if let Some(spec) = &opts.auto {
        return crate::auto::quantize_matrix_auto(values, rows, cols, opts, spec, &SquaredError)
            .map(|m| m.out);
    }
    if opts.learned && opts.row_tables {
        return quantize_rows_learned(values, rows, cols, opts, col_weights);
    }
    let block_len = opts.block.len_for(cols);
    let (format, fit, fit_tensor) = match opts.nu {
        Some(NuChoice::Fit) => {
            let fit = fit_for_codebook_with(values, block_len, opts.fit_sampling);
            let whole = fit_for_profile(values, block_len);
            let format = Format::student_float(opts.format.bits(), round_nu(fit.nu))?;
            (format, Some(FitInfo::from(fit)), Some(FitInfo::from(whole)))
        }
        Some(NuChoice::Search) => {
            let q = BlockQuantizer {
                block: opts.block,
                scale_dtype: opts.scale_dtype,
            };
            let bits = opts.format.bits();
            let (rule, screen) = (opts.scale_rule, tquant_kernels::ScaleScreen::detect());
            let best =
                search_nu_min_error_with_screen(values, rows, cols, bits, &q, rule, &screen)?;
            let format = Format::student_float(bits, round_nu(best.nu))?;
            let whole = fit_for_profile(values, block_len);
            (format, None, Some(FitInfo::from(whole)))
        }
        _ if opts.learned => {
            let q = BlockQuantizer {
                block: opts.block,
                scale_dtype: opts.scale_dtype,
            };
            let start = opts.format.codebook().values();
            let table = learn_table(&q, values, rows, cols, col_weights, start)?;
            (Format::custom(table)?, None, None)
        }
        _ => (opts.format.clone(), None, None),
    };
    let mut cb = format.codebook().clone();
    let mut global_scale = None;
    let (codes, scales) = match opts.layout {
        Layout::Mxfp4 => layouts::mxfp4(values, rows, cols)?,
        // Options with the gguf layout are refused by `validate` and never reach here.
        Layout::Tquant | Layout::Gguf => {
            if opts.scale_dtype == ScaleDtype::E4m3 {
                // E4M3 spans only 2^-9..448: a tensor scale maps the largest block to 448
                // (NVFP4's rule), and the stored codebook holds `values / tensor scale`.
                let (scaled, g) = e4m3_tensor_scaled(&cb, values)?;
                cb = scaled;
                global_scale = Some(g);
            }
            let q = BlockQuantizer {
                block: opts.block,
                scale_dtype: opts.scale_dtype,
            }
            // The searched scales' candidates screened, and the blocks encoded, on this CPU's
            // widest path.
            .quantize_with_kernels(
                &cb,
                values,
                rows,
                cols,
                opts.scale_rule,
                &tquant_kernels::ScaleScreen::detect(),
                &tquant_kernels::Encoder::detect(),
            )?;
            (q.codes, q.scales)
        }
        Layout::Bnb => layouts::bnb_quantize(values, block_len)?,
        Layout::CompressedTensors | Layout::ModelOpt => {
            let (codes, scales, g) = crate::compressed_tensors::quantize(values, rows, cols, opts)?;
            global_scale = g;
            if opts.layout == Layout::ModelOpt {
                // ModelOpt decodes code 8 as +0.
                cb = Codebook::new(tquant_formats::nvfp4::modelopt_e2m1().to_vec())?;
            } else if global_scale.is_none() && format.name() == "int4_full" {
                // pack-quantized stores `q + 8`.
                cb = Codebook::new(crate::compressed_tensors::int4_offset_codebook())?;
            }
            (codes, scales)
        }
    };
    Ok(QuantizedMatrixOut {
        info: MatrixInfo {
            format: format.name().to_string(),
            nu: format.nu(),
            fit,
            fit_tensor,
            codebook: cb.values().to_vec(),
            row_tables: Vec::new(),
            global_scale,
        },
        codes,
        scales,
    })
}

/// `learned_row` (tquant's layout only, checked by the options): a table per row learned by
/// weighted k-means ([`learn_row_tables`]) and rounded to f16 as it is stored, each row then
/// quantized with its own table.
fn quantize_rows_learned(
    values: &[f32],
    rows: usize,
    cols: usize,
    opts: &ConvertOptions,
    col_weights: Option<&[f64]>,
) -> Result<QuantizedMatrixOut, FormatError> {
    use rayon::prelude::*;
    let q = BlockQuantizer {
        block: opts.block,
        scale_dtype: opts.scale_dtype,
    };
    let start = opts.format.codebook().values();
    let mut tables = learn_row_tables(&q, values, rows, cols, col_weights, start)?;
    let mut global_scale = None;
    if opts.scale_dtype == ScaleDtype::E4m3 {
        // As for a shared table: one tensor scale for the matrix, every row's table divided by it.
        let (_, g) = e4m3_tensor_scaled(opts.format.codebook(), values)?;
        tables.iter_mut().for_each(|v| *v /= g);
        global_scale = Some(g);
    }
    tables
        .iter_mut()
        .for_each(|v| *v = half::f16::from_f32(*v).to_f32());
    let len = start.len();
    let (screen, encoder) = (
        tquant_kernels::ScaleScreen::detect(),
        tquant_kernels::Encoder::detect(),
    );
    let parts = (0..rows)
        .into_par_iter()
        .map(|r| {
            let cb = Codebook::new(tables[r * len..(r + 1) * len].to_vec())?;
            let row = &values[r * cols..(r + 1) * cols];
            let m =
                q.quantize_with_kernels(&cb, row, 1, cols, opts.scale_rule, &screen, &encoder)?;
            Ok((m.codes, m.scales))
        })
        .collect::<Result<Vec<_>, FormatError>>()?;
    let (codes, scales): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    Ok(QuantizedMatrixOut {
        info: MatrixInfo {
            format: crate::schema::LEARNED_ROW.to_string(),
            nu: None,
            fit: None,
            fit_tensor: None,
            codebook: Vec::new(),
            row_tables: tables,
            global_scale,
        },
        codes: codes.concat(),
        scales: scales.concat(),
    })
}

/// `cb` divided by NVFP4's tensor scale for `values` (`448 · max|cb| / amax`, 2688 / amax for
/// e2m1), and that scale.
fn e4m3_tensor_scaled(cb: &Codebook, values: &[f32]) -> Result<(Codebook, f32), FormatError> {
    let amax = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    // nvfp4_global_scale is 2688 / amax; other tables scale their largest value to 448 alike.
    let g = nvfp4_global_scale(amax * 6.0 / cb.max_abs());
    let scaled = Codebook::new(cb.values().iter().map(|v| v / g).collect())?;
    Ok((scaled, g))
}
