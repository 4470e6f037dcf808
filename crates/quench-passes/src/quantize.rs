//! `quantize`: QuantizeLinear/DequantizeLinear insertion (static W8A8,
//! weight-only, dynamic).
//!
//! Quantization is two steps around calibration:
//! 1. [`plan`] decides, per node, what is quantized (by the table in
//!    [`crate::rules`], the user's exclusions and the graph's shape), lists
//!    the activation tensors whose ranges calibration must observe, and
//!    gives every planned activation and every quantized weight a
//!    [`QuantFormat`] from the configuration's defaults
//!    ([`Plan::formats`], [`Plan::weight_formats`]).
//! 2. [`apply`] rewrites the graph with those ranges, reading each tensor's
//!    format: weights stored in the format's element type with
//!    `DequantizeLinear` (per tensor, per axis, or blocks with
//!    `block_size`), int32 biases with `scale = input scale × weight scale`
//!    (integer per-tensor/per-axis weights only), and a `Q → DQ` pair on
//!    every planned activation, placed as ONNX Runtime's and TensorRT's QDQ
//!    fusions expect (`DQ → Conv → Q`; `Relu`/`Clip` absorbed into the
//!    output range; data-movement ops sharing their input's parameters).
//!
//! Mixed precision is a plan edit: change entries of [`Plan::formats`] /
//! [`Plan::weight_formats`] between the two steps. [`apply`] refuses
//! formats the model's opset cannot express ([`QuantFormat::min_opset`])
//! and activation formats that `QuantizeLinear` cannot compute at run time
//! ([`QuantFormat::native`]: not narrow, 4/8/16-bit or float8, per tensor).
//! Dynamic mode keeps its fixed int8 scheme.
//!
//! Invariant: graph inputs and outputs stay float with their names; zero
//! points are always explicit; a tensor whose calibrated range is not finite
//! or is extreme (attention masks of -3.4e38) is left float and reported;
//! unknown ops and custom domains are never touched; subgraph bodies are
//! not touched here ([`crate::subgraphs`] quantizes their weights after
//! [`apply`], with [`quantize_in_place`] for the constants they capture).
//! Constants that feed only recurrent ops' weights ([`Plan::stored`]) are
//! quantized under their own name, so a body capturing one is unaffected.

use std::collections::{BTreeMap, HashMap, HashSet};

use quench_calib::{
    FloatKind, Granularity, IntFormat, QuantFormat, QuantParams, QuantTarget, Scheme,
};
use quench_ir::{tensor, Graph, Node, NodeId, OpKind, ValueDef, ValueId};
use quench_onnx::proto::tensor_proto::DataType;
use serde::{Deserialize, Serialize};

use crate::rules::{rule, OpRule};
use crate::{codes, util, PassCx, PassError};

/// What to quantize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Weights and activations (needs calibration ranges).
    Static,
    /// Weights only; activations stay float.
    WeightOnly,
    /// Weights ahead of time, activations at run time
    /// (`DynamicQuantizeLinear` + `MatMulInteger`).
    Dynamic,
}

/// Activation integer type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActType {
    /// uint8, asymmetric (default).
    U8,
    /// int8, symmetric.
    I8,
    /// uint16, asymmetric (opset 21).
    U16,
    /// int16, symmetric (opset 21).
    I16,
}

impl ActType {
    pub fn target(self) -> QuantTarget {
        let (bits, signed) = match self {
            ActType::U8 => (8, false),
            ActType::I8 => (8, true),
            ActType::U16 => (16, false),
            ActType::I16 => (16, true),
        };
        // Unsigned activations are asymmetric, signed ones symmetric.
        QuantTarget::new(bits, signed, signed).unwrap_or_else(|_| unreachable_target())
    }
    pub fn elem(self) -> DataType {
        match self {
            ActType::U8 => DataType::Uint8,
            ActType::I8 => DataType::Int8,
            ActType::U16 => DataType::Uint16,
            ActType::I16 => DataType::Int16,
        }
    }
    /// The default-domain opset these types need in QuantizeLinear.
    pub fn min_opset(self) -> i64 {
        match self {
            ActType::U8 | ActType::I8 => 10,
            ActType::U16 | ActType::I16 => 21,
        }
    }
    /// The per-tensor [`QuantFormat`] of these activations (the same grid
    /// as [`ActType::target`]).
    pub fn format(self) -> QuantFormat {
        QuantFormat::from(self.target())
    }
}

fn unreachable_target() -> QuantTarget {
    // 8..=16 bits are always valid targets; this is never reached.
    QuantTarget::new(8, false, false).unwrap_or_else(|_| unreachable_target())
}

/// Weight integer type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightType {
    /// int8 symmetric in [-127, 127] (default).
    I8,
    /// uint8 asymmetric.
    U8,
    /// int8 storage, 7-bit codes in [-63, 63] (ONNX Runtime's
    /// `reduce_range`): no two u8 x s8 products of a pair can overflow
    /// the int16 sum of `VPMADDUBSW` (255 x 63 x 2 = 32130), which ONNX
    /// Runtime's integer kernels use on x86 CPUs without VNNI.
    I7,
}

impl WeightType {
    /// The per-tensor [`QuantFormat`] of these weights: narrow int8
    /// (`scale = amax / 127`) or asymmetric uint8.
    pub fn format(self) -> QuantFormat {
        match self {
            WeightType::I8 => QuantFormat::I8_WEIGHT,
            WeightType::U8 => QuantFormat::U8_WEIGHT,
            WeightType::I7 => QuantFormat::I7_WEIGHT,
        }
    }
}

/// Quantizer settings.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeConfig {
    pub mode: Mode,
    pub activations: ActType,
    pub weights: WeightType,
    /// Per-output-channel weight scales (needs opset ≥ 13).
    pub per_channel: bool,
    pub exclude_nodes: Vec<String>,
    pub exclude_op_types: Vec<String>,
    /// Nodes a pass keeps float, and why (SmoothQuant's normalizations
    /// whose output is rescaled before it is quantized): like
    /// `exclude_nodes`, with the pass's reason in the report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_float: Vec<(String, String)>,
    /// Activations whose calibrated |range| exceeds this stay float.
    pub max_abs_range: f32,
    /// Leave the inputs of Softmax float (recommended).
    pub keep_softmax_inputs_float: bool,
    /// Default activation format, overriding `activations` when set (e.g.
    /// float8). Its granularity must be per tensor.
    #[serde(default)]
    pub activation_format: Option<QuantFormat>,
    /// Default weight number scheme, overriding `weights` when set (e.g.
    /// int4); the granularity comes from `per_channel` and
    /// `weight_block_size`.
    #[serde(default)]
    pub weight_format: Option<QuantFormat>,
    /// Block-wise weights: this many elements along the weight's reduction
    /// axis share a scale (opset 21); overrides `per_channel`.
    #[serde(default)]
    pub weight_block_size: Option<usize>,
}

impl QuantizeConfig {
    /// The default format of a quantized activation.
    pub fn default_activation_format(&self) -> QuantFormat {
        self.activation_format
            .map(QuantFormat::per_tensor)
            .unwrap_or_else(|| self.activations.format())
    }

    /// The default weight scheme (granularity per tensor).
    pub fn default_weight_scheme(&self) -> QuantFormat {
        self.weight_format
            .map(QuantFormat::per_tensor)
            .unwrap_or_else(|| self.weights.format())
    }

    /// The lowest default-domain opset that can express this configuration's
    /// default formats (activations in static mode, weights with their
    /// granularity); `None` if a default format has no Q/DQ form (FLOAT16,
    /// BFLOAT16).
    pub fn min_opset(&self) -> Option<i64> {
        let mut need = self.default_weight_scheme().min_opset()?;
        if self.mode == Mode::Static {
            need = need.max(self.default_activation_format().min_opset()?);
        }
        if self.weight_block_size.is_some() {
            need = need.max(21);
        } else if self.per_channel {
            need = need.max(13);
        }
        Some(need)
    }

    /// The default format of compute node `n`'s constant weight (or of an
    /// embedding table): the weight scheme with blocks along the reduction
    /// axis, or per output channel, or per tensor.
    pub fn default_weight_format(&self, g: &Graph, n: NodeId, w: ValueId) -> QuantFormat {
        let scheme = self.default_weight_scheme();
        let rank = g.const_tensor(w).map_or(0, |t| t.dims.len());
        let gran = if let Some(size) = self.weight_block_size.filter(|s| *s > 0) {
            reduction_axis(g, n, rank).map(|axis| Granularity::Block { axis, size })
        } else if self.per_channel {
            weight_axis(g, n, rank).map(|axis| Granularity::PerAxis { axis })
        } else {
            None
        };
        QuantFormat {
            granularity: gran.unwrap_or_default(),
            ..scheme
        }
    }
}

