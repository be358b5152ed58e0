//! The text `tquant convert` prints for a [`ConvertSummary`]: what was converted and how, the
//! counts, the fitted nu and the formats `auto` chose, sizes and speed.

use crate::ConvertSummary;
use std::collections::BTreeMap;
use std::fmt;

/// A few lines, each ending in a newline:
///
/// ```text
/// in -> out (tquant layout, nf4, block 64, f16 absmax scales)
/// 27 tensors: 24 quantized (2 as q8_0), 3 kept, 0 skipped; 1000 of 1100 parameters quantized
/// 4.4 MB -> 1.2 MB (4.750 bits per weight overall) in 0.10 s (44.0 MB/s, 2 threads)
/// ```
impl fmt::Display for ConvertSummary {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self;
        let nu = match &s.nu {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(v) => format!(" nu={v}"),
            v => format!(" nu={v}"),
        };
        writeln!(
            out,
            "{} -> {} ({} layout, {}{nu}, block {}, {} {} scales)",
            s.input.display(),
            s.output.display(),
            s.layout,
            s.format,
            s.block,
            s.scale_dtype,
            s.scale_rule
        )?;
        let q8 = match s.q8_0 {
            0 => String::new(),
            n => format!(" ({n} as q8_0)"),
        };
        writeln!(
            out,
            "{} tensors: {} quantized{q8}, {} kept, {} skipped; {} of {} parameters quantized",
            s.tensors.len(),
            s.quantized,
            s.kept,
            s.skipped,
            s.params_quantized,
            s.params
        )?;
        if !s.dropped.is_empty() {
            writeln!(
                out,
                "dropped {} tensor(s) (--drop): {}",
                s.dropped.len(),
                some_names(&s.dropped)
            )?;
        }
        if !s.dequantized.is_empty() {
            writeln!(
                out,
                "{} FP8 tensor(s) kept unquantized, written dequantized as BF16: {}",
                s.dequantized.len(),
                some_names(&s.dequantized)
            )?;
        }
        let mut nus: Vec<f64> = s
            .tensors
            .iter()
            .flat_map(|t| t.nu.iter().flatten().copied())
            .collect();
        if !nus.is_empty() && (s.nu == "fit" || s.nu == "search") {
            nus.sort_by(f64::total_cmp);
            writeln!(
                out,
                "nu over {} matrices: min {:.3}, median {:.3}, max {:.3}",
                nus.len(),
                nus[0],
                nus[nus.len() / 2],
                nus[nus.len() - 1]
            )?;
        }
        if s.format.starts_with("auto") {
            // How often each format won, by family (sf4:nu=... counts as sf4).
            let mut won = BTreeMap::<&str, usize>::new();
            for f in s.tensors.iter().flat_map(|t| t.formats.iter()) {
                *won.entry(f.split(':').next().unwrap_or(f)).or_default() += 1;
            }
            let list: Vec<String> = won.iter().map(|(f, n)| format!("{f} {n}")).collect();
            writeln!(out, "chosen per matrix: {}", list.join(", "))?;
        }
        writeln!(
            out,
            "{:.1} MB -> {:.1} MB ({:.3} bits per weight overall) in {:.2} s ({:.1} MB/s, {} threads)",
            s.input_bytes as f64 / 1e6,
            s.output_bytes as f64 / 1e6,
            s.bits_per_weight,
            s.seconds,
            s.mb_per_s,
            s.threads
        )
    }
}

/// The first few names of a list, and how many more there are.
fn some_names(names: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut text = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(", ... ({} more)", names.len() - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn some_names_counts_the_rest() {
        let names: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
        assert_eq!(super::some_names(&names[..2]), "t0, t1");
        assert_eq!(super::some_names(&names), "t0, t1, t2, t3, ... (2 more)");
    }
}
