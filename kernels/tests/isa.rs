//! Every kernel path against the reference: every catalog format, both modes, every scale dtype,
//! ragged shapes (rows and columns off the vector width, short tail blocks, block sizes
//! 16/32/64/128/odd/row), batches of 1 to 17 activation rows, and inputs and outputs that start
//! off any SIMD alignment.
//!
//! A custom harness (libtest-mimic) so that a path this CPU lacks is reported as ignored with
//! the reason rather than passing without running; `dispatcher_uses_every_isa_the_cpu_has`
//! checks, from the CPU's own feature flags, that no path the CPU has is left out.

#[path = "isa_cases/encode.rs"]
mod encode;
#[path = "isa_cases/row_tables.rs"]
mod row_tables;
#[path = "isa_cases/screen.rs"]
mod screen;

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use tquant_formats::sample::Rng;
use tquant_formats::{BlockQuantizer, BlockSize, Format, QuantizedMatrix, ScaleDtype};
use tquant_kernels::{
    exact_budget, fast_budget, matmul_f32_with, matmul_with, reference, Isa, KernelError, Mode,
    QMatrix, FAST_RMS_BUDGET,
};

/// A real quantized matrix: Student-t(5) weights with rows of different magnitude,
/// block-quantized. `None` where the format refuses the scale dtype (a table that needs signed
/// scales cannot use E8M0).
fn try_quantized(
    f: &Format,
    rows: usize,
    cols: usize,
    block: BlockSize,
    dtype: ScaleDtype,
    rng: &mut Rng,
) -> Option<QuantizedMatrix> {
    let mut w = rng.student_t_vec(rows * cols, 5.0);
    for (i, v) in w.iter_mut().enumerate() {
        // Rows of different magnitude, so scales span a few octaves.
        *v *= 0.02 * (1 + (i / cols.max(1)) % 5) as f32;
    }
    BlockQuantizer {
        block,
        scale_dtype: dtype,
    }
    .quantize(f.codebook(), &w, rows, cols)
    .ok()
}

fn quantized(
    f: &Format,
    rows: usize,
    cols: usize,
    block: BlockSize,
    dtype: ScaleDtype,
    rng: &mut Rng,
) -> QuantizedMatrix {
    try_quantized(f, rows, cols, block, dtype, rng).expect("the format takes this scale dtype")
}

fn view<'a>(m: &'a QuantizedMatrix, f: &Format) -> QMatrix<'a> {
    QMatrix::from_quantized(m, f.codebook().values()).unwrap()
}

/// Checks one product on `isa` in both modes against the reference, within the budgets.
fn check(isa: Isa, q: &QMatrix, x: &[f32], n: usize, what: &str) {
    check_at(isa, q, x, n, 0, what)
}

/// [`check`] with the output starting `y_off` floats into its buffer.
fn check_at(isa: Isa, q: &QMatrix, x: &[f32], n: usize, y_off: usize, what: &str) {
    let (rows, cols) = (q.rows(), q.cols());
    let mut exact_ref = vec![0.0f32; n * rows];
    let mut fast_ref = vec![0.0f32; n * rows];
    reference::matmul(q, x, n, &mut exact_ref, Mode::Exact);
    reference::matmul(q, x, n, &mut fast_ref, Mode::Fast);
    for mode in Mode::ALL {
        let mut buf = vec![f32::NAN; y_off + n * rows];
        let y = &mut buf[y_off..];
        matmul_with(isa, q, x, n, y, mode).unwrap();
        for j in 0..n {
            let xr = &x[j * cols..(j + 1) * cols];
            for r in 0..rows {
                let got = y[j * rows + r] as f64;
                let mag = reference::magnitude(q, xr, r);
                let (want, budget) = match mode {
                    Mode::Exact => (exact_ref[j * rows + r] as f64, exact_budget(cols) * mag),
                    Mode::Fast => (fast_ref[j * rows + r] as f64, fast_budget(cols) * mag),
                };
                // The reference's own f32 rounding of its result.
                let slack = budget + want.abs() * 1e-7 + 1e-30;
                assert!(
                    (got - want).abs() <= slack,
                    "{isa} {mode} {what}: y[{j},{r}] = {got}, reference {want}, budget {slack}"
                );
                if mode == Mode::Fast {
                    let exact = exact_ref[j * rows + r] as f64;
                    let bound = reference::fast_error_bound(q, xr, r) * 1.0001
                        + exact_budget(cols) * mag
                        + exact.abs() * 1e-7
                        + 1e-30;
                    assert!(
                        (got - exact).abs() <= bound,
                        "{isa} fast vs exact {what}: y[{j},{r}] = {got}, exact {exact}, bound {bound}"
                    );
                }
            }
        }
    }
}

