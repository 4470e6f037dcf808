//! `equalize`: cross-layer equalization of Conv → (Relu) → Conv chains.
//!
//! For a pair A → [Relu] → B where B (a group-1 Conv) reads A's output
//! channel `c` as its input channel `c`, dividing A's output channel `c`
//! (its weights and bias) by `s_c > 0` and multiplying B's input channel `c`
//! by `s_c` leaves the model's function unchanged, because Relu is
//! positively homogeneous: `relu(x / s) = relu(x) / s`. Choosing
//! `s_c = sqrt(r1_c / r2_c)` (r1_c: largest |weight| of A's output channel
//! c, r2_c: of B's input channel c) makes both ranges `sqrt(r1_c r2_c)`,
//! so per-tensor weight ranges and the intermediate activation's channels
//! (one scale for all of them) lose less to rounding: the depthwise
//! convolutions of MobileNet-style models have channel ranges that differ
//! by 100x and more (Nagel et al., "Data-Free Quantization Through Weight
//! Equalization and Bias Correction", 2019).
//!
//! Requires: constant f32 weights (and bias) used by that node only; A a
//! Conv of any group count, B a Conv with `group = 1`; the tensors between
//! them consumed only along the chain (no graph output, no other use, not
//! captured). Guarantees: the FP32 function is unchanged up to f32
//! rounding. Declines everything else, including Clip/Relu6 between the two
//! (not homogeneous). Sweeps the graph up to 4 times, since equalizing
//! B's input changes its output channels for the next pair.

use quench_ir::{tensor, Graph, NodeId, OpKind, ValueId};

use crate::{util, Changed, Pass, PassCx, PassError};

pub struct Equalize;

/// Largest and smallest scale applied to a channel (keeps weights finite
/// and normal when a channel is all but zero).
const MAX_SCALE: f64 = 1e4;

impl Pass for Equalize {
    fn name(&self) -> &'static str {
        "equalize"
    }
    fn description(&self) -> &'static str {
        "cross-layer equalization of Conv -> (Relu) -> Conv weight ranges"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut pairs = 0;
        let mut changed = false;
        for _sweep in 0..4 {
            let mut any = false;
            for a in g.node_ids() {
                if let Some(b) = partner(g, a) {
                    if equalize_pair(g, a, b) {
                        any = true;
                        if _sweep == 0 {
                            pairs += 1;
                            cx.note(
                                "equalize",
                                format!("{} -> {}", g.node(a).name(), g.node(b).name()),
                            );
                        }
                    }
                }
            }
            changed |= any;
            if !any {
                break;
            }
        }
        cx.count("equalize", "pairs", pairs);
        Ok(changed)
    }
}

/// A constant f32 weight used only by `n`.
fn own_weight(g: &Graph, n: NodeId, i: usize) -> Option<ValueId> {
    let v = g.node(n).input(i)?;
    let t = g.const_tensor(v)?;
    (t.data_type() == quench_onnx::proto::tensor_proto::DataType::Float as i32
        && g.use_count(v) == 1
        && !g.is_graph_output(v))
    .then_some(v)
}

/// The Conv B that reads A's output channels as its input channels.
fn partner(g: &Graph, a: NodeId) -> Option<NodeId> {
    let na = g.node(a);
    if na.kind() != OpKind::Conv || !util::plain(g, a) {
        return None;
    }
    own_weight(g, a, 1)?;
    if na.input(2).is_some() {
        own_weight(g, a, 2)?;
    }
    let y = na.output(0)?;
    let mut next = util::sole_consumer(g, y)?;
    if g.node(next).kind() == OpKind::Relu {
        let r = g.node(next).output(0)?;
        next = util::sole_consumer(g, r)?;
    }
    let nb = g.node(next);
    if nb.kind() != OpKind::Conv || !util::plain(g, next) || nb.attr_int("group").unwrap_or(1) != 1
    {
        return None;
    }
    // B must read the chain as its data input (0), not as a weight.
    let chain_in = nb.input(0)?;
    let from = g.producer(chain_in)?;
    if from != a && g.node(from).kind() != OpKind::Relu {
        return None;
    }
    own_weight(g, next, 1)?;
    Some(next)
}

/// Equalizes one pair; whether any channel changed by more than 1%.
fn equalize_pair(g: &mut Graph, a: NodeId, b: NodeId) -> bool {
    let (Some(w1v), Some(w2v)) = (g.node(a).input(1), g.node(b).input(1)) else {
        return false;
    };
    let b1v = g.node(a).input(2);
    let (Some((d1, mut w1)), Some((d2, mut w2))) =
        (util::const_f64(g, w1v), util::const_f64(g, w2v))
    else {
        return false;
    };
    if d1.len() < 2 || d2.len() < 2 {
        return false;
    }
    let m = d1[0] as usize;
    if d2[1] as usize != m || m == 0 {
        return false;
    }
    let per1 = w1.len() / m;
    let n = d2[0] as usize;
    let per2 = w2.len() / (n * m).max(1);
    if per1 * m != w1.len() || per2 * n * m != w2.len() {
        return false;
    }
    let mut bias = match b1v {
        Some(v) => match util::const_f64(g, v) {
            Some((d, b)) if b.len() == m && d.len() == 1 => Some(b),
            _ => return false,
        },
        None => None,
    };
    let mut scales = vec![1.0f64; m];
    for (c, s) in scales.iter_mut().enumerate() {
        let r1 = w1[c * per1..(c + 1) * per1]
            .iter()
            .fold(0.0f64, |x, v| x.max(v.abs()));
        let r2 = (0..n)
            .flat_map(|o| w2[(o * m + c) * per2..(o * m + c + 1) * per2].iter())
            .fold(0.0f64, |x, v| x.max(v.abs()));
        if r1 > 0.0 && r2 > 0.0 && r1.is_finite() && r2.is_finite() {
            *s = (r1 / r2).sqrt().clamp(1.0 / MAX_SCALE, MAX_SCALE);
        }
    }
    if scales.iter().all(|s| (s - 1.0).abs() < 0.01) {
        return false;
    }
    for (c, s) in scales.iter().enumerate() {
        for v in &mut w1[c * per1..(c + 1) * per1] {
            *v /= s;
        }
        if let Some(b) = &mut bias {
            b[c] /= s;
        }
        for o in 0..n {
            for v in &mut w2[(o * m + c) * per2..(o * m + c + 1) * per2] {
                *v *= s;
            }
        }
    }
    let put = |g: &mut Graph, v: ValueId, dims: &[i64], data: &[f64]| {
        let name = g.value(v).name.clone();
        let f: Vec<f32> = data.iter().map(|x| *x as f32).collect();
        g.replace_const(v, tensor::from_f32(&name, dims, &f));
    };
    put(g, w1v, &d1, &w1);
    put(g, w2v, &d2, &w2);
    if let (Some(v), Some(b)) = (b1v, &bias) {
        put(g, v, &[m as i64], b);
    }
    true
}
