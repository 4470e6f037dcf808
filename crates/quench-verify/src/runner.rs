//! Running ONNX models with tract.
//!
//! [`Runner`] compiles a model once and runs it on [`ArrayData`] inputs. We
//! hand tract the bytes of our own encoded `ModelProto` (`model_for_read`);
//! tract's protobuf types are generated from an old `onnx.proto` and a round
//! trip through them would lose data. Concrete input facts are set before
//! analysis. Intermediate tensors asked for in
//! [`RunnerConfig::extra_outputs`] are looked up by *outlet label* (the
//! ONNX tensor name; node names are not tensor names) and declared as model
//! outputs before `into_optimized()`, so fusion keeps them. Exposing them
//! does not change the graph outputs.
//!
//! [`prepare_for_tract`] makes a copy of a model that tract accepts more
//! often: stale `value_info` and output shapes that clash with concrete
//! inputs are dropped, input shapes are fixed, and `If` nodes with a
//! constant condition are replaced by the branch they take.
//!
//! Errors from tract are `anyhow` chains; [`RunError`] keeps the whole chain
//! as text and names the node and op it mentions. Ops tract does not know
//! are all reported at once, with their domain.
//!
//! Invariant: a panic inside tract never unwinds out of this module. Every
//! call into tract (reading the model, setting facts, typing, optimizing,
//! planning, running) runs under `catch_unwind`, and a panic becomes
//! [`RunError::Panic`] naming the phase (and the node, when the panic
//! message mentions one), so callers apply their usual fallback rules.
//! (Aborts, such as a failed huge allocation, cannot be caught: callers cap
//! sizes before handing tract a model.)
//!
//! A main graph of more than [`crate::segment::SEGMENT_NODES`] nodes is
//! compiled as consecutive segments (see [`crate::segment`]), run one after
//! the other with the same outputs as the whole graph.
//!
//! Invariant: [`Runner::run`] returns the graph outputs in graph order
//! followed by the extra outputs in the order they were asked for, as named
//! by [`Runner::output_names`].

use std::collections::{HashMap, HashSet};

use prost::Message;
use quench_onnx::proto::attribute_proto::AttributeType;
use quench_onnx::proto::tensor_shape_proto::{dimension, Dimension};
use quench_onnx::proto::type_proto::Value as TypeValue;
use quench_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, TensorShapeProto,
};
use tract_onnx::prelude::*;

use crate::data::{quote_list, ArrayData, DataError};

/// The element type and concrete shape to give one model input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFact {
    pub name: String,
    /// ONNX element type code.
    pub elem_type: i32,
    pub shape: Vec<usize>,
}

/// How to build a [`Runner`].
#[derive(Debug, Clone, Default)]
pub struct RunnerConfig {
    /// Facts for inputs (by name); inputs not listed keep what the model
    /// declares.
    pub input_facts: Vec<InputFact>,
    /// Intermediate tensors (ONNX tensor names) to return after the graph
    /// outputs, e.g. for calibration.
    pub extra_outputs: Vec<String>,
}

/// An op tract does not implement, and the node using it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedOp {
    pub node: String,
    pub op: String,
    /// ONNX domain; empty for the default domain.
    pub domain: String,
}

impl std::fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "op `{}`", self.op)?;
        if !self.domain.is_empty() && self.domain != "ai.onnx" {
            write!(f, " (domain `{}`)", self.domain)?;
        }
        write!(f, " used by node `{}`", self.node)
    }
}

/// Errors building or running a [`Runner`].
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("tract does not implement {}", ops.iter().map(|o| o.to_string()).collect::<Vec<_>>().join("; "))]
    Unsupported {
        ops: Vec<UnsupportedOp>,
        detail: String,
    },
    #[error("tract failed while {stage}, at node `{node}` ({op}): {detail}")]
    Node {
        stage: &'static str,
        node: String,
        op: String,
        detail: String,
    },
    #[error("tract failed while {stage}: {detail}")]
    Tract { stage: &'static str, detail: String },
    #[error(
        "tract panicked while {stage}{}: {message}",
        node.as_ref().map(|n| format!(", at node `{n}`")).unwrap_or_default()
    )]
    Panic {
        stage: &'static str,
        /// The ONNX node, when the panic message names one.
        node: Option<String>,
        message: String,
    },
    #[error(
        "`{name}` is not an input of the model; inputs: {}",
        quote_list(inputs)
    )]
    UnknownInput { name: String, inputs: Vec<String> },
    #[error("extra output `{name}` is not a tensor of the model's main graph")]
    UnknownTensor { name: String },
    #[error("input `{name}`: {reason}")]
    Input { name: String, reason: String },
    #[error("the model takes {} input(s) ({}), {got} given", names.len(), quote_list(names))]
    InputCount { names: Vec<String>, got: usize },
    #[error("reading an output back")]
    Output(#[source] DataError),
}