const COLS: [usize; 14] = [1, 7, 16, 31, 32, 33, 100, 127, 128, 129, 255, 256, 300, 513];
const ROWS: [usize; 6] = [1, 2, 3, 5, 17, 33];

fn blocks() -> Vec<BlockSize> {
    let mut b: Vec<BlockSize> = [16, 32, 64, 128, 48]
        .into_iter()
        .map(|n| BlockSize::new(n).unwrap())
        .collect();
    b.push(BlockSize::Row);
    b
}

/// Every format x scale dtype, with shapes, blocks and batch sizes cycling through the lists.
fn every_format_and_dtype(isa: Isa) {
    let mut rng = Rng::new(0x6b65726e656c73);
    let blocks = blocks();
    let mut pick = |n: usize| rng.below(n as u64) as usize;
    let mut shapes = Vec::new();
    for _ in 0..Format::all().len() * ScaleDtype::ALL.len() * 3 {
        shapes.push((
            ROWS[pick(ROWS.len())],
            COLS[pick(COLS.len())],
            blocks[pick(blocks.len())],
            1 + pick(17),
        ));
    }
    let mut shapes = shapes.into_iter();
    for f in Format::all() {
        for dtype in ScaleDtype::ALL {
            for _ in 0..3 {
                let (rows, cols, block, n) = shapes.next().unwrap();
                let Some(m) = try_quantized(&f, rows, cols, block, dtype, &mut rng) else {
                    assert_eq!(dtype, ScaleDtype::E8m0, "{f} refuses {dtype}");
                    continue;
                };
                let x = rng.normal_vec(n * cols);
                let what = format!("{f} {dtype} [{rows}x{cols}] block {block} n {n}");
                check(isa, &view(&m, &f), &x, n, &what);
            }
        }
    }
}

/// Every shape x block for two formats (one with an exact int8 table, one without).
fn every_shape(isa: Isa) {
    let mut rng = Rng::new(17);
    for (k, name) in ["nf4", "e2m1"].into_iter().enumerate() {
        let f: Format = name.parse().unwrap();
        for &cols in &COLS {
            for (bi, &block) in blocks().iter().enumerate() {
                let rows = ROWS[(cols + bi + k) % ROWS.len()];
                let n = 1 + (cols + 3 * bi + k) % 17;
                let dtype = ScaleDtype::ALL[(bi + k) % 4];
                let m = quantized(&f, rows, cols, block, dtype, &mut rng);
                let x = rng.normal_vec(n * cols);
                let what = format!("{f} {dtype} [{rows}x{cols}] block {block} n {n}");
                check(isa, &view(&m, &f), &x, n, &what);
            }
        }
    }
}

/// Batches 1..=17 on a shape with several whole SIMD chunks and a ragged tail.
fn every_batch(isa: Isa) {
    let mut rng = Rng::new(99);
    let f: Format = "sf4".parse().unwrap();
    let m = quantized(
        &f,
        13,
        416,
        BlockSize::new(32).unwrap(),
        ScaleDtype::F16,
        &mut rng,
    );
    for n in 1..=17 {
        let x = rng.normal_vec(n * 416);
        check(isa, &view(&m, &f), &x, n, &format!("sf4 [13x416] n {n}"));
    }
}

/// Long rows (the budgets grow with the row length) with a ragged tail, batches 1 and 5.
fn long_rows(isa: Isa) {
    let mut rng = Rng::new(23);
    let f: Format = "nf4".parse().unwrap();
    let cols = 8192 + 64 + 7;
    for (block, dtype) in [(64, ScaleDtype::F16), (128, ScaleDtype::Bf16)] {
        let m = quantized(&f, 6, cols, BlockSize::new(block).unwrap(), dtype, &mut rng);
        for n in [1, 5] {
            let x = rng.normal_vec(n * cols);
            check(
                isa,
                &view(&m, &f),
                &x,
                n,
                &format!("nf4 [6x{cols}] block {block} n {n}"),
            );
        }
    }
}