impl Default for QuantizeConfig {
    fn default() -> Self {
        QuantizeConfig {
            mode: Mode::Static,
            activations: ActType::U8,
            weights: WeightType::I8,
            per_channel: true,
            exclude_nodes: Vec::new(),
            exclude_op_types: Vec::new(),
            keep_float: Vec::new(),
            max_abs_range: 1.0e5,
            keep_softmax_inputs_float: true,
            activation_format: None,
            weight_format: None,
            weight_block_size: None,
        }
    }
}

/// One node's decision, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct NodeDecision {
    pub node: String,
    pub op: String,
    pub quantized: bool,
    pub reason: String,
}

/// What [`plan`] decided.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Compute nodes getting quantized weights.
    pub compute: Vec<NodeId>,
    /// Fused element-wise/pooling nodes.
    pub fused: Vec<NodeId>,
    /// Compute node → the Relu/Clip absorbed into its output range.
    pub absorbed: BTreeMap<NodeId, NodeId>,
    /// Activation tensors to calibrate and quantize, in topological order.
    pub activations: Vec<ValueId>,
    /// Tensor → the tensor whose parameters it shares (data movement).
    pub shared: HashMap<ValueId, ValueId>,
    /// Embedding tables (`Gather` data) to quantize (weight-only and static modes).
    pub embeddings: Vec<NodeId>,
    pub decisions: Vec<NodeDecision>,
    /// Format of every planned activation (keys: `activations`). A shared
    /// tensor (key of `shared`) is quantized with its root's parameters and
    /// therefore its root's format; its own entry is ignored. Edit entries
    /// between [`plan`] and [`apply`] for mixed precision (activation
    /// formats must be native Q/DQ formats, per tensor).
    pub formats: HashMap<ValueId, QuantFormat>,
    /// Format of the constant weight of every node in `compute` (and of
    /// every table in `embeddings`), with a concrete granularity (axis in
    /// the weight's own dimensions).
    pub weight_formats: HashMap<NodeId, QuantFormat>,
    /// Constant tensors that feed only weight inputs of recurrent ops
    /// ([`OpRule::Recurrent`], directly or through data movement), with
    /// their format: stored in it behind a DequantizeLinear that keeps the
    /// constant's name, computed on in float.
    pub stored: Vec<(ValueId, QuantFormat)>,
    /// Compute node → per weight group (output channel) of its symmetric
    /// integer weight format, whether that group gets codes one bit
    /// narrower (`[-63, 63]` for int8, its scale `amax / 63`): the
    /// saturation guard's per-channel choice. Same storage type and
    /// DequantizeLinear; ignored for other formats or a group count that
    /// does not match.
    pub weight_narrow: HashMap<NodeId, Vec<bool>>,
    /// Compute node → the pairs of its int8 weight codes that ONNX
    /// Runtime's u8 x s8 kernels on x86 without VNNI add into one
    /// saturating int16, and the output channels whose same-sign pairs are
    /// kept within [`codes::PAIR_LIMIT`] (the saturation guard's "paired"
    /// choice: int8 precision, no saturation). Ignored for other formats
    /// or a layout that does not fit.
    pub weight_pairs: HashMap<NodeId, codes::PairLimit>,
    /// Quantize the weights inside If/Loop/Scan bodies too
    /// ([`crate::subgraphs::quantize_bodies`], run by the driver after
    /// [`apply`]): set by [`plan`] in weight-only and static mode; an empty
    /// plan (`Plan::default()`, `--no-quantize`) leaves bodies alone.
    pub bodies: bool,
}

impl Plan {
    /// The format `apply` uses for activation `v`: its root's entry for
    /// shared tensors, its own otherwise, `default` if it has none.
    pub fn format_of(&self, v: ValueId, default: QuantFormat) -> QuantFormat {
        let root = self.shared.get(&v).copied().unwrap_or(v);
        self.formats.get(&root).copied().unwrap_or(default)
    }

    /// Leaves compute nodes `nodes` float: no integer weights or bias,
    /// no absorbed Relu/Clip; their decisions say `reason`. Their input and
    /// output activations stay planned (a caller leaves them float by
    /// giving them no range).
    pub fn keep_nodes_float(&mut self, g: &Graph, nodes: &[NodeId], reason: &str) {
        self.compute.retain(|n| !nodes.contains(n));
        for n in nodes {
            self.weight_formats.remove(n);
            self.weight_narrow.remove(n);
            self.weight_pairs.remove(n);
            self.absorbed.remove(n);
            // (By name: an unnamed node's decision cannot be told apart.)
            let name = g.node(*n).name();
            if name.is_empty() {
                continue;
            }
            if let Some(d) = self.decisions.iter_mut().find(|d| d.node == name) {
                d.quantized = false;
                d.reason = reason.to_string();
            }
        }
    }

    /// Names of the activation tensors calibration must observe.
    pub fn tensors_to_observe(&self, g: &Graph) -> Vec<String> {
        let mut v: Vec<String> = self
            .activations
            .iter()
            .filter(|t| !self.shared.contains_key(t))
            .map(|t| g.value(*t).name.clone())
            .collect();
        v.dedup();
        v
    }
}

/// The float element types quench quantizes: f32, and f16/bf16, whose
/// Q/DQ take a scale of their own type from opset 19 ([`apply`] leaves
/// them float below it, with a note).
fn is_quantizable_float(elem: i32) -> bool {
    elem == DataType::Float as i32
        || elem == DataType::Float16 as i32
        || elem == DataType::Bfloat16 as i32
}

/// The opset from which QuantizeLinear/DequantizeLinear take a scale of
/// element type `elem` (f32: 10; f16/bf16: 19).
pub(crate) fn scale_min_opset(elem: i32) -> i64 {
    if elem == DataType::Float as i32 {
        10
    } else {
        19
    }
}

/// `scale` rounded to the element type `elem` of a Q/DQ scale (f32, f16
/// or bf16); `None` when the rounded value is not a positive normal number
/// of that type (a scale must be positive; a subnormal f16 scale keeps
/// too few significant bits: rounding could shrink the range enough to
/// clip, where a normal one moves it by at most 2^-11, bf16 2^-8).
/// The scale one weight group is written with: `scale` (its format's,
/// from the group's range), on the paired grid with extreme code
/// `pair_qmax` ([`codes::scale_for_qmax`]), widened to `min_scale` (what
/// keeps an int32 bias in range, [`bias_min_scale`]), rounded to the
/// weight's element type `w_elem`. The saturation guard emulates the codes
/// of exactly this scale.
pub fn weight_group_scale(
    scale: f32,
    pair_qmax: Option<i32>,
    min_scale: Option<f32>,
    w_elem: i32,
) -> Option<f32> {
    let mut s = pair_qmax.map_or(scale, |q| codes::scale_for_qmax(scale, q));
    if let Some(m) = min_scale {
        s = s.max(m);
    }
    round_scale(w_elem, s)
}

/// The smallest weight scale that keeps bias `b` in int32 (with room to
/// spare: 2^30 codes) at input scale `input_scale`.
pub fn bias_min_scale(b: f32, input_scale: f32) -> f32 {
    b.abs() / (input_scale * (1u64 << 30) as f32)
}

fn round_scale(elem: i32, scale: f32) -> Option<f32> {
    let kind = if elem == DataType::Float16 as i32 {
        FloatKind::F16
    } else if elem == DataType::Bfloat16 as i32 {
        FloatKind::BF16
    } else {
        return (scale.is_finite() && scale > 0.0).then_some(scale);
    };
    let r = kind.decode(kind.encode(scale));
    let min_normal = if kind == FloatKind::F16 {
        6.103_515_6e-5
    } else {
        f32::MIN_POSITIVE
    };
    (r.is_finite() && r >= min_normal).then_some(r)
}

/// A non-constant f32, f16 or bf16 tensor. Types come from
/// [`util::infer_elem_types`]; a tensor whose type cannot be told is not
/// quantized.
fn is_float_activation(g: &Graph, types: &HashMap<ValueId, i32>, v: ValueId) -> bool {
    g.const_tensor(v).is_none() && types.get(&v).is_some_and(|e| is_quantizable_float(*e))
}

/// A constant f32, f16 or bf16 tensor.
pub(crate) fn is_float_const(g: &Graph, v: ValueId) -> bool {
    g.const_tensor(v)
        .is_some_and(|t| is_quantizable_float(t.data_type()))
}

fn is_f32_const(g: &Graph, v: ValueId) -> bool {
    g.const_tensor(v)
        .is_some_and(|t| t.data_type() == DataType::Float as i32)
}

