//! Helpers shared by the workspace's integration tests.
#![allow(dead_code)]
// `!(x <= tol)` on purpose: NaN must fail the check.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

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

/// Runs `m` in tract and returns every output in its own element type.
pub fn run_raw(m: &ModelProto, facts: &[InputFact], inputs: &[ArrayData]) -> Vec<ArrayData> {
    let r = Runner::new(
        m,
        &RunnerConfig {
            input_facts: facts.to_vec(),
            extra_outputs: vec![],
        },
    )
    .unwrap();
    r.run(inputs).unwrap()
}

pub fn run(m: &ModelProto, facts: &[InputFact], inputs: &[ArrayData]) -> Vec<ArrayD<f32>> {
    run_raw(m, facts, inputs)
        .iter()
        .map(|a| a.to_f32())
        .collect()
}

/// max |a - b| / max(max |a|, 1e-6), or `Err` when the shapes differ or
/// either array holds a NaN or an infinity (a non-finite output is never
/// "close"; `f32::max` would silently drop a NaN).
pub fn rel_err(a: &ArrayD<f32>, b: &ArrayD<f32>) -> Result<f32, String> {
    if a.shape() != b.shape() {
        return Err(format!("shape {:?} vs {:?}", a.shape(), b.shape()));
    }
    for (which, arr) in [("reference", a), ("test", b)] {
        if let Some((i, v)) = arr.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(format!("{which} element {i} is {v}"));
        }
    }
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    Ok(diff / scale)
}

/// [`rel_err`] that panics on a shape mismatch and returns NaN (which fails
/// every `e <= TOL` assertion) on non-finite data.
pub fn max_rel_err(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    rel_err(a, b).unwrap_or(f32::NAN)
}

/// Compares every output of a reference run with a test run: same number of
/// outputs, same element type, same shape, all finite, and
/// [`rel_err`] ≤ `tol` each. The error names the first output that fails.
pub fn compare_outputs(
    reference: &[ArrayData],
    test: &[ArrayData],
    tol: f32,
) -> Result<(), String> {
    if reference.len() != test.len() {
        return Err(format!(
            "{} reference outputs but {} test outputs",
            reference.len(),
            test.len()
        ));
    }
    if reference.is_empty() {
        return Err("no outputs to compare".into());
    }
    for (i, (r, t)) in reference.iter().zip(test).enumerate() {
        if r.elem_type() != t.elem_type() {
            return Err(format!(
                "output {i}: element type {} vs {}",
                r.dtype_name(),
                t.dtype_name()
            ));
        }
        let e = rel_err(&r.to_f32(), &t.to_f32()).map_err(|e| format!("output {i}: {e}"))?;
        if !(e <= tol) {
            return Err(format!("output {i}: relative error {e:e} > {tol:e}"));
        }
    }
    Ok(())
}

/// The SQNR of a report's metrics object: the number when finite, `+inf`
/// only for identical outputs (`null` with `"non_finite": {"sqnr_db":
/// "inf"}` and a zero `max_abs_err`), `Err` for anything else (NaN, a
/// missing field, a string).
pub fn sqnr_of(m: &serde_json::Value) -> Result<f64, String> {
    if let Ok(v) = finite_f64(&m["sqnr_db"]) {
        return Ok(v);
    }
    let exact = m["sqnr_db"].is_null()
        && m["non_finite"]["sqnr_db"] == "inf"
        && m["max_abs_err"].as_f64() == Some(0.0);
    if exact {
        Ok(f64::INFINITY)
    } else {
        Err(format!("SQNR is not a number: {m}"))
    }
}

/// A report figure that must be a finite number: `Err` for JSON `null`, a
/// string such as `"nan"`, or a missing field.
pub fn finite_f64(v: &serde_json::Value) -> Result<f64, String> {
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(format!("not a finite number: {v}")),
    }
}

pub fn load(p: &Path) -> ModelProto {
    quench_onnx::load_model(p).unwrap().model
}

/// The first `n` real digit images of `testdata/digits/eval`, as the
/// named inputs of `digits_cnn.onnx` (for [`write_interop_pair`]).
pub fn digits_eval_inputs(n: usize) -> Vec<(String, ArrayD<f32>)> {
    let data = quench_verify::Dataset::load(&testdata("digits/eval")).unwrap();
    let inputs: Vec<(String, ArrayD<f32>)> = data
        .sample_batch(0..n)
        .unwrap()
        .into_iter()
        .filter(|(name, _)| name == "input")
        .map(|(name, a)| (name, a.to_f32()))
        .collect();
    assert_eq!(inputs.len(), 1);
    inputs
}

