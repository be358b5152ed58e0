//! The converter's use of staged calibration (`CalibrationStages`), apart from the model: each
//! expert of a fused 3-D tensor can be a stage of its own; a stage's statistics are dropped
//! before the next stage's are collected; and the checkpoint is the one the same statistics
//! given whole produce, record for record.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use tquant::convert::calibration::{
    Calibration, CalibrationSettings, CalibrationStages, Hessian, StagedCalibration,
};
use tquant::convert::{
    convert, ConvertError, ConvertOptions, Layout, NoProgress, Policy, RunOptions,
};
use tquant::formats::sample::Rng;

/// Fused expert tensors `[experts, rows, cols]` of the fixture, with their experts.
const FUSED: [(&str, usize, usize); 4] = [
    ("model.layers.1.mlp.experts.gate_up_proj", 8, 64),
    ("model.layers.1.mlp.experts.down_proj", 8, 24),
    ("model.layers.2.mlp.experts.gate_up_proj", 8, 64),
    ("model.layers.2.mlp.experts.down_proj", 8, 24),
];
const EXPERTS: usize = 8;

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/model/lite")
}

/// A random `dim x dim` second moment of `tokens` tokens (seeded by tensor and expert).
fn hessian(seed: u64, dim: usize, tokens: usize) -> Hessian {
    let mut rng = Rng::new(seed);
    let mut h = vec![0.0f64; dim * dim];
    for _ in 0..tokens {
        let x: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
        for i in 0..dim {
            for j in 0..dim {
                h[i * dim + j] += x[i] * x[j];
            }
        }
    }
    Hessian::new(dim, tokens as u64, h).unwrap()
}

/// Expert `e` of every fused tensor; expert 3 from too few tokens (plain rounding).
fn stage_statistics(cal: &mut Calibration, e: usize) -> Vec<Arc<Hessian>> {
    let mut held = Vec::new();
    for (k, &(name, _, dim)) in FUSED.iter().enumerate() {
        let tokens = if e == 3 { 10 } else { 4 * dim };
        let h = Arc::new(hessian((k * EXPERTS + e) as u64, dim, tokens));
        cal.insert(name, Some(e), h.clone());
        held.push(h);
    }
    held
}

fn outline() -> Calibration {
    Calibration::new(CalibrationSettings::default(), "test".into(), 1000)
}

/// One stage per expert index: expert `e` of every fused tensor. Remembers each stage's
/// statistics weakly, to see whether the converter still holds them.
struct PerExpert {
    earlier: Mutex<Vec<Weak<Hessian>>>,
    collected: Mutex<Vec<usize>>,
}

impl CalibrationStages for PerExpert {
    fn outline(&self) -> Calibration {
        outline()
    }

    fn stages(&self) -> usize {
        EXPERTS
    }

    fn stage_of(&self, name: &str, expert: Option<usize>) -> Option<usize> {
        FUSED.iter().find(|f| f.0 == name).and(expert)
    }

    fn collect(&self, stage: usize) -> Result<Calibration, ConvertError> {
        let mut earlier = self.earlier.lock().unwrap();
        let alive = earlier.iter().filter(|w| w.strong_count() > 0).count();
        if alive > 0 {
            return Err(ConvertError::Stage {
                stage,
                source: format!("collected while {alive} earlier statistics are held").into(),
            });
        }
        let mut cal = outline();
        let held = stage_statistics(&mut cal, stage);
        earlier.extend(held.iter().map(Arc::downgrade));
        self.collected.lock().unwrap().push(stage);
        Ok(cal)
    }
}

fn options() -> ConvertOptions {
    ConvertOptions::from_args(
        Some("nf4"),
        None,
        Some("32"),
        Some("f16"),
        Layout::Tquant,
        Policy::default(),
    )
    .unwrap()
}

#[test]
fn expert_stages_are_dropped_in_turn_and_give_the_whole_calibration_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunOptions {
        force: true,
        threads: Some(2),
    };
    let stages = Arc::new(PerExpert {
        earlier: Mutex::new(Vec::new()),
        collected: Mutex::new(Vec::new()),
    });
    let mut staged = options();
    staged.staged_calibration = Some(StagedCalibration(stages.clone()));
    let staged_out = dir.path().join("staged");
    convert(&model(), &staged_out, &staged, &run, &NoProgress).unwrap();
    assert_eq!(
        *stages.collected.lock().unwrap(),
        (0..EXPERTS).collect::<Vec<_>>()
    );

    let mut whole_cal = outline();
    for e in 0..EXPERTS {
        stage_statistics(&mut whole_cal, e);
    }
    let mut whole = options();
    whole.calibration = Some(Arc::new(whole_cal));
    let whole_out = dir.path().join("whole");
    convert(&model(), &whole_out, &whole, &run, &NoProgress).unwrap();

    let (ha, da) = header_and_data(&staged_out);
    let (hb, db) = header_and_data(&whole_out);
    for (name, _, _) in FUSED {
        let key = format!("tquant.{name}");
        let (ra, rb) = (&ha["__metadata__"][&key], &hb["__metadata__"][&key]);
        assert_eq!(ra, rb, "{name}: record");
        let record: serde_json::Value = serde_json::from_str(ra.as_str().unwrap()).unwrap();
        let want: Vec<bool> = (0..EXPERTS).map(|e| e != 3).collect();
        assert_eq!(
            record["calibration"]["calibrated"],
            serde_json::json!(want),
            "{name}"
        );
    }
    // The staged header reserved room for records not known when it was planned, so only its
    // padding may differ.
    assert_eq!(ha, hb, "header");
    assert!(da == db, "tensor data differs");
}

/// The output's header (parsed) and tensor data.
fn header_and_data(dir: &Path) -> (serde_json::Value, Vec<u8>) {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}