/// Decides what to quantize. Pure: the graph is not changed.
pub fn plan(g: &Graph, cfg: &QuantizeConfig) -> Result<Plan, PassError> {
    let order = g.topo_order().map_err(|e| PassError::Failed {
        pass: "quantize".into(),
        msg: e.to_string(),
    })?;
    let mut p = Plan::default();
    let types = util::infer_elem_types(g);
    let is_float_activation = |g: &Graph, v: ValueId| is_float_activation(g, &types, v);
    let mut act: Vec<ValueId> = Vec::new();
    let mut act_set: HashSet<ValueId> = HashSet::new();
    let push = |v: ValueId, act: &mut Vec<ValueId>, set: &mut HashSet<ValueId>| {
        if set.insert(v) {
            act.push(v);
        }
    };
    let excluded = |n: &Node| {
        cfg.exclude_nodes.iter().any(|e| e == n.name())
            || cfg.exclude_op_types.iter().any(|e| e == n.op_type())
            || cfg.keep_float.iter().any(|(e, _)| e == n.name())
    };
    let mut absorbed_relus: HashSet<NodeId> = HashSet::new();

    for &n in &order {
        let node = g.node(n);
        let decide = |q: bool, reason: &str| NodeDecision {
            node: node.name().to_string(),
            op: node.op_type().to_string(),
            quantized: q,
            reason: reason.to_string(),
        };
        if let Some((_, why)) = cfg.keep_float.iter().find(|(e, _)| e == node.name()) {
            p.decisions.push(decide(false, why));
            continue;
        }
        if excluded(node) {
            p.decisions.push(decide(false, "excluded by user"));
            continue;
        }
        if !node.domain().is_empty() {
            p.decisions.push(decide(false, "custom domain stays float"));
            continue;
        }
        match rule(node.kind()) {
            OpRule::Compute { weight, .. } => {
                let (Some(x), Some(w)) = (node.input(0), node.input(weight)) else {
                    p.decisions.push(decide(false, "missing inputs"));
                    continue;
                };
                if g.value(w).def == ValueDef::Outer {
                    p.decisions.push(decide(
                        false,
                        "weights captured from an enclosing graph: stored int8 there when every use of them is a weight",
                    ));
                    continue;
                }
                let w_const = is_float_const(g, w);
                let act_b = node.kind() == OpKind::MatMul && !w_const && is_float_activation(g, w);
                if !w_const && !act_b {
                    p.decisions
                        .push(decide(false, "weights are not a constant float tensor"));
                    continue;
                }
                if cfg.mode == Mode::Dynamic && w_const && !is_f32_const(g, w) {
                    p.decisions
                        .push(decide(false, "dynamic mode quantizes f32 MatMul only"));
                    continue;
                }
                if !is_float_activation(g, x) {
                    p.decisions
                        .push(decide(false, "input is not a float activation"));
                    continue;
                }
                if act_b && cfg.mode != Mode::Static {
                    p.decisions.push(decide(
                        false,
                        "activation × activation MatMul needs static mode",
                    ));
                    continue;
                }
                if cfg.mode == Mode::Dynamic && node.kind() != OpKind::MatMul {
                    p.decisions
                        .push(decide(false, "dynamic mode quantizes MatMul only"));
                    continue;
                }
                p.compute.push(n);
                let wf = w_const.then(|| cfg.default_weight_format(g, n, w));
                if let Some(f) = wf {
                    p.weight_formats.insert(n, f);
                }
                if cfg.mode == Mode::Static {
                    push(x, &mut act, &mut act_set);
                    if act_b {
                        push(w, &mut act, &mut act_set);
                    }
                    if let Some(y) = node.output(0) {
                        let out = output_to_quantize(g, cfg, &excluded, y);
                        if let Some((v, relu)) = out {
                            if let Some(r) = relu {
                                p.absorbed.insert(n, r);
                                absorbed_relus.insert(r);
                            }
                            push(v, &mut act, &mut act_set);
                        }
                    }
                }
                let reason = match wf {
                    Some(f) => weight_reason(&f),
                    None => "activation × activation".to_string(),
                };
                p.decisions.push(decide(true, &reason));
            }
            OpRule::Fused if cfg.mode == Mode::Static => {
                let ins: Vec<ValueId> = node.inputs().iter().flatten().copied().collect();
                let all_act = !ins.is_empty() && ins.iter().all(|v| is_float_activation(g, *v));
                let to_softmax = node.output(0).is_some_and(|y| {
                    g.consumers(y)
                        .iter()
                        .any(|c| g.node(*c).kind() == OpKind::Softmax)
                });
                // x·x and products summed by a Reduce* are the variance of
                // a written-out normalization: precision matters there.
                let square_or_reduced = node.kind() == OpKind::Mul
                    && (ins.windows(2).any(|w| w[0] == w[1])
                        || node.output(0).is_some_and(|y| {
                            g.consumers(y).iter().any(|c| {
                                matches!(
                                    g.node(*c).kind(),
                                    OpKind::ReduceMean | OpKind::ReduceSum | OpKind::Sqrt
                                )
                            })
                        }));
                // Mul, Sigmoid and LeakyRelu pay off only inside an integer
                // chain (SiLU: Conv → Sigmoid → Mul → Conv): inputs already
                // quantized by their producers and an output that feeds an
                // integer op. Elsewhere (hard-swish's `· relu6(x+3) / 6`,
                // GELU) quantizing them adds error and no fused kernel.
                let in_chain = !matches!(
                    node.kind(),
                    OpKind::Mul | OpKind::Sigmoid | OpKind::LeakyRelu
                ) || (ins.iter().all(|v| act_set.contains(v))
                    && node.output(0).is_some_and(|y| {
                        g.consumers(y).iter().any(|c| {
                            matches!(
                                rule(g.node(*c).kind()),
                                OpRule::Compute { .. } | OpRule::Fused | OpRule::Shared
                            )
                        })
                    }));
                if !all_act {
                    p.decisions.push(decide(
                        false,
                        "has constant inputs (e.g. a mask or bias); stays float",
                    ));
                } else if !in_chain {
                    p.decisions.push(decide(
                        false,
                        "not inside an integer chain (inputs float or output feeds float ops); stays float",
                    ));
                } else if square_or_reduced {
                    p.decisions.push(decide(
                        false,
                        "square or reduced product (a written-out normalization); stays float",
                    ));
                } else if to_softmax {
                    p.decisions.push(decide(
                        false,
                        "feeds Softmax (attention scores); stays float",
                    ));
                } else {
                    p.fused.push(n);
                    for v in ins {
                        push(v, &mut act, &mut act_set);
                    }
                    if let Some(y) = node.output(0) {
                        let out = output_to_quantize(g, cfg, &excluded, y);
                        if let Some((v, relu)) = out {
                            if let Some(r) = relu {
                                p.absorbed.insert(n, r);
                                absorbed_relus.insert(r);
                            }
                            push(v, &mut act, &mut act_set);
                        }
                    }
                    p.decisions
                        .push(decide(true, "integer element-wise/pooling"));
                }
            }
            OpRule::Activation if absorbed_relus.contains(&n) => {
                p.decisions
                    .push(decide(true, "absorbed into the previous op's output range"));
            }
            OpRule::Recurrent { weights } => {
                if !matches!(cfg.mode, Mode::WeightOnly | Mode::Static) {
                    p.decisions.push(decide(
                        false,
                        "recurrent weights: dynamic mode quantizes MatMul only",
                    ));
                    continue;
                }
                let mut found = 0;
                let mut captured = false;
                for &slot in weights {
                    let Some(w) = node.input(slot) else { continue };
                    let Some(sources) = weight_sources(g, w) else {
                        continue;
                    };
                    for c in sources {
                        captured |= g.value(c).def == ValueDef::Outer;
                        if p.stored.iter().any(|(s, _)| *s == c)
                            || !is_float_const(g, c)
                            || !weight_hints(g, c, cfg, &|_, _| None)
                                .is_some_and(|h| h.iter().all(|x| matches!(x, WeightHint::Traced)))
                        {
                            continue;
                        }
                        let rank = g.const_tensor(c).map_or(0, |t| t.dims.len());
                        let hints = vec![WeightHint::Traced; 1];
                        if let Some(f) = stored_format(cfg, g, c, &hints, rank) {
                            p.stored.push((c, f));
                            found += 1;
                        }
                    }
                }
                if found > 0 {
                    p.decisions.push(decide(
                        true,
                        "int8 stored weights; the recurrence computes in float",
                    ));
                } else if captured {
                    p.decisions.push(decide(
                        false,
                        "recurrent op: its weights are captured from an enclosing graph and stored int8 there when every use is a weight",
                    ));
                } else {
                    p.decisions.push(decide(
                        false,
                        "recurrent op whose weights are not constant float tensors; stays float",
                    ));
                }
            }
            OpRule::Float(reason) => p.decisions.push(decide(false, reason)),
            OpRule::Shared => {
                // Embedding tables are weights in static mode too: a
                // 30522x384 word table is most of a BERT's bytes.
                if matches!(cfg.mode, Mode::WeightOnly | Mode::Static)
                    && node.kind() == OpKind::Gather
                    && node.input(0).is_some_and(|d| {
                        is_f32_const(g, d) && g.const_tensor(d).is_some_and(|t| t.dims.len() == 2)
                    })
                {
                    p.embeddings.push(n);
                    if let Some(d) = node.input(0) {
                        p.weight_formats
                            .insert(n, cfg.default_weight_format(g, n, d));
                    }
                    p.decisions.push(decide(true, "int8 embedding table"));
                } else {
                    p.decisions.push(decide(
                        false,
                        "data movement (shares its input's quantization)",
                    ));
                }
            }
            _ => p.decisions.push(decide(false, "stays float in this mode")),
        }
    }

    // Data movement between quantized tensors shares its input's parameters.
    for &n in &order {
        let node = g.node(n);
        if rule(node.kind()) != OpRule::Shared || excluded(node) || !node.domain().is_empty() {
            continue;
        }
        let (Some(x), Some(y)) = (node.input(0), node.output(0)) else {
            continue;
        };
        if act_set.contains(&x) && act_set.contains(&y) && node.outputs().len() == 1 {
            let root = p.shared.get(&x).copied().unwrap_or(x);
            p.shared.insert(y, root);
        }
    }

    // Softmax inputs stay float.
    if cfg.keep_softmax_inputs_float {
        act.retain(|v| {
            !g.consumers(*v)
                .iter()
                .any(|c| g.node(*c).kind() == OpKind::Softmax)
        });
    }
    p.bodies = matches!(cfg.mode, Mode::WeightOnly | Mode::Static);
    let act_format = cfg.default_activation_format();
    p.formats = act.iter().map(|v| (*v, act_format)).collect();
    p.activations = act;
    Ok(p)
}