/// The blocked GEMM (fast mode, 8 or more activation rows, blocks of a multiple of 32 or one per
/// row): every format and scale dtype, rows off the 4-row tile, columns off the 512-element
/// super-chunk, batches off the 3-row micro-kernel and past one 255-row activation panel.
fn blocked_gemm(isa: Isa) {
    let mut rng = Rng::new(0x70616e656c);
    let blocks: Vec<BlockSize> = [32, 64, 128]
        .into_iter()
        .map(|n| BlockSize::new(n).unwrap())
        .chain([BlockSize::Row])
        .collect();
    let shapes = [
        (1, 32, 8),
        (5, 100, 9),
        (6, 513, 11),
        (7, 1000, 29),
        (9, 1088, 8),
        (3, 96, 260),
    ];
    let mut k = 0;
    for f in Format::all() {
        for dtype in ScaleDtype::ALL {
            let (rows, cols, n) = shapes[k % shapes.len()];
            let block = blocks[(k / shapes.len() + k) % blocks.len()];
            k += 1;
            let Some(m) = try_quantized(&f, rows, cols, block, dtype, &mut rng) else {
                assert_eq!(dtype, ScaleDtype::E8m0, "{f} refuses {dtype}");
                continue;
            };
            let x = rng.normal_vec(n * cols);
            let what = format!("blocked {f} {dtype} [{rows}x{cols}] block {block} n {n}");
            check(isa, &view(&m, &f), &x, n, &what);
        }
    }
    // Several row tasks on two threads, each with its own tiles.
    let f: Format = "nf4".parse().unwrap();
    let m = quantized(
        &f,
        70,
        2048 + 32,
        BlockSize::new(64).unwrap(),
        ScaleDtype::F16,
        &mut rng,
    );
    let x = rng.normal_vec(40 * m.cols);
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
        .install(|| {
            check(
                isa,
                &view(&m, &f),
                &x,
                40,
                "blocked nf4 [70x2080] n 40, 2 threads",
            )
        });
}

fn f32_matches_reference(isa: Isa) {
    let mut rng = Rng::new(5);
    for (rows, cols, n) in [
        (1, 1, 1),
        (3, 7, 2),
        (17, 33, 5),
        (33, 129, 17),
        (9, 300, 8),
        (64, 1024, 3),
    ] {
        let w = rng.normal_vec(rows * cols);
        let x = rng.normal_vec(n * cols);
        let mut want = vec![0.0f32; n * rows];
        let mut got = vec![f32::NAN; n * rows];
        matmul_f32_with(Isa::Reference, &w, rows, cols, &x, n, &mut want).unwrap();
        matmul_f32_with(isa, &w, rows, cols, &x, n, &mut got).unwrap();
        for j in 0..n {
            for r in 0..rows {
                let mag: f64 = (0..cols)
                    .map(|c| (w[r * cols + c] as f64 * x[j * cols + c] as f64).abs())
                    .sum();
                let (g, e) = (got[j * rows + r] as f64, want[j * rows + r] as f64);
                assert!(
                    (g - e).abs() <= exact_budget(cols) * mag + e.abs() * 1e-7,
                    "{isa} f32 [{rows}x{cols}] n {n}: y[{j},{r}] = {g}, reference {e}"
                );
            }
        }
    }
}

/// `v` copied `off` elements into a fresh buffer: `&buf[off..]` starts off any alignment the
/// allocator gives.
fn shifted<T: Copy + Default>(v: &[T], off: usize) -> Vec<T> {
    let mut buf = vec![T::default(); off];
    buf.extend_from_slice(v);
    buf
}

