//! Parts of a graph output: the tensors a Concat (through Reshape,
//! Transpose and other pure data movement) assembles it from, each
//! measured on its own in verification.
//!
//! A detector's output often concatenates quantities of different kinds
//! and scales: YOLOv8's `[N, 4 + classes, anchors]` holds box coordinates
//! in pixels beside class probabilities; YOLOX's `[N, anchors, 6]` box
//! offsets beside objectness and class probabilities. One SQNR over such
//! an output is decided by its largest values: on nudenet (YOLOv8n,
//! photos) the whole output reads 29.2 dB in quench's file while its
//! class probabilities read 10.9 (ONNX Runtime's best configuration: 27.6
//! and 2.3); on ddddocr's YOLOX the objectness reads 11.5 dB inside a
//! 23.0 dB output. The parts' figures say so.
//!
//! Measured and not adopted: scoring `--method auto`'s candidates by the
//! mean of the parts' error ratios instead of the whole output's. On
//! those two models it chose percentile 99.99 over entropy and 99.999,
//! and on held-back images every figure fell, the parts' too (ddddocr
//! det: output 23.04 -> 18.29 dB, objectness 11.49 -> 11.73, the mean over
//! parts 14.79 -> 13.80; nudenet: output 29.19 -> 25.80, classes 10.87 ->
//! 10.13): a sparse part (objects on few anchors) is too noisy on 16
//! calibration samples to choose by.
//!
//! The element-to-part map (a mask) is computed, not guessed: the data
//! movement between the parts and the output is evaluated by the constant
//! evaluator ([`quench_passes::eval`]) on tensors holding each part's
//! number, with the parts' shapes (and any computed shape inputs) taken
//! from the FP32 run that exposes them. Data movement copies values
//! exactly, so each output element belongs to exactly one part. When the
//! evaluator cannot run it, the output gets no parts.
//!
//! Invariant: the parts' elements are exactly the output's, except those
//! copied from constants (no error; left out).

use std::collections::HashMap;

use quench_ir::{Graph, Node, OpKind, ValueId};
use quench_passes::eval::{self, Tensor};
use quench_verify::ArrayData;

/// An output assembled by data movement from two or more computed
/// tensors.
#[derive(Debug, Clone)]
pub struct OutputParts {
    /// Position among the graph outputs.
    pub index: usize,
    /// The computed tensors it is made of (each a part), in the order
    /// met from the output.
    pub leaves: Vec<String>,
    leaf_ids: Vec<ValueId>,
    /// Computed non-data inputs of the data movement (a Reshape's shape
    /// from `Shape` ops), read from the same run as the leaves.
    side: Vec<(ValueId, String)>,
    /// Constant inputs of the data movement (shapes, axes, constant
    /// parts), by value.
    consts: HashMap<ValueId, Tensor>,
    /// The data movement nodes, in an order where inputs come first.
    nodes: Vec<Node>,
    output_id: ValueId,
}

fn is_movement(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Identity
            | OpKind::Reshape
            | OpKind::Flatten
            | OpKind::Squeeze
            | OpKind::Unsqueeze
            | OpKind::Transpose
            | OpKind::Concat
    )
}

/// The outputs of `g` assembled by data movement (with at least one
/// Concat) from at least two distinct computed tensors.
pub fn find(g: &Graph) -> Vec<OutputParts> {
    let mut out = Vec::new();
    for (index, &o) in g.outputs().iter().enumerate() {
        if let Some(p) = walk(g, index, o) {
            out.push(p);
        }
    }
    out
}

/// What a walk from an output back through its data movement found.
#[derive(Default)]
struct Walk {
    leaves: Vec<ValueId>,
    side: Vec<ValueId>,
    consts: HashMap<ValueId, Tensor>,
    /// Post-order: each node after every node producing its inputs.
    nodes: Vec<quench_ir::NodeId>,
    concat: bool,
    /// Values known to be (or not) computed from constants alone, and
    /// the values of those evaluated: each value is looked at once.
    constant: HashMap<ValueId, bool>,
    evaluated: HashMap<ValueId, Option<Tensor>>,
}

