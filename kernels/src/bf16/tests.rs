use super::*;
use crate::exact_budget;

/// A small deterministic generator (xorshift) of values spread over several binades.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn value(&mut self) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
        let e = (self.next() % 8) as i32 - 4;
        (2.0 * u - 1.0) * 2f32.powi(e)
    }
}

/// Every path this CPU runs, as (isa, vdpbf16ps), reference excluded.
fn paths() -> Vec<(Isa, bool)> {
    let mut v: Vec<(Isa, bool)> = Isa::available()
        .into_iter()
        .filter(|&i| i != Isa::Reference)
        .map(|i| (i, false))
        .collect();
    if bf16_dot_available() {
        v.push((Isa::Avx512, true));
    }
    v
}

/// `sum_k |w_k x_k|` for output (j, r), with `x` as the mode sees it.
fn magnitude(w: &[u16], cols: usize, x: &[f32], r: usize, j: usize, mode: Mode) -> f64 {
    (0..cols)
        .map(|c| {
            let xv = x[j * cols + c];
            let xv = if mode == Mode::Fast {
                bf16_to_f32(f32_to_bf16(xv))
            } else {
                xv
            };
            (bf16_to_f32(w[r * cols + c]) as f64 * xv as f64).abs()
        })
        .sum()
}

/// Checks every path against the reference on one shape, with weights and activations
/// starting one element into their buffers (not vector-aligned).
fn check_shape(rng: &mut Rng, rows: usize, cols: usize, n: usize) {
    let wbuf: Vec<u16> = (0..rows * cols + 1)
        .map(|_| f32_to_bf16(rng.value()))
        .collect();
    let xbuf: Vec<f32> = (0..n * cols + 1).map(|_| rng.value()).collect();
    let (w, x) = (&wbuf[1..], &xbuf[1..]);
    for mode in Mode::ALL {
        let mut want = vec![0.0f32; n * rows];
        matmul_bf16_with(Isa::Reference, w, rows, cols, x, n, &mut want, mode).unwrap();
        for (isa, dot) in paths() {
            let mut got = vec![f32::NAN; n * rows];
            run(isa, dot, w, rows, cols, x, n, &mut got, mode).unwrap();
            for j in 0..n {
                for r in 0..rows {
                    let i = j * rows + r;
                    let budget = exact_budget(cols) * magnitude(w, cols, x, r, j, mode);
                    assert!(
                        ((got[i] - want[i]) as f64).abs() <= budget,
                        "{isa} (vdpbf16ps {dot}) {mode}: [{rows}, {cols}] x {n}, output ({j}, {r}): \
                         {} vs reference {} (budget {budget:e})",
                        got[i],
                        want[i]
                    );
                }
            }
        }
    }
}

#[test]
fn every_path_matches_the_reference_on_ragged_shapes() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Every column count 1..=300 with rows and batch cycling through 1..=17 and 1..=9.
    for cols in 1..=300 {
        check_shape(&mut rng, 1 + (cols * 7) % 17, cols, 1 + (cols * 5) % 9);
    }
    // Every row count and batch at column counts around the vector widths.
    for cols in [1, 15, 33, 64, 300] {
        for rows in 1..=17 {
            for n in 1..=9 {
                check_shape(&mut rng, rows, cols, n);
            }
        }
    }
}

#[test]
fn large_products_split_over_threads_match_the_reference() {
    let mut rng = Rng(7);
    // Above PARALLEL_MIN_WORK, so rows are split over rayon's threads.
    check_shape(&mut rng, 67, 4099, 1);
    check_shape(&mut rng, 37, 1031, 9);
}

