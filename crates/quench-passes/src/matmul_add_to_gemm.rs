//! `matmul_add_to_gemm`: a dense layer written as `MatMul(x, W)` then
//! `Add(., b)`, with `x` of rank 2, `W` a constant `[K, N]` and `b` a
//! constant `[N]` or `[1, N]`, becomes one `Gemm(x, W, b)`.
//!
//! The compile runs it before static quantization. ONNX Runtime fuses
//! such a pair into a float Gemm at its first optimization level, before
//! its Q/DQ fusions, so the quantized `DQ -> MatMul` (its output float,
//! read only by the float bias Add) never becomes an integer kernel: the
//! Gemm's weights are dequantized on every run. On MTCNN's ONet and RNet
//! that made quench's file 2.7x FP32's latency; as a Gemm with an int32
//! bias ONNX Runtime runs it as QGemm (1.08x and 1.17x on a loaded
//! machine, with the same SQNR).
//!
//! Requires: nothing. Guarantees: the same function (`x W + b`, Gemm's
//! definition with `alpha = beta = 1`, no transposes), up to float
//! summation order; the Add's output value keeps its id and name, and the
//! Gemm takes the MatMul's name (so `--exclude-nodes` and pruning by that
//! name still find it). Declines: a MatMul output read by anything but the
//! one Add, a graph output or captured by a subgraph; `x` whose rank is not
//! known to be 2, or a LayerNormalization's output (SmoothQuant's sites
//! are MatMuls); weights or biases that are not constants of those shapes;
//! element types other than f32; a MatMul or Add named in `keep` (the
//! user's exclusions).

use quench_ir::{Graph, Node, NodeId, OpKind, ValueId};
use quench_onnx::proto::tensor_proto::DataType;

use crate::{Changed, Pass, PassCx, PassError};

#[derive(Default)]
pub struct MatMulAddToGemm {
    /// Node names whose pairs stay as they are.
    pub keep: Vec<String>,
    /// Tensors whose MatMul readers (as their first input) stay MatMuls:
    /// the outputs of normalizations SmoothQuant acts on (by tensor, so
    /// unnamed MatMuls are told apart too).
    pub keep_inputs: Vec<String>,
}

fn f32_const_dims(g: &Graph, v: ValueId) -> Option<Vec<i64>> {
    let t = g.const_tensor(v)?;
    (t.data_type() == DataType::Float as i32).then(|| t.dims.clone())
}

/// `(matmul, add, x, w, b)` when `add` ends a dense layer this pass fuses.
fn match_at(
    g: &Graph,
    add: NodeId,
    keep: &[String],
    keep_inputs: &[String],
) -> Option<(NodeId, ValueId, ValueId, ValueId)> {
    let node = g.node(add);
    if keep.iter().any(|k| k == node.name()) {
        return None;
    }
    if node.kind() != OpKind::Add || node.inputs().len() != 2 {
        return None;
    }
    let (a, b) = (node.input(0)?, node.input(1)?);
    let (mm_out, bias) = if g.const_tensor(b).is_some() {
        (a, b)
    } else {
        (b, a)
    };
    let mm = g.producer(mm_out)?;
    let m = g.node(mm);
    if m.kind() != OpKind::MatMul
        || !matches!(m.domain(), "" | "ai.onnx")
        || keep.iter().any(|k| k == m.name())
    {
        return None;
    }
    if g.is_graph_output(mm_out) || g.is_captured(mm_out) || g.uses(mm_out).len() != 1 {
        return None;
    }
    let (x, w) = (m.input(0)?, m.input(1)?);
    let wd = f32_const_dims(g, w)?;
    if wd.len() != 2 {
        return None;
    }
    let bd = f32_const_dims(g, bias)?;
    let n = wd[1];
    if !(bd == [n] || bd == [1, n]) {
        return None;
    }
    let f32_ = Some(DataType::Float as i32);
    let xe = g.value(x).elem_type();
    if (xe.is_some() && xe != f32_) || crate::util::infer_rank(g, x) != Some(2) {
        return None;
    }
    if g.producer(x)
        .is_some_and(|p| g.node(p).kind() == OpKind::LayerNormalization)
        || keep_inputs.iter().any(|k| *k == g.value(x).name)
    {
        return None;
    }
    Some((mm, x, w, bias))
}