/// A model compiled by tract, ready to run. Cheap to share between threads.
#[derive(Debug, Clone)]
pub struct Runner {
    exec: Exec,
    /// Input names and the facts tract settled on.
    inputs: Vec<(String, TypedFact)>,
    outputs: Vec<String>,
    /// The facts of `outputs`, in order.
    output_facts: Vec<TypedFact>,
    output_bytes: Option<u64>,
}

/// How a [`Runner`] executes: one tract plan, or consecutive segments of a
/// long graph (see [`crate::segment`]).
#[derive(Debug, Clone)]
enum Exec {
    Whole(Arc<TypedRunnableModel>),
    Segments(Arc<crate::segment::Segments>),
}

impl Runner {
    /// Bytes of all outputs of one run (they are alive together when the
    /// run returns), when every output shape is known.
    pub fn output_bytes(&self) -> Option<u64> {
        self.output_bytes
    }

    /// Compiles `model` (encoded to bytes for tract). A main graph of more
    /// than [`crate::segment::SEGMENT_NODES`] nodes is compiled as
    /// consecutive segments when it can be cut (see [`crate::segment`]):
    /// tract's model building is quadratic in the node count, segments keep
    /// it linear, and the outputs are the same.
    pub fn new(model: &ModelProto, config: &RunnerConfig) -> Result<Runner, RunError> {
        Runner::with_segments(model, config, crate::segment::SEGMENT_NODES)
    }

    /// [`Runner::new`] with segments of at most `max_nodes` nodes (graphs
    /// of at most `max_nodes` nodes, or that cannot be cut, run whole).
    pub fn with_segments(
        model: &ModelProto,
        config: &RunnerConfig,
        max_nodes: usize,
    ) -> Result<Runner, RunError> {
        if let Some(plan) = crate::segment::plan(model, config, max_nodes) {
            // A segment tract refuses (it may need what the whole graph
            // tells it) leaves the whole graph to decide.
            if let Ok(r) = crate::segment::build(model, config, plan) {
                return Ok(r);
            }
        }
        Runner::from_bytes(&model.encode_to_vec(), config)
    }

    /// Assembles a segmented runner (for [`crate::segment::build`]).
    pub(crate) fn segmented(
        segments: crate::segment::Segments,
        inputs: Vec<(String, TypedFact)>,
        outputs: Vec<String>,
        output_facts: Vec<TypedFact>,
    ) -> Runner {
        let output_bytes = output_facts.iter().try_fold(0u64, |acc, fact| {
            let elems: usize = fact.shape.as_concrete()?.iter().product();
            Some(acc + (elems * fact.datum_type.size_of()) as u64)
        });
        Runner {
            exec: Exec::Segments(Arc::new(segments)),
            inputs,
            outputs,
            output_facts,
            output_bytes,
        }
    }

    /// The facts of [`output_names`](Self::output_names), in order.
    pub(crate) fn output_facts(&self) -> &[TypedFact] {
        &self.output_facts
    }

    /// Whether this runner runs its graph as several segments.
    pub fn segment_count(&self) -> usize {
        match &self.exec {
            Exec::Whole(_) => 1,
            Exec::Segments(s) => s.len(),
        }
    }

    /// Compiles a model from the bytes of an ONNX file. A panic in tract is
    /// returned as [`RunError::Panic`].
    pub fn from_bytes(bytes: &[u8], config: &RunnerConfig) -> Result<Runner, RunError> {
        // Each tract call below is guarded with its own phase; this outer
        // guard covers the glue between them.
        contain("compiling the model", || {
            Runner::from_bytes_inner(bytes, config)
        })?
    }

