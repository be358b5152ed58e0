//! The fuzz targets' entry points, shared with the stable corpus-replay test
//! (`tests/hostile_corpus.rs` includes this file), so CI replays the corpus without nightly.
//!
//! Each input is written as `model.safetensors` into a fresh directory and opened through the
//! same path every command takes (`Checkpoint::open`: read, validate, map), so the fuzzer
//! exercises exactly the code users run. Any result is fine except a panic, an error that does
//! not name the file, or a successful read that breaks the reader's promises.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use tquant_convert::header::{dtype_bytes, parse_file_bytes};
use tquant_convert::inspect::{inspect, verify};
use tquant_convert::{Checkpoint, ConvertError, Weight};
use tquant_kernels::{matmul, Mode, QMatrix};

/// A directory holding one input as `model.safetensors`, removed on drop.
pub struct Case {
    pub dir: PathBuf,
    pub file: PathBuf,
}

impl Case {
    pub fn new(data: &[u8]) -> Case {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tquant-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("model.safetensors");
        std::fs::write(&file, data).expect("write input");
        Case { dir, file }
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every error must say which file it is about.
fn check_error(err: &ConvertError, dir: &Path) {
    let text = err.to_string();
    assert!(
        text.contains(&*dir.to_string_lossy()),
        "error does not name the file: {text}"
    );
}

/// Opens the input; checks that the in-memory parser and the file reader agree.
fn open(data: &[u8], case: &Case) -> Option<Checkpoint> {
    let parsed = parse_file_bytes(data, &case.file);
    let opened = Checkpoint::open(&case.dir);
    if let Err(e) = &parsed {
        check_error(e, &case.dir);
    }
    match (parsed, opened) {
        (Err(_), Ok(_)) => panic!("the file reader accepted a file the parser rejects"),
        (Ok(_), Err(e)) | (Err(_), Err(e)) => {
            check_error(&e, &case.dir);
            None
        }
        (Ok(header), Ok(ckpt)) => {
            let shard = &ckpt.shards()[0];
            assert_eq!(header.entries, shard.header.entries);
            assert_eq!(header.metadata, shard.header.metadata);
            Some(ckpt)
        }
    }
}

/// A logical tensor of an opened checkpoint: readable, unless a stored scale is not finite
/// (refused when the data is first read, with that reason).
fn readable<'a>(ckpt: &'a Checkpoint, name: &str) -> Option<Weight<'a>> {
    match ckpt.get(name) {
        Ok(w) => Some(w),
        Err(ConvertError::Tensor { reason, .. }) if reason.starts_with("stored scale") => None,
        Err(e) => panic!("a logical tensor is readable: {e}"),
    }
}

/// The safetensors target: every stored tensor lies inside the file with its declared size,
/// and float tensors convert to exactly `numel` values.
pub fn safetensors_reader(data: &[u8]) {
    let case = Case::new(data);
    let Some(ckpt) = open(data, &case) else {
        return;
    };
    let names: Vec<String> = ckpt.raw_names().map(str::to_string).collect();
    for name in &names {
        let t = ckpt.raw(name).expect("a listed tensor is readable");
        let numel = t.shape.iter().product::<usize>();
        let elem = dtype_bytes(t.dtype).expect("validated dtype");
        assert_eq!(t.bytes.len(), numel * elem, "{name}");
        if let Ok(v) = t.to_f32() {
            assert_eq!(v.len(), numel, "{name}");
        }
    }
    for name in ckpt.names() {
        readable(&ckpt, name);
    }
    inspect(&ckpt).expect("inspect reads only validated headers");
}

/// The quantized-checkpoint target: every logical tensor as a dense or quantized view; every
/// quantized matrix dequantized and multiplied by the kernels.
pub fn quantized_reader(data: &[u8]) {
    let case = Case::new(data);
    let Some(ckpt) = open(data, &case) else {
        return;
    };
    let names: Vec<String> = ckpt.names().map(str::to_string).collect();
    for name in &names {
        let Some(weight) = readable(&ckpt, name) else {
            continue;
        };
        match weight {
            Weight::Dense(t) => {
                let _ = t.to_f32();
            }
            Weight::Quantized(q) => {
                let info = q.info;
                assert_eq!(ckpt.quant_info(name), Some(info));
                assert_eq!(q.codes.len(), info.code_bytes(), "{name}");
                assert_eq!(q.scales.len(), info.view_scale_bytes(), "{name}");
                if let Ok(all) = q.dequantize() {
                    assert_eq!(all.len(), info.numel(), "{name}");
                }
                for e in 0..q.experts() {
                    let _ = q.format(e);
                    assert_eq!(q.codebook(e).len(), 1 << info.bits, "{name}");
                    if let Ok(m) = q.dequantize_matrix(e) {
                        assert_eq!(m.len(), info.rows() * info.cols(), "{name}");
                    }
                    let Some(m) = q.matrix(e) else { continue };
                    let qm = QMatrix::from_parts(m)
                        .expect("the reader hands the kernels only valid matrices");
                    let x = vec![1.0f32; m.cols];
                    let mut y = vec![0.0f32; m.rows];
                    for mode in [Mode::Exact, Mode::Fast] {
                        matmul(&qm, &x, 1, &mut y, mode).expect("lengths match");
                    }
                }
            }
        }
    }
    inspect(&ckpt).expect("inspect reads only validated headers");
    // A checkpoint compared with itself: errors (bad codes) are fine, panics are not.
    let _ = verify(&ckpt, &ckpt);
}