impl Pass for MatMulAddToGemm {
    fn name(&self) -> &'static str {
        "matmul_add_to_gemm"
    }
    fn description(&self) -> &'static str {
        "MatMul(x, W) + constant bias with x of rank 2 becomes Gemm(x, W, b) (run before static quantization by the compile: ONNX Runtime then runs it as QGemm)"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut fused = 0;
        for n in g.node_ids() {
            if !g.contains_node(n) {
                continue;
            }
            let Some((mm, x, w, b)) = match_at(g, n, &self.keep, &self.keep_inputs) else {
                continue;
            };
            let Some(y) = g.node(n).output(0) else {
                continue;
            };
            let name = g.node(mm).name().to_string();
            g.remove_node(n);
            g.remove_node(mm);
            g.add_node(
                Node::new("Gemm", &name),
                &[Some(x), Some(w), Some(b)],
                &[Some(y)],
            );
            fused += 1;
        }
        if fused > 0 {
            cx.note(
                "matmul_add_to_gemm",
                format!("{fused} MatMul + bias Add pair(s) -> Gemm"),
            );
            cx.count("matmul_add_to_gemm", "fused", fused);
        }
        Ok(fused > 0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use quench_onnx::proto::TensorProto;

    fn constant(g: &mut Graph, name: &str, dims: &[i64]) -> ValueId {
        let n: i64 = dims.iter().product();
        let v = g.add_value(name, None);
        g.define_const(
            v,
            TensorProto {
                name: Some(name.to_string()),
                dims: dims.to_vec(),
                data_type: Some(DataType::Float as i32),
                float_data: (0..n).map(|i| i as f32 * 0.5 - 1.0).collect(),
                ..Default::default()
            },
        );
        v
    }

    /// x [?, 8] -> Flatten -> MatMul(W [8, 4]) -> Add(b) -> Relu; `bias`
    /// gives b's dims, `flatten` whether the rank is known.
    fn dense(bias: &[i64], flatten: bool) -> Graph {
        let mut g = Graph::new("g");
        let x = g.add_input("x", None);
        let w = constant(&mut g, "w", &[8, 4]);
        let b = constant(&mut g, "b", bias);
        let a = if flatten {
            let f = g.add_value("flat", None);
            g.add_node(Node::new("Flatten", "flatten"), &[Some(x)], &[Some(f)]);
            f
        } else {
            x
        };
        let mm = g.add_value("mm", None);
        g.add_node(Node::new("MatMul", "fc"), &[Some(a), Some(w)], &[Some(mm)]);
        let y = g.add_value("y", None);
        g.add_node(
            Node::new("Add", "fc_bias"),
            &[Some(b), Some(mm)],
            &[Some(y)],
        );
        let r = g.add_value("r", None);
        g.add_node(Node::new("Relu", "relu"), &[Some(y)], &[Some(r)]);
        g.add_output(r);
        g
    }

    fn ops(g: &Graph) -> Vec<String> {
        g.node_ids()
            .into_iter()
            .map(|n| g.node(n).op_type().to_string())
            .collect()
    }

    #[test]
    fn a_dense_layer_of_rank_two_becomes_one_gemm() {
        for bias in [&[4][..], &[1, 4]] {
            let mut g = dense(bias, true);
            let mut cx = PassCx::new(13);
            assert!(MatMulAddToGemm::default().run(&mut g, &mut cx).unwrap());
            let mut o = ops(&g);
            o.sort();
            assert_eq!(o, ["Flatten", "Gemm", "Relu"]);
            let gemm = g
                .node_ids()
                .into_iter()
                .find(|&n| g.node(n).op_type() == "Gemm")
                .unwrap();
            let names: Vec<String> = g
                .node(gemm)
                .inputs()
                .iter()
                .map(|i| g.value(i.unwrap()).name.clone())
                .collect();
            assert_eq!(names, ["flat", "w", "b"]);
            assert_eq!(g.value(g.node(gemm).output(0).unwrap()).name, "y");
            g.verify().unwrap();
        }
    }

    #[test]
    fn a_layer_normalizations_matmul_stays_for_smooth_quant() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", None);
        let scale = constant(&mut g, "scale", &[8]);
        let w = constant(&mut g, "w", &[8, 4]);
        let b = constant(&mut g, "b", &[4]);
        let f = g.add_value("flat", None);
        g.add_node(Node::new("Flatten", "flatten"), &[Some(x)], &[Some(f)]);
        let n = g.add_value("norm", None);
        g.add_node(
            Node::new("LayerNormalization", "ln"),
            &[Some(f), Some(scale)],
            &[Some(n)],
        );
        let mm = g.add_value("mm", None);
        g.add_node(Node::new("MatMul", "fc"), &[Some(n), Some(w)], &[Some(mm)]);
        let y = g.add_value("y", None);
        g.add_node(
            Node::new("Add", "fc_bias"),
            &[Some(mm), Some(b)],
            &[Some(y)],
        );
        g.add_output(y);
        let mut cx = PassCx::new(17);
        assert!(!MatMulAddToGemm::default().run(&mut g, &mut cx).unwrap());
    }

    #[test]
    fn pairs_the_user_excludes_stay_and_the_gemm_keeps_the_matmuls_name() {
        for keep in ["fc", "fc_bias"] {
            let mut g = dense(&[4], true);
            let pass = MatMulAddToGemm {
                keep: vec![keep.to_string()],
                ..Default::default()
            };
            assert!(!pass.run(&mut g, &mut PassCx::new(13)).unwrap(), "{keep}");
        }
        // By the tensor the MatMul reads (its name does not matter).
        let mut g = dense(&[4], true);
        let mm = g
            .node_ids()
            .into_iter()
            .find(|&n| g.node(n).kind() == OpKind::MatMul)
            .unwrap();
        let x = g.node(mm).input(0).unwrap();
        let pass = MatMulAddToGemm {
            keep_inputs: vec![g.value(x).name.clone()],
            ..Default::default()
        };
        assert!(!pass.run(&mut g, &mut PassCx::new(13)).unwrap());
        let mut g = dense(&[4], true);
        assert!(MatMulAddToGemm::default()
            .run(&mut g, &mut PassCx::new(13))
            .unwrap());
        let gemm = g
            .node_ids()
            .into_iter()
            .find(|&n| g.node(n).op_type() == "Gemm")
            .unwrap();
        assert_eq!(g.node(gemm).name(), "fc");
    }

    #[test]
    fn unknown_ranks_and_other_bias_shapes_are_left_alone() {
        for (bias, flatten) in [(&[4][..], false), (&[2, 4], true), (&[8], true)] {
            let mut g = dense(bias, flatten);
            let before = ops(&g);
            let mut cx = PassCx::new(13);
            assert!(!MatMulAddToGemm::default().run(&mut g, &mut cx).unwrap());
            assert_eq!(ops(&g), before);
        }
    }
}