/// The decision text of a node with quantized weights: `"int8 weights"` for
/// the default int8 scheme, otherwise the format spelled out.
fn weight_reason(f: &QuantFormat) -> String {
    if f.scheme == QuantFormat::I8_WEIGHT.scheme {
        return "int8 weights".into();
    }
    let scheme = match f.scheme {
        Scheme::Int(i) => format!(
            "{}int{}{}",
            if i.signed() { "" } else { "u" },
            i.bits(),
            if i.symmetric() { "" } else { " asymmetric" }
        ),
        Scheme::Float(k) => format!("{k:?}").to_lowercase(),
    };
    match f.granularity {
        Granularity::Block { size, .. } => format!("{scheme} weights, blocks of {size}"),
        Granularity::PerAxis { .. } | Granularity::PerTensor => format!("{scheme} weights"),
    }
}

/// The tensor that carries the quantized output `y` of a compute or fused
/// op: `y` itself, or the output of a sole consuming Relu / Clip(0, max)
/// absorbed into the range (returned too; asymmetric activations only).
/// `None` when the output is a graph output (it stays float).
fn output_to_quantize(
    g: &Graph,
    cfg: &QuantizeConfig,
    excluded: &dyn Fn(&Node) -> bool,
    y: ValueId,
) -> Option<(ValueId, Option<NodeId>)> {
    let asymmetric = !cfg.default_activation_format().symmetric();
    let relu = util::sole_consumer(g, y)
        .filter(|r| asymmetric && !excluded(g.node(*r)) && absorbable(g, *r));
    if let Some(r) = relu {
        // Absorbing removes the Relu and renames `y` to its output: a
        // subgraph capturing that output (If/Loop/Scan bodies read it by
        // name, not through the Q/DQ pair) would then read the value before
        // the Relu, so such a Relu stays.
        if let Some(ro) = g
            .node(r)
            .output(0)
            .filter(|o| !g.is_graph_output(*o) && !captured_by_subgraph(g, *o))
        {
            return Some((ro, Some(r)));
        }
    }
    (!g.is_graph_output(y)).then_some((y, None))
}

/// Whether a node's subgraph captures `v` (a use past the node's explicit
/// inputs: see [`quench_ir::Use`]).
fn captured_by_subgraph(g: &Graph, v: ValueId) -> bool {
    g.uses(v)
        .iter()
        .any(|u| u.index >= g.node(u.node).inputs().len())
}

/// Relu, or Clip with a constant lower bound of 0, can be absorbed into an
/// asymmetric output range that starts at 0.
fn absorbable(g: &Graph, r: NodeId) -> bool {
    let node = g.node(r);
    match node.kind() {
        OpKind::Relu => true,
        OpKind::Clip => clip_bounds(g, r).is_some_and(|(lo, hi)| lo == 0.0 && hi > 0.0),
        _ => false,
    }
}

/// The constant bounds of a Clip node (attributes before opset 11, inputs
/// after).
fn clip_bounds(g: &Graph, r: NodeId) -> Option<(f32, f32)> {
    crate::facts::clip_bounds(g, r)
}

/// A calibrated range per activation tensor name.
pub type Ranges = HashMap<String, (f32, f32)>;

/// What [`apply`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QuantSummary {
    pub nodes: Vec<NodeDecision>,
    pub weights_quantized: usize,
    pub biases_quantized: usize,
    pub activations_quantized: usize,
    /// Activation tensors left float, with the reason.
    pub activations_float: Vec<(String, String)>,
    pub absorbed_activations: usize,
    pub per_channel: bool,
    pub notes: Vec<String>,
}

/// Quantized weights: the DequantizeLinear output and the scales (one per
/// group of the format's granularity, in the scale tensor's order).
struct QWeight {
    scales: Vec<f32>,
    dq_out: ValueId,
}

/// Quantizes a constant weight to `fmt` (scale per tensor, per axis or per
/// block) and inserts its DequantizeLinear (with `axis` / `block_size` as
/// the granularity needs). `min_scales` (one, or one per channel) widens
/// the scales of symmetric integer formats so that an int32 bias stays in
/// range. The scales have the weight's element type (f32, or f16/bf16,
/// rounded to it before the codes are computed, so the stored scale is the
/// one the codes were made with) and so has the DQ output. Returns the DQ
/// output and the scales; `None` if the weight is not a finite float
/// tensor, a scale is not a normal number of its type, or the granularity
/// does not fit its shape.
fn quantize_weight(
    g: &mut Graph,
    w: ValueId,
    fmt: QuantFormat,
    min_scales: Option<&[f32]>,
    narrow: Option<&[bool]>,
    pairs: Option<&codes::PairLimit>,
) -> Option<QWeight> {
    let t = g.const_tensor(w)?;
    let dims = t.dims.clone();
    let w_elem = t.data_type();
    let data = tensor::to_f32(t).ok()?;
    if data.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let layout = codes::Layout::new(&dims, fmt.granularity)?;
    let mut lo = vec![0f32; layout.groups];
    let mut hi = vec![0f32; layout.groups];
    for (i, x) in data.iter().enumerate() {
        let c = layout.group(i);
        lo[c] = lo[c].min(*x);
        hi[c] = hi[c].max(*x);
    }
    let widen = matches!(fmt.scheme, Scheme::Int(i) if i.symmetric());
    // One bit narrower in the groups `narrow` names.
    let narrower = one_bit_narrower(fmt);
    let narrow = narrow.filter(|m| m.len() == layout.groups && narrower.is_some());
    let group_fmt = |c: usize| match (narrow.is_some_and(|m| m[c]), narrower) {
        (true, Some(n)) => n,
        _ => fmt,
    };
    let pairs = pairs.filter(|pl| is_full_int8(fmt) && pl.fits(data.len()));
    let pair_qmax = pairs
        .map(|pl| pl.qmax.as_slice())
        .filter(|q| q.len() == layout.groups);
    let mut params = Vec::with_capacity(layout.groups);
    for c in 0..layout.groups {
        let mut p = group_fmt(c).params(lo[c], hi[c]).ok()?;
        // A channel of tiny weights next to a large bias would need a bias
        // beyond int32: widen that channel's scale instead.
        let min = min_scales
            .filter(|_| widen)
            .and_then(|m| m.get(if m.len() == 1 { 0 } else { c }))
            .copied();
        p.scale = weight_group_scale(p.scale, pair_qmax.map(|q| q[c]), min, w_elem)?;
        params.push(p);
    }
    let mut q: Vec<i32> = data
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let c = layout.group(i);
            group_fmt(c).quantize(*x, &params[c])
        })
        .collect();
    // Same-sign pairs kept within the pair limit (full int8 grids only).
    if let Some(pl) = pairs {
        pl.apply(&mut q, |i| data[i] / params[layout.group(i)].scale);
    }
    let elem = fmt.elem();
    let base = g.value(w).name.clone();
    let qv = g.add_const(&format!("{base}_quantized"), codes::encode(elem, &dims, &q));
    let scales: Vec<f32> = params.iter().map(|p| p.scale).collect();
    let zps: Vec<i32> = params.iter().map(|p| p.zero_point).collect();
    let sv = g.add_const(
        &format!("{base}_scale"),
        codes::float_const(w_elem, &layout.scale_dims, &scales),
    );
    let zv = g.add_const(
        &format!("{base}_zero_point"),
        codes::encode(elem, &layout.scale_dims, &zps),
    );
    let out = g.add_value(
        &format!("{base}_dequantized"),
        Some(tensor::tensor_type_of(w_elem, &dims)),
    );
    let mut dq = Node::new(
        "DequantizeLinear",
        &g.unique_name(&format!("{base}_DequantizeLinear")),
    );
    match fmt.granularity {
        Granularity::PerTensor => {}
        Granularity::PerAxis { axis } => dq.set_attr(quench_ir::attr::int("axis", axis as i64)),
        Granularity::Block { axis, size } => {
            dq.set_attr(quench_ir::attr::int("axis", axis as i64));
            dq.set_attr(quench_ir::attr::int("block_size", size as i64));
        }
    }
    g.add_node(dq, &[Some(qv), Some(sv), Some(zv)], &[Some(out)]);
    Some(QWeight {
        scales,
        dq_out: out,
    })
}