/// Codes, scales, weights, activations and outputs starting at every offset within a 64-byte
/// line, so no path relies on aligned loads or stores.
fn every_alignment(isa: Isa) {
    let mut rng = Rng::new(41);
    let cases = [
        ("nf4", 32, ScaleDtype::F16),
        ("e2m1", 32, ScaleDtype::E8m0),
        ("sf4", 48, ScaleDtype::F32),
        ("int4", 64, ScaleDtype::Bf16),
    ];
    let (rows, cols, n) = (7, 300, 3);
    for (name, block, dtype) in cases {
        let f: Format = name.parse().unwrap();
        let m = quantized(
            &f,
            rows,
            cols,
            BlockSize::new(block).unwrap(),
            dtype,
            &mut rng,
        );
        let x = rng.normal_vec(n * cols);
        for off in 0..16 {
            let (c_off, s_off, y_off) = (off * 5 % 64, off * 3 % 64, off * 7 % 16);
            let codes = shifted(&m.codes, c_off);
            let scales = shifted(&m.scales, s_off);
            let xs = shifted(&x, off);
            let q = QMatrix::new(
                rows,
                cols,
                m.block,
                &codes[c_off..],
                &scales[s_off..],
                dtype,
                f.codebook().values(),
            )
            .unwrap();
            let what = format!(
                "{f} {dtype} block {block}, offsets: codes {c_off} B, scales {s_off} B, x {off}, y {y_off}"
            );
            check_at(isa, &q, &xs[off..], n, y_off, &what);
        }
    }
    // The f32 path.
    let w = rng.normal_vec(rows * cols);
    let x = rng.normal_vec(n * cols);
    let mut want = vec![0.0f32; n * rows];
    matmul_f32_with(Isa::Reference, &w, rows, cols, &x, n, &mut want).unwrap();
    for off in 0..16 {
        let (ws, xs) = (shifted(&w, off), shifted(&x, (off * 3) % 16));
        let y_off = off * 7 % 16;
        let mut got = vec![f32::NAN; y_off + n * rows];
        matmul_f32_with(
            isa,
            &ws[off..],
            rows,
            cols,
            &xs[(off * 3) % 16..],
            n,
            &mut got[y_off..],
        )
        .unwrap();
        for j in 0..n {
            for r in 0..rows {
                let mag: f64 = (0..cols)
                    .map(|c| (w[r * cols + c] as f64 * x[j * cols + c] as f64).abs())
                    .sum();
                let (g, e) = (got[y_off + j * rows + r] as f64, want[j * rows + r] as f64);
                assert!(
                    (g - e).abs() <= exact_budget(cols) * mag + e.abs() * 1e-7,
                    "{isa} f32 offsets w {off}, y {y_off}: y[{j},{r}] = {g}, reference {e}"
                );
            }
        }
    }
}

/// From the CPU's own feature flags: every path the CPU has is available (so its tests above
/// run), none it lacks is, and `matmul` uses the fastest unless `TQUANT_ISA` names another.
fn dispatcher_uses_every_isa_the_cpu_has() {
    #[cfg(target_arch = "x86_64")]
    let (avx2, avx512) = {
        let avx2 = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c");
        let avx512 = avx2
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni");
        (avx2, avx512)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (avx2, avx512) = (false, false);
    assert_eq!(
        Isa::Avx2.is_available(),
        avx2,
        "the CPU's AVX2 + FMA + F16C"
    );
    assert_eq!(
        Isa::Avx512.is_available(),
        avx512,
        "the CPU's AVX-512 F + BW + VL + VNNI"
    );
    let best = if avx512 {
        Isa::Avx512
    } else if avx2 {
        Isa::Avx2
    } else {
        Isa::Scalar
    };
    assert_eq!(Isa::available().last(), Some(&best));
    if std::env::var_os("TQUANT_ISA").is_none() {
        assert_eq!(Isa::detect(), best);
    }
}

fn fast_mode_rms_error_is_within_budget_on_gaussian_data() {
    let mut rng = Rng::new(3);
    let (rows, cols, n) = (64, 1024, 4);
    for name in ["nf4", "sf4", "int4", "e2m1", "apot4"] {
        let f: Format = name.parse().unwrap();
        let w = rng.normal_vec(rows * cols);
        let m = BlockQuantizer {
            block: BlockSize::new(64).unwrap(),
            scale_dtype: ScaleDtype::F16,
        }
        .quantize(f.codebook(), &w, rows, cols)
        .unwrap();
        let q = view(&m, &f);
        let x = rng.normal_vec(n * cols);
        let mut exact = vec![0.0f32; n * rows];
        let mut fast = vec![0.0f32; n * rows];
        matmul_with(Isa::detect(), &q, &x, n, &mut exact, Mode::Exact).unwrap();
        matmul_with(Isa::detect(), &q, &x, n, &mut fast, Mode::Fast).unwrap();
        let err: f64 = exact
            .iter()
            .zip(&fast)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let norm: f64 = exact.iter().map(|a| (*a as f64).powi(2)).sum();
        let rel = (err / norm).sqrt();
        eprintln!("{name}: fast-mode relative RMS error {rel:.5}");
        assert!(rel <= FAST_RMS_BUDGET, "{name}: {rel}");
        assert!(
            rel > 0.0,
            "{name}: the fast mode should quantize the activations"
        );
    }
}

fn threads_give_the_same_result_as_one_thread() {
    let mut rng = Rng::new(11);
    let f: Format = "nf4".parse().unwrap();
    let m = quantized(
        &f,
        300,
        1000,
        BlockSize::new(64).unwrap(),
        ScaleDtype::Bf16,
        &mut rng,
    );
    let q = view(&m, &f);
    // 40 activation rows: the blocked GEMM in fast mode.
    for n in [1, 5, 40] {
        let x = rng.normal_vec(n * 1000);
        for mode in Mode::ALL {
            let mut one = vec![0.0f32; n * 300];
            let mut two = vec![0.0f32; n * 300];
            let pool = |t| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap()
            };
            pool(1).install(|| tquant_kernels::matmul(&q, &x, n, &mut one, mode).unwrap());
            pool(2).install(|| tquant_kernels::matmul(&q, &x, n, &mut two, mode).unwrap());
            assert_eq!(one, two, "{mode} n {n}");
        }
    }
}

