//! TEMPORARY reader of original safetensors checkpoints until tquant-convert's reader lands;
//! deleted then.

use crate::weights::{TensorData, TensorSource};
use crate::ModelError;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct StSource {
    files: Vec<(PathBuf, Vec<u8>)>,
    names: HashMap<String, usize>,
}

impl StSource {
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let io = |p: &Path, e: std::io::Error| ModelError::Input(format!("{}: {e}", p.display()));
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        let mut files = Vec::new();
        let mut names = HashMap::new();
        for p in paths {
            let bytes = std::fs::read(&p).map_err(|e| io(&p, e))?;
            let st = SafeTensors::deserialize(&bytes)
                .map_err(|e| ModelError::Input(format!("{}: {e}", p.display())))?;
            for n in st.names() {
                names.insert(n.to_string(), files.len());
            }
            files.push((p, bytes));
        }
        Ok(Self { files, names })
    }
}

impl TensorSource for StSource {
    fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    fn tensor(&self, name: &str) -> Result<TensorData, ModelError> {
        let i = self.names[name];
        let st = SafeTensors::deserialize(&self.files[i].1).unwrap();
        let t = st.tensor(name).unwrap();
        let d = t.data();
        let values: Vec<f32> = match t.dtype() {
            Dtype::F32 => d
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            Dtype::BF16 => d
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F16 => d
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => return Err(ModelError::tensor(name, format!("dtype {other:?}"))),
        };
        Ok(TensorData::Dense {
            shape: t.shape().to_vec(),
            values,
        })
    }
}