    fn from_bytes_inner(bytes: &[u8], config: &RunnerConfig) -> Result<Runner, RunError> {
        let mut reader = bytes;
        let mut model = contain("loading the model", || {
            let mut onnx = tract_onnx::onnx();
            crate::fake_quant::register(&mut onnx.op_register);
            onnx.model_for_read(&mut reader)
        })?
        .map_err(|e| tract_error("loading the model", e, &[], bytes))?;
        let tract = |stage: &'static str| move |e: TractError| tract_error(stage, e, &[], bytes);

        let input_outlets = model
            .input_outlets()
            .map_err(tract("loading the model"))?
            .to_vec();
        let input_names: Vec<String> = input_outlets
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        for fact in &config.input_facts {
            let ix = input_names
                .iter()
                .position(|n| *n == fact.name)
                .ok_or_else(|| RunError::UnknownInput {
                    name: fact.name.clone(),
                    inputs: input_names.clone(),
                })?;
            let dt = datum_type(fact.elem_type).ok_or_else(|| RunError::Input {
                name: fact.name.clone(),
                reason: format!(
                    "element type {} is not supported",
                    quench_onnx::dtype::elem_name(fact.elem_type)
                ),
            })?;
            contain("setting input facts", || {
                model.set_input_fact(ix, InferenceFact::dt_shape(dt, fact.shape.iter().copied()))
            })?
            .map_err(tract("setting input facts"))?;
        }

        let mut outlets = model
            .output_outlets()
            .map_err(tract("loading the model"))?
            .to_vec();
        let mut outputs: Vec<String> = outlets
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map_or_else(|| model.node(o.node).name.clone(), str::to_string)
            })
            .collect();
        // Outlet by label, built once: tract's `find_outlet_label` scans
        // every label, which made asking for n tensors O(n^2).
        let by_label: HashMap<&str, OutletId> = if config.extra_outputs.is_empty() {
            HashMap::new()
        } else {
            let mut m = HashMap::with_capacity(model.outlet_labels.len());
            for (o, l) in &model.outlet_labels {
                // Several outlets may carry one label; keep the smallest
                // (deterministic, whatever the hash order).
                m.entry(l.as_str())
                    .and_modify(|e: &mut OutletId| *e = (*e).min(*o))
                    .or_insert(*o);
            }
            m
        };
        for name in &config.extra_outputs {
            let outlet = by_label
                .get(name.as_str())
                .copied()
                .or_else(|| {
                    input_names
                        .iter()
                        .position(|n| n == name)
                        .map(|i| input_outlets[i])
                })
                .ok_or_else(|| RunError::UnknownTensor { name: name.clone() })?;
            outlets.push(outlet);
            outputs.push(name.clone());
        }
        contain("selecting outputs", || {
            model.select_output_outlets(&outlets)
        })?
        .map_err(tract("selecting outputs"))?;

        let unimplemented: Vec<(String, String)> = model
            .nodes()
            .iter()
            .filter_map(|n| {
                let op = n.op.name();
                let op = op
                    .strip_prefix("Unimplemented(")?
                    .strip_suffix(')')?
                    .to_string();
                Some((n.name.clone(), op))
            })
            .collect();
        // After every optimization, the Softmaxes over a non-last axis
        // take quench's lane loop: the same values, without tract's
        // per-lane dynamic views (see `lane_softmax`).
        let typed = contain("analysing and optimizing the model", || {
            model.into_optimized().and_then(|mut t| {
                crate::lane_softmax::install(&mut t)?;
                Ok(t)
            })
        })?
        .map_err(|e| {
            tract_error(
                "analysing and optimizing the model",
                e,
                &unimplemented,
                bytes,
            )
        })?;
        let inputs = typed
            .input_outlets()
            .and_then(|outlets| {
                outlets
                    .iter()
                    .map(|o| typed.outlet_fact(*o).cloned())
                    .collect::<TractResult<Vec<_>>>()
            })
            .map_err(tract("optimizing the model"))?;
        let inputs = input_names.into_iter().zip(inputs).collect();
        let output_facts = typed
            .output_outlets()
            .and_then(|outlets| {
                outlets
                    .iter()
                    .map(|o| typed.outlet_fact(*o).cloned())
                    .collect::<TractResult<Vec<_>>>()
            })
            .map_err(tract("optimizing the model"))?;
        let output_bytes = output_facts.iter().try_fold(0u64, |acc, fact| {
            let elems: usize = fact.shape.as_concrete()?.iter().product();
            Some(acc + (elems * fact.datum_type.size_of()) as u64)
        });
        let plan = contain("planning the model", || typed.into_runnable())?
            .map_err(tract("planning the model"))?;
        Ok(Runner {
            exec: Exec::Whole(plan),
            inputs,
            outputs,
            output_facts,
            output_bytes,
        })
    }

    /// Model input names, in the order [`run`](Self::run) takes them.
    pub fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Graph output names followed by the extra outputs.
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// Runs the model on `inputs` (in [`input_names`](Self::input_names)
    /// order) and returns the graph outputs followed by the extra outputs.
    pub fn run(&self, inputs: &[ArrayData]) -> Result<Vec<ArrayData>, RunError> {
        let out = self.run_tract(inputs)?;
        out.iter()
            .zip(&self.outputs)
            .map(|(t, name)| ArrayData::from_tensor(name, t).map_err(RunError::Output))
            .collect()
    }

    /// Runs the model and converts only the outputs `read` selects (by
    /// index, as [`run`](Self::run) orders them); the others are `None`
    /// and never copied out of tract. A model with every layer's output
    /// exposed (bias correction reads one group of layers per run) pays
    /// for the copies it reads, not for all of them.
    pub fn run_reading(
        &self,
        inputs: &[ArrayData],
        read: &dyn Fn(usize) -> bool,
    ) -> Result<Vec<Option<ArrayData>>, RunError> {
        let out = self.run_tract(inputs)?;
        out.iter()
            .zip(&self.outputs)
            .enumerate()
            .map(|(i, (t, name))| {
                if read(i) {
                    ArrayData::from_tensor(name, t)
                        .map(Some)
                        .map_err(RunError::Output)
                } else {
                    Ok(None)
                }
            })
            .collect()
    }

    /// Runs the model and hands each output `i` (in
    /// [`output_names`](Self::output_names) order) from `first` on to
    /// `visit(i, values)` as f32 values, in memory order. f32 outputs are
    /// borrowed from tract without a copy; other numeric types are
    /// converted. For observers, which need the values once and no shape.
    /// With `keep_head`, returns the outputs before `first` (the graph
    /// outputs, when `first` is their count), copied as they are (an error
    /// when one has a type [`ArrayData`] cannot hold, e.g. strings);
    /// without, returns nothing and never reads them.
    pub fn run_visit(
        &self,
        inputs: &[ArrayData],
        first: usize,
        keep_head: bool,
        mut visit: impl FnMut(usize, &[f32]),
    ) -> Result<Vec<ArrayData>, RunError> {
        let out = self.run_tract(inputs)?;
        let head = out
            .iter()
            .zip(&self.outputs)
            .take(if keep_head { first } else { 0 })
            .map(|(t, name)| ArrayData::from_tensor(name, t).map_err(RunError::Output))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, (t, name)) in out.iter().zip(&self.outputs).enumerate().skip(first) {
            let read_err = |e: TractError| {
                RunError::Output(DataError::Tensor {
                    name: name.clone(),
                    reason: e.to_string(),
                })
            };
            let cast = t.cast_to::<f32>().map_err(read_err)?;
            let view = cast.try_as_plain_ram().map_err(read_err)?;
            visit(i, view.as_slice::<f32>().map_err(read_err)?);
        }
        Ok(head)
    }

    fn run_tract(&self, inputs: &[ArrayData]) -> Result<TVec<TValue>, RunError> {
        if inputs.len() != self.inputs.len() {
            return Err(RunError::InputCount {
                names: self.inputs.iter().map(|(n, _)| n.clone()).collect(),
                got: inputs.len(),
            });
        }
        let mut values: TVec<TValue> = TVec::new();
        for ((name, fact), a) in self.inputs.iter().zip(inputs) {
            let want = fact.datum_type.unquantized();
            if datum_type(a.elem_type()) != Some(want) {
                return Err(RunError::Input {
                    name: name.clone(),
                    reason: format!("the model takes {want:?}, got {}", a.dtype_name()),
                });
            }
            if let Some(shape) = fact.shape.as_concrete() {
                if shape != a.shape() {
                    return Err(RunError::Input {
                        name: name.clone(),
                        reason: format!(
                            "the model was built for shape {shape:?}, got {:?}",
                            a.shape()
                        ),
                    });
                }
            } else if fact.rank() != a.shape().len() {
                return Err(RunError::Input {
                    name: name.clone(),
                    reason: format!(
                        "the model takes rank {} ({:?}), got shape {:?}",
                        fact.rank(),
                        fact.shape,
                        a.shape()
                    ),
                });
            }
            let t = a.to_tensor().map_err(|reason| RunError::Input {
                name: name.clone(),
                reason,
            })?;
            values.push(t.into_tvalue());
        }
        self.run_values(values)
    }

    /// Runs on inputs already checked against the input facts.
    pub(crate) fn run_values(&self, values: TVec<TValue>) -> Result<TVec<TValue>, RunError> {
        let plan = match &self.exec {
            Exec::Whole(plan) => plan,
            Exec::Segments(segments) => {
                let names: Vec<&str> = self.inputs.iter().map(|(n, _)| n.as_str()).collect();
                return segments.run(&names, values, &self.outputs);
            }
        };
        // The node being evaluated is recorded (an id in a Cell, no
        // allocation) so that a panic inside an op can name it.
        let current: std::cell::Cell<Option<usize>> = std::cell::Cell::new(None);
        let run = || -> TractResult<TVec<TValue>> {
            let mut state = plan.spawn()?;
            state.run_plan_with_eval(values, |ctx, op_state, node, input| {
                current.set(Some(node.id));
                tract_onnx::tract_core::plan::eval(ctx, op_state, node, input)
            })
        };
        catch(run)
            .map_err(|payload| {
                let node = current
                    .get()
                    .and_then(|id| plan.model().nodes().get(id))
                    .map(|n| n.name.clone());
                panic_error("running the model", payload, node)
            })?
            .map_err(runtime_error)
    }
}

