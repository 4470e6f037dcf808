//! The graph's editing API against a brute-force recomputation: after every
//! edit of a deterministic pseudo-random sequence (add, rewire, replace
//! uses, redefine outputs, remove), the use lists, consumers, use counts,
//! producers and topological order must agree with what the nodes' input
//! and output lists say (the invariant of `graph.rs`: edges and use lists
//! mirror the input lists). Plus `verify`'s problem reports, names and
//! constants. (Mutation testing found these otherwise unchecked; see
//! benches/results/mutants_2026-11-27.md.)

use std::collections::HashMap;

use quench_ir::tensor::{from_f32, tensor_type_of};
use quench_ir::{Dim, Graph, IrError, Node, NodeId, Problem, ValueDef, ValueId};

/// Every derived index of `g` recomputed from the node lists.
fn assert_consistent(g: &Graph, step: &str) {
    let nodes = g.node_ids();
    // Uses: (node, index) for each input slot and implicit input.
    let mut uses: HashMap<ValueId, Vec<(NodeId, usize)>> = HashMap::new();
    let mut producer: HashMap<ValueId, NodeId> = HashMap::new();
    for &n in &nodes {
        let node = g.node(n);
        for (i, v) in node.inputs().iter().enumerate() {
            if let Some(v) = v {
                uses.entry(*v).or_default().push((n, i));
            }
        }
        for (k, v) in node.implicit_inputs().iter().enumerate() {
            uses.entry(*v)
                .or_default()
                .push((n, node.inputs().len() + k));
        }
        for (slot, o) in node.outputs().iter().enumerate() {
            if let Some(o) = o {
                producer.insert(*o, n);
                assert_eq!(
                    g.value(*o).def,
                    ValueDef::Node { node: n, slot },
                    "{step}: def of output"
                );
            }
        }
    }
    for v in g.value_ids() {
        let mut want = uses.get(&v).cloned().unwrap_or_default();
        want.sort();
        let mut got: Vec<(NodeId, usize)> = g.uses(v).iter().map(|u| (u.node, u.index)).collect();
        got.sort();
        assert_eq!(got, want, "{step}: uses of {}", g.value(v).name);
        let mut cons: Vec<NodeId> = want.iter().map(|(n, _)| *n).collect();
        cons.dedup();
        assert_eq!(g.consumers(v), cons, "{step}: consumers");
        let outs = g.outputs().iter().filter(|o| **o == v).count();
        assert_eq!(g.use_count(v), want.len() + outs, "{step}: use_count");
        assert_eq!(g.is_graph_output(v), outs > 0, "{step}");
        assert_eq!(g.producer(v), producer.get(&v).copied(), "{step}: producer");
        let captured = want.iter().any(|(n, i)| *i >= g.node(*n).inputs().len());
        assert_eq!(g.is_captured(v), captured, "{step}: is_captured");
    }
    // Topological order: every node once, after the producers of its inputs.
    let order = match g.topo_order() {
        Ok(o) => o,
        Err(e) => panic!("{step}: {e}"),
    };
    assert_eq!(order.len(), nodes.len(), "{step}");
    assert_eq!(g.node_count(), nodes.len(), "{step}");
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    for &n in &nodes {
        let node = g.node(n);
        for v in node.inputs().iter().flatten().chain(node.implicit_inputs()) {
            if let Some(p) = producer.get(v) {
                assert!(pos[p] < pos[&n], "{step}: producer after consumer");
            }
        }
    }
}

/// A deterministic generator (64-bit LCG, top bits).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

