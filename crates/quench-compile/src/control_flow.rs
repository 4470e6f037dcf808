//! `If`s specialised for tract, observed on the data.
//!
//! tract types both branches of an `If` before running anything, and some
//! exports have branches it cannot type together (silero VAD: a `Squeeze`
//! in one branch of an `If` on a shape, whose other branch is the identity;
//! 8 kHz and 16 kHz networks in the two branches of an `If` on the sample
//! rate). When the condition has the same value on every sample, the model
//! computes exactly what the taken branch computes, so tract can run a copy
//! with that branch inlined ([`quench_passes::subgraphs::inline_if`]).
//! The value is observed, not inferred: tract runs the model cut off after
//! the condition (its prefix), on every sample, in every model compared
//! (FP32, the file, its twin), and the branch is inlined only when all of
//! them agree on one value. Ifs are taken in graph order, so the Ifs inside
//! an inlined branch are specialised in turn. The written model keeps its
//! Ifs; this is for measuring only.

use quench_ir::{Model, OpKind};
use quench_onnx::proto::{ModelProto, ValueInfoProto};
use quench_passes::{Pass, PassCx};
use quench_verify::{ArrayData, Evaluator, Runners};

use crate::data::Bound;

/// Copies of the models with the Ifs whose condition `data` fixes inlined.
pub struct Specialised {
    /// The models, in the order given.
    pub models: Vec<ModelProto>,
    /// One line per inlined If: its name, the branch, and why.
    pub taken: Vec<String>,
}

/// The most Ifs inlined (nested bodies bring new ones; the bound stops a
/// pathological model).
const MAX_IFS: usize = 64;

/// Specialises the main-graph Ifs of `models` (which must have the same If
/// nodes, by name: a model and its quantized forms) on `data`; `None` when
/// no If could be specialised (no If, a condition that varies or differs
/// between the models, a prefix tract cannot run).
pub fn specialise(models: &[&ModelProto], data: &Bound) -> Option<Specialised> {
    let mut irs: Vec<Model> = models
        .iter()
        .map(|m| Model::from_onnx((*m).clone()).ok())
        .collect::<Option<_>>()?;
    let mut taken = Vec::new();
    while taken.len() < MAX_IFS {
        let first = &irs[0].graph;
        let order = first.topo_order().ok()?;
        let Some(n0) = order
            .into_iter()
            .find(|n| first.node(*n).kind() == OpKind::If)
        else {
            break;
        };
        let name = first.node(n0).name().to_string();
        let mut value: Option<bool> = None;
        for m in &irs {
            let v = observe(m, &name, data)?;
            if value.is_some_and(|x| x != v) {
                return finish(irs, taken);
            }
            value = Some(v);
        }
        let branch = if value? { "then_branch" } else { "else_branch" };
        for m in &mut irs {
            let n = find_if(m, &name)?;
            quench_passes::subgraphs::inline_if(&mut m.graph, n, branch).ok()?;
            let mut cx = PassCx::new(m.default_opset().unwrap_or(0));
            quench_passes::dead_code::DeadCode
                .run(&mut m.graph, &mut cx)
                .ok()?;
        }
        taken.push(format!(
            "If `{name}` takes its {branch} on every one of {} samples (condition observed in tract): tract runs that branch in place of the If",
            data.data.samples()
        ));
    }
    finish(irs, taken)
}

fn finish(irs: Vec<Model>, taken: Vec<String>) -> Option<Specialised> {
    if taken.is_empty() {
        return None;
    }
    Some(Specialised {
        models: irs.iter().map(|m| m.to_onnx()).collect(),
        taken,
    })
}

/// The If named `name`; `None` when the name is empty or not unique (the
/// same If must be found in every model).
fn find_if(m: &Model, name: &str) -> Option<quench_ir::NodeId> {
    let mut found = m
        .graph
        .node_ids()
        .into_iter()
        .filter(|n| m.graph.node(*n).kind() == OpKind::If && m.graph.node(*n).name() == name);
    let n = found.next()?;
    (!name.is_empty() && found.next().is_none()).then_some(n)
}

/// The value of If `name`'s condition when it is the same on every sample
/// of `data`: tract runs the model with the condition as its only output.
fn observe(m: &Model, name: &str, data: &Bound) -> Option<bool> {
    let n = find_if(m, name)?;
    let cond = m.graph.node(n).input(0)?;
    let cond_name = m.graph.value(cond).name.clone();
    let mut proto = m.to_onnx();
    let g = proto.graph.as_mut()?;
    g.output = vec![ValueInfoProto {
        name: Some(cond_name),
        ..Default::default()
    }];
    // Only what the condition needs: tract analyses every node it is given.
    let mut prefix = Model::from_onnx(proto).ok()?;
    let mut cx = PassCx::new(prefix.default_opset().unwrap_or(0));
    quench_passes::dead_code::DeadCode
        .run(&mut prefix.graph, &mut cx)
        .ok()?;
    let proto = prefix.to_onnx();
    let eval = Evaluator::new(&data.data, data.feed, quench_verify::input_names(&proto));
    let out = eval
        .outputs(&Runners::new(&proto, vec![]), "an If condition")
        .ok()?;
    let mut value: Option<bool> = None;
    for batch in out.batches() {
        let ArrayData::Bool(a) = batch.first()? else {
            return None;
        };
        for v in a.iter() {
            if value.is_some_and(|x| x != *v) {
                return None;
            }
            value = Some(*v);
        }
    }
    value
}