/// A panic payload as [`RunError::Panic`]; `node` if known, else the node
/// the message mentions.
fn panic_error(
    stage: &'static str,
    payload: Box<dyn std::any::Any + Send>,
    node: Option<String>,
) -> RunError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".to_string());
    RunError::Panic {
        stage,
        node: node.or_else(|| node_mention(&message).map(|(n, _)| n)),
        message,
    }
}

/// Runs `f` (a call into tract), turning a panic into [`RunError::Panic`]
/// for `stage`. Nothing `f` touches is used after a panic except through
/// the error, so asserting unwind safety is sound: the partly built model
/// or plan is dropped.
fn contain<T>(stage: &'static str, f: impl FnOnce() -> T) -> Result<T, RunError> {
    catch(f).map_err(|payload| panic_error(stage, payload, None))
}

thread_local! {
    /// How many [`catch`] calls are active on this thread.
    static CONTAINED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// `catch_unwind` on a call into tract, marking the thread so that
/// [`panic_is_contained`] is true while it runs.
fn catch<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    CONTAINED.with(|c| c.set(c.get() + 1));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(c.get().saturating_sub(1)));
    r
}

/// True on a thread inside a call into tract whose panic becomes a
/// [`RunError::Panic`] (the message is carried by the error). A panic hook
/// uses it to stay quiet about such panics: see
/// [`quiet_contained_panics`].
pub fn panic_is_contained() -> bool {
    CONTAINED.with(|c| c.get() > 0)
}

