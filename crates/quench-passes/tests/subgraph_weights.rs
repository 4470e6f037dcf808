//! `subgraphs::quantize_bodies`: weights inside If bodies, nested bodies,
//! and constants the bodies capture (quantized where they are defined,
//! under their own name, only when every use is a weight).
#![allow(clippy::unwrap_used)]

use quench_ir::{import_subgraph, parse_model, Graph, OpKind, ValueDef};
use quench_onnx::proto::tensor_proto::DataType;
use quench_passes::quantize::{Mode, QuantizeConfig};
use quench_passes::subgraphs::quantize_bodies;
use quench_passes::PassCx;

// `w`: captured by a MatMul two levels down (nested If); `v`: captured and
// added (not a weight); `u`: captured as a weight but also added in the
// main graph; `k`: an initializer of the then branch.
const MODEL: &str = "\
# ir_version 8; opset ai.onnx 17
graph g(%x: f32[1,8], %c: bool[]) -> (%1, %2)
  %w = const f32[8,4]
  %v = const f32[1,8]
  %u = const f32[8,4]
  %one = const f32[8,4]
  %1 = If(%c) {else_branch=graph(1 nodes), then_branch=graph(3 nodes)} captures(%x, %c, %w, %v, %u) : f32[1,4]  # outer: y
    else_branch:
      graph else_branch() -> (%0)
        %0 = MatMul(^x, ^u) : f32[1,4]                       # e_mm: e
    then_branch:
      graph then_branch() -> (%2)
        %k = const f32[8,4]                                   # k
        %0 = Add(^x, ^v) : f32[1,8]                           # t_add: t0
        %1 = If(^c) {else_branch=graph(1 nodes), then_branch=graph(1 nodes)} captures(%0) : f32[1,4]  # inner: t1
          else_branch:
            graph inner_else() -> (%0)
              %0 = MatMul(^t0, ^k) : f32[1,4]                 # ie_mm: ie
          then_branch:
            graph inner_then() -> (%0)
              %0 = MatMul(^t0, ^w) : f32[1,4]                 # it_mm: it
        %2 = Identity(%1) : f32[1,4]                          # t_id: t2
  %2 = Add(%u, %one) : f32[8,4]                               # u_add: z
";

fn body(g: &Graph, node: &str, attr: &str) -> Graph {
    let n = g
        .node_ids()
        .into_iter()
        .find(|n| g.node(*n).name() == node)
        .unwrap();
    let a = g.node(n).attr(attr).unwrap();
    import_subgraph(a.g.clone().unwrap()).unwrap()
}

fn const_type(g: &Graph, name: &str) -> Option<i32> {
    g.value_by_name(name)
        .and_then(|v| g.const_tensor(v))
        .map(|t| t.data_type())
}

#[test]
fn captured_weights_are_quantized_where_defined_and_bodies_keep_their_names() {
    let mut m = parse_model(MODEL).unwrap();
    let before = m.graph.clone();
    let cfg = QuantizeConfig::default();
    let mut cx = PassCx::new(17);
    let s = quantize_bodies(&mut m.graph, &cfg, 17, &mut cx).unwrap();
    let g = &m.graph;
    g.verify().unwrap();
    // `w` (a weight two bodies down) and `k` (inside the then branch).
    assert_eq!(s.weights_quantized, 2, "{:?}", s.notes);
    assert_eq!(s.bodies, 4);
    // `w` is now the output of a per-channel DequantizeLinear of int8 codes.
    let w = g.value_by_name("w").unwrap();
    let ValueDef::Node { node, .. } = g.value(w).def else {
        panic!(
            "`w` should be a DequantizeLinear output, is {:?}",
            g.value(w).def
        )
    };
    assert_eq!(g.node(node).kind(), OpKind::DequantizeLinear);
    assert_eq!(g.node(node).attr_int("axis"), Some(1));
    assert_eq!(
        const_type(g, "w_quantized"),
        Some(DataType::Int8 as i32),
        "int8 codes of `w`"
    );
    // Not weights everywhere: `v` (added in a body), `u` (added here).
    assert_eq!(const_type(g, "v"), Some(DataType::Float as i32));
    assert_eq!(const_type(g, "u"), Some(DataType::Float as i32));
    // The innermost body still reads `w` by name; the then branch holds
    // int8 codes of `k` and no float `k` any more.
    let then_b = body(g, "outer", "then_branch");
    assert_eq!(
        const_type(&then_b, "k_quantized"),
        Some(DataType::Int8 as i32)
    );
    assert_eq!(const_type(&then_b, "k"), None);
    let inner = body(&then_b, "inner", "then_branch");
    let mm = inner.node_ids()[0];
    let w_in = inner.node(mm).input(1).unwrap();
    assert_eq!(inner.value(w_in).name, "w");
    assert_eq!(inner.value(w_in).def, ValueDef::Outer);
    // The else branch (MatMul of captured `u`) is as it was.
    let else_before = body(&before, "outer", "else_branch");
    let else_after = body(g, "outer", "else_branch");
    assert_eq!(
        quench_ir::export_graph(&else_before),
        quench_ir::export_graph(&else_after)
    );
}