fn wrong_lengths_are_errors_not_panics() {
    let f: Format = "nf4".parse().unwrap();
    let m = quantized(
        &f,
        4,
        40,
        BlockSize::new(16).unwrap(),
        ScaleDtype::F32,
        &mut Rng::new(1),
    );
    let q = view(&m, &f);
    let mut y = vec![0.0f32; 8];
    for isa in Isa::available() {
        for mode in Mode::ALL {
            let e = matmul_with(isa, &q, &[0.0; 79], 2, &mut y, mode).unwrap_err();
            assert!(matches!(e, KernelError::Length { want: 80, .. }), "{e}");
            let e = matmul_with(isa, &q, &[0.0; 80], 2, &mut y[..7], mode).unwrap_err();
            assert!(matches!(e, KernelError::Length { want: 8, .. }), "{e}");
        }
        let e = matmul_f32_with(isa, &[0.0; 159], 4, 40, &[0.0; 40], 1, &mut y[..4]).unwrap_err();
        assert!(matches!(e, KernelError::Length { want: 160, .. }), "{e}");
    }
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        let e = matmul_with(isa, &q, &[0.0; 80], 2, &mut y, Mode::Exact).unwrap_err();
        assert!(matches!(e, KernelError::Unavailable { .. }));
    }
}

fn empty_shapes_are_fine() {
    let q = QMatrix::new(0, 10, 16, &[], &[], ScaleDtype::F32, &[1.0, -1.0]).unwrap();
    for isa in Isa::available() {
        matmul_with(isa, &q, &[0.0; 20], 2, &mut [], Mode::Fast).unwrap();
    }
    let q = QMatrix::new(3, 0, 16, &[], &[], ScaleDtype::F32, &[1.0, -1.0]).unwrap();
    for isa in Isa::available() {
        let mut y = [f32::NAN; 6];
        matmul_with(isa, &q, &[], 2, &mut y, Mode::Exact).unwrap();
        assert_eq!(y, [0.0; 6], "{isa}");
    }
}

