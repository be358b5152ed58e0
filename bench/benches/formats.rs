//! criterion benches of the format layer: block quantization (encode) and dequantization
//! (decode) of 1M values, blocks of 64, f32 scales.
//!
//! - `formats/<format>`: one group per catalog format (`Format::all()`, so a new format is
//!   benched without editing this file). Ids: `encode/1024x1024` (`BlockQuantizer::quantize`:
//!   absmax, divide, threshold count, pack), `decode/1024x1024` (`QuantizedMatrix::dequantize`),
//!   and the baseline `encode-one-at-a-time/1024x1024` (the same codes from `Codebook::encode`
//!   element by element, what the batch encoder replaces).
//! - `formats-search/<format>`: `ScaleRule::Search` (41 candidate scales per block, 82 for
//!   tables that are not symmetric: nf4, sf4) for a few formats: `encode` (the whole
//!   quantization, portable screen), `encode-simd` (the same through `tquant_kernels::ScaleScreen`,
//!   as the converter runs it), `scales` (the scale choice alone, portable screen),
//!   `scales-simd` (the same on the best path of this CPU) and the baseline `scales-reference`
//!   (`searched_block_scale_reference`: every candidate encoded).
//! - `layouts/<layout>`: bitsandbytes NF4 and Hugging Face MXFP4, both directions.
//!
//! Throughput is in elements (weights) per second. Inputs: seeded N(0, 1) values.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use tquant_formats::layouts::{bnb_nf4_quantize, mxfp4_quantize, MxScaleRule};
use tquant_formats::sample::Rng;
use tquant_formats::{BlockQuantizer, BlockSize, Format, ScaleDtype, ScaleRule};
use tquant_kernels::ScaleScreen;

const ROWS: usize = 1024;
const COLS: usize = 1024;
const BLOCK: usize = 64;

fn quantizer() -> BlockQuantizer {
    BlockQuantizer {
        block: BlockSize::new(BLOCK).unwrap(),
        scale_dtype: ScaleDtype::F32,
    }
}

fn benches(c: &mut Criterion) {
    let w = Rng::new(42).normal_vec(ROWS * COLS);
    let id = format!("{ROWS}x{COLS}");
    let q = quantizer();
    for f in Format::all() {
        let cb = f.codebook();
        let mut g = c.benchmark_group(format!("formats/{f}"));
        g.throughput(Throughput::Elements((ROWS * COLS) as u64));
        g.bench_function(BenchmarkId::new("encode", &id), |b| {
            b.iter(|| q.quantize(cb, black_box(&w), ROWS, COLS).unwrap())
        });
        let m = q.quantize(cb, &w, ROWS, COLS).unwrap();
        g.bench_function(BenchmarkId::new("decode", &id), |b| {
            b.iter(|| black_box(&m).dequantize(cb))
        });
        let mut codes = vec![0u8; ROWS * COLS];
        g.bench_function(BenchmarkId::new("encode-one-at-a-time", &id), |b| {
            b.iter(|| {
                for (block, out) in black_box(&w).chunks(BLOCK).zip(codes.chunks_mut(BLOCK)) {
                    let s = q.block_scale(cb, block);
                    for (o, &x) in out.iter_mut().zip(block) {
                        *o = cb.encode(x / s);
                    }
                }
                black_box(&codes);
            })
        });
        g.finish();
    }

    for name in ["nf4", "sf4", "e2m1"] {
        let f: Format = name.parse().unwrap();
        let cb = f.codebook();
        let mut g = c.benchmark_group(format!("formats-search/{f}"));
        g.throughput(Throughput::Elements((ROWS * COLS) as u64));
        g.sample_size(10);
        g.bench_function(BenchmarkId::new("encode", &id), |b| {
            b.iter(|| {
                q.quantize_with(cb, black_box(&w), ROWS, COLS, ScaleRule::Search)
                    .unwrap()
            })
        });
        let simd = ScaleScreen::detect();
        g.bench_function(BenchmarkId::new("encode-simd", &id), |b| {
            b.iter(|| {
                q.quantize_with_screen(cb, black_box(&w), ROWS, COLS, ScaleRule::Search, &simd)
                    .unwrap()
            })
        });
        // The scale choice alone, and the same with the reference search (every candidate
        // encoded), which the screened search replaces.
        g.bench_function(BenchmarkId::new("scales-simd", &id), |b| {
            b.iter(|| {
                black_box(&w)
                    .chunks(BLOCK)
                    .map(|blk| q.searched_block_scale_with(cb, blk, &simd))
                    .sum::<f32>()
            })
        });
        g.bench_function(BenchmarkId::new("scales", &id), |b| {
            b.iter(|| {
                black_box(&w)
                    .chunks(BLOCK)
                    .map(|blk| q.searched_block_scale(cb, blk))
                    .sum::<f32>()
            })
        });
        g.bench_function(BenchmarkId::new("scales-reference", &id), |b| {
            b.iter(|| {
                black_box(&w)
                    .chunks(BLOCK)
                    .map(|blk| q.searched_block_scale_reference(cb, blk))
                    .sum::<f32>()
            })
        });
        g.finish();
    }

    let mut g = c.benchmark_group("layouts/bnb_nf4");
    g.throughput(Throughput::Elements((ROWS * COLS) as u64));
    g.bench_function(BenchmarkId::new("encode", &id), |b| {
        b.iter(|| bnb_nf4_quantize(black_box(&w), 64).unwrap())
    });
    let bnb = bnb_nf4_quantize(&w, 64).unwrap();
    g.bench_function(BenchmarkId::new("decode", &id), |b| {
        b.iter(|| black_box(&bnb).dequantize().unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("layouts/mxfp4");
    g.throughput(Throughput::Elements((ROWS * COLS) as u64));
    g.bench_function(BenchmarkId::new("encode", &id), |b| {
        b.iter(|| mxfp4_quantize(black_box(&w), ROWS, COLS, MxScaleRule::Floor).unwrap())
    });
    let mx = mxfp4_quantize(&w, ROWS, COLS, MxScaleRule::Floor).unwrap();
    g.bench_function(BenchmarkId::new("decode", &id), |b| {
        b.iter(|| black_box(&mx).dequantize().unwrap())
    });
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