/// Installs a panic hook that prints nothing for panics this crate
/// contains (they reach the user as errors naming the phase and node) and
/// defers to the previous hook for every other panic. For programs (the
/// CLI); a library user keeps whatever hook it has unless it calls this.
pub fn quiet_contained_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !panic_is_contained() {
            previous(info);
        }
    }));
}

/// The tract element type for an ONNX element type code.
pub(crate) fn datum_type(code: i32) -> Option<DatumType> {
    use quench_onnx::proto::tensor_proto::DataType;
    Some(match DataType::try_from(code).ok()? {
        DataType::Float => DatumType::F32,
        DataType::Double => DatumType::F64,
        DataType::Float16 => DatumType::F16,
        DataType::Int64 => DatumType::I64,
        DataType::Int32 => DatumType::I32,
        DataType::Int16 => DatumType::I16,
        DataType::Int8 => DatumType::I8,
        DataType::Uint64 => DatumType::U64,
        DataType::Uint32 => DatumType::U32,
        DataType::Uint16 => DatumType::U16,
        DataType::Uint8 => DatumType::U8,
        DataType::Bool => DatumType::Bool,
        _ => return None,
    })
}

/// Finds the first `#<id> "<name>" <Op>` (how tract prints a node) in `s`.
fn node_mention(s: &str) -> Option<(String, String)> {
    let mut rest = s;
    while let Some(p) = rest.find('#') {
        let after = &rest[p + 1..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 {
            if let Some(quoted) = after[digits..].strip_prefix(" \"") {
                if let Some(end) = quoted.find('"') {
                    let name = quoted[..end].to_string();
                    let op = quoted[end + 1..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .trim_end_matches([':', ',', '.'])
                        .to_string();
                    return Some((name, op));
                }
            }
        }
        rest = after;
    }
    None
}

/// ONNX op type and domain by tract node name (the ONNX node name, or the
/// node's first output when it has none).
fn onnx_ops(bytes: &[u8]) -> HashMap<String, (String, String)> {
    let mut map = HashMap::new();
    if let Ok(model) = ModelProto::decode(bytes) {
        for n in model.graph.iter().flat_map(|g| &g.node) {
            let op = (n.op_type().to_string(), n.domain().to_string());
            if let Some(first) = n.output.first() {
                map.entry(first.clone()).or_insert_with(|| op.clone());
            }
            if !n.name().is_empty() {
                map.insert(n.name().to_string(), op);
            }
        }
    }
    map
}

fn chain_text(e: &TractError) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Turns a tract error into a [`RunError`] naming the node and op involved.
fn tract_error(
    stage: &'static str,
    e: TractError,
    unimplemented: &[(String, String)],
    bytes: &[u8],
) -> RunError {
    let detail = chain_text(&e);
    let ops = onnx_ops(bytes);
    let mut unsupported: Vec<UnsupportedOp> = Vec::new();
    if detail.contains("Unimplemented(") {
        let mut list: Vec<(String, String)> = unimplemented.to_vec();
        if list.is_empty() {
            list.extend(
                e.chain()
                    .filter_map(|c| node_mention(&c.to_string()))
                    .filter(|(_, op)| op.starts_with("Unimplemented(")),
            );
        }
        for (node, op) in list {
            let op = op
                .trim_start_matches("Unimplemented(")
                .trim_end_matches(')')
                .to_string();
            let domain = ops.get(&node).map(|(_, d)| d.clone()).unwrap_or_default();
            unsupported.push(UnsupportedOp { node, op, domain });
        }
    }
    if !unsupported.is_empty() {
        return RunError::Unsupported {
            ops: unsupported,
            detail,
        };
    }
    match e.chain().find_map(|c| node_mention(&c.to_string())) {
        Some((node, tract_op)) => {
            let op = ops.get(&node).map_or(tract_op, |(op, _)| op.clone());
            RunError::Node {
                stage,
                node,
                op,
                detail,
            }
        }
        None => RunError::Tract { stage, detail },
    }
}

fn runtime_error(e: TractError) -> RunError {
    let detail = chain_text(&e);
    match e.chain().find_map(|c| node_mention(&c.to_string())) {
        Some((node, op)) => RunError::Node {
            stage: "running the model",
            node,
            op,
            detail,
        },
        None => RunError::Tract {
            stage: "running the model",
            detail,
        },
    }
}

/// Makes a copy of `model` that tract accepts more often, with notes on
/// what changed:
///
/// - drops every `value_info` (also in subgraphs) and the shapes declared on
///   graph outputs (their element types stay), since stale symbolic shapes
///   there clash with concrete input facts;
/// - sets the shapes of the named inputs to `input_shapes`;
/// - replaces each `If` whose condition is an initializer or a `Constant`
///   output by the branch it takes: the branch's nodes and initializers move
///   into the outer graph under unique names, and the branch outputs are
///   renamed to the `If` outputs (through `Identity` when a branch output is
///   not computed inside the branch).
pub fn prepare_for_tract(
    model: &ModelProto,
    input_shapes: &[(String, Vec<i64>)],
) -> (ModelProto, Vec<String>) {
    let mut model = model.clone();
    let mut notes = Vec::new();
    let Some(graph) = model.graph.as_mut() else {
        notes.push("the model has no graph; nothing changed".to_string());
        return (model, notes);
    };

    let dropped = drop_value_info(graph);
    if dropped > 0 {
        notes.push(format!(
            "dropped {dropped} value_info entr{}",
            if dropped == 1 { "y" } else { "ies" }
        ));
    }
    let mut unshaped = Vec::new();
    for out in &mut graph.output {
        if let Some(TypeValue::TensorType(t)) = out.r#type.as_mut().and_then(|t| t.value.as_mut()) {
            if t.shape.take().is_some() {
                unshaped.push(out.name().to_string());
            }
        }
    }
    if !unshaped.is_empty() {
        notes.push(format!(
            "dropped the declared shapes of output{} {}",
            if unshaped.len() > 1 { "s" } else { "" },
            quote_list(&unshaped)
        ));
    }

    for (name, dims) in input_shapes {
        let Some(input) = graph.input.iter_mut().find(|i| i.name() == name) else {
            notes.push(format!(
                "input `{name}` is not a graph input; its shape was not set"
            ));
            continue;
        };
        match input.r#type.as_mut().and_then(|t| t.value.as_mut()) {
            Some(TypeValue::TensorType(t)) => {
                t.shape = Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                });
                notes.push(format!("set the shape of input `{name}` to {dims:?}"));
            }
            _ => notes.push(format!(
                "input `{name}` is not a tensor; its shape was not set"
            )),
        }
    }

    // Folding one If can expose another (a nested If with a constant
    // condition), so repeat until nothing changes.
    // An If that could not be folded is remembered by its outputs, which
    // are unique in the graph, so it is not tried again.
    let mut declined: HashSet<Vec<String>> = HashSet::new();
    loop {
        let constants = constant_values(graph);
        let found = graph.node.iter().enumerate().find_map(|(pos, n)| {
            if n.op_type() != "If" || !is_default_domain(n.domain()) || declined.contains(&n.output)
            {
                return None;
            }
            let cond = constants.get(n.input.first()?)?;
            Some((pos, *cond))
        });
        let Some((pos, taken)) = found else { break };
        match inline_if(graph, pos, taken) {
            Ok(note) => notes.push(note),
            Err(note) => {
                notes.push(note);
                declined.insert(graph.node[pos].output.clone());
            }
        }
    }
    (model, notes)
}

