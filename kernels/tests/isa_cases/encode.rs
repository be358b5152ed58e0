//! The block encoder on one path: every catalog format's codes byte for byte as the portable
//! encoder's, at lengths off the vector width, with NaN, infinities, zeros, table values and
//! exact midpoints (ties) times the scale; the block extreme as the portable one's; and a
//! ragged matrix quantized byte for byte as on the portable path, for every scale dtype.

use tquant_formats::encode::{block_extreme, encode_scaled_portable, BlockEncode, EncodeTable};
use tquant_formats::sample::Rng;
use tquant_formats::{BlockQuantizer, BlockSize, Format, ScaleDtype, ScaleRule};
use tquant_kernels::{Encoder, Isa, ScaleScreen};

const LENS: [usize; 12] = [1, 2, 7, 8, 15, 16, 17, 31, 33, 64, 100, 129];

/// Blocks of length `len`: smooth, heavy-tailed, table values and midpoints times `s` (exact
/// ties after the division), and some with NaN, infinities and signed zeros.
fn blocks(sorted: &[f32], len: usize, s: f32, rng: &mut Rng) -> Vec<Vec<f32>> {
    let pick = |rng: &mut Rng| rng.below(sorted.len() as u64 - 1) as usize;
    let mut out = vec![rng.normal_vec(len), rng.student_t_vec(len, 2.5)];
    out.push((0..len).map(|_| sorted[pick(rng)] * s).collect());
    out.push(
        (0..len)
            .map(|_| {
                let k = pick(rng);
                (0.5 * (sorted[k] as f64 + sorted[k + 1] as f64)) as f32 * s
            })
            .collect(),
    );
    let mut odd = rng.normal_vec(len);
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0];
    for (i, v) in odd.iter_mut().enumerate() {
        if i % 3 == 1 {
            *v = specials[i % specials.len()];
        }
    }
    out.push(odd);
    out.push(vec![f32::NAN; len]);
    out.push(vec![-0.0; len]);
    out
}

pub fn encoder_matches_portable(isa: Isa) {
    let enc = Encoder::new(isa).unwrap();
    let mut rng = Rng::new(41);
    for f in Format::all() {
        let cb = f.codebook();
        let t = EncodeTable::new(cb);
        let mut sorted = cb.values().to_vec();
        sorted.sort_by(f32::total_cmp);
        for len in LENS {
            for s in [0.37f32, -1.3, 3e-3, 1e-39, 7e30] {
                for (i, b) in blocks(&sorted, len, s, &mut rng).iter().enumerate() {
                    let mut want = vec![0u8; len];
                    cb.encode_scaled(b, s, &mut want);
                    let mut port = vec![0xAAu8; len];
                    encode_scaled_portable(&t, b, s, &mut port);
                    assert_eq!(port, want, "portable {f} len {len} scale {s} block {i}");
                    // Guard bytes around the output: nothing written past it.
                    let mut buf = vec![0xAAu8; len + 32];
                    enc.encode_scaled(&t, b, s, &mut buf[16..16 + len]);
                    assert_eq!(
                        &buf[16..16 + len],
                        &want[..],
                        "{isa} {f} len {len} scale {s} block {i}: {b:?}"
                    );
                    assert!(
                        buf[..16].iter().chain(&buf[16 + len..]).all(|&c| c == 0xAA),
                        "{isa} wrote outside"
                    );
                    let (got, want) = (enc.extreme(b), block_extreme(b));
                    assert_eq!(
                        (got.0.to_bits(), got.1 == want.1),
                        (want.0.to_bits(), true),
                        "{isa} extreme {f} len {len} block {i}: {b:?}"
                    );
                }
            }
        }
    }
}

pub fn encoded_matrix_matches_portable(isa: Isa) {
    let screen = ScaleScreen::new(isa).unwrap();
    let enc = Encoder::new(isa).unwrap();
    let mut rng = Rng::new(43);
    for f in Format::all() {
        let cb = f.codebook();
        for d in ScaleDtype::ALL {
            for (rows, cols, block) in [(3, 100, 32), (2, 129, 64), (5, 64, 16), (1, 7, 64)] {
                let q = BlockQuantizer {
                    block: BlockSize::Elements(block),
                    scale_dtype: d,
                };
                if q.check(cb).is_err() {
                    continue;
                }
                let mut w = rng.student_t_vec(rows * cols, 4.0);
                w[cols / 2] = f32::NAN;
                w[cols - 1] = f32::INFINITY;
                for rule in [ScaleRule::Absmax, ScaleRule::Search] {
                    let want = q.quantize_with(cb, &w, rows, cols, rule).unwrap();
                    let got = q
                        .quantize_with_kernels(cb, &w, rows, cols, rule, &screen, &enc)
                        .unwrap();
                    assert_eq!(
                        got, want,
                        "{isa} {f} {d} [{rows}x{cols}] block {block} {rule:?}"
                    );
                }
            }
        }
    }
}
