//! The whole-pipeline fuzz harness, shared by the cargo-fuzz target
//! `fuzz/fuzz_targets/pipeline.rs` and the deterministic test
//! `tests/fuzz_pipeline.rs` (included there with `#[path]`, so both run the
//! same code).
//!
//! One input runs: load (decode, resolve) → IR import → the default pass
//! pipeline → opset upgrade when per-channel weights need it →
//! weight-only quantize ([`quench_passes::quantize::plan`] and `apply`,
//! which need no calibration data) → dead code → export → encode → decode →
//! re-import. Errors anywhere are fine (most mutated inputs are rejected);
//! what fails is a panic, an invalid graph after a pass or after
//! quantization, or an exported model that does not decode, import and
//! pass [`quench_ir::Graph::verify`] again.
//!
//! Inputs are either model bytes (mutated fixtures) or, when they start
//! with [`GEN_MAGIC`], the seed of a small random graph built by
//! [`generate`]: ops from a table of known ops with valid arities, random
//! shapes and constant weights, wired into a DAG. The generator tracks
//! shapes so most graphs are valid and reach quantization; a small share
//! is deliberately off (wrong broadcast, odd attributes) to exercise the
//! error paths.

#![allow(dead_code)]

use std::path::Path;

use prost::Message;
use quench_ir::tensor;
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, ValueInfoProto,
};
use quench_passes::quantize::{self, Mode, QuantizeConfig, WeightType};
use quench_passes::{PassCx, RunOptions};

/// Inputs starting with these bytes are generator seeds, not model bytes.
pub const GEN_MAGIC: &[u8] = b"QGEN";

/// How far an input got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reached {
    /// The decoder or the import refused it.
    Rejected,
    /// A pass refused it.
    Passes,
    /// Planning or applying weight-only quantization refused it.
    Quantize,
    /// Quantized, exported, re-imported and verified.
    RoundTrip,
}

/// Runs one input (see the module docs). Panics on a finding.
pub fn run(data: &[u8]) -> Reached {
    run_detail(data).0
}

/// [`run`], also returning the input's IR text (empty when rejected) and
/// the quantized IR text (empty unless [`Reached::RoundTrip`]).
pub fn run_detail(data: &[u8]) -> (Reached, String, String) {
    if let Some(seed) = data.strip_prefix(GEN_MAGIC) {
        let model = generate(&mut Bytes::new(seed));
        run_bytes(&model.encode_to_vec())
    } else {
        run_bytes(data)
    }
}