/// Whether `fmt` is the symmetric int8 grid `[-127, 127]` (or its
/// `[-128, 127]` variant) that [`codes::PairLimit`] is about.
pub fn is_full_int8(fmt: QuantFormat) -> bool {
    matches!(fmt.scheme, Scheme::Int(i) if i.bits() == 8 && i.signed() && i.symmetric())
}

/// The grid one bit narrower than the signed symmetric integer format
/// `fmt`, same granularity (int8 `[-127, 127]` -> `[-63, 63]`): what
/// [`Plan::weight_narrow`] gives a group. `None` for other formats.
pub fn one_bit_narrower(fmt: QuantFormat) -> Option<QuantFormat> {
    match fmt.scheme {
        Scheme::Int(i) if i.symmetric() && i.signed() && i.bits() > 2 => {
            IntFormat::new(i.bits() - 1, true, true, i.narrow())
                .ok()
                .map(|n| QuantFormat {
                    scheme: Scheme::Int(n),
                    granularity: fmt.granularity,
                })
        }
        _ => None,
    }
}

/// Quantizes constant `w` to `fmt` behind a DequantizeLinear whose output
/// takes `w`'s name, so that every use, including subgraphs that capture
/// it by name, reads the dequantized tensor unchanged. `false` (graph
/// unchanged) when [`quantize_weight`] declines.
pub(crate) fn quantize_in_place(g: &mut Graph, w: ValueId, fmt: QuantFormat) -> bool {
    let name = g.value(w).name.clone();
    let ty = g.value(w).ty.clone();
    let Some(q) = quantize_weight(g, w, fmt, None, None, None) else {
        return false;
    };
    g.replace_all_uses(w, q.dq_out);
    g.remove_const(w);
    let old = g.unique_name(&format!("{name}_float"));
    if g.rename_value(w, &old) {
        let _ = g.rename_value(q.dq_out, &name);
    }
    g.value_mut(q.dq_out).ty = ty;
    true
}

/// How a constant weight is consumed, for its per-channel axis: by a
/// compute op directly (its [`facts::weight_axis`](crate::facts::weight_axis)
/// applies) or through data movement (slices, concatenations, reshapes),
/// where no consumer axis is known.
#[derive(Debug, Clone)]
pub(crate) enum WeightHint {
    Direct(Box<Node>),
    Traced,
}

/// The format of a stored weight (a constant reached through data movement
/// or captured by subgraphs): the configuration's weight scheme, per tensor
/// without per-channel; with it, the consumers' common output-channel axis
/// when every consumer is a direct compute op agreeing on one, else the
/// axis whose per-axis grid has the least squared rounding error (any axis
/// is exact for DequantizeLinear; the choice only decides which elements
/// share a scale). `None` when the tensor is not a finite float tensor.
pub(crate) fn stored_format(
    cfg: &QuantizeConfig,
    g: &Graph,
    w: ValueId,
    hints: &[WeightHint],
    rank: usize,
) -> Option<QuantFormat> {
    let scheme = cfg.default_weight_scheme();
    if !cfg.per_channel || rank == 0 {
        return Some(scheme);
    }
    let axes: Vec<Option<usize>> = hints
        .iter()
        .map(|h| match h {
            WeightHint::Direct(n) => crate::facts::weight_axis(n, rank),
            WeightHint::Traced => None,
        })
        .collect();
    if let Some(Some(a)) = axes.first() {
        if axes.iter().all(|x| *x == Some(*a)) {
            return Some(QuantFormat {
                granularity: Granularity::PerAxis { axis: *a },
                ..scheme
            });
        }
    }
    let t = g.const_tensor(w)?;
    let data = tensor::to_f32(t).ok()?;
    if data.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let mut best: Option<(f64, QuantFormat)> = None;
    for axis in 0..rank {
        let f = QuantFormat {
            granularity: Granularity::PerAxis { axis },
            ..scheme
        };
        let Some(err) = rounding_error(&t.dims, &data, f) else {
            continue;
        };
        if best.as_ref().is_none_or(|(e, _)| err < *e) {
            best = Some((err, f));
        }
    }
    Some(best.map_or(scheme, |(_, f)| f))
}

/// Sum of squared rounding errors of `data` (shape `dims`) in format `f`.
fn rounding_error(dims: &[i64], data: &[f32], f: QuantFormat) -> Option<f64> {
    let layout = codes::Layout::new(dims, f.granularity)?;
    let mut lo = vec![0f32; layout.groups];
    let mut hi = vec![0f32; layout.groups];
    for (i, x) in data.iter().enumerate() {
        let c = layout.group(i);
        lo[c] = lo[c].min(*x);
        hi[c] = hi[c].max(*x);
    }
    let params: Vec<QuantParams> = (0..layout.groups)
        .map(|c| f.params(lo[c], hi[c]).ok())
        .collect::<Option<_>>()?;
    Some(
        data.iter()
            .enumerate()
            .map(|(i, x)| {
                let d = (f.fake_quantize(*x, &params[layout.group(i)]) - x) as f64;
                d * d
            })
            .sum(),
    )
}

/// Whether every output element of the op is a copy of an element of its
/// data inputs ([`crate::facts::moves_data`], plus Concat): a weight can be
/// quantized before such an op as well as after it.
fn copies_elements(k: OpKind) -> bool {
    crate::facts::moves_data(k) || k == OpKind::Concat
}

/// The inputs an element-copying op ([`copies_elements`]) reads its data
/// from: every input of a Concat, input 0 of the others (shapes, indices
/// and axes are not data).
fn is_data_input(node: &Node, index: usize) -> bool {
    node.kind() == OpKind::Concat || index == 0
}

/// The constants (or, in a subgraph, the captured outer values) that `v`
/// is made of through element-copying ops ([`copies_elements`]) only; `None`
/// when some part of it comes from anything else (a graph input, a
/// computation).
pub(crate) fn weight_sources(g: &Graph, v: ValueId) -> Option<Vec<ValueId>> {
    let mut out = Vec::new();
    let mut stack = vec![v];
    let mut seen = HashSet::new();
    while let Some(v) = stack.pop() {
        if !seen.insert(v) {
            continue;
        }
        match g.value(v).def {
            ValueDef::Const | ValueDef::Outer => out.push(v),
            ValueDef::Node { node, .. } => {
                let n = g.node(node);
                if !copies_elements(n.kind()) || !n.domain().is_empty() {
                    return None;
                }
                for (i, x) in n.inputs().iter().enumerate() {
                    if let Some(x) = x.filter(|_| is_data_input(n, i)) {
                        stack.push(x);
                    }
                }
            }
            ValueDef::Input | ValueDef::Undefined => return None,
        }
    }
    Some(out)
}

