//! ggml's 32-element block types Q4_0, IQ4_NL and Q8_0: encoders bit for bit those of
//! `ggml/src/ggml-quants.c` (the reference `quantize_row_*_ref` and `quantize_iq4_nl`, the
//! one `llama-quantize` runs), tquant's searched scale as an alternative way to choose a
//! block's scale, and the decoders.
//!
//! Every block is `f16 d` followed by its codes. In the 4-bit types byte `j` holds element
//! `j` in its low nibble and element `j + 16` in its high nibble.

use half::f16;
use tquant_formats::{BlockQuantizer, BlockSize, Codebook, ScaleDtype};

/// Elements per block in every type here.
pub const QK: usize = 32;

/// IQ4_NL's non-linear table in code order (`kvalues_iq4nl`, ggml-common.h).
pub const IQ4_NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Q4_0's table in code order: the value of code `q` is `q - 8`.
pub const Q4_0_VALUES: [i8; 16] = [-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7];

/// The ggml tensor types tquant writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
    /// 4-bit uniform, f16 scale per 32.
    Q4_0,
    /// 8-bit uniform, f16 scale per 32.
    Q8_0,
    /// 4-bit non-linear table, f16 scale per 32.
    Iq4Nl,
}

impl GgmlType {
    /// The `ggml_type` number stored in a tensor info.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q8_0 => 8,
            Self::Iq4Nl => 20,
            Self::Bf16 => 30,
        }
    }

    /// ggml's name (`Q4_0`, `IQ4_NL`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Bf16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q8_0 => "Q8_0",
            Self::Iq4Nl => "IQ4_NL",
        }
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::Bf16 => (1, 2),
            Self::Q4_0 | Self::Iq4Nl => (QK, 2 + QK / 2),
            Self::Q8_0 => (QK, 2 + QK),
        }
    }

    /// Bytes of `n` elements (`n` a multiple of the block length).
    pub fn bytes(self, n: usize) -> usize {
        let (el, by) = self.block();
        n / el * by
    }

    /// The 4-bit table in code order, for the table types.
    pub fn table(self) -> Option<&'static [i8; 16]> {
        match self {
            Self::Q4_0 => Some(&Q4_0_VALUES),
            Self::Iq4Nl => Some(&IQ4_NL_VALUES),
            _ => None,
        }
    }
}

/// How a 4-bit block's scale is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BlockRule {
    /// ggml's own encoder: `quantize_row_q4_0_ref` for Q4_0; for IQ4_NL `quantize_iq4_nl`
    /// without importance weights (`llama-quantize` without an imatrix: 15 trial scales).
    #[default]
    Ggml,
    /// tquant's per-block least-squared-error scale among f16 values
    /// ([`BlockQuantizer::searched_block_scale`]), codes nearest to `x / d`.
    Search,
}

fn put_f16(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&f16::from_f32(v).to_le_bytes());
}

fn pack_nibbles(codes: &[u8; QK], out: &mut Vec<u8>) {
    out.extend((0..QK / 2).map(|j| codes[j] | (codes[j + QK / 2] << 4)));
}

/// `quantize_row_q4_0_ref` of one block.
fn q4_0_block(x: &[f32], out: &mut Vec<u8>) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(out, d);
    let mut codes = [0u8; QK];
    for (c, &v) in codes.iter_mut().zip(x) {
        // C's `(int8_t)(x + 8.5f)` truncates toward zero.
        *c = ((v * id + 8.5) as i8).min(15) as u8;
    }
    pack_nibbles(&codes, out);
}