fn is_default_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

/// Clears `value_info` in `g` and its subgraphs; returns how many entries.
fn drop_value_info(g: &mut GraphProto) -> usize {
    let mut n = g.value_info.len();
    g.value_info.clear();
    for node in &mut g.node {
        for a in &mut node.attribute {
            for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                n += drop_value_info(sub);
            }
        }
    }
    n
}

/// Tensors of `g` whose value is known and usable as an `If` condition:
/// initializers that are not also graph inputs and `Constant` outputs; value
/// is whether the single element is non-zero.
fn constant_values(g: &GraphProto) -> HashMap<String, bool> {
    let inputs: HashSet<&str> = g.input.iter().map(|i| i.name()).collect();
    let truth = |t: &TensorProto| -> Option<bool> {
        let a = ArrayData::from_tensor_proto(t).ok()?;
        if a.len() != 1 {
            return None;
        }
        a.to_f32().iter().next().map(|v| *v != 0.0)
    };
    let mut out = HashMap::new();
    for t in &g.initializer {
        if !inputs.contains(t.name()) {
            if let Some(v) = truth(t) {
                out.insert(t.name().to_string(), v);
            }
        }
    }
    for n in &g.node {
        if n.op_type() != "Constant" || !is_default_domain(n.domain()) {
            continue;
        }
        let Some(y) = n.output.first() else { continue };
        let value = n.attribute.iter().find_map(|a| match a.name() {
            "value" => a.t.as_ref().and_then(truth),
            "value_int" => a.i.map(|i| i != 0),
            "value_float" => a.f.map(|f| f != 0.0),
            _ => None,
        });
        if let Some(v) = value {
            out.insert(y.clone(), v);
        }
    }
    out
}