/// The uses of `v` as [`WeightHint`]s when every use is a weight: a
/// compute op's weight input, a recurrent op's weight input (directly or
/// through data movement), or a subgraph capture for which
/// `captured(node, value)` returns the hints of the uses inside the
/// bodies. `None` when some use is not a weight: a graph output, a node
/// the user excluded, any other input, or a capture `captured` refuses.
pub(crate) fn weight_hints(
    g: &Graph,
    v: ValueId,
    cfg: &QuantizeConfig,
    captured: &dyn Fn(NodeId, ValueId) -> Option<Vec<WeightHint>>,
) -> Option<Vec<WeightHint>> {
    let mut hints = Vec::new();
    let mut stack = vec![(v, false)];
    let mut seen = HashSet::new();
    while let Some((v, traced)) = stack.pop() {
        if !seen.insert(v) {
            continue;
        }
        if g.is_graph_output(v) {
            return None;
        }
        for u in g.uses(v) {
            let n = g.node(u.node);
            if cfg.exclude_nodes.iter().any(|e| e == n.name())
                || cfg.exclude_op_types.iter().any(|e| e == n.op_type())
                || cfg.keep_float.iter().any(|(e, _)| e == n.name())
            {
                return None;
            }
            if u.index >= n.inputs().len() {
                let inner = captured(u.node, v)?;
                hints.extend(
                    inner
                        .into_iter()
                        .map(|h| if traced { WeightHint::Traced } else { h }),
                );
                continue;
            }
            if !n.domain().is_empty() {
                return None;
            }
            if copies_elements(n.kind()) && is_data_input(n, u.index) {
                for o in n.outputs().iter().flatten() {
                    stack.push((*o, true));
                }
                continue;
            }
            match rule(n.kind()) {
                OpRule::Compute { weight, .. } if weight == u.index => hints.push(if traced {
                    WeightHint::Traced
                } else {
                    WeightHint::Direct(Box::new(n.clone()))
                }),
                OpRule::Recurrent { weights } if weights.contains(&u.index) => {
                    hints.push(WeightHint::Traced)
                }
                OpRule::Compute { .. }
                | OpRule::Recurrent { .. }
                | OpRule::Shared
                | OpRule::Fused
                | OpRule::Activation
                | OpRule::Float(_) => return None,
            }
        }
    }
    Some(hints)
}

/// Axis of a compute op's weight that its product sums over (the axis
/// blocks run along): Conv `[O, I, ...]` 1, ConvTranspose `[I, O, ...]` 0,
/// Gemm `K` (0, or 1 with `transB`), MatMul the second-to-last, Gather
/// (embedding rows) the last.
fn reduction_axis(g: &Graph, n: NodeId, wdims: usize) -> Option<usize> {
    let node = g.node(n);
    match node.kind() {
        OpKind::Conv => (wdims >= 2).then_some(1),
        OpKind::ConvTranspose => (wdims >= 1).then_some(0),
        OpKind::Gemm => Some(usize::from(node.attr_int("transB").unwrap_or(0) != 0)),
        OpKind::MatMul => wdims.checked_sub(2),
        OpKind::Gather => wdims.checked_sub(1),
        _ => None,
    }
}

/// Per-channel axis of a compute op's weight.
fn weight_axis(g: &Graph, n: NodeId, wdims: usize) -> Option<usize> {
    crate::facts::weight_axis(g.node(n), wdims)
}

/// Inserts `x → Q → DQ` and points every node use of `x` (except the new Q)
/// at the DQ output. Graph outputs keep `x`. `x_elem` is `x`'s element
/// type (f32, f16 or bf16): the scale and the DQ output have it, and
/// `qp.scale` must be representable in it ([`round_scale`]).
fn insert_qdq(
    g: &mut Graph,
    x: ValueId,
    qp: QuantParams,
    fmt: QuantFormat,
    x_elem: i32,
) -> ValueId {
    let base = g.value(x).name.clone();
    let elem = codes::data_type(fmt.elem());
    let sv = g.add_const(
        &format!("{base}_scale"),
        codes::float_const(x_elem, &[], &[qp.scale]),
    );
    let zv = g.add_const(
        &format!("{base}_zero_point"),
        codes::encode(fmt.elem(), &[], &[qp.zero_point]),
    );
    let shape = g.value(x).ty.clone();
    let qo = g.add_value(&format!("{base}_quantized"), None);
    let dqo = g.add_value(&format!("{base}_dequantized"), None);
    if let Some(t) = shape {
        let with_elem = |e: i32| {
            let mut t = t.clone();
            if let Some(quench_onnx::proto::type_proto::Value::TensorType(tt)) = t.value.as_mut() {
                tt.elem_type = Some(e);
            }
            t
        };
        g.value_mut(qo).ty = Some(with_elem(elem as i32));
        g.value_mut(dqo).ty = Some(with_elem(x_elem));
    }
    g.replace_node_uses(x, dqo);
    let q = Node::new(
        "QuantizeLinear",
        &g.unique_name(&format!("{base}_QuantizeLinear")),
    );
    g.add_node(q, &[Some(x), Some(sv), Some(zv)], &[Some(qo)]);
    let dq = Node::new(
        "DequantizeLinear",
        &g.unique_name(&format!("{base}_DequantizeLinear")),
    );
    g.add_node(dq, &[Some(qo), Some(sv), Some(zv)], &[Some(dqo)]);
    dqo
}