/// ggml's `best_index_int8`: the nearest table entry, ties to the lower one.
fn best_index(values: &[i8; 16], x: f32) -> u8 {
    let v = |i: usize| values[i] as f32;
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < v(mav) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - v(mu - 1) < v(mu) - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// `quantize_row_iq4_nl_impl` for one 32-element block without importance weights; `ntry` 7
/// is `quantize_iq4_nl` (what `llama-quantize` runs), -1 `quantize_row_iq4_nl_ref`.
/// `codes` is ggml's `L` buffer, which its callers keep across blocks: the reference encoder
/// leaves it untouched for an all-zero block and packs what the previous block left.
fn iq4_nl_block(x: &[f32], ntry: i32, codes: &mut [u8; QK], out: &mut Vec<u8>) {
    let values = &IQ4_NL_VALUES;
    let mut weight = [0.0f32; QK];
    for (w, &v) in weight.iter_mut().zip(x) {
        *w = v * v;
    }
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        put_f16(out, 0.0);
        if ntry > 0 {
            codes.fill(best_index(values, 0.0));
        }
        pack_nibbles(codes, out);
        return;
    }
    let v0 = values[0] as f32;
    let mut d = if ntry > 0 { -max / v0 } else { max / v0 };
    let mut id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for j in 0..QK {
        let l = best_index(values, id * x[j]);
        codes[j] = l;
        let q = values[l as usize] as f32;
        sumqx += weight[j] * q * x[j];
        sumq2 += weight[j] * q * q;
    }
    d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -ntry..=ntry {
        id = (itry as f32 + v0) / max;
        let (mut sqx, mut sq2) = (0.0f32, 0.0f32);
        for j in 0..QK {
            let q = values[best_index(values, id * x[j]) as usize] as f32;
            sqx += weight[j] * q * x[j];
            sq2 += weight[j] * q * q;
        }
        if sq2 > 0.0 && sqx * sqx > best * sq2 {
            d = sqx / sq2;
            best = d * sqx;
        }
    }
    put_f16(out, d);
    if ntry > 0 {
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for j in 0..QK {
            codes[j] = best_index(values, id * x[j]);
        }
    }
    pack_nibbles(codes, out);
}

/// `quantize_row_q8_0_ref` of one block.
fn q8_0_block(x: &[f32], out: &mut Vec<u8>) {
    let mut codes = [0i8; QK];
    let d = tquant_formats::q8_0::quantize_block(x, &mut codes[..x.len()]);
    out.extend(d.to_le_bytes());
    out.extend(codes[..x.len()].iter().map(|&c| c as u8));
}

/// A 4-bit block with tquant's searched f16 scale over the type's table.
fn searched_block(cb: &Codebook, q: &BlockQuantizer, x: &[f32], out: &mut Vec<u8>) {
    let d = q.searched_block_scale_with(cb, x, &tquant_kernels::ScaleScreen::detect());
    put_f16(out, d);
    let mut codes = [0u8; QK];
    tquant_formats::block::encode_block(cb, x, d, &mut codes);
    pack_nibbles(&codes, out);
}

/// The codebook of a 4-bit type's table (raw integers, so `d` is ggml's scale as is).
fn codebook(t: GgmlType) -> Codebook {
    let table = t.table().expect("a 4-bit table type");
    Codebook::new(table.iter().map(|&v| v as f32).collect()).expect("ggml's table is valid")
}

/// Encodes `x` (a multiple of the type's block length) in type `t`.
pub fn quantize(t: GgmlType, rule: BlockRule, x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.bytes(x.len()));
    match (t, rule) {
        (GgmlType::F32, _) => out.extend(x.iter().flat_map(|v| v.to_le_bytes())),
        (GgmlType::F16, _) => out.extend(x.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes())),
        (GgmlType::Bf16, _) => out.extend(
            x.iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()),
        ),
        (GgmlType::Q8_0, _) => x.chunks(QK).for_each(|b| q8_0_block(b, &mut out)),
        (GgmlType::Q4_0, BlockRule::Ggml) => x.chunks(QK).for_each(|b| q4_0_block(b, &mut out)),
        (GgmlType::Iq4Nl, BlockRule::Ggml) => {
            let mut codes = [0u8; QK];
            x.chunks(QK)
                .for_each(|b| iq4_nl_block(b, 7, &mut codes, &mut out))
        }
        (GgmlType::Q4_0 | GgmlType::Iq4Nl, BlockRule::Search) => {
            let cb = codebook(t);
            let q = BlockQuantizer {
                block: BlockSize::Elements(QK),
                scale_dtype: ScaleDtype::F16,
            };
            x.chunks(QK)
                .for_each(|b| searched_block(&cb, &q, b, &mut out))
        }
    }
    out
}

/// `quantize_row_iq4_nl_ref` (ggml's reference, one scale refit, no trials) of `x`.
pub fn quantize_iq4_nl_ref(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(GgmlType::Iq4Nl.bytes(x.len()));
    let mut codes = [0u8; QK];
    x.chunks(QK)
        .for_each(|b| iq4_nl_block(b, -1, &mut codes, &mut out));
    out
}

