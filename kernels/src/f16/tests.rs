use super::*;
use crate::exact_budget;

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Finite f16 bits over the whole range: normals of every binade and subnormals (one in
    /// eight), either sign.
    fn weight(&mut self) -> u16 {
        let r = self.next();
        let sign = ((r >> 63) as u16) << 15;
        let mant = (r & 0x3ff) as u16;
        let exp = if r % 8 == 0 {
            0
        } else {
            1 + ((r >> 10) % 30) as u16
        };
        sign | exp << 10 | mant
    }
    /// Activations over several binades.
    fn value(&mut self) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        let e = (self.next() % 8) as i32 - 4;
        (2.0 * u - 1.0) * 2f32.powi(e)
    }
}

/// Every path this CPU runs, reference excluded.
fn paths() -> Vec<Isa> {
    Isa::available()
        .into_iter()
        .filter(|&i| i != Isa::Reference)
        .collect()
}

fn magnitude(w: &[u16], cols: usize, x: &[f32], r: usize, j: usize) -> f64 {
    (0..cols)
        .map(|c| (f16_to_f32(w[r * cols + c]) as f64 * x[j * cols + c] as f64).abs())
        .sum()
}

/// Every path against the f64 reference on one shape, in both modes, with weights and
/// activations starting one element into their buffers (not vector-aligned).
fn check_shape(rng: &mut Rng, rows: usize, cols: usize, n: usize) {
    let wbuf: Vec<u16> = (0..rows * cols + 1).map(|_| rng.weight()).collect();
    let xbuf: Vec<f32> = (0..n * cols + 1).map(|_| rng.value()).collect();
    let (w, x) = (&wbuf[1..], &xbuf[1..]);
    let mut want = vec![0.0f32; n * rows];
    matmul_f16_with(Isa::Reference, w, rows, cols, x, n, &mut want, Mode::Exact).unwrap();
    for mode in Mode::ALL {
        for isa in paths() {
            let mut got = vec![f32::NAN; n * rows];
            matmul_f16_with(isa, w, rows, cols, x, n, &mut got, mode).unwrap();
            for j in 0..n {
                for r in 0..rows {
                    let i = j * rows + r;
                    let budget = exact_budget(cols) * magnitude(w, cols, x, r, j);
                    assert!(
                        ((got[i] - want[i]) as f64).abs() <= budget,
                        "{isa} {mode}: [{rows}, {cols}] x {n}, output ({j}, {r}): {} vs \
                         reference {} (budget {budget:e})",
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
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for cols in 1..=300 {
        check_shape(&mut rng, 1 + (cols * 7) % 17, cols, 1 + (cols * 5) % 9);
    }
    for cols in [1, 7, 8, 15, 16, 17, 33, 64, 300] {
        for rows in 1..=17 {
            for n in 1..=9 {
                check_shape(&mut rng, rows, cols, n);
            }
        }
    }
}

#[test]
fn large_products_split_over_threads_match_the_reference() {
    let mut rng = Rng(11);
    check_shape(&mut rng, 67, 4099, 1);
    check_shape(&mut rng, 37, 1031, 9);
}

/// The weights are widened exactly: every path gives the f32 product of the f16 values widened
/// in memory (what models did before), within summation order.
#[test]
fn every_path_equals_f32_arithmetic_on_the_widened_weights() {
    let mut rng = Rng(3);
    let (rows, cols, n) = (9, 523, 2);
    let w: Vec<u16> = (0..rows * cols).map(|_| rng.weight()).collect();
    let wide: Vec<f32> = w.iter().map(|&b| f16_to_f32(b)).collect();
    let x: Vec<f32> = (0..n * cols).map(|_| rng.value()).collect();
    for isa in paths() {
        let mut a = vec![0.0f32; n * rows];
        let mut b = vec![0.0f32; n * rows];
        matmul_f16_with(isa, &w, rows, cols, &x, n, &mut a, Mode::Fast).unwrap();
        crate::matmul_f32_with(isa, &wide, rows, cols, &x, n, &mut b).unwrap();
        for j in 0..n {
            for r in 0..rows {
                let budget = 2.0 * exact_budget(cols) * magnitude(&w, cols, &x, r, j);
                let i = j * rows + r;
                assert!(((a[i] - b[i]) as f64).abs() <= budget, "{isa} ({j}, {r})");
            }
        }
    }
}

#[test]
fn widening_follows_ieee_binary16() {
    assert_eq!(f16_to_f32(0x3c00), 1.0);
    assert_eq!(f16_to_f32(0xc000), -2.0);
    assert_eq!(f16_to_f32(0x7bff), 65504.0);
    // The smallest subnormal, 2^-24.
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
    // One weight equal to 1, the rest zero, picks out that activation on every path.
    for isa in Isa::available() {
        let mut w = vec![0u16; 3 * 40];
        w[40 + 37] = 0x3c00;
        w[2 * 40 + 5] = 0x0001;
        let x: Vec<f32> = (0..40).map(|i| i as f32 + 0.5).collect();
        let mut y = [f32::NAN; 3];
        matmul_f16_with(isa, &w, 3, 40, &x, 1, &mut y, Mode::Exact).unwrap();
        assert_eq!(y, [0.0, 37.5, 5.5 * 2f32.powi(-24)], "{isa}");
    }
}

#[test]
fn bad_lengths_are_errors() {
    let w = [0u16; 6];
    let x = [1.0f32; 3];
    let mut y = [0.0f32; 2];
    assert!(matmul_f16(&w, 2, 3, &x, 1, &mut y, Mode::Exact).is_ok());
    assert!(matches!(
        matmul_f16(&w[..5], 2, 3, &x, 1, &mut y, Mode::Exact),
        Err(KernelError::Length { what, .. }) if what.starts_with("weights")
    ));
    assert!(matches!(
        matmul_f16(&w, 2, 3, &x[..2], 1, &mut y, Mode::Fast),
        Err(KernelError::Length { what, .. }) if what.starts_with("activations")
    ));
    assert!(matches!(
        matmul_f16(&w, 2, 3, &x, 1, &mut y[..1], Mode::Exact),
        Err(KernelError::Length { what, .. }) if what.starts_with("output")
    ));
}
