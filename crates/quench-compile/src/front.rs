//! Log front ends: a `Log` of a quantity the graph computes from its
//! inputs by linear and magnitude operations alone (a log spectrogram:
//! framing, an STFT or CQT written as convolutions, squares, a square
//! root, a mel MatMul, an epsilon `Max`/`Clip`/`Add`).
//!
//! A log is there to compress a dynamic range of many decades; 8-bit
//! codes spaced evenly over the loudest values carry about two, so the
//! quiet bins the log spreads out round to zero (or to one code), and the
//! whole spectrogram the network reads is wrong. The error is spread over
//! the front end's tensors: on DNSMOS the STFT's real and imaginary
//! outputs are each behind less than half of it (so no single outlier is
//! found), and once both are float the input's own quantization is the
//! next half. Measured in ONNX Runtime on DNSMOS's 16 held-back clips:
//! quench's file 7.78 dB, both STFT outputs float 24.62, the whole front
//! end float 35.78, at the same latency (the STFT convolutions are a
//! small share of the time).
//!
//! The cone is structural and closed: every tensor on a path into the
//! `Log`'s input, walking up through the ops below only, must end at a
//! graph input or a constant. A `Log` reached from anything else (a
//! `Relu`, a `Softmax`, a `Sigmoid`: a network's features rather than
//! its input's signal) has no front end. `--method auto` measures what
//! leaving the cone float gains at the output and keeps it float only
//! when that is at least half of the error ([`crate::search`]).

use std::collections::BTreeSet;

use quench_ir::{Graph, ValueId};

/// Ops whose every computed input carries the signal's amplitude (a
/// divisor or exponent computed from the signal is part of the front end;
/// one computed from anything else leaves the cone open).
const EVERY_INPUT: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "MatMul",
    "Gemm",
    "Mul",
    "Add",
    "Sub",
    "Div",
    "Pow",
    "Concat",
    "Sum",
    "Mean",
];

/// Ops whose first input carries it; the others (shapes, axes, indices,
/// pads, repeats) must be constants or computed from shapes alone.
const FIRST_INPUT: &[&str] = &[
    "Sqrt",
    "Abs",
    "Neg",
    "Transpose",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Split",
    "Pad",
    "Identity",
    "Cast",
    "Expand",
    "Tile",
    "Gather",
    "ReduceSum",
    "ReduceMean",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceMax",
    "AveragePool",
    "LpPool",
    "DepthToSpace",
    "SpaceToDepth",
];

/// Epsilon guards: a `Max`/`Min` with one computed input, a `Clip` with
/// constant bounds.
const GUARD: &[&str] = &["Max", "Min", "Clip"];

/// Ops that compute shapes, indices and axes from shapes.
const SHAPE_OPS: &[&str] = &[
    "Shape",
    "Size",
    "Gather",
    "Concat",
    "Unsqueeze",
    "Squeeze",
    "Slice",
    "Cast",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Reshape",
    "Range",
    "ConstantOfShape",
    "ReduceProd",
    "Identity",
];

/// One `Log` and its front end.
#[derive(Debug, Clone)]
pub struct LogFrontEnd {
    /// The `Log` node (its output's name when unnamed).
    pub log: String,
    /// Every tensor in the cone, the graph inputs it starts from included
    /// (constants excluded).
    pub tensors: BTreeSet<String>,
}

fn is_const(g: &Graph, v: ValueId) -> bool {
    g.const_tensor(v).is_some()
        || g.initializer(v).is_some()
        || (g.producer(v).is_none() && !g.is_graph_input(v))
}

/// The front end of every `Log` in the main graph whose cone is closed
/// (see the module docs), in graph order.
pub fn log_front_ends(g: &Graph) -> Vec<LogFrontEnd> {
    let mut found = Vec::new();
    for n in g.node_ids() {
        let node = g.node(n);
        if node.op_type() != "Log" || !matches!(node.domain(), "" | "ai.onnx") {
            continue;
        }
        let Some(x) = node.input(0) else { continue };
        if let Some(tensors) = cone(g, x) {
            if tensors.is_empty() {
                continue;
            }
            let log = match (node.name(), node.output(0)) {
                ("", Some(o)) => g.value(o).name.clone(),
                (name, _) => name.to_string(),
            };
            found.push(LogFrontEnd { log, tensors });
        }
    }
    found
}

/// Whether `v` is a constant or computed from constants and tensor shapes
/// alone (a Reshape's target shape, a Slice's ends).
fn shape_like(g: &Graph, v: ValueId, depth: usize) -> bool {
    if is_const(g, v) {
        return true;
    }
    let Some(n) = g.producer(v) else {
        return false;
    };
    let node = g.node(n);
    if node.op_type() == "Shape" || node.op_type() == "Size" {
        return true;
    }
    depth > 0
        && SHAPE_OPS.contains(&node.op_type())
        && node
            .inputs()
            .iter()
            .flatten()
            .all(|&i| shape_like(g, i, depth - 1))
}