/// Every name defined or used in `g` and its subgraphs (tensors and nodes).
fn collect_names(g: &GraphProto, names: &mut HashSet<String>) {
    names.extend(
        g.input
            .iter()
            .chain(&g.output)
            .chain(&g.value_info)
            .map(|v| v.name().to_string()),
    );
    names.extend(g.initializer.iter().map(|t| t.name().to_string()));
    for n in &g.node {
        names.extend(n.input.iter().chain(&n.output).cloned());
        names.insert(n.name().to_string());
        for a in &n.attribute {
            for sub in a.g.iter().chain(&a.graphs) {
                collect_names(sub, names);
            }
        }
    }
}

fn unique(base: String, used: &mut HashSet<String>) -> String {
    let mut name = base.clone();
    let mut k = 1;
    while used.contains(&name) {
        name = format!("{base}_{k}");
        k += 1;
    }
    used.insert(name.clone());
    name
}

/// Renames references to outer-scope names inside a nested graph, except
/// names the nested graph defines itself (which shadow them).
fn rename_free_refs(g: &mut GraphProto, rename: &HashMap<String, String>) {
    let mut local: HashSet<String> = g.input.iter().map(|i| i.name().to_string()).collect();
    local.extend(g.initializer.iter().map(|t| t.name().to_string()));
    local.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
    let effective: HashMap<String, String> = rename
        .iter()
        .filter(|(k, _)| !local.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if effective.is_empty() {
        return;
    }
    for n in &mut g.node {
        rename_node_refs(n, &effective);
    }
    for o in &mut g.output {
        if let Some(new) = o.name.as_ref().and_then(|n| effective.get(n)) {
            o.name = Some(new.clone());
        }
    }
}

fn rename_node_refs(n: &mut NodeProto, rename: &HashMap<String, String>) {
    for i in &mut n.input {
        if let Some(new) = rename.get(i) {
            *i = new.clone();
        }
    }
    for a in &mut n.attribute {
        for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
            rename_free_refs(sub, rename);
        }
    }
}