#[test]
fn excluded_nodes_and_dynamic_mode_leave_bodies_float() {
    let mut m = parse_model(MODEL).unwrap();
    let cfg = QuantizeConfig {
        exclude_nodes: vec!["it_mm".into(), "ie_mm".into()],
        ..QuantizeConfig::default()
    };
    let s = quantize_bodies(&mut m.graph, &cfg, 17, &mut PassCx::new(17)).unwrap();
    assert_eq!(s.weights_quantized, 0, "{:?}", s.notes);
    assert_eq!(const_type(&m.graph, "w"), Some(DataType::Float as i32));

    let mut m = parse_model(MODEL).unwrap();
    let cfg = QuantizeConfig {
        mode: Mode::Dynamic,
        ..QuantizeConfig::default()
    };
    let s = quantize_bodies(&mut m.graph, &cfg, 17, &mut PassCx::new(17)).unwrap();
    assert_eq!((s.weights_quantized, s.bodies), (0, 0));
    assert!(s.notes[0].contains("bodies stay float"), "{:?}", s.notes);
}

#[test]
fn opset_below_13_quantizes_captured_weights_per_tensor() {
    let mut m = parse_model(MODEL).unwrap();
    let s = quantize_bodies(
        &mut m.graph,
        &QuantizeConfig::default(),
        12,
        &mut PassCx::new(12),
    )
    .unwrap();
    assert_eq!(s.weights_quantized, 2, "{:?}", s.notes);
    let g = &m.graph;
    let w = g.value_by_name("w").unwrap();
    let dq = g.producer(w).unwrap();
    assert_eq!(g.node(dq).attr_int("axis"), None);
    let scale = g.node(dq).input(1).unwrap();
    assert!(g.const_tensor(scale).unwrap().dims.is_empty());
}

// LSTM weights in the main graph: `w` sliced per gate and concatenated (as
// PyTorch exports an LSTM cell), `r` directly; `r2` also feeds an Add.
const LSTM: &str = "\
# ir_version 8; opset ai.onnx 17
graph g(%x: f32[1,1,4]) -> (%5, %6, %7)
  %w = const f32[16,4]
  %r = const f32[1,16,4]
  %r2 = const f32[1,16,4]
  %lo = const i64[1] [0]
  %mid = const i64[1] [8]
  %hi = const i64[1] [16]
  %ax = const i64[1] [0]
  %0 = Slice(%w, %lo, %mid, %ax) : f32[8,4]                   # s0: w0
  %1 = Slice(%w, %mid, %hi, %ax) : f32[8,4]                   # s1: w1
  %2 = Concat(%0, %1) {axis=0} : f32[16,4]                    # cat: wc
  %3 = Unsqueeze(%2, %ax) : f32[1,16,4]                       # unsq: w3
  %4 = LSTM(%x, %3, %r) {hidden_size=4} : f32[1,1,1,4]         # lstm: y
  %5 = Squeeze(%4, %ax) : f32[1,1,4]                          # sq: out
  %6 = LSTM(%x, %3, %r2) {hidden_size=4} : f32[1,1,1,4]        # lstm2: y2
  %7 = Add(%r2, %r2) : f32[1,16,4]                            # add: z
";

#[test]
fn recurrent_weights_are_stored_int8_under_their_own_name() {
    use quench_passes::quantize::{apply, plan, Ranges};
    let mut m = parse_model(LSTM).unwrap();
    let cfg = QuantizeConfig {
        mode: Mode::WeightOnly,
        ..QuantizeConfig::default()
    };
    let p = plan(&m.graph, &cfg).unwrap();
    let stored: Vec<String> = p
        .stored
        .iter()
        .map(|(v, _)| m.graph.value(*v).name.clone())
        .collect();
    assert_eq!(stored, ["w", "r"]);
    let s = apply(
        &mut m.graph,
        &p,
        &Ranges::new(),
        &cfg,
        17,
        &mut PassCx::new(17),
    )
    .unwrap();
    assert_eq!(s.weights_quantized, 2);
    let g = &m.graph;
    g.verify().unwrap();
    for name in ["w", "r"] {
        let v = g.value_by_name(name).unwrap();
        let dq = g.producer(v).unwrap();
        assert_eq!(g.node(dq).kind(), OpKind::DequantizeLinear, "{name}");
        // One scale per row of the gate axis: the axis with the least
        // rounding error on these weights.
        assert!(g.node(dq).attr_int("axis").is_some(), "{name}");
        assert_eq!(
            const_type(g, &format!("{name}_quantized")),
            Some(DataType::Int8 as i32)
        );
    }
    // `r2` also feeds an Add: not only a weight, left float.
    assert_eq!(const_type(g, "r2"), Some(DataType::Float as i32));
}