#[test]
fn random_edits_keep_uses_edges_and_order_in_step() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", None);
    let c = g.add_const("c", from_f32("", &[1], &[1.0]));
    // Values in definition order: a value may feed only nodes created after
    // it, so the graph stays acyclic whatever is rewired.
    let mut defined: Vec<ValueId> = vec![x, c];
    let mut rng = Lcg(7);
    let mut done = [0usize; 6];
    for step in 0..200 {
        let what = rng.below(6);
        let label = format!("step {step} ({what})");
        match what {
            // Add a node of 1-3 inputs (repeats allowed) and 1-2 outputs.
            0 | 1 => {
                let k = 1 + rng.below(3);
                let ins: Vec<ValueId> = (0..k).map(|_| defined[rng.below(defined.len())]).collect();
                let outs = 1 + rng.below(2);
                let names: Vec<String> = (0..outs).map(|i| format!("v{step}_{i}")).collect();
                let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
                let (_, o) = g.add_op(Node::new("Add", &format!("n{step}")), &ins, &refs);
                defined.extend(o);
            }
            // Rewire one input to a value defined before the node's outputs.
            2 => {
                let nodes = g.node_ids();
                if nodes.is_empty() {
                    continue;
                }
                let n = nodes[rng.below(nodes.len())];
                let first_out = g
                    .node(n)
                    .output(0)
                    .and_then(|o| defined.iter().position(|d| *d == o));
                let limit = first_out.unwrap_or(defined.len());
                let i = rng.below(g.node(n).inputs().len() + 1);
                let v = defined[rng.below(limit)];
                g.set_input(n, i, Some(v));
            }
            // Replace every node use of a value by an earlier one.
            3 => {
                let a = rng.below(defined.len());
                let b = rng.below(a + 1);
                g.replace_node_uses(defined[a], defined[b]);
            }
            // Redefine a node output with a fresh value and move its uses.
            4 => {
                let nodes = g.node_ids();
                if nodes.is_empty() {
                    continue;
                }
                let n = nodes[rng.below(nodes.len())];
                let Some(old) = g.node(n).output(0) else {
                    continue;
                };
                let new = g.add_value(&format!("r{step}"), None);
                g.set_node_output(n, 0, new);
                assert_eq!(g.value(old).def, ValueDef::Undefined, "{label}");
                g.replace_node_uses(old, new);
                let p = defined.iter().position(|d| *d == old).unwrap_or(0);
                defined[p] = new;
            }
            // Remove a node none of whose outputs is used.
            _ => {
                let unused: Vec<NodeId> = g
                    .node_ids()
                    .into_iter()
                    .filter(|n| {
                        g.node(*n)
                            .outputs()
                            .iter()
                            .flatten()
                            .all(|o| g.use_count(*o) == 0)
                    })
                    .collect();
                if unused.is_empty() {
                    continue;
                }
                let n = unused[rng.below(unused.len())];
                let removed = g.remove_node(n);
                assert!(!g.contains_node(n), "{label}");
                for o in removed.outputs().iter().flatten() {
                    assert_eq!(g.value(*o).def, ValueDef::Undefined, "{label}");
                    defined.retain(|d| d != o);
                }
            }
        }
        done[what] += 1;
        assert_consistent(&g, &label);
        assert!(g.verify().is_ok(), "{label}: {:?}", g.verify());
    }
    // Every kind of edit ran (a `continue` above skips the count).
    assert!(done.iter().all(|d| *d > 5), "{done:?}");
    assert!(g.node_count() > 10, "the sequence should leave a graph");
}

fn problems(r: Result<(), IrError>) -> Vec<Problem> {
    match r {
        Ok(()) => Vec::new(),
        Err(e) => e.problems().to_vec(),
    }
}

#[test]
fn verify_reports_every_problem() {
    // An undefined input and an undefined graph output.
    let mut g = Graph::new("g");
    let x = g.add_input("x", None);
    let ghost = g.add_value("ghost", None);
    let (_, y) = g.add_op(Node::new("Add", "add"), &[x, ghost], &["y"]);
    g.add_output(y[0]);
    g.add_output(ghost);
    assert_eq!(
        problems(g.verify()),
        vec![
            Problem::UndefinedInput {
                node: "add".into(),
                op: "Add".into(),
                value: "ghost".into()
            },
            Problem::UndefinedOutput {
                value: "ghost".into()
            },
        ]
    );

    // A cycle: a -> b -> a.
    let mut g = Graph::new("g");
    let x = g.add_input("x", None);
    let (a, av) = g.add_op(Node::new("Relu", "a"), &[x], &["av"]);
    let (_, bv) = g.add_op(Node::new("Neg", "b"), &[av[0]], &["bv"]);
    g.set_input(a, 0, Some(bv[0]));
    g.add_output(bv[0]);
    let e = g.topo_order().err().map(|e| e.problems().to_vec());
    assert_eq!(
        e,
        Some(vec![Problem::Cycle {
            node: "a".into(),
            op: "Relu".into()
        }])
    );
    assert_eq!(
        problems(g.verify()),
        vec![Problem::Cycle {
            node: "a".into(),
            op: "Relu".into()
        }]
    );
    // Breaking it makes the graph valid again, in creation order.
    g.set_input(a, 0, Some(x));
    assert!(g.verify().is_ok());
    assert_eq!(g.topo_order().ok().map(|o| o.len()), Some(2));

    // An output defined by a node that does not list it, and a constant
    // whose value a node also defines.
    let mut g = Graph::new("g");
    let x = g.add_input("x", None);
    let c = g.add_const("c", from_f32("", &[1], &[2.0]));
    let (n, _) = g.add_op(Node::new("Relu", "r"), &[x], &["r_out"]);
    g.set_node_output(n, 1, c);
    let p = problems(g.verify());
    assert_eq!(
        p,
        vec![Problem::Other(
            "initializer `c` is also defined otherwise".into()
        )]
    );
}

