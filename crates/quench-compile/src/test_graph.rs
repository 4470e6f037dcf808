//! Small graphs for unit tests, written as `(op, inputs, output)` triples.

use quench_ir::{tensor, Graph, Node, ValueId};
use quench_onnx::proto::AttributeProto;

/// A graph with input `x`, float constants `consts` of `len` ones each,
/// and one node per triple, named after its output; ReduceMeans reduce
/// `axes` (kept dims, the attribute form).
pub(crate) fn graph(
    ops: &[(&str, &[&str], &str)],
    consts: &[&str],
    len: usize,
    axes: i64,
) -> Graph {
    let mut g = Graph::new("g");
    g.add_input("x", None);
    for c in consts {
        let v = g.add_value(c, None);
        g.define_const(v, tensor::from_f32(c, &[len as i64], &vec![1.0; len]));
    }
    for (op, ins, out) in ops {
        let ins: Vec<Option<ValueId>> = ins
            .iter()
            .map(|i| Some(g.value_by_name(i).unwrap_or_else(|| g.add_value(i, None))))
            .collect();
        let o = g.add_value(out, None);
        let mut node = Node::new(op, out);
        if *op == "Cast" {
            node.set_attr(quench_ir::attr::int("to", 1));
        }
        if *op == "ReduceMean" {
            node.set_attr(AttributeProto {
                name: Some("axes".into()),
                ints: vec![axes],
                r#type: Some(7),
                ..Default::default()
            });
        }
        g.add_node(node, &ins, &[Some(o)]);
    }
    g
}
