//! What `tquant bench` prints of a kernel benchmark: a table of every path against the f32
//! product and the read bandwidth, or one JSON object.

use crate::kernel::{machine_cache_note, Measure, Results, Spec, Weights};
use serde_json::{json, Value};
use std::fmt::Write as _;
use tquant_kernels::{Isa, Mode};

fn measure_json(r: &Measure) -> Value {
    json!({
        "seconds": r.seconds,
        "weight_gbps": r.weight_gbps,
        "gflops": r.gflops,
    })
}

fn rows_json(rows: &[(Isa, Mode, Measure)]) -> Vec<Value> {
    rows.iter()
        .map(|(isa, mode, r)| {
            let mut v = measure_json(r);
            v["isa"] = isa.name().into();
            v["mode"] = mode.name().into();
            v
        })
        .collect()
}

impl Results {
    /// `{results: [{isa, mode, seconds, weight_gbps, gflops}], bf16: [...], f32: {...},
    /// read_gbps}`.
    pub fn to_json(&self) -> Value {
        json!({
            "results": rows_json(&self.kernels), "bf16": rows_json(&self.bf16),
            "f32": measure_json(&self.f32), "read_gbps": self.read_gbps
        })
    }

    /// The table for the benchmark `spec` described: a header line, the read bandwidth, one
    /// line per kernel path, bf16 path and the f32 product (time, weight GB/s, GFLOP/s, speed
    /// against f32, share of the read bandwidth), then a note on the caches.
    pub fn table(&self, spec: &Spec) -> String {
        let (rows, cols, n, reps) = (spec.rows, spec.cols, spec.n, spec.reps);
        let (f32, read_gbps) = (self.f32, self.read_gbps);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} [{rows} x {cols}] x {n} activation rows, {} block {} {} ({:.3} bits/weight), {} thread(s), median of {reps}",
            if n == 1 { "gemv" } else { "gemm" },
            spec.format,
            self.block,
            match spec.format {
                Weights::Q8_0 => "f16".to_string(),
                Weights::Table(_) => spec.quantizer.scale_dtype.to_string(),
            },
            self.bits_per_weight,
            self.threads
        );
        let _ = writeln!(
            out,
            "read bandwidth ({} MiB sum): {read_gbps:.1} GB/s",
            spec.read_mib
        );
        let _ = writeln!(
            out,
            "{:<8} {:<9} {:>10} {:>9} {:>9} {:>8} {:>9}",
            "isa", "mode", "time", "GB/s", "GFLOP/s", "vs f32", "% read"
        );
        let mut line = |isa: &str, mode: &str, r: &Measure| {
            let pct = 100.0 * r.weight_gbps / read_gbps;
            let _ = writeln!(
                out,
                "{isa:<8} {mode:<9} {:>8.3}ms {:>9.2} {:>9.1} {:>7.2}x {:>8.1}%",
                r.seconds * 1e3,
                r.weight_gbps,
                r.gflops,
                f32.seconds / r.seconds,
                pct
            );
        };
        for (isa, mode, r) in &self.kernels {
            line(isa.name(), mode.name(), r);
        }
        for (isa, mode, r) in &self.bf16 {
            let name = match mode {
                Mode::Exact => "bf16",
                Mode::Fast => "bf16-fast",
            };
            line(isa.name(), name, r);
        }
        line(Isa::detect().name(), "f32", &f32);
        out.push_str(&machine_cache_note(self, 4 * rows * cols));
        out
    }
}