#[test]
fn names_constants_and_outputs() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", Some(tensor_type_of(1, &[2, 3])));
    assert_eq!(g.value(x).static_shape(), Some(vec![2, 3]));
    assert_eq!(g.value(x).shape(), Some(vec![Dim::Known(2), Dim::Known(3)]));
    assert_eq!(g.value(x).elem_type(), Some(1));
    assert!(g.is_graph_input(x));
    // Taken names get _1, _2; node names count as taken.
    let a = g.add_value("x", None);
    assert_eq!(g.value(a).name, "x_1");
    let b = g.add_value("x", None);
    assert_eq!(g.value(b).name, "x_2");
    // An empty base is never returned as is.
    assert_eq!(g.unique_name(""), "v_1");
    let (n, _) = g.add_op(Node::new("Relu", "v"), &[x], &["out"]);
    assert_eq!(g.unique_name("v"), "v_1");
    assert_eq!(g.unique_name("fresh"), "fresh");
    g.remove_node(n);
    assert_eq!(g.unique_name("v"), "v");
    // Renaming frees the old name and refuses a taken one.
    assert!(g.rename_value(a, "alpha"));
    assert_eq!(g.value_by_name("alpha"), Some(a));
    assert_eq!(g.value_by_name("x_1"), None);
    assert!(!g.rename_value(b, "alpha"));
    assert_eq!(g.value(b).name, "x_2");

    // Constants: data, replacement (type follows), removal.
    let c = g.add_const("c", from_f32("", &[2], &[1.0, 2.0]));
    assert_eq!(g.value(c).def, ValueDef::Const);
    assert_eq!(g.const_tensor(c).map(|t| t.dims.clone()), Some(vec![2]));
    g.replace_const(c, from_f32("", &[3], &[1.0, 2.0, 3.0]));
    assert_eq!(g.value(c).static_shape(), Some(vec![3]));
    assert_eq!(g.initializers().count(), 1);
    g.remove_const(c);
    assert_eq!(g.value(c).def, ValueDef::Undefined);
    assert!(g.const_tensor(c).is_none());
    assert_eq!(g.initializers().count(), 0);
    // An undefined value becomes a constant.
    g.define_const(b, from_f32("", &[], &[5.0]));
    assert_eq!(g.value(b).def, ValueDef::Const);
    assert_eq!(g.value(b).static_shape(), Some(vec![]));

    // Graph outputs: replace_all_uses moves them, replace_node_uses does not.
    let (_, y) = g.add_op(Node::new("Neg", "neg"), &[x], &["y"]);
    let (_, z) = g.add_op(Node::new("Abs", "abs"), &[y[0]], &["z"]);
    g.add_output(y[0]);
    g.add_output(z[0]);
    g.replace_node_uses(y[0], x);
    assert_eq!(g.outputs(), &[y[0], z[0]]);
    assert_eq!(g.use_count(y[0]), 1);
    g.replace_all_uses(z[0], y[0]);
    assert_eq!(g.outputs(), &[y[0], y[0]]);
    assert_eq!(g.use_count(y[0]), 2);
    g.set_output(1, x);
    assert_eq!(g.outputs(), &[y[0], x]);
    assert_consistent(&g, "names_constants_and_outputs");
}

/// Node attribute accessors and the model's operator-set table.
#[test]
fn attributes_and_opsets() -> Result<(), String> {
    let mut n = Node::new("LeakyRelu", "l");
    n.set_attr(quench_ir::attr::float("alpha", 0.25));
    n.set_attr(quench_ir::attr::int("k", 3));
    assert_eq!(n.attr_float("alpha"), Some(0.25));
    assert_eq!(n.attr_float("beta"), None);
    assert_eq!(n.attr_int("k"), Some(3));
    // set_attr replaces by name; remove_attr drops it.
    n.set_attr(quench_ir::attr::int("k", 4));
    assert_eq!((n.attr_int("k"), n.proto.attribute.len()), (Some(4), 2));
    n.remove_attr("k");
    assert_eq!(n.attr_int("k"), None);
    assert!(!n.has_subgraphs());
    let mut with_graph = Node::new("If", "if");
    with_graph
        .proto
        .attribute
        .push(quench_onnx::proto::AttributeProto {
            name: Some("then_branch".into()),
            g: Some(Default::default()),
            ..Default::default()
        });
    assert!(with_graph.has_subgraphs());

    let text = "# ir_version 8; opset ai.onnx 17, com.microsoft 1\ngraph g(%x: f32[1]) -> (%x)\n";
    let mut m = quench_ir::parse_model(text).map_err(|e| e.to_string())?;
    assert_eq!(m.default_opset(), Some(17));
    assert_eq!(m.opset("ai.onnx"), Some(17));
    assert_eq!(m.opset("com.microsoft"), Some(1));
    assert_eq!(m.opset("ai.onnx.ml"), None);
    m.set_opset("ai.onnx", 21);
    m.set_opset("ai.onnx.ml", 3);
    assert_eq!(
        m.opsets(),
        vec![
            ("ai.onnx".to_string(), 21),
            ("ai.onnx.ml".to_string(), 3),
            ("com.microsoft".to_string(), 1)
        ]
    );
    assert_eq!(m.header.opset_import.len(), 3);
    Ok(())
}