#[test]
fn fast_mode_stays_within_its_budget_of_exact_arithmetic() {
    let mut rng = Rng(42);
    let (rows, cols, n) = (13, 777, 3);
    let w: Vec<u16> = (0..rows * cols).map(|_| f32_to_bf16(rng.value())).collect();
    let x: Vec<f32> = (0..n * cols).map(|_| rng.value()).collect();
    let mut exact = vec![0.0f32; n * rows];
    matmul_bf16_with(
        Isa::Reference,
        &w,
        rows,
        cols,
        &x,
        n,
        &mut exact,
        Mode::Exact,
    )
    .unwrap();
    for (isa, dot) in paths() {
        let mut fast = vec![0.0f32; n * rows];
        run(isa, dot, &w, rows, cols, &x, n, &mut fast, Mode::Fast).unwrap();
        let mut moved = false;
        for j in 0..n {
            for r in 0..rows {
                let i = j * rows + r;
                let mag = magnitude(&w, cols, &x, r, j, Mode::Exact);
                let bound = (BF16_FAST_REL * 1.01 + exact_budget(cols)) * mag;
                let d = ((fast[i] - exact[i]) as f64).abs();
                assert!(d <= bound, "{isa} (vdpbf16ps {dot}): {d:e} > {bound:e}");
                moved |= fast[i] != exact[i];
            }
        }
        // f32 activations rounded to bf16 do change the result: fast is not exact.
        assert!(
            moved,
            "{isa} (vdpbf16ps {dot}): fast mode equals exact mode"
        );
    }
}

#[test]
fn exact_mode_is_f32_arithmetic_on_the_widened_weights() {
    let mut rng = Rng(3);
    let (rows, cols) = (9, 523);
    let w: Vec<u16> = (0..rows * cols).map(|_| f32_to_bf16(rng.value())).collect();
    let wide: Vec<f32> = w.iter().map(|&b| bf16_to_f32(b)).collect();
    let x: Vec<f32> = (0..cols).map(|_| rng.value()).collect();
    for (isa, _) in paths() {
        let mut a = vec![0.0f32; rows];
        let mut b = vec![0.0f32; rows];
        matmul_bf16_with(isa, &w, rows, cols, &x, 1, &mut a, Mode::Exact).unwrap();
        crate::matmul_f32_with(isa, &wide, rows, cols, &x, 1, &mut b).unwrap();
        for r in 0..rows {
            let budget = 2.0 * exact_budget(cols) * magnitude(&w, cols, &x, r, 0, Mode::Exact);
            assert!(((a[r] - b[r]) as f64).abs() <= budget, "{isa} row {r}");
        }
    }
}

#[test]
fn widening_and_rounding_follow_bf16() {
    assert_eq!(bf16_to_f32(0x3f80), 1.0);
    assert_eq!(bf16_to_f32(0xc000), -2.0);
    assert_eq!(f32_to_bf16(1.0), 0x3f80);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to even (1.0).
    assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
    assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
    assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
}

#[test]
fn byte_views_need_alignment_and_whole_values() {
    let words = [0x3f80u16, 0x4000, 0xc040];
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    // A Vec<u8> may start anywhere; find an even and an odd start inside a larger buffer.
    let mut buf = vec![0u8; bytes.len() + 2];
    let even = (buf.as_ptr() as usize) % 2;
    buf[even..even + bytes.len()].copy_from_slice(&bytes);
    assert_eq!(bf16_bits(&buf[even..even + 6]), Some(&words[..]));
    assert_eq!(bf16_bits(&buf[even + 1..even + 5]), None, "odd address");
    assert_eq!(bf16_bits(&buf[even..even + 5]), None, "odd length");
}

#[test]
fn bad_lengths_and_missing_paths_are_errors() {
    let w = [0u16; 6];
    let x = [1.0f32; 3];
    let mut y = [0.0f32; 2];
    assert!(matmul_bf16(&w, 2, 3, &x, 1, &mut y, Mode::Exact).is_ok());
    assert!(matches!(
        matmul_bf16(&w[..5], 2, 3, &x, 1, &mut y, Mode::Exact),
        Err(KernelError::Length { what, .. }) if what.starts_with("weights")
    ));
    assert!(matches!(
        matmul_bf16(&w, 2, 3, &x[..2], 1, &mut y, Mode::Exact),
        Err(KernelError::Length { what, .. }) if what.starts_with("activations")
    ));
    assert!(matches!(
        matmul_bf16(&w, 2, 3, &x, 1, &mut y[..1], Mode::Exact),
        Err(KernelError::Length { what, .. }) if what.starts_with("output")
    ));
    // vdpbf16ps belongs to the AVX-512 path only.
    assert!(matches!(
        run(Isa::Scalar, true, &w, 2, 3, &x, 1, &mut y, Mode::Fast),
        Err(KernelError::Unavailable { .. })
    ));
}