/// The pipeline on model bytes.
pub fn run_bytes(data: &[u8]) -> (Reached, String, String) {
    let Ok(proto) =
        quench_onnx::load_model_from_bytes(data.to_vec().into(), Path::new("fuzz.onnx"))
    else {
        return (Reached::Rejected, String::new(), String::new());
    };
    let Ok(mut model) = quench_ir::Model::from_onnx(proto) else {
        return (Reached::Rejected, String::new(), String::new());
    };
    let imported_ok = model.graph.verify().is_ok();
    let before = model.to_text();
    let opset = model.default_opset().unwrap_or(0);
    let mut cx = PassCx::new(opset);
    let opts = RunOptions {
        // Check the graph after every pass when the import was valid: a
        // pass that breaks a valid graph is a finding (reported as an
        // error by run_passes, turned into a panic below).
        verify: imported_ok,
        dump_after: Vec::new(),
    };
    if let Err(e) = quench_passes::run_passes(
        &mut model.graph,
        &quench_passes::pipeline::default_pipeline(),
        &mut cx,
        &opts,
    ) {
        if let quench_passes::PassError::Broken { .. } = e {
            panic!("a pass broke a valid graph: {e}");
        }
        return (Reached::Passes, before, String::new());
    }
    if imported_ok {
        if let Err(e) = model.graph.verify() {
            panic!("graph invalid after the passes: {e}");
        }
    }
    let per_channel = data.len().is_multiple_of(2);
    let cfg = QuantizeConfig {
        mode: Mode::WeightOnly,
        per_channel,
        weights: if data.len().is_multiple_of(3) {
            WeightType::U8
        } else {
            WeightType::I8
        },
        ..QuantizeConfig::default()
    };
    let mut opset = opset;
    let need = cfg.min_opset().unwrap_or(0);
    if need > 10
        && need > opset
        && opset > 0
        && quench_passes::upgrade_opset::check(&model.graph, opset, need).is_ok()
    {
        quench_passes::upgrade_opset::apply(&mut model.graph, opset, need);
        model.set_opset("", need);
        if model.header.ir_version() < 7 {
            model.header.ir_version = Some(7);
        }
        opset = need;
        if imported_ok {
            if let Err(e) = model.graph.verify() {
                panic!("graph invalid after the opset upgrade: {e}");
            }
        }
    }
    let Ok(plan) = quantize::plan(&model.graph, &cfg) else {
        return (Reached::Quantize, before, String::new());
    };
    if quantize::apply(
        &mut model.graph,
        &plan,
        &quantize::Ranges::new(),
        &cfg,
        opset,
        &mut cx,
    )
    .is_err()
    {
        return (Reached::Quantize, before, String::new());
    }
    if quench_passes::Pass::run(
        &quench_passes::dead_code::DeadCode,
        &mut model.graph,
        &mut cx,
    )
    .is_err()
    {
        return (Reached::Quantize, before, String::new());
    }
    if imported_ok {
        if let Err(e) = model.graph.verify() {
            panic!("graph invalid after weight-only quantization: {e}");
        }
    }
    let text = model.to_text();
    let bytes = model.to_onnx().encode_to_vec();
    let again = quench_onnx::load_model_from_bytes(bytes.into(), Path::new("exported.onnx"))
        .unwrap_or_else(|e| panic!("an exported model does not decode: {e}"));
    let model2 = quench_ir::Model::from_onnx(again)
        .unwrap_or_else(|e| panic!("an exported model does not import: {e}"));
    if imported_ok {
        if let Err(e) = model2.graph.verify() {
            panic!("an exported model does not verify after re-import: {e}");
        }
    }
    assert_eq!(
        model2.to_text(),
        text,
        "IR text changes over export and re-import"
    );
    (Reached::RoundTrip, before, text)
}

/// A byte stream that reads as zeros once exhausted (so every seed, even
/// an empty one, makes a graph).
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data, pos: 0 }
    }
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let v = u16::from_le_bytes([self.byte(), self.byte()]) as usize;
        v % n
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    /// A weight value: mostly small, sometimes zero, huge or not finite.
    pub fn weight(&mut self) -> f32 {
        match self.below(2048) {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => 3.0e38,
            3 => -1.0e-40,
            4..=40 => 0.0,
            _ => (self.byte() as f32 - 128.0) / 64.0,
        }
    }
}

/// A value the generator can use, with its float shape.
#[derive(Clone)]
struct Avail {
    name: String,
    shape: Vec<i64>,
}

struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    avail: Vec<Avail>,
    n: usize,
}

impl Builder {
    fn fresh(&mut self, base: &str) -> String {
        self.n += 1;
        format!("{base}_{}", self.n)
    }
    fn init_f32(&mut self, r: &mut Bytes, shape: &[i64]) -> String {
        let name = self.fresh("w");
        let numel: i64 = shape.iter().product();
        let data: Vec<f32> = (0..numel).map(|_| r.weight()).collect();
        self.inits.push(tensor::from_f32(&name, shape, &data));
        name
    }
    fn init_i64(&mut self, data: &[i64]) -> String {
        let name = self.fresh("c");
        self.inits
            .push(tensor::from_i64(&name, &[data.len() as i64], data));
        name
    }
    fn node(
        &mut self,
        op: &str,
        inputs: Vec<String>,
        attrs: Vec<AttributeProto>,
        out_shape: Vec<i64>,
    ) -> String {
        let out = self.fresh(&op.to_lowercase());
        let name = self.fresh(op);
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![out.clone()],
            name: Some(name),
            op_type: Some(op.to_string()),
            attribute: attrs,
            ..Default::default()
        });
        self.avail.push(Avail {
            name: out.clone(),
            shape: out_shape,
        });
        out
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn value_info(name: &str, shape: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(tensor::tensor_type_of(DataType::Float as i32, shape)),
        ..Default::default()
    }
}