/// Rewrites the graph following `plan` with calibrated `ranges` (static
/// mode) — see the module docs. `opset` is the model's default-domain opset.
pub fn apply(
    g: &mut Graph,
    plan: &Plan,
    ranges: &Ranges,
    cfg: &QuantizeConfig,
    opset: i64,
    cx: &mut PassCx,
) -> Result<QuantSummary, PassError> {
    let fail = |msg: String| PassError::Failed {
        pass: "quantize".into(),
        msg,
    };
    let mut s = QuantSummary {
        nodes: plan.decisions.clone(),
        ..Default::default()
    };
    let nothing = plan.compute.is_empty()
        && plan.stored.is_empty()
        && plan.activations.is_empty()
        && plan.embeddings.is_empty()
        && plan.fused.is_empty();
    if nothing {
        // Nothing to rewrite (e.g. a model of ai.onnx.ml ops only, or
        // `--no-quantize`): whatever the opset, the graph stays as it is.
        return Ok(s);
    }
    if opset < 10 {
        return Err(fail(format!("the model's opset {opset} predates QuantizeLinear (opset 10); convert the model to opset 13 or newer first")));
    }
    if cfg.mode == Mode::Static {
        let default = cfg.default_activation_format();
        for &v in &plan.activations {
            let f = plan.format_of(v, default);
            let name = &g.value(v).name;
            if !f.native() || f.granularity != Granularity::PerTensor {
                return Err(fail(format!(
                    "tensor `{name}`: activations cannot be quantized at run time to {f:?} (QuantizeLinear has no exact per-tensor form of it)"
                )));
            }
            match f.min_opset() {
                Some(m) if opset < m => {
                    return Err(fail(format!(
                        "tensor `{name}`: {:?} activations need opset {m} but the model has opset {opset}",
                        f.elem()
                    )))
                }
                Some(_) => {}
                None => {
                    return Err(fail(format!(
                        "tensor `{name}`: {:?} is not a QuantizeLinear type",
                        f.elem()
                    )))
                }
            }
        }
    }
    // Element types before any rewrite: f16/bf16 tensors get scales of
    // their own type (opset 19 and later).
    let types = util::infer_elem_types(g);
    let elem_of = |v: ValueId| types.get(&v).copied().unwrap_or(DataType::Float as i32);
    let per_channel = cfg.per_channel && opset >= 13;
    if cfg.per_channel && !per_channel {
        s.notes.push(format!(
            "opset {opset} < 13 has no per-axis DequantizeLinear: weights are quantized per tensor"
        ));
    }
    s.per_channel = per_channel;

    // 1. Activation parameters (static).
    let mut params: HashMap<ValueId, QuantParams> = HashMap::new();
    let mut float_acts: HashSet<ValueId> = HashSet::new();
    if cfg.mode == Mode::Static {
        let default = cfg.default_activation_format();
        // Absorbed Relu/Clip by its output, built once (a search of
        // `plan.absorbed` per activation was quadratic on long chains);
        // the first in `absorbed` order wins, as a search would find.
        let mut absorbed_by_output: HashMap<ValueId, NodeId> = HashMap::new();
        for &r in plan.absorbed.values() {
            if let Some(o) = g.node(r).output(0) {
                absorbed_by_output.entry(o).or_insert(r);
            }
        }
        for &v in &plan.activations {
            let format = plan.format_of(v, default);
            let root = plan.shared.get(&v).copied().unwrap_or(v);
            let name = g.value(root).name.clone();
            let Some(&(mut lo, mut hi)) = ranges.get(&name) else {
                s.activations_float
                    .push((g.value(v).name.clone(), "no calibration range".into()));
                float_acts.insert(v);
                continue;
            };
            if !lo.is_finite() || !hi.is_finite() || lo.abs().max(hi.abs()) > cfg.max_abs_range {
                s.activations_float.push((
                    g.value(v).name.clone(),
                    format!("extreme range [{lo:e}, {hi:e}] (e.g. an attention mask)"),
                ));
                float_acts.insert(v);
                continue;
            }
            // An absorbed Clip bounds the range.
            if let Some(&r) = absorbed_by_output.get(&v) {
                if let Some((clo, chi)) = clip_bounds(g, r) {
                    lo = lo.max(clo);
                    hi = hi.min(chi);
                }
            }
            let elem = elem_of(v);
            let need = scale_min_opset(elem);
            if opset < need {
                s.activations_float.push((
                    g.value(v).name.clone(),
                    format!(
                        "{} tensor: QuantizeLinear takes {} input from opset {need}; the model has opset {opset}",
                        quench_onnx::dtype::elem_name(elem),
                        quench_onnx::dtype::elem_name(elem)
                    ),
                ));
                float_acts.insert(v);
                continue;
            }
            let mut qp = format
                .params(lo, hi.max(lo))
                .map_err(|e| fail(format!("tensor `{name}`: {e}")))?;
            let Some(scale) = round_scale(elem, qp.scale) else {
                s.activations_float.push((
                    g.value(v).name.clone(),
                    format!(
                        "scale {:e} is not a normal {} number",
                        qp.scale,
                        quench_onnx::dtype::elem_name(elem)
                    ),
                ));
                float_acts.insert(v);
                continue;
            };
            qp.scale = scale;
            params.insert(v, qp);
        }
        // Shared tensors whose root is float stay float too.
        for (&v, &root) in &plan.shared {
            if float_acts.contains(&root) {
                params.remove(&v);
            } else if let Some(qp) = params.get(&root).copied() {
                params.insert(v, qp);
            }
        }
    }

    // 2. Absorb Relu/Clip into compute outputs whose range was kept.
    for (&n, &r) in &plan.absorbed {
        let Some(ro) = g.node(r).output(0) else {
            continue;
        };
        if !params.contains_key(&ro) {
            continue;
        }
        let Some(ri) = g.node(r).input(0) else {
            continue;
        };
        if g.producer(ri) != Some(n) {
            continue;
        }
        g.remove_node(r);
        g.set_node_output(n, 0, ro);
        s.absorbed_activations += 1;
    }

    // 3. Weights and biases.
    let mut dq_cache: HashMap<(ValueId, QuantFormat), (ValueId, Vec<f32>)> = HashMap::new();
    let mut dyn_cache: HashMap<ValueId, Vec<ValueId>> = HashMap::new();
    for &n in &plan.compute {
        let node = g.node(n).clone();
        let OpRule::Compute { weight, bias } = rule(node.kind()) else {
            continue;
        };
        let Some(w) = node.input(weight) else {
            continue;
        };
        if g.const_tensor(w).is_none() {
            continue; // activation × activation MatMul
        }
        if cfg.mode == Mode::Dynamic {
            // int8 codes, or 7-bit ones where the plan asks for them
            // (`--weights i7`, the saturation guard); other formats keep
            // the fixed int8 scheme.
            let wf = plan
                .weight_formats
                .get(&n)
                .copied()
                .unwrap_or_else(|| cfg.default_weight_format(g, n, w));
            let qmax = match wf.scheme {
                Scheme::Int(i) if i.signed() && i.symmetric() && i.bits() == 7 => i.qmax(),
                _ => 127,
            };
            dynamic_matmul(g, n, per_channel, qmax, plan, &mut dyn_cache, &mut s).map_err(fail)?;
            continue;
        }
        let wf = weight_format_at(plan, cfg, g, n, w, opset).map_err(fail)?;
        let w_elem = g.const_tensor(w).map_or(0, |t| t.data_type());
        let need = scale_min_opset(w_elem);
        // The decision names the format actually used (the plan may have
        // been edited after `plan` wrote it).
        if let Some(d) = s.nodes.iter_mut().find(|d| d.node == node.name()) {
            if opset < need {
                d.quantized = false;
                d.reason = format!(
                    "{} weights: DequantizeLinear has a {} scale from opset {need}; the model has opset {opset}",
                    quench_onnx::dtype::elem_name(w_elem),
                    quench_onnx::dtype::elem_name(w_elem)
                );
            } else {
                d.reason = weight_reason(&wf);
            }
        }
        if opset < need {
            continue;
        }
        let w_axis = match wf.granularity {
            Granularity::PerAxis { axis } => Some(axis),
            Granularity::PerTensor | Granularity::Block { .. } => None,
        };
        // An int32 bias needs one weight scale per output channel (or one)
        // and integer input and weight grids.
        let bias_ok = !matches!(wf.granularity, Granularity::Block { .. })
            && wf.even_grid()
            && node.input(0).is_some_and(|x| {
                params.contains_key(&x)
                    && plan
                        .format_of(x, cfg.default_activation_format())
                        .even_grid()
            });
        let (dq_out, scales) = match dq_cache.get(&(w, wf)) {
            Some(c) => c.clone(),
            None => {
                // Smallest weight scales that keep the int32 bias in range.
                let min_scales: Option<Vec<f32>> = (|| {
                    let b = bias.and_then(|b| node.input(b))?;
                    let xp = params.get(&node.input(0)?)?;
                    let bt = g.const_tensor(b)?;
                    let bv = tensor::to_f32(bt).ok()?;
                    let per: Vec<f32> = bv.iter().map(|v| bias_min_scale(*v, xp.scale)).collect();
                    Some(if w_axis.is_some() {
                        per
                    } else {
                        vec![per.iter().fold(0f32, |m, v| m.max(*v))]
                    })
                })();
                let min_scales = min_scales.filter(|_| bias_ok);
                let Some(q) = quantize_weight(
                    g,
                    w,
                    wf,
                    min_scales.as_deref(),
                    plan.weight_narrow.get(&n).map(Vec::as_slice),
                    plan.weight_pairs.get(&n),
                ) else {
                    s.notes.push(format!(
                        "node `{}`: weights not finite (or a scale not a normal number of their type); left float",
                        node.name()
                    ));
                    continue;
                };
                s.weights_quantized += 1;
                dq_cache.insert((w, wf), (q.dq_out, q.scales.clone()));
                (q.dq_out, q.scales)
            }
        };
        g.set_input(n, weight, Some(dq_out));
        if !bias_ok {
            continue;
        }
        // Bias: int32 with scale = input scale × weight scale.
        let (Some(bi), Some(x)) = (bias.and_then(|b| node.input(b)), node.input(0)) else {
            continue;
        };
        let (Some(xp), Some(bt)) = (params.get(&x).copied(), g.const_tensor(bi).cloned()) else {
            continue;
        };
        if cfg.mode != Mode::Static
            || bt.dims.len() != 1
            || bt.data_type() != DataType::Float as i32
        {
            continue;
        }
        let Ok(b) = tensor::to_f32(&bt) else { continue };
        let c = b.len();
        if scales.len() != 1 && scales.len() != c {
            continue;
        }
        let Some((bs, q)) = bias_codes(&b, xp.scale, &scales) else {
            s.notes.push(format!(
                "node `{}`: bias too large for int32 at this scale; left float",
                node.name()
            ));
            continue;
        };
        let base = g.value(bi).name.clone();
        let qv = g.add_const(
            &format!("{base}_quantized"),
            tensor::from_i32("", &[c as i64], &q),
        );
        let (sv, zv, axis) = if bs.len() > 1 && w_axis.is_some() {
            (
                g.add_const(
                    &format!("{base}_scale"),
                    tensor::from_f32("", &[c as i64], &bs),
                ),
                g.add_const(
                    &format!("{base}_zero_point"),
                    tensor::from_i32("", &[c as i64], &vec![0; c]),
                ),
                true,
            )
        } else {
            (
                g.add_const(
                    &format!("{base}_scale"),
                    tensor::from_f32("", &[], &bs[..1]),
                ),
                g.add_const(
                    &format!("{base}_zero_point"),
                    tensor::from_i32("", &[], &[0]),
                ),
                false,
            )
        };
        if bs.len() > 1 && w_axis.is_none() {
            continue;
        }
        let out = g.add_value(&format!("{base}_dequantized"), None);
        let mut dq = Node::new(
            "DequantizeLinear",
            &g.unique_name(&format!("{base}_DequantizeLinear")),
        );
        if axis {
            dq.set_attr(quench_ir::attr::int("axis", 0));
        }
        g.add_node(dq, &[Some(qv), Some(sv), Some(zv)], &[Some(out)]);
        g.set_input(n, bias.unwrap_or(2), Some(out));
        s.biases_quantized += 1;
    }

    // 4. Embedding tables (weight-only and static).
    for &n in &plan.embeddings {
        let Some(d) = g.node(n).input(0) else {
            continue;
        };
        let wf = weight_format_at(plan, cfg, g, n, d, opset).map_err(fail)?;
        if let Some(q) = quantize_weight(g, d, wf, None, None, None) {
            g.set_input(n, 0, Some(q.dq_out));
            s.weights_quantized += 1;
        }
    }

    // 4b. Stored weights of recurrent ops (weight-only and static).
    for &(c, f) in &plan.stored {
        let f = if opset < 13 && matches!(f.granularity, Granularity::PerAxis { .. }) {
            f.per_tensor()
        } else {
            f
        };
        if f.min_opset().is_none_or(|m| m > opset)
            || g.const_tensor(c)
                .is_none_or(|t| opset < scale_min_opset(t.data_type()))
        {
            s.notes.push(format!(
                "tensor `{}`: its format needs a newer opset than {opset}; left float",
                g.value(c).name
            ));
            continue;
        }
        if quantize_in_place(g, c, f) {
            s.weights_quantized += 1;
        }
    }

    // 5. Activations.
    for &v in &plan.activations {
        let Some(qp) = params.get(&v).copied() else {
            continue;
        };
        if g.value(v).def == ValueDef::Undefined {
            continue;
        }
        let elem = elem_of(v);
        insert_qdq(
            g,
            v,
            qp,
            plan.format_of(v, cfg.default_activation_format()),
            elem,
        );
        s.activations_quantized += 1;
    }

    cx.count("quantize", "weights", s.weights_quantized);
    cx.count("quantize", "activations", s.activations_quantized);
    Ok(s)
}