impl Walk {
    /// Visits `v`, reached as data (`data`) or as a shape or axes input;
    /// `None` when a constant cannot be decoded or the chain is deeper
    /// than any real model's.
    fn visit(&mut self, g: &Graph, v: ValueId, data: bool, depth: usize) -> Option<()> {
        if depth > 256 {
            return None;
        }
        // Constants: initializers, Constant nodes and what is computed
        // from them alone (a shape from Constant nodes), never exposed.
        if self.consts.contains_key(&v) {
            return Some(());
        }
        if self.is_constant(g, v, CONST_DEPTH) {
            // A constant the evaluator cannot compute (an f16 initializer):
            // no parts, rather than a constant exposed as one.
            let t = self.constant_value(g, v)?;
            self.consts.insert(v, t);
            return Some(());
        }
        let producer = g.producer(v).filter(|&n| {
            let node = g.node(n);
            data && is_movement(node.kind()) && !node.has_subgraphs()
        });
        let Some(n) = producer else {
            let list = if data {
                &mut self.leaves
            } else {
                &mut self.side
            };
            if !list.contains(&v) {
                list.push(v);
            }
            return Some(());
        };
        if self.nodes.contains(&n) {
            return Some(());
        }
        let node = g.node(n);
        self.concat |= node.kind() == OpKind::Concat;
        for (i, inp) in node.inputs().iter().enumerate() {
            let Some(inp) = inp else { continue };
            let is_data = node.kind() == OpKind::Concat || i == 0;
            self.visit(g, *inp, is_data, depth + 1)?;
        }
        self.nodes.push(n);
        Some(())
    }
}

/// How many producers up [`Walk::is_constant`] looks (shape arithmetic
/// on Constant nodes is a few nodes deep; a deeper constant is taken for
/// a computed tensor).
const CONST_DEPTH: usize = 64;

impl Walk {
    /// Whether `v` is computed from constants alone (initializers,
    /// Constant nodes), looking at most `depth` producers up; decided
    /// without decoding anything, once per value.
    fn is_constant(&mut self, g: &Graph, v: ValueId, depth: usize) -> bool {
        if let Some(&known) = self.constant.get(&v) {
            return known;
        }
        let known = g.const_tensor(v).is_some()
            || match g.producer(v).map(|n| g.node(n)) {
                Some(node) if node.kind() == OpKind::Constant => true,
                Some(node) if depth > 0 && !node.has_subgraphs() && !node.inputs().is_empty() => {
                    let inputs: Vec<ValueId> = node.inputs().iter().flatten().copied().collect();
                    inputs.iter().all(|&i| self.is_constant(g, i, depth - 1))
                }
                _ => false,
            };
        self.constant.insert(v, known);
        known
    }

    /// The value of a `v` [`is_constant`](Self::is_constant) found
    /// constant, by the constant evaluator; `None` where it cannot
    /// compute it. Evaluated once per value.
    fn constant_value(&mut self, g: &Graph, v: ValueId) -> Option<Tensor> {
        if let Some(t) = self.evaluated.get(&v) {
            return t.clone();
        }
        let t = self.evaluate(g, v);
        self.evaluated.insert(v, t.clone());
        t
    }

    fn evaluate(&mut self, g: &Graph, v: ValueId) -> Option<Tensor> {
        if let Some(t) = g.const_tensor(v) {
            return Tensor::from_proto(t);
        }
        let n = g.producer(v)?;
        if g.node(n).kind() == OpKind::Constant {
            return Tensor::from_proto(
                &quench_passes::constants_to_initializers::constant_node_value(g.node(n))?,
            );
        }
        let ins: Vec<Option<ValueId>> = g.node(n).inputs().to_vec();
        let mut inputs = Vec::with_capacity(ins.len());
        for i in ins {
            inputs.push(match i {
                None => None,
                Some(i) => Some(self.constant_value(g, i)?),
            });
        }
        let node = g.node(n);
        let slot = node.outputs().iter().position(|o| *o == Some(v))?;
        eval::eval(node, &inputs)?.into_iter().nth(slot)
    }
}

fn walk(g: &Graph, index: usize, output: ValueId) -> Option<OutputParts> {
    let mut w = Walk::default();
    w.visit(g, output, true, 0)?;
    if !w.concat || w.leaves.len() < 2 {
        return None;
    }
    Some(OutputParts {
        index,
        leaves: w.leaves.iter().map(|&v| g.value(v).name.clone()).collect(),
        leaf_ids: w.leaves,
        side: w
            .side
            .iter()
            .map(|&v| (v, g.value(v).name.clone()))
            .collect(),
        consts: w.consts,
        nodes: w.nodes.iter().map(|&n| g.node(n).clone()).collect(),
        output_id: output,
    })
}