/// The ops the generator knows (see [`generate`]).
const OPS: &[&str] = &[
    "Relu",
    "Sigmoid",
    "Tanh",
    "Add",
    "Mul",
    "Sub",
    "MatMul",
    "Gemm",
    "Conv",
    "ConvTranspose",
    "BatchNormalization",
    "Softmax",
    "Transpose",
    "Reshape",
    "Flatten",
    "Concat",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Identity",
    "Dropout",
    "Clip",
    "Constant",
    "Gather",
    "ReduceMean",
    "LeakyRelu",
    "HardSigmoid",
    "Erf",
    "Div",
];

/// A small random model from `r`: one or two float graph inputs of rank 2
/// or 4, then 1..=12 ops picked from [`OPS`], each taking values made
/// earlier (so the graph is a DAG) and constant weights where the op has
/// them; a few random values become graph outputs.
pub fn generate(r: &mut Bytes) -> ModelProto {
    let opset = [11i64, 13, 13, 17, 17, 21][r.below(6)];
    let mut b = Builder {
        nodes: Vec::new(),
        inits: Vec::new(),
        avail: Vec::new(),
        n: 0,
    };
    let mut inputs = Vec::new();
    for i in 0..1 + r.below(2) {
        let shape = if r.chance(50) {
            vec![
                1 + r.below(2) as i64,
                1 + r.below(4) as i64,
                1 + r.below(5) as i64,
                1 + r.below(5) as i64,
            ]
        } else {
            vec![1 + r.below(3) as i64, 1 + r.below(8) as i64]
        };
        let name = format!("x{i}");
        inputs.push(value_info(&name, &shape));
        b.avail.push(Avail { name, shape });
    }
    let ops = 1 + r.below(12);
    for _ in 0..ops {
        let a = b.avail[r.below(b.avail.len())].clone();
        let rank = a.shape.len();
        let off = r.chance(3); // a deliberately inconsistent choice
        match OPS[r.below(OPS.len())] {
            op @ ("Relu" | "Sigmoid" | "Tanh" | "Identity" | "Erf") => {
                b.node(op, vec![a.name], vec![], a.shape);
            }
            "LeakyRelu" => {
                b.node(
                    "LeakyRelu",
                    vec![a.name],
                    vec![float("alpha", 0.1)],
                    a.shape,
                );
            }
            "HardSigmoid" => {
                b.node("HardSigmoid", vec![a.name], vec![], a.shape);
            }
            "Dropout" => {
                b.node("Dropout", vec![a.name], vec![], a.shape);
            }
            // Clip's min/max are inputs since opset 11 (all generated opsets).
            "Clip" => {
                let lo = b.fresh("lo");
                b.inits.push(tensor::from_f32(&lo, &[], &[0.0]));
                let hi = b.fresh("hi");
                b.inits.push(tensor::from_f32(&hi, &[], &[6.0]));
                b.node("Clip", vec![a.name, lo, hi], vec![], a.shape);
            }
            op @ ("Add" | "Mul" | "Sub" | "Div") => {
                // Another value of the same shape, or a constant of a
                // broadcastable shape (last dim, channel, or scalar).
                let same: Vec<Avail> = b
                    .avail
                    .iter()
                    .filter(|v| v.shape == a.shape)
                    .cloned()
                    .collect();
                let other = if !same.is_empty() && r.chance(50) {
                    same[r.below(same.len())].name.clone()
                } else {
                    let shape = match r.below(3) {
                        0 => vec![],
                        1 => vec![*a.shape.last().unwrap_or(&1)],
                        _ if rank == 4 => vec![a.shape[1], 1, 1],
                        _ => a.shape.clone(),
                    };
                    let shape = if off { vec![7, 3] } else { shape };
                    b.init_f32(r, &shape)
                };
                let (x, y) = if r.chance(20) {
                    (other, a.name)
                } else {
                    (a.name, other)
                };
                b.node(op, vec![x, y], vec![], a.shape);
            }
            "MatMul" => {
                let k = *a.shape.last().unwrap_or(&1);
                let n = 1 + r.below(6) as i64;
                let w = b.init_f32(r, &[if off { k + 1 } else { k }, n]);
                let mut s = a.shape.clone();
                if let Some(l) = s.last_mut() {
                    *l = n;
                }
                b.node("MatMul", vec![a.name, w], vec![], s);
            }
            "Gemm" if rank == 2 => {
                let k = a.shape[1];
                let n = 1 + r.below(6) as i64;
                let trans_b = r.chance(50);
                let w = b.init_f32(r, &if trans_b { [n, k] } else { [k, n] });
                let mut ins = vec![a.name, w];
                if r.chance(70) {
                    ins.push(b.init_f32(r, &[n]));
                }
                b.node(
                    "Gemm",
                    ins,
                    vec![int("transB", trans_b as i64), float("alpha", 1.0)],
                    vec![a.shape[0], n],
                );
            }
            op @ ("Conv" | "ConvTranspose") if rank == 4 => {
                let c = a.shape[1];
                let m = 1 + r.below(4) as i64;
                let group = if op == "Conv" && r.chance(25) { c } else { 1 };
                let m = if group > 1 { c } else { m };
                let k = 1 + r.below(3) as i64;
                let pad = r.below(2) as i64;
                let wshape = if op == "Conv" {
                    [m, c / group, k, k]
                } else {
                    [c, m, k, k]
                };
                let w = b.init_f32(r, &wshape);
                let mut ins = vec![a.name, w];
                if r.chance(60) {
                    ins.push(b.init_f32(r, &[m]));
                }
                let (h, wd) = (a.shape[2], a.shape[3]);
                let (oh, ow) = if op == "Conv" {
                    (h + 2 * pad - k + 1, wd + 2 * pad - k + 1)
                } else {
                    (h - 1 + k - 2 * pad, wd - 1 + k - 2 * pad)
                };
                if oh >= 1 && ow >= 1 {
                    b.node(
                        op,
                        ins,
                        vec![
                            ints("kernel_shape", &[k, k]),
                            ints("pads", &[pad, pad, pad, pad]),
                            int("group", group),
                        ],
                        vec![a.shape[0], m, oh, ow],
                    );
                }
            }
            "BatchNormalization" if rank >= 2 => {
                let c = a.shape[1];
                let scale = b.init_f32(r, &[c]);
                let bias = b.init_f32(r, &[c]);
                let mean = b.init_f32(r, &[c]);
                let var = b.fresh("var");
                let v: Vec<f32> = (0..c).map(|_| r.weight().abs()).collect();
                b.inits.push(tensor::from_f32(&var, &[c], &v));
                b.node(
                    "BatchNormalization",
                    vec![a.name, scale, bias, mean, var],
                    vec![float("epsilon", 1e-5)],
                    a.shape,
                );
            }
            "Softmax" => {
                b.node("Softmax", vec![a.name], vec![int("axis", -1)], a.shape);
            }
            "Transpose" => {
                let mut perm: Vec<i64> = (0..rank as i64).collect();
                perm.reverse();
                let s: Vec<i64> = perm.iter().map(|&p| a.shape[p as usize]).collect();
                b.node("Transpose", vec![a.name], vec![ints("perm", &perm)], s);
            }
            "Reshape" => {
                let numel: i64 = a.shape.iter().product();
                let target = if off { vec![numel + 1] } else { vec![1, numel] };
                let c = b.init_i64(&[if r.chance(50) { -1 } else { 1 }, numel]);
                let c = if off { b.init_i64(&target) } else { c };
                b.node("Reshape", vec![a.name, c], vec![], vec![1, numel]);
            }
            "Flatten" => {
                let rest: i64 = a.shape[1..].iter().product();
                b.node(
                    "Flatten",
                    vec![a.name],
                    vec![int("axis", 1)],
                    vec![a.shape[0], rest],
                );
            }
            "Concat" => {
                let same: Vec<Avail> = b
                    .avail
                    .iter()
                    .filter(|v| v.shape == a.shape)
                    .cloned()
                    .collect();
                let o = same[r.below(same.len())].clone();
                let mut s = a.shape.clone();
                s[0] *= 2;
                b.node("Concat", vec![a.name, o.name], vec![int("axis", 0)], s);
            }
            op @ ("MaxPool" | "AveragePool") if rank == 4 => {
                let k = 1 + r.below(2) as i64;
                if a.shape[2] >= k && a.shape[3] >= k {
                    let s = vec![
                        a.shape[0],
                        a.shape[1],
                        a.shape[2] - k + 1,
                        a.shape[3] - k + 1,
                    ];
                    b.node(op, vec![a.name], vec![ints("kernel_shape", &[k, k])], s);
                }
            }
            "GlobalAveragePool" if rank == 4 => {
                let s = vec![a.shape[0], a.shape[1], 1, 1];
                b.node("GlobalAveragePool", vec![a.name], vec![], s);
            }
            "Constant" => {
                // A Constant node feeding an Add: exercises
                // constants_to_initializers and fold_constants.
                let t = tensor::from_f32("", &[], &[r.weight()]);
                let out = b.fresh("const");
                let name = b.fresh("Constant");
                b.nodes.push(NodeProto {
                    output: vec![out.clone()],
                    name: Some(name),
                    op_type: Some("Constant".into()),
                    attribute: vec![AttributeProto {
                        name: Some("value".into()),
                        r#type: Some(AttributeType::Tensor as i32),
                        t: Some(t),
                        ..Default::default()
                    }],
                    ..Default::default()
                });
                b.node("Add", vec![a.name, out], vec![], a.shape);
            }
            "Gather" => {
                let d0 = a.shape[0];
                let idx = b.init_i64(&[if off { d0 } else { d0 - 1 }, 0]);
                let mut s = a.shape.clone();
                s[0] = 2;
                b.node("Gather", vec![a.name, idx], vec![int("axis", 0)], s);
            }
            "ReduceMean" => {
                let mut s = a.shape.clone();
                if let Some(l) = s.last_mut() {
                    *l = 1;
                }
                if opset >= 18 {
                    let axes = b.init_i64(&[-1]);
                    b.node("ReduceMean", vec![a.name, axes], vec![], s);
                } else {
                    b.node("ReduceMean", vec![a.name], vec![ints("axes", &[-1])], s);
                }
            }
            _ => {}
        }
    }
    // Outputs: every value nothing consumes (so no op is dead code), plus
    // sometimes one that is consumed too.
    let mut outputs = Vec::new();
    let used: std::collections::HashSet<&str> = b
        .nodes
        .iter()
        .flat_map(|n| n.input.iter().map(|s| s.as_str()))
        .collect();
    let mut picks: Vec<usize> = (0..b.avail.len())
        .filter(|&i| !used.contains(b.avail[i].name.as_str()))
        .collect();
    if r.chance(30) {
        picks.push(r.below(b.avail.len()));
    }
    picks.sort();
    picks.dedup();
    for i in picks {
        let v = &b.avail[i];
        // An output that is a graph input is legal ONNX; keep it too.
        outputs.push(value_info(&v.name, &v.shape));
    }
    ModelProto {
        ir_version: Some(if opset >= 21 { 10 } else { 8 }),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        producer_name: Some("quench-fuzz-generator".into()),
        graph: Some(GraphProto {
            name: Some("generated".into()),
            node: b.nodes,
            initializer: b.inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
}
