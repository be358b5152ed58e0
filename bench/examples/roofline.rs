//! Decode against the memory roofline on the DeepSeek-V2-Lite shape cut to 6 layers (generated
//! weights, no download): prefill and decode tokens/s, the read bandwidth measured in the same
//! rounds, the bytes of weights one decoded token reads, and decode as a share of the roofline
//! (bandwidth / bytes per token), per thread count. See `tquant_bench::roofline`.
//!
//! `cargo run --release -p tquant-bench --example roofline -- [--threads 1,2] [--format nf4]
//! [--block 32] [--head q8_0|bf16] [--layers 6] [--vocab 102400] [--prefill 512] [--decode 64]
//! [--rounds 3] [--read-mib 256] [--mode exact|fast] [--json]`

use std::process::ExitCode;
use tquant_bench::roofline::{run, Spec};

fn parse(args: &[String]) -> Result<(Spec, bool), String> {
    let mut spec = Spec::default();
    let mut json = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--json" {
            json = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: `{v}` is not a whole number"))
        };
        match flag.as_str() {
            "--threads" => {
                spec.threads = value
                    .split(',')
                    .map(|t| num(t.trim()))
                    .collect::<Result<_, _>>()?
            }
            "--format" => {
                spec.format = value
                    .parse()
                    .map_err(|e| format!("--format {value}: {e}"))?
            }
            "--block" => spec.block = num(value)?,
            "--mode" => spec.mode = value.parse().map_err(|e| format!("--mode {value}: {e}"))?,
            "--head" => spec.head = value.parse().map_err(|e| format!("--head: {e}"))?,
            "--layers" => spec.layers = num(value)?,
            "--vocab" => spec.vocab = num(value)?,
            "--prefill" => spec.prefill = num(value)?,
            "--decode" => spec.decode = num(value)?,
            "--rounds" => spec.rounds = num(value)?,
            "--read-mib" => spec.read_mib = num(value)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok((spec, json))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (spec, json) = match parse(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&spec) {
        Ok(report) if json => println!("{}", report.json()),
        Ok(report) => print!("{}", report.text()),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