/// The tensors `x` is made of through the front-end ops (graph inputs
/// included), or `None` when a path leaves them.
fn cone(g: &Graph, x: ValueId) -> Option<BTreeSet<String>> {
    let mut seen: BTreeSet<ValueId> = BTreeSet::new();
    let mut stack = vec![x];
    while let Some(v) = stack.pop() {
        if is_const(g, v) || !seen.insert(v) {
            continue;
        }
        if g.is_graph_input(v) {
            continue;
        }
        let n = g.producer(v)?;
        let node = g.node(n);
        if !matches!(node.domain(), "" | "ai.onnx") || node.has_subgraphs() {
            return None;
        }
        let t = node.op_type();
        let computed = |i: &Option<ValueId>| i.filter(|&i| !is_const(g, i));
        if EVERY_INPUT.contains(&t) {
            stack.extend(node.inputs().iter().filter_map(computed));
        } else if FIRST_INPUT.contains(&t) {
            if !node
                .inputs()
                .iter()
                .skip(1)
                .flatten()
                .all(|&i| shape_like(g, i, 8))
            {
                return None;
            }
            stack.extend(node.input(0).filter(|&i| !is_const(g, i)));
        } else if GUARD.contains(&t) {
            let ins: Vec<ValueId> = if t == "Clip" {
                if !node
                    .inputs()
                    .iter()
                    .skip(1)
                    .flatten()
                    .all(|&i| is_const(g, i))
                {
                    return None;
                }
                node.input(0).into_iter().collect()
            } else {
                node.inputs().iter().filter_map(computed).collect()
            };
            if ins.len() != 1 {
                return None;
            }
            stack.extend(ins);
        } else {
            return None;
        }
    }
    Some(seen.into_iter().map(|v| g.value(v).name.clone()).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn graph(ops: &[(&str, &[&str], &str)], consts: &[&str]) -> Graph {
        crate::test_graph::graph(ops, consts, 1, -1)
    }

    #[test]
    fn a_log_spectrogram_is_a_front_end_and_a_log_of_features_is_not() {
        // x -> Conv (STFT real, imag) -> squares -> Add -> Sqrt -> Max(eps) -> Log
        let g = graph(
            &[
                ("Conv", &["x", "wr"], "re"),
                ("Conv", &["x", "wi"], "im"),
                ("Mul", &["re", "re"], "re2"),
                ("Mul", &["im", "im"], "im2"),
                ("Add", &["re2", "im2"], "p"),
                ("Sqrt", &["p"], "mag"),
                ("Max", &["eps", "mag"], "safe"),
                ("Log", &["safe"], "logmag"),
                ("Conv", &["logmag", "w2"], "c2"),
                ("Relu", &["c2"], "r2"),
                ("Log", &["r2"], "logr"),
            ],
            &["wr", "wi", "eps", "w2"],
        );
        let f = log_front_ends(&g);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].log, "logmag");
        let want: BTreeSet<String> = ["x", "re", "im", "re2", "im2", "p", "mag", "safe"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(f[0].tensors, want);
    }

    #[test]
    fn a_divisor_or_index_from_features_leaves_the_cone_open() {
        // Log(Abs(x) / Relu(x)): the divisor comes through a Relu.
        let g = graph(
            &[
                ("Abs", &["x"], "a"),
                ("Relu", &["x"], "r"),
                ("Div", &["a", "r"], "q"),
                ("Log", &["q"], "l"),
            ],
            &[],
        );
        assert!(log_front_ends(&g).is_empty());
        // Log(Gather(table, ArgMax(x))): constant data, computed indices.
        let g = graph(
            &[
                ("ArgMax", &["x"], "i"),
                ("Gather", &["table", "i"], "t"),
                ("Log", &["t"], "l"),
            ],
            &["table"],
        );
        assert!(log_front_ends(&g).is_empty());
        // A divisor computed from the signal is part of the front end:
        // Log(Abs(x) / ReduceMean(Abs(x))).
        let g = graph(
            &[
                ("Abs", &["x"], "a"),
                ("ReduceMean", &["a"], "m"),
                ("Div", &["a", "m"], "q"),
                ("Log", &["q"], "l"),
            ],
            &[],
        );
        let f = log_front_ends(&g);
        assert_eq!(f.len(), 1);
        assert!(f[0].tensors.contains("m") && f[0].tensors.contains("x"));
    }

    #[test]
    fn a_guard_with_two_computed_inputs_closes_no_cone() {
        let g = graph(
            &[
                ("Abs", &["x"], "a"),
                ("Neg", &["x"], "b"),
                ("Max", &["a", "b"], "m"),
                ("Log", &["m"], "l"),
            ],
            &[],
        );
        assert!(log_front_ends(&g).is_empty());
    }
}