/// q8_0 weights (ggml's Q8_0) against their reference in both modes: ragged columns (a short
/// last block), every tile edge of rows and batches, inputs off any alignment, a row long
/// enough to be split over threads, and the fast mode's distance from exact arithmetic.
fn q8_0_matches_reference(isa: Isa) {
    use tquant_kernels::int8::{self, Q8Matrix as Q8View};
    let mut rng = Rng::new(77);
    let check = |rows: usize, cols: usize, n: usize, off: usize, rng: &mut Rng| {
        let mut w = rng.student_t_vec(rows * cols, 5.0);
        for (i, v) in w.iter_mut().enumerate() {
            *v *= 0.02 * (1 + (i / cols.max(1)) % 5) as f32;
        }
        let m = tquant_formats::q8_0::Q8Matrix::quantize(&w, rows, cols).unwrap();
        let (codes, scales) = (shifted(&m.codes, off), shifted(&m.scales, off));
        let q = Q8View::new(rows, cols, &codes[off..], &scales[off..]).unwrap();
        let xbuf = shifted(&rng.normal_vec(n * cols), off);
        let x = &xbuf[off..];
        let deq = m.dequantize();
        for mode in Mode::ALL {
            let mut want = vec![0.0f32; n * rows];
            int8::reference(&q, x, n, &mut want, mode);
            let mut buf = vec![f32::NAN; off + n * rows];
            tquant_kernels::matmul_q8_0_with(isa, &q, x, n, &mut buf[off..], mode).unwrap();
            let got = &buf[off..];
            let budget = match mode {
                Mode::Exact => exact_budget(cols),
                Mode::Fast => fast_budget(cols),
            };
            for j in 0..n {
                for r in 0..rows {
                    let mag: f64 = (0..cols)
                        .map(|c| (deq[r * cols + c] as f64 * x[j * cols + c] as f64).abs())
                        .sum();
                    let i = j * rows + r;
                    assert!(
                        ((got[i] - want[i]) as f64).abs() <= budget * mag * 1.05 + 1e-30,
                        "{isa} {mode} q8_0 [{rows}, {cols}] x {n} (offset {off}) output ({j}, {r}): \
                         {} vs reference {}",
                        got[i],
                        want[i]
                    );
                }
            }
        }
        // Fast against exact: int8 activations move each product by half a step of |x|'s
        // block maximum at most.
        let mut exact = vec![0.0f32; n * rows];
        let mut fast = vec![0.0f32; n * rows];
        int8::reference(&q, x, n, &mut exact, Mode::Exact);
        tquant_kernels::matmul_q8_0_with(isa, &q, x, n, &mut fast, Mode::Fast).unwrap();
        for j in 0..n {
            for r in 0..rows {
                let bound: f64 = (0..cols)
                    .map(|c| {
                        let b0 = c / 32 * 32;
                        let amax = x[j * cols + b0..j * cols + (b0 + 32).min(cols)]
                            .iter()
                            .fold(0.0f32, |a, v| a.max(v.abs()));
                        (deq[r * cols + c] as f64).abs() * (amax as f64 / 127.0) * 0.5
                    })
                    .sum::<f64>()
                    * 1.01
                    + 1e-6;
                let i = j * rows + r;
                assert!(
                    ((fast[i] - exact[i]) as f64).abs() <= bound,
                    "{isa} q8_0 fast vs exact ({j}, {r}): {} vs {}",
                    fast[i],
                    exact[i]
                );
            }
        }
    };
    for cols in [
        1, 7, 8, 15, 16, 17, 31, 32, 33, 47, 64, 65, 96, 100, 127, 128, 129, 200, 300, 511, 512,
        513, 545, 1000, 1057,
    ] {
        check(1 + cols % 9, cols, 1 + cols % 5, 0, &mut rng);
    }
    for rows in 1..=9 {
        for n in 1..=9 {
            check(rows, 45, n, 0, &mut rng);
        }
    }
    for off in [1, 3, 17, 33] {
        check(5, 77, 3, off, &mut rng);
    }
    // Above PARALLEL_MIN_WORK: rows split over threads.
    check(67, 4099, 1, 0, &mut rng);
    check(37, 1031, 9, 0, &mut rng);
}

/// The oracle's weights are each row's table value times the block scale, element by element,
/// and its fast mode uses each row's int8 image and step.
fn reference_reads_each_rows_table() {
    let mut rng = Rng::new(41);
    let f: Format = "nf4".parse().unwrap();
    let (rows, cols) = (7, 45);
    let m = quantized(
        &f,
        rows,
        cols,
        BlockSize::new(16).unwrap(),
        ScaleDtype::F32,
        &mut rng,
    );
    let values = row_tables::random_tables(rows, &mut rng);
    let tables = tquant_kernels::RowTables::new(&values, 16).unwrap();
    let q = QMatrix::from_quantized_with_row_tables(&m, tables.view()).unwrap();
    for r in 0..rows {
        let t = &values[r * 16..(r + 1) * 16];
        for c in 0..cols {
            let code = tquant_formats::pack::code_at(&m.codes[r * cols.div_ceil(2)..], c) as usize;
            let s = f32::from_le_bytes(m.scales[(r * 3 + c / 16) * 4..][..4].try_into().unwrap());
            assert_eq!(reference::weight(&q, r, c), t[code] * s, "({r}, {c})");
        }
        assert_eq!(q.row_table(r)[..], *t);
        let (qi, step) = (q.row_table_i8(r), q.row_table_step(r));
        for (v, &i) in t.iter().zip(qi) {
            assert!(
                (v - i as f32 * step).abs() <= 0.5 * step * (1.0 + 1e-5) + 1e-7,
                "row {r}"
            );
        }
    }
}

