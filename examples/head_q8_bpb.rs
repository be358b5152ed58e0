//! Bits per byte of a checkpoint with its output head and token embeddings as stored (bf16)
//! and with both quantized to q8_0 (ggml's Q8_0) as they load, everything else unchanged: what
//! an 8-bit head costs in accuracy.
//!
//! `cargo run --release --example head_q8_bpb -- CHECKPOINT TEXT [WINDOW] [MAX_BYTES]`
//! (a byte-vocabulary model such as examples/tiny-lite or a conversion of it; one token a byte).
use std::path::PathBuf;
use tquant::formats::q8_0::Q8Matrix;
use tquant::model::eval::score_windows;
use tquant::model::{
    checkpoint_source, Config, Model, ModelError, Options, Q8Data, TensorData, TensorSource,
};

/// Hands out `inner`'s tensors, with the head and the embeddings quantized to q8_0.
struct HeadQ8<'a>(&'a dyn TensorSource);

impl TensorSource for HeadQ8<'_> {
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
    fn tensor(&self, name: &str) -> Result<TensorData, ModelError> {
        self.0.tensor(name)
    }
    fn stored(&self, name: &str) -> Result<TensorData, ModelError> {
        if name != "lm_head.weight" && name != "model.embed_tokens.weight" {
            return self.0.stored(name);
        }
        let TensorData::Dense { shape, values } = self.0.tensor(name)? else {
            return Err(ModelError::Tensor {
                name: name.into(),
                msg: "not stored as floats".into(),
            });
        };
        let m =
            Q8Matrix::quantize(&values, shape[0], shape[1]).map_err(|e| ModelError::Tensor {
                name: name.into(),
                msg: e.to_string(),
            })?;
        Ok(TensorData::Q8 {
            shape,
            data: Q8Data::owned(m),
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ckpt, text, rest @ ..] = args.as_slice() else {
        return Err("usage: head_q8_bpb CHECKPOINT TEXT [WINDOW] [MAX_BYTES]".into());
    };
    let window: usize = rest.first().map_or(Ok(256), |w| w.parse())?;
    let max: usize = rest.get(1).map_or(Ok(usize::MAX), |m| m.parse())?;
    let dir = PathBuf::from(ckpt);
    let src = checkpoint_source(&dir)?;
    let config = Config::from_json(
        &std::fs::read_to_string(dir.join("config.json"))?,
        "config.json",
    )?;
    let bytes = std::fs::read(text)?;
    let ids: Vec<u32> = bytes[..bytes.len().min(max)]
        .iter()
        .map(|&b| u32::from(b))
        .collect();
    for (label, model) in [
        (
            "head+embeddings bf16",
            Model::from_source(config.clone(), &src, Options::default())?,
        ),
        (
            "head+embeddings q8_0",
            Model::from_source(config.clone(), &HeadQ8(&src), Options::default())?,
        ),
    ] {
        let s = score_windows(&model, &ids, window, usize::MAX)?;
        println!(
            "{label}: {:.7} bits per byte over {} bytes",
            s.bits / s.tokens as f64,
            s.tokens
        );
    }
    Ok(())
}
