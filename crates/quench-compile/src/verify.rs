//! The verification phase: FP32, the emitted model and its float twin on
//! the evaluation samples, through the one [`Evaluator`].

use anyhow::Result;
use quench_onnx::proto::ModelProto;
use quench_verify::{Evaluator, Runners, Subject};

use crate::data::Bound;
use crate::parts::OutputParts;
use crate::report::{Accuracy, OutputCheck, PartCheck, Verification};

/// The FP32 model runs in tract but neither the quantized model nor its
/// float twin does: the output is not trusted, and the compile fails.
#[derive(Debug)]
pub struct QuantizedDoesNotRun(pub String);

impl std::fmt::Display for QuantizedDoesNotRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QuantizedDoesNotRun {}

/// Runs FP32 (`original`), the emitted model (`quantized`) and its float
/// twin on `data` and compares them per graph output, and per part for
/// the outputs in `parts` (found on `original`'s graph).
///
/// Errors when FP32 cannot run, or when neither the file nor its twin can.
pub fn verify(
    original: &ModelProto,
    quantized: &ModelProto,
    twin: &ModelProto,
    data: &Bound,
    parts: &[OutputParts],
) -> Result<Verification> {
    // Ifs tract cannot type are specialised on the data (see
    // `control_flow`); every model compared gets the same branches.
    let has_if = original
        .graph
        .as_ref()
        .is_some_and(|g| g.node.iter().any(|n| n.op_type() == "If"));
    let spec = if has_if {
        crate::control_flow::specialise(&[original, quantized, twin], data)
    } else {
        None
    };
    let (original, quantized, twin) = match &spec {
        Some(s) => (&s.models[0], &s.models[1], &s.models[2]),
        None => (original, quantized, twin),
    };
    let out_names = quench_verify::output_names(original);
    // The parts' tensors are exposed by the FP32 run, after the outputs;
    // a specialised If leaves them where they were (the graph outside it).
    let mut splits = Vec::new();
    let mut exposed = Vec::new();
    let integer = quench_verify::integer_outputs(original);
    // An integer output (class indices) judges nothing: no parts either.
    let parts: Vec<&OutputParts> = parts
        .iter()
        .filter(|p| !integer.get(p.index).copied().unwrap_or(false))
        .collect();
    for p in &parts {
        let at = out_names.len() + exposed.len();
        let n = p.exposed().len();
        exposed.extend(p.exposed());
        let p = (*p).clone();
        splits.push(quench_verify::PartSplit {
            output: p.index,
            parts: p.leaves.len(),
            mask: Box::new(move |run: &[quench_verify::ArrayData]| {
                let arrays: Option<Vec<&quench_verify::ArrayData>> =
                    (at..at + n).map(|i| run.get(i)).collect();
                p.mask(&arrays?)
            }),
        });
    }
    let eval = Evaluator::new(&data.data, data.feed, quench_verify::input_names(original));
    // The parts are a diagnostic: where tract cannot expose them, the
    // outputs are measured whole as before.
    let with_parts = (!exposed.is_empty())
        .then(|| Runners::new(original, exposed))
        .filter(|r| eval.probe(r).is_ok());
    let (eval, fp) = match with_parts {
        Some(r) => (eval.with_parts(splits), r),
        None => (eval, Runners::new(original, vec![])),
    };
    let qr = Runners::new(quantized, vec![]);
    let tr = Runners::new(twin, vec![]);
    // The three models compile side by side.
    eval.warm_up(&[&fp, &qr, &tr])?;
    let subjects = [
        Subject::Required(&fp, "the FP32 model"),
        Subject::Run(&qr),
        Subject::Run(&tr),
    ];
    // FP32 vs file, FP32 vs twin, twin vs file.
    let figures = eval.compare(&subjects, &[(0, 1), (0, 2), (2, 1)], out_names.len())?;
    let (file, reference, runtime) = (&figures[0], &figures[1], &figures[2]);
    let file_error = file.outputs.as_ref().err().cloned();
    if let (Err(f), Err(t)) = (&file.outputs, &reference.outputs) {
        return Err(QuantizedDoesNotRun(format!(
            "tract runs the FP32 model but neither the quantized model ({f}) nor its float twin ({t}); refusing to write it (--no-verify skips verification)"
        ))
        .into());
    }
    let pick = |v: &Result<Vec<quench_verify::Metrics>, String>, i: usize| {
        v.as_ref().ok().and_then(|m| m.get(i).cloned())
    };
    let outputs = out_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let file_m = pick(&file.outputs, i);
            let reference_m = pick(&reference.outputs, i);
            let rt = pick(&runtime.outputs, i);
            // The runtime disagrees with the reference when its difference
            // from the twin is not small next to the quantization error.
            let discrepancy = match (&reference_m, &rt) {
                (Some(re), Some(rt)) => rt.sqnr_db < re.sqnr_db + 10.0 && rt.sqnr_db < 40.0,
                _ => false,
            };
            let split = parts.iter().position(|p| p.index == i);
            let part_figures =
                |f: &quench_verify::PairFigures| -> Option<Vec<quench_verify::Metrics>> {
                    f.outputs.as_ref().ok()?;
                    f.parts.get(split?)?.clone()
                };
            let (pf, pr) = (part_figures(file), part_figures(reference));
            let part_checks = match split {
                Some(s) if pf.is_some() || pr.is_some() => parts[s]
                    .leaves
                    .iter()
                    .enumerate()
                    .map(|(j, t)| PartCheck {
                        tensor: t.clone(),
                        file: pf.as_ref().and_then(|m| m.get(j).cloned()),
                        reference: pr.as_ref().and_then(|m| m.get(j).cloned()),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            OutputCheck {
                output: name.clone(),
                parts: part_checks,
                file: file_m,
                reference: reference_m,
                runtime_vs_reference: rt,
                runtime_discrepancy: discrepancy,
                integer: integer.get(i).copied().unwrap_or(false),
            }
        })
        .collect();
    // Accuracy against labels uses the file when it ran, else the reference
    // semantics.
    let hits = if file.outputs.is_ok() {
        file.labels
    } else {
        reference.labels
    };
    let accuracy = (hits.rows > 0).then(|| Accuracy {
        labels: hits.rows,
        fp32: hits.first as f64 / hits.rows as f64,
        quantized: hits.second as f64 / hits.rows as f64,
        change_interval: hits.change_interval(),
    });
    Ok(Verification {
        file_error,
        data: data.label.clone(),
        samples: data.data.samples(),
        outputs,
        accuracy,
        tensors: Vec::new(),
        specialised: spec.map(|s| s.taken).unwrap_or_default(),
        explained_sample: None,
    })
}
