//! A table per row (`QMatrix::with_row_tables`) on one path: every shape x block x scale dtype
//! against the reference (which reads each row's table), batches that take the row tiles and the
//! blocked GEMM; and a per-row view whose rows all hold one table gives, bit for bit, what the
//! shared table's view gives.

use super::{blocks, check, quantized, COLS, ROWS};
use tquant_formats::sample::Rng;
use tquant_formats::{BlockSize, Format, ScaleDtype};
use tquant_kernels::{matmul_with, Isa, Mode, QMatrix, RowTables};

/// `rows` tables of 16 values, different per row: sorted normals (an inexact int8 image), small
/// integers times a step (exact), and now and then a catalog table; row magnitudes vary.
pub fn random_tables(rows: usize, rng: &mut Rng) -> Vec<f32> {
    let nf4: Format = "nf4".parse().unwrap();
    let mut out = Vec::with_capacity(rows * 16);
    for r in 0..rows {
        let mut t: Vec<f32> = match r % 3 {
            0 => rng.normal_vec(16),
            1 => (0..16)
                .map(|_| (rng.below(31) as f32 - 15.0) * 0.125)
                .collect(),
            _ => nf4.codebook().values().to_vec(),
        };
        t.sort_by(f32::total_cmp);
        let mag = 0.5 + (r % 7) as f32 * 0.3;
        out.extend(t.iter().map(|v| v * mag));
    }
    out
}

/// Every column count x block, rows and scale dtypes cycling, batches 1..=17 (so both the row
/// tiles and, in fast mode from 8 rows, the blocked GEMM run).
pub fn row_tables_match_reference(isa: Isa) {
    let mut rng = Rng::new(0x726f77);
    let f: Format = "nf4".parse().unwrap();
    for &cols in &COLS {
        for (bi, &block) in blocks().iter().enumerate() {
            let rows = ROWS[(cols + bi) % ROWS.len()];
            let n = 1 + (cols + 5 * bi) % 17;
            let dtype = ScaleDtype::ALL[bi % 4];
            let m = quantized(&f, rows, cols, block, dtype, &mut rng);
            let tables = RowTables::new(&random_tables(rows, &mut rng), 16).unwrap();
            let q = QMatrix::from_quantized_with_row_tables(&m, tables.view()).unwrap();
            let x = rng.normal_vec(n * cols);
            let what = format!("row tables {dtype} [{rows}x{cols}] block {block} n {n}");
            check(isa, &q, &x, n, &what);
        }
    }
    // A long row, GEMV and blocked GEMM, on two threads.
    let (rows, cols) = (37, 4096 + 64 + 3);
    let m = quantized(
        &f,
        rows,
        cols,
        BlockSize::new(64).unwrap(),
        ScaleDtype::F16,
        &mut rng,
    );
    let tables = RowTables::new(&random_tables(rows, &mut rng), 16).unwrap();
    let q = QMatrix::from_quantized_with_row_tables(&m, tables.view()).unwrap();
    for n in [1, 3, 12] {
        let x = rng.normal_vec(n * cols);
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
            .install(|| check(isa, &q, &x, n, &format!("row tables [{rows}x{cols}] n {n}")));
    }
}

/// Row tables that all equal the shared table: the same outputs bit for bit, in both modes, for
/// GEMV, small GEMM and blocked GEMM.
pub fn row_tables_equal_to_the_shared_table_give_its_result(isa: Isa) {
    let mut rng = Rng::new(0x73686172);
    for name in ["nf4", "e2m1", "sf4_opt"] {
        let f: Format = name.parse().unwrap();
        for (rows, cols, block) in [(9, 300, 32), (6, 1088, 64), (5, 256, 16), (3, 100, 100)] {
            let bs = BlockSize::new(block).unwrap();
            let m = quantized(&f, rows, cols, bs, ScaleDtype::F16, &mut rng);
            let t = f.codebook().values();
            let shared = QMatrix::from_quantized(&m, t).unwrap();
            let per_row: Vec<f32> = (0..rows).flat_map(|_| t.iter().copied()).collect();
            let tables = RowTables::new(&per_row, t.len()).unwrap();
            let q = QMatrix::from_quantized_with_row_tables(&m, tables.view()).unwrap();
            for n in [1, 2, 5, 9] {
                let x = rng.normal_vec(n * cols);
                for mode in Mode::ALL {
                    let (mut a, mut b) = (vec![0.0f32; n * rows], vec![0.0f32; n * rows]);
                    matmul_with(isa, &shared, &x, n, &mut a, mode).unwrap();
                    matmul_with(isa, &q, &x, n, &mut b, mode).unwrap();
                    let (a, b): (Vec<u32>, Vec<u32>) = (
                        a.iter().map(|v| v.to_bits()).collect(),
                        b.iter().map(|v| v.to_bits()).collect(),
                    );
                    assert_eq!(
                        a, b,
                        "{isa} {mode} {name} [{rows}x{cols}] block {block} n {n}"
                    );
                }
            }
        }
    }
}
