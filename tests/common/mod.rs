//! Helpers shared by the workspace's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use quench_onnx::proto::ModelProto;
use quench_verify::{ArrayData, InputFact, Runner, RunnerConfig};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn testdata(name: &str) -> PathBuf {
    root().join("testdata").join(name)
}

/// Directory whose models CI checks with onnx.checker and onnxruntime.
pub fn interop_dir(sub: &str) -> PathBuf {
    let d = root().join("target").join("interop").join(sub);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Deterministic pseudo-random numbers (LCG), Gaussian-ish via sums.
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.next_f32()).sum::<f32>() * 0.87
    }
}

/// Concrete input facts for a model: symbolic dims become `batch`.
pub fn input_facts(m: &ModelProto, batch: usize) -> Vec<InputFact> {
    quench_verify::ModelInput::from_model(m)
        .into_iter()
        .map(|i| InputFact {
            name: i.name,
            elem_type: i.elem_type,
            shape: i
                .shape
                .unwrap_or_default()
                .iter()
                .map(|d| d.map(|v| v as usize).unwrap_or(batch))
                .collect(),
        })
        .collect()
}

/// Random f32 inputs for the facts.
pub fn random_inputs(facts: &[InputFact], seed: u64) -> Vec<ArrayData> {
    let mut r = Lcg(seed);
    facts
        .iter()
        .map(|f| {
            let n: usize = f.shape.iter().product();
            ArrayData::F32(
                ArrayD::from_shape_vec(f.shape.clone(), (0..n).map(|_| r.normal()).collect())
                    .unwrap(),
            )
        })
        .collect()
}

pub fn run(m: &ModelProto, facts: &[InputFact], inputs: &[ArrayData]) -> Vec<ArrayD<f32>> {
    let r = Runner::new(
        m,
        &RunnerConfig {
            input_facts: facts.to_vec(),
            extra_outputs: vec![],
        },
    )
    .unwrap();
    r.run(inputs).unwrap().iter().map(|a| a.to_f32()).collect()
}

/// max |a - b| / max(max |a|, 1e-6)
pub fn max_rel_err(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter()
        .zip(b.iter())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

pub fn load(p: &Path) -> ModelProto {
    quench_onnx::load_model(p).unwrap().model
}