/// Decodes `bytes` of type `t` into f32, as ggml's `dequantize_row_*` does.
pub fn dequantize(t: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let h = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
    match t {
        GgmlType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        GgmlType::F16 => bytes.chunks_exact(2).map(h).collect(),
        GgmlType::Bf16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        GgmlType::Q8_0 => bytes
            .chunks_exact(2 + QK)
            .flat_map(|b| {
                let d = h(b);
                b[2..].iter().map(move |&q| d * (q as i8) as f32)
            })
            .collect(),
        GgmlType::Q4_0 | GgmlType::Iq4Nl => {
            let table = t.table().expect("table type");
            let mut out = Vec::with_capacity(bytes.len() / 18 * QK);
            for b in bytes.chunks_exact(2 + QK / 2) {
                let d = h(b);
                let qs = &b[2..];
                out.extend(qs.iter().map(|&q| d * table[(q & 15) as usize] as f32));
                out.extend(qs.iter().map(|&q| d * table[(q >> 4) as usize] as f32));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(seed: u32) -> Vec<f32> {
        (0..QK as u32)
            .map(|i| {
                let h = (i + 1)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed.wrapping_mul(40503));
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn fixture(name: &str) -> Vec<u8> {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/gguf/blocks");
        std::fs::read(dir.join(name)).unwrap()
    }

    #[test]
    fn encoders_are_bit_for_bit_ggmls() {
        let x: Vec<f32> = fixture("input.f32")
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(
            quantize(GgmlType::Q4_0, BlockRule::Ggml, &x),
            fixture("q4_0.bin")
        );
        assert_eq!(
            quantize(GgmlType::Iq4Nl, BlockRule::Ggml, &x),
            fixture("iq4_nl.bin")
        );
        assert_eq!(quantize_iq4_nl_ref(&x), fixture("iq4_nl_ref.bin"));
        assert_eq!(
            quantize(GgmlType::Q8_0, BlockRule::Ggml, &x),
            fixture("q8_0.bin")
        );
    }

    #[test]
    fn nibble_order_is_ggmls() {
        // Element j in the low nibble of byte j, element j + 16 in its high nibble.
        let mut x = vec![0.0f32; QK];
        x[0] = -8.0;
        x[16] = 4.0;
        let b = quantize(GgmlType::Q4_0, BlockRule::Ggml, &x);
        assert_eq!(f16::from_le_bytes([b[0], b[1]]).to_f32(), 1.0);
        assert_eq!(b[2], 12 << 4);
        assert_eq!(b[3], 8 | (8 << 4));
        let back = dequantize(GgmlType::Q4_0, &b);
        assert_eq!((back[0], back[16], back[1]), (-8.0, 4.0, 0.0));
    }

    #[test]
    fn search_never_loses_to_ggml_on_squared_error() {
        for t in [GgmlType::Q4_0, GgmlType::Iq4Nl] {
            for seed in 0..50 {
                let x = block(seed);
                let err = |r| {
                    let d = dequantize(t, &quantize(t, r, &x));
                    x.iter()
                        .zip(&d)
                        .map(|(a, b)| ((a - b) as f64).powi(2))
                        .sum::<f64>()
                };
                let (g, s) = (err(BlockRule::Ggml), err(BlockRule::Search));
                // The search covers absmax scales; ggml's IQ4_NL trials may find one it lacks,
                // so allow a little on IQ4_NL only.
                let slack = if t == GgmlType::Iq4Nl { 1.05 } else { 1.0 };
                assert!(
                    s <= g * slack + 1e-12,
                    "{t:?} seed {seed}: search {s} ggml {g}"
                );
            }
        }
    }

    #[test]
    fn zero_blocks_encode_to_zero() {
        let x = vec![0.0f32; 2 * QK];
        for t in [GgmlType::Q4_0, GgmlType::Iq4Nl, GgmlType::Q8_0] {
            for r in [BlockRule::Ggml, BlockRule::Search] {
                let b = quantize(t, r, &x);
                assert_eq!(b.len(), t.bytes(x.len()));
                assert!(dequantize(t, &b).iter().all(|&v| v == 0.0), "{t:?} {r:?}");
            }
        }
    }
}