impl OutputParts {
    /// The tensors an FP32 run must expose to compute the mask: the
    /// leaves, then the computed shape inputs.
    pub fn exposed(&self) -> Vec<String> {
        self.leaves
            .iter()
            .cloned()
            .chain(self.side.iter().map(|(_, n)| n.clone()))
            .collect()
    }

    /// Per element of the output (row-major), its part (1-based; 0 for
    /// elements copied from a constant), from the arrays of
    /// [`exposed`](Self::exposed) in one run; `None` when the data
    /// movement cannot be evaluated or a part number is not exact.
    pub fn mask(&self, exposed: &[&ArrayData]) -> Option<Vec<u32>> {
        if exposed.len() != self.leaves.len() + self.side.len() {
            return None;
        }
        let mut values: HashMap<ValueId, Tensor> = HashMap::new();
        for (k, (&v, a)) in self.leaf_ids.iter().zip(exposed).enumerate() {
            // Sizes over the constant evaluator's cap: no mask.
            eval::capped_count(a.shape())?;
            let id = (k + 1) as f32;
            values.insert(v, Tensor::F32(ndarray::ArrayD::from_elem(a.shape(), id)));
        }
        for ((v, name), a) in self.side.iter().zip(&exposed[self.leaves.len()..]) {
            values.insert(*v, Tensor::from_proto(&a.to_tensor_proto(name))?);
        }
        // Constants keep their values where the data movement reads them
        // as shapes or axes; as data they become zeros below (part 0).
        for (v, t) in &self.consts {
            values.insert(*v, t.clone());
        }
        for node in &self.nodes {
            let inputs: Vec<Option<Tensor>> = node
                .inputs()
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let t = values.get(&(*v)?)?.clone();
                    // Data inputs of constants become zeros (part 0).
                    let data = node.kind() == OpKind::Concat || i == 0;
                    Some(if data && self.consts.contains_key(&(*v)?) {
                        Tensor::F32(ndarray::ArrayD::zeros(t.shape()))
                    } else {
                        t
                    })
                })
                .collect();
            let outs = eval::eval(node, &inputs)?;
            let o = node.output(0)?;
            values.insert(o, outs.into_iter().next()?);
        }
        let Tensor::F32(m) = values.get(&self.output_id)? else {
            return None;
        };
        let n = self.leaves.len() as f32;
        m.iter()
            .map(|&x| (x >= 0.0 && x <= n && x.fract() == 0.0).then_some(x as u32))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ArrayD;

    fn graph(text: &str) -> Graph {
        quench_ir::parse_graph(text).expect("parses")
    }

    fn f32s(shape: &[usize]) -> ArrayData {
        ArrayData::F32(ArrayD::zeros(shape.to_vec()))
    }

    /// Two computed tensors and a constant concatenated, transposed and
    /// flattened: each element's part follows the data movement (the
    /// constant's elements in none), and the masks of the exposed
    /// tensors' shapes are what the movement does to them.
    #[test]
    fn the_mask_follows_concat_transpose_and_reshape() {
        let g = graph(
            "graph parts(%x: f32[1,2,3]) -> (%4)
  %w0 = const f32[1,1,3] [0,0,0]  # pad
  %w1 = const i64[2] [1,15]  # shape
  %0 = Relu(%x) : ?  # r: a
  %1 = Neg(%x) : ?  # n: b
  %2 = Concat(%0, %1, %w0) {axis=1} : ?  # cat: c
  %3 = Transpose(%2) {perm=[0,2,1]} : ?  # t: d
  %4 = Reshape(%3, %w1) : ?  # flat: out
",
        );
        let found = find(&g);
        assert_eq!(found.len(), 1);
        let p = &found[0];
        assert_eq!(
            (p.index, p.leaves.clone()),
            (0, vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(p.exposed(), ["a", "b"]);
        let (a, b) = (f32s(&[1, 2, 3]), f32s(&[1, 2, 3]));
        let mask = p.mask(&[&a, &b]).expect("a mask");
        // c[0, j, k] -> out[0, 5k + j]: rows j = 0, 1 from a, 2, 3 from b,
        // 4 the constant.
        assert_eq!(mask, [1, 1, 2, 2, 0].repeat(3));
        // Shapes that do not fit the data movement give no mask.
        assert!(p.mask(&[&f32s(&[1, 2, 4]), &b]).is_none());
        assert!(p.mask(&[&a]).is_none());
    }

    /// A shape computed from Constant nodes is a constant (not exposed),
    /// and a Constant node concatenated as data is in no part: one
    /// computed tensor beside it gives no parts, two give two.
    #[test]
    fn constant_nodes_are_constants() {
        let g = graph(
            "graph consts(%x: f32[1,2,3]) -> (%6)
  %0 = Constant() {value=tensor i64[1] [1]} : ?  # k1: one
  %1 = Constant() {value=tensor i64[1] [12]} : ?  # k2: twelve
  %2 = Concat(%0, %1) {axis=0} : ?  # shape_cat: shape
  %3 = Constant() {value=tensor f32[1,2,3] [0,0,0,0,0,0]} : ?  # k3: pad
  %4 = Relu(%x) : ?  # r: a
  %5 = Concat(%4, %3) {axis=1} : ?  # cat: c
  %6 = Reshape(%5, %2) : ?  # flat: out
",
        );
        assert!(find(&g).is_empty(), "one computed tensor beside a constant");
        let g = graph(
            "graph consts2(%x: f32[1,2,3]) -> (%7)
  %0 = Constant() {value=tensor i64[1] [1]} : ?  # k1: one
  %1 = Constant() {value=tensor i64[1] [18]} : ?  # k2: eighteen
  %2 = Concat(%0, %1) {axis=0} : ?  # shape_cat: shape
  %3 = Constant() {value=tensor f32[1,2,3] [0,0,0,0,0,0]} : ?  # k3: pad
  %4 = Relu(%x) : ?  # r: a
  %5 = Neg(%x) : ?  # n: b
  %6 = Concat(%4, %3, %5) {axis=1} : ?  # cat: c
  %7 = Reshape(%6, %2) : ?  # flat: out
",
        );
        let found = find(&g);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].exposed(), ["a", "b"], "nothing constant exposed");
        let x = f32s(&[1, 2, 3]);
        let mask = found[0].mask(&[&x, &x]).expect("a mask");
        assert_eq!(mask, [[1; 6], [0; 6], [2; 6]].concat());
    }

    /// Constants built from a shared subgraph are looked at once each
    /// (unmemoized, `c20 = c19 + c19` ... took 2^20 evaluations per
    /// visited value), and a constant 40 producers deep is still one.
    #[test]
    fn deep_and_shared_constants_are_constants() {
        let mut text = String::from(
            "graph deep(%x: f32[1,2]) -> (%out)
  %c0 = Constant() {value=tensor f32[1,2] [1,2]} : ?  # k0: c0
",
        );
        for k in 1..=40 {
            text += &format!(
                "  %c{k} = Add(%c{}, %c{}) : ?  # add{k}: c{k}\n",
                k - 1,
                k - 1
            );
        }
        text += "  %a = Relu(%x) : ?  # r: a
  %b = Neg(%x) : ?  # n: b
  %la = Add(%c20, %a) : ?  # la: la
  %lb = Add(%c20, %b) : ?  # lb: lb
  %out = Concat(%la, %lb, %c40) {axis=1} : ?  # cat: out
";
        let found = find(&graph(&text));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].exposed(), ["la", "lb"], "constants are not parts");
        let x = f32s(&[1, 2]);
        assert_eq!(
            found[0].mask(&[&x, &x]).expect("a mask"),
            [1, 1, 2, 2, 0, 0]
        );
    }

    /// No Concat, or one tensor concatenated with itself: no parts.
    #[test]
    fn one_piece_outputs_have_no_parts() {
        let plain = graph(
            "graph plain(%x: f32[1,4]) -> (%1)
  %0 = Relu(%x) : ?  # r: a
  %1 = Transpose(%0) {perm=[1,0]} : ?  # t: out
",
        );
        assert!(find(&plain).is_empty());
        let twice = graph(
            "graph twice(%x: f32[1,4]) -> (%1)
  %0 = Relu(%x) : ?  # r: a
  %1 = Concat(%0, %0) {axis=1} : ?  # cat: out
",
        );
        assert!(find(&twice).is_empty());
    }
}