/// The format of node `n`'s constant weight `w` at `opset`: the plan's
/// entry (or the configuration's default), per axis lowered to per tensor
/// below opset 13 (noted by [`apply`]); errors if the format needs a newer
/// opset or has no Q/DQ form.
fn weight_format_at(
    plan: &Plan,
    cfg: &QuantizeConfig,
    g: &Graph,
    n: NodeId,
    w: ValueId,
    opset: i64,
) -> Result<QuantFormat, String> {
    let mut f = plan
        .weight_formats
        .get(&n)
        .copied()
        .unwrap_or_else(|| cfg.default_weight_format(g, n, w));
    if opset < 13 && matches!(f.granularity, Granularity::PerAxis { .. }) {
        f = f.per_tensor();
    }
    match f.min_opset() {
        Some(m) if m <= opset => Ok(f),
        Some(m) => Err(format!(
            "node `{}`: weight format {f:?} needs opset {m} but the model has opset {opset}",
            g.node(n).name()
        )),
        None => Err(format!(
            "node `{}`: {:?} weights have no DequantizeLinear form",
            g.node(n).name(),
            f.elem()
        )),
    }
}

/// Dynamic quantization of `MatMul(x, W)`: W becomes int8 ahead of time
/// (codes in `[-qmax, qmax]`), x is quantized at run time:
/// `DynamicQuantizeLinear(x) → MatMulInteger → Cast → × (x_scale · w_scale)`.
fn dynamic_matmul(
    g: &mut Graph,
    n: NodeId,
    per_channel: bool,
    qmax: i32,
    plan: &Plan,
    cache: &mut HashMap<ValueId, Vec<ValueId>>,
    s: &mut QuantSummary,
) -> Result<(), String> {
    let node = g.node(n).clone();
    let (Some(x), Some(w), Some(y)) = (node.input(0), node.input(1), node.output(0)) else {
        return Ok(());
    };
    let Some(wt) = g.const_tensor(w).cloned() else {
        return Ok(());
    };
    if wt.dims.len() != 2 {
        s.notes.push(format!(
            "node `{}`: dynamic mode needs a 2-D weight; left float",
            node.name()
        ));
        return Ok(());
    }
    let cols = wt.dims[1] as usize;
    let data = tensor::to_f32(&wt).map_err(|e| e.to_string())?;
    let channels = if per_channel { cols } else { 1 };
    let mut amax = vec![0f32; channels];
    for (i, v) in data.iter().enumerate() {
        let c = if per_channel { i % cols } else { 0 };
        amax[c] = amax[c].max(v.abs());
    }
    // One bit narrower in the channels the plan's `weight_narrow` names;
    // paired codes in its `weight_pairs` ones.
    let narrow = plan
        .weight_narrow
        .get(&n)
        .map(Vec::as_slice)
        .filter(|m| m.len() == channels);
    let pairs = plan
        .weight_pairs
        .get(&n)
        .filter(|pl| qmax == 127 && pl.fits(data.len()));
    let pair_qmax = pairs
        .map(|pl| pl.qmax.as_slice())
        .filter(|q| q.len() == channels);
    // Per channel: the extreme code, and whether it is a paired grid
    // (whose scale is the full grid's widened, as the saturation guard
    // computes it).
    let grids: Vec<(i32, bool)> = (0..channels)
        .map(|c| {
            if narrow.is_some_and(|m| m[c]) {
                ((qmax + 1) / 2 - 1, false)
            } else if let Some(q) = pair_qmax.map(|q| q[c]).filter(|q| (1..127).contains(q)) {
                (q, true)
            } else {
                (qmax, false)
            }
        })
        .collect();
    let qmaxes: Vec<i32> = grids.iter().map(|g| g.0).collect();
    let scales: Vec<f32> = amax
        .iter()
        .zip(&grids)
        .map(|(a, &(q, paired))| {
            if *a <= 0.0 {
                1.0
            } else if paired {
                codes::scale_for_qmax(a / qmax as f32, q)
            } else {
                a / q as f32
            }
        })
        .collect();
    let channel = |i: usize| if per_channel { i % cols } else { 0 };
    let mut q: Vec<i32> = data
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let c = channel(i);
            quench_calib::quantize_f32(*v, scales[c], 0, -qmaxes[c], qmaxes[c])
        })
        .collect();
    // Same-sign pairs kept within the pair limit (full int8 codes only).
    if let Some(pl) = pairs {
        pl.apply(&mut q, |i| data[i] / scales[channel(i)]);
    }
    let q: Vec<i8> = q.iter().map(|v| *v as i8).collect();
    let base = g.value(w).name.clone();
    let wq = g.add_const(
        &format!("{base}_quantized"),
        tensor::from_i8("", &wt.dims, &q),
    );
    let zdims: Vec<i64> = if per_channel {
        vec![cols as i64]
    } else {
        vec![]
    };
    let wz = g.add_const(
        &format!("{base}_zero_point"),
        tensor::from_i8("", &zdims, &vec![0i8; channels]),
    );
    let ws = g.add_const(
        &format!("{base}_scale"),
        tensor::from_f32("", &zdims, &scales),
    );
    let xb = g.value(x).name.clone();
    // One DynamicQuantizeLinear per input tensor, shared by its MatMuls.
    let dq = match cache.get(&x) {
        Some(d) => d.clone(),
        None => {
            let (_, d) = g.add_op(
                Node::new(
                    "DynamicQuantizeLinear",
                    &g.unique_name(&format!("{xb}_DynamicQuantizeLinear")),
                ),
                &[x],
                &[
                    &format!("{xb}_quantized"),
                    &format!("{xb}_scale"),
                    &format!("{xb}_zero_point"),
                ],
            );
            cache.insert(x, d.clone());
            d
        }
    };
    let mut mmi = Node::new(
        "MatMulInteger",
        &g.unique_name(&format!("{}_MatMulInteger", node.name())),
    );
    mmi.proto.doc_string = None;
    let acc = g.add_value(&format!("{}_int32", g.value(y).name), None);
    g.add_node(
        mmi,
        &[Some(dq[0]), Some(wq), Some(dq[2]), Some(wz)],
        &[Some(acc)],
    );
    let mut cast = Node::new("Cast", &g.unique_name(&format!("{}_Cast", node.name())));
    cast.set_attr(quench_ir::attr::int("to", DataType::Float as i64));
    let (_, accf) = g.add_op(cast, &[acc], &[&format!("{}_float", g.value(y).name)]);
    let (_, sc) = g.add_op(
        Node::new("Mul", &g.unique_name(&format!("{}_scale_Mul", node.name()))),
        &[dq[1], ws],
        &[&format!("{}_scale", g.value(y).name)],
    );
    g.remove_node(n);
    let mul = Node::new(
        "Mul",
        &g.unique_name(&format!("{}_output_Mul", node.name())),
    );
    g.add_node(mul, &[Some(accf[0]), Some(sc[0])], &[Some(y)]);
    s.weights_quantized += 1;
    Ok(())
}

/// An int32 bias as `apply` writes it: per channel the scale `input_scale
/// x weight scale` (`weight_scales`: one per channel, or one) and the code
/// `round(bias / scale)` (in f64, ties to even). `None` when a code does
/// not fit in int32 (the bias then stays float) or the scales do not
/// match the bias.
pub fn bias_codes(
    bias: &[f32],
    input_scale: f32,
    weight_scales: &[f32],
) -> Option<(Vec<f32>, Vec<i32>)> {
    let n = weight_scales.len();
    if n != 1 && n != bias.len() {
        return None;
    }
    let scales: Vec<f32> = (0..bias.len())
        .map(|i| input_scale * weight_scales[if n == 1 { 0 } else { i }])
        .collect();
    let codes = bias
        .iter()
        .zip(&scales)
        .map(|(v, s)| {
            let r = (f64::from(*v) / f64::from(*s)).round_ties_even();
            (r.abs() < i32::MAX as f64).then_some(r as i32)
        })
        .collect::<Option<Vec<i32>>>()?;
    Some((scales, codes))
}