/// Replaces the `If` at `pos` by its `then_branch` (`taken`) or
/// `else_branch`. Returns a note, or a note saying why it declined.
fn inline_if(graph: &mut GraphProto, pos: usize, taken: bool) -> Result<String, String> {
    let node = graph.node[pos].clone();
    let label = if node.name().is_empty() {
        node.output.first().cloned().unwrap_or_default()
    } else {
        node.name().to_string()
    };
    let attr = if taken { "then_branch" } else { "else_branch" };
    let decline = |why: &str| format!("kept If `{label}` with a constant condition: {why}");
    let branch = node
        .attribute
        .iter()
        .find(|a: &&AttributeProto| {
            a.name() == attr
                && (a.r#type.is_none() || a.r#type == Some(AttributeType::Graph as i32))
        })
        .and_then(|a| a.g.clone())
        .ok_or_else(|| decline(&format!("it has no {attr}")))?;
    if !branch.sparse_initializer.is_empty() {
        return Err(decline("its branch has sparse initializers"));
    }
    if branch.output.len() != node.output.len() {
        return Err(decline(&format!(
            "its {attr} has {} outputs for {} If outputs",
            branch.output.len(),
            node.output.len()
        )));
    }

    let mut used = HashSet::new();
    collect_names(graph, &mut used);
    let produced: HashSet<&str> = branch
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .filter(|s| !s.is_empty())
        .collect();
    let mut rename: HashMap<String, String> = HashMap::new();
    // A branch output computed in the branch takes the If output's name.
    for (bo, y) in branch.output.iter().zip(&node.output) {
        if produced.contains(bo.name()) && !y.is_empty() && !rename.contains_key(bo.name()) {
            rename.insert(bo.name().to_string(), y.clone());
        }
    }
    let locals = branch
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .chain(produced.iter().map(|s| s.to_string()));
    for l in locals.collect::<Vec<_>>() {
        if let std::collections::hash_map::Entry::Vacant(slot) = rename.entry(l) {
            let new = unique(format!("{label}/{}", slot.key()), &mut used);
            slot.insert(new);
        }
    }

    let mut new_nodes = Vec::with_capacity(branch.node.len() + branch.output.len());
    for mut n in branch.node {
        rename_node_refs(&mut n, &rename);
        for o in &mut n.output {
            if let Some(new) = rename.get(o) {
                *o = new.clone();
            }
        }
        let base = if n.name().is_empty() {
            n.output
                .first()
                .cloned()
                .unwrap_or_else(|| n.op_type().to_string())
        } else {
            format!("{label}/{}", n.name())
        };
        n.name = Some(unique(base, &mut used));
        new_nodes.push(n);
    }
    for (bo, y) in branch.output.iter().zip(&node.output) {
        let src = rename
            .get(bo.name())
            .cloned()
            .unwrap_or_else(|| bo.name().to_string());
        if y.is_empty() || src == *y {
            continue;
        }
        new_nodes.push(NodeProto {
            input: vec![src],
            output: vec![y.clone()],
            name: Some(unique(format!("{label}/{}_identity", y), &mut used)),
            op_type: Some("Identity".to_string()),
            ..Default::default()
        });
    }
    let moved = new_nodes.len();
    for mut t in branch.initializer {
        if let Some(new) = t.name.as_ref().and_then(|n| rename.get(n)) {
            t.name = Some(new.clone());
        }
        graph.initializer.push(t);
    }
    graph.node.splice(pos..=pos, new_nodes);
    Ok(format!(
        "folded If `{label}`: its condition `{}` is constant {taken}; inlined its {attr} ({moved} node{})",
        node.input.first().map(String::as_str).unwrap_or(""),
        if moved == 1 { "" } else { "s" }
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};
    use quench_onnx::proto::tensor_proto::DataType;
    use quench_onnx::proto::{type_proto, OperatorSetIdProto, TypeProto, ValueInfoProto};

    /// A float tensor's value info (also used by `fake_quant`'s tests).
    pub(crate) fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(TypeValue::TensorType(type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| Dimension {
                                value: Some(dimension::Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn f32_tensor(name: &str, v: &[f32]) -> TensorProto {
        ArrayData::F32(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap())
            .to_tensor_proto(name)
    }

    /// If(c) with a then-branch that shadows the outer `w` and returns an
    /// outer-scope tensor directly, and an else-branch using the outer `w`.
    fn model(cond: bool) -> ModelProto {
        let then_branch = GraphProto {
            name: Some("then".into()),
            initializer: vec![f32_tensor("w", &[1.0, 2.0])],
            node: vec![node("Add", &["x", "w"], &["t"])],
            output: vec![value_info("t", &[1, 2]), value_info("x", &[1, 2])],
            ..Default::default()
        };
        let else_branch = GraphProto {
            name: Some("else".into()),
            node: vec![
                node("Neg", &["x"], &["t"]),
                node("Add", &["x", "w"], &["u"]),
            ],
            output: vec![value_info("t", &[1, 2]), value_info("u", &[1, 2])],
            ..Default::default()
        };
        let graph_attr = |name: &str, g: GraphProto| AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Graph as i32),
            g: Some(g),
            ..Default::default()
        };
        let mut if_node = node("If", &["c"], &["y", "z"]);
        if_node.name = Some("branch".into());
        if_node.attribute = vec![
            graph_attr("then_branch", then_branch),
            graph_attr("else_branch", else_branch),
        ];
        let c = ArrayData::Bool(ArrayD::from_shape_vec(IxDyn(&[]), vec![cond]).unwrap())
            .to_tensor_proto("c");
        ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            }],
            graph: Some(GraphProto {
                name: Some("g".into()),
                node: vec![if_node, node("Add", &["y", "w"], &["out1"])],
                initializer: vec![f32_tensor("w", &[100.0, 100.0]), c],
                input: vec![value_info("x", &[1, 2])],
                output: vec![value_info("out1", &[1, 2]), value_info("z", &[1, 2])],
                value_info: vec![value_info("y", &[1, 2])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn folded_if_keeps_scopes_apart() {
        let x = ArrayData::F32(ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![0.5, -3.0]).unwrap());
        for (cond, out1, z) in [
            (true, [101.5, 99.0], [0.5, -3.0]),
            (false, [99.5, 103.0], [100.5, 97.0]),
        ] {
            let (prepared, notes) = prepare_for_tract(&model(cond), &[]);
            let g = prepared.graph.as_ref().unwrap();
            assert!(g.node.iter().all(|n| n.op_type() != "If"), "{notes:?}");
            assert!(g.value_info.is_empty());
            assert!(
                notes.iter().any(|n| n.starts_with("folded If `branch`")),
                "{notes:?}"
            );
            // Node and tensor names stay unique after inlining.
            let mut outs: Vec<&String> = g.node.iter().flat_map(|n| &n.output).collect();
            outs.extend(g.initializer.iter().filter_map(|t| t.name.as_ref()));
            let total = outs.len();
            outs.sort();
            outs.dedup();
            assert_eq!(outs.len(), total, "{g:?}");
            let runner = Runner::new(&prepared, &RunnerConfig::default()).unwrap();
            let got = runner.run(std::slice::from_ref(&x)).unwrap();
            assert_eq!(got[0].to_f32().as_slice().unwrap(), &out1, "cond {cond}");
            assert_eq!(got[1].to_f32().as_slice().unwrap(), &z, "cond {cond}");
        }
    }

    #[test]
    fn node_mentions_are_parsed() {
        assert_eq!(
            node_mention("Failed analyse for node #15 \"conv1\" ConvHir: more"),
            Some(("conv1".to_string(), "ConvHir".to_string()))
        );
        assert_eq!(node_mention("no node # here"), None);
    }
}