/// Row tables of the wrong size or with a non-finite value, or a view with a table count other
/// than its rows: errors, not panics.
fn bad_row_tables_are_errors() {
    use tquant_kernels::RowTables;
    assert!(matches!(
        RowTables::new(&[1.0; 34], 17),
        Err(KernelError::TableSize(17))
    ));
    assert!(matches!(
        RowTables::new(&[1.0; 34], 0),
        Err(KernelError::TableSize(0))
    ));
    assert!(matches!(
        RowTables::new(&[1.0; 33], 16),
        Err(KernelError::Length { .. })
    ));
    let mut v = vec![1.0f32; 32];
    v[18] = f32::INFINITY;
    assert!(matches!(
        RowTables::new(&v, 16),
        Err(KernelError::TableValue { index: 2, .. })
    ));
    let t = RowTables::new(&[0.5f32; 48], 16).unwrap();
    assert_eq!(t.rows(), 3);
    assert!(t.slice(2, 2).is_none());
    let (codes, scales) = ([0u8; 4], [0u8; 8]);
    let e = QMatrix::with_row_tables(2, 3, 2, &codes, &scales, ScaleDtype::F16, t.view());
    assert!(matches!(e, Err(KernelError::Length { .. })), "{e:?}");
    let q = QMatrix::with_row_tables(
        2,
        3,
        2,
        &codes,
        &scales,
        ScaleDtype::F16,
        t.slice(1, 2).unwrap(),
    )
    .unwrap();
    assert!(q.has_row_tables() && q.row_table(1)[0] == 0.5);
}

/// A check run on each path.
type IsaCase = fn(Isa);

fn main() {
    let args = Arguments::from_args();
    let per_isa: [(&str, IsaCase); 15] = [
        (
            "row_tables_match_reference",
            row_tables::row_tables_match_reference,
        ),
        (
            "row_tables_equal_to_the_shared_table_give_its_result",
            row_tables::row_tables_equal_to_the_shared_table_give_its_result,
        ),
        ("encoder_matches_portable", encode::encoder_matches_portable),
        (
            "encoded_matrix_matches_portable",
            encode::encoded_matrix_matches_portable,
        ),
        ("screen_matches_reference", screen::screen_matches_reference),
        (
            "screen_errors_are_within_tolerance",
            screen::screen_errors_are_within_tolerance,
        ),
        (
            "screened_matrix_matches_portable",
            screen::screened_matrix_matches_portable,
        ),
        ("matches_reference_blocked_gemm", blocked_gemm),
        ("matches_reference_every_format", every_format_and_dtype),
        ("matches_reference_every_shape", every_shape),
        ("matches_reference_every_batch", every_batch),
        ("matches_reference_on_long_rows", long_rows),
        ("f32_matches_reference", f32_matches_reference),
        ("matches_reference_at_every_alignment", every_alignment),
        ("q8_0_matches_reference", q8_0_matches_reference),
    ];
    let mut trials = Vec::new();
    for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512] {
        for (name, case) in per_isa {
            trials.push(Trial::ignorable_test(format!("{isa}_{name}"), move || {
                if !isa.is_available() {
                    return Ok(Completion::ignored_with(format!(
                        "not run: this CPU lacks {isa}"
                    )));
                }
                case(isa);
                Ok::<_, Failed>(Completion::Completed)
            }));
        }
    }
    let once: [(&str, fn()); 7] = [
        (
            "reference_reads_each_rows_table",
            reference_reads_each_rows_table,
        ),
        ("bad_row_tables_are_errors", bad_row_tables_are_errors),
        (
            "dispatcher_uses_every_isa_the_cpu_has",
            dispatcher_uses_every_isa_the_cpu_has,
        ),
        (
            "fast_mode_rms_error_is_within_budget_on_gaussian_data",
            fast_mode_rms_error_is_within_budget_on_gaussian_data,
        ),
        (
            "threads_give_the_same_result_as_one_thread",
            threads_give_the_same_result_as_one_thread,
        ),
        (
            "wrong_lengths_are_errors_not_panics",
            wrong_lengths_are_errors_not_panics,
        ),
        ("empty_shapes_are_fine", empty_shapes_are_fine),
    ];
    for (name, test) in once {
        trials.push(Trial::test(name, move || {
            test();
            Ok(())
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}