/// What `scripts/interop_check.py` compares, in ONNX Runtime, for a model
/// the tests wrote under `target/interop` (written as `<stem>.check.json`).
pub enum InteropCheck {
    /// A rewrite that must not change the function: every output within
    /// `rel_tol` (relative to the reference output's largest magnitude).
    Exact { rel_tol: f32 },
    /// A quantized model: ORT's outputs against the float twin
    /// (`<stem>.twin.onnx`, built here from the quantized IR; none when the
    /// model has no Q/DQ) with SQNR ≥ `min_sqnr_twin_db`, and against the
    /// FP32 source with SQNR ≥ `min_sqnr_fp32_db`.
    Quantized {
        min_sqnr_fp32_db: f64,
        min_sqnr_twin_db: f64,
    },
}

impl InteropCheck {
    pub fn exact(rel_tol: f32) -> InteropCheck {
        InteropCheck::Exact { rel_tol }
    }
}

/// Writes, next to the model at `out`: `<stem>.fp32.onnx` (the reference),
/// `<stem>.inputs.npz` when `inputs` are given (named by model input; the
/// script uses random inputs otherwise), `<stem>.twin.onnx` for quantized
/// checks, and `<stem>.check.json` describing the comparison.
pub fn write_interop_pair(
    out: &Path,
    reference: &ModelProto,
    inputs: Option<&[(String, ArrayD<f32>)]>,
    check: &InteropCheck,
) {
    let stem = out.file_stem().unwrap().to_str().unwrap().to_string();
    let dir = out.parent().unwrap();
    let side = |suffix: &str| dir.join(format!("{stem}.{suffix}"));
    quench_onnx::save_model(reference, &side("fp32.onnx"), &Default::default()).unwrap();
    let mut spec = serde_json::json!({
        "model": format!("{stem}.onnx"),
        "reference": format!("{stem}.fp32.onnx"),
    });
    if let Some(inputs) = inputs {
        let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(side("inputs.npz")).unwrap());
        for (name, a) in inputs {
            w.add_array(name.as_str(), a).unwrap();
        }
        w.finish().unwrap();
        spec["inputs"] = format!("{stem}.inputs.npz").into();
    }
    match check {
        InteropCheck::Exact { rel_tol } => {
            spec["kind"] = "exact".into();
            spec["rel_tol"] = f64::from(*rel_tol).into();
        }
        InteropCheck::Quantized {
            min_sqnr_fp32_db,
            min_sqnr_twin_db,
        } => {
            let q = load(out);
            let mut m = quench_ir::Model::from_onnx(q).unwrap();
            let opset = m.default_opset().unwrap();
            let (pairs, folded) = quench_passes::simulate::float_twin_pairs(&mut m.graph, opset);
            spec["kind"] = "quantized".into();
            // A model with no Q/DQ (e.g. dynamic mode on a model without
            // MatMul) has no twin; it is compared with FP32 only.
            if !pairs.is_empty() || folded > 0 {
                quench_onnx::save_model(&m.to_onnx(), &side("twin.onnx"), &Default::default())
                    .unwrap();
                spec["twin"] = format!("{stem}.twin.onnx").into();
                // Each quantized activation (Q input name) and the twin's
                // tensor for it: compared within one quantization step.
                spec["steps"] = pairs
                    .iter()
                    .map(|(q, t)| serde_json::json!([q, t]))
                    .collect::<Vec<_>>()
                    .into();
            }
            spec["min_sqnr_fp32_db"] = (*min_sqnr_fp32_db).into();
            spec["min_sqnr_twin_db"] = (*min_sqnr_twin_db).into();
        }
    }
    std::fs::write(
        side("check.json"),
        serde_json::to_string_pretty(&spec).unwrap(),
    )
    .unwrap();
}

/// Adds to the `<stem>.check.json` of the quantized model at `out` a floor
/// for its SQNR against FP32 when ONNX Runtime runs it with its default
/// graph optimizations (QDQ groups fused into integer kernels, which on x86
/// CPUs with AVX2 and no VNNI saturate u8 x s8 pair sums), checked on
/// every CPU.
pub fn require_fused_sqnr(out: &Path, min_db: f64) {
    let stem = out.file_stem().unwrap().to_str().unwrap();
    let spec_path = out.parent().unwrap().join(format!("{stem}.check.json"));
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&spec_path).unwrap()).unwrap();
    assert_eq!(spec["kind"], "quantized", "{}", spec_path.display());
    spec["min_sqnr_fp32_fused_db"] = min_db.into();
    std::fs::write(&spec_path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
}
